"""``outpost ask``: one message, its route, the streamed reply (text or JSON events)."""
from __future__ import annotations

import argparse
import math
import signal
import sys
import threading
import time
from typing import Callable

from app.chat.pipeline import (
    Notice,
    RateLimitWait,
    TurnEnded,
    TurnOutcome,
    TurnPipeline,
    TurnStarted,
    TurnTarget,
)
from app.chat.outbox_words import next_try_words, unreachable_clause
from app.chat.service import TurnOptions
from app.chat.targets import remembered_target, target_record
from app.cli.commands.common import emit, open_core, read_prompt, round_or_none
from app.compose import CommandEngines
from app.config.providers import ProviderRegistry
from app.domain.adapters import parse_lora
from app.domain.context import ReplyCap
from app.domain.errors import (
    NoProviderForCloud,
    OutpostError,
    ReplyNotSaved,
    UsageError,
    kind_words,
)
from app.domain.messages import (
    FinishReason,
    Refit,
    Resent,
    Restart,
    Retrying,
    Seam,
    Stalled,
    TextDelta,
    Usage,
)
from app.domain.routes import Route
from app.domain.sampling import KNOB_NAMES, NOT_TAKEN, not_as_asked, not_taken
from app.domain.sampling import check as check_knob
from app.domain.structured import load_schema
from app.domain.test_time import Plan
from app.domain.wording import counted, seconds, sentence
from app.storage.store import Store

SAVE_TRIES = 5  # a reply the disk refused is written again this many times, a second apart


def cmd_ask(args: argparse.Namespace) -> int:
    """``outpost ask``: a new message (at the end of the active path, or ``--reply-to``)."""
    def events(pipeline: TurnPipeline, target: TurnTarget, cancel: threading.Event):
        return pipeline.send(read_prompt(args.prompt), args.conversation, target=target,
                             options=knob_options(args), cancel=cancel, wait_for_model=True,
                             wait_on_rate_limit=bool(pipeline.settings["rate_limit_wait"]),
                             reply_to=args.reply_to)

    return _turn(args, events, send_when_online=args.send_when_online,
                 conversation=lambda store: args.conversation, remember=True)


def cmd_regenerate(args: argparse.Namespace) -> int:
    """``outpost regenerate MSG``: a new answer beside the reply MSG, with the engine and knobs
    given now (it becomes the active version)."""
    def events(pipeline: TurnPipeline, target: TurnTarget, cancel: threading.Event):
        pending = pipeline.regenerate(args.message, target=target, options=knob_options(args),
                                      wait_for_model=True)
        yield pending.started
        yield from pending.run(cancel)

    return _turn(args, events, send_when_online=False,
                 conversation=lambda store: store.get_message(args.message).conversation_id,
                 remember=False)


def _turn(args: argparse.Namespace, events, send_when_online: bool,
          conversation: Callable[[Store], str | None], remember: bool) -> int:
    """Run one turn of the pipeline for a command and render it; Ctrl+C (or SIGTERM) stops the
    reply cleanly, a second one kills. ``conversation``: the id of the conversation the turn
    is in (None: a new one), whose remembered target applies when the command names none;
    ``remember``: store the target with the conversation, as the window does when it sends."""
    core = open_core(args)
    settings, store = core.settings, core.store
    cancel = threading.Event()

    def _stop(signum, frame):
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGHUP, _stop)  # the terminal closed (an SSH link dropped): save, end
    engines = CommandEngines(settings, core.service.ledger.record)
    pipeline = TurnPipeline(core.service, engines)
    try:
        target = TurnTarget(provider=args.provider, model=args.model, route=args.route,
                            offline=args.offline,
                            send_when_online=True if send_when_online else None,
                            test_time=test_time_plan(args), outbox_asked=send_when_online)
        cid = conversation(store)
        known = store.get_conversation(cid) if cid else None
        if known is not None and known.profile not in (None, core.service.profile):
            known = None  # another profile's: the pipeline refuses it, telling nothing of it
        target, note = remembered_target(target, known, ProviderRegistry(), remembers=remember)
        if note and target.provider and pipeline.effective_route(target, cid) is Route.LOCAL:
            note = None  # (a Local only chat or Offline mode: the provider does not answer,
            # said below)
        turn = events(pipeline, target, cancel)
        if remember:
            turn = _remembering(turn, store, target)
        if note:
            turn = _noted(turn, note)
        try:
            return _render(args, turn, core.service.save_unsaved)
        except NoProviderForCloud:
            raise UsageError("This conversation is Cloud only: name its provider with "
                             "--provider NAME (or pass --route auto or --route local).") from None
    finally:
        engines.close()
        store.close()


