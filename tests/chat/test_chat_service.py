"""The chat service: what is written to the database, when, and with which status.

The engines here are tiny real implementations of the Engine protocol that play a script
(plus checks of the database through a *second* Store on the same file); two tests use the real
bundled model.
"""
from __future__ import annotations

import os
import threading

import pytest

from app.chat.service import (
    NEW_ROOT,
    ChatService,
    TurnOptions,
    history_messages,
    title_from,
)
from app.chat.turn import FLUSH_INTERVAL_S
from app.config.pseudonym import provider_user
from app.config.settings import Settings
from app.domain.errors import (
    EngineError,
    KnownStorageError,
    ReplyNotSaved,
    StorageError,
    UsageError,
)
from app.domain.messages import (
    ChatMessage,
    Finished,
    FinishReason,
    MessageStatus,
    Role,
    TextDelta,
    Usage,
)
from app.storage.store import Store
from engines.base import Engine, EngineBase, EngineInfo
from tests.support import Clock, refuse_final_writes


class ScriptedEngine(EngineBase):
    """Plays a list of events; an OutpostError in the list is raised at that point."""

    def __init__(self, script, model: str = "scripted"):
        self.script = list(script)
        self.requests = []
        self._info = EngineInfo(engine="test", model=model)

    @property
    def info(self) -> EngineInfo:
        return self._info

    def stream(self, request, cancel):
        self.requests.append(request)
        for item in self.script:
            if isinstance(item, Exception):
                raise item
            yield item

    def close(self) -> None:
        pass


class ObservingEngine(ScriptedEngine):
    """Before answering, looks at the database through its own connection (a second Store)."""

    def __init__(self, db_path, script):
        super().__init__(script)
        self.db_path = db_path
        self.seen = None

    def stream(self, request, cancel):
        observer = Store(self.db_path)
        try:
            self.seen = observer.messages(self.turn.conversation_id)
        finally:
            observer.close()
        yield from super().stream(request, cancel)


class DripEngine(ScriptedEngine):
    """Yields one character per ``step`` seconds of a virtual clock (``tests.support.Clock``)
    and, before each, records what the database says."""

    def __init__(self, db_path, clock: Clock | None = None, count: int = 14,
                 step: float = 0.125):
        super().__init__([])
        self.db_path, self.clock, self.count, self.step = db_path, clock or Clock(), count, step
        self.observed = []  # (virtual time, status, content) read through a second connection

    def stream(self, request, cancel):
        observer = Store(self.db_path)
        try:
            for i in range(self.count):
                self.clock.now += self.step
                message = observer.get_message(self.turn.assistant_message_id)
                self.observed.append((self.clock.now, message.status, message.content))
                yield TextDelta(chr(ord("a") + i))
            yield Usage(prompt_tokens=5, completion_tokens=self.count)
            yield Finished(FinishReason.STOP)
        finally:
            observer.close()


class CancellableEngine(ScriptedEngine):
    """Streams deltas until cancel is set, then ends like a real engine does."""

    def __init__(self):
        super().__init__([])

    def stream(self, request, cancel):
        sent = 0
        while not cancel.is_set() and sent < 1000:
            yield TextDelta(f"w{sent} ")
            sent += 1
        yield Usage(prompt_tokens=7, completion_tokens=sent)
        yield Finished(FinishReason.CANCELLED, ttft_ms=3.0)


def run_turn(turn, engine, cancel=None):
    return list(turn.run(engine, cancel or threading.Event()))


def count_rows(store, table: str) -> int:
    return store.db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_scripted_engines_satisfy_the_protocol(db_path):
    assert isinstance(ScriptedEngine([]), Engine)
    assert isinstance(DripEngine(db_path), Engine)


def test_user_message_is_committed_before_the_engine_is_called(service, db_path):
    engine = ObservingEngine(db_path, [TextDelta("ok"), Usage(3, 1), Finished(FinishReason.STOP)])
    turn = service.start_turn("Is my message saved?", model="scripted")
    engine.turn = turn
    run_turn(turn, engine)
    assert engine.seen is not None
    user = [m for m in engine.seen if m.role is Role.USER]
    assert [(m.id, m.content, m.status) for m in user] == [
        (turn.user_message_id, "Is my message saved?", MessageStatus.COMPLETE)]
    # the assistant row exists too, already marked as streaming
    assistant = [m for m in engine.seen if m.role is Role.ASSISTANT]
    assert [(m.id, m.status, m.content) for m in assistant] == [
        (turn.assistant_message_id, MessageStatus.STREAMING, "")]


