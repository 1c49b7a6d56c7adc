"""The turn pipeline: the one place a message becomes a stored reply, for every front end.

``TurnPipeline.send(prompt, ...)`` runs a whole turn and yields typed events (``TurnEvent``):

1. decide the route (Offline mode, the turn's route, the conversation's, the default);
2. build the engine: the local model, the provider's, or the provider with the local model
   behind it (``app.chat.router.RoutedEngine``); best-of-n / self-consistency around it
   (``app.chat.candidates``), refused at temperature 0;
3. save the prompt (``ChatService.start_turn``): fit the context, check the quotas, commit the
   user's message before anything is sent -> ``TurnStarted``;
4. wait for the model (``ModelLoading``), stream (the engine's own events), save the reply;
5. queue the request in the outbox when its provider could not be reached -> ``Queued``;
6. ``TurnEnded`` with the typed ``TurnOutcome``: who answered, the stored reply, its cost, and
   the error the turn ended with (an ``OutpostError``, never a string).

The CLI renders these events as text or JSON lines; the window as bubbles, banners and meters.
Neither decides anything about routes, engines or the outbox. The window runs the two halves on
two threads: ``prepare`` (steps 1-3, quick: on the GUI thread, so a bad message is refused at
once) and ``PendingTurn.run`` (steps 4-6, on its stream worker). ``send`` is the two in a row.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, NamedTuple, Protocol, Union

from app.chat.candidates import CandidatesEngine
from app.chat.connectivity import Connectivity, LinkState
from app.chat.outbox_sender import settle_answered_in_chat
from app.chat.router import RoutedEngine
from app.chat.service import ChatService, TurnOptions, history_messages
from app.chat.turn import OutboxPlan, Turn
from app.domain.context import ONE_REQUEST, Fanout, Fit, LeftOut, MessageTooLong, fit_messages
from app.domain.errors import (
    Cancelled,
    EmptyReply,
    EngineError,
    InvalidJsonReply,
    OutpostError,
    ReplyNotSaved,
    UsageError,
)
from app.domain.messages import (
    ChatMessage,
    Finished,
    FinishReason,
    Message,
    MessageStatus,
    Role,
    StreamEvent,
    estimate_prompt_tokens,
)
from app.domain.routes import (
    FAILOVER_ERRORS,
    OFFLINE_MODE,
    Route,
    RouteDecision,
    decide_route,
)
from app.domain.structured import OutputCheck
from app.domain.test_time import Plan, Selection, check_candidates_differ
from app.storage.outbox import OutboxItem
from app.storage.quotas import (
    PER_MINUTE_CAP,
    CloudRateLimited,
    CloudReplyCapped,
    QuotaExceeded,
    RateLimitedLocally,
)
from engines.base import Engine, EngineInfo

log = logging.getLogger(__name__)


# -- what the front end asks for -----------------------------------------------------------
@dataclass(frozen=True)
class TurnTarget:
    """Where a turn may go, as the front end chose it.

    ``provider``/``model``: the cloud provider and its model (None: the provider's default); with
    no provider, ``model`` names a local GGUF file instead (None: the configured model).
    ``route``: this turn's route policy, stronger than the conversation's and stored on a new
    conversation (None: the conversation's, else the default). ``offline``: answer locally this
    once (Offline mode in settings does so always). ``send_when_online``: under Auto, also queue
    the request for the provider when the local model answered because it was unreachable
    (None: the setting). ``outbox_asked``: the user asked for that in so many words for this
    message (the command line's ``--send-when-online``): then Offline mode (or ``offline``)
    queues it too, for when it is off, while the local model answers now; a turn that cannot
    queue it (Local only, no provider) says why (a ``Notice``)."""

    provider: str | None = None
    model: str | None = None
    route: str | None = None
    offline: bool = False
    send_when_online: bool | None = None
    test_time: Plan | None = None
    outbox_asked: bool = False


class EngineSource(Protocol):
    """Builds the engines a turn needs; the composition root gives each front end its own (the
    CLI builds and closes them per command; the window keeps its loaded model and a pool)."""

    @property
    def connectivity(self) -> Connectivity | None: ...

    def on_attempt(self, record) -> None: ...

    def local(self, model: str | None = None) -> Engine: ...

    def cloud(self, provider: str, model: str | None = None) -> Engine: ...

    def on_this_computer(self, provider: str) -> bool:
        """Is ``provider`` on this computer (loopback)? Offline mode lets such a provider answer.
        (False for one not configured.)"""
        ...


# -- what the pipeline says -------------------------------------------------------------------
@dataclass(frozen=True)
class TurnStarted:
    """The prompt is saved (committed before anything is sent); the reply is about to start."""

    conversation_id: str
    user_message_id: str
    new_conversation: bool
    route: Route
    route_reason: str | None
    engine: EngineInfo
    fit: Fit | None  # how the conversation was fitted into the context window
    structured: bool = False  # JSON output: the text is checked (maybe repaired) at the end
    offline_mode_overrode: bool = False  # a provider or Cloud only was asked; Offline mode won
    # Offline mode (or ``offline``) has the local model answer, and the request waits in the
    # outbox for the provider (``TurnTarget.outbox_asked``) until it is off
    held_offline: bool = False


@dataclass(frozen=True)
class RateLimitWait:
    """A local rate limit (``app.storage.quotas``) holds the turn; nothing is saved or sent yet.
    Sent once a second while waiting (only when the caller asked to wait)."""

    message: str
    seconds_left: float


@dataclass(frozen=True)
class ModelLoading:
    """The model is still loading; the turn waits for it."""

    model: str


@dataclass(frozen=True)
class Queued:
    """The request waits in the outbox for its provider. ``answered_locally``: the local model
    answered meanwhile (Auto with send-when-online); else nothing answered (Cloud only)."""

    item: OutboxItem
    answered_locally: bool


@dataclass(frozen=True)
class Notice:
    """Plain news for the user that is not the turn's error."""

    text: str


@dataclass(frozen=True)
class TurnOutcome:
    """How a turn ended. ``error`` is why there is no usable reply (None: there is one):
    the stream's failure, ``Cancelled``, ``EmptyReply`` or ``InvalidJsonReply``."""

    conversation_id: str
    user_message_id: str
    message_id: str | None
    message: Message | None  # the stored reply, final
    finish: Finished | None
    answered: EngineInfo
    route_reason: str | None
    output_check: OutputCheck | None = None
    selection: Selection | None = None
    cost: tuple[float | None, bool] | None = None  # (USD or None: unknown, estimated?)
    queued: OutboxItem | None = None
    error: OutpostError | None = None
    stream_failed: bool = False  # the stream raised ``error`` (nothing, or part, was answered)
    # the reply's place among the answers to its question (1-based), and how many there are
    sibling_index: int = 1
    siblings: int = 1
    turn: Turn | None = field(default=None, repr=False, compare=False)  # to retry it
    # the reply is whole (``message`` shows it) but its final write failed: not stored yet
    # (``ChatService.save_unsaved`` writes it when it can); the turn's own outcome is the rest
    unsaved: ReplyNotSaved | None = None
    # the knobs the server of who answered refused for its model, learnt: not sent
    refused_knobs: frozenset[str] = frozenset()


@dataclass(frozen=True)
class TurnEnded:
    outcome: TurnOutcome


TurnEvent = Union[TurnStarted, RateLimitWait, ModelLoading, Queued, Notice, TurnEnded,
                  StreamEvent]


@dataclass(frozen=True)
class Measure:
    """What the token meter shows for a draft: the prompt it would make, the window it fills,
    the room kept for the reply and the cost estimate before sending (for that room).

    The quotas, checked as the send checks them but dry (nothing reserved or taken):
    ``limit`` names what limits the reply to ``max_tokens`` (None: ``asked`` goes as asked);
    ``refused``: the quota's own words when the next send would be refused; ``retry_s``:
    a rate limit's wait, after which the meter checks again; ``instead``: under Auto, a
    budget has the local model answer, in the quota's words.

    The prompt is the one the send makes: fitted to the window of the model that will see it
    (``left_out``: ``LeftOut.record()`` of the oldest turns left out, None when none are; a
    message that cannot fit at all is ``refused``, in the send's words). ``goes``: where the
    message goes when the connection state decides it (Offline mode, or the provider known to
    be unreachable), in plain words; None when it goes where the route says."""

    tokens: int
    exact: bool
    window: int | None
    max_tokens: int
    cost: str | None
    asked: int | None = None
    limit: str | None = None
    refused: str | None = None
    retry_s: float | None = None
    instead: str | None = None
    left_out: dict | None = None
    goes: str | None = None

    def as_dict(self) -> dict:
        return {"tokens": self.tokens, "exact": self.exact, "window": self.window,
                "max_tokens": self.max_tokens, "cost": self.cost,
                "asked": self.asked if self.asked is not None else self.max_tokens,
                "limit": self.limit, "refused": self.refused, "retry_s": self.retry_s,
                "instead": self.instead, "left_out": self.left_out, "goes": self.goes}


# -- the pipeline -------------------------------------------------------------------------------
class PendingTurn:
    """A saved prompt with its engine, ready to stream (``run``)."""

    def __init__(self, pipeline: "TurnPipeline", turn: Turn, engine: Engine,
                 started: TurnStarted, plan: OutboxPlan | None, notice: str | None = None):
        self.pipeline, self.turn, self.engine = pipeline, turn, engine
        self.started, self.plan, self.notice = started, plan, notice

    def run(self, cancel: threading.Event) -> Iterator[TurnEvent]:
        """Steps 4-6: wait for the model, stream and save the reply, queue it if its provider
        was unreachable, then ``TurnEnded``. Failures end up in the outcome, typed."""
        turn, engine = self.turn, self.engine
        turn.outbox_plan = self.plan
        finish: Finished | None = None
        try:
            try:  # (a caller that stops at a notice ends the turn: its hold is freed too)
                if self.notice:
                    yield Notice(self.notice)
                if turn.reply_cap is not None:  # a quota left room for a shorter reply
                    cap = turn.reply_cap
                    more = "a minute's limit" if cap.limit.startswith(PER_MINUTE_CAP) \
                        else "is left"
                    yield Notice(f"{cap.describe()} ({cap.asked:,} asked, more than {more}).")
                if not engine.ready:
                    yield ModelLoading(engine.info.model)
                engine.wait_ready()  # a message sent while the model loads waits here
                for event in turn.run(engine, cancel):
                    if isinstance(event, Finished):
                        finish = event
                    yield event
            finally:  # what the quotas reserved for it: its usage is in the ledger now
                self.pipeline.service.release_hold(turn)
        except OutpostError as exc:
            self.pipeline.service.keep_unsaved(turn)  # (a final write that failed: kept)
            item = yield from self._queue(exc)
            yield TurnEnded(self._outcome(finish, exc, item))
            return
        self.pipeline.service.keep_unsaved(turn)
        item = yield from self._queue(None)
        if item is None:
            self._settle_failed_items(finish)
        yield TurnEnded(self._outcome(finish, None, item))

    def _settle_failed_items(self, finish: Finished | None) -> None:
        """The question is answered now (a retry or a regenerate from the chat): an outbox
        item of it that failed is no longer news (it showed as failed for ever)."""
        turn = self.turn
        if finish is None or finish.reason not in (FinishReason.STOP, FinishReason.LENGTH) \
                or not turn.reply.text or turn.assistant_message_id is None:
            return
        try:
            settle_answered_in_chat(self.pipeline.service.outbox, turn.user_message_id,
                                    turn.assistant_message_id)
        except OutpostError as exc:  # (the answer is stored; this is the outbox's display)
            log.warning("could not settle the failed outbox items of %s: %s",
                        turn.user_message_id, exc)

    def _queue(self, error: OutpostError | None) -> Iterator[TurnEvent]:
        """The outbox, when the plan says so: under Cloud only when the provider could not be
        reached (``error``); under Auto with send-when-online when the local model answered
        because it could not. Returns the item (or None)."""
        plan, turn = self.plan, self.turn
        if plan is None:
            return None
        outcome = self.engine.outcome() if error is None else None
        unreachable = isinstance(error, FAILOVER_ERRORS) and plan.always if outcome is None \
            else plan.with_local and outcome.cloud_unreachable
        if not unreachable:
            return None
        try:  # (answered locally: why the cloud did not answer, a 429's Retry-After with it)
            item = self.pipeline.service.queue_for_later(
                turn, plan.provider, plan.model, error,
                cause=outcome.cloud_error if outcome is not None else None,
                offline=plan.offline)
        except OutpostError as exc:
            yield Notice(f"The message could not be put in the outbox: {exc}")
            return None
        yield Queued(item, answered_locally=error is None)
        return item

    def _outcome(self, finish: Finished | None, error: OutpostError | None,
                 queued: OutboxItem | None) -> TurnOutcome:
        stream_failed = error is not None
        turn = self.turn
        service = self.pipeline.service
        message: Message | None = None
        place = (1, 1)
        if turn.assistant_message_id:
            try:
                message = turn.as_saved(service.store.get_message(turn.assistant_message_id))
                ids = [m.id for m in service.store.siblings(message)]
                place = (ids.index(message.id) + 1, len(ids))
            except OutpostError as exc:  # the reply is saved; reading it back failed
                error = error or exc
        check = turn.output_check
        if error is None and finish is not None:
            error = _reply_error(finish, check, message, turn)
        outcome = turn.engine.outcome() if turn.engine is not None else self.engine.outcome()
        return TurnOutcome(
            turn.conversation_id, turn.user_message_id, turn.assistant_message_id, message,
            finish, outcome.answered, outcome.reason or turn.route_reason, check,
            turn.selection(), turn.cost(), queued, error, stream_failed, *place, turn=turn,
            unsaved=turn.unsaved_error, refused_knobs=outcome.refused_knobs)


def _reply_error(finish: Finished, check: OutputCheck | None, message: Message | None,
                 turn: Turn) -> OutpostError | None:
    """Why a stream that ended has no usable reply (None: it has one)."""
    if finish.reason is FinishReason.ERROR:
        failure = finish.error
        return failure if isinstance(failure, OutpostError) else EngineError(str(failure))
    if finish.reason is FinishReason.CANCELLED:
        return Cancelled("The reply was stopped; the partial answer is saved.")
    if check is not None and not check.valid:
        return InvalidJsonReply(f"The reply is not valid JSON even after one repair "
                                f"({check.error}); its raw text is saved.")
    if message is not None and message.status is MessageStatus.ERROR:
        return EmptyReply(message.error or "The model returned an empty reply.")
    if not turn.reply.text.strip():
        return EmptyReply("The model returned an empty reply (saved, marked as an error). "
                          "Try again, or change the message or the knobs.")
    return None


class TurnPipeline:
    """Runs turns for one front end: ``send`` (or ``prepare`` + ``PendingTurn.run``), ``retry``
    and the token meter's ``measure``. ``engines`` builds the engines (see ``EngineSource``)."""

    def __init__(self, service: ChatService, engines: EngineSource,
                 clock: Callable[[], float] = time.monotonic,
                 pause: Callable[[threading.Event, float], bool] | None = None):
        """``clock`` and ``pause(cancel, seconds) -> cancelled?`` time the wait out of a local
        rate limit (tests pass virtual ones); by default the monotonic clock and
        ``cancel.wait``."""
        self.service = service
        self.engines = engines
        self.clock = clock
        self.pause = pause or (lambda cancel, seconds: cancel.wait(seconds))

    @property
    def settings(self):
        return self.service.settings

    # -- the entry point ------------------------------------------------------------------
    def send(self, prompt: str, conversation_id: str | None = None, *,
             target: TurnTarget = TurnTarget(), options: TurnOptions = TurnOptions(),
             cancel: threading.Event | None = None, wait_for_model: bool = False,
             wait_on_rate_limit: bool = False, reply_to: str | None = None
             ) -> Iterator[TurnEvent]:
        """A whole turn. ``wait_for_model``: let the model load before fitting the context, so
        the counts are the model's own (the CLI; the window does not block on a load).
        ``wait_on_rate_limit``: wait out a local rate limit (``RateLimitWait`` each second)
        instead of refusing the turn. ``reply_to``: the message this one follows (a branch; default:
        the end of the active path). Errors before the prompt is saved are raised."""
        cancel = cancel or threading.Event()
        while True:
            try:
                pending = self.prepare(prompt, conversation_id, target=target, options=options,
                                       wait_for_model=wait_for_model, reply_to=reply_to)
                break
            except RateLimitedLocally as exc:
                if not wait_on_rate_limit:
                    raise
                yield from self._wait_out(exc, cancel)
        yield pending.started
        yield from pending.run(cancel)

    def prepare(self, prompt: str, conversation_id: str | None = None, *,
                target: TurnTarget = TurnTarget(), options: TurnOptions = TurnOptions(),
                wait_for_model: bool = False, reply_to: str | None = None) -> PendingTurn:
        """Steps 1-3: route, engine, the saved prompt. Raises (nothing saved) on bad input, a
        message that cannot fit, a quota, a missing key or model."""
        service = self.service
        # (another profile's refused before a model is chosen or loaded for it)
        conversation = service.own_conversation(conversation_id) if conversation_id else None
        chosen = self._choose(target, options, conversation, wait_for_model)
        chosen, turn = self._within_quota(
            chosen, lambda c, local_instead: service.start_turn(
                prompt, conversation_id, model=c.engine.info.model, options=options,
                route=target.route, counter=c.engine, effective_route=c.decision.route.value,
                price_known=c.engine.price_known, reply_to=reply_to, price=c.engine.price,
                fanout=_fanout(target), local_instead=local_instead, held=c.held),
            target, options, conversation, wait_for_model)
        return self._pending(chosen, turn, new_conversation=conversation_id is None)

    def retry(self, failed: Turn, *, target: TurnTarget = TurnTarget(),
              options: TurnOptions = TurnOptions()) -> PendingTurn:
        """Answer a failed turn's saved prompt again (same request, same key), with the engine
        the target says now (best-of-n included); the new reply is a sibling of the failed one."""
        conversation = self.service.store.get_conversation(failed.conversation_id)
        chosen = self._choose(target, options, conversation, wait_for_model=False)
        chosen, turn = self._within_quota(
            chosen, lambda c, local_instead: self.service.retry_turn(
                failed, effective_route=c.decision.route.value,
                price_known=c.engine.price_known, price=c.engine.price,
                fanout=_fanout(target), counter=c.engine, local_instead=local_instead,
                held=c.held),
            target, options, conversation, wait_for_model=False)
        return self._pending(chosen, turn)

    def regenerate(self, message_id: str, *, target: TurnTarget = TurnTarget(),
                   options: TurnOptions = TurnOptions(), wait_for_model: bool = False
                   ) -> PendingTurn:
        """A new answer beside the reply ``message_id`` (a sibling, which becomes the active
        one), from the path up to its question, with the engine and knobs chosen now."""
        service = self.service
        reply = service.store.get_message(message_id)
        conversation = service.own_conversation(reply.conversation_id, message_id=message_id)
        chosen = self._choose(target, options, conversation, wait_for_model)
        chosen, turn = self._within_quota(
            chosen, lambda c, local_instead: service.regenerate_turn(
                message_id, model=c.engine.info.model, options=options, counter=c.engine,
                effective_route=c.decision.route.value, price_known=c.engine.price_known,
                price=c.engine.price, fanout=_fanout(target), local_instead=local_instead,
                held=c.held),
            target, options, conversation, wait_for_model)
        return self._pending(chosen, turn)

    def _within_quota(self, chosen: "_Chosen", start: Callable[["_Chosen", bool], Turn],
                      target: TurnTarget, options: TurnOptions, conversation,
                      wait_for_model: bool) -> tuple["_Chosen", Turn]:
        """``start(chosen, local_instead)`` (the prompt saved); under Auto, a cloud-only budget
        that is spent (a daily token quota, a monthly cost budget:
        ``QuotaExceeded.cloud_budget``), or that would limit the cloud's reply while the local
        model is not counted against any budget (``CloudReplyCapped``), or a per-minute limit
        that does not count the local model and would have the cloud wait
        (``CloudRateLimited``), has the local model answer instead (in full, now), and says
        why, as an unreachable provider does; with no local model for a limited reply, the
        cloud answers it, limited (or waits). Every other refusal stands: a route the profile
        may not use, a rate limit or another limit that counts the local model too (a reply
        it limits is then the cloud's, limited, as before). Such a local
        answer is not queued for the cloud (a budget, not the network, kept it here); the
        notice says so when the turn would have been. A turn held for the outbox
        (``_Chosen.held``: the local model answers now, the request waits) is reckoned as the
        local answer it is now: no cloud budget limits or refuses it, nothing is taken from
        the per-minute limits for the cloud, and it is queued; the outbox sender checks the
        quotas when the request goes."""
        auto = chosen.decision.route is Route.AUTO
        try:
            return chosen, start(chosen, auto and not chosen.held)
        except QuotaExceeded as exc:
            if exc.cloud_budget is None or not auto or chosen.held:
                raise
            reason = f"{target.provider}: {exc.cloud_budget}: answered locally"
            try:
                engine = self.engines.local(None)
                if target.test_time is not None:
                    engine = self._with_candidates(engine, target.test_time, options,
                                                   conversation)
                if wait_for_model:
                    engine.wait_ready()
            except OutpostError:
                if not isinstance(exc, (CloudReplyCapped, CloudRateLimited)):
                    raise
                # no local model: the cloud's, limited, or after the wait (RateLimitedLocally)
                return chosen, start(chosen, False)
            local = _Chosen(engine, RouteDecision(Route.LOCAL, reason), None, chosen.overrode,
                            notice=f"{exc.finding} The local model answers this message."
                            + _not_queued_for_budget(chosen.plan))
            return local, start(local, False)

    def _choose(self, target: TurnTarget, options: TurnOptions, conversation,
                wait_for_model: bool) -> "_Chosen":
        """Steps 1-2 for any kind of turn: the route and the engine (best-of-n around it)."""
        engine, decision, plan, overrode = self._engine_for(
            target, conversation, adapters=self.service.lora(options, conversation))
        if target.test_time is not None:
            engine = self._with_candidates(engine, target.test_time, options, conversation)
        if wait_for_model:
            engine.wait_ready()  # exact counts from the model's own tokenizer
        return _Chosen(engine, decision, plan, overrode, notice=_not_queued(target, decision))

    def _pending(self, chosen: "_Chosen", turn: Turn,
                 new_conversation: bool = False) -> PendingTurn:
        turn.route_reason, turn.outbox_plan = chosen.decision.reason, chosen.plan
        started = TurnStarted(turn.conversation_id, turn.user_message_id, new_conversation,
                              chosen.decision.route, chosen.decision.reason, chosen.engine.info,
                              turn.fit, turn.request.response_format is not None,
                              chosen.overrode,
                              held_offline=chosen.plan is not None and chosen.plan.offline)
        return PendingTurn(self, turn, chosen.engine, started, chosen.plan, chosen.notice)

    # -- routing and engines ------------------------------------------------------------------
    def effective_route(self, target: TurnTarget, conversation_id: str | None) -> Route:
        """The route policy a turn of this conversation would take (the window's badge)."""
        if self._kept_local(target):
            return Route.LOCAL
        return self._wanted_route(target, conversation_id)

    def held_by_offline_mode(self, target: TurnTarget, conversation_id: str | None) -> bool:
        """Offline mode (or ``offline``) keeps a turn on the local model although it names a
        provider, one not on this computer, and a route that would reach it: such a turn
        ``outbox_asked`` waits in the outbox until Offline mode is off (the window offers it
        as "Send to P once Offline mode is off")."""
        return target.provider is not None and self._kept_local(target) and \
            self._wanted_route(target, conversation_id) is not Route.LOCAL

    def _wanted_route(self, target: TurnTarget, conversation_id: str | None) -> Route:
        wanted = target.route
        if wanted is None and conversation_id is not None:
            wanted = self.service.store.get_conversation(conversation_id).route
        return Route(wanted or self.settings["default_route"])

    def _kept_local(self, target: TurnTarget) -> bool:
        """Offline mode keeps this turn on this computer: ``offline`` (``ask --offline``:
        the local model), or Offline mode, unless the turn's provider is on this computer
        (loopback: an Ollama or llama.cpp server of the user's; nothing sent to it leaves)."""
        if target.offline:
            return True
        if not self.settings["offline_mode"]:
            return False
        return target.provider is None or not self.engines.on_this_computer(target.provider)

    def _engine_for(self, target: TurnTarget, conversation, adapters=()):
        """(engine, RouteDecision, OutboxPlan | None, offline mode overrode?). A Local only
        turn (and Offline mode) never builds a cloud engine, except to hold a request for the
        outbox: ``--send-when-online`` in Offline mode, and Auto with send-when-online whose
        provider is known to be unreachable (``OutboxPlan.held``: never asked). LoRA
        ``adapters`` need the local route (refused before any engine is built) and a local
        model of their architecture (refused before anything is saved)."""
        settings = self.settings
        wanted = target.route or (conversation.route if conversation is not None else None)
        offline = self._kept_local(target)
        decision = decide_route(wanted, settings["default_route"], offline, target.provider)
        if adapters and decision.route is not Route.LOCAL:
            raise UsageError(
                f"The LoRA adapter {adapters[0].name} works on the local model only, and this "
                f"turn is routed {decision.route.value} to {target.provider}; choose Local "
                "only (or Offline mode), or detach the adapter.")
        overrode = bool(settings["offline_mode"]) and offline and \
            bool(target.provider or wanted == "cloud")
        engines = self.engines
        if decision.route is Route.LOCAL and _held_for_outbox(target, decision, wanted,
                                                              settings["default_route"]):
            assert target.provider is not None  # (_held_for_outbox: there is one)
            # built for its window, its prices and the request the outbox keeps; never asked
            held = RoutedEngine(engines.cloud(target.provider, target.model),
                                lambda: engines.local(None), hedge_after_s=None,
                                on_attempt=engines.on_attempt, held_back=decision.reason)
            plan = OutboxPlan(target.provider, target.model, with_local=True, offline=True)
            # Auto's, with the provider unreachable: its keys, quotas and ledger route
            return held, dataclasses.replace(decision, route=Route.AUTO), plan, overrode
        if decision.route is Route.LOCAL:
            local = engines.local(None if target.provider else target.model)
            # an adapter that does not fit this model: refused before the prompt is saved or
            # the conversation remembers who answers it (from the files' headers)
            local.check_adapters(adapters)
            return local, decision, None, overrode
        assert target.provider is not None  # decide_route: no provider is the local route
        cloud = engines.cloud(target.provider, target.model)
        send_when_online = settings["send_when_online"] if target.send_when_online is None \
            else target.send_when_online
        plan = OutboxPlan(target.provider, target.model, always=decision.route is Route.CLOUD,
                          with_local=bool(send_when_online))
        if decision.route is Route.CLOUD:
            return cloud, dataclasses.replace(decision, reason="cloud-only conversation"), plan, \
                overrode
        link = engines.connectivity
        if plan.with_local and link is not None and \
                link.state(cloud.info.engine) is LinkState.OFFLINE:
            # known to be unreachable: the router would answer locally at once, so the turn is
            # held for the outbox from the start (reckoned as the local answer it is now)
            held = RoutedEngine(cloud, lambda: engines.local(None), hedge_after_s=None,
                                on_attempt=engines.on_attempt,
                                held_back=f"{link.reason(cloud.info.engine)}: answered locally")
            return held, decision, dataclasses.replace(plan, unreachable=True), overrode
        routed = RoutedEngine(cloud, lambda: engines.local(None), link,
                              hedge_after_s=settings["hedge_after_s"],
                              on_attempt=engines.on_attempt)
        return routed, decision, plan, overrode

    def _with_candidates(self, engine: Engine, plan: Plan, options: TurnOptions,
                         conversation) -> Engine:
        """Best-of-n / self-consistency around the engine, checked before anything is saved."""
        check_candidates_differ(self.service.knobs(options, conversation)["temperature"])
        return CandidatesEngine(engine, plan)

    def _wait_out(self, exc: RateLimitedLocally, cancel: threading.Event):
        """Wait out a local rate limit, saying so once a second (cancel stops the turn)."""
        end = self.clock() + exc.wait_s
        while (left := end - self.clock()) > 0:
            yield RateLimitWait(str(exc), left)
            if self.pause(cancel, min(1.0, left)):
                raise Cancelled("Stopped while waiting for the rate limit; nothing was sent.")

    # -- the token meter ------------------------------------------------------------------
    def measure(self, draft: str, conversation_id: str | None, *, target: TurnTarget,
                options: TurnOptions, local: Engine | None) -> Callable[[], Measure] | None:
        """On the caller's thread: a job (to run in the background) that counts the prompt
        this draft would make, fitted as the send fits it (the oldest turns left out to fit
        the window), or None when there is nothing to count. ``local``: the loaded model, if
        any (the meter never waits for or starts a load). When the connection state has the
        local model answer (Offline mode, the provider known to be unreachable under Auto),
        the prompt is fitted again into its window, as the router does."""
        if not draft.strip():
            return None
        settings = self.settings
        max_tokens = options.max_tokens or settings["max_tokens"]
        counter: Engine | None = None
        if self.effective_route(target, conversation_id) is Route.LOCAL or \
                target.provider is None:
            counter = local
        else:
            try:
                counter = self.engines.cloud(target.provider, target.model)
            except OutpostError:
                counter = None  # no key yet, …: the estimate below
        goes = self._where_it_goes(target, conversation_id, counter)
        answers = local if goes.local_answers and counter is not local else None
        store, service = self.service.store, self.service
        system_prompt = options.system_prompt
        quota = self._dry_quota(target, conversation_id, counter, max_tokens, goes.held)

        def job() -> Measure:
            previous: list[Message] = []
            system = settings["system_prompt"]
            conversation = None
            if conversation_id is not None:
                conversation = store.get_conversation(conversation_id)
                system = conversation.system_prompt
                previous = store.branch(conversation_id)
            if system_prompt is not None:  # the panel's, about to be sent
                system = system_prompt
            messages = history_messages(system, previous) + [ChatMessage(Role.USER, draft)]
            if counter is None:  # no tokenizer: the documented estimate (chars / 4)
                estimate = estimate_prompt_tokens(messages)
                checked = quota(estimate)
                return Measure(estimate, False, None, checked.max_tokens or max_tokens, None,
                               goes=goes.words, **checked.fields)
            try:
                response_format = service.response_format(options, conversation)
            except OutpostError:  # (a schema being typed: Send says why)
                response_format = None
            fitted = _fitted(messages, counter, max_tokens, response_format)
            checked = quota(fitted.tokens)
            reply = checked.max_tokens or max_tokens
            fields = dict(checked.fields)
            if fitted.refused is not None:
                fields.setdefault("refused", fitted.refused)
            tokens, exact, window = fitted.tokens, fitted.exact, counter.context_window
            cost = counter.estimate_cost(tokens, reply)
            refit: Fit | None = None
            if answers is not None and fitted.fit is not None:  # (``RoutedEngine``'s refit)
                try:
                    refit = fit_messages(fitted.fit.messages, answers, reply)
                except MessageTooLong as exc:
                    fields.setdefault("refused", str(exc))
                else:
                    tokens, exact, window = refit.prompt_tokens, refit.exact, \
                        answers.context_window
                    cost = None  # the local model answers now
            left_out = LeftOut.of(fitted.fit, refit)
            return Measure(tokens, exact, window, reply, cost,
                           left_out=left_out.record() if left_out is not None else None,
                           goes=goes.words, **fields)

        return job

    def _where_it_goes(self, target: TurnTarget, conversation_id: str | None,
                       counter: Engine | None) -> "_Goes":
        """Where the message goes when the connection state decides it, as ``_engine_for``
        decides: Offline mode keeps on this computer a turn that names a provider elsewhere;
        under Auto the local model answers for a provider known to be unreachable (and the
        request waits in the outbox with send-when-online); under Cloud only it is tried, and
        waits in the outbox when it still cannot be reached."""
        provider = target.provider
        if provider is None:
            return _Goes()
        if self.held_by_offline_mode(target, conversation_id):
            also = f" It also waits in the outbox for {provider} until Offline mode is off." \
                if target.outbox_asked else ""
            return _Goes(f"Offline mode is on: the local model would answer this message."
                         f"{also}", held=True, local_answers=True)
        link = self.engines.connectivity
        name = counter.info.engine if counter is not None else provider
        if link is None or link.state(name) is not LinkState.OFFLINE:
            return _Goes()
        route = self.effective_route(target, conversation_id)
        if route is Route.CLOUD:
            return _Goes(f"{link.reason(name)}: sending tries it, and the message waits in "
                         "the outbox if it still cannot be reached.")
        if route is not Route.AUTO:
            return _Goes()
        when_online = self.settings["send_when_online"] if target.send_when_online is None \
            else target.send_when_online
        also = f" It also waits in the outbox for {provider}." if when_online else ""
        return _Goes(f"{link.reason(name)}: the local model would answer this message.{also}",
                     held=bool(when_online), local_answers=True)

    def _dry_quota(self, target: TurnTarget, conversation_id: str | None,
                   counter: Engine | None, max_tokens: int,
                   held: bool) -> Callable[[int], "_DryCheck"]:
        """On the caller's thread: the meter's quota check for ``prompt_tokens`` (run in the
        background): the send's own ``QuotaGuard.check`` (route, cloud or not, price,
        best-of-n's requests, Auto's local answer), but dry: nothing reserved or taken.
        ``held``: the turn would be held for the outbox (``_where_it_goes``)."""
        quotas, profile = self.service.quotas, self.service.profile
        if quotas is None:
            return lambda _tokens: _DryCheck()
        route = self.effective_route(target, conversation_id)
        if held:  # (``_engine_for``: reckoned as Auto's, answered locally now)
            route = Route.AUTO
        cloud = route is not Route.LOCAL and not held
        auto = route is Route.AUTO and not held
        price = counter.price if counter is not None and cloud else None
        price_known = counter.price_known if counter is not None and cloud else True
        model = target.model or (counter.info.model if counter is not None else "")
        fanout = _fanout(target)

        def check(prompt_tokens: int) -> _DryCheck:
            try:
                cap = quotas.check(profile, route.value, cloud, prompt_tokens, max_tokens,
                                   price_known=price_known, model=model, price=price,
                                   fanout=fanout, local_instead=auto, dry=True)
            except QuotaExceeded as exc:
                if auto and exc.cloud_budget is not None:  # (``_within_quota``)
                    return _DryCheck(fields={"instead": f"{exc.finding} The local model "
                                                        "would answer this message."})
                return _DryCheck(fields={"refused": str(exc)})
            except RateLimitedLocally as exc:
                return _DryCheck(fields={"refused": str(exc), "retry_s": exc.wait_s})
            except OutpostError as exc:  # (a policy file that cannot be read refuses too)
                return _DryCheck(fields={"refused": str(exc)})
            if cap is None:
                return _DryCheck()
            return _DryCheck(cap.max_tokens, {"asked": cap.asked, "limit": cap.limit})

        return check


class _Goes(NamedTuple):
    """Where the meter's message goes when the connection state decides it: ``words`` for
    the user (None: where the route says); ``held``: held for the outbox, reckoned as the
    local answer it is now (the quotas); ``local_answers``: the local model answers now."""

    words: str | None = None
    held: bool = False
    local_answers: bool = False


class _Fitted(NamedTuple):
    """The meter's prompt, fitted as the send fits it (``fit``), or, when the newest message
    cannot fit at all, counted with the system prompt alone and the send's refusal."""

    tokens: int
    exact: bool
    fit: Fit | None = None
    refused: str | None = None


def _fitted(messages: list[ChatMessage], counter: Engine, max_tokens: int,
            response_format: dict | None) -> _Fitted:
    """``messages`` fitted into ``counter``'s window (``ChatService._checked``'s fit)."""
    try:
        fit = fit_messages(messages, counter, max_tokens, as_sent=lambda kept: (
            counter.messages_as_sent(kept, response_format)))
    except MessageTooLong as exc:
        head = [m for m in messages[:1] if m.role is Role.SYSTEM]
        alone = head + messages[-1:]
        tokens, exact = counter.count_prompt(alone)
        return _Fitted(tokens, exact, None, str(exc))
    return _Fitted(fit.prompt_tokens, fit.exact, fit)


class _DryCheck(NamedTuple):
    """What the meter's dry quota check found: the reply's tokens when a quota limits them
    (None: as asked), and the ``Measure`` fields that say why."""

    max_tokens: int | None = None
    fields: dict = {}


def _held_for_outbox(target: TurnTarget, decision: RouteDecision, wanted: str | None,
                     default_route: str) -> bool:
    """Offline mode (or ``offline``) answers a turn locally whose request the user asked, in
    so many words, to send when online: it waits in the outbox, unless the conversation is
    Local only (nothing of it leaves this computer) or no provider is named."""
    return target.outbox_asked and decision.reason == OFFLINE_MODE and \
        target.provider is not None and Route(wanted or default_route) is not Route.LOCAL


def _not_queued(target: TurnTarget, decision: RouteDecision) -> str | None:
    """Why a turn the user asked to send when online is answered locally and not queued
    (None: it is queued when it needs to be; held by Offline mode, its route is Auto's)."""
    if not target.outbox_asked or decision.route is not Route.LOCAL:
        return None
    if target.provider is None:
        return ("The message is not queued for the cloud: no provider is chosen for it, so "
                "the local model answers.")
    return ("The message is not queued for the cloud: this conversation is Local only, so "
            "nothing of it leaves this computer.")


def _not_queued_for_budget(plan: OutboxPlan | None) -> str:
    """What a local answer a budget chose says when the turn would have been queued had the
    provider been unreachable (Auto with send-when-online): it is not ("" otherwise)."""
    if plan is None or not plan.with_local:
        return ""
    return (f" It is not put in the outbox for {plan.provider}: a budget, not the network, "
            "kept it from the cloud.")


def _fanout(target: TurnTarget) -> Fanout:
    """The requests a turn to ``target`` sends, for the quotas (best-of-n: its candidates)."""
    return target.test_time.fanout() if target.test_time is not None else ONE_REQUEST


class _Chosen(NamedTuple):
    """Who answers a turn: the engine, the route decision, the outbox plan, and whether Offline
    mode overrode what was asked."""

    engine: Engine
    decision: RouteDecision
    plan: OutboxPlan | None
    overrode: bool
    notice: str | None = None  # news for the user as the turn starts (a quota's fallback)

    @property
    def held(self) -> bool:
        """The local model answers now, and the request waits in the outbox (``OutboxPlan``)."""
        return self.plan is not None and self.plan.held
