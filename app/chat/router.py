"""Which engine answers a turn of the Auto route, and why (the routes: ``app.domain.routes``).

Routes (per conversation, a default in settings, and a global Offline mode that forces local):

* ``local``  — private: only the local model; a cloud engine is never built, no socket is opened.
* ``cloud``  — only the chosen provider; its failures are shown (and, when it cannot be reached,
  the request waits in the outbox: ``app.storage.outbox``).
* ``auto``   — the provider first, the local model behind it, all inside one reply:

  - **before any token**: offline (known to the connectivity tracker), connection failed, timed
    out, unavailable/overloaded, or rate limited with retries exhausted -> the local model answers
    at once, marked with the engine and the reason (a connection nothing answers, refused or
    unresolvable, after its first attempt: the cloud's stream is told a fallback stands by);
  - **hedging**: when the cloud's first token is later than ``hedge_after_s`` (default 2.5 s), the
    local model starts too; the first to stream text wins and the other is cancelled (the cloud's
    connection is closed). Both attempts go to the request log. A cloud attempt that failed and
    waits to be retried is passed on at once (``Retrying``), and a hedge that starts during the
    wait says so;
  - **mid-stream**: a cloud stream that dies after some text is continued by the local model, given
    the partial text as the start of its reply. The reply keeps segments (who wrote which part) and
    a ``Seam`` event marks the switch.

  Authentication and bad-request errors are the user's to fix: they are shown, never failed over.

The turn is fitted into the cloud model's context window (``app.domain.context``); whenever the
local model answers (any of the three), the conversation is fitted again into *its* window, once
it is loaded so that its own tokenizer counts, leaving out the oldest turns that do not fit, and a
``Refit`` event says what it was sent before its first text (the turn keeps it).

``RoutedEngine`` keeps the one ``Engine`` contract: text deltas, one ``Usage`` (the segments'
completion tokens added up; the prompt the last segment's engine was sent), one ``Finished``
whose TTFT counts from the start of the turn.
"""
from __future__ import annotations

import dataclasses
import queue
import threading
import time
from typing import Callable, Iterator

from app.accounting.pricing import Price
from app.chat.connectivity import Connectivity, LinkState
from app.domain.context import fit_messages
from app.domain.errors import OutpostError, StreamInterrupted, break_kind, kind_words
from app.domain.messages import (
    CancelWithReason,
    ChatRequest,
    Finished,
    FinishReason,
    Refit,
    Resent,
    Retrying,
    Seam,
    Stalled,
    StreamEvent,
    TextDelta,
    Usage,
)
from app.domain.routes import CONTINUABLE_ERRORS, FAILOVER_ERRORS
from app.domain.wording import seconds
from engines.base import Engine, EngineBase, EngineCapabilities, EngineInfo, Segment, StreamOutcome
from engines.http_policy import AttemptRecord

DEFAULT_HEDGE_AFTER_S = 2.5
_POLL_S = 0.05


_DONE = object()


class _Runner:
    """One engine's stream, pumped on its own thread into a shared queue, so the router can
    wait on two engines at once (hedging) and still notice the user's cancel within 50 ms.

    ``refit_room``: fit the request into this engine's own window first (once it is loaded),
    keeping that many tokens for the reply, and put the ``Refit`` first (None: sent as it is).
    ``fallback``: another engine answers if this one cannot be reached (the cloud's, on Auto),
    so an engine that retries need not wait to try again (``CancelWithReason.fallback``)."""

    def __init__(self, tag: str, engine, request: ChatRequest, events: queue.Queue,
                 refit_room: int | None = None, fallback: bool = False):
        self.tag, self.engine = tag, engine
        self.refit_room = refit_room
        self.cancel = CancelWithReason()
        self.cancel.fallback = fallback  # (before the thread starts: the engine reads it)
        self.started = time.monotonic()
        self.text = ""
        self.usage: Usage | None = None
        self.finish: Finished | None = None
        self.logged = False  # its attempt is in the request log
        self.thread = threading.Thread(target=self._pump, args=(request, events),
                                       name=f"outpost-route-{tag}", daemon=True)
        self.thread.start()

    def _pump(self, request: ChatRequest, events: queue.Queue) -> None:
        try:
            self.engine.wait_ready()
            if self.refit_room is not None:
                request = self._refit(request, events)
            for event in self.engine.stream(request, self.cancel):
                events.put((self, event))
        except BaseException as exc:  # handed to the router's thread, which decides
            events.put((self, exc))
        finally:
            events.put((self, _DONE))

    def _refit(self, request: ChatRequest, events: queue.Queue) -> ChatRequest:
        """The request with its messages fitted into this engine's window (the oldest turns
        that do not fit left out; ``MessageTooLong`` when the newest cannot fit at all), the
        ``Refit`` that says so queued before anything the engine streams."""
        fit = fit_messages(request.messages, self.engine, self.refit_room)
        info = self.engine.info
        events.put((self, Refit(fit, info.engine, info.model)))
        return dataclasses.replace(request, messages=fit.messages)


