"""The window driven by the keyboard alone, as a keyboard-only user trial did: Tab through the
chat list, the order Tab walks, the focus after Regenerate or an edit, dialogs opened by their
shortcuts. The real window (scripted engines), keys sent to the focused widget."""
from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QWidget

from tests.support import reply, send

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
