"""Keyboard and wheel, for the whole application: a value never changes by accident, and the
control that has the focus is always visible.

One event filter on the QApplication (``install_input_guard``), so every widget is covered,
including the ones built later, without a line in their own modules:

- **The wheel scrolls the page, not a value.** A spin box, combo box or slider (not a scroll bar)
  gets ``Qt.StrongFocus`` when it is polished: Tab or a click focuses it, the wheel never does
  (Qt's default for spin boxes and combo boxes is ``WheelFocus``). A wheel event over one that
  does not have the focus is left unaccepted, so Qt hands it to the widget behind, the scroll
  area, which scrolls. Once focused (a click, Tab), the wheel and the arrow keys change it as
  usual; the arrow keys only ever reach the focused widget.
- **Tab moves on.** A multi-line field (a system prompt, stop strings) takes Tab as "next
  field", as one-line fields do, so Tab walks through the whole window and never types a tab
  character into a value on its way (Qt's default for ``QPlainTextEdit``/``QTextEdit``); a
  table or list is left by Tab, its arrow keys move inside it (Qt's default walks its cells
  with Tab). A widget where Tab is the point says so with the dynamic property ``typesTab``.
- **Visible focus.** Focus moving in or out of a window moves that window's focus ring
  (``ui.focus_ring``); a navigation key pressed in a control focused by the mouse shows it
  too, so the control the arrow keys are about to change is never a surprise. A window or
  dialog shown while the last thing the user did was a key (a shortcut such as Ctrl+, or a
  menu walked with the keys, not a click) starts as if reached by the keyboard: its first
  focus shows the ring (it comes for ``ActiveWindowFocusReason``, which alone shows none).
- **Windows fit the screen.** A window or dialog shown is fitted to its screen
  (``ui.screen_fit``), here rather than in a filter of its own: each Python filter on the
  application is a call for every event of every widget.
"""
from __future__ import annotations

import shiboken6
from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QAbstractSlider,
    QAbstractSpinBox,
    QApplication,
    QComboBox,
    QPlainTextEdit,
    QScrollBar,
    QTextEdit,
    QWidget,
)

from ui.focus_ring import (
    FOCUS_GIVEN,
    OPENED_BY_KEYBOARD,
    TRACKED,
    FocusRing,
    control_of,
    ring_of,
    wants_ring,
)
from ui.screen_fit import fit_when_shown

_VALUE_WIDGETS = (QAbstractSpinBox, QComboBox, QAbstractSlider)
_FOCUS = frozenset({QEvent.Type.FocusIn, QEvent.Type.FocusOut})
# every kind the filter acts on: the rest (most of the ~150 events of a wheel notch) leave
# after one look-up
_WATCHED = frozenset({QEvent.Type.Wheel, QEvent.Type.Polish, QEvent.Type.KeyPress,
                      QEvent.Type.ShortcutOverride, QEvent.Type.MouseButtonPress,
                      *_FOCUS, *TRACKED})
# what the user did last: a key (a shortcut is offered as ShortcutOverride before it acts)
_KEYS = frozenset({QEvent.Type.KeyPress, QEvent.Type.ShortcutOverride})
_RINGED_WINDOWS = (Qt.WindowType.Window, Qt.WindowType.Dialog)
_NAVIGATION_KEYS = frozenset({Qt.Key.Key_Tab, Qt.Key.Key_Backtab, Qt.Key.Key_Up, Qt.Key.Key_Down,
                              Qt.Key.Key_Left, Qt.Key.Key_Right, Qt.Key.Key_PageUp,
                              Qt.Key.Key_PageDown, Qt.Key.Key_Home, Qt.Key.Key_End})


def holds_a_value(widget: QObject) -> bool:
    """A widget whose value the wheel would change (a scroll bar only scrolls)."""
    return isinstance(widget, _VALUE_WIDGETS) and not isinstance(widget, QScrollBar)


