"""The window driven by the keyboard alone, as a keyboard-only user trial did: Tab through the
chat list, the order Tab walks, the focus after Regenerate or an edit, dialogs opened by their
shortcuts. The real window (scripted engines), keys sent to the focused widget."""
from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QScrollArea, QWidget

from tests.support import reply, send
from ui.focus_ring import FocusRing, control_of

pytestmark = pytest.mark.gui


def shown(qtbot, app):
    window = app.window
    window.resize(1200, 780)
    window.show()
    qtbot.waitExposed(window)
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow)
    return window


def focused() -> QWidget | None:
    return QApplication.focusWidget()


def tab_until(qtbot, reached, key=Qt.Key.Key_Tab, most: int = 80) -> list[QWidget]:
    """Press ``key`` in the focused widget until ``reached(focused())``; the stops on the
    way (the last one ``reached``)."""
    stops = []
    for _ in range(most):
        qtbot.keyClick(focused(), key)
        stops.append(focused())
        if reached(stops[-1]):
            return stops
    raise AssertionError(f"never reached: {[type(w).__name__ for w in stops]}")


def test_tab_into_the_chat_list_opens_nothing_and_enter_opens(qtbot, scripted,
                                                              scripted_engine):
    """Tab into the list made Qt pick its top row, and picking a row opened it: a new chat
    just started (Ctrl+N), its knobs and its draft were thrown away. Now the focus and the
    arrow keys only move a highlight; Enter (or a click) opens."""
    window = shown(qtbot, scripted)
    scripted_engine.script(reply("One."), reply("Two."))
    send(qtbot, scripted, "First chat")
    first = window.controller.conversation_id
    window.new_action.trigger()
    send(qtbot, scripted, "Second chat")
    second = window.controller.conversation_id
    qtbot.keyClick(window.composer.edit, Qt.Key.Key_N, Qt.KeyboardModifier.ControlModifier)
    assert window.controller.conversation_id is None
    window.sampling.fields["max_tokens"].setValue(200)  # this new chat's knob
    qtbot.keyClicks(window.composer.edit, "my unsent draft")
    chats = window.sidebar.list

    tab_until(qtbot, lambda w: w is chats)
    qtbot.keyClick(chats, Qt.Key.Key_Down)
    qtbot.keyClick(chats, Qt.Key.Key_Down)
    assert window.controller.conversation_id is None  # still the new chat
    assert window.title_label.text() == "New chat"
    assert window.sampling.fields["max_tokens"].value() == 200
    assert window.composer.edit.toPlainText() == "my unsent draft"
    assert window.sidebar.current_id() in (first, second)  # a highlight only

    tab_until(qtbot, lambda w: w is chats)  # round the window once more: nothing opened
    assert window.controller.conversation_id is None

    highlighted = window.sidebar.current_id()
    qtbot.keyClick(chats, Qt.Key.Key_Return)
    assert window.controller.conversation_id == highlighted
    other = first if highlighted == second else second
    item = next(i for i in window.sidebar.conversation_items()
                if i.data(Qt.ItemDataRole.UserRole) == other)
    qtbot.mouseClick(chats.viewport(), Qt.MouseButton.LeftButton,
                     pos=chats.visualItemRect(item).center())
    assert window.controller.conversation_id == other


def test_tab_follows_the_screen_and_comes_round(qtbot, scripted, scripted_engine):
    """From the message box: the Sampling panel top to bottom, the status bar, then round to
    the chat list, the header, the chat and its bubbles, and the message box again. Tab went
    from the status bar to the Sampling panel's scroll area (a stop of its own) first."""
    window = shown(qtbot, scripted)
    scripted_engine.script(reply("Keep it in a clean bottle."))
    send(qtbot, scripted, "How do I keep water safe?")
    window.composer.edit.setFocus(Qt.FocusReason.TabFocusReason)
    stops = tab_until(qtbot, lambda w: w is window.composer.edit)

    def region(widget: QWidget) -> str:
        for name, area in (("sidebar", window.sidebar), ("header", window.header_pickers),
                           ("chat", window.view), ("composer", window.composer),
                           ("sampling", window.sampling), ("status", window.statusBar())):
            if widget is area or area.isAncestorOf(widget):
                return name
        return f"elsewhere: {type(widget).__name__} {widget.accessibleName()!r}"

    regions = []
    for stop in stops:
        if not regions or regions[-1] != region(stop):
            regions.append(region(stop))
    assert regions == ["composer", "sampling", "status", "sidebar", "header", "chat",
                       "composer"]
    sampling = [stop for stop in stops if region(stop) == "sampling"]
    assert sampling[0] is window.sampling.preset_picker
    assert sampling[-1] is window.sampling.system_prompt
    assert not any(isinstance(stop, QScrollArea) for stop in sampling)  # (its own)
    status = [stop for stop in stops if region(stop) == "status"]
    assert status[0] is window.profile_button and status[-1] is window.offline_button
    assert stops[stops.index(window.offline_button) + 1] is window.sidebar.new_button
    assert all(bubble in stops for bubble in window.view.bubbles)


