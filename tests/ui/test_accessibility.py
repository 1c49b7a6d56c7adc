"""Keyboard and accessibility (issue 15) in the real window and every dialog.

- Every control (a button, field, list or table, or any widget Tab stops at) has a name a
  screen reader can say: its accessible name, a button's own words, or the label a form puts
  next to it (``QLabel.buddy``, which Qt's accessibility layer reads as the name). A symbol
  ("⋯", "‹", "×", "+") is not a name.
- The main window's controls also say what they do (an accessible description, or the tooltip
  Qt reads as one).
- Tab walks from the message box through the whole window (the header's pickers, the sidebar),
  and neither Tab nor the arrow keys nor the wheel change a route, a provider or a knob on the
  way: only a control the user focused changes (``ui.input_guard``), and the focused one shows
  a ring (``ui.focus_ring``).
"""
from __future__ import annotations

import re

import pytest
from PySide6.QtCore import QPoint, QPointF, QRect, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import (
    QAbstractButton,
    QAbstractItemView,
    QAbstractScrollArea,
    QAbstractSlider,
    QAbstractSpinBox,
    QApplication,
    QComboBox,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QScrollBar,
    QTextEdit,
    QToolButton,
    QWidget,
)

from tests.support import reply, send
from tests.ui.test_theme import open_dialogs
from ui.focus_ring import FocusRing

pytestmark = pytest.mark.gui

INTERACTIVE = (QAbstractButton, QComboBox, QLineEdit, QAbstractSpinBox, QPlainTextEdit,
               QTextEdit, QAbstractItemView, QAbstractSlider)
_WORD = re.compile(r"\w")


# -- what a screen reader is told ----------------------------------------------------------------
def is_part_of_another(widget: QWidget) -> bool:
    """Pieces Qt builds into another control, which speaks for them: scroll bars, table
    headers, a scroll area's viewport, the line edit of a spin box or combo box, a line edit's
    clear button, a tab widget's tab bar; and the focus ring."""
    parent = widget.parentWidget()
    return isinstance(widget, (QScrollBar, QHeaderView, FocusRing)) or \
        isinstance(parent, QAbstractScrollArea) and parent.viewport() is widget or \
        isinstance(widget, QLineEdit) and isinstance(parent, (QComboBox, QAbstractSpinBox)) or \
        isinstance(widget, QToolButton) and isinstance(parent, QLineEdit) or \
        widget.objectName().startswith("qt_")


def controls(top: QWidget, skip: QWidget | None = None) -> list[QWidget]:
    """Every control of the window ``top`` (shown or not: a bubble's action bar, another
    settings page), but none under ``skip``; not its dialogs' nor a combo box's popup list."""
    found = []
    for widget in top.findChildren(QWidget):
        if widget.window() is not top.window() or is_part_of_another(widget):
            continue
        if skip is not None and (widget is skip or skip.isAncestorOf(widget)):
            continue
        if isinstance(widget, INTERACTIVE) or widget.focusPolicy() & Qt.FocusPolicy.TabFocus:
            found.append(widget)
    return found


def spoken_name(widget: QWidget, buddies: dict[int, str]) -> str:
    """The name assistive technology gets for ``widget`` ("" when it has none)."""
    if widget.accessibleName().strip():
        return widget.accessibleName().strip()
    if isinstance(widget, QAbstractButton) and _WORD.search(widget.text()):
        return widget.text().replace("&", "").strip()
    return buddies.get(id(widget), "")


def buddies_in(top: QWidget) -> dict[int, str]:
    """Form labels: the text of each label, by the id of the field it names."""
    return {id(label.buddy()): label.text().replace("&", "").strip()
            for label in top.findChildren(QLabel)
            if label.buddy() is not None and _WORD.search(label.text())}


def describe(widget: QWidget) -> str:
    text = widget.text() if isinstance(widget, QAbstractButton) else ""
    parents, parent = [], widget.parentWidget()
    while parent is not None and len(parents) < 3:
        parents.append(type(parent).__name__)
        parent = parent.parentWidget()
    return f"{type(widget).__name__} {text!r} in {'/'.join(parents)}"


def unnamed(top: QWidget, skip: QWidget | None = None) -> list[str]:
    buddies = buddies_in(top)
    return [describe(w) for w in controls(top, skip) if not spoken_name(w, buddies)]