def test_user_message_is_saved_even_if_the_engine_never_runs(service, db_path):
    turn = service.start_turn("Saved before anything is sent", model="m")
    other = Store(db_path)
    try:
        [message] = other.messages(turn.conversation_id)
        assert message.content == "Saved before anything is sent"
        assert message.role is Role.USER
    finally:
        other.close()


def test_streaming_row_is_flushed_at_least_every_half_second(service, db_path):
    """On a virtual clock: a delta every FLUSH_INTERVAL_S / 4, so every fourth delta writes the
    row, and the database is never more than half a second behind what was streamed."""
    clock = Clock()
    engine = DripEngine(db_path, clock, count=14, step=FLUSH_INTERVAL_S / 4)
    turn = service.start_turn("Tell me the alphabet slowly", model="scripted")
    turn.clock = clock
    engine.turn = turn
    events = run_turn(turn, engine)
    full = "abcdefghijklmn"
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == full

    assert all(status is MessageStatus.STREAMING for _, status, _ in engine.observed)
    # what the database held just before each delta was handed over: a flush at the 4th, 8th
    # and 12th delta (0.5 s, 1.0 s, 1.5 s after the start), nothing in between
    seen = [content for _, _, content in engine.observed]
    assert seen == [""] * 4 + ["abcd"] * 4 + ["abcdefgh"] * 4 + ["abcdefghijkl"] * 2

    final = service.store.get_message(turn.assistant_message_id)
    assert final.content == full and final.status is MessageStatus.COMPLETE


def test_complete_reply_stores_everything(service, store):
    engine = ScriptedEngine([TextDelta("Hello"), TextDelta(" there"),
                             Usage(prompt_tokens=21, completion_tokens=2, cached_prompt_tokens=4),
                             Finished(FinishReason.STOP, ttft_ms=12.5, tokens_per_s=48.0)])
    turn = service.start_turn("Hi!", model="scripted",
                              options=TurnOptions(temperature=0.3, top_p=0.5, max_tokens=33,
                                                  stop=("END",)))
    events = run_turn(turn, engine)
    assert [type(e) for e in events] == [TextDelta, TextDelta, Usage, Finished]
    assert turn.reply.text == "Hello there"
    message = store.get_message(turn.assistant_message_id)
    assert message.role is Role.ASSISTANT
    assert message.status is MessageStatus.COMPLETE
    assert message.content == "Hello there"
    assert message.parent_id == turn.user_message_id
    assert (message.engine, message.model) == ("test", "scripted")
    assert message.params == turn.request.sampling_params()
    assert message.params["temperature"] == 0.3 and message.params["top_p"] == 0.5
    assert message.params["max_tokens"] == 33 and message.params["stop"] == ["END"]
    assert message.params["idempotency_key"] == turn.request.idempotency_key
    assert (message.prompt_tokens, message.completion_tokens) == (21, 2)
    assert message.cached_prompt_tokens == 4 and message.tokens_estimated is False
    assert message.ttft_ms == 12.5 and message.tokens_per_s == 48.0
    assert message.finish_reason == "stop" and message.error is None
    # the engine got exactly the request that was stored
    assert engine.requests == [turn.request]


def test_length_finish_is_complete(service, store):
    engine = ScriptedEngine([TextDelta("abc"), Usage(5, 3), Finished(FinishReason.LENGTH)])
    turn = service.start_turn("x", model="m")
    run_turn(turn, engine)
    message = store.get_message(turn.assistant_message_id)
    assert message.status is MessageStatus.COMPLETE and message.finish_reason == "length"


