"""Putting a backup in place of the database (``outpost backup restore`` and the window's
damaged-database dialog), and the sentence that refuses a damaged file."""
from __future__ import annotations

import sqlite3
from pathlib import Path

from app.config import paths
from app.domain.errors import KnownStorageError, UsageError
from app.storage import integrity
from app.storage.backups import Backup, Backups, copy_private, quick_check_file
from app.storage.sqlite_errors import SQLITE_CORRUPT, SQLITE_NOTADB, sqlite_primary_code, \
    storage_errors


def damaged_message(path: Path, problem: str, good: Backup | None, folder: Path) -> str:
    """The one sentence that refuses a damaged database."""
    head = f"The database {path} is damaged ({problem}); it was left as it is and nothing " \
           "was written to it"
    if good is None:
        return (f"{head}, and there is no good backup of it: `outpost backup start-over` keeps "
                f"it in {folder} and starts a new database with what it still holds.")
    return (f"{head}; `outpost backup restore` puts the newest good backup ({good.describe()}) "
            f"in its place, brings back what the damaged file still holds since then, and "
            f"keeps the damaged file in {folder}.")


def restore_backup(db_path: Path | None = None, name: str | None = None
                   ) -> tuple[Backup, Path | None]:
    """Put a backup (by file name; default: the newest good one) in place of the database.
    The file it replaces is kept, with its ``-wal`` and ``-shm``, in the backups folder
    (``…-replaced.db``). Refused while another process has the database open. Returns the
    backup and the kept copy (None: there was no database)."""
    db_path = Path(db_path) if db_path else paths.database_path()
    backups = Backups(db_path)
    backup = choose_backup(db_path, name)
    kept: Path | None = None
    with storage_errors(db_path):
        if db_path.exists():
            kept = _set_aside_replaced(db_path, backups)
        for suffix in ("-wal", "-shm"):  # the replaced file's: never applied to the backup
            db_path.with_name(db_path.name + suffix).unlink(missing_ok=True)
        integrity.forget_seal(db_path)
        copy_private(backup.path, db_path)
    backups.tidy()  # (logs with nothing in them that earlier restores left)
    return backup, kept


def choose_backup(db_path: Path, name: str | None = None) -> Backup:
    """The backup ``restore_backup`` puts in place: ``name``'s (it must pass its check), or the
    newest good one."""
    backups = Backups(db_path)
    if name:
        backup = backups.find(name)
        if backup is None:
            raise UsageError(f"There is no backup {name!r} in {backups.where}; `outpost backup "
                             "list` lists them.")
        problem = quick_check_file(backup.path)
        if problem is not None:
            raise UsageError(f"The backup {backup.path.name} is damaged too ({problem}); "
                             "choose another from `outpost backup list`.")
        return backup
    found = backups.newest_good()
    if found is None:
        raise KnownStorageError(f"There is no good backup of {db_path} in {backups.where}.")
    return found


# what a rollback sets aside, per table: rows the backup lacks, or has older (as a salvage of
# the replaced file brings them back: app.storage.salvage)
_SINCE = {
    "conversations": "SELECT count(*) FROM main.conversations AS r WHERE NOT EXISTS (SELECT 1 "
                     "FROM b.conversations AS o WHERE o.id = r.id AND o.updated_at >= "
                     "r.updated_at)",
    "messages": "SELECT count(*) FROM main.messages AS r WHERE NOT EXISTS (SELECT 1 FROM "
                "b.messages AS o WHERE o.id = r.id AND o.updated_at >= r.updated_at)",
    "profiles": "SELECT count(*) FROM main.profiles AS r WHERE NOT EXISTS (SELECT 1 FROM "
                "b.profiles AS o WHERE o.name = r.name)",
}


def written_since(db_path: Path, backup: Backup) -> dict[str, int] | None:
    """What restoring ``backup`` over the healthy database ``db_path`` sets aside (a
    rollback): per table (conversations, messages, profiles), the rows written since (new,
    or changed: ``updated_at`` newer). Both are only read (the database with its write-ahead
    log, as the window would read it). None when they cannot be compared (a backup from
    before a column was added, a database that cannot be read)."""
    try:
        conn = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        conn.execute("ATTACH DATABASE ? AS b",
                     (f"{backup.path.resolve().as_uri()}?mode=ro&immutable=1",))
        return {table: conn.execute(query).fetchone()[0] for table, query in _SINCE.items()}
    except sqlite3.Error:
        return None
    finally:
        conn.close()


def set_aside_damaged(db_path: Path | None = None) -> Path:
    """Move a damaged database (with its ``-wal`` and ``-shm``) into the backups folder
    (``…-damaged.db``), leaving no database: the next ``Store`` starts a new one. Refused
    while another process has it open. Returns where it is kept."""
    db_path = Path(db_path) if db_path else paths.database_path()
    if not db_path.exists():
        raise UsageError(f"There is no database at {db_path}.")
    with storage_errors(db_path):
        kept = _set_aside_replaced(db_path, Backups(db_path), "damaged")
        for suffix in ("-wal", "-shm"):  # copied beside the kept file; not for a new one
            db_path.with_name(db_path.name + suffix).unlink(missing_ok=True)
        db_path.unlink()
        integrity.forget_seal(db_path)
    return kept


def _set_aside_replaced(db_path: Path, backups: Backups, label: str = "replaced") -> Path:
    try:
        with integrity.held_alone(db_path) as alone:
            if not alone:
                raise KnownStorageError(f"The database {db_path} is open in another Outpost "
                                        "(the window or a command); close it, then restore.")
            return backups.set_aside(label)
    except sqlite3.DatabaseError as exc:
        if sqlite_primary_code(exc) not in (SQLITE_CORRUPT, SQLITE_NOTADB):
            raise
        return backups.set_aside(label)  # not even a database: copied as it is
