"""The window's start when the database is damaged: say so, and offer the newest good backup.

``Store()`` refuses a damaged (or emptied) file before writing anything to it
(``DatabaseDamaged``). Here the user reads what was found, and either puts the newest good
backup in its place (the damaged file is kept in the backups folder) or quits, leaving
everything as it is.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from PySide6.QtWidgets import QMessageBox, QWidget

from app.domain.errors import DatabaseDamaged, OutpostError
from app.storage.backups import Backups
from app.storage.salvage import restore_and_salvage
from app.storage.store import Store


class DamagedDatabaseDialog(QMessageBox):
    """What the check found, where the damaged file stays, and the newest good backup (if any)
    with a button that restores it."""

    def __init__(self, error: DatabaseDamaged, parent: QWidget | None = None):
        super().__init__(parent)
        self.setIcon(QMessageBox.Icon.Critical)
        self.setWindowTitle("Outpost: the database is damaged")
        self.setText(f"The database {error.path} is damaged ({error.problem}).\n"
                     "Outpost left it as it is and wrote nothing to it.")
        backup = Backups(Path(error.path)).find(error.backup) if error.backup else None
        self.restore_button = None
        if backup is not None:
            self.setInformativeText(
                f"The newest good backup is {backup.describe()}. Restoring puts it in place of "
                f"the database and brings back from the damaged file what can still be read "
                f"(conversations and messages since the backup); the damaged file is kept in "
                f"{error.backups_folder}.")
            self.restore_button = self.addButton("Restore this backup",
                                                 QMessageBox.ButtonRole.AcceptRole)
        else:
            self.setInformativeText(
                "There is no good backup of it. Copy the file somewhere safe before trying to "
                "repair it (e.g. sqlite3's .recover).")
        self.quit_button = self.addButton("Quit", QMessageBox.ButtonRole.RejectRole)
        self.setDefaultButton(self.restore_button or self.quit_button)

    def wants_restore(self) -> bool:
        """Shown modally: True when the user chose to restore the backup."""
        self.exec()
        return self.restore_button is not None and self.clickedButton() is self.restore_button


def open_store_or_restore(
        wants_restore: Callable[[DatabaseDamaged], bool] | None = None,
        tell: Callable[[OutpostError], None] | None = None) -> Store | None:
    """The store, opened; when the database is damaged, the dialog above (``wants_restore``),
    and after a restore the store opened again. None when the user quits. A restore that fails
    (another Outpost has the file open, …) is told (``tell``) and the choice offered again.
    The day's backup is left to the window (``OutpostApp.start``), in the background."""
    ask = wants_restore or (lambda error: DamagedDatabaseDialog(error).wants_restore())
    tell = tell or (lambda error: QMessageBox.warning(None, "Outpost", str(error)))
    brought: list[str] = []  # what a restore brought back from the damaged file, to tell
    while True:
        try:
            store = Store(daily_backup=False)
            store.notes.extend(brought)  # shown by the window at start, as its other notes
            return store
        except DatabaseDamaged as error:
            if error.backup is None or not ask(error):
                return None
            try:
                _, _, salvaged = restore_and_salvage(Path(error.path), Path(error.backup).name)
                if salvaged is not None:
                    brought.append(salvaged.describe())
            except OutpostError as failed:
                tell(failed)
