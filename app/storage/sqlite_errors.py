"""SQLite's errors as Outpost's: which result codes are the user's to act on (a full disk, a
locked or read-only file, a damaged one) and which are bugs, the busy timeout every connection
uses, and a retry for the few lock waits SQLite does not cover itself."""
from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from pathlib import Path
from typing import Iterator

from app.config import paths
from app.domain.errors import KnownStorageError, StorageError

BUSY_TIMEOUT_MS = 5000
# Primary result codes (https://sqlite.org/rescode.html) of problems with the file or the
# machine rather than with Outpost's code: shown to the user (KnownStorageError). Every other
# code, and sqlite3 errors with no code (misuse of the API), is a bug (StorageError).
SQLITE_BUSY, SQLITE_LOCKED, SQLITE_NOMEM, SQLITE_READONLY = 5, 6, 7, 8
SQLITE_IOERR, SQLITE_CORRUPT, SQLITE_FULL, SQLITE_CANTOPEN = 10, 11, 13, 14
SQLITE_PROTOCOL, SQLITE_NOTADB = 15, 26
_KNOWN_SQLITE_CODES = frozenset({SQLITE_BUSY, SQLITE_LOCKED, SQLITE_NOMEM, SQLITE_READONLY,
                                 SQLITE_IOERR, SQLITE_CORRUPT, SQLITE_FULL, SQLITE_CANTOPEN,
                                 SQLITE_PROTOCOL, SQLITE_NOTADB})


def sqlite_primary_code(exc: sqlite3.Error) -> int | None:
    """The primary result code of ``exc`` (extended codes carry it in their low byte)."""
    code = getattr(exc, "sqlite_errorcode", None)  # absent on errors Python raises itself
    return code & 0xFF if isinstance(code, int) else None


def storage_error_class(exc: sqlite3.Error) -> type[StorageError]:
    """Known (the user can act: disk full, locked, read-only, damaged) or a bug, by SQLite's
    result code, never by the message's wording."""
    return KnownStorageError if sqlite_primary_code(exc) in _KNOWN_SQLITE_CODES \
        else StorageError


def retry_when_locked(fn, budget_s: float = BUSY_TIMEOUT_MS / 1000):
    """SQLite skips the busy handler in a few cases (e.g. while another connection switches a
    new file to WAL); retry those for as long as the busy timeout would have waited."""
    deadline = time.monotonic() + budget_s
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            if sqlite_primary_code(exc) not in (SQLITE_BUSY, SQLITE_LOCKED) or \
                    time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# what the user can do, after SQLite's own words (which name neither the cause nor a fix),
# when the folder and the files do not say more (``_write_problem``)
_HINTS = {
    SQLITE_CANTOPEN: " Outpost needs to write in the database's folder (the file and its -wal "
                     "and -shm beside it): is that folder read-only, full or gone?",
    SQLITE_READONLY: " The file or its folder is read-only for you: check its permissions, or "
                     "whether the disk is mounted read-only.",
    SQLITE_FULL: " The disk is full: free some space, then try again.",
}


def _write_problem(path: Path) -> str | None:
    """What the OS says stops Outpost writing the database ``path`` (or in the folder
    ``path``): its folder (read-only file system, permission denied, full, gone), else the
    file or its -wal / -shm (read-only for you: e.g. made by `sudo outpost`)."""
    folder = path if path.is_dir() else path.parent
    problem = paths.write_problem(folder)
    if problem is not None or folder == path:
        return problem
    for suffix in ("", "-wal", "-shm"):
        file = path.with_name(path.name + suffix)
        try:
            os.close(os.open(file, os.O_RDWR))
        except FileNotFoundError:
            continue
        except OSError as exc:
            return paths.write_refusal(file, exc)
    return None


def _hint(exc: sqlite3.Error, path: Path) -> str:
    code = sqlite_primary_code(exc)
    # an I/O error too: with the disk full to the last byte and no -shm beside the database,
    # SQLite cannot make it and says only "disk I/O error" (SQLITE_IOERR_SHMSIZE)
    if code in (SQLITE_CANTOPEN, SQLITE_READONLY, SQLITE_IOERR):
        problem = _write_problem(path)
        if problem is not None:
            return f" Outpost needs to write beside it (its -wal and -shm), but {problem}."
    return _HINTS.get(code or 0, "")


@contextlib.contextmanager
def storage_errors(path: Path) -> Iterator[None]:
    """Turn sqlite3/OS errors into our StorageError types, naming the file."""
    try:
        yield
    except sqlite3.Error as exc:
        raise storage_error_class(exc)(f"The database {path} could not be used: {exc}."
                                       + _hint(exc, path)) from exc
    except OSError as exc:
        raise KnownStorageError(f"The database {path} could not be used: {exc.strerror or exc}."
                                ) from exc