def test_cancel_leaves_the_partial_reply_interrupted(service, store):
    engine = CancellableEngine()
    turn = service.start_turn("Go on and on", model="scripted")
    cancel = threading.Event()
    deltas = 0
    for event in turn.run(engine, cancel):
        if isinstance(event, TextDelta):
            deltas += 1
            if deltas == 3:
                cancel.set()
    message = store.get_message(turn.assistant_message_id)
    assert message.status is MessageStatus.INTERRUPTED
    assert message.content == "w0 w1 w2 "
    assert message.finish_reason == "cancelled"
    assert message.error == "Stopped by the user."
    assert message.completion_tokens == 3 and message.ttft_ms == 3.0


def test_engine_error_without_text_is_error(service, store):
    engine = ScriptedEngine([Usage(9, 0), Finished(FinishReason.ERROR,
                                                   error=EngineError("The backend fell over."))])
    turn = service.start_turn("Hello?", model="scripted")
    run_turn(turn, engine)
    message = store.get_message(turn.assistant_message_id)
    assert message.status is MessageStatus.ERROR
    assert message.content == ""
    assert message.error == "The backend fell over."
    assert message.finish_reason == "error"


def test_engine_error_after_text_keeps_it_interrupted(service, store):
    engine = ScriptedEngine([TextDelta("Half an "), TextDelta("answ"), Usage(9, 2),
                             Finished(FinishReason.ERROR, error=EngineError("Connection lost."))])
    turn = service.start_turn("Hello?", model="scripted")
    run_turn(turn, engine)
    message = store.get_message(turn.assistant_message_id)
    assert message.status is MessageStatus.INTERRUPTED
    assert message.content == "Half an answ"
    assert message.error == "Connection lost."


def test_engine_raising_before_any_text_is_error(service, store):
    engine = ScriptedEngine([EngineError("The conversation does not fit.")])
    turn = service.start_turn("Hello?", model="scripted")
    with pytest.raises(EngineError):
        run_turn(turn, engine)
    message = store.get_message(turn.assistant_message_id)
    assert message.status is MessageStatus.ERROR
    assert message.error == "The conversation does not fit."


def test_engine_raising_after_text_is_interrupted(service, store):
    engine = ScriptedEngine([TextDelta("partial"), EngineError("It broke.")])
    turn = service.start_turn("Hello?", model="scripted")
    with pytest.raises(EngineError):
        run_turn(turn, engine)
    message = store.get_message(turn.assistant_message_id)
    assert message.status is MessageStatus.INTERRUPTED
    assert message.content == "partial" and message.error == "It broke."


def test_consumer_going_away_never_leaves_streaming(service, store):
    engine = CancellableEngine()
    turn = service.start_turn("Go", model="scripted")
    stream = turn.run(engine, threading.Event())
    next(stream)
    next(stream)
    stream.close()
    message = store.get_message(turn.assistant_message_id)
    assert message.status is MessageStatus.INTERRUPTED
    assert message.content == "w0 w1 "
    assert message.finish_reason == "interrupted"


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t"])
def test_empty_prompt_is_rejected_and_nothing_written(service, store, prompt):
    with pytest.raises(UsageError, match="empty"):
        service.start_turn(prompt, model="m")
    assert count_rows(store, "conversations") == 0
    assert count_rows(store, "messages") == 0


def test_unknown_conversation_is_rejected_and_nothing_written(service, store):
    with pytest.raises(UsageError, match="no conversation with id 'does-not-exist'"):
        service.start_turn("hello", "does-not-exist", model="m")
    assert count_rows(store, "conversations") == 0
    assert count_rows(store, "messages") == 0


@pytest.mark.parametrize("options", [TurnOptions(temperature=5), TurnOptions(top_p=0),
                                     TurnOptions(max_tokens=0)])
def test_invalid_options_are_rejected_and_nothing_written(service, store, options):
    with pytest.raises(UsageError):
        service.start_turn("hello", model="m", options=options)
    assert count_rows(store, "conversations") == 0
    assert count_rows(store, "messages") == 0


