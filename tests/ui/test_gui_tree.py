"""Conversations as trees in the window (issue 13): versions ‹ n/m ›, regenerate, edit and
resend, delete, fork, copy, refusals while a reply streams, and the outbox answer's version.

Every test drives the real window with a ScriptedEngine where the local model goes, so what each
turn was sent (``ScriptedEngine.requests``) is known exactly."""
from __future__ import annotations

import importlib.util
import re

import pytest
from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QApplication

from app.domain.messages import Role
from tests.conftest import ROOT
from tests.support import answer_confirmations, held_open, reply, send
from ui.confirm import Confirmation

pytestmark = pytest.mark.gui


def wait_idle(qtbot, app) -> None:
    qtbot.waitUntil(lambda: app.window.controller.state == "idle", timeout=20000)


def texts(window) -> list[str]:
    return [b.text for b in window.view.bubbles]


def sent(engine) -> list[str]:
    """What the last turn sent the engine, the system prompt left out."""
    return [m.content for m in engine.requests[-1].messages if m.role is not Role.SYSTEM]


def two_turns(qtbot, app, engine) -> None:
    engine.script(reply("First answer."), reply("Second answer."))
    send(qtbot, app, "Q1")
    send(qtbot, app, "Q2")
    assert texts(app.window) == ["Q1", "First answer.", "Q2", "Second answer."]


def click_action(qtbot, bubble, name: str) -> None:
    """Click one of the bubble's action buttons, shown as on hover."""
    bubble.set_actions_visible(True)
    qtbot.mouseClick(getattr(bubble.actions_bar, f"{name}_button"), Qt.MouseButton.LeftButton)


def errors_of(window) -> list:
    errors: list = []
    window.controller.error_occurred.connect(errors.append)
    return errors


# -- versions and regenerate ------------------------------------------------------------------
def test_regenerate_makes_a_version_and_switching_back_shows_the_old_reply(
        qtbot, scripted, scripted_engine):
    window = scripted.window
    scripted_engine.script(reply("First answer."))
    send(qtbot, scripted, "Q1")
    question = window.view.bubbles[0]
    assert window.view.bubbles[1].switcher.isHidden()  # one version: no switcher

    scripted_engine.script(reply("Second answer."))
    click_action(qtbot, window.view.bubbles[1], "regenerate")
    wait_idle(qtbot, scripted)
    assert texts(window) == ["Q1", "Second answer."]
    assert sent(scripted_engine) == ["Q1"]  # the regenerated turn saw the path up to Q1
    answer = window.view.bubbles[1]
    assert not answer.switcher.isHidden() and answer.switcher.label.text() == "2/2"
    assert answer.switcher.previous_button.accessibleName() == "Previous version"
    assert answer.switcher.next_button.accessibleName() == "Next version"
    assert not answer.switcher.next_button.isEnabled()

    qtbot.mouseClick(answer.switcher.previous_button, Qt.MouseButton.LeftButton)
    assert texts(window) == ["Q1", "First answer."]
    assert window.view.bubbles[0] is question  # only the bubbles below were built again
    assert window.view.bubbles[1].switcher.label.text() == "1/2"
    conversation_id = window.controller.conversation_id
    assert [m.content for m in scripted.store.branch(conversation_id)] == ["Q1", "First answer."]

    scripted_engine.script(reply("Third answer."))
    send(qtbot, scripted, "Q2")
    # the next turn sends exactly the active path: the old reply, not the regenerated one
    assert sent(scripted_engine) == ["Q1", "First answer.", "Q2"]
    assert texts(window) == ["Q1", "First answer.", "Q2", "Third answer."]

    # the next version by keyboard: Alt+Right on the focused reply
    window.view.bubbles[1].setFocus()
    qtbot.keyClick(window.view.bubbles[1], Qt.Key.Key_Right, Qt.KeyboardModifier.AltModifier)
    assert texts(window) == ["Q1", "Second answer."]
    # the version shown keeps the focus, so Alt+Left goes straight back (it went to the view)
    assert QApplication.focusWidget() is window.view.bubbles[1]
    qtbot.keyClick(window.view.bubbles[1], Qt.Key.Key_Left, Qt.KeyboardModifier.AltModifier)
    assert texts(window) == ["Q1", "First answer.", "Q2", "Third answer."]
    assert QApplication.focusWidget() is window.view.bubbles[1]
    qtbot.keyClick(window.view.bubbles[1], Qt.Key.Key_Right, Qt.KeyboardModifier.AltModifier)
    assert texts(window) == ["Q1", "Second answer."]
    # remembered: opening the conversation again shows the same path
    window.controller.conversation_id = None
    window.controller.open_conversation(conversation_id)
    assert texts(window) == ["Q1", "Second answer."]


