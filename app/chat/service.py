"""One chat turn, start to finish, shared by the CLI and the window.

``start_turn`` commits the user's message before anything is sent and returns a ``Turn``;
``Turn.run(engine, cancel)`` creates the assistant message when streaming starts, flushes its
content to the database at least every 0.5 s, and leaves it ``complete``, ``interrupted`` (user
stop, dead stream, consumer gone) or ``error`` — never stuck in ``streaming`` while this process
lives. The caller decides which thread runs what: the window runs ``run`` on a worker thread.

No known secret is stored or shown: every stored key (and every key this process handled) is
masked in the reply's text, its error and the error a turn raises (``app.domain.secrets_mask``),
before anything reaches the database or the caller, so the window, the CLI and the exports get
clean data. The keys are read once per turn, on the thread that streams it (keyring reads can be
slow).
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

from app.chat.streaming_row import StreamingRow
from app.config.presets import PresetBook
from app.config.pseudonym import provider_user
from app.config.secrets import stored_keys
from app.config.settings import Settings, default_user_id
from app.domain.adapters import LoraAdapter, adapters_from_records
from app.domain.context import Fit, TokenCounter, fit_messages
from app.domain.errors import KnownStorageError, OutpostError, ReplyNotSaved, UsageError
from app.domain.messages import (
    ChatMessage,
    ChatRequest,
    Finished,
    FinishReason,
    Message,
    MessageStatus,
    Reply,
    Restart,
    Role,
    Seam,
    StreamEvent,
    TextDelta,
    Usage,
    accumulate,
    estimate_prompt_tokens,
    new_id,
)
from app.domain.sampling import KNOB_NAMES, sent_params
from app.domain.secrets_mask import SecretMask, mask_stream
from app.domain.structured import OutputCheck, lenient, repair_prompt, validate
from app.domain.structured import response_format as json_response_format
from app.domain.test_time import Selection
from app.domain.wording import counted, title_from
from app.storage.outbox import Outbox, OutboxItem
from app.storage.store import Activate, Store
from app.storage.writers import begin_writing, end_writing
from engines.base import Engine

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from app.storage.ledger import UsageLedger
    from app.storage.quotas import QuotaGuard

FLUSH_INTERVAL_S = 0.5
# ``reply_to`` for a message that starts the conversation over (an edited first message): it
# follows nothing, beside the conversation's first message
NEW_ROOT = "root"


@dataclass(frozen=True)
class TurnOptions:
    """This turn's knobs (CLI flags, the sampling panel). None: not given, so the preset's,
    else the conversation's, else the settings' value applies (``ChatService.knobs``).
    ``stop`` None: not given; () : no stop sequences."""

    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] | None = None
    top_k: int | None = None
    min_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repeat_penalty: float | None = None
    seed: int | None = None
    preset: str | None = None
    system_prompt: str | None = None  # replaces the conversation's (saved with it)
    # structured output (app.domain.structured): JSON mode on/off (None: the conversation's), and
    # an optional JSON Schema the reply must match (implies JSON mode)
    json_mode: bool | None = None
    json_schema: dict | None = None
    # best-of-n / self-consistency as chosen in the window (kept with a new conversation; the
    # caller wraps the engine, see app.chat.candidates)
    test_time: dict | None = None
    # LoRA adapters on the local model (app.domain.adapters); None: the conversation's
    lora: tuple[LoraAdapter, ...] | None = None
    # knobs set back to "not sent" (e.g. the panel's top_k emptied), overriding the rest
    unset: tuple[str, ...] = ()


def history_messages(system_prompt: str, messages: list[Message]) -> list[ChatMessage]:
    """The messages array of a conversation: the system prompt, then every user message and every
    assistant message that has text (partial answers included, failed empty ones left out)."""
    out: list[ChatMessage] = []
    if system_prompt.strip():
        out.append(ChatMessage(Role.SYSTEM, system_prompt))
    for message in messages:
        if message.role is Role.SYSTEM:
            continue
        if message.role is Role.ASSISTANT and not message.content.strip():
            continue
        out.append(ChatMessage(message.role, message.content))
    return out


@dataclass(frozen=True)
class OutboxPlan:
    """When this turn's request goes to the outbox: under Cloud only (``always``) when the
    provider cannot be reached; under Auto with "send when online" (``with_local``) when the
    local model answered because the provider could not be reached."""

    provider: str
    model: str | None
    always: bool = False
    with_local: bool = False


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
                elif isinstance(event, Finished):
                    final_status, error_text = _final_status(event, bool(reply.text))
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
        fixed = lenient(raw, schema)
        if fixed.valid:
            reply.text = fixed.text
            check.repair, check.raw = "lenient", raw
            return MessageStatus.COMPLETE, None
        cut = reply.finish is not None and reply.finish.reason is FinishReason.LENGTH
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
        second = lenient(reply.text, schema)
        if second.valid:
            reply.text = second.text
            return MessageStatus.COMPLETE, None
        if reply.finish is not None and reply.finish.reason is FinishReason.LENGTH:
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
        request = self.request
        outcome = engine.outcome()
        kind = outcome.knob_kind
        if kind is None:
            return request.sampling_params()
        params = {**sent_params(kind, request), "user": request.user,
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
        self._touch()

    def save_again(self) -> bool:
        """Write the reply a failed final write kept (``unsaved``); True once it is stored
        (or there was nothing to write). A row deleted meanwhile has nothing left to save."""
        if self.unsaved is None:
            return True
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


def _final_status(event: Finished, has_text: bool) -> tuple[MessageStatus, str | None]:
    if event.reason in (FinishReason.STOP, FinishReason.LENGTH):
        return MessageStatus.COMPLETE, None
    if event.reason is FinishReason.CANCELLED:
        return MessageStatus.INTERRUPTED, "Stopped by the user."
    text = str(event.error) if event.error else "The engine failed."
    # A stream that died after some text keeps it, marked as interrupted.
    return (MessageStatus.INTERRUPTED if has_text else MessageStatus.ERROR), text


class ChatService:
    """Starts turns: validates input, saves the prompt, builds the request."""

    def __init__(self, store: Store, settings: Settings, *, ledger: "UsageLedger | None" = None,
                 quotas: "QuotaGuard | None" = None, profile: str | None = None,
                 presets: PresetBook | None = None,
                 secrets: Callable[[], Iterable[str]] = stored_keys):
        """``ledger``: the usage ledger (each reply's cost); ``quotas``: checked before anything
        is sent; ``profile``: who is signed in (default: the machine's default profile);
        ``secrets``: every key to mask in what is stored and shown (default: all stored keys).
        The composition root (``app.compose``) passes them; tests may leave them out."""
        self.store = store
        self.settings = settings
        self.outbox = Outbox(store)
        self.ledger = ledger
        self.quotas = quotas
        self.presets = presets or PresetBook()
        self.secrets = secrets
        # the signed-in profile (app.storage.profiles): owns new conversations, may continue only
        # its own, and its quotas apply; the window changes it when the user switches profile
        self.profile: str = profile or default_user_id(settings)
        # turns whose final write failed (``ReplyNotSaved``), oldest first: ``save_unsaved``
        self.unsaved: list[Turn] = []
        self._unsaved_lock = threading.Lock()

    def keep_unsaved(self, turn: Turn) -> None:
        """``turn``'s reply could not be written: keep it until ``save_unsaved`` can."""
        with self._unsaved_lock:
            if turn.unsaved is not None and turn not in self.unsaved:
                self.unsaved.append(turn)

    def save_unsaved(self) -> int:
        """Try again to write every reply a failed final write kept; how many still wait."""
        with self._unsaved_lock:
            self.unsaved = [turn for turn in self.unsaved if not turn.save_again()]
            return len(self.unsaved)

    def act_as(self, profile: str) -> None:
        """The signed-in profile changed (the window's profile switch): new turns, quotas and
        ledger rows are theirs."""
        self.profile = profile
        if self.ledger is not None:
            self.ledger.profile = profile

    def knobs(self, options: TurnOptions | None = None, conversation=None) -> dict:
        """The knobs a turn sends, strongest last: the settings' defaults, the conversation's
        own, the chosen preset, the turn's options."""
        options = options or TurnOptions()
        settings = self.settings
        knobs: dict = {name: None for name in KNOB_NAMES}
        knobs.update(temperature=settings["temperature"], top_p=settings["top_p"],
                     max_tokens=settings["max_tokens"], stop=())
        if conversation is not None and conversation.sampling:
            knobs.update({k: v for k, v in conversation.sampling.items() if k in knobs})
        if options.preset:
            knobs.update(self.presets.get(options.preset))
        knobs.update({name: getattr(options, name) for name in KNOB_NAMES
                      if getattr(options, name) is not None})
        for name in options.unset:
            knobs[name] = None if name not in ("temperature", "top_p", "max_tokens", "stop") \
                else knobs[name]
        return knobs

    def lora(self, options: "TurnOptions", conversation=None) -> tuple[LoraAdapter, ...]:
        """The LoRA adapters for this turn: the turn's, else its preset's (when the preset
        names adapters), else the conversation's."""
        if options.lora is not None:
            return tuple(options.lora)
        if options.preset:
            from_preset = self.presets.adapters(options.preset)
            if from_preset is not None:
                return from_preset
        if conversation is not None and conversation.sampling:
            return adapters_from_records(conversation.sampling.get("lora"))
        return ()

    @staticmethod
    def response_format(options: "TurnOptions", conversation=None) -> dict | None:
        """JSON mode for this turn: the turn's choice, else the conversation's."""
        if options.json_schema is not None:
            return json_response_format(options.json_schema)  # checks the schema itself
        if options.json_mode is not None:
            return json_response_format(None) if options.json_mode else None
        if conversation is not None and conversation.sampling:
            return conversation.sampling.get("response_format")
        return None

    def secret_mask(self) -> SecretMask:
        """Every stored key, read now (a turn reads them once, when it runs)."""
        return SecretMask(self.secrets())

    def queue_for_later(self, turn: Turn, provider: str, model: str | None,
                        error: Exception | None = None) -> OutboxItem:
        """Put the turn's request in the outbox (cloud wanted, provider unreachable). With
        ``error`` (Cloud only: nothing answered), the failed reply says where its request went."""
        item = self.outbox.enqueue(turn.conversation_id, turn.user_message_id, provider, model,
                                   turn.request,
                                   turn.assistant_message_id if error is not None else None)
        if error is not None and turn.assistant_message_id:
            self.store.update_message(
                turn.assistant_message_id,
                error=turn.secret_mask().scrub(
                    f"{error} Queued in the outbox (item {item.id}): it is sent once "
                    f"{provider} can be reached."))
        return item

    def recover_interrupted(self) -> int:
        """Mark replies left 'streaming' by a dead process as 'interrupted' (start-up)."""
        return self.store.mark_orphaned_streaming()

    def retry_turn(self, failed: Turn) -> Turn:
        """Answer the same saved prompt again (same request, same idempotency key); the new
        reply is stored as a sibling of the failed one."""
        return Turn(self.store, failed.conversation_id, failed.user_message_id, failed.request,
                    route_reason=failed.route_reason, outbox_plan=failed.outbox_plan,
                    fit=failed.fit, ledger=self.ledger, secrets=self.secret_mask)

    def start_turn(self, prompt: str, conversation_id: str | None = None, *, model: str,
                   options: TurnOptions = TurnOptions(), route: str | None = None,
                   counter: TokenCounter | None = None, effective_route: str = "local",
                   price_known: bool = True, reply_to: str | None = None) -> Turn:
        """``route`` is stored on a new conversation (None: it follows the default).
        ``counter`` (the engine's, see ``app.domain.context``): fit the conversation into its
        context window, dropping the oldest turns; a message that cannot fit at all is refused
        before anything is written. ``price_known``: False when the model's price is not known (a
        quota in dollars then refuses the turn unless unpriced models are allowed). ``reply_to``: the
        message this one follows (a branch from any point; default: the end of the active
        path; ``NEW_ROOT``: none, beside the first message); the model sees exactly the path
        from the root to it."""
        if not prompt or not prompt.strip():
            raise UsageError("The message is empty; type something to send.")
        settings = self.settings
        if conversation_id is None and reply_to is not None:
            raise UsageError("A reply to a message needs its conversation (--conversation ID).")
        if conversation_id is None:
            conversation = None
            system_prompt, previous = settings["system_prompt"], []
        else:
            conversation = self.store.get_conversation(conversation_id)
            if conversation.profile not in (None, self.profile):
                raise UsageError(f"The conversation {conversation_id} belongs to another "
                                 "profile.")
            system_prompt = conversation.system_prompt
            previous = [] if reply_to == NEW_ROOT else \
                self.store.branch(conversation.id, reply_to)
            self._refuse_while_written(previous)
        if options.system_prompt is not None:
            system_prompt = options.system_prompt
        messages = history_messages(system_prompt, previous) + [ChatMessage(Role.USER, prompt)]
        knobs, request_args, fit = self._checked(messages, conversation, model=model,
                                                 options=options, counter=counter,
                                                 effective_route=effective_route,
                                                 price_known=price_known)
        if conversation_id is None:  # a new conversation keeps the knobs it started with
            conversation = self.store.create_conversation(
                title_from(prompt), system_prompt, route, profile=self.profile,
                sampling={**{k: list(v) if isinstance(v, tuple) else v
                             for k, v in knobs.items()},
                          "response_format": request_args["response_format"],
                          "test_time": options.test_time,
                          "lora": [a.record() for a in request_args["lora"]]})
        else:
            stored = conversation.sampling
            if "seed" in options.unset and stored and stored.get("seed") is not None:
                # `--seed random`: no fixed seed from now on (the one it started with was kept)
                stored = dict(stored, seed=None)
            new_prompt = options.system_prompt is not None and \
                options.system_prompt != conversation.system_prompt
            if new_prompt or stored is not conversation.sampling:
                self.store.set_conversation_sampling(
                    conversation.id, stored,
                    system_prompt=options.system_prompt if new_prompt else None)
        parent = previous[-1].id if previous else None
        user_message = self.store.add_message(conversation.id, Role.USER, prompt,
                                              parent_id=parent)
        return self._turn(conversation.id, user_message.id, model, messages, request_args, fit,
                          effective_route)

    def regenerate_turn(self, message_id: str, *, model: str,
                        options: TurnOptions = TurnOptions(),
                        counter: TokenCounter | None = None, effective_route: str = "local",
                        price_known: bool = True) -> Turn:
        """Answer again the user message that ``message_id`` (a reply) answers: the new reply
        is its sibling, from the path up to that question, with this turn's knobs and engine.
        Checked (fit, quotas) before anything is written."""
        reply = self.store.get_message(message_id)
        if reply.role is not Role.ASSISTANT or reply.parent_id is None:
            raise UsageError(f"The message {message_id} is not a reply; regenerate a reply "
                             "(its question is answered again).")
        conversation = self.store.get_conversation(reply.conversation_id)
        if conversation.profile not in (None, self.profile):
            raise UsageError(f"The conversation {conversation.id} belongs to another profile.")
        path = self.store.branch(conversation.id, reply.parent_id)
        self._refuse_while_written(path)
        system_prompt = conversation.system_prompt if options.system_prompt is None \
            else options.system_prompt
        messages = history_messages(system_prompt, path)
        _, request_args, fit = self._checked(messages, conversation, model=model,
                                             options=options, counter=counter,
                                             effective_route=effective_route,
                                             price_known=price_known)
        if options.system_prompt is not None and \
                options.system_prompt != conversation.system_prompt:  # kept, as `ask` keeps it
            self.store.set_conversation_sampling(conversation.id, conversation.sampling,
                                                 system_prompt=options.system_prompt)
        return self._turn(conversation.id, reply.parent_id, model, messages, request_args, fit,
                          effective_route)

    def _refuse_while_written(self, path: list[Message]) -> None:
        """A turn on a path with a reply still being written (by another window or `outpost
        ask`) is refused: that half reply would be sent as if whole, and the new message
        would hang under it."""
        kept = {turn.assistant_message_id for turn in self.unsaved}
        if any(m.id in kept for m in path):  # (written by this process: it waits to be saved)
            raise UsageError("A reply in this conversation is not saved yet (the disk refused "
                             "it; Outpost keeps it and tries again): send once it is saved, or "
                             "answer an earlier message instead.")
        if any(self.store.being_written(m) for m in path):
            raise UsageError("A reply in this conversation is still being written (by another "
                             "Outpost window or `outpost ask`); send once it has finished, or "
                             "answer an earlier message instead.")

    def _checked(self, messages: list[ChatMessage], conversation, *, model: str,
                 options: TurnOptions, counter: TokenCounter | None, effective_route: str,
                 price_known: bool) -> tuple[dict, dict, Fit | None]:
        """(knobs, request arguments, fit) for a turn sending ``messages``: the knobs validated,
        the messages fitted to the window, the quotas checked. Raises before anything is
        written (MessageTooLong, QuotaExceeded, RateLimitedLocally, a bad knob)."""
        knobs = self.knobs(options, conversation)
        request_args = dict(knobs, stop=tuple(knobs.get("stop") or ()),
                            response_format=self.response_format(options, conversation),
                            lora=self.lora(options, conversation))
        ChatRequest(model=model, messages=tuple(messages[-1:]), **request_args)  # the knobs
        fit = fit_messages(messages, counter, request_args["max_tokens"]) \
            if counter is not None else None
        if self.quotas is not None:
            prompt_tokens = fit.prompt_tokens if fit is not None else \
                estimate_prompt_tokens(messages)
            self.quotas.check(self.profile, effective_route,
                              effective_route != "local", prompt_tokens,
                              request_args["max_tokens"], price_known=price_known,
                              model=model)
        return knobs, request_args, fit

    def _turn(self, conversation_id: str, user_message_id: str, model: str,
              messages: list[ChatMessage], request_args: dict, fit: Fit | None,
              effective_route: str) -> Turn:
        request = ChatRequest(model=model,
                              messages=fit.messages if fit is not None else tuple(messages),
                              user=provider_user(self.profile), **request_args)
        # a Local only turn reads no keychain (it opens no socket, D-Bus's included): the local
        # model never saw a key; keys this process handled are still masked (SecretMask)
        secrets = (lambda: SecretMask(())) if effective_route == "local" else self.secret_mask
        turn = Turn(self.store, conversation_id, user_message_id, request, ledger=self.ledger,
                    fit=fit, secrets=secrets)
        if self.quotas is not None:
            self.quotas.note_turn(request.idempotency_key)
        if self.ledger is not None:
            self.ledger.note_turn(request.idempotency_key, route=effective_route,
                                  profile=self.profile, conversation_id=conversation_id)
        return turn
