"""Small helpers shared by several test modules (fixtures live in conftest.py)."""
from __future__ import annotations


class Clock:
    """A virtual monotonic clock: tests move ``now`` by hand."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def send(qtbot, app, text: str) -> None:
    """Type ``text`` into the window's composer, press Enter, wait until the reply is done."""
    from PySide6.QtCore import Qt

    edit = app.window.composer.edit
    qtbot.keyClicks(edit, text)
    qtbot.keyClick(edit, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: app.window.controller.state == "idle", timeout=60000)
