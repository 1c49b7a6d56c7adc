"""The parts of a message bubble that act on the conversation tree: the versions switcher
(‹ 2/3 ›), the action bar (Copy, Regenerate or Edit, Fork, Delete) and the inline editor of
"Edit and resend". Each owns its widgets and says what the user asked for through signals; the
bubble (``ui.message_bubble.MessageBubble``) adds its message id, the controller acts.

Keyboard, when a bubble has focus (Tab to it, or click beside its text):

    Ctrl+C       copy the message            R       regenerate (a reply)
    E            edit and resend (yours)     F       fork into a new conversation
    Delete       delete it and all below     Alt+Left / Alt+Right   previous / next version
    Menu, Shift+F10   every action in a menu (also on a right click)

In the editor, Ctrl+Enter sends and Escape cancels.
"""
from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QEvent, Qt, Signal, Slot
from PySide6.QtGui import QKeyEvent, QKeySequence
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.domain.messages import Role
from ui import theme


@dataclass(frozen=True)
class Versions:
    """Where a message stands among its siblings (the other answers to its parent):
    ``ids`` oldest first, ``index`` its own place."""

    ids: tuple[str, ...]
    index: int

    @property
    def previous(self) -> str | None:
        return self.ids[self.index - 1] if self.index > 0 else None

    @property
    def next(self) -> str | None:
        return self.ids[self.index + 1] if self.index + 1 < len(self.ids) else None

    @property
    def label(self) -> str:
        return f"{self.index + 1}/{len(self.ids)}"


# What the bubble's keys do (see the module docstring); the menu shows the same shortcuts.
SHORTCUTS = {
    "copy": QKeySequence("Ctrl+C"), "regenerate": QKeySequence("R"),
    "edit": QKeySequence("E"), "fork": QKeySequence("F"),
    "delete": QKeySequence(Qt.Key.Key_Delete), "previous": QKeySequence("Alt+Left"),
    "next": QKeySequence("Alt+Right"),
}


def _small_button(text: str, tooltip: str, name: str | None = None) -> QToolButton:
    """A small flat button; ``name`` is what a screen reader says when ``text`` is a symbol
    (the tooltip is read as its description)."""
    button = QToolButton()
    button.setText(text)
    button.setToolTip(tooltip)
    button.setAccessibleName(name or text)
    button.setAutoRaise(True)
    button.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
    button.setCursor(Qt.CursorShape.PointingHandCursor)
    button.setObjectName("bubbleAction")  # styled as Details is, by the bubble's sheet
    return button


class VersionSwitcher(QWidget):
    """‹ 2/3 ›: the message's place among its versions; hidden when it has none."""

    version_requested = Signal(str)  # the sibling to make active

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.versions: Versions | None = None
        self.previous_button = _small_button("‹", "Previous version (Alt+Left)",
                                             "Previous version")
        self.next_button = _small_button("›", "Next version (Alt+Right)", "Next version")
        self.label = QLabel()
        theme.restyle(self.label, lambda: f"color:{theme.bubble_action()}; "
                                          f"font-size:{theme.ACTION_FONT_PX}px;")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.previous_button)
        layout.addWidget(self.label)
        layout.addWidget(self.next_button)
        self.previous_button.clicked.connect(self.go_previous)
        self.next_button.clicked.connect(self.go_next)
        self.hide()

    def show_versions(self, versions: Versions | None) -> None:
        self.versions = versions
        if versions is None or len(versions.ids) < 2:
            self.hide()
            return
        self.label.setText(versions.label)
        self.label.setAccessibleName(f"Version {versions.index + 1} of {len(versions.ids)}")
        self.previous_button.setEnabled(versions.previous is not None)
        self.next_button.setEnabled(versions.next is not None)
        self.show()

    @Slot()
    def go_previous(self) -> None:
        if self.versions is not None and self.versions.previous is not None:
            self.version_requested.emit(self.versions.previous)

    @Slot()
    def go_next(self) -> None:
        if self.versions is not None and self.versions.next is not None:
            self.version_requested.emit(self.versions.next)


