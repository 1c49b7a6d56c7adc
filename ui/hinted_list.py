"""A list that says what to do while it is empty.

An empty list is a blank box: the chat list on the first start, the providers before one is
added, Find in this chat before a word is typed. ``HintedList`` draws a short sentence in its
place ("No chats yet: …"), in the muted text colour, wrapped to the list's width, as the outbox
says "The outbox is empty."; the sentence is also the list's accessible description while it
is empty, so a screen reader says it too.
"""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QPainter, QPaintEvent
from PySide6.QtWidgets import QListWidget, QWidget

from ui import theme

_MARGIN = 12  # px around the sentence, inside the list


class HintedList(QListWidget):
    """A ``QListWidget`` showing ``hint`` while it has no items."""

    def __init__(self, hint: str = "", parent: QWidget | None = None):
        super().__init__(parent)
        self._hint = ""
        self._description = ""  # the accessible description given while not empty
        self.set_hint(hint)
        model = self.model()
        model.rowsInserted.connect(self._describe)
        model.rowsRemoved.connect(self._describe)
        model.modelReset.connect(self._describe)

    def hint(self) -> str:
        return self._hint

    def set_hint(self, text: str) -> None:
        self._hint = text
        self._describe()
        self.viewport().update()

    def shown_hint(self) -> str:
        """What the list shows in place of items now: the hint while it is empty, or ""."""
        return self._hint if self.count() == 0 else ""

    def setAccessibleDescription(self, description: str) -> None:  # noqa: N802 (Qt naming)
        self._description = description
        self._describe()

    def _describe(self, *_args) -> None:
        shown = self.shown_hint()
        super().setAccessibleDescription(" ".join(filter(None, (shown, self._description))))

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 (Qt naming)
        super().paintEvent(event)
        hint = self.shown_hint()
        if not hint:
            return
        painter = QPainter(self.viewport())
        painter.setPen(QColor(theme.muted_text()))
        area = self.viewport().rect().adjusted(_MARGIN, _MARGIN, -_MARGIN, -_MARGIN)
        painter.drawText(area, Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop
                         | Qt.TextFlag.TextWordWrap, hint)
        painter.end()
