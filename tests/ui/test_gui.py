"""The real window, driven by qtbot (offscreen).

Most tests put a ScriptedEngine (tests/support.py) where the local model goes, through the
composition root's ``engine_factory``: the reply is known text, so the tests assert exactly what
is shown and stored, on any machine. The turn still takes the window's own path (model loader,
stream worker thread, signals, flush timer, store). A few end-to-end tests run the real bundled
model and assert only what it cannot get wrong: text arrived, was stored, was marked, was timed.
"""
from __future__ import annotations

import threading

import pytest
from PySide6.QtCore import QCoreApplication, Qt

from app.config.settings import Settings
from app.domain.messages import Finished, FinishReason, MessageStatus, Role, TextDelta
from app.storage.store import Store
from app.storage.writers import writing
from tests.support import (
    ScriptedEngine,
    answer_confirmations,
    held_open,
    manual_ticker,
    refuse_final_writes,
    reply,
)

pytestmark = pytest.mark.gui


@pytest.fixture
def outpost(outpost_app):
    """The window on the real bundled model, not started yet."""
    return outpost_app(max_tokens=48)


def start_and_wait_ready(qtbot, app) -> None:
    with qtbot.waitSignal(app.loader.model_ready, timeout=60000):
        app.start()


def send_with_enter(qtbot, app, text: str) -> None:
    edit = app.window.composer.edit
    edit.setFocus()
    qtbot.keyClicks(edit, text)
    qtbot.keyClick(edit, Qt.Key.Key_Return)


def wait_idle(qtbot, app, timeout=60000) -> None:
    qtbot.waitUntil(lambda: app.window.controller.state == "idle", timeout=timeout)


def gated(events, gate: threading.Event):
    """A script that streams its deltas, then holds the reply open until ``gate`` is set."""
    def play(request, cancel):
        for event in events:
            if not isinstance(event, TextDelta):
                gate.wait(30)  # a safety net: the test sets it long before
            yield event

    return play


# -- known text through the window ------------------------------------------------------------
PARIS = ("The", " capital", " of", " France", " is", " Paris", ".")


def test_type_enter_streams_reply_and_saves_it(qtbot, scripted, scripted_engine, artifacts_dir):
    window = scripted.window
    release = threading.Event()
    scripted_engine.script(gated(reply(*PARIS), release))
    send_with_enter(qtbot, scripted, "What is the capital of France?")
    # the reply is held open until released: these are seen mid-stream, not raced
    assert window.controller.state == "streaming"
    assert window.composer.text() == ""  # the prompt moved into the conversation
    assert window.composer.button.text() == "Stop"
    qtbot.waitUntil(lambda: len(window.view.bubbles) == 2 and
                    window.view.bubbles[1].text == "".join(PARIS), timeout=10000)
    release.set()
    wait_idle(qtbot, scripted)

    user_bubble, reply_bubble = window.view.bubbles
    assert user_bubble.text == "What is the capital of France?"
    assert reply_bubble.text == "The capital of France is Paris."
    footer = reply_bubble.footer.text().replace("\u00a0", " ")  # figures do not wrap
    for part in ("local · scripted-model.gguf", "30 in / 7 out", "TTFT 120 ms", "42.5 tok/s",
                 "free"):
        assert part in footer, footer
    assert window.metrics_label.text() == "TTFT 120 ms · 42.5 tok/s"
    assert window.model_label.text() == "Local model: scripted-model.gguf"
    assert "Local model" in window.route_label.text()
    [request] = scripted_engine.requests
    assert request.messages[-1].content == "What is the capital of France?"

    conversations = scripted.store.list_conversations()
    assert len(conversations) == 1
    assert window.sidebar.conversation_count() == 1
    messages = scripted.store.messages(conversations[0].id)
    assert [m.role for m in messages] == [Role.USER, Role.ASSISTANT]
    answer = messages[1]
    assert answer.status is MessageStatus.COMPLETE and answer.finish_reason == "stop"
    assert answer.content == "The capital of France is Paris."
    assert (answer.engine, answer.model) == ("local", "scripted-model.gguf")
    assert (answer.prompt_tokens, answer.completion_tokens) == (30, 7)
    assert (answer.ttft_ms, answer.tokens_per_s) == (120.0, 42.5)
    [row] = scripted.store.request_log(answer.params["idempotency_key"])  # the usage ledger
    assert (row["provider"], row["prompt_tokens"], row["completion_tokens"]) == ("local", 30, 7)

    window.resize(1100, 720)
    qtbot.wait(50)  # let the layout settle before the screenshot
    path = artifacts_dir / "main_window.png"
    assert window.grab().save(str(path))
    assert path.stat().st_size > 10_000


