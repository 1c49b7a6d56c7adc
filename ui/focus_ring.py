"""The focus ring: a 2 px rounded outline in the theme's focus colour around the control that has
the keyboard focus, drawn over the window so every control gets the same ring under any style.

Why an overlay and not a style sheet or a proxy style: an application style sheet
(``*:focus { border: … }``) switches every widget to Qt's style-sheet style, which draws a
bordered push button or combo box from the sheet's box model instead of Fusion's bevel, changes
their sizes, and merges with the many widget sheets the theme sets (``ui.theme.restyle``). A
proxy style only reaches the controls whose style asks for ``PE_FrameFocusRect`` (Fusion draws
a line edit's or a spin box's focus as a faint tint of its own frame), and ``ui.theme`` sets the
style by name, which would drop the proxy. The overlay leaves every widget's own drawing alone.

One ring per top-level window, a child of it that never takes the mouse or the focus. It follows
the control (not a part inside it that holds the focus for it) as it moves, resizes or
scrolls, is clipped to what its scroll area shows, and hides when the control does. Like a web
page's ``:focus-visible``, it shows for the keyboard (Tab, a shortcut, the program moving the
focus) and for fields you type into; a button or a list clicked with the mouse gets none until
a navigation key is pressed in it. ``ui.input_guard`` (the application's event filter) moves it.
"""
from __future__ import annotations

from PySide6.QtCore import QEvent, QPoint, QRect, QRectF, Qt
from PySide6.QtGui import QColor, QPainter, QPen
from PySide6.QtWidgets import (
    QAbstractScrollArea,
    QAbstractSpinBox,
    QComboBox,
    QLineEdit,
    QPlainTextEdit,
    QTextEdit,
    QWidget,
)

from ui import theme

WIDTH = 2  # px, the ring's line
GAP = 1  # px between the control's edge and the ring
RADIUS = 4.0
_OUTSET = WIDTH + GAP
# what moves the ring when it happens to its control or an ancestor (a scrolled page moves)
TRACKED = frozenset({QEvent.Type.Move, QEvent.Type.Resize, QEvent.Type.Show, QEvent.Type.Hide,
                     QEvent.Type.ParentChange})
_KEYBOARD_REASONS = frozenset({Qt.FocusReason.TabFocusReason, Qt.FocusReason.BacktabFocusReason,
                               Qt.FocusReason.ShortcutFocusReason,
                               Qt.FocusReason.OtherFocusReason})


# set by ``give_focus`` on a widget focused while another window was active: the focus-in that
# comes with its window's activation shows the ring (cleared by that focus-in)
FOCUS_GIVEN = "focusGiven"
# set by ``ui.input_guard`` on a window shown right after a key (Ctrl+, or a menu walked with
# the keys): its first focus, which comes with its activation, shows the ring (cleared then)
OPENED_BY_KEYBOARD = "openedByKeyboard"


def control_of(widget: QWidget) -> QWidget:
    """The control the user sees for the focus widget ``widget``: the widget that hands its
    focus to ``widget`` (``setFocusProxy``: a composite field), else ``widget`` itself."""
    while not widget.isWindow():
        parent = widget.parentWidget()
        if parent is None or parent.focusProxy() is not widget:
            break
        widget = parent
    return widget


def _is_viewport(widget: QWidget) -> bool:
    parent = widget.parentWidget()
    return isinstance(parent, QAbstractScrollArea) and parent.viewport() is widget


def _typed_into(control: QWidget) -> bool:
    """A field whose focus matters even after a click: where the keys go."""
    if isinstance(control, QComboBox):
        return control.isEditable()
    if isinstance(control, (QLineEdit, QAbstractSpinBox)):
        return True
    if isinstance(control, (QPlainTextEdit, QTextEdit)):
        return not control.isReadOnly()
    return False


def wants_ring(control: QWidget, reason: Qt.FocusReason) -> bool:
    """Whether focus arriving at ``control`` for ``reason`` shows the ring."""
    if _typed_into(control) or reason in _KEYBOARD_REASONS:
        return True
    if reason == Qt.FocusReason.ActiveWindowFocusReason and (
            control.property(FOCUS_GIVEN) or control.window().property(OPENED_BY_KEYBOARD)):
        return True  # (give_focus; a window opened from the keyboard)
    # back to a window, or out of a popup: as the last move into the window was made
    return reason != Qt.FocusReason.MouseFocusReason and \
        control.window().testAttribute(Qt.WidgetAttribute.WA_KeyboardFocusChange)


