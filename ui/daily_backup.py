"""The day's backup while the window stays open: the window is often left running for days, and
the rolling backup was taken only when a process started. A timer asks every few minutes
whether today (local time) has its backup (``Backups.daily_due``: a look at the folder); when it
does not, ``Store.roll_backup`` runs on the task pool (a copy of the whole file and its check:
~1.1 s at 100k messages), never on the GUI thread."""
from __future__ import annotations

from typing import Callable

from PySide6.QtCore import QObject, QTimer, Slot

from app.domain.errors import BackupSkipped
from app.storage.store import Store
from ui.tasks import TaskRunner

CHECK_EVERY_MS = 10 * 60 * 1000  # a new day's backup comes at most this long after midnight


class DailyBackup(QObject):
    """Takes the day's rolling backup when it is due, at start and then as days change."""

    def __init__(self, store: Store, tasks: TaskRunner, on_failed: Callable[[Exception], None],
                 parent: QObject | None = None):
        super().__init__(parent)
        self.store = store
        self.tasks = tasks
        self.on_failed = on_failed
        self.running = False
        self.told_skipped = False  # a skipped backup (BackupSkipped) was said already
        self.timer = QTimer(self)
        self.timer.setInterval(CHECK_EVERY_MS)
        self.timer.timeout.connect(self.check)

    def start(self) -> None:
        """Check now (the start's backup: off the GUI thread), then every ``CHECK_EVERY_MS``."""
        self.timer.start()
        self.check()

    def stop(self) -> None:
        self.timer.stop()

    @Slot()
    def check(self) -> None:
        """Take the day's backup in the background if it is due and none is being taken."""
        if self.running or not self.store.backups.daily_due():
            return
        self.running = True

        def job():
            try:
                return self.store.roll_backup()
            finally:
                self.store.release_thread_connection()

        self.tasks.run_in_background(job, self._on_done, self._on_error)

    def _on_done(self, _made) -> None:
        self.running = False

    def _on_error(self, exc: Exception) -> None:
        """Said once (a damaged database, a folder it cannot write): not again every few
        minutes. A backup skipped for want of room is tried again at the next ticks (the user
        may free some), still said only once."""
        self.running = False
        if isinstance(exc, BackupSkipped):
            if self.told_skipped:
                return
            self.told_skipped = True
        else:
            self.timer.stop()
        self.on_failed(exc)