def test_second_turn_includes_the_history(service, store):
    first = ScriptedEngine([TextDelta("Paris."), Usage(20, 2), Finished(FinishReason.STOP)])
    turn1 = service.start_turn("Capital of France?", model="m")
    run_turn(turn1, first)
    assert turn1.request.messages == (
        ChatMessage(Role.SYSTEM, "You are a helpful assistant."),
        ChatMessage(Role.USER, "Capital of France?"))

    second = ScriptedEngine([TextDelta("Berlin."), Usage(30, 2), Finished(FinishReason.STOP)])
    turn2 = service.start_turn("And Germany?", turn1.conversation_id, model="m")
    assert turn2.conversation_id == turn1.conversation_id
    run_turn(turn2, second)
    assert second.requests[0].messages == (
        ChatMessage(Role.SYSTEM, "You are a helpful assistant."),
        ChatMessage(Role.USER, "Capital of France?"),
        ChatMessage(Role.ASSISTANT, "Paris."),
        ChatMessage(Role.USER, "And Germany?"))
    assert turn2.request.idempotency_key != turn1.request.idempotency_key
    messages = store.messages(turn1.conversation_id)
    assert [m.role for m in messages] == [Role.USER, Role.ASSISTANT, Role.USER, Role.ASSISTANT]
    # each message points at the one before it
    assert [m.parent_id for m in messages] == [None] + [m.id for m in messages[:-1]]
    assert len(store.list_conversations()) == 1


def test_history_leaves_out_failed_empty_replies_but_keeps_partial_ones(service, store):
    turn1 = service.start_turn("one", model="m")
    run_turn(turn1, ScriptedEngine([Usage(1, 0), Finished(FinishReason.ERROR,
                                                          error=EngineError("down"))]))
    turn2 = service.start_turn("two", turn1.conversation_id, model="m")
    run_turn(turn2, ScriptedEngine([TextDelta("half"), Finished(FinishReason.ERROR,
                                                                error=EngineError("down"))]))
    turn3 = service.start_turn("three", turn1.conversation_id, model="m")
    assert [(m.role, m.content) for m in turn3.request.messages] == [
        (Role.SYSTEM, "You are a helpful assistant."), (Role.USER, "one"), (Role.USER, "two"),
        (Role.ASSISTANT, "half"), (Role.USER, "three")]


def test_history_messages_without_system_prompt():
    assert history_messages("  ", []) == []


def test_new_conversation_title_and_settings(store):
    settings = Settings()
    settings.set("system_prompt", "Answer in French.")
    settings.set("user_id", "alice")
    settings.set("temperature", 0.1)
    service = ChatService(store, settings)
    prompt = "  What   is the weather like on the far side of the moon today, please?  "
    turn = service.start_turn(prompt, model="m")
    conversation = store.get_conversation(turn.conversation_id)
    assert conversation.title == title_from(prompt)
    assert len(conversation.title) == 48 and conversation.title.endswith("…")
    assert conversation.title.startswith("What is the weather")
    assert conversation.system_prompt == "Answer in French."
    assert turn.request.messages[0] == ChatMessage(Role.SYSTEM, "Answer in French.")
    assert turn.request.user == provider_user("alice") and turn.request.temperature == 0.1
    assert title_from("short one") == "short one"


@pytest.mark.local_model
def test_real_model_turn_is_stored_complete(service, store, local_engine):
    turn = service.start_turn("What is 2 + 2?", model=local_engine.info.model,
                              options=TurnOptions(temperature=0.0, max_tokens=16))
    events = run_turn(turn, local_engine)
    usage, finish = events[-2], events[-1]
    message = store.get_message(turn.assistant_message_id)
    assert message.status is MessageStatus.COMPLETE
    assert message.content == turn.reply.text and message.content.strip()
    assert message.engine == "local" and message.model == "SmolLM2-135M-Instruct.Q4_1.gguf"
    # the parameters actually applied: the request's, plus llama.cpp's defaults for the rest
    params = dict(message.params)
    assert params.pop("seed_drawn") is True and isinstance(params.pop("seed"), int)
    assert params == {
        "temperature": 0.0, "top_p": turn.request.top_p, "top_k": 40, "min_p": 0.05,
        "max_tokens": 16, "presence_penalty": 0.0, "frequency_penalty": 0.0,
        "repeat_penalty": 1.0, "user": turn.request.user,
        "idempotency_key": turn.request.idempotency_key, "engine_kind": "local",
        "system_prompt": "You are a helpful assistant."}  # (the one it was given)
    assert message.prompt_tokens == usage.prompt_tokens == local_engine.count_prompt_tokens(
        turn.request)
    assert message.completion_tokens == usage.completion_tokens >= 1
    assert message.ttft_ms == pytest.approx(finish.ttft_ms)
    assert message.tokens_per_s == pytest.approx(finish.tokens_per_s) and message.tokens_per_s > 0
    assert message.finish_reason == finish.reason.value


