"""Notices conversations written by another process (``outpost ask`` in a terminal, a second
window) so the sidebar shows them without a restart.

Every ``TICK_MS`` it asks SQLite for a cheap fingerprint of the profile's conversations (how
many, the newest update); when it changed, ``changed`` fires. One indexed query a few times a
minute; nothing is read when nothing changed.
"""
from __future__ import annotations

import sqlite3
from typing import Callable

from PySide6.QtCore import QObject, QTimer, Signal

from app.storage.store import Store

TICK_MS = 3000


class ConversationWatch(QObject):
    changed = Signal()

    def __init__(self, store: Store, profile: Callable[[], str | None], parent=None,
                 tick_ms: int = TICK_MS):
        super().__init__(parent)
        self.store, self.profile = store, profile
        self.last: tuple = ()
        self.last = self.fingerprint()
        self.timer = QTimer(self)
        self.timer.setInterval(tick_ms)
        self.timer.timeout.connect(self.check)

    def fingerprint(self) -> tuple:
        profile = self.profile()
        where, args = ("WHERE profile = ?", [profile]) if profile is not None else ("", [])
        try:
            return tuple(self.store.db.execute(
                f"SELECT count(*), max(updated_at) FROM conversations {where}",
                args).fetchone())
        except sqlite3.Error:  # busy or damaged: try again at the next tick
            return self.last

    def check(self) -> bool:
        now = self.fingerprint()
        if now != self.last:
            self.last = now
            self.changed.emit()
            return True
        return False

    def seen(self) -> None:
        """The window changed the conversations itself: not news."""
        self.last = self.fingerprint()