def test_regenerate_by_keyboard_uses_the_current_settings(qtbot, scripted, scripted_engine):
    window = scripted.window
    scripted_engine.script(reply("First answer."), reply("Again."))
    send(qtbot, scripted, "Q1")
    bubble = window.view.bubbles[1]
    bubble.setFocus()
    qtbot.keyClick(bubble, Qt.Key.Key_R)
    wait_idle(qtbot, scripted)
    assert texts(window) == ["Q1", "Again."]
    assert scripted_engine.requests[-1].max_tokens == 48  # the window's knobs of now
    [first, again] = scripted.store.siblings(scripted.store.get_message(
        window.view.bubbles[1].message_id))
    assert (first.content, again.content) == ("First answer.", "Again.")


# -- edit and resend ------------------------------------------------------------------------------
def test_edit_and_resend_makes_a_sibling_and_sends_only_the_new_path(
        qtbot, scripted, scripted_engine):
    window = scripted.window
    two_turns(qtbot, scripted, scripted_engine)
    old_question = window.view.bubbles[2].message_id
    scripted_engine.script(reply("Edited answer."))

    bubble = window.view.bubbles[2]
    click_action(qtbot, bubble, "edit")
    assert bubble.editor.isVisibleTo(bubble) and bubble.editor.edit.toPlainText() == "Q2"
    bubble.editor.edit.setPlainText("Q2, edited")
    qtbot.keyClick(bubble.editor.edit, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    wait_idle(qtbot, scripted)

    assert texts(window) == ["Q1", "First answer.", "Q2, edited", "Edited answer."]
    assert sent(scripted_engine) == ["Q1", "First answer.", "Q2, edited"]
    assert window.view.bubbles[2].switcher.label.text() == "2/2"
    store = scripted.store
    siblings = store.siblings(store.get_message(window.view.bubbles[2].message_id))
    assert [m.content for m in siblings] == ["Q2", "Q2, edited"]
    assert siblings[0].id == old_question  # the old branch is kept, with its reply
    assert len(store.messages(window.controller.conversation_id)) == 6

    qtbot.mouseClick(window.view.bubbles[2].switcher.previous_button, Qt.MouseButton.LeftButton)
    assert texts(window) == ["Q1", "First answer.", "Q2", "Second answer."]


def test_the_first_message_can_be_edited_too(qtbot, scripted, scripted_engine):
    window = scripted.window
    two_turns(qtbot, scripted, scripted_engine)
    scripted_engine.script(reply("A fresh start."))
    bubble = window.view.bubbles[0]
    click_action(qtbot, bubble, "edit")
    bubble.editor.edit.setPlainText("Q1, edited")
    qtbot.keyClick(bubble.editor.edit, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    wait_idle(qtbot, scripted)
    assert texts(window) == ["Q1, edited", "A fresh start."]
    assert sent(scripted_engine) == ["Q1, edited"]
    assert window.view.bubbles[0].switcher.label.text() == "2/2"
    qtbot.mouseClick(window.view.bubbles[0].switcher.previous_button, Qt.MouseButton.LeftButton)
    assert texts(window) == ["Q1", "First answer.", "Q2", "Second answer."]


def test_edit_can_be_cancelled_with_escape(qtbot, scripted, scripted_engine):
    window = scripted.window
    two_turns(qtbot, scripted, scripted_engine)
    bubble = window.view.bubbles[2]
    bubble.setFocus()
    qtbot.keyClick(bubble, Qt.Key.Key_E)
    assert bubble.editor.isVisibleTo(bubble) and bubble.body.isHidden()
    qtbot.keyClick(bubble.editor.edit, Qt.Key.Key_Escape)
    assert bubble.editor.isHidden() and not bubble.body.isHidden()
    assert window.controller.state == "idle" and len(scripted_engine.requests) == 2


# -- delete -------------------------------------------------------------------------------------
def test_delete_asks_then_removes_the_message_and_everything_below(
        qtbot, scripted, scripted_engine, monkeypatch):
    window = scripted.window
    two_turns(qtbot, scripted, scripted_engine)
    asked = answer_confirmations(monkeypatch, "Cancel", "Delete")
    bubble = window.view.bubbles[2]
    bubble.setFocus()
    qtbot.keyClick(bubble, Qt.Key.Key_Delete)  # answered Cancel: nothing changes
    assert len(asked) == 1 and "everything below" in asked[0]["text"]
    assert len(texts(window)) == 4
    click_action(qtbot, window.view.bubbles[2], "delete")
    assert len(asked) == 2
    assert texts(window) == ["Q1", "First answer."]
    conversation_id = window.controller.conversation_id
    assert [m.content for m in scripted.store.messages(conversation_id)] == ["Q1",
                                                                            "First answer."]
    scripted_engine.script(reply("After the delete."))
    send(qtbot, scripted, "Q3")
    assert sent(scripted_engine) == ["Q1", "First answer.", "Q3"]


# -- fork ----------------------------------------------------------------------------------------
def test_fork_opens_a_new_conversation_with_the_copied_path(qtbot, scripted, scripted_engine):
    window = scripted.window
    two_turns(qtbot, scripted, scripted_engine)
    original = window.controller.conversation_id
    menu = window.view.bubbles[1].menu()
    [fork] = [a for a in menu.actions() if a.text().startswith("&Fork")]
    fork.trigger()
    forked = window.controller.conversation_id
    assert forked != original
    assert texts(window) == ["Q1", "First answer."]
    assert window.title_label.text().endswith("(fork)")
    assert window.sidebar.conversation_count() == 2
    assert len(scripted.store.messages(original)) == 4  # the original is unchanged
    scripted_engine.script(reply("In the fork."))
    send(qtbot, scripted, "Q-fork")
    assert sent(scripted_engine) == ["Q1", "First answer.", "Q-fork"]
    assert window.controller.conversation_id == forked


# -- copy ----------------------------------------------------------------------------------------
CODE_REPLY = ("Use this:", "\n\n```python\n", "print('hi')\n", "```\n\nand\n\n", "```\n",
              "x = 1\n", "```\n")


def test_copy_message_and_code_blocks(qtbot, scripted, scripted_engine):
    window = scripted.window
    scripted_engine.script(reply(*CODE_REPLY))
    send(qtbot, scripted, "Show me code")
    bubble = window.view.bubbles[1]
    clipboard = QGuiApplication.clipboard()
    click_action(qtbot, bubble, "copy")
    assert clipboard.text() == "".join(CODE_REPLY)
    assert window.status_note.text() == "Copied to the clipboard."
    window.view.bubbles[0].setFocus()
    qtbot.keyClick(window.view.bubbles[0], Qt.Key.Key_C, Qt.KeyboardModifier.ControlModifier)
    assert clipboard.text() == "Show me code"

    links = re.findall(r'href="(copy:[^"]*)"', bubble.body.toHtml())
    assert len(links) == 2  # one "Copy" above each fenced block
    bubble.body.anchorClicked.emit(QUrl(links[0]))
    assert clipboard.text() == "print('hi')"
    bubble.body.anchorClicked.emit(QUrl(links[1]))
    assert clipboard.text() == "x = 1"


def test_ctrl_c_in_a_messages_text_copies_the_selection_or_else_the_message(
        qtbot, scripted, scripted_engine):
    """The text of a message is a tab stop of its own ("Message text"): Ctrl+C there copied
    nothing and said nothing without a selection. Now it copies the selection when there is
    one, the whole message otherwise, and the status bar says so either way."""
    from PySide6.QtGui import QTextCursor

    window = scripted.window
    scripted_engine.script(reply("The keeper climbs ", "the stairs at dusk."))
    send(qtbot, scripted, "What does the keeper do?")
    body = window.view.bubbles[1].body
    clipboard = QGuiApplication.clipboard()
    clipboard.setText("before")
    window.statusBar().clearMessage()
    body.setFocus(Qt.FocusReason.TabFocusReason)
    assert QApplication.focusWidget() is body and body.accessibleName() == "Message text"
    qtbot.keyClick(body, Qt.Key.Key_C, Qt.KeyboardModifier.ControlModifier)
    assert clipboard.text() == "The keeper climbs the stairs at dusk."
    assert window.status_note.text() == "Copied to the clipboard."

    cursor = body.textCursor()
    cursor.movePosition(QTextCursor.MoveOperation.Start)
    cursor.movePosition(QTextCursor.MoveOperation.NextWord)
    cursor.movePosition(QTextCursor.MoveOperation.EndOfWord, QTextCursor.MoveMode.KeepAnchor)
    body.setTextCursor(cursor)
    window.statusBar().clearMessage()
    qtbot.keyClick(body, Qt.Key.Key_C, Qt.KeyboardModifier.ControlModifier)
    assert clipboard.text() == "keeper"  # the selection, as everywhere
    assert window.status_note.text() == "Copied to the clipboard."


# -- refused while a reply streams --------------------------------------------------------------
def test_tree_actions_are_refused_while_a_reply_streams(qtbot, scripted, scripted_engine,
                                                        monkeypatch):
    window = scripted.window
    two_turns(qtbot, scripted, scripted_engine)
    scripted_engine.script(reply("Second version."))
    window.view.bubbles[3].request_regenerate()
    wait_idle(qtbot, scripted)
    conversation_id = window.controller.conversation_id
    before = [(m.id, m.parent_id) for m in scripted.store.messages(conversation_id)]
    active = scripted.store.get_conversation(conversation_id).active_leaf_id

    scripted_engine.script(held_open("Once", " upon", " a", " time"))
    send_box = window.composer.edit
    qtbot.keyClicks(send_box, "Q3")
    qtbot.keyClick(send_box, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: window.view.bubbles[-1].text == "Once upon a time", timeout=10000)
    errors = errors_of(window)
    monkeypatch.setattr(Confirmation, "exec", lambda box: pytest.fail("asked while streaming"))
    answer, question = window.view.bubbles[3], window.view.bubbles[2]
    answer.request_regenerate()
    answer.switcher.go_previous()
    question.start_editing()
    question.editor.edit.setPlainText("changed")
    question.editor.submit()
    question.request_delete()
    question.request_fork()
    assert [type(e).__name__ for e in errors] == ["UsageError"] * 5
    assert all("Stop the reply" in str(e) for e in errors)
    assert "Stop the reply" in window.banner.label.text()
    assert window.controller.state == "streaming"
    assert texts(window)[-1] == "Once upon a time"

    qtbot.keyClick(window, Qt.Key.Key_Escape)
    wait_idle(qtbot, scripted)
    after = [(m.id, m.parent_id) for m in scripted.store.messages(conversation_id)]
    assert after[:len(before)] == before and len(after) == len(before) + 2  # only Q3 + reply
    assert scripted.store.branch(conversation_id)[-3].id == active


# -- the outbox's answer ------------------------------------------------------------------------
def test_outbox_answer_news_says_which_version_it_is(qtbot, scripted, scripted_engine):
    window = scripted.window
    scripted_engine.script(reply("Local answer."))
    send(qtbot, scripted, "Q1")
    conversation_id = window.controller.conversation_id
    question = scripted.store.branch(conversation_id)[0]
    # what the outbox sender stores: the cloud answer beside the local one
    scripted.store.add_message(conversation_id, Role.ASSISTANT, "Cloud answer.",
                               parent_id=question.id, engine="acme", model="m",
                               activate="beside")
    window.outbox_button.answered.emit(conversation_id,
                                       "acme answered your queued message in “Q1”.")
    assert window.banner.label.text() == "acme answered your queued message in “Q1” — the " \
        "newest answer is version 2 of 2 of its reply."
    assert texts(window) == ["Q1", "Cloud answer."]
    assert window.view.bubbles[1].switcher.label.text() == "2/2"


# -- screenshots, light and dark ----------------------------------------------------------------
def _dark_palette():
    spec = importlib.util.spec_from_file_location("take_screenshots",
                                                  ROOT / "tools" / "take_screenshots.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.palette("dark")


@pytest.fixture(params=["light", "dark"])
def themed(request, qapp):
    """The scripted window built under a light (the default) or a dark palette."""
    saved = QApplication.palette()
    if request.param == "dark":
        qapp.setPalette(_dark_palette())
    yield request.param, request.getfixturevalue("scripted"), \
        request.getfixturevalue("scripted_engine")
    qapp.setPalette(saved)


def test_screenshots_of_versions_and_actions(qtbot, themed, artifacts_dir):
    theme, app, engine = themed
    suffix = "" if theme == "light" else "_dark"
    window = app.window
    window.resize(1100, 720)
    window.show()
    engine.script(reply("Keep it in a clean bottle."),
                  reply("Boil it for a minute, then let it cool:", "\n\n```python\n",
                        "boil(water, minutes=1)\n", "```\n"),
                  reply("Use purification tablets."),
                  reply("Bring a filter and a spare bottle."))
    send(qtbot, app, "How do I keep water safe on a field trip?")
    for _ in range(2):
        window.view.bubbles[1].request_regenerate()
        wait_idle(qtbot, app)
    window.view.bubbles[1].switcher.go_previous()  # the code reply: version 2 of 3
    assert window.view.bubbles[1].switcher.label.text() == "2/3"
    send(qtbot, app, "And at night?")
    qtbot.wait(100)  # the layout settles before the grab
    path = artifacts_dir / f"main_window_versions{suffix}.png"
    assert window.grab().save(str(path))

    bubble = window.view.bubbles[1]
    bubble.set_actions_visible(True)
    window.view.bubbles[2].set_actions_visible(True)
    window.view.ensureWidgetVisible(bubble)
    qtbot.wait(100)
    assert not bubble.actions_bar.isHidden()
    path = artifacts_dir / f"message_actions{suffix}.png"
    assert window.grab().save(str(path))


def test_a_retry_takes_the_failed_replys_place_as_its_next_version(qtbot, scripted,
                                                                   scripted_engine):
    from app.domain.errors import StreamInterrupted
    from app.domain.messages import Finished, FinishReason, TextDelta, Usage

    window = scripted.window
    scripted_engine.script([TextDelta("Half"), Usage(5, 1),
                            Finished(FinishReason.ERROR, error=StreamInterrupted("Broke."))],
                           reply("Whole."))
    send(qtbot, scripted, "Q1")
    assert texts(window) == ["Q1", "Half"] and window.banner.retry_button.isVisible()
    window.banner.retry_button.click()
    wait_idle(qtbot, scripted)
    assert texts(window) == ["Q1", "Whole."]
    assert window.view.bubbles[1].switcher.label.text() == "2/2"
    qtbot.mouseClick(window.view.bubbles[1].switcher.previous_button, Qt.MouseButton.LeftButton)
    assert texts(window) == ["Q1", "Half"]


def test_a_best_of_candidate_is_kept_as_a_version_from_the_details(qtbot, scripted,
                                                                   scripted_engine):
    window = scripted.window
    window.sampling.fields["temperature"].setValue(0.8)
    window.sampling.tt_mode.setCurrentIndex(window.sampling.tt_mode.findData("best_of"))
    window.sampling.tt_n.setValue(2)
    window.sampling.tt_scorer.setCurrentIndex(window.sampling.tt_scorer.findData("json"))
    scripted_engine.script(reply("Alpha."), reply("Beta."))
    send(qtbot, scripted, "Pick one")
    reply_bubble = window.view.bubbles[1]
    shown = reply_bubble.text
    window.open_details(reply_bubble.message_id)
    dialog = window.details_dialog
    qtbot.addWidget(dialog)
    assert dialog.candidate_picker.count() == 1
    dialog.keep_button.click()
    other = ({"Alpha.", "Beta."} - {shown}).pop()
    assert texts(window) == ["Pick one", other]
    assert window.view.bubbles[1].switcher.label.text() == "2/2"
    qtbot.mouseClick(window.view.bubbles[1].switcher.previous_button, Qt.MouseButton.LeftButton)
    assert texts(window) == ["Pick one", shown]


def test_an_outbox_answer_for_another_conversation_is_marked_in_the_sidebar(
        qtbot, scripted, scripted_engine):
    window = scripted.window
    scripted_engine.script(reply("Local answer."), reply("Other."))
    send(qtbot, scripted, "Q1")
    first = window.controller.conversation_id
    window._on_new_chat()
    send(qtbot, scripted, "Another chat")
    window.outbox_button.answered.emit(first, "acme answered your queued message in “Q1”.")
    [item] = [item for item in window.sidebar.conversation_items()
              if item.data(Qt.ItemDataRole.UserRole) == first]
    assert item.font().bold() and "acme answered" in item.toolTip()
    assert item.text() == "Q1"  # the title itself is untouched (renaming stays right)
    window.sidebar.list.setCurrentItem(item)
    qtbot.keyClick(window.sidebar.list, Qt.Key.Key_Return)
    assert window.controller.conversation_id == first and not item.font().bold()


def test_regenerate_with_another_answerer_from_the_menu(qtbot, scripted, scripted_engine):
    """"Regenerate with ▸ the local model" forces the local route for that answer only."""
    window = scripted.window
    scripted_engine.script(reply("First answer."), reply("Local again."))
    send(qtbot, scripted, "Q1")
    bubble = window.view.bubbles[1]
    menu = bubble.menu()
    # the submenu sits under the plain Regenerate, Copy first, Delete last past a separator
    assert [a.text() or "---" for a in menu.actions()] == [
        "&Copy message", "&Regenerate with the current settings", "Regenerate &with",
        "&Fork into a new conversation", "---", "&Delete this and everything below…"]
    [with_menu] = [a.menu() for a in menu.actions() if a.menu() is not None]
    labels = [a.text() for a in with_menu.actions()]
    assert labels[0] == "&the local model"
    with_menu.actions()[0].trigger()
    wait_idle(qtbot, scripted)
    assert texts(window) == ["Q1", "Local again."]
    answer = scripted.store.get_message(window.view.bubbles[1].message_id)
    assert answer.engine == "local" and answer.route_reason == "local-only conversation"
    assert window.view.bubbles[1].switcher.label.text() == "2/2"