@pytest.mark.local_model
def test_real_model_cancel_is_interrupted(service, store, local_engine):
    turn = service.start_turn("Write a long story about a dragon.", model="m",
                              options=TurnOptions(temperature=0.0, max_tokens=300))
    cancel = threading.Event()
    for event in turn.run(local_engine, cancel):
        if isinstance(event, TextDelta):
            cancel.set()
    message = store.get_message(turn.assistant_message_id)
    assert message.status is MessageStatus.INTERRUPTED
    assert message.finish_reason == "cancelled"
    assert message.content and message.content == turn.reply.text
    assert message.completion_tokens < 300


def test_a_reply_the_disk_refused_is_kept_whole_and_saved_when_it_can(service, store,
                                                                     monkeypatch):
    """The final write fails (a full disk): the turn ends as it would (no error of its own)
    and says so beside it (``unsaved_error``: how much is waiting), keeps the whole reply, and
    the row stays this process's (not deletable, not marked interrupted) until
    ``save_unsaved`` writes it, once the disk takes it again."""
    engine = ScriptedEngine([TextDelta("Half"), TextDelta(" an answer, then the rest."),
                             Finished(FinishReason.STOP)])
    turn = service.start_turn("Q", model="scripted")
    stream = turn.run(engine, threading.Event())
    next(stream)
    with pytest.raises(UsageError, match="still being written"):
        store.delete_conversation(turn.conversation_id)
    refuse_final_writes(monkeypatch, store, KnownStorageError("The disk is full."))
    list(stream)
    assert isinstance(turn.unsaved_error, ReplyNotSaved)
    assert "The reply (30 characters) could not be saved" in str(turn.unsaved_error)
    service.keep_unsaved(turn)
    assert service.save_unsaved() == 1  # the disk is still full
    row = store.get_message(turn.assistant_message_id)
    assert row.status is MessageStatus.STREAMING and row.content != turn.reply.text
    assert turn.as_saved(row).content == "Half an answer, then the rest."
    assert store.mark_orphaned_streaming() == 0  # still ours: kept in memory
    with pytest.raises(UsageError, match="still being written"):
        store.delete_conversation(turn.conversation_id)
    with pytest.raises(UsageError, match="not saved yet"):  # (not "another window")
        service.start_turn("And then?", turn.conversation_id, model="scripted")
    monkeypatch.undo()  # room again
    assert service.save_unsaved() == 0
    saved = store.get_message(turn.assistant_message_id)
    assert (saved.status, saved.content) == (MessageStatus.COMPLETE,
                                             "Half an answer, then the rest.")
    store.delete_conversation(turn.conversation_id)  # no longer being written


def test_a_reply_whose_final_write_failed_otherwise_is_no_longer_being_written(
        service, store, monkeypatch):
    """A final write that fails for another reason (not one that may pass later): the row
    stays 'streaming', but nothing writes it any more: it can be deleted, and is marked
    interrupted, without restarting the app."""
    engine = ScriptedEngine([TextDelta("Half"), Finished(FinishReason.STOP)])
    turn = service.start_turn("Q", model="scripted")
    stream = turn.run(engine, threading.Event())
    refuse_final_writes(monkeypatch, store, StorageError("The database said no."))
    with pytest.raises(StorageError):
        list(stream)
    monkeypatch.undo()
    assert turn.unsaved is None
    assert store.get_message(turn.assistant_message_id).status is MessageStatus.STREAMING
    assert store.mark_orphaned_streaming() == 1
    assert store.get_message(turn.assistant_message_id).status is MessageStatus.INTERRUPTED
    store.delete_conversation(turn.conversation_id)
    assert store.list_conversations() == []