def undescribed(top: QWidget, skip: QWidget | None = None) -> list[str]:
    return [describe(w) for w in controls(top, skip)
            if not (w.accessibleDescription().strip() or w.toolTip().strip())]


# -- the tests -----------------------------------------------------------------------------------
@pytest.fixture
def conversation(qtbot, scripted, scripted_engine):
    """The window with a question and its reply (so the bubbles and their buttons exist)."""
    window = scripted.window
    window.resize(1200, 750)
    window.show()
    qtbot.waitExposed(window)
    scripted_engine.script(reply("Keep it in a clean bottle."))
    send(qtbot, scripted, "How do I keep water safe?")
    assert len(window.view.bubbles) == 2
    return scripted


def test_every_control_of_the_window_has_a_name_and_a_description(conversation):
    window = conversation.window
    window.model_picker.show()  # shown once a cloud provider is picked
    for bubble in window.view.bubbles:  # built when first needed (a hover, Edit, versions)
        assert bubble.actions_bar and bubble.editor and bubble.switcher
    found = controls(window, skip=window.sampling)
    for must in (window.route_picker, window.target_picker, window.model_picker,
                 window.composer.edit, window.sidebar.list, window.view,
                 *window.view.bubbles, window.view.bubbles[1].details_button,
                 window.view.bubbles[1].actions_bar.regenerate_button,
                 window.view.bubbles[0].editor.edit):
        assert must in found
    assert unnamed(window, skip=window.sampling) == []
    assert undescribed(window, skip=window.sampling) == []
    switcher = window.view.bubbles[1].switcher  # ‹ 2/3 ›: symbols on screen, words when read
    assert switcher.previous_button.accessibleName() == "Previous version"
    assert window.sidebar.new_button.accessibleName() == "New chat"  # not "+  New chat"


def test_every_dialog_names_its_controls(qtbot, conversation):
    window = conversation.window
    dialogs = open_dialogs(qtbot, conversation)
    del dialogs["usage"]  # see test_the_panels_edited_elsewhere_name_their_controls
    dialogs["settings"] = window.open_settings()
    dialogs["search all"] = window.open_search(False)
    dialogs["search here"] = window.open_search(True)
    dialogs["shortcuts"] = window.help_menu.show_shortcuts()
    dialogs["about"] = window.help_menu.show_about()
    dialogs["profile PIN"] = pin_dialog(conversation)
    missing = {name: unnamed(dialog) for name, dialog in dialogs.items()}
    assert {name: gaps for name, gaps in missing.items() if gaps} == {}
    for name in ("providers", "profiles", "models", "settings", "outbox"):
        assert len(controls(dialogs[name])) >= 4, name  # the walk found their controls
    for dialog in dialogs.values():
        dialog.close()


def test_the_panels_edited_elsewhere_name_their_controls(qtbot, conversation):
    window = conversation.window
    window.open_usage()
    assert unnamed(window.sampling) == [] and unnamed(window.usage_dialog) == []


def pin_dialog(app) -> QWidget:
    from ui.profiles_dialog import PinDialog

    app.profiles.add("ana", app.profiles.get(app.window.profile_button.profile.name))
    app.profiles.set_pin("ana", "2468", app.profiles.get("ana"))
    dialog = PinDialog(app.profiles, "ana", app.window, choose=True)
    dialog.show()
    return dialog


# -- the keyboard --------------------------------------------------------------------------------
def values(window) -> dict:
    """What must not change by accident: the route, the provider and model, the knobs, the
    conversation shown."""
    return {"route": window.route_picker.currentData(), "target": window.target_picker.target(),
            "model": window.model_picker.currentText(), "knobs": window.sampling.values(),
            "conversation": window.controller.conversation_id,
            "system": window.sampling.system_prompt.toPlainText()}


