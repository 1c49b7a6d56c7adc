"""Deleting from the backups too: the same delete, as erasing, applied to every kept copy.

The backups (``app.storage.backups``) are whole SQLite copies of the database: a deleted
conversation is in the daily ones for up to 7 days, and in a copy kept before a migration or a
restore until that copy is deleted. When the user asks, ``erase_from_backups`` deletes it from
each copy that holds it, as the database's own delete does (``app.storage.erasure``: freed
space zeroed, the search index merged):

* a copy is never changed in place: it is copied (with its write-ahead log, when it has one)
  under a name no listing takes, changed there, checked (``PRAGMA quick_check``), flushed and
  renamed over the old one, so a backup with its final name is always whole and good;
* a copy kept with a log beside it (a restore's ``…-replaced.db``, a ``…-leftover-wal.db``)
  becomes one file with that log applied, as any open of it would apply it;
* a copy that cannot be read or changed (damaged) is left as it is and named, for the user to
  delete by hand.

A message is deleted with everything below it in the copy (a copy can hold replies the database
no longer has); a conversation with its messages and outbox items.
"""
from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from app.domain.wording import counted
from app.storage.backups import Backup, Backups, copy_private, first_complaint, fsync_file
from app.storage.erasure import SEARCH_INDEX, blank_outbox_requests
from app.storage.integrity import wal_has_frames

_WORKING = ".erasing"  # the copy being changed: ``<name>.erasing`` (no listing takes it)
_CORRUPT, _NOTADB = 11, 26


@dataclass
class BackupErasure:
    """What ``erase_from_backups`` did."""

    changed: list[Path] = field(default_factory=list)  # the copies it was deleted from
    left: list[tuple[Path, str]] = field(default_factory=list)  # could not be: (copy, why)

    def describe(self, what: str = "it") -> str:
        """One sentence for the user."""
        if not self.changed and not self.left:
            return f"No backup held {what}."
        text = f"Deleted {what} from {counted(len(self.changed), 'backup')}" \
            if self.changed else f"Deleted {what} from no backup"
        if self.left:
            named = "; ".join(f"{path.name} ({why})" for path, why in self.left)
            text += (f"; {counted(len(self.left), 'backup')} could not be changed and may "
                     f"still hold {what}: {named}. Delete "
                     f"{'it' if len(self.left) == 1 else 'them'} by hand from "
                     f"{self.left[0][0].parent} if you do not need "
                     f"{'it' if len(self.left) == 1 else 'them'}")
        return text + "."


def backups_hold(what: str) -> str:
    """What a delete's question (the window's, the CLI's note) says of the backups."""
    return (f"Outpost's backups still hold {what}: a daily backup for up to 7 days, a copy kept "
            "before an update or a restore until you delete it.")


def held_in_backups(db_path: Path, conversations: Sequence[str] = (),
                    messages: Sequence[str] = ()) -> bool:
    """Whether a backup of the database at ``db_path`` may hold any of them: the delete's
    question says the backups hold it only then (a trial found it said so of a conversation
    begun after the last backup). Each copy is read, never changed, a row looked up by its
    id; a copy kept with its write-ahead log (the rows may be in the log) or that cannot be
    read counts as holding them: the question errs towards saying so."""
    if not conversations and not messages:
        return False
    for backup in Backups(db_path).all():
        try:
            if wal_has_frames(backup.path) or _holds(backup.path, list(conversations),
                                                     list(messages)):
                return True
        except (sqlite3.Error, OSError):
            return True
    return False


def erase_from_backups(db_path: Path, conversations: Sequence[str] = (),
                       messages: Sequence[str] = ()) -> BackupErasure:
    """Delete ``conversations`` (ids) and ``messages`` (ids, each with what is below it) from
    every backup of the database at ``db_path`` that holds any of them."""
    backups = Backups(db_path)
    result = BackupErasure()
    if not conversations and not messages:
        return result
    with _one_at_a_time(backups.where):
        _remove_stale_work(backups.where)
        for backup in backups.all():
            try:
                if _erase_from(backup, list(conversations), list(messages)):
                    result.changed.append(backup.path)
                    backups.remember_check(backup.path, None)  # checked before put back
            except (sqlite3.Error, OSError, _Damaged) as exc:
                result.left.append((backup.path, _why(exc)))
    return result


_IN_THIS_PROCESS = threading.Lock()


@contextlib.contextmanager
def _one_at_a_time(folder: Path) -> Iterator[None]:
    """One erasing of the backups at a time: two (two deletes a moment apart on the window's
    pool, or the window's and the CLI's) worked on the same ``.erasing`` copy and each removed
    the other's, so both failed and the words stayed (found by a review). A thread lock, and a
    lock file held with ``flock`` where there is one (POSIX), for other processes."""
    with _IN_THIS_PROCESS:
        try:
            import fcntl  # deferred: POSIX only (Windows has none)
        except ImportError:  # (Windows: other processes are not kept out)
            yield
            return
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / ".eraser.lock"
        # 0600 like every file Outpost writes (one an older version made 0644 is tightened)
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "a") \
                as lock:
            os.chmod(path, 0o600)
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