def test_escape_stops_a_streaming_reply(qtbot, scripted, scripted_engine):
    window = scripted.window
    scripted_engine.script(held_open("Once", " upon", " a", " time"))  # decodes until stopped
    send_with_enter(qtbot, scripted, "Write a very long story about a dragon and a knight.")
    qtbot.waitUntil(lambda: window.view.bubbles[-1].text == "Once upon a time", timeout=10000)
    qtbot.keyClick(window, Qt.Key.Key_Escape)
    wait_idle(qtbot, scripted)
    conversation = scripted.store.list_conversations()[0]
    answer = scripted.store.messages(conversation.id)[-1]
    assert answer.status is MessageStatus.INTERRUPTED
    assert answer.finish_reason == "cancelled"
    assert answer.content == "Once upon a time" == window.view.bubbles[-1].text
    assert answer.completion_tokens == 4
    footer = window.view.bubbles[-1].footer
    # a stop the user asked for is not an error: "Stopped", not a warning
    assert footer.text().splitlines()[0] == "Stopped"
    assert not footer.property("warning")
    assert not window.banner.isVisible()


def test_a_reply_cut_short_by_closing_the_window_says_so(qtbot, scripted, scripted_engine):
    """Closing the window while a reply streams is not the user's Stop: the part kept says
    Outpost was closed (it said "Stopped by the user.")."""
    window = scripted.window
    scripted_engine.script(held_open("Once", " upon", " a", " time"))
    send_with_enter(qtbot, scripted, "Write a very long story about a dragon and a knight.")
    qtbot.waitUntil(lambda: window.view.bubbles[-1].text == "Once upon a time", timeout=10000)
    conversation = scripted.store.list_conversations()[0]
    window.close()
    scripted.shutdown()
    store = Store()
    try:
        answer = store.messages(conversation.id)[-1]
        assert answer.status is MessageStatus.INTERRUPTED
        assert answer.content == "Once upon a time"
        assert answer.error == "Outpost was closed before the reply was finished."
    finally:
        store.close()


def test_shift_enter_adds_a_line_instead_of_sending(qtbot, scripted):
    edit = scripted.window.composer.edit
    qtbot.keyClicks(edit, "first line")
    qtbot.keyClick(edit, Qt.Key.Key_Return, Qt.KeyboardModifier.ShiftModifier)
    qtbot.keyClicks(edit, "second line")
    assert edit.toPlainText() == "first line\nsecond line"
    assert scripted.window.controller.state == "idle"
    assert scripted.store.list_conversations() == []


def test_message_sent_while_the_model_loads_waits_for_it(qtbot, outpost_app):
    engine = ScriptedEngine(reply("Hello", "!"), ready=False)  # loads until told
    app = outpost_app(max_tokens=48, engine_factory=engine.factory)
    app.start()  # the window is shown; the "model" is loading
    window = app.window
    assert window.model_label.text() == "Local model: scripted-model.gguf"
    send_with_enter(qtbot, app, "Say hello.")
    # The prompt is committed at once, before the model is ready.
    conversation = app.store.list_conversations()[0]
    assert [m.content for m in app.store.messages(conversation.id)] == ["Say hello."]
    qtbot.waitUntil(lambda: window.controller.state == "waiting_for_model", timeout=10000)
    assert "Waiting for the model" in window.view.bubbles[-1].body.toPlainText()
    assert window.state_label.text() == "Waiting for the model to load…"
    assert engine.requests == []  # nothing is asked of a model still loading
    engine.finish_loading()
    wait_idle(qtbot, app)
    answer = app.store.messages(conversation.id)[-1]
    assert answer.role is Role.ASSISTANT and answer.status is MessageStatus.COMPLETE
    assert answer.content == "Hello!" == window.view.bubbles[-1].text