def _noted(events, note: str):
    """The turn's events, ``note`` on stderr once its prompt is saved (``TurnStarted``): a turn
    refused before that (an adapter that does not fit the model asked, a quota) neither
    answers nor remembers anything, so it does not say it does."""
    for event in events:
        if isinstance(event, TurnStarted):
            sys.stderr.write(f"outpost: {note}\n")
        yield event


def _remembering(events, store: Store, target: TurnTarget):
    """The turn's events; once its prompt is saved (``TurnStarted``), the conversation
    remembers who it asked (the window stores its pickers' choice the same way), so the window
    opens it with those pickers and a later ``ask --conversation`` goes there too."""
    for event in events:
        if isinstance(event, TurnStarted):
            try:
                store.set_target(event.conversation_id, *target_record(target))
            except OutpostError as exc:  # the reply matters more: said, and it goes on
                sys.stderr.write(f"outpost: warning: who answers this conversation could not "
                                 f"be stored: {exc}\n")
        yield event


def _render(args: argparse.Namespace, events, save_unsaved=lambda: 0) -> int:
    """Print the turn's events: the reply's text (or JSON lines with --json), notes on stderr;
    the turn's error is raised, so the exit code says how it ended."""
    structured = False
    asked: str | None = None  # who the turn was sent to (Auto: the cloud first)
    held: TurnStarted | None = None  # Offline mode answers; the request waits in the outbox
    said: set[str] = set()  # route reasons said as they happened (not again at the end)
    streamed = ""  # the reply's deltas since the last restart (--json: did they say it all?)
    countdown = _Countdown()
    for event in events:
        if isinstance(event, RateLimitWait):
            if args.json and not countdown.shown:  # (once a wait: the countdown is stderr's)
                emit({"event": "wait", "reason": event.message,
                      "wait_s": round(event.seconds_left, 1)})
            countdown.show(event)
            continue
        countdown.done()
        if isinstance(event, TurnStarted):
            structured, asked = event.structured, event.engine.engine
            if event.held_offline:
                held, asked = event, None  # (who answers is said now, not after the reply)
            if event.held_offline and event.offline_mode_overrode:
                sys.stderr.write(f"outpost: Offline mode is on, so the local model answers "
                                 f"now and nothing is sent; the message also waits in the "
                                 f"outbox for {event.engine.engine} until Offline mode is "
                                 "off.\n")
            elif event.offline_mode_overrode:
                sys.stderr.write("outpost: Offline mode is on, so the local model answers and "
                                 "nothing is sent (`outpost offline off` turns it off).\n")
            elif getattr(args, "provider", None) and event.route is Route.LOCAL and \
                    event.route_reason == "local-only conversation":
                sys.stderr.write(f"outpost: this conversation is Local only, so the local model "
                                 f"answers and nothing is sent to {args.provider} (give `--route "
                                 "auto` or `--route cloud` to send this message).\n")
            _report_fit(args, event.fit)
        elif isinstance(event, TextDelta):
            streamed += event.text
            if args.json:
                emit({"event": "delta", "text": event.text})
            elif not structured:  # JSON is printed once checked (below)
                sys.stdout.write(event.text)
                sys.stdout.flush()
                REPLY_LINE.wrote(event.text)
        elif isinstance(event, Restart):
            streamed = ""  # the re-ask's deltas are the reply now
            if args.json:
                emit({"event": "restart", "reason": event.reason})
            else:
                REPLY_LINE.break_for_notice()
                sys.stderr.write(f"outpost: {event.reason}\n")
        elif isinstance(event, Refit):  # the local model answers Auto: fitted to its window
            _report_fit(args, event.fit, event)
        elif isinstance(event, Seam):
            if args.json:
                emit({"event": "seam", "engine": event.engine, "model": event.model,
                      "reason": event.reason, "offset": event.offset})
            _note(f"{event.reason}.")  # (as it happens: the reply goes on in another's words)
            said.add(event.reason)
        elif isinstance(event, Retrying):
            _report_retry(args, event)
        elif isinstance(event, Resent):  # a refused parameter: sent again without it
            if args.json:
                emit({"event": "resend", "engine": event.engine, "model": event.model,
                      "change": event.change, "reason": event.describe()})
            if event.knob is None or getattr(args, event.knob, None) is None:
                _note(f"{event.describe()}.")  # (a flag given: the end says it, and why)
        elif isinstance(event, Stalled):  # once per silence, while it lasts
            if args.json:
                emit({"event": "stall", "engine": event.engine, "reason": event.describe(),
                      "silent_s": round(event.silent_s, 1),
                      "gives_up_s": round(event.gives_up_s, 1)})
            _note(f"{event.describe()}.")
        elif isinstance(event, Usage):
            if args.json:
                emit({"event": "usage", "prompt_tokens": event.prompt_tokens,
                      "completion_tokens": event.completion_tokens,
                      "cached_prompt_tokens": event.cached_prompt_tokens,
                      "estimated": event.estimated})
        elif isinstance(event, Notice):
            _note(event.text)
        elif isinstance(event, TurnEnded):
            if event.outcome.unsaved is not None:  # before anything else is said: stored?
                try:
                    save_before_exit(save_unsaved, event.outcome.unsaved)
                except ReplyNotSaved:
                    if structured and not args.json and event.outcome.message is not None:
                        print(event.outcome.message.content)  # ("printed above": it is now)
                    raise
            return _finish(args, event.outcome, structured, asked, said, held, streamed)
    return 0


