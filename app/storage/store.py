"""The local database: conversations and messages in one SQLite file (via sqlite-utils).

``Store`` is every read and write of it, in parts that each own one thing:

* ``app.storage.connections``: one connection per thread (WAL, a busy timeout,
  ``synchronous=FULL``: the window and the CLI may write at the same time, and a committed
  message survives a crash or power loss), and write transactions;
* ``app.storage.conversation_rows``, ``app.storage.message_rows``: the two tables' rows;
* ``app.storage.message_tree``: paths, branches, versions, deleting a subtree, forks;
* ``app.storage.fulltext``: full-text search; ``app.storage.request_log``: HTTP attempts;
* here: opening the file (the start-up check, migrations, backups).

* Before pending migrations run, the file is copied to ``backups/`` with SQLite's backup API;
  the first start of each day copies it too (``app.storage.backups``: rolling, each checked).
* At start, before anything is written, the file is checked (``app.storage.integrity``): a
  damaged or emptied file is refused with ``DatabaseDamaged`` (left as it is, the newest good
  backup named), and a leftover write-ahead log no running process owns is copied aside with
  the database before SQLite applies it (``Store.notes`` says so).
* Rows left in ``streaming`` by a process that is gone are marked ``interrupted`` at start-up;
  each streaming row records its writer (pid + process start time) so a live writer's row is
  never touched.
"""
from __future__ import annotations

import errno
import sqlite3
from pathlib import Path
from typing import Sequence

from app.config import paths
from app.domain.errors import BackupSkipped, DatabaseDamaged, KnownStorageError
from app.domain.wording import byte_size
from app.storage import integrity
from app.storage.backups import DAILY, Backups, CopyDamaged
from app.storage.fulltext import FullTextSearch
from app.storage.message_rows import AT_LEAF, Activate
from app.storage.message_tree import MessageTree
from app.storage.migrations import MIGRATIONS, Migration
from app.storage.request_log import RequestLog
from app.storage.restore import damaged_message
from app.storage.rows import now_iso
from app.storage.sqlite_errors import BUSY_TIMEOUT_MS, SQLITE_BUSY, SQLITE_CORRUPT, \
    SQLITE_FULL, SQLITE_LOCKED, SQLITE_NOTADB, sqlite_primary_code, storage_errors

# Callers import these with the store (they were defined here before the split).
__all__ = ["AT_LEAF", "Activate", "Store", "now_iso"]