class _Run:
    """What one stream through the router found: who answered and why, who wrote which part,
    whether the cloud could not be reached before any text (and why), whether the local model
    hedged, the cloud's attempt that waits to be retried, and the send's idempotency key."""

    def __init__(self, cloud: EngineInfo, key: str = ""):
        self.answered: EngineInfo = cloud
        self.reason = f"cloud first ({cloud.engine})"
        self.segments: list[Segment] = []
        self.cloud_unreachable = False
        self.cloud_error: Exception | None = None  # why, when the cloud failed before text
        self.hedged = False
        # the cloud's last failed attempt that is retried, and when its wait ends
        self.retrying: tuple[Retrying, float] | None = None
        self.key = key


class RoutedEngine(EngineBase):
    """The cloud engine with the local one behind it (route ``auto``), behind the same
    ``Engine`` contract. After streaming, ``outcome()`` says who wrote (the last part of) the
    reply, why in plain words, who wrote which part (segments), and whether the provider could
    not be reached before any token (the outbox uses it)."""

    def __init__(self, cloud: Engine, local_factory: Callable[[], Engine],
                 connectivity: Connectivity | None = None,
                 hedge_after_s: float | None = DEFAULT_HEDGE_AFTER_S,
                 on_attempt: Callable[[object], None] | None = None,
                 held_back: str | None = None):
        """``held_back``: why the cloud is not to be asked at all this time (Offline mode,
        with the request bound for the outbox): the local model answers, as when the
        provider is known to be offline, and ``held_back`` is the reason."""
        self.cloud = cloud
        self.held_back = held_back
        self._local_factory = local_factory  # built only when needed
        self.connectivity = connectivity
        self.hedge_after_s = hedge_after_s if hedge_after_s and hedge_after_s > 0 else None
        self.on_attempt = on_attempt
        self._local: Engine | None = None
        # what each stream found, kept per thread: best-of-n streams its candidates through
        # one router at once, and one candidate's failover is not another's
        self._runs = threading.local()
        self._latest = _Run(self.cloud.info)  # the stream begun last (for other threads)

    @property
    def _run(self) -> "_Run":
        """The stream on this thread (the one it runs, or ran last); else the latest."""
        return getattr(self._runs, "run", None) or self._latest

    def _begin(self, key: str) -> None:
        run = _Run(self.cloud.info, key)
        self._runs.run = self._latest = run

    @property
    def info(self) -> EngineInfo:
        return self.cloud.info

    @property
    def capabilities(self) -> EngineCapabilities:  # type: ignore[override]
        """The cloud's: the turn is built for it (the local model answers within it)."""
        return self.cloud.capabilities

    @property
    def local(self) -> Engine:
        if self._local is None:
            self._local = self._local_factory()
        return self._local

    # the turn is fitted and metered for the cloud model; the local one re-fits on failover
    @property
    def context_window(self) -> int | None:
        return self.cloud.context_window

    def count_prompt(self, messages) -> tuple[int, bool]:
        return self.cloud.count_prompt(messages)

    def messages_as_sent(self, messages, response_format):
        """As the cloud sends them (the turn is fitted for it; the local model is fitted
        again if it answers)."""
        return self.cloud.messages_as_sent(messages, response_format)

    def estimate_cost(self, prompt_tokens: int, max_tokens: int) -> str | None:
        return self.cloud.estimate_cost(prompt_tokens, max_tokens)

    @property
    def price_known(self) -> bool:
        return self.cloud.price_known

    @property
    def price(self) -> Price | None:
        return self.cloud.price

    def outcome(self) -> StreamOutcome:
        """Who answered (the last part of) the reply and why; the capability-map row is
        theirs (the cloud's until the local model answered). Asked on the thread that
        streamed, that stream's (candidates streamed at once each get their own); elsewhere,
        the stream begun last's."""
        run = self._run
        local_answered = self._local is not None and run.answered is not self.cloud.info
        answerer = self._local if local_answered and self._local is not None else self.cloud
        answered = answerer.outcome()
        return StreamOutcome(
            run.answered, answered.knob_kind, reason=run.reason, segments=tuple(run.segments),
            cloud_unreachable=run.cloud_unreachable, cloud_error=run.cloud_error,
            json_schema_refused=self.cloud.outcome().json_schema_refused,
            refused_knobs=answered.refused_knobs)

    def close(self) -> None:
        self.cloud.close()
        if self._local is not None:
            self._local.close()

    # -- the stream ----------------------------------------------------------------------------
    def stream(self, request: ChatRequest, cancel: threading.Event) -> Iterator[StreamEvent]:
        self._begin(request.idempotency_key)
        turn_started = time.monotonic()
        name = self.cloud.info.engine
        events: queue.Queue = queue.Queue()
        runners: list[_Runner] = []
        try:
            offline = self.held_back  # (held back: not even tried, nothing is sent now)
            if offline is None and self.connectivity is not None and \
                    self.connectivity.state(name) is LinkState.OFFLINE:
                offline = f"{self.connectivity.reason(name)}: answered locally"
            if offline is not None:
                self._run.cloud_unreachable = True
                local = self._start_local(request, events, runners, offline)
                winner = yield from self._race_local_only(local, cancel, events, runners)
            else:
                cloud = _Runner("cloud", self.cloud, request, events, fallback=True)
                runners.append(cloud)
                winner = yield from self._race(request, cancel, events, runners, turn_started)
            if winner is None:
                return
            yield from self._follow(winner, request, cancel, events, runners, turn_started)
        finally:
            for runner in runners:
                runner.cancel.set_because("cancelled")
            for runner in runners:
                runner.thread.join(timeout=10)

    def _start_local(self, request, events, runners, reason,
                     reply_room: int | None = None) -> _Runner:
        """The local model takes the reply over: the turn was fitted to the cloud model's
        window, so its runner fits it again into the local one's, keeping ``reply_room``
        tokens for the reply (default: the request's max_tokens)."""
        local = self.local
        runner = _Runner("local", local, request, events,
                         refit_room=request.max_tokens if reply_room is None else reply_room)
        runner.cancel.outcome = "won"  # it takes the reply over from the cloud
        runners.append(runner)
        self._run.answered, self._run.reason = local.info, reason
        return runner

    def _next(self, events: queue.Queue, cancel: threading.Event, runners, timeout: float):
        """The next (runner, event) within ``timeout`` s, passing the user's cancel on."""
        deadline = time.monotonic() + timeout
        while True:
            if cancel.is_set():
                for runner in runners:
                    runner.cancel.set_because("cancelled")
            try:
                return events.get(timeout=max(0.0, min(_POLL_S, deadline - time.monotonic())))
            except queue.Empty:
                if time.monotonic() >= deadline:
                    return None

    def _race(self, request, cancel, events, runners, turn_started):
        """Until someone streams text. Returns (winner, its events so far), or None when the
        reply ended without any text (those events are yielded here)."""
        cloud = runners[0]
        name = self.cloud.info.engine
        local: _Runner | None = None
        dead: set = set()
        backlog: dict = {cloud: []}
        while True:
            timeout = 3600.0
            if local is None and self.hedge_after_s is not None:
                timeout = turn_started + self.hedge_after_s - time.monotonic()
                if timeout <= 0:
                    self._run.hedged = True
                    local = self._start_local(request, events, runners, self._hedge_reason())
                    backlog[local] = []
                    continue
            got = self._next(events, cancel, runners, timeout)
            if got is None:
                continue
            runner, event = got
            if event is _DONE:
                dead.add(runner)
                if dead >= set(backlog) and all(not b for b in backlog.values()):
                    return None  # nobody said anything (cannot happen with a correct engine)
                continue
            if isinstance(event, BaseException):
                dead.add(runner)
                if runner is cloud and isinstance(event, FAILOVER_ERRORS):
                    if self.connectivity is not None:
                        # (this send's attempts counted it already, when they are fed in)
                        self.connectivity.record(name, event.kind, send=self._run.key, again=True)
                    if local is None:
                        self._run.cloud_unreachable, self._run.cloud_error = True, event
                        local = self._start_local(
                            request, events, runners,
                            f"{name} failed before answering ({kind_words(event.kind)}): "
                            "answered locally")
                        backlog[local] = []
                        continue
                    if local not in dead:
                        self._run.reason = (f"{name} failed before answering "
                                            f"({kind_words(event.kind)}) while "
                                            "the local model was hedging: answered locally")
                        continue
                    raise event
                if runner is cloud:  # authentication, bad request, …: the user's to fix
                    if local is not None:
                        local.cancel.set_because("cancelled")
                    raise event
                # the local model failed (did not load?)
                self._log_local(runner, "failed", _kind_of(event))
                if cloud in dead:
                    raise event
                self._run.answered, self._run.reason = self.cloud.info, f"cloud first ({name})"
                continue
            if isinstance(event, Retrying):  # said at once: the wait is now, not later
                if runner is cloud:
                    self._run.retrying = (event, time.monotonic() + event.wait_s)
                yield event
                continue
            if isinstance(event, Resent):  # said at once, as a retry is (before text)
                yield event
                continue
            if isinstance(event, Stalled):  # the cloud's silence, said as it lasts; not when
                if local is None:  # the local model is already answering beside it
                    yield event
                continue
            backlog[runner].append(event)
            if isinstance(event, TextDelta) and event.text or isinstance(event, Finished):
                for other in runners:
                    if other is not runner and other not in dead:
                        other.cancel.set_because("hedge_lost")
                        if other.tag == "local":
                            self._log_local(other, "hedge_lost", None)
                if len(runners) > 1:  # a race was won (both attempts are in the request log)
                    runner.cancel.outcome = "won"
                if runner is cloud:
                    self._run.answered = self.cloud.info
                    if self._run.hedged:
                        self._run.reason = "cloud answered first; the local hedge was cancelled"
                if isinstance(event, TextDelta):
                    return runner, backlog[runner]
                # the reply ended before any text (an empty answer, or cancelled)
                if runner.tag == "local":
                    self._log_local(runner, _outcome(event), None)
                self._run.segments = [self._segment(runner, 0, end=0)]
                yield from backlog[runner]
                return None

    def _hedge_reason(self) -> str:
        """Why the local model started beside the cloud: its first token is late, or the
        cloud failed and is still waiting to try again (its Retry-After, or the backoff)."""
        name = self.cloud.info.engine
        if self._run.retrying is not None and time.monotonic() < self._run.retrying[1]:
            retry = self._run.retrying[0]
            return (f"{name} failed before answering ({kind_words(_kind_of(retry.error))}) "
                    f"and was to try again in {seconds(retry.wait_s)}: answered locally")
        return f"cloud first token later than {self.hedge_after_s:g} s ({name}): " \
            "answered locally"

    def _race_local_only(self, local, cancel, events, runners):
        """The local model alone (the provider is known to be offline): the same shape as
        ``_race``, so ``_follow`` handles both."""
        backlog: list = []
        while True:
            got = self._next(events, cancel, runners, 3600.0)
            if got is None:
                continue
            _, event = got
            if event is _DONE:
                return None
            if isinstance(event, BaseException):
                self._log_local(local, "failed", _kind_of(event))
                raise event
            backlog.append(event)
            if isinstance(event, TextDelta) and event.text:
                return local, backlog
            if isinstance(event, Finished):
                self._log_local(local, _outcome(event), None)
                self._run.segments = [self._segment(local, 0, end=0)]
                yield from backlog
                return None

    def _follow(self, winner, request, cancel, events, runners, turn_started):
        """Yield the winner's events; continue on the local model if the cloud dies mid-way."""
        winner, backlog = winner
        first_text_at = time.monotonic()
        text = ""
        current = winner
        self._run.segments = [self._segment(current, 0)]
        usages: list[Usage] = []
        cloud_error: Exception | None = None
        while True:
            if backlog:
                event = backlog.pop(0)
            else:
                got = self._next(events, cancel, runners, 3600.0)
                if got is None:
                    continue
                runner, event = got
                if runner is not current:
                    continue  # the loser's last words
            if event is _DONE:
                continue
            if isinstance(event, BaseException):
                if current.tag == "local":
                    self._log_local(current, "failed", _kind_of(event))
                if not text or not isinstance(event, OutpostError):
                    raise event
                # the continuation could not start: keep what the cloud wrote, as interrupted
                error: OutpostError = cloud_error or event  # type: ignore[assignment]
                if current.tag == "local" and cloud_error is not None:
                    error = self._not_continued(current, len(text), cloud_error, event)
                self._end_segment(len(text))
                yield self._combined_usage(usages)
                yield Finished(FinishReason.ERROR, ttft_ms=self._ms(first_text_at, turn_started),
                               error=error)
                return
            if isinstance(event, TextDelta):
                text += event.text
                yield event
            elif isinstance(event, Refit):
                yield event  # what the local model that answers was sent
            elif isinstance(event, Stalled):
                yield event  # the cloud went quiet mid-reply (the local model goes on after)
            elif isinstance(event, Resent):
                yield event  # (before any text: a refused parameter, sent again without it)
            elif isinstance(event, Usage):
                usages.append(event)
            elif isinstance(event, Finished):
                if current.tag == "local":
                    self._log_local(current, _outcome(event), None)
                written = sum(u.completion_tokens for u in usages)
                if current.tag == "cloud" and event.reason is FinishReason.ERROR and \
                        isinstance(event.error, CONTINUABLE_ERRORS) and not cancel.is_set() \
                        and written < request.max_tokens:
                    cloud_error = event.error
                    name = self.cloud.info.engine
                    if self.connectivity is not None:
                        self.connectivity.record(name, event.error.kind, send=self._run.key,
                                                 again=True)
                    reason = (f"{name} stream broke after {len(text)} characters "
                              f"({kind_words(break_kind(event.error))}): continued locally")
                    # the reply's token budget is shared: the local part gets what is left
                    continuation = dataclasses.replace(
                        request, assistant_prefix=request.assistant_prefix + text,
                        max_tokens=request.max_tokens - written)
                    # its window keeps room for the whole reply: the cloud's part (now its
                    # prompt's end) and what is left
                    current = self._start_local(continuation, events, runners, reason,
                                                reply_room=request.max_tokens)
                    self._end_segment(len(text))
                    self._run.segments.append(self._segment(current, len(text), reason))
                    info = current.engine.info
                    yield Seam(info.engine, info.model, reason, len(text))
                    continue
                self._end_segment(len(text))
                yield self._combined_usage(usages)
                yield dataclasses.replace(event, ttft_ms=self._ms(first_text_at, turn_started))
                return

    def _not_continued(self, local: "_Runner", offset: int, cloud_error: OutpostError,
                       why: OutpostError) -> StreamInterrupted:
        """The local model could not take over at ``offset`` (the conversation does not fit
        its window, it failed to load): the reply is the cloud's part alone, credited to the
        cloud, and its error says both why the stream broke and why nobody went on."""
        run = self._run
        if run.segments and run.segments[-1].engine == local.engine.info.engine and \
                run.segments[-1].start == offset:
            run.segments.pop()  # the local part never began
        name = self.cloud.info.engine
        run.answered = self.cloud.info
        run.reason = (f"{name} stream broke after {offset} characters "
                      f"({kind_words(break_kind(cloud_error))}); the local model could not go on")
        said = str(cloud_error).rstrip(".")
        return StreamInterrupted(f"{said}. The local model could not go on from there: {why}",
                                 cause=getattr(cloud_error, "cause", None) or cloud_error)

    @staticmethod
    def _ms(at: float, since: float) -> float:
        return round((at - since) * 1000, 2)

    # -- bookkeeping ---------------------------------------------------------------------------
    @staticmethod
    def _segment(runner: _Runner, start: int, reason: str | None = None,
                 end: int | None = None) -> Segment:
        info = runner.engine.info
        return Segment(info.engine, info.model, start, end, reason)

    def _end_segment(self, end: int) -> None:
        self._run.segments[-1] = dataclasses.replace(self._run.segments[-1], end=end)

    @staticmethod
    def _combined_usage(usages: list[Usage]) -> Usage:
        """The reply's one Usage: every part's completion tokens, and the prompt of the part
        that ended it. A local continuation was sent the conversation and the cloud's part as
        the start of its reply: its prompt is the one the usage ledger's local row has and
        the reply reports (the cloud's prompt is in the ledger's cloud row)."""
        if not usages:
            return Usage(0, 0, estimated=True)
        last = usages[-1]
        return Usage(last.prompt_tokens, sum(u.completion_tokens for u in usages),
                     estimated=any(u.estimated for u in usages),
                     cached_prompt_tokens=last.cached_prompt_tokens)

    def _log_local(self, runner: _Runner, outcome: str, error_kind: str | None) -> None:
        """Local attempts go to the request log too when the router raced or failed over."""
        if self.on_attempt is None or runner.logged or \
                runner.engine.capabilities.logs_own_attempts:
            return  # (an engine that logs its own attempts is not logged twice)
        runner.logged = True
        info = runner.engine.info
        self.on_attempt(AttemptRecord(
            attempt=1, status=None, latency_ms=(time.monotonic() - runner.started) * 1000,
            error_kind=error_kind, idempotency_key=self._run.key, provider="local",
            model=info.model, outcome=outcome))


def _kind_of(error: BaseException) -> str:
    """The error tree's name for a failure (anything outside the tree is a bug)."""
    return error.kind if isinstance(error, OutpostError) else "bug"


def _outcome(finish: Finished) -> str:
    return {FinishReason.CANCELLED: "cancelled", FinishReason.ERROR: "failed"}.get(
        finish.reason, "won")