def test_tab_walks_the_window_and_changes_nothing(qtbot, conversation):
    window = conversation.window
    window.activateWindow()
    window.composer.edit.setFocus()
    qtbot.waitUntil(lambda: QApplication.focusWidget() is window.composer.edit)
    before = values(window)
    visited = []
    for _ in range(120):
        qtbot.keyClick(QApplication.focusWidget(), Qt.Key.Key_Tab)
        focused = QApplication.focusWidget()
        visited.append(focused)
        ring = window.findChild(FocusRing)
        assert ring is not None and ring.isVisible() and ring.target is not None, \
            describe(focused)  # every stop is shown
        if not isinstance(focused, (QComboBox, QAbstractSpinBox, QAbstractItemView, QLineEdit,
                                    QPlainTextEdit, QAbstractSlider)):
            for key in (Qt.Key.Key_Up, Qt.Key.Key_Down, Qt.Key.Key_Left, Qt.Key.Key_Right):
                qtbot.keyClick(focused, key)
        if focused is window.composer.edit:
            break
    assert focused is window.composer.edit, "Tab came back to the message box"
    for stop in (window.route_picker, window.target_picker, window.sidebar.list,
                 window.sidebar.new_button, window.composer.button, *window.view.bubbles):
        assert stop in visited, describe(stop)
    # Send, then the Sampling panel top to bottom, then the status bar (it went from the
    # panel's first field to the status bar and back into the panel)
    stops = (window.composer.button, window.sampling.preset_picker,
             window.sampling.system_prompt, window.profile_button, window.offline_button)
    order = [visited.index(stop) for stop in stops]
    assert order == sorted(order), [describe(stop) for stop in stops]
    assert window.view.bubbles[1].details_button.accessibleName() == "Details of this reply"
    assert values(window) == before


def wheel(widget: QWidget, steps: int = -1) -> QWheelEvent:
    """One wheel notch over ``widget`` (down for a negative ``steps``); the event, after."""
    centre = QPointF(widget.rect().center())
    event = QWheelEvent(centre, QPointF(widget.mapToGlobal(centre.toPoint())), QPoint(0, 0),
                        QPoint(0, 120 * steps), Qt.MouseButton.NoButton,
                        Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(widget, event)
    return event


def test_the_wheel_changes_only_a_focused_value(qtbot, conversation):
    window = conversation.window
    window.activateWindow()
    window.composer.edit.setFocus()
    temperature = window.sampling.fields["temperature"]
    picker = window.route_picker
    before = values(window)
    for widget in (picker, temperature, window.target_picker):
        assert widget.focusPolicy() == Qt.FocusPolicy.StrongFocus  # the wheel never focuses
        event = wheel(widget)
        assert not event.isAccepted()  # left for the scroll area behind it
    assert values(window) == before
    temperature.setFocus()
    qtbot.waitUntil(temperature.hasFocus)
    wheel(temperature, steps=1)
    assert window.sampling.values()["temperature"] != before["knobs"]["temperature"]


def test_the_ring_shows_where_the_keys_go(qtbot, conversation):
    """Around the control, outside its edge; after a click only on a field you type into,
    until a navigation key is pressed; gone when the window loses the focus to a dialog."""
    window = conversation.window
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow)
    ring = None

    def ringed() -> QWidget | None:
        nonlocal ring
        ring = window.findChild(FocusRing)
        return ring.target if ring is not None and ring.isVisible() else None

    qtbot.mouseClick(window.composer.edit.viewport(), Qt.MouseButton.LeftButton)
    assert ringed() is window.composer.edit
    box = window.composer.edit
    outer = ring.geometry()
    assert outer.contains(QRect(box.mapTo(window, QPoint(0, 0)), box.size()))
    assert outer.width() == box.width() + 6  # 1 px apart, 2 px wide, on each side
    chats = window.sidebar.list
    shown = chats.visualItemRect(window.sidebar.conversation_items()[0]).center()
    qtbot.mouseClick(chats.viewport(), Qt.MouseButton.LeftButton, pos=shown)  # a click: no ring
    assert chats.hasFocus() and ringed() is None
    qtbot.keyClick(chats, Qt.Key.Key_Down)
    assert ringed() is chats
    window.route_picker.setFocus(Qt.FocusReason.TabFocusReason)
    assert ringed() is window.route_picker
    temperature = window.sampling.fields["temperature"]
    temperature.setFocus(Qt.FocusReason.TabFocusReason)
    assert ringed() is temperature
    model = window.model_picker  # editable: its line edit is inside, the ring goes round it
    model.show()
    model.lineEdit().setFocus(Qt.FocusReason.TabFocusReason)
    assert ringed() is model
