"""The status bar's speed of the last reply: time to first token and decode speed."""
from __future__ import annotations

from PySide6.QtCore import Slot
from PySide6.QtWidgets import QWidget

from ui.elided_label import ElidedLabel


class ReplyMetrics(ElidedLabel):
    """The last reply's TTFT and decode speed in the status bar (ends in "…" when the window
    is narrow; the tooltip has it whole)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__("", parent)

    @Slot(object)
    def show_reply(self, message) -> None:
        """``message``: the stored assistant ``app.domain.messages.Message``, or None (nothing
        shown)."""
        if message is None:
            return
        parts = []
        if message.ttft_ms is not None:
            parts.append(f"TTFT {message.ttft_ms:,.0f} ms")
        if message.tokens_per_s is not None:
            parts.append(f"{message.tokens_per_s:.1f} tok/s")
        text = " · ".join(parts) if parts else ""
        self.setText(text)
        self.setToolTip(f"{text} — the last reply's time to first token and decode speed"
                        if text else "")