def wait_idle(qtbot, app) -> None:
    qtbot.waitUntil(lambda: app.window.controller.state == "idle", timeout=20000)


def test_regenerate_and_an_edit_leave_the_focus_on_the_new_reply(qtbot, scripted,
                                                                 scripted_engine):
    """R on a reply, or an edit sent with Ctrl+Enter: the focus is on the new reply, so R,
    Alt+Left and Alt+Right work at once (it was on the whole conversation view)."""
    window = shown(qtbot, scripted)
    scripted_engine.script(reply("First answer."), reply("Second answer."),
                           reply("Answer to the edit."))
    send(qtbot, scripted, "A question")
    answer = window.view.bubbles[1]
    answer.setFocus(Qt.FocusReason.TabFocusReason)
    qtbot.keyClick(answer, Qt.Key.Key_R)
    wait_idle(qtbot, scripted)
    new_reply = window.view.bubbles[-1]
    assert new_reply.text == "Second answer."
    assert focused() is new_reply
    ring = window.findChild(FocusRing)
    assert ring.isVisible() and ring.target is new_reply  # shown, as Tab would show it
    qtbot.keyClick(focused(), Qt.Key.Key_Left, Qt.KeyboardModifier.AltModifier)
    assert [b.text for b in window.view.bubbles] == ["A question", "First answer."]

    question = window.view.bubbles[0]
    question.setFocus(Qt.FocusReason.TabFocusReason)
    qtbot.keyClick(question, Qt.Key.Key_E)
    editor = focused()
    editor.selectAll()
    qtbot.keyClicks(editor, "An edited question")
    qtbot.keyClick(editor, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    wait_idle(qtbot, scripted)
    assert [b.text for b in window.view.bubbles] == ["An edited question",
                                                     "Answer to the edit."]
    assert focused() is window.view.bubbles[-1]



@pytest.mark.parametrize("key, modifiers, opened", [
    (Qt.Key.Key_Comma, Qt.KeyboardModifier.ControlModifier,
     lambda window: window.settings_dialog),
    (Qt.Key.Key_M, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier,
     lambda window: window.model_menu.models_dialog),
], ids=["settings", "models"])
def test_a_dialog_opened_by_its_shortcut_shows_the_ring_on_its_first_focus(
        qtbot, scripted, key, modifiers, opened):
    """Ctrl+, and Ctrl+Shift+M: the dialog's first control has the ring, as any control
    reached by the keyboard (it had none until Tab was pressed in it)."""
    window = shown(qtbot, scripted)
    window.composer.edit.setFocus()
    qtbot.waitUntil(window.composer.edit.hasFocus)
    qtbot.keyClick(window.composer.edit, key, modifiers)
    dialog = opened(window)
    qtbot.addWidget(dialog)
    qtbot.waitUntil(lambda: focused() is not None and focused().window() is dialog)

    def ringed() -> QWidget | None:
        ring = dialog.findChild(FocusRing)
        return ring.target if ring is not None and ring.isVisible() else None

    qtbot.waitUntil(lambda: ringed() is not None)
    assert ringed() is control_of(focused())


def test_a_dialog_opened_after_a_click_shows_no_ring_at_first(qtbot, scripted):
    """The ring is for the keyboard: Settings opened after a click (as its menu item is)
    starts without one on its list of pages."""
    window = shown(qtbot, scripted)
    qtbot.mouseClick(window.sidebar.new_button, Qt.MouseButton.LeftButton)
    window.settings_action.trigger()
    dialog = window.settings_dialog
    qtbot.addWidget(dialog)
    qtbot.waitUntil(lambda: focused() is not None and focused().window() is dialog)
    ring = dialog.findChild(FocusRing)
    assert ring is None or not ring.isVisible()