def guard(widget: QWidget) -> None:
    """What polishing ``widget`` settles: focus by Tab or a click only (the wheel passing over
    never focuses it), and Tab moving on from a multi-line field, a list or a table."""
    if holds_a_value(widget):
        if widget.focusPolicy() == Qt.FocusPolicy.WheelFocus:
            widget.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
    elif widget.property("typesTab"):
        return
    elif isinstance(widget, (QPlainTextEdit, QTextEdit)):
        widget.setTabChangesFocus(True)
    elif isinstance(widget, QAbstractItemView):
        widget.setTabKeyNavigation(False)


class InputGuard(QObject):
    """The application's event filter (see the module docstring). Most events leave after
    one look-up of their type; the tracked ones after whether a ring is shown at all."""

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.ring: FocusRing | None = None  # the ring shown now (one window has the focus)
        self.by_keyboard = False  # the user's last input was a key, not a mouse button

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt naming)
        kind = event.type()
        if kind not in _WATCHED:
            return False
        if kind in _KEYS:
            self.by_keyboard = True
        elif kind == QEvent.Type.MouseButtonPress:
            self.by_keyboard = False
            return False
        if kind == QEvent.Type.Show:  # (a window shown: it fits its screen; and the ring below)
            fit_when_shown(watched, event)
            if self.by_keyboard and isinstance(watched, QWidget) and watched.isWindow() and \
                    watched.windowType() in _RINGED_WINDOWS:
                # opened from the keyboard: its first focus shows the ring (``wants_ring``;
                # not WA_KeyboardFocusChange, which Qt resets as the window is activated)
                watched.setProperty(OPENED_BY_KEYBOARD, True)
        if kind == QEvent.Type.Wheel:
            if holds_a_value(watched) and not watched.hasFocus():
                event.ignore()  # not ours: Qt offers it to the parent (the scroll area)
                return True
        elif kind == QEvent.Type.Polish:
            if isinstance(watched, QWidget):
                guard(watched)
        elif kind in TRACKED:
            ring = self._shown()
            if ring is not None and any(watched is widget for widget in ring.chain):
                ring.moved(watched, kind)
        elif kind == QEvent.Type.KeyPress:
            if event.key() in _NAVIGATION_KEYS and watched is QApplication.focusWidget():
                self._on_navigation(watched)
        elif kind in _FOCUS and isinstance(watched, QWidget):
            if kind == QEvent.Type.FocusIn:
                self._on_focus_in(watched, event.reason())
            elif event.reason() != Qt.FocusReason.PopupFocusReason:  # a popup keeps the ring
                # (nothing here asks the widget for more: it may be half destroyed)
                ring = self._shown()
                if ring is not None:
                    ring.release()
        return False

    def _shown(self) -> FocusRing | None:
        if self.ring is not None and not shiboken6.isValid(self.ring):
            self.ring = None  # its window was closed and deleted
        return self.ring

    def _on_focus_in(self, widget: QWidget, reason: Qt.FocusReason) -> None:
        control = control_of(widget)
        ringed = wants_ring(control, reason)
        if control.property(FOCUS_GIVEN):
            control.setProperty(FOCUS_GIVEN, None)  # arrived: as any focus from now on
        window = widget.window()
        if window is not widget and window.property(OPENED_BY_KEYBOARD):
            window.setProperty(OPENED_BY_KEYBOARD, None)  # its first focus only
        if ringed:
            self._show_ring(widget)
        else:
            ring = self._shown()
            if ring is not None:
                ring.release()

    def _on_navigation(self, widget: QWidget) -> None:
        ring = self._shown()
        if ring is None or ring.target is not control_of(widget):
            self._show_ring(widget)

    def _show_ring(self, widget: QWidget) -> None:
        window = widget.window()
        if widget.isWindow() or window.windowType() not in _RINGED_WINDOWS:
            return  # a window with nothing focusable in it; a popup's list
        ring, shown = ring_of(window), self._shown()
        if shown is not None and shown is not ring:
            shown.release()
        ring.follow(control_of(widget))
        self.ring = ring


_GUARD: InputGuard | None = None


def install_input_guard(app: QApplication) -> InputGuard:
    """Install the guard on ``app`` once (later calls return the same guard); widgets that
    already exist are guarded now."""
    global _GUARD
    if _GUARD is None:
        _GUARD = InputGuard(app)
        app.installEventFilter(_GUARD)
        for widget in app.allWidgets():
            guard(widget)
    return _GUARD