def _note(text: str) -> None:
    """A line on stderr while the reply streams (on a line of its own: ``REPLY_LINE``)."""
    REPLY_LINE.break_for_notice()
    sys.stderr.write(f"outpost: {text}\n")
    sys.stderr.flush()


def _report_retry(args: argparse.Namespace, retry: Retrying) -> None:
    """A cloud attempt failed before any text and is tried again after a wait: said before
    the wait (a line on stderr; with --json also a ``retry`` event)."""
    kind = retry.error.kind if isinstance(retry.error, OutpostError) else "bug"
    if args.json:
        emit({"event": "retry", "engine": retry.engine, "attempt": retry.attempt,
              "kind": kind, "reason": kind_words(kind), "wait_s": round(retry.wait_s, 2)})
    _note(f"{retry.engine}, attempt {retry.attempt}: {kind_words(kind)}; trying again in "
          f"{seconds(retry.wait_s)}.")


def _finish(args: argparse.Namespace, outcome: TurnOutcome, structured: bool,
            asked: str | None = None, said: set[str] | frozenset[str] = frozenset(),
            held: TurnStarted | None = None, streamed: str | None = None) -> int:
    """The end of the reply: its last line (or the ``finished`` event), who answered when it
    was not who was asked (Auto fell back on the local model; not again when ``said`` has
    it), where a queued request went (``held``: Offline mode keeps it there until it is
    off), and the turn's error raised. ``streamed``: the deltas since the last restart; with
    --json, checked JSON that differs from them (repaired leniently) gets an ``output``
    event."""
    error, finish, item = outcome.error, outcome.finish, outcome.queued
    if outcome.stream_failed and error is not None:  # the stream raised
        _report_flags_not_sent(args, outcome)
        if item is not None:
            # (the error's own sentence says where it went: the event only, with --json)
            _report_queued(args, item, outcome.conversation_id, line=False)
            raise type(error)(f"{sentence(str(error))} Queued in the outbox as item {item.id}; "
                              f"{next_try_words(item, None)}.") from None
        raise error
    selection = outcome.selection.record() if outcome.selection is not None else None
    check = outcome.output_check
    if not args.json:
        # JSON output: stdout gets the reply once it is valid JSON, never text a script would
        # fail to parse (still invalid after the repair: exit 4, the raw text is in history,
        # and stdout stays empty: not even the line's end)
        printed = not structured
        if structured and outcome.message is not None and (check is None or check.valid):
            sys.stdout.write(outcome.message.content)
            printed = True
        if printed:
            sys.stdout.write("\n")
            sys.stdout.flush()
            REPLY_LINE.wrote("\n")
    if selection is not None and not args.json:  # after the reply's own line
        sys.stderr.write(f"outpost: {describe_selection(selection)}\n")
    _report_flags_not_sent(args, outcome)
    if asked is not None and outcome.answered.engine != asked and outcome.route_reason \
            and outcome.route_reason not in said:  # (--json: also in the finished event)
        sys.stderr.write(f"outpost: {outcome.route_reason}.\n")
    if error is None and finish is not None and finish.reason is FinishReason.LENGTH:
        # (with --json too: the finished event says "length", this says what to do about it)
        params = (outcome.message.params or {}) if outcome.message is not None else {}
        limit, cap = params.get("max_tokens"), ReplyCap.from_record(params.get("reply_cap"))
        sys.stderr.write("outpost: the reply was cut at its token limit"
                         + (f" ({limit} tokens)" if limit else "")
                         + (f", what the {cap.limit} left.\n" if cap is not None else
                            "; --max-tokens allows a longer one.\n"))
    if args.json and structured and check is not None and check.valid and \
            outcome.message is not None and streamed is not None and \
            outcome.message.content != streamed:
        # the checked JSON, as printed without --json: the deltas were the raw text
        emit({"event": "output", "text": outcome.message.content})
    if args.json and finish is not None:
        cost = outcome.cost
        emit({"event": "finished", "reason": finish.reason.value,
              "conversation_id": outcome.conversation_id,
              "message_id": outcome.message_id,
              # where the reply stands in the conversation's tree (a regenerated answer: 2/2)
              "parent_id": outcome.user_message_id, "sibling_index": outcome.sibling_index,
              "siblings": outcome.siblings,
              "ttft_ms": round_or_none(finish.ttft_ms),
              "tokens_per_s": round_or_none(finish.tokens_per_s),
              "engine": outcome.answered.engine, "model": outcome.answered.model,
              "route_reason": outcome.route_reason,
              # this turn's cost, every attempt included (null: a price is unknown)
              **({"cost_usd": cost[0], "cost_estimated": cost[1]} if cost else {}),
              **({"output_check": {k: v for k, v in check.record().items() if k != "raw"}}
                 if check else {}),
              **({"candidates": {k: v for k, v in selection.items() if k != "candidates"}
                  | {"scores": [c["score"] for c in selection["candidates"]],
                     "answers": [c["answer"] for c in selection["candidates"]]}}
                 if selection else {})})
    if item is not None:
        _report_queued(args, item, outcome.conversation_id, held)
    if error is not None:
        raise error
    return 0