def test_sidebar_new_rename_delete_and_reopen(qtbot, scripted, scripted_engine):
    window = scripted.window
    scripted_engine.script(reply("One."), reply("Two."))
    send_with_enter(qtbot, scripted, "First chat")
    wait_idle(qtbot, scripted)
    qtbot.keyClick(window, Qt.Key.Key_N, Qt.KeyboardModifier.ControlModifier)
    assert window.view.bubbles == []
    assert window.controller.conversation_id is None
    send_with_enter(qtbot, scripted, "Second chat")
    wait_idle(qtbot, scripted)
    assert window.sidebar.conversation_count() == 2
    first_id = [c.id for c in scripted.store.list_conversations() if c.title == "First chat"][0]

    window.sidebar.rename_requested.emit(first_id, "Renamed chat")
    assert scripted.store.get_conversation(first_id).title == "Renamed chat"
    titles = [item.text() for item in window.sidebar.conversation_items()]
    assert "Renamed chat" in titles

    item = next(item for item in window.sidebar.conversation_items()
                if item.text() == "Renamed chat")
    window.sidebar.list.setCurrentItem(item)  # a highlight: Enter opens it
    qtbot.keyClick(window.sidebar.list, Qt.Key.Key_Return)
    assert window.controller.conversation_id == first_id
    assert [b.text for b in window.view.bubbles] == ["First chat", "One."]
    assert window.title_label.text() == "Renamed chat"

    window.sidebar.delete_requested.emit(first_id, False)
    assert first_id not in [c.id for c in scripted.store.list_conversations()]
    assert window.sidebar.conversation_count() == 1
    assert window.view.bubbles == []


def test_a_conversation_answering_in_another_outpost_is_not_deleted(qtbot, scripted,
                                                                      scripted_engine):
    """A CLI `ask` (another process) is writing a reply in the conversation: the window says
    so and keeps the conversation, rather than pull it out from under the writer."""
    window = scripted.window
    scripted_engine.script(reply("One."))
    send_with_enter(qtbot, scripted, "First chat")
    wait_idle(qtbot, scripted)
    conversation_id = window.controller.conversation_id
    store = scripted.store
    [question, _] = store.messages(conversation_id)
    writer = store.add_message(conversation_id, Role.ASSISTANT, "Meet at",
                               parent_id=question.id, status=MessageStatus.STREAMING)
    with writing(writer.id):  # a turn (here, or in another process) writes it
        window.sidebar.delete_requested.emit(conversation_id, False)
    assert "still being written" in window.errors.banner.label.text()
    assert conversation_id in [c.id for c in store.list_conversations()]
    assert window.sidebar.conversation_count() == 1
    assert window.controller.conversation_id == conversation_id


