"""The real window, driven by qtbot (offscreen), on the real bundled model."""
from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from app.domain import MessageStatus, Role
from app.settings import Settings

pytestmark = [pytest.mark.gui, pytest.mark.local_model]


@pytest.fixture
def outpost(outpost_app):
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


def test_type_enter_streams_reply_and_saves_it(qtbot, outpost, artifacts_dir):
    start_and_wait_ready(qtbot, outpost)
    window = outpost.window
    send_with_enter(qtbot, outpost, "What is the capital of France?")
    assert window.controller.state in ("streaming", "waiting_for_model")
    assert window.composer.text() == ""  # the prompt moved into the conversation
    assert window.composer.button.text() == "Stop"
    qtbot.waitUntil(lambda: len(window.view.bubbles) == 2 and bool(window.view.bubbles[1].text),
                    timeout=30000)
    wait_idle(qtbot, outpost)
    user_bubble, reply_bubble = window.view.bubbles
    assert user_bubble.text == "What is the capital of France?"
    assert "Paris" in reply_bubble.text
    assert "TTFT" in reply_bubble.footer.text() and "tok/s" in reply_bubble.footer.text()
    assert "TTFT" in window.metrics_label.text()
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in window.model_label.text()
    assert "Local model" in window.route_label.text()

    conversations = outpost.store.list_conversations()
    assert len(conversations) == 1
    assert window.sidebar.list.count() == 1
    messages = outpost.store.messages(conversations[0].id)
    assert [m.role for m in messages] == [Role.USER, Role.ASSISTANT]
    assert messages[1].status is MessageStatus.COMPLETE
    assert messages[1].content == reply_bubble.text
    assert messages[1].ttft_ms and messages[1].tokens_per_s

    window.resize(1100, 720)
    qtbot.wait(50)
    path = artifacts_dir / "main_window.png"
    assert window.grab().save(str(path))
    assert path.stat().st_size > 10_000


def test_escape_stops_a_streaming_reply(qtbot, outpost):
    outpost.settings.set("max_tokens", 2000)
    start_and_wait_ready(qtbot, outpost)
    window = outpost.window
    send_with_enter(qtbot, outpost, "Write a very long story about a dragon and a knight.")
    qtbot.waitUntil(lambda: len(window.view.bubbles[-1].text) > 20, timeout=30000)
    qtbot.keyClick(window, Qt.Key.Key_Escape)
    wait_idle(qtbot, outpost)
    conversation = outpost.store.list_conversations()[0]
    reply = outpost.store.messages(conversation.id)[-1]
    assert reply.status is MessageStatus.INTERRUPTED
    assert reply.finish_reason == "cancelled"
    assert reply.completion_tokens < 2000
    assert reply.content and reply.content == window.view.bubbles[-1].text
    assert "interrupted" in window.view.bubbles[-1].footer.text()
    assert not window.banner.isVisible()  # a stop is not an error


def test_shift_enter_adds_a_line_instead_of_sending(qtbot, outpost):
    start_and_wait_ready(qtbot, outpost)
    edit = outpost.window.composer.edit
    qtbot.keyClicks(edit, "first line")
    qtbot.keyClick(edit, Qt.Key.Key_Return, Qt.KeyboardModifier.ShiftModifier)
    qtbot.keyClicks(edit, "second line")
    assert edit.toPlainText() == "first line\nsecond line"
    assert outpost.window.controller.state == "idle"
    assert outpost.store.list_conversations() == []


def test_message_sent_while_model_loads_waits_for_it(qtbot, outpost):
    outpost.start()  # the window is shown; the model loads in the background
    send_with_enter(qtbot, outpost, "Say hello.")
    # The prompt is committed at once, before the model is ready.
    conversation = outpost.store.list_conversations()[0]
    assert outpost.store.messages(conversation.id)[0].content == "Say hello."
    wait_idle(qtbot, outpost)
    reply = outpost.store.messages(conversation.id)[-1]
    assert reply.role is Role.ASSISTANT and reply.status is MessageStatus.COMPLETE
    assert reply.content


def test_bad_model_file_shows_error_and_keeps_the_current_model(qtbot, outpost, tmp_path):
    start_and_wait_ready(qtbot, outpost)
    window = outpost.window
    bad = tmp_path / "notes.gguf"
    bad.write_text("this is not a model")
    window.choose_model(str(bad))
    assert window.banner.isVisible()
    assert str(bad) in window.banner.label.text()
    assert "not a GGUF file" in window.banner.label.text()
    send_with_enter(qtbot, outpost, "Hi")
    wait_idle(qtbot, outpost)
    assert outpost.store.messages(outpost.store.list_conversations()[0].id)[-1].content