def _report_flags_not_sent(args: argparse.Namespace, outcome: TurnOutcome) -> None:
    """A knob flag given for this turn that the engine that answered was not sent as given
    (capped, left out, or sent in another's place), a line on stderr each, from the record
    of what was sent (``params``, made by the capability map); the knobs the engine kind
    has no parameter for, one line together."""
    params = outcome.message.params if outcome.message is not None else None
    kind = (params or {}).get("engine_kind")
    if not params or not kind:
        return
    asked = {name: getattr(args, name, None) for name in KNOB_NAMES}
    if isinstance(asked["seed"], str):  # (`--seed random`: none asked)
        asked["seed"] = seed_flag(asked["seed"])
    if "test_time" in params:  # best-of-n records the kept candidate's own seed
        asked.pop("seed")
    changed = not_as_asked(kind, asked, params, outcome.answered.model,
                           outcome.refused_knobs)
    left_out = [_flag(c.name) for c in changed if c.why == NOT_TAKEN]
    if left_out:
        verb = "is" if len(left_out) == 1 else "are"
        _note(f"{', '.join(left_out)} {verb} not sent: "
              f"{not_taken(kind, len(left_out) > 1)}.")
    for c in changed:
        if c.why == NOT_TAKEN:
            continue
        given = f"{_flag(c.name)} {c.asked:g}" if isinstance(c.asked, float) \
            else f"{_flag(c.name)} {c.asked}"
        if c.why is not None:
            _note(f"{given}: {c.why}")
        elif c.sent is None:
            _note(f"{given} is not sent to {outcome.answered.engine} "
                  f"{outcome.answered.model}.")
        else:
            _note(f"{given} is sent as {c.sent}.")