def test_deltas_are_flushed_in_batches_not_per_token(qtbot, outpost_app):
    """Every delta that reaches the window between two ticks of its flush timer lands in one
    render. The timer is fired by hand here, so which deltas share a render is exact."""
    batches = [("The", " sea", " is", " wide"), (" and", " deep", " and"), (" blue", ".")]
    streamed = [threading.Event() for _ in batches]  # batch i is in the window's queue
    go_on = [threading.Event() for _ in batches]  # the test lets batch i + 1 come

    def play(request, cancel):
        for i, batch in enumerate(batches):
            yield from (TextDelta(t) for t in batch)
            streamed[i].set()  # runs after the worker emitted the batch's last delta
            if i < len(batches) - 1:
                go_on[i].wait(30)
        yield from reply(*(t for batch in batches for t in batch))[-2:]  # usage, finish

    ticker = manual_ticker()
    engine = ScriptedEngine(play)
    app = outpost_app(max_tokens=48, engine_factory=engine.factory, flush_timer=ticker)
    start_and_wait_ready(qtbot, app)
    window = app.window
    send_with_enter(qtbot, app, "Describe the sea.")
    bubble = window.view.bubbles[1]
    renders = []
    original = bubble.append_text
    bubble.append_text = lambda text: (renders.append(text), original(text))

    def arrive(i: int) -> None:
        """Wait until batch i was emitted, then deliver the queued deltas to the controller."""
        qtbot.waitUntil(streamed[i].is_set, timeout=10000)
        QCoreApplication.sendPostedEvents()

    arrive(0)
    assert renders == [] and bubble.text == ""  # four deltas buffered, nothing drawn yet
    ticker.tick()
    assert renders == ["The sea is wide"]  # four deltas, one render
    ticker.tick()
    assert len(renders) == 1  # nothing new: no render
    go_on[0].set()
    arrive(1)
    ticker.tick()
    assert renders == ["The sea is wide", " and deep and"]
    go_on[1].set()
    wait_idle(qtbot, app)  # the end of the turn flushes what is left, in one render
    assert renders == ["The sea is wide", " and deep and", " blue."]
    assert not ticker.active  # the timer runs only while a reply streams
    full = "The sea is wide and deep and blue."
    assert bubble.text == full
    assert app.store.messages(window.controller.conversation_id)[-1].content == full


def test_a_20000_token_reply_streams_through_the_window(qtbot, scripted, scripted_engine):
    """One delta per token, as fast as the worker can emit: the real flush timer batches them,
    the window lives, and every character is shown and stored."""
    tokens = [f"word{i}" + ("\n\n" if i % 100 == 99 else " ") for i in range(20_000)]
    full = "".join(tokens)
    scripted_engine.script(reply(*tokens), reply("Still", " here."))
    window = scripted.window
    send_with_enter(qtbot, scripted, "Write twenty thousand words.")
    bubble = window.view.bubbles[-1]
    renders = []
    original = bubble.append_text
    bubble.append_text = lambda text: (renders.append(text), original(text))
    wait_idle(qtbot, scripted, timeout=240000)
    assert "".join(renders) == full == bubble.text  # batched by the timer, nothing lost
    assert "word19999" in bubble.body.toPlainText()
    answer = scripted.store.messages(window.controller.conversation_id)[-1]
    assert answer.status is MessageStatus.COMPLETE and answer.content == full
    assert answer.completion_tokens == 20_000
    assert not window.banner.isVisible()
    # and the window goes on answering
    send_with_enter(qtbot, scripted, "Are you still there?")
    wait_idle(qtbot, scripted)
    assert window.view.bubbles[-1].text == "Still here."


def test_delete_key_asks_before_deleting(qtbot, scripted, scripted_engine, monkeypatch):
    window = scripted.window
    scripted_engine.script(reply("Kept."))
    send_with_enter(qtbot, scripted, "Keep me")
    wait_idle(qtbot, scripted)
    asked = answer_confirmations(monkeypatch, "Cancel", "Delete")
    window.sidebar.list.setCurrentItem(window.sidebar.conversation_items()[0])
    window.sidebar.list.setFocus()
    qtbot.keyClick(window.sidebar.list, Qt.Key.Key_Delete)
    assert asked and "cannot be undone" in asked[0]["text"]
    assert len(scripted.store.list_conversations()) == 1  # Cancel keeps it
    qtbot.keyClick(window.sidebar.list, Qt.Key.Key_Delete)
    assert scripted.store.list_conversations() == []


