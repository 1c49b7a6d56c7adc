"""Deleting from the backups too, when the user asked in the delete's question: off the GUI
thread (each backup that holds it is copied, changed and checked: seconds for a large database;
``app.storage.backup_erasure``), then said in the banner."""
from __future__ import annotations

from typing import Sequence

from app.domain.errors import KnownStorageError, OutpostError
from app.storage.backup_erasure import BackupErasure, erase_from_backups
from app.storage.store import Store
from ui.errors import ErrorPresenter
from ui.tasks import TaskRunner


class BackupEraser:
    """Deletes conversations or messages the database no longer has from its backups."""

    def __init__(self, store: Store, tasks: TaskRunner, errors: ErrorPresenter):
        self.store = store
        self.tasks = tasks
        self.errors = errors

    def erase(self, conversations: Sequence[str] = (), messages: Sequence[str] = ()) -> None:
        path = self.store.path
        what = "the conversation" if conversations else \
            "the message" if len(messages) == 1 else "the messages"

        def done(result: BackupErasure) -> None:
            text = result.describe(what)
            if result.left:
                self.errors.present(KnownStorageError(text))
            else:
                self.errors.inform(text)

        self.tasks.run_in_background(
            lambda: erase_from_backups(path, list(conversations), list(messages)), done,
            self._on_failed)

    def _on_failed(self, exc: Exception) -> None:
        if not isinstance(exc, OutpostError):
            raise exc  # a bug: the excepthook's dialog
        self.errors.present(exc)