def _flag(knob: str) -> str:
    """The command line's flag for a knob: ``top_k`` -> ``--top-k``."""
    return "--" + knob.replace("_", "-")


class _ReplyLine:
    """Whether the reply printed on a terminal has a line still open: a notice on stderr in
    the middle of a reply (an attempt that failed, a restart) then starts on a line of its
    own instead of after the reply's last word. Only stderr gets the line break, and only
    when both streams are the same kind of terminal: stdout keeps the reply exactly."""

    def __init__(self):
        self.open = False

    def wrote(self, text: str) -> None:
        if text:
            self.open = not text.endswith("\n")

    def break_for_notice(self, out=None, err=None) -> None:
        out, err = out or sys.stdout, err or sys.stderr
        if self.open and out.isatty() and err.isatty():
            err.write("\n")
        self.open = False


REPLY_LINE = _ReplyLine()


def save_before_exit(save_unsaved, error: ReplyNotSaved, tries: int = SAVE_TRIES) -> None:
    """The reply's final write failed (a full disk): a few more tries a second apart before
    this process, the only holder of the whole reply, ends; then the turn ends as it would
    have (its exit code and events). Still not stored: ReplyNotSaved (exit 5)."""
    for _ in range(tries):
        time.sleep(1)
        if save_unsaved() == 0:
            sys.stderr.write("outpost: the reply is saved now (a later try went through).\n")
            return
    raise ReplyNotSaved(f"{error} It was printed above; what is stored is the part saved "
                        "while it streamed.") from None


class _Countdown:
    """A local rate limit's wait on stderr: one line a second on a terminal, one line in a
    log file."""

    def __init__(self):
        self.live = sys.stderr.isatty()
        self.shown = False

    def show(self, wait: RateLimitWait) -> None:
        head = wait.message.split(";")[0]
        if self.live:
            sys.stderr.write(f"\routpost: {head}; waiting {math.ceil(wait.seconds_left)} s… ")
            sys.stderr.flush()
        elif not self.shown:
            sys.stderr.write(f"outpost: {head}; waiting {math.ceil(wait.seconds_left)} s…\n")
        self.shown = True

    def done(self) -> None:
        if self.shown and self.live:
            sys.stderr.write("\n")
        self.shown = False


def _report_fit(args: argparse.Namespace, fit, refit: Refit | None = None) -> None:
    """How the conversation was fitted into the context window (and what was left out);
    ``refit``: fitted again for the engine that answers instead (its line names it)."""
    if fit is None:
        return
    if args.json:
        who = {"engine": refit.engine, "model": refit.model} if refit is not None else {}
        emit({"event": "context", "prompt_tokens": fit.prompt_tokens, "exact": fit.exact,
               "max_tokens": fit.max_tokens, "context_window": fit.window,
               "dropped_messages": len(fit.dropped),
               # the user messages of the turns left out (what the model will not see)
               "dropped_turns": [m.content[:80] for m in fit.dropped if m.role.value == "user"],
               **who})
    if fit.dropped:  # (with --json too: stderr's lines are the same either way)
        sys.stderr.write(f"outpost: {fit.describe_dropped()}\n")

def _report_queued(args: argparse.Namespace, item, conversation_id: str,
                   held: TurnStarted | None = None, line: bool = True) -> None:
    """Where the request went: the outbox, and when it is sent from there (``held``: it was
    not sent because Offline mode is on, or --offline). The line on stderr is there with
    --json too (stderr's lines are the same either way); the event adds the ids. ``line``:
    False when the turn's error says it instead."""
    if args.json:
        emit({"event": "queued", "outbox_id": item.id, "provider": item.provider,
               "conversation_id": conversation_id,
               "idempotency_key": item.request.idempotency_key})
    if not line:
        return
    if held is not None:
        when = "once Offline mode is off, " if held.offline_mode_overrode else ""
        sys.stderr.write(f"outpost: queued in the outbox for {item.provider} as item "
                         f"{item.id}; {when}`outpost outbox send` (or the window) sends it.\n")
    else:  # the real cause (a 429 is no outage), and when it may go
        because = item.queued_because or unreachable_clause(item.provider)
        sys.stderr.write(f"outpost: {because}: queued in the outbox as item {item.id}; "
                         f"{next_try_words(item, None)}.\n")