# -- the real bundled model, end to end: only what it cannot get wrong --------------------------
@pytest.mark.local_model
def test_the_real_model_answers_through_the_window(qtbot, outpost):
    start_and_wait_ready(qtbot, outpost)
    window = outpost.window
    assert window.model_label.text().startswith("Local model: SmolLM2-135M-Instruct.Q4_1.gguf · CPU, ")  # where the layers are
    send_with_enter(qtbot, outpost, "What is the capital of France?")
    wait_idle(qtbot, outpost)
    user_bubble, reply_bubble = window.view.bubbles
    assert user_bubble.text == "What is the capital of France?"
    messages = outpost.store.messages(outpost.store.list_conversations()[0].id)
    assert [m.role for m in messages] == [Role.USER, Role.ASSISTANT]
    answer = messages[1]
    assert answer.status is MessageStatus.COMPLETE and answer.finish_reason in ("stop",
                                                                                "length")
    assert answer.content.strip() and answer.content == reply_bubble.text  # text arrived
    assert (answer.engine, answer.model) == ("local", "SmolLM2-135M-Instruct.Q4_1.gguf")
    assert answer.prompt_tokens > 0 and not answer.tokens_estimated  # counted by the model
    assert 1 <= answer.completion_tokens <= 48
    assert answer.ttft_ms > 0 and "TTFT" in reply_bubble.footer.text()
    assert "TTFT" in window.metrics_label.text()
    # a decode speed needs two tokens or more
    assert (answer.tokens_per_s is not None) == (answer.completion_tokens > 1)
    assert ("tok/s" in reply_bubble.footer.text()) == (answer.completion_tokens > 1)


@pytest.mark.local_model
def test_escape_stops_the_real_model(qtbot, outpost):
    outpost.settings.set("max_tokens", 2000)
    start_and_wait_ready(qtbot, outpost)
    window = outpost.window
    send_with_enter(qtbot, outpost, "Write a very long story about a dragon and a knight.")
    qtbot.waitUntil(lambda: bool(window.view.bubbles[-1].text), timeout=30000)
    qtbot.keyClick(window, Qt.Key.Key_Escape)
    wait_idle(qtbot, outpost)
    answer = outpost.store.messages(outpost.store.list_conversations()[0].id)[-1]
    assert answer.status is MessageStatus.INTERRUPTED and answer.finish_reason == "cancelled"
    assert answer.content and answer.content == window.view.bubbles[-1].text
    assert answer.completion_tokens < 2000
    assert not window.banner.isVisible()


@pytest.mark.local_model
def test_the_real_model_answers_a_message_sent_while_it_loads(qtbot, outpost):
    outpost.start()  # the window is shown; the model loads in the background
    send_with_enter(qtbot, outpost, "Say hello.")
    conversation = outpost.store.list_conversations()[0]
    assert outpost.store.messages(conversation.id)[0].content == "Say hello."
    wait_idle(qtbot, outpost)
    answer = outpost.store.messages(conversation.id)[-1]
    assert answer.role is Role.ASSISTANT and answer.status is MessageStatus.COMPLETE
    assert answer.content


@pytest.mark.local_model
def test_bad_model_file_shows_error_and_keeps_the_current_model(qtbot, outpost, tmp_path):
    start_and_wait_ready(qtbot, outpost)
    window = outpost.window
    bad = tmp_path / "notes.gguf"
    bad.write_text("this is not a model")
    window.model_menu.choose_model(str(bad))
    assert window.banner.isVisible()
    assert str(bad) in window.banner.label.text()
    assert "not a GGUF file" in window.banner.label.text()
    send_with_enter(qtbot, outpost, "Hi")
    wait_idle(qtbot, outpost)
    answer = outpost.store.messages(outpost.store.list_conversations()[0].id)[-1]
    assert answer.content and answer.model == "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.mark.local_model
def test_switch_to_second_model_and_back(qtbot, outpost, gemma_model):
    start_and_wait_ready(qtbot, outpost)
    window = outpost.window
    with qtbot.waitSignal(outpost.loader.model_ready, timeout=60000):
        window.model_menu.choose_model(str(gemma_model))
    assert gemma_model.name in window.model_label.text()
    assert Settings()["model_path"] == str(gemma_model)  # remembered
    send_with_enter(qtbot, outpost, "The sky is")
    wait_idle(qtbot, outpost)
    answer = outpost.store.messages(outpost.store.list_conversations()[0].id)[-1]
    assert answer.model == gemma_model.name
    with qtbot.waitSignal(outpost.loader.model_ready, timeout=60000):
        window.bundled_model_action.trigger()
    assert "SmolLM2" in window.model_label.text()


