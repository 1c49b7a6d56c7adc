"""The status bar's speed of the last reply: time to first token and decode speed."""
from __future__ import annotations

from PySide6.QtCore import Slot
from PySide6.QtGui import QPainter
from PySide6.QtWidgets import QWidget

from ui.elided_label import ElidedLabel
from ui.message_text import duration_text

SEPARATOR = " · "
MORE = " …"  # after the figures shown, when the others did not fit


class ReplyMetrics(ElidedLabel):
    """The last reply's TTFT and decode speed in the status bar. When the window is narrow
    it leaves out whole figures, the last first, and ends in "…" (cut inside a figure it read
    "TTFT 2,…"); the tooltip has them all."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__("", parent)
        self.parts: list[str] = []

    @Slot(object)
    def show_reply(self, message) -> None:
        """``message``: the stored assistant ``app.domain.messages.Message``, or None (nothing
        shown)."""
        if message is None:
            return
        parts = []
        if message.ttft_ms is not None:
            parts.append(f"TTFT {duration_text(message.ttft_ms)}")
        if message.tokens_per_s is not None:
            parts.append(f"{message.tokens_per_s:.1f} tok/s")
        text = SEPARATOR.join(parts)
        self.setText(text)
        self.setToolTip(f"{text} — the last reply's time to first token and decode speed"
                        if text else "")

    def shown_text(self) -> str:
        """What fits the label's width: every figure, or the first ones and "…", or "…"."""
        width = self.contentsRect().width()
        metrics = self.fontMetrics()
        for count in range(len(self.parts), 0, -1):
            text = SEPARATOR.join(self.parts[:count]) + (MORE if count < len(self.parts)
                                                         else "")
            if metrics.horizontalAdvance(text) <= width:
                return text
        return MORE.strip() if self.parts else ""

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        painter = QPainter(self)
        painter.drawText(self.contentsRect(), int(self.alignment()), self.shown_text())

    def setText(self, text: str) -> None:  # noqa: N802 (Qt naming)
        self.parts = text.split(SEPARATOR) if text else []  # the figures, left out whole
        super().setText(text)
