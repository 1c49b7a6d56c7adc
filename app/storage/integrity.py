"""Checking the database file at start, before anything is written to it.

* **Damage**: ``PRAGMA quick_check`` reads every page (~0.35 s at 100k messages, 160 MB, see
  ``bench/quick_check.py``), too slow for every start of the CLI. So every Outpost process
  that commits (or closes) records the state it left the files in, a *seal*: the size, mtime
  and inode of the database and of its ``-wal`` (``outpost.db-checked``). A start that finds
  the files as sealed skips the check (only Outpost wrote since the last check); anything else
  (no seal: the first start of this version, a crash between a commit and its seal, a file
  copied or edited by something else) runs it. The daily backup's own check
  (``app.storage.backups``) reads every page once a day whatever the seal says, so damage that
  leaves the mtime alone (the disk) is found within a day.
* **A leftover write-ahead log**: a ``-wal`` with frames that no process has open and that the
  seal does not vouch for may be another copy's (a backup restored over a crashed database's
  log): SQLite would replay it into this file. The database, the log and its ``-shm`` are
  copied aside first, while an exclusive lock keeps every other process out.
"""
from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from pathlib import Path
from typing import Iterator

from app.storage.backups import first_complaint

WAL_HEADER_BYTES = 32  # a -wal this long or shorter holds no frames
_BUSY, _LOCKED, _CORRUPT, _NOTADB = 5, 6, 11, 26


def wal_path(db: Path) -> Path:
    return db.with_name(db.name + "-wal")


def seal_path(db: Path) -> Path:
    return db.with_name(db.name + "-checked")


def _stamp(path: Path) -> list[int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def _state(db: Path) -> dict:
    return {"db": _stamp(db), "wal": _stamp(wal_path(db))}


def write_seal(db: Path) -> None:
    """Record the files' state now, as left by this (healthy) process. Best effort: a seal
    that is missing or stale only costs the next start a check."""
    state = _state(db)
    if state["db"] is None:
        return
    partial = db.with_name(f"{seal_path(db).name}.{os.getpid()}.part")
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(state, out)
        os.replace(partial, seal_path(db))
    except OSError:
        with contextlib.suppress(OSError):
            partial.unlink()


def forget_seal(db: Path) -> None:
    seal_path(db).unlink(missing_ok=True)


def sealed(db: Path) -> bool:
    """The files are as the last Outpost process to write them left them."""
    try:
        return json.loads(seal_path(db).read_text()) == _state(db)
    except (OSError, ValueError):
        return False


def sealed_size(db: Path) -> int:
    """The database's size when it was last sealed (0: unknown)."""
    try:
        return int(json.loads(seal_path(db).read_text())["db"][0])
    except (OSError, ValueError, TypeError, KeyError, IndexError):
        return 0


def wal_has_frames(db: Path) -> bool:
    stamp = _stamp(wal_path(db))
    return stamp is not None and stamp[0] > WAL_HEADER_BYTES


def quick_check(db: Path, timeout_s: float) -> str | None:
    """None when the database passes ``PRAGMA quick_check``, else the first complaint. Other
    processes may have it open; nothing is written."""
    conn = sqlite3.connect(str(db), timeout=timeout_s, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
        return first_complaint([r[0] for r in conn.execute("PRAGMA quick_check")])
    except sqlite3.DatabaseError as exc:
        if _code(exc) in (_CORRUPT, _NOTADB):
            return str(exc)
        raise
    finally:
        conn.close()


@contextlib.contextmanager
def held_alone(db: Path) -> Iterator[bool]:
    """Yields True while this connection holds the database file's exclusive lock (no other
    connection, in any process, has it open), False when another one has it. While held,
    its files can be copied as they are. On leaving, SQLite (the last connection) applies the
    write-ahead log to the database and deletes it, as any first open would."""
    conn = sqlite3.connect(str(db), timeout=0, isolation_level=None)
    try:
        # in exclusive locking mode, opening the WAL takes the file's EXCLUSIVE lock first
        # and keeps the WAL index in this process's memory: the -shm is left untouched
        conn.execute("PRAGMA locking_mode = EXCLUSIVE")
        try:
            conn.execute("BEGIN EXCLUSIVE")
        except sqlite3.OperationalError as exc:
            if _code(exc) in (_BUSY, _LOCKED):
                yield False
                return
            raise
        try:
            yield True
        finally:
            conn.execute("ROLLBACK")
    finally:
        conn.close()


def _code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None
