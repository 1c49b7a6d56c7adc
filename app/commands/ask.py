"""``outpost ask``: one message, its route, the streamed reply (text or JSON events)."""
from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import threading

from app.errors import Cancelled, OutpostError, UsageError
from app.commands.common import cloud_engine, emit, open_core, read_prompt, round_or_none


def cmd_ask(args: argparse.Namespace) -> int:
    from app.domain import Finished, FinishReason, Restart, Seam, TextDelta, Usage
    from app.errors import EngineError
    from app.chat_service import OutboxPlan
    from app.quotas import RateLimitedLocally
    from app.router import Route

    core = open_core(args)
    settings, store, service = core.settings, core.store, core.service
    cancel = threading.Event()

    def _stop(signum, frame):  # first signal stops the reply cleanly; a second one kills
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()

    signal.signal(signal.SIGINT, _stop)
    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, _stop)

    conversation = store.get_conversation(args.conversation) if args.conversation else None
    engine, decision = _route_engine(args, settings, service, conversation)
    route_reason = decision.reason
    send_when_online = args.send_when_online or settings["send_when_online"]
    try:
        plan = test_time_plan(args)
        if plan is not None:  # best-of-n / self-consistency: checked before anything is saved
            from app.candidates import CandidatesEngine

            if service.knobs(knob_options(args), conversation)["temperature"] == 0:
                raise UsageError("With temperature 0 every candidate is the same reply; raise "
                                 "--temperature for --best-of or --self-consistency.")
            engine = CandidatesEngine(engine, plan)
        counter = engine if hasattr(engine, "count_prompt") else None
        if counter is not None:
            engine.wait_ready()  # exact counts from the model's own tokenizer
        prompt = read_prompt(args.prompt)
        while True:
            try:
                turn = service.start_turn(
                    prompt, args.conversation, model=engine.info.model,
                    options=knob_options(args),
                    route=args.route, counter=counter, effective_route=decision.route.value)
                break
            except RateLimitedLocally as exc:
                if not settings["rate_limit_wait"]:
                    raise
                _countdown(str(exc), exc.wait_s, cancel)
        _report_fit(args, turn.fit)
        if decision.route is not Route.LOCAL:
            turn.outbox_plan = OutboxPlan(args.provider, args.model,
                                          always=decision.route is Route.CLOUD,
                                          with_local=send_when_online)
        finish: Finished | None = None
        try:
            structured = turn.request.response_format is not None
            for event in turn.run(engine, cancel, route_reason):
                if isinstance(event, TextDelta):
                    if args.json:
                        emit({"event": "delta", "text": event.text})
                    elif not structured:  # JSON is printed once checked (below)
                        sys.stdout.write(event.text)
                        sys.stdout.flush()
                elif isinstance(event, Restart):
                    if args.json:
                        emit({"event": "restart", "reason": event.reason})
                    else:
                        sys.stderr.write(f"outpost: {event.reason}\n")
                elif isinstance(event, Seam):
                    if args.json:
                        emit({"event": "seam", "engine": event.engine, "model": event.model,
                               "reason": event.reason, "offset": event.offset})
                elif isinstance(event, Usage):
                    if args.json:
                        emit({"event": "usage", "prompt_tokens": event.prompt_tokens,
                               "completion_tokens": event.completion_tokens,
                               "cached_prompt_tokens": event.cached_prompt_tokens,
                               "estimated": event.estimated})
                elif isinstance(event, Finished):
                    finish = event
        except OutpostError as exc:
            item = service.queue_if_unreachable(turn, engine, exc)
            if item is None:
                raise
            if args.json:
                _report_queued(args, item, turn)
            raise type(exc)(f"{exc} Queued in the outbox as item {item.id}; `outpost outbox "
                            "send` sends it once the provider is reachable.") from None
        check = getattr(turn, "output_check", None)
        selection = turn._selection()
        if not args.json:
            if structured:
                sys.stdout.write(turn.reply.text)
            sys.stdout.write("\n")
            sys.stdout.flush()
        if selection is not None and not args.json:  # after the reply's own line
            sys.stderr.write(f"outpost: {describe_selection(selection)}\n")
        if args.json and finish is not None:
            answered = getattr(engine, "answered", None) or engine.info
            emit({"event": "finished", "reason": finish.reason.value,
                   "conversation_id": turn.conversation_id,
                   "message_id": turn.assistant_message_id,
                   "ttft_ms": round_or_none(finish.ttft_ms),
                   "tokens_per_s": round_or_none(finish.tokens_per_s),
                   "engine": answered.engine, "model": answered.model,
                   "route_reason": getattr(engine, "reason", None) or route_reason,
                   # this turn's cost, every attempt included (null: a price is unknown)
                   **turn._cost_fields(),
                   **({"output_check": {k: v for k, v in check.items() if k != "raw"}}
                      if check else {}),
                   **({"candidates": {k: v for k, v in selection.items() if k != "candidates"}
                       | {"scores": [c["score"] for c in selection["candidates"]],
                          "answers": [c["answer"] for c in selection["candidates"]]}}
                      if selection else {})})
        item = service.queue_if_unreachable(turn, engine)
        if item is not None:
            _report_queued(args, item, turn)
        if finish is not None and finish.reason is FinishReason.ERROR:
            raise finish.error if isinstance(finish.error, OutpostError) else OutpostError(
                str(finish.error))
        if finish is not None and finish.reason is FinishReason.CANCELLED:
            raise Cancelled("The reply was stopped; the partial answer is saved.")
        if check is not None and not check["valid"]:
            raise EngineError(f"The reply is not valid JSON even after one repair ({check['error']}"
                              "); its raw text is saved.")
        if finish is not None and not turn.reply.text.strip():
            raise EngineError("The model returned an empty reply (saved, marked as an error). "
                              "Try again, or change the message or the knobs.")
        return 0
    finally:
        engine.close()
        store.close()