def test_time_plan(args):
    """``--best-of N --scorer S`` / ``--self-consistency N --extract SPEC`` as a Plan."""
    best, sc = getattr(args, "best_of", None), getattr(args, "self_consistency", None)
    if best and sc:
        raise UsageError("Choose --best-of or --self-consistency, not both.")
    if getattr(args, "scorer", None) and not best:
        raise UsageError("--scorer goes with --best-of N.")
    if getattr(args, "extract", None) and not sc:
        raise UsageError("--extract goes with --self-consistency N.")
    if best:
        return Plan("best_of", best, scorer=args.scorer or "logprob")
    if sc:
        return Plan("self_consistency", sc, extract=args.extract or "last-line")
    return None


def describe_selection(selection: dict) -> str:
    """One line on how the reply was chosen among the candidates."""
    n = len(selection["candidates"])
    winner = selection.get("winner")
    if selection["mode"] == "best_of":
        scores = ", ".join("—" if c["score"] is None else f"{c['score']:.3g}"
                           for c in selection["candidates"])
        text = (f"best of {n} by {selection['scorer']}: candidate {winner + 1 if winner is not None else '—'} "
                f"won (scores {scores})")
    else:
        votes = ", ".join(f"{a!r}: {v}" for a, v in (selection.get("votes") or {}).items())
        text = (f"self-consistency over {counted(n, 'sample')}{' (stopped early)' if selection.get('stopped_early') else ''}: "
                f"votes {votes or 'none'}; candidate {winner + 1 if winner is not None else '—'} kept")
    return text + (f". {selection['note']}" if selection.get("note") else "")


RANDOM_SEED = "random"  # ``--seed random``: no fixed seed, for this turn and from now on


def seed_flag(value) -> int | None:
    """``--seed``'s value: a whole number as given, or None for ``random`` (any case)."""
    if not isinstance(value, str):
        return value
    if value.strip().lower() == RANDOM_SEED:
        return None
    try:
        return int(value.strip())
    except ValueError:
        raise UsageError(f"--seed must be a whole number or 'random', got {value!r}.") from None


def knob_options(args):
    """The ``ask`` flags as this turn's options. ``--seed random`` unsets the seed (listed in
    ``TurnOptions.unset``, which overrides the conversation's and the preset's seed), so the
    reply draws a new one, as a conversation with no seed does; ``--no-lora`` unsets the
    adapters the same way (none this turn, and ``ask`` keeps none with the conversation)."""
    values = {name: getattr(args, name, None) for name in KNOB_NAMES if name != "stop"}
    unset = ()
    if isinstance(values["seed"], str):
        values["seed"] = seed_flag(values["seed"])
        unset = ("seed",) if values["seed"] is None else ()
    for name, value in values.items():  # (checked again with the turn: here to name the flag)
        check_knob(name, value, label=_flag(name))
    stop = tuple(args.stop) if args.stop is not None else None
    schema = getattr(args, "json_schema", None)
    if schema is not None:
        schema = load_schema(schema)
    json_mode = True if getattr(args, "json_mode", False) else None
    lora = tuple(parse_lora(spec) for spec in args.lora) if getattr(args, "lora", None) \
        else None
    if getattr(args, "no_lora", False):  # detached: kept so by the conversation, as `random`
        if lora is not None:
            raise UsageError("--lora attaches an adapter and --no-lora detaches them all: "
                             "give one of the two.")
        lora, unset = (), unset + ("lora",)
    return TurnOptions(**values, stop=stop, preset=args.preset, system_prompt=args.system,
                       json_schema=schema, json_mode=json_mode, lora=lora, unset=unset)