def test_a_message_after_a_reply_still_being_written_is_refused(service, store):
    """Two front ends on one conversation (the window and `outpost ask`): while one's reply
    streams, the other's message would be sent with that half reply as if whole, and hang
    under it; it is refused before anything is written. An earlier message can be answered,
    and once the reply is done the conversation goes on."""
    engine = ScriptedEngine([TextDelta("Half"), TextDelta(" and the rest."),
                             Finished(FinishReason.STOP)])
    first = service.start_turn("A", model="scripted")
    stream = first.run(engine, threading.Event())
    next(stream)
    before = len(store.messages(first.conversation_id))
    with pytest.raises(UsageError, match="still being written"):
        service.start_turn("B", first.conversation_id, model="scripted")
    assert len(store.messages(first.conversation_id)) == before  # nothing written
    beside = service.start_turn("A, said again", first.conversation_id, model="scripted",
                                reply_to=NEW_ROOT)  # a branch that does not pass through it
    assert [m.content for m in beside.request.messages if m.role is Role.USER] == [
        "A, said again"]
    list(stream)
    later = service.start_turn("B", first.conversation_id, model="scripted",
                               reply_to=first.assistant_message_id)
    assert [m.content for m in later.request.messages if m.role is not Role.SYSTEM] == [
        "A", "Half and the rest.", "B"]


def test_a_failed_final_write_leaves_the_turns_own_error_as_it_was(service, store,
                                                                   monkeypatch):
    """The stream broke (its error is how the turn ended: exit 4, the outbox for Cloud only)
    and the final write failed too: the turn still raises the stream's error, not the
    write's; the reply is kept for later all the same."""
    engine = ScriptedEngine([TextDelta("Half"), Finished(FinishReason.ERROR,
                                                         error=EngineError("The link broke."))])
    turn = service.start_turn("Q", model="scripted")
    refuse_final_writes(monkeypatch, store, KnownStorageError("The disk is full."))
    events = list(turn.run(engine, threading.Event()))
    assert isinstance(events[-1], Finished) and events[-1].reason is FinishReason.ERROR
    assert turn.unsaved is not None and turn.unsaved["status"] is MessageStatus.INTERRUPTED
    assert isinstance(turn.unsaved_error, ReplyNotSaved)


SEA_SCHEMA = {"type": "object", "properties": {"sea": {"type": "string"}},
              "required": ["sea"]}


@pytest.mark.parametrize("json_options", [TurnOptions(json_mode=True),
                                          TurnOptions(json_schema=SEA_SCHEMA)])
def test_json_modes_own_words_are_counted_in_the_fit_the_quota_and_the_outbox(
        outpost_home, tmp_path, json_options):
    """An OpenAI-compatible server in JSON mode is sent "Reply with a JSON object." in the
    system message (and, once it refused json_schema, the schema too): the context fit, the
    quota and the outbox's check count the prompt as it is sent, exactly (tiktoken), not
    the conversation without those words."""
    from app.chat.outbox_sender import OutboxSender
    from app.config.provider_facts import note_refuses_json_schema
    from app.config.providers import ProviderConfig
    from app.storage.ledger import UsageLedger
    from app.storage.outbox import Outbox
    from app.storage.profiles import Profile
    from app.storage.quotas import QuotaBook, QuotaExceeded, QuotaGuard
    from engines.openai_compat import JSON_INSTRUCTION, OpenAICompatEngine

    base_url = "http://127.0.0.1:9/v1"  # nothing is sent: the counts are made before
    if json_options.json_schema is not None:
        note_refuses_json_schema(base_url, "gpt-4o-mini")  # learnt from an earlier refusal

    def engine():
        return OpenAICompatEngine(ProviderConfig("acme", "openai", base_url, "gpt-4o-mini"),
                                  "sk-test")

    store = Store(tmp_path / "outpost.db")
    service = ChatService(store, Settings(), profile="ana")
    cloud = engine()
    turn = service.start_turn("Name a sea.", model="gpt-4o-mini", counter=cloud,
                              effective_route="cloud", options=json_options)
    body = cloud.build_request(turn.request)[2]
    sent = [ChatMessage(Role(m["role"]), m["content"]) for m in body["messages"]]
    assert JSON_INSTRUCTION[:-1] in sent[0].content  # (with a schema: "… matching …")
    as_sent, exact = cloud.count_prompt(sent)
    assert exact and turn.fit.prompt_tokens == as_sent
    assert as_sent > cloud.count_prompt(turn.request.messages)[0]

    book = QuotaBook(tmp_path / "none.toml", tmp_path / "quotas.json")
    book.set("ana", "cloud_tokens_per_day", 10, by=Profile("admin", is_admin=True))
    ledger = UsageLedger(store, "ana")
    guard = QuotaGuard(book, ledger)
    metered = ChatService(store, Settings(), ledger=ledger, quotas=guard, profile="ana")
    with pytest.raises(QuotaExceeded) as refused:
        metered.start_turn("Name a sea.", model="gpt-4o-mini", counter=engine(),
                           effective_route="cloud", options=json_options)
    assert f"({as_sent:,} for the prompt, up to " in str(refused.value)

    item = service.queue_for_later(turn, "acme", None)
    report = OutboxSender(Outbox(store), lambda name, model: engine(), ledger=ledger,
                          quotas=guard).send()
    assert [i.id for i in report.waiting] == [item.id]
    assert f"({as_sent:,} for the prompt, up to " in Outbox(store).get(item.id).last_error
    store.close()


