"""The status bar's passing notes ("Copied to the clipboard.", what an export wrote, which
settings took effect) in a label of their own that clears itself.

``QStatusBar.showMessage`` hides every normal widget of the bar while its message shows: the
route badge, the model and its state vanished for ten seconds after an export, even while a
reply streamed. A note here sits beside them instead, ending in "…" when the bar is short of
room (the whole text in its tooltip), and never widens the window."""
from __future__ import annotations

from PySide6.QtCore import QTimer, Slot

from ui.elided_label import ElidedLabel


class StatusNote(ElidedLabel):
    """A note shown for a while, then gone (hidden while it has none)."""

    def __init__(self, parent=None):
        super().__init__("", parent)
        self.setMinimumWidth(0)  # (a note never makes the window wider)
        self.setAccessibleName("Status note")
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.timeout.connect(self.clear_note)
        self.hide()

    def show_note(self, text: str, ms: int) -> None:
        """Show ``text`` for ``ms`` milliseconds (a new note replaces the one shown)."""
        self.setText(text)
        self.show()
        self.timer.start(ms)

    @Slot()
    def clear_note(self) -> None:
        self.timer.stop()
        self.setText("")
        self.hide()