class MessageActionBar(QWidget):
    """Copy · Regenerate (a reply) or Edit (yours) · Fork · Delete. Shown while the bubble is
    hovered or has focus; it keeps its room when hidden, so showing it never moves the text.
    It never makes the bubble wider than the chat: given less room than it asks for (a narrow
    chat column, a reply with versions), it shows the buttons that fit, in that order; the
    rest are in the bubble's menu (right click, the Menu key), as every action is."""

    copy_requested = Signal()
    regenerate_requested = Signal()
    edit_requested = Signal()
    fork_requested = Signal()
    delete_requested = Signal()

    def __init__(self, role: Role, parent: QWidget | None = None):
        super().__init__(parent)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        def button(label: str, tip: str, signal) -> QToolButton:
            made = _small_button(label, tip)
            made.clicked.connect(signal)
            layout.addWidget(made)
            return made

        self.copy_button = button("Copy", "Copy the message (Ctrl+C)", self.copy_requested)
        self.regenerate_button = self.edit_button = None
        if role is Role.ASSISTANT:
            self.regenerate_button = button(
                "Regenerate", "Answer again with the model and settings chosen now; this "
                              "answer stays as another version (R)", self.regenerate_requested)
        elif role is Role.USER:
            self.edit_button = button(
                "Edit", "Edit and send again; the old message and its replies stay as another "
                        "version (E)", self.edit_requested)
        self.fork_button = button("Fork", "A new conversation with the messages up to this one "
                                          "(F)", self.fork_requested)
        self.delete_button = button("Delete", "Delete this message and everything below it "
                                              "(Delete)", self.delete_requested)
        self.buttons = [b for b in (self.copy_button, self.regenerate_button,
                                    self.edit_button, self.fork_button, self.delete_button)
                        if b is not None]
        policy = self.sizePolicy()
        policy.setRetainSizeWhenHidden(True)
        # its width is what the role line has left (sizeHint: all of it when there is room)
        policy.setHorizontalPolicy(QSizePolicy.Policy.Preferred)  # down to no width at all
        self.setSizePolicy(policy)
        self.hide()

    def sizeHint(self):  # noqa: N802 (Qt naming)
        """Room for every button, shown or not (so that a wider chat shows them again)."""
        hint = super().sizeHint()
        hint.setWidth(sum(b.sizeHint().width() for b in self.buttons))
        return hint

    def minimumSizeHint(self):  # noqa: N802 (Qt naming)
        hint = super().minimumSizeHint()
        hint.setWidth(0)
        return hint

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        super().resizeEvent(event)
        room = event.size().width()
        for button in self.buttons:  # in order, while they fit
            room -= button.sizeHint().width()
            button.setVisible(room >= 0)


class _EditBox(QPlainTextEdit):
    """The editor's text: Ctrl+Enter sends, Escape cancels (before the window's Escape, which
    stops a streaming reply)."""

    send_pressed = Signal()
    cancel_pressed = Signal()

    def event(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.ShortcutOverride and \
                isinstance(event, QKeyEvent) and event.key() == Qt.Key.Key_Escape:
            event.accept()
            return True
        return super().event(event)

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 (Qt naming)
        if event.key() == Qt.Key.Key_Escape:
            self.cancel_pressed.emit()
            return
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and \
                event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            self.send_pressed.emit()
            return
        super().keyPressEvent(event)


class MessageEditor(QWidget):
    """Edit and resend, inside the bubble: the text, then Send (Ctrl+Enter) and Cancel (Esc)."""

    submitted = Signal(str)
    cancelled = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.edit = _EditBox()
        self.edit.setAccessibleName("Edited message")
        self.edit.setAccessibleDescription("Ctrl+Enter sends it, Escape cancels.")
        self.edit.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.edit.setFixedHeight(96)
        self.send_button = QPushButton("Send")
        self.send_button.setToolTip("Send the edited message (Ctrl+Enter); the old one stays "
                                    "as another version")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Keep the message as it is (Escape)")
        buttons = QHBoxLayout()
        buttons.setContentsMargins(0, 0, 0, 0)
        buttons.addStretch(1)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.send_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.edit)
        layout.addLayout(buttons)
        self.send_button.clicked.connect(self.submit)
        self.edit.send_pressed.connect(self.submit)
        self.cancel_button.clicked.connect(self.cancelled)
        self.edit.cancel_pressed.connect(self.cancelled)
        self.hide()

    def start(self, text: str) -> None:
        self.edit.setPlainText(text)
        self.show()
        self.edit.setFocus()
        self.edit.selectAll()

    @Slot()
    def submit(self) -> None:
        self.submitted.emit(self.edit.toPlainText())