class _Damaged(Exception):
    """The changed copy failed its check (it is not put in place)."""


def _why(exc: Exception) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    text = " ".join(str(exc).split())
    return f"damaged: {text}" if code in (_CORRUPT, _NOTADB) or isinstance(exc, _Damaged) \
        else text


def _erase_from(backup: Backup, conversations: list[str], messages: list[str]) -> bool:
    """Delete them from ``backup`` (as described in the module's docstring); whether it held
    any."""
    logged = wal_has_frames(backup.path)
    if not logged and not _holds(backup.path, conversations, messages):
        return False  # (read as the file is: a copy with a log is read with it, below)
    work = backup.path.with_name(backup.path.name + _WORKING)
    try:
        copy_private(backup.path, work)
        if logged:
            copy_private(_beside(backup.path, "-wal"), _beside(work, "-wal"))
        conn = sqlite3.connect(str(work), isolation_level=None)
        try:
            conn.execute("PRAGMA secure_delete = ON")
            if logged and not _held(conn, conversations, messages):
                return False
            conn.execute("BEGIN IMMEDIATE")
            _delete(conn, conversations, messages)
            conn.execute("COMMIT")
            # one file: the log applied and removed (its old pages go with it)
            conn.execute("PRAGMA journal_mode = DELETE").fetchone()
            problem = first_complaint([r[0] for r in conn.execute("PRAGMA quick_check")])
        finally:
            conn.close()
        if problem is not None:
            raise _Damaged(problem)
        fsync_file(work)
        os.replace(work, backup.path)
        for suffix in ("-wal", "-shm"):  # the old log: its pages held the deleted words
            _beside(backup.path, suffix).unlink(missing_ok=True)
        return True
    finally:
        for suffix in ("", "-wal", "-shm", "-journal"):
            _beside(work, suffix).unlink(missing_ok=True)


def _holds(path: Path, conversations: list[str], messages: list[str]) -> bool:
    """Whether the copy at ``path`` holds any of them (read-only; nothing beside it made)."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True)
    try:
        return _held(conn, conversations, messages)
    finally:
        conn.close()


def _held(conn: sqlite3.Connection, conversations: list[str], messages: list[str]) -> bool:
    """Whether the copy holds any of them: their rows, or (a copy taken after the delete,
    before the database's index was merged) their tombstones, whose words its search index
    may still hold (found by a review: "No backup held it", and the words were there)."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    both = list(conversations) + list(messages)
    if "deletions" in tables:
        for start in range(0, len(both), 500):
            chunk = both[start:start + 500]
            if conn.execute(f"SELECT 1 FROM deletions WHERE kind != 'rewritten' AND id IN "
                            f"({', '.join('?' * len(chunk))}) LIMIT 1", chunk).fetchone():
                return True
    for table, ids in (("conversations", conversations), ("messages", messages)):
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            marks = ", ".join("?" * len(chunk))
            if chunk and conn.execute(f"SELECT 1 FROM {table} WHERE id IN ({marks}) LIMIT 1",
                                      chunk).fetchone():
                return True
    return False


def _delete(conn: sqlite3.Connection, conversations: list[str], messages: list[str]) -> None:
    """The delete itself, inside the caller's transaction; then the search index merged."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    conn.execute("CREATE TEMP TABLE doomed (id TEXT PRIMARY KEY)")
    conn.executemany("INSERT OR IGNORE INTO doomed VALUES (?)", [(m,) for m in messages])
    conn.executemany("INSERT OR IGNORE INTO doomed SELECT id FROM messages "
                     "WHERE conversation_id = ?", [(c,) for c in conversations])
    # with what is below them in this copy
    ids = [r[0] for r in conn.execute(
        "WITH RECURSIVE below(id) AS (SELECT id FROM doomed UNION SELECT m.id FROM messages m "
        "JOIN below b ON m.parent_id = b.id) SELECT id FROM below")]
    conn.executemany("INSERT OR IGNORE INTO doomed VALUES (?)", [(i,) for i in ids])
    if "outbox" in tables:
        for start in range(0, len(ids), 500):
            blank_outbox_requests(conn, ids[start:start + 500])
        conn.executemany("DELETE FROM outbox WHERE conversation_id = ?",
                         [(c,) for c in conversations])
    if "active_leaf_id" in {r[1] for r in conn.execute("PRAGMA table_info(conversations)")}:
        conn.execute("UPDATE conversations SET active_leaf_id = NULL "
                     "WHERE active_leaf_id IN (SELECT id FROM doomed)")
    conn.execute("DELETE FROM messages WHERE id IN (SELECT id FROM doomed)")
    conn.executemany("DELETE FROM conversations WHERE id = ?", [(c,) for c in conversations])
    conn.execute("DROP TABLE temp.doomed")
    if SEARCH_INDEX in tables:
        conn.execute(f"INSERT INTO {SEARCH_INDEX}({SEARCH_INDEX}) VALUES ('optimize')")


def _remove_stale_work(folder: Path) -> None:
    """Copies a killed erasing left behind (never a backup: they are not put in place; and
    never another's work: erasings run one at a time)."""
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        if _WORKING in path.name:
            with contextlib.suppress(OSError):
                path.unlink()


def _beside(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)