class Store(MessageTree, FullTextSearch, RequestLog):
    """All reads and writes of Outpost's database. Safe to share between threads.

    Its parts are base classes rather than objects it delegates to, so callers keep one
    ``store`` (``store.branch(...)``, ``store.search(...)``): each part builds on
    ``Connections`` and uses only what it or its own bases define (``MessageTree`` builds on
    both tables)."""

    def __init__(self, path: Path | None = None, migrations: Sequence[Migration] = MIGRATIONS,
                 *, daily_backup: bool = True):
        """``daily_backup``: take the day's rolling backup now (False: the caller runs
        ``roll_backup`` later, e.g. the window in the background: ~1.1 s at 100k messages)."""
        super().__init__(Path(path) if path else paths.database_path())
        self.last_backup: Path | None = None
        self.backups = Backups(self.path)
        self.daily_backup_pending = not daily_backup  # for the caller to run roll_backup
        # what the user is told at start, one sentence each (a leftover log copied aside, …)
        self.notes: list[str] = []
        try:
            with storage_errors(self.path):
                self._check_at_start()
                self._healthy = True
                self._migrate(list(migrations))
                if daily_backup:
                    self._roll_backup_or_note()
        except BaseException:
            self.close()
            raise

    def _roll_backup_or_note(self) -> None:
        """The day's backup at start; one that cannot be written (a nearly full disk) is a
        note, never a reason to refuse what the command came to do (read, search, export)."""
        try:
            self.roll_backup()
        except BackupSkipped as exc:
            self.notes.append(str(exc))

    # -- migrations --------------------------------------------------------------------------
    def applied_migrations(self) -> list[str]:
        db = self.db
        if "_migrations" not in db.table_names():
            return []
        return [row["name"] for row in db["_migrations"].rows_where(order_by="rowid")]

    def _migrate(self, migrations: list[Migration]) -> None:
        with self._tx() as tx:
            tx["_migrations"].create({"name": str, "applied_at": str}, pk="name",
                                     if_not_exists=True)
        db = self.db
        done = set(self.applied_migrations())
        pending = [m for m in migrations if m.__name__ not in done]
        if not pending:
            return
        if any(t != "_migrations" for t in db.table_names()):
            self.last_backup = self.backup(f"before-{pending[0].__name__}")
        for fn in pending:
            with self._tx() as tx:
                # Re-checked inside the write lock: the window and the CLI may start together.
                if tx["_migrations"].count_where("name = ?", [fn.__name__]):
                    continue
                fn(tx)
                tx["_migrations"].insert({"name": fn.__name__, "applied_at": now_iso()})

    def backup(self, label: str) -> Path:
        """A checked copy of the database in the backups folder (``app.storage.backups``: 0600
        in a 0700 folder, written whole or not at all). A copy that fails its check means the
        database itself is damaged: DatabaseDamaged."""
        with storage_errors(self.backups.where):
            try:
                return self.backups.write(self.db.conn, label)
            except CopyDamaged as exc:
                raise self._damaged(str(exc)) from None

    # -- the start-up check ------------------------------------------------------------------
    def _check_at_start(self) -> None:
        """Refuse a damaged or emptied file before anything is written to it, and copy a
        leftover write-ahead log aside before SQLite applies it (``app.storage.integrity``)."""
        path = self.path
        if not path.exists():
            return  # a new install
        if path.stat().st_size == 0:
            # a database Outpost made is never empty once opened; with backups of it (or a
            # seal that knew it bigger) this is a lost file, not a new one
            if integrity.sealed_size(path) or self.backups.all():
                raise self._damaged("it is empty (0 bytes)")
            self.notes.append(f"The database {path} was an empty file (0 bytes) and has no "
                              "backup, so a new database was started in it.")
            return
        if integrity.sealed(path):
            return  # only Outpost wrote to it since it was last checked
        try:
            if integrity.wal_has_frames(path):
                self._set_aside_leftover_wal()
            problem = integrity.quick_check(path, BUSY_TIMEOUT_MS / 1000)
        except sqlite3.DatabaseError as exc:
            if sqlite_primary_code(exc) not in (SQLITE_CORRUPT, SQLITE_NOTADB):
                raise
            problem = str(exc)
        if problem is not None:
            raise self._damaged(problem)

    def _set_aside_leftover_wal(self) -> None:
        """A ``-wal`` with frames that no process has open and no seal vouches for may be
        another copy's: the database, the log and its ``-shm`` are copied to the backups
        folder as they are (while no other process can open them), then SQLite applies it."""
        with integrity.held_alone(self.path) as alone:
            if not alone:
                return  # a running Outpost owns it: its log, applied as usual
            kept = self.backups.set_aside("leftover-wal")
        self.notes.append(
            f"A write-ahead log that no running Outpost owns was beside {self.path} (it may be "
            f"another copy's), so the database and the log were copied to {kept} before it "
            f"was applied; if conversations are missing, `outpost backup restore {kept.name}` "
            "brings that copy back.")

    def _damaged(self, problem: str) -> DatabaseDamaged:
        """The refusal of a damaged file, naming the newest good backup."""
        self._healthy = False  # nothing more is sealed (nor, as the caller raises, written)
        good = self.backups.newest_good()
        return DatabaseDamaged(damaged_message(self.path, problem, good, self.backups.where),
                               str(self.path), problem, str(good.path) if good else None,
                               str(self.backups.where))

    def roll_backup(self) -> Path | None:
        """The day's rolling backup, on the first start of the day that finds a conversation
        (None: not due, or nothing to keep); only the newest ``KEEP_DAILY`` are kept. Its check
        reads every page, so damage the start-up check skipped (the seal matched) is found
        here: DatabaseDamaged. A copy the disk has no room for (checked before writing), that
        its folder refuses, or that found the database busy (another process held it longer
        than the busy timeout) is BackupSkipped, and leaves nothing behind. Safe from any
        thread (each has its own connection)."""
        if not self.backups.daily_due():
            return None
        with storage_errors(self.path):
            if not self.db.execute("SELECT EXISTS (SELECT 1 FROM conversations)"
                                   ).fetchone()[0]:
                return None
            free, needed = self.backups.room_for_copy(self.db.conn)
        if free < needed:  # nothing written: a disk this full refuses it half-way
            raise self._skipped(free, needed)
        try:
            made = self.backup(DAILY)
        except DatabaseDamaged:
            raise
        except KnownStorageError as exc:  # the copy's disk or folder, or a busy database
            if _busy(exc.__cause__):  # nothing wrong where the copy goes: tried again later
                raise BackupSkipped(
                    f"Today's backup of the database was skipped: the database was busy "
                    f"({exc.__cause__}: another program was using it). Your conversations are "
                    "read and saved as usual; Outpost takes the backup at its next try (the "
                    "next command; in the window, within 10 minutes).") from exc
            with storage_errors(self.path):
                free, needed = self.backups.room_for_copy(self.db.conn)
            raise self._skipped(free, needed, exc) from exc
        self.backups.prune_daily()
        return made

    def _skipped(self, free: int, needed: int, failure: Exception | None = None
                 ) -> BackupSkipped:
        """The day's backup not taken: how much room there was and about how much it needs
        (or what else refused it), and that nothing else is affected."""
        where = self.backups.where
        cause = failure.__cause__ if failure is not None else None
        if free < needed or _disk_full(cause):
            why = (f"the disk holding {where} has {byte_size(free)} free and the copy needs "
                   f"about {byte_size(needed)}")
            fix = "free some space"
        else:
            why = f"{where} could not be written " \
                  f"({getattr(cause, 'strerror', None) or cause or failure})"
            fix = "make that folder writable"
        return BackupSkipped(f"Today's backup of the database was skipped: {why}. Your "
                             f"conversations are read and saved as usual; {fix} and Outpost "
                             "takes it at its next try (the next command; in the window, "
                             "within 10 minutes).", free, needed)

    def integrity_check(self) -> str:  # (the full check, for tests and by hand)
        with storage_errors(self.path):
            return self.db.execute("PRAGMA integrity_check").fetchone()[0]


def _busy(error: BaseException | None) -> bool:
    """Whether ``error`` is SQLite's "database is locked" (busy, or a table locked)."""
    return isinstance(error, sqlite3.Error) and \
        sqlite_primary_code(error) in (SQLITE_BUSY, SQLITE_LOCKED)


def _disk_full(error: BaseException | None) -> bool:
    """Whether ``error`` (sqlite3's or the OS's) says the disk is full."""
    if isinstance(error, sqlite3.Error):
        return sqlite_primary_code(error) == SQLITE_FULL
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)