def test_switch_to_second_model_and_back(qtbot, outpost, gemma_model):
    start_and_wait_ready(qtbot, outpost)
    window = outpost.window
    with qtbot.waitSignal(outpost.loader.model_ready, timeout=60000):
        window.choose_model(str(gemma_model))
    assert gemma_model.name in window.model_label.text()
    assert Settings()["model_path"] == str(gemma_model)  # remembered
    send_with_enter(qtbot, outpost, "The sky is")
    wait_idle(qtbot, outpost)
    reply = outpost.store.messages(outpost.store.list_conversations()[0].id)[-1]
    assert reply.model == gemma_model.name
    with qtbot.waitSignal(outpost.loader.model_ready, timeout=60000):
        window.bundled_model_action.trigger()
    assert "SmolLM2" in window.model_label.text()


def test_sidebar_new_rename_delete_and_reopen(qtbot, outpost):
    start_and_wait_ready(qtbot, outpost)
    window = outpost.window
    send_with_enter(qtbot, outpost, "First chat")
    wait_idle(qtbot, outpost)
    qtbot.keyClick(window, Qt.Key.Key_N, Qt.KeyboardModifier.ControlModifier)
    assert window.view.bubbles == []
    assert window.controller.conversation_id is None
    send_with_enter(qtbot, outpost, "Second chat")
    wait_idle(qtbot, outpost)
    assert window.sidebar.list.count() == 2
    first_id = [c.id for c in outpost.store.list_conversations() if c.title == "First chat"][0]

    window.sidebar.rename_requested.emit(first_id, "Renamed chat")
    assert outpost.store.get_conversation(first_id).title == "Renamed chat"
    titles = [window.sidebar.list.item(i).text() for i in range(window.sidebar.list.count())]
    assert "Renamed chat" in titles

    item = next(window.sidebar.list.item(i) for i in range(window.sidebar.list.count())
                if window.sidebar.list.item(i).text() == "Renamed chat")
    window.sidebar.list.setCurrentItem(item)
    assert window.controller.conversation_id == first_id
    assert [b.text for b in window.view.bubbles][0] == "First chat"
    assert window.title_label.text() == "Renamed chat"

    window.sidebar.delete_requested.emit(first_id)
    assert [c.id for c in outpost.store.list_conversations()] != [first_id]
    assert first_id not in [c.id for c in outpost.store.list_conversations()]
    assert window.sidebar.list.count() == 1
    assert window.view.bubbles == []


def test_deltas_are_flushed_in_batches_not_per_token(qtbot, outpost):
    outpost.settings.set("max_tokens", 200)
    start_and_wait_ready(qtbot, outpost)
    window = outpost.window
    deltas, renders = [], []
    window.controller._worker.delta_received.connect(deltas.append)
    send_with_enter(qtbot, outpost, "Write a poem about the sea, at least ten lines.")
    qtbot.waitUntil(lambda: len(window.view.bubbles) == 2, timeout=10000)
    bubble = window.view.bubbles[1]
    original = bubble.append_text
    bubble.append_text = lambda text: (renders.append(text), original(text))
    wait_idle(qtbot, outpost)
    assert len(deltas) > 5
    # never more renders than deltas, and far fewer than tokens: batched by the engine's delta
    # interval and the window's flush timer (how the two split it depends on machine load)
    reply = outpost.store.messages(window.controller.conversation_id)[-1]
    assert 0 < len(renders) <= len(deltas) < reply.completion_tokens
    assert "".join(renders) == "".join(deltas) == bubble.text


def test_delete_key_asks_before_deleting(qtbot, outpost, monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    start_and_wait_ready(qtbot, outpost)
    window = outpost.window
    send_with_enter(qtbot, outpost, "Keep me")
    wait_idle(qtbot, outpost)
    answers = [QMessageBox.StandardButton.No, QMessageBox.StandardButton.Yes]
    asked = []
    monkeypatch.setattr(QMessageBox, "question",
                        lambda *args, **kwargs: (asked.append(args[2]), answers.pop(0))[1])
    window.sidebar.list.setCurrentRow(0)
    window.sidebar.list.setFocus()
    qtbot.keyClick(window.sidebar.list, Qt.Key.Key_Delete)
    assert asked and "cannot be undone" in asked[0]
    assert len(outpost.store.list_conversations()) == 1  # "No" keeps it
    qtbot.keyClick(window.sidebar.list, Qt.Key.Key_Delete)
    assert outpost.store.list_conversations() == []