def test_a_reply_the_disk_refused_stays_whole_on_screen_and_is_saved_later(
        qtbot, scripted, scripted_engine, monkeypatch):
    """The final write fails (a full disk): the bubble keeps the whole reply (not the shorter
    copy the last periodic write stored), the banner says it is not saved yet, with no Retry;
    once the disk takes writes again the window saves it by itself and says so."""
    window, store = scripted.window, scripted.store
    controller = window.controller
    controller._save_timer.setInterval(20)
    real_update = store.update_message
    refuse_final_writes(monkeypatch, store)
    scripted_engine.script(reply("A long answer", " that the disk", " would not take."))
    send_with_enter(qtbot, scripted, "Tell me")
    wait_idle(qtbot, scripted)
    whole = "A long answer that the disk would not take."
    assert window.view.bubbles[-1].text == whole
    banner = window.errors.banner
    assert "could not be saved yet" in banner.label.text()
    assert not banner.retry_button.isVisible()
    message_id = window.view.bubbles[-1].message_id
    assert store.get_message(message_id).status is MessageStatus.STREAMING
    asked = answer_confirmations(monkeypatch, "Cancel")
    window.close()  # closing would lose it: asked first, Cancel keeps the window open
    assert window.isVisible() and asked[0]["title"] == "Quit without saving"
    with qtbot.waitSignal(controller.notice, timeout=5000,
                          check_params_cb=lambda text: "saved now" in text):
        monkeypatch.setattr(store, "update_message", real_update)  # room again
    saved = store.get_message(message_id)
    assert (saved.status, saved.content) == (MessageStatus.COMPLETE, whole)
    assert window.view.bubbles[-1].text == whole


def test_new_chat_while_a_reply_streams_says_why_it_waits(qtbot, scripted, scripted_engine):
    """+ New chat (or another chat in the list) while a reply is being written: the banner
    says to stop it first (it did nothing, and later changes landed on the old chat)."""
    window = scripted.window
    gate = threading.Event()
    scripted_engine.script(gated([TextDelta("Still"), TextDelta(" going")], gate))
    send_with_enter(qtbot, scripted, "Long story please")
    qtbot.waitUntil(lambda: window.controller.state == "streaming", timeout=5000)
    current = window.controller.conversation_id
    window._on_new_chat()
    assert "Stop the reply before you start a new chat" in window.errors.banner.label.text()
    assert window.controller.conversation_id == current
    gate.set()
    wait_idle(qtbot, scripted)


def test_the_banner_says_when_the_reply_asked_again_is_valid_json(qtbot, scripted,
                                                                   scripted_engine):
    """JSON output: the first reply is not JSON, the banner says it is asked once more; the
    second is valid, and the banner says so (it went on saying "asking once more")."""
    window = scripted.window
    window.sampling.json_mode.setChecked(True)
    scripted_engine.script(reply("Sure! Here it is: name Ada"), reply('{"name": "Ada"}'))
    send_with_enter(qtbot, scripted, "A person as JSON")
    wait_idle(qtbot, scripted)
    assert window.view.bubbles[-1].text == '{"name": "Ada"}'
    assert "asked for again is valid JSON" in window.errors.banner.label.text()


def test_a_broken_reply_the_disk_refused_says_both_and_can_be_retried(
        qtbot, scripted, scripted_engine, monkeypatch):
    """The stream broke and its final write failed too: the banner says why it broke and that
    it is kept until it can be saved, and Retry is offered (only the write was said)."""
    from app.domain.errors import EngineError

    window, store = scripted.window, scripted.store
    refuse_final_writes(monkeypatch, store)
    scripted_engine.script([TextDelta("Half of it"),
                            Finished(FinishReason.ERROR, error=EngineError("The link broke."))])
    send_with_enter(qtbot, scripted, "Tell me")
    wait_idle(qtbot, scripted)
    said = window.errors.banner.label.text()
    assert "The link broke." in said and "could not be saved yet" in said
    assert window.errors.banner.retry_button.isVisibleTo(window)
    assert window.view.bubbles[-1].text == "Half of it"
    monkeypatch.undo()
    window.controller.service.save_unsaved()