def give_focus(widget: QWidget) -> None:
    """Move the focus to ``widget`` for the user, ring shown, as Tab would, also while another
    window is active (a search dialog about to close): its focus-in then comes only when its
    window is activated, for a reason (ActiveWindowFocusReason) that shows no ring by itself
    after the last click in that window."""
    if not widget.window().isActiveWindow():
        widget.setProperty(FOCUS_GIVEN, True)
    widget.setFocus(Qt.FocusReason.OtherFocusReason)


class FocusRing(QWidget):
    """The ring of one top-level window (``ring_of``). ``ui.input_guard`` moves it: ``follow``
    a control, ``release`` it, and ``moved`` when the control or one of its ancestors (the
    ``chain``) moved, resized, showed or hid."""

    def __init__(self, window: QWidget):
        super().__init__(window)
        self.setObjectName("focusRing")
        self.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self.setAttribute(Qt.WidgetAttribute.WA_NoSystemBackground)
        self.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.target: QWidget | None = None
        self.chain: list[QWidget] = []  # the target and its ancestors below the window
        self._ring = QRect()  # the ring's rectangle, in this widget's coordinates
        self.hide()

    def follow(self, control: QWidget) -> None:
        if control is not self.target:
            self.release()
            self.target = control
            widget: QWidget | None = control
            while widget is not None and widget is not self.parentWidget():
                self.chain.append(widget)
                widget = widget.parentWidget()
            control.destroyed.connect(self._on_target_destroyed)
        self._place()

    def release(self) -> None:
        if self.target is not None:
            try:
                self.target.destroyed.disconnect(self._on_target_destroyed)
            except (RuntimeError, TypeError):
                pass  # already gone
        self._on_target_destroyed()

    def moved(self, widget: QWidget, event: QEvent.Type) -> None:
        """``widget`` of the chain moved, resized, showed or hid, or has another parent."""
        if event != QEvent.Type.ParentChange:
            self._place()
            return
        target = self.target
        self.release()
        if target is not None and target.window() is self.parentWidget():
            self.follow(target)

    def _on_target_destroyed(self, *_args) -> None:
        self.chain, self.target = [], None
        self.hide()

    def _place(self) -> None:
        """Around the target, clipped to the window and to the scroll areas it is in (a plain
        container does not clip: the ring may stand a few pixels past a tight layout)."""
        target, window = self.target, self.parentWidget()
        if target is None or window is None or not target.isVisible():
            self.hide()
            return
        origin = target.mapTo(window, QPoint(0, 0))
        ring = QRect(origin, target.size()).adjusted(-_OUTSET, -_OUTSET, _OUTSET, _OUTSET)
        shown = ring.intersected(window.rect())
        ancestor = target.parentWidget()
        while ancestor is not None and ancestor is not window:
            if _is_viewport(ancestor):  # what scrolled out of it is not seen
                shown = shown.intersected(QRect(ancestor.mapTo(window, QPoint(0, 0)),
                                                ancestor.size()))
            ancestor = ancestor.parentWidget()
        if shown.isEmpty():
            self.hide()
            return
        self._ring = ring.translated(-shown.topLeft())
        self.setGeometry(shown)
        self.show()
        self.raise_()
        self.update()

    def paintEvent(self, _event) -> None:  # noqa: N802 (Qt naming)
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(QPen(QColor(theme.focus_ring()), WIDTH))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        half = WIDTH / 2
        painter.drawRoundedRect(QRectF(self._ring).adjusted(half, half, -half, -half),
                                RADIUS, RADIUS)


def ring_of(window: QWidget) -> FocusRing:
    """``window``'s ring (made the first time)."""
    ring = window.findChild(FocusRing, "focusRing", Qt.FindChildOption.FindDirectChildrenOnly)
    return ring if ring is not None else FocusRing(window)