def _countdown(message: str, seconds: float, cancel: threading.Event) -> None:
    """Wait out a local rate limit, saying so on stderr once a second (Ctrl+C stops)."""
    import math
    import time

    end = time.monotonic() + seconds
    live = sys.stderr.isatty()  # a log file gets one line, not one per second
    if not live:
        sys.stderr.write(f"outpost: {message.split(';')[0]}; waiting {math.ceil(seconds)} s…\n")
    while (left := end - time.monotonic()) > 0:
        if live:
            sys.stderr.write(f"\routpost: {message.split(';')[0]}; waiting "
                             f"{math.ceil(left)} s… ")
            sys.stderr.flush()
        if cancel.wait(min(1.0, left)):
            raise Cancelled("Stopped while waiting for the rate limit; nothing was sent.")
    if live:
        sys.stderr.write("\n")

def _report_fit(args: argparse.Namespace, fit) -> None:
    """How the conversation was fitted into the context window (and what was left out)."""
    if fit is None:
        return
    if args.json:
        emit({"event": "context", "prompt_tokens": fit.prompt_tokens, "exact": fit.exact,
               "max_tokens": fit.max_tokens, "context_window": fit.window,
               "dropped_messages": len(fit.dropped),
               # the user messages of the turns left out (what the model will not see)
               "dropped_turns": [m.content[:80] for m in fit.dropped if m.role.value == "user"]})
    elif fit.dropped:
        sys.stderr.write(f"outpost: {fit.describe_dropped()}\n")

def _report_queued(args: argparse.Namespace, item, turn) -> None:
    if args.json:
        emit({"event": "queued", "outbox_id": item.id, "provider": item.provider,
               "conversation_id": turn.conversation_id,
               "idempotency_key": item.request.idempotency_key})
    else:
        sys.stderr.write(f"outpost: {item.provider} is unreachable: queued in the outbox as "
                         f"item {item.id}; it is sent with `outpost outbox send` (or by the "
                         "window) once the provider is back.\n")

def _route_engine(args: argparse.Namespace, settings, service, conversation):
    """(engine, RouteDecision) for ``ask``: the route decides which engines are even built.
    Precedence: Offline mode (setting or --offline), then --route, then the conversation's
    route, then the default_route setting; without --provider, Auto is the local model."""
    from app.connectivity import Connectivity
    from app.router import Route, RoutedEngine, decide_route
    from engines.registry import create_local_engine

    wanted = args.route or (conversation.route if conversation else None)
    try:
        decision = decide_route(wanted, settings["default_route"],
                                settings["offline_mode"] or args.offline, args.provider)
    except UsageError:
        raise UsageError("This conversation is Cloud only: name its provider with --provider "
                         "NAME (or pass --route auto or --route local).") from None
    if settings["offline_mode"] and (args.provider or wanted == "cloud"):
        sys.stderr.write("outpost: Offline mode is on, so the local model answers and nothing "
                         "is sent (`outpost offline off` turns it off).\n")
    if decision.route is Route.LOCAL:
        local_model = None if args.provider else args.model
        reason = decision.reason or "no cloud provider chosen"
        return create_local_engine(settings, local_model, service.ledger.record), \
            dataclasses.replace(decision, reason=reason)
    cloud = cloud_engine(args.provider, args.model, service.ledger.record)
    if decision.route is Route.CLOUD:
        return cloud, dataclasses.replace(decision, reason="cloud-only conversation")
    return RoutedEngine(cloud, lambda: create_local_engine(settings, None,
                                                           service.ledger.record),
                        Connectivity(), hedge_after_s=settings["hedge_after_s"],
                        on_attempt=service.ledger.record), decision


def test_time_plan(args):
    """``--best-of N --scorer S`` / ``--self-consistency N --extract SPEC`` as a Plan."""
    from app.candidates import Plan

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
        text = (f"self-consistency over {n} sample(s){' (stopped early)' if selection.get('stopped_early') else ''}: "
                f"votes {votes or 'none'}; candidate {winner + 1 if winner is not None else '—'} kept")
    return text + (f". {selection['note']}" if selection.get("note") else "")


def knob_options(args):
    """The ``ask`` flags as this turn's options."""
    from app.chat_service import TurnOptions
    from app.sampling import KNOB_NAMES

    values = {name: getattr(args, name, None) for name in KNOB_NAMES if name != "stop"}
    stop = tuple(args.stop) if args.stop is not None else None
    schema = getattr(args, "json_schema", None)
    if schema is not None:
        from app.structured import load_schema

        schema = load_schema(schema)
    json_mode = True if getattr(args, "json_mode", False) else None
    return TurnOptions(**values, stop=stop, preset=args.preset, system_prompt=args.system,
                       json_schema=schema, json_mode=json_mode)
