"""A turn running: the reply streamed from an engine and stored as it comes (``Turn.run``).

``Turn.run(engine, cancel)`` creates the assistant message when streaming starts, flushes its
content to the database at least every ``FLUSH_INTERVAL_S`` (``app.chat.streaming_row``), and
leaves it ``complete``, ``interrupted`` (user stop, dead stream, consumer gone) or ``error`` —
never stuck in ``streaming`` while this process lives. Structured output is checked (one
repair); a final write the disk refuses keeps the reply (``Turn.unsaved``) for
``ChatService.save_unsaved``, which writes the usage records the disk refused with it (the
ledger keeps those: ``UsageLedger.unsaved``). Every known key is masked in what is stored and
raised (``app.domain.secrets_mask``). ``app.chat.service.ChatService`` makes turns.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator

from app.chat.streaming_row import StreamingRow
from app.config.secrets import stored_keys
from app.domain.context import Fit, LeftOut, ReplyCap
from app.domain.errors import KnownStorageError, OutpostError, ReplyNotSaved, UsageError
from app.domain.messages import (
    CLOSING,
    ChatMessage,
    ChatRequest,
    Finished,
    FinishReason,
    Message,
    MessageStatus,
    Refit,
    Reply,
    Restart,
    Role,
    Seam,
    StreamEvent,
    TextDelta,
    Usage,
    accumulate,
    cancel_reason,
    new_id,
)
from app.domain.sampling import sent_params
from app.domain.secrets_mask import SecretMask, mask_stream
from app.domain.structured import OutputCheck, lenient, repair_prompt, validate
from app.domain.test_time import Selection
from app.domain.wording import counted
from app.storage.store import Activate, Store
from app.storage.writers import begin_writing, end_writing
from engines.base import Engine

log = logging.getLogger(__name__)


if TYPE_CHECKING:
    from app.storage.ledger import UsageLedger

FLUSH_INTERVAL_S = 0.5


@dataclass(frozen=True)
class OutboxPlan:
    """When this turn's request goes to the outbox: under Cloud only (``always``) when the
    provider cannot be reached; under Auto with "send when online" (``with_local``) when the
    local model answered because the provider could not be reached; ``offline``: Offline
    mode held it back (the local model answered; it waits until Offline mode is off);
    ``unreachable``: the provider was known to be unreachable, so it was not asked (the local
    model answered; it waits until the provider can be reached)."""

    provider: str
    model: str | None
    always: bool = False
    with_local: bool = False
    offline: bool = False
    unreachable: bool = False

    @property
    def held(self) -> bool:
        """The cloud is not asked now: the local model answers, and the request waits in the
        outbox (its quotas are checked when it goes: ``app.chat.outbox_sender``)."""
        return self.offline or self.unreachable


@dataclass
class Turn:
    """One user turn: the saved prompt, the request built for it, and (once run) the reply."""

    store: Store
    conversation_id: str
    user_message_id: str
    request: ChatRequest
    assistant_message_id: str | None = None
    reply: Reply = field(default_factory=Reply)
    route_reason: str | None = None  # why this engine (when the engine does not say)
    outbox_plan: OutboxPlan | None = None
    fit: Fit | None = None  # how the conversation was fitted into the context window
    # how it was fitted again for the engine that answered, when that is not the one the turn
    # was built for (the local model behind Auto: ``Refit``); ``request`` and ``fit`` stay as
    # built (a retry or the outbox sends them again)
    refit: Fit | None = None
    reply_cap: ReplyCap | None = None  # a quota limited the request's max_tokens
    ledger: "UsageLedger | None" = None  # the reply's cost, from its attempts
    # when to flush the streaming row (FLUSH_INTERVAL_S); tests put a virtual clock here
    clock: Callable[[], float] = field(default=time.monotonic, repr=False, compare=False)
    engine: Engine | None = field(default=None, repr=False, compare=False)  # once run
    # whether the reply becomes the conversation's active leaf (app.storage.store.Activate):
    # a late outbox answer only when the user has not gone on from the reply it stands beside
    activate: Activate = "always"
    output_check: OutputCheck | None = None  # structured output: how the reply was checked
    # the keys to mask, read when the turn runs (default: every stored key)
    secrets: Callable[[], SecretMask] = field(default=lambda: SecretMask(stored_keys()),
                                              repr=False, compare=False)
    _mask: SecretMask | None = field(default=None, repr=False, compare=False)
    # the final write's fields while it has not gone through, and why (``unsaved_error``):
    # the row stays this process's to write until ``save_again`` lands them. The turn ends
    # as it would have otherwise (its own error, or none): the caller looks here.
    unsaved: dict | None = field(default=None, repr=False, compare=False)
    unsaved_error: ReplyNotSaved | None = field(default=None, repr=False, compare=False)
    # what a reply cut short because the app closed (a cancel ``CLOSING``, not the user's
    # stop) says: the outbox's says it will be sent again
    when_closed: str = "Outpost was closed before the reply was finished."

    def run(self, engine: Engine, cancel: threading.Event,
            route_reason: str | None = None) -> Iterator[StreamEvent]:
        """Stream the reply from ``engine``, persisting it as it arrives. A routing engine
        (``app.chat.router.RoutedEngine``) reports who answered and why; that is stored too."""
        self.engine = engine
        self.route_reason = route_reason or self.route_reason
        mask = self._mask = self.secrets()
        info = engine.info
        message_id = new_id()
        begin_writing(message_id)  # from before the row exists until its final write
        try:
            self.store.add_message(
                self.conversation_id, Role.ASSISTANT, "", status=MessageStatus.STREAMING,
                parent_id=self.user_message_id, engine=info.engine, model=info.model,
                params=self._sent_params(engine), activate=self.activate,
                message_id=message_id)
            self.assistant_message_id = message_id
            yield from self._stream_into(message_id, engine, cancel, mask)
        finally:
            if self.unsaved is None:  # (else it is still ours: ``save_again`` ends it)
                end_writing(message_id)

    def _stream_into(self, message_id: str, engine: Engine, cancel: threading.Event,
                     mask: SecretMask) -> Iterator[StreamEvent]:
        reply = self.reply
        row = StreamingRow(self.store, message_id, FLUSH_INTERVAL_S, self.clock)
        final_status = MessageStatus.INTERRUPTED
        error_text: str | None = "The reply stopped before it was finished."
        try:
            for event in mask_stream(engine.stream(self.request, cancel), mask):
                accumulate([event], reply)
                if isinstance(event, TextDelta):
                    row.text(reply.text)
                elif isinstance(event, Seam):
                    self._save_seam(message_id)
                elif isinstance(event, Refit):
                    self.refit = event.fit
                elif isinstance(event, Finished):
                    final_status, error_text = _final_status(event, bool(reply.text),
                                                             self._why_cancelled(cancel))
                yield event
            if self.request.response_format and final_status is MessageStatus.COMPLETE:
                final_status, error_text = yield from self._check_json(engine, cancel)
        except OutpostError as exc:
            mask.scrub_error(exc)
            final_status, error_text = MessageStatus.ERROR, str(exc)
            if reply.text:
                final_status = MessageStatus.INTERRUPTED
            if self.output_check is not None and self.output_check.repair_failed:
                # the first reply was whole (not valid JSON): it is kept, as it came
                final_status, error_text = MessageStatus.COMPLETE, self.output_check.error
            raise
        finally:
            row.close()
            self._save_final(final_status, error_text)

    def _why_cancelled(self, cancel: threading.Event) -> str:
        """What a reply cancelled mid-way says: the user stopped it, or the app closed."""
        return self.when_closed if cancel_reason(cancel) == CLOSING else "Stopped by the user."

    def _check_json(self, engine: Engine, cancel: threading.Event):
        """Structured output: validate the reply; if it is not valid, one repair (a lenient
        parse, else one re-ask carrying the validation error). Yields the re-ask's events;
        returns the final (status, error)."""
        assert self.request.response_format is not None
        schema = self.request.response_format.get("schema")
        reply = self.reply
        check = OutputCheck("json_schema" if schema else "json")
        self.output_check = check
        raw = reply.text
        verdict = validate(raw, schema)
        if verdict.valid:
            return MessageStatus.COMPLETE, None
        # a reply cut at max tokens is not whole: no part of it is passed off as the answer,
        # it is asked again with more room
        cut = reply.finish is not None and reply.finish.reason is FinishReason.LENGTH
        fixed = verdict if cut else lenient(raw, schema)
        if fixed.valid:
            reply.text = fixed.text
            check.repair, check.raw = "lenient", raw
            return MessageStatus.COMPLETE, None
        why = f"it was cut at max tokens ({self.request.max_tokens})" if cut else verdict.error
        first_finish = reply.finish  # (the reply kept, should the re-ask fail)
        restart = Restart(f"The reply was not valid JSON: {why}. Asking once more.")
        accumulate([restart], reply)
        yield restart
        first_usage = reply.usage
        again = dataclasses.replace(
            self.request, messages=self.request.messages + (
                ChatMessage(Role.ASSISTANT, raw),
                ChatMessage(Role.USER, repair_prompt(verdict, schema))),
            # its own key: a provider that deduplicates must not hand back the invalid reply
            idempotency_key=f"{self.request.idempotency_key}~repair",
            # a reply cut at max tokens gets twice the room
            max_tokens=min(self.request.max_tokens * 2, 131_072) if cut
            else self.request.max_tokens)
        status, error = MessageStatus.COMPLETE, None
        check.repair, check.raw = "reask", raw
        # one reply repairs it (best-of-n does not sample all candidates again)
        try:
            for event in mask_stream(engine.repair_engine().stream(again, cancel),
                                     self.secret_mask()):
                accumulate([event], reply)
                if isinstance(event, Finished):
                    status, error = _final_status(event, bool(reply.text))
                yield event
        except OutpostError as exc:
            self.secret_mask().scrub_error(exc)
            self._keep_first_reply(check, raw, str(exc), first_finish)
            raise
        if first_usage is not None and reply.usage is not None:
            reply.usage = Usage(
                first_usage.prompt_tokens + reply.usage.prompt_tokens,
                first_usage.completion_tokens + reply.usage.completion_tokens,
                estimated=first_usage.estimated or reply.usage.estimated,
                cached_prompt_tokens=first_usage.cached_prompt_tokens +
                reply.usage.cached_prompt_tokens)
        if status is not MessageStatus.COMPLETE:  # stopped, or the engine failed
            self._keep_first_reply(check, raw, error or "it stopped", first_finish)
            return MessageStatus.COMPLETE, check.error
        cut_again = reply.finish is not None and reply.finish.reason is FinishReason.LENGTH
        second = validate(reply.text, schema) if cut_again else lenient(reply.text, schema)
        if second.valid:
            reply.text = second.text
            return MessageStatus.COMPLETE, None
        if cut_again:
            second = dataclasses.replace(second, error=f"cut at max tokens "
                                                       f"({again.max_tokens}): {second.error}")
        check.valid, check.error = False, second.error
        if not reply.text.strip():
            reply.text = raw  # keep the text there is
        return MessageStatus.COMPLETE, (f"invalid JSON after one repair ({second.error}); the "
                                        "raw text is kept.")

    def _keep_first_reply(self, check: OutputCheck, raw: str, why: str,
                          finish: Finished | None) -> None:
        """The repair's re-ask did not finish: the reply is the first one, whole (not valid
        JSON), with how it ended (``finish``), never the re-ask's part or nothing."""
        self.reply.text, self.reply.finish = raw, finish
        check.valid, check.repair_failed = False, True
        check.error = (f"The reply is not valid JSON, and asking again for valid JSON failed "
                       f"({why}); the first reply is kept as it came.")

    def secret_mask(self) -> SecretMask:
        """The keys this turn masks (read once, when it runs)."""
        if self._mask is None:
            self._mask = self.secrets()
        return self._mask

    def selection(self) -> Selection | None:
        """Best-of-n / self-consistency: the candidates and how one won (None: one sample)."""
        return self.engine.outcome().selection if self.engine is not None else None

    def cost(self) -> tuple[float | None, bool] | None:
        """(this turn's cost in USD, every attempt included — None: a price is unknown;
        estimated?), or None when no usage ledger keeps costs."""
        if self.ledger is None:
            return None
        return self.ledger.turn_cost(self.request.idempotency_key)

    def _cost_fields(self) -> dict:
        cost = self.cost()
        return {} if cost is None else {"cost_usd": cost[0], "cost_estimated": cost[1]}

    def _sent_params(self, engine: Engine) -> dict:
        """The parameters actually sent to (or applied by) the engine that answered, from the
        capability map, plus who asked and the turn's key (never the panel's values). An engine
        with no row in the map (a test double) gets the request's knobs as they are."""
        params = self._engine_params(engine)
        if self.reply_cap is not None:  # why max_tokens is lower than the turn asked
            params["reply_cap"] = self.reply_cap.record()
        left_out = LeftOut.of(self.fit, self.refit)
        if left_out is not None:  # the oldest turns the model did not see
            params["context_left_out"] = left_out.record()
        return params

    def _engine_params(self, engine: Engine) -> dict:
        request = self.request
        outcome = engine.outcome()
        kind = outcome.knob_kind
        if kind is None:
            return request.sampling_params()
        # as sent to the model that answered: less what it refuses (app.domain.sampling)
        params = {**sent_params(kind, request, outcome.answered.model, outcome.refused_knobs),
                  "user": request.user,
                  "idempotency_key": request.idempotency_key, "engine_kind": kind}
        first = request.messages[0] if request.messages else None
        # the system prompt this reply was given (the conversation's may change later)
        params["system_prompt"] = first.content if first is not None and \
            first.role is Role.SYSTEM else ""
        finish = self.reply.finish
        if "seed" not in params and finish is not None and finish.seed is not None:
            params["seed"] = finish.seed  # drawn by the engine: the reply can be made again
            params["seed_drawn"] = True
        plan = outcome.test_time
        if plan is not None:  # best-of-n / self-consistency
            params["test_time"] = {k: v for k, v in dataclasses.asdict(plan).items()
                                   if k in ("mode", "n") or
                                   (k == "scorer" and plan.mode == "best_of") or
                                   (k == "extract" and plan.mode != "best_of")}
            selection = outcome.selection
            if selection is not None and selection.winner is not None:
                won = next((c for c in selection.candidates if c.index == selection.winner),
                           None)
                if won is not None and won.seed is not None:
                    params["seed"] = won.seed  # the kept candidate's own sample
        if "response_format" in params and kind == "openai" and outcome.json_schema_refused:
            params["response_format"] = "json_object (the server refused json_schema)"
        return params

    def _route_fields(self, growing: bool = False) -> dict:
        """Who answered (a failover changes it), why, and who wrote which part (``growing``:
        the last part is still being written, so it has no end yet: to the end of the text)."""
        assert self.engine is not None
        outcome = self.engine.outcome()
        answered = outcome.answered
        segments = [s.record() for s in outcome.segments] or [
            {"engine": answered.engine, "model": answered.model, "start": 0}]
        if growing:
            segments[-1].pop("end", None)
        else:
            segments[-1]["end"] = len(self.reply.text)
        return {"route_reason": outcome.reason or self.route_reason,
                "params": self._sent_params(self.engine),
                "engine": answered.engine, "model": answered.model, "segments": segments}

    def _save_seam(self, message_id: str) -> None:
        """Another engine goes on with the reply (a failover mid-stream): who writes from
        here is stored at once, so a reply cut short by a crash is not credited whole to the
        engine that began it. A write refused now waits for the final one."""
        try:
            self.store.update_message(message_id, **self._route_fields(growing=True))
        except KnownStorageError as exc:
            log.warning("could not store the seam yet: %s", exc)

    def _save_final(self, status: MessageStatus, error_text: str | None) -> None:
        reply = self.reply
        usage: Usage | None = reply.usage
        finish = reply.finish
        mask = self.secret_mask()
        reply.text = mask.scrub(reply.text)  # masked as it streamed; this is the last guard
        error_text = mask.scrub_optional(error_text)
        if status is MessageStatus.COMPLETE and not reply.text.strip():
            # never a blank bubble: an empty (or blocked) output is an error the user can retry
            why = finish.reason.value if finish else "unknown"
            status, error_text = MessageStatus.ERROR, (
                f"The model returned an empty reply (finish reason: {why}). Retry, or change "
                "the message or the sampling knobs.")
        fields = dict(
            content=reply.text,
            status=status,
            error=error_text,
            finish_reason=(finish.reason.value if finish else "interrupted"),
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
            cached_prompt_tokens=usage.cached_prompt_tokens if usage else None,
            tokens_estimated=usage.estimated if usage else False,
            ttft_ms=finish.ttft_ms if finish else None,
            tokens_per_s=finish.tokens_per_s if finish else None,
            output_check=self.output_check.record() if self.output_check else None,
            candidates=selection.record() if (selection := self.selection()) else None,
            **self._route_fields(), **self._cost_fields(),
        )
        try:
            self.store.update_message(self.assistant_message_id, **fields)
        except KnownStorageError as exc:  # (a full disk): kept whole here, written later
            self.unsaved = fields
            self.unsaved_error = ReplyNotSaved(
                f"The reply ({counted(len(reply.text), 'character')}) could not be saved yet: "
                f"{exc}")
            return
        if self.ledger is not None:
            self.ledger.save_unsaved()  # usage records the disk refused a moment ago
        self._touch()

    def save_again(self) -> bool:
        """Write the reply a failed final write kept (``unsaved``); True once it is stored
        (or there was nothing to write). A row deleted meanwhile has nothing left to save."""
        if self.unsaved is None:
            return True
        if self.ledger is not None and self.ledger.save_unsaved():
            return False  # its usage records first: a reply saved is a reply counted
        try:
            self.store.update_message(self.assistant_message_id, **self.unsaved)
        except KnownStorageError:
            return False
        except UsageError:  # its conversation was deleted: nothing to save it into
            log.info("the unsaved reply %s was deleted meanwhile", self.assistant_message_id)
        self.unsaved, self.unsaved_error = None, None
        end_writing(self.assistant_message_id)
        self._touch()
        return True

    def as_saved(self, message: Message) -> Message:
        """``message`` (the row as stored) with what the final write has not stored yet."""
        unsaved = self.unsaved  # (once: another thread may save it meanwhile)
        return dataclasses.replace(message, **unsaved) if unsaved else message

    def _touch(self) -> None:
        try:
            self.store.touch_conversation(self.conversation_id)
        except KnownStorageError as exc:  # only its place in the list: the reply is stored
            log.warning("could not move the conversation up the list: %s", exc)


def _final_status(event: Finished, has_text: bool, cancelled: str = "Stopped by the user."
                  ) -> tuple[MessageStatus, str | None]:
    """(status, error) of a reply that ended so; ``cancelled``: what a cancelled one says."""
    if event.reason in (FinishReason.STOP, FinishReason.LENGTH):
        return MessageStatus.COMPLETE, None
    if event.reason is FinishReason.CANCELLED:
        return MessageStatus.INTERRUPTED, cancelled
    text = str(event.error) if event.error else "The engine failed."
    # A stream that died after some text keeps it, marked as interrupted.
    return (MessageStatus.INTERRUPTED if has_text else MessageStatus.ERROR), text