def test_the_replies_a_dead_process_cut_short_are_marked_and_only_ones_own_are_said(store):
    """The start's banner ("N replies were interrupted when Outpost stopped") counted every
    profile's replies while its button opened only the signed-in profile's chats: bob was
    told of ana's. Every reply left streaming is marked; only the signed-in profile's (and
    a chat of no profile's) are returned, oldest first."""
    dead = f"{os.getpid()}:12345"  # this pid with another start time: a dead writer

    def cut_short(profile: str | None) -> str:
        conversation = store.create_conversation("Report", profile=profile)
        question = store.add_message(conversation.id, Role.USER, "How?")
        reply = store.add_message(conversation.id, Role.ASSISTANT, "Half",
                                  status=MessageStatus.STREAMING, parent_id=question.id)
        store.update_message(reply.id, writer=dead)
        return reply.id

    bobs, anas, nobodys = cut_short("bob"), cut_short("ana"), cut_short(None)
    said = ChatService(store, Settings(), profile="bob").recover_interrupted()
    assert [reply.id for reply in said] == [bobs, nobodys]
    assert all(store.get_message(m).status is MessageStatus.INTERRUPTED
               for m in (bobs, anas, nobodys))
    # told once; ana, who was not signed in, is told at her next start (or sign-in)
    assert ChatService(store, Settings(), profile="bob").recover_interrupted() == []
    assert [r.id for r in ChatService(store, Settings(), profile="ana").recover_interrupted()
            ] == [anas]
    assert ChatService(store, Settings(), profile="ana").recover_interrupted() == []


def test_replies_a_command_found_cut_short_are_told_at_the_next_window_start(store):
    """``outpost ask`` marks the replies a dead process left streaming (the CLI says nothing
    of them): the window's next start still tells of them. It used to mark them too, so no
    start ever said they were cut short. A reply deleted before it was told is forgotten."""
    dead = f"{os.getpid()}:12345"
    conversation = store.create_conversation("Report", profile="bob")
    question = store.add_message(conversation.id, Role.USER, "How?")
    replies = []
    for text in ("Half", "Another half"):
        reply = store.add_message(conversation.id, Role.ASSISTANT, text,
                                  status=MessageStatus.STREAMING, parent_id=question.id)
        store.update_message(reply.id, writer=dead)
        replies.append(reply.id)
    assert [m.id for m in store.recover_orphaned_streaming()] == replies  # (the CLI's start)
    store.delete_subtree(replies[1])
    said = ChatService(store, Settings(), profile="bob").recover_interrupted()
    assert [reply.id for reply in said] == replies[:1]
    assert store.db.execute("select count(*) from untold_interruptions").fetchone()[0] == 0
