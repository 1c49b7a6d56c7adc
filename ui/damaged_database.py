"""The window's start when the database is damaged: say so, and offer the newest good backup;
and when it cannot start at all (``CannotStartDialog``: a home it cannot write).

``Store()`` refuses a damaged (or emptied) file before writing anything to it
(``DatabaseDamaged``). Here the user reads what was found, and either puts the newest good
backup in its place, or, with no good backup, starts a new database (either way the damaged
file is kept in the backups folder, and what it still holds is brought back), or quits,
leaving everything as it is. Field staff must be able to start and answer.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from PySide6.QtWidgets import QMessageBox, QWidget

from app.domain.errors import DatabaseDamaged, OutpostError
from app.storage.backups import Backups
from app.storage.salvage import restore_and_salvage, start_over_and_salvage
from app.storage.store import Store
from ui.errors import window_words


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
                f"There is no good backup of it. Outpost can start with a new database and "
                f"bring into it the conversations and messages the damaged file still holds; "
                f"the damaged file is kept in {error.backups_folder}.")
            self.restore_button = self.addButton("Start a new database",
                                                 QMessageBox.ButtonRole.AcceptRole)
        self.quit_button = self.addButton("Quit", QMessageBox.ButtonRole.RejectRole)
        self.setDefaultButton(self.restore_button)

    def wants_restore(self) -> bool:
        """Shown modally: True when the user chose what it offers (restore the backup, or
        with none, start a new database)."""
        self.exec()
        return self.restore_button is not None and self.clickedButton() is self.restore_button


class CannotStartDialog(QMessageBox):
    """Why the window cannot start (a home it cannot write: read-only, not yours, full; a
    folder it cannot make), in the error's own words, which name the folder and the problem.
    Started from the applications menu, there is no terminal to read stderr: without it the
    window just never came."""

    def __init__(self, error: OutpostError, parent: QWidget | None = None):
        super().__init__(parent)
        self.setIcon(QMessageBox.Icon.Critical)
        self.setWindowTitle("Outpost cannot start")
        self.setText(window_words(str(error)))
        self.setInformativeText("Outpost closes now and changed nothing; start it again once "
                                "this is put right.")
        self.setStandardButtons(QMessageBox.StandardButton.Close)


def open_store_or_restore(
        wants_restore: Callable[[DatabaseDamaged], bool] | None = None,
        tell: Callable[[OutpostError], None] | None = None) -> Store | None:
    """The store, opened; when the database is damaged, the dialog above (``wants_restore``),
    and after a restore the store opened again. None when the user quits. A restore that fails
    (another Outpost has the file open, …) is told (``tell``) and the choice offered again.
    The day's backup is left to the window (``OutpostApp.start``), in the background."""
    ask = wants_restore or (lambda error: DamagedDatabaseDialog(error).wants_restore())
    tell = tell or (lambda error: QMessageBox.warning(None, "Outpost", window_words(str(error))))
    brought: list[str] = []  # what a restore brought back from the damaged file, to tell
    while True:
        try:
            store = Store(daily_backup=False)
            store.notes.extend(brought)  # shown by the window at start, as its other notes
            return store
        except DatabaseDamaged as error:
            if not ask(error):
                return None
            try:
                if error.backup is None:
                    kept, salvaged = start_over_and_salvage(Path(error.path))
                    brought.append(f"The damaged database is kept as {kept}; this is a new "
                                   f"one. " + salvaged.describe(kept.name, None))
                    continue
                _, _, salvaged = restore_and_salvage(Path(error.path), Path(error.backup).name)
                if salvaged is not None:
                    brought.append(salvaged.describe())
            except OutpostError as failed:
                tell(failed)
