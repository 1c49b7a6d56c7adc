"""The database file's connections: one per thread, and write transactions.

* WAL journal, a busy timeout and ``synchronous=FULL``: the window and the CLI may write at the
  same time, and a committed message survives a crash or power loss.
* ``secure_delete``: what a delete frees is overwritten with zeros (``app.storage.erasure``).
* One connection per thread (sqlite3 connections belong to the thread that opened them).
* Each committed transaction (and the last close) seals the file as this process left it
  (``app.storage.integrity``), once the start-up check found it healthy.

``Connections`` is the base of every part of ``app.storage.store.Store``.
"""
from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from pathlib import Path
from typing import Iterator

import sqlite_utils

from app.storage import integrity
from app.storage.sqlite_errors import BUSY_TIMEOUT_MS, retry_when_locked, storage_errors


def _make_private(path: Path) -> None:
    """Conversations are private: the database is readable by its owner only (SQLite gives the
    -wal and -shm files the same permissions)."""
    try:
        if path.exists() and path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
    except OSError:
        pass


class Connections:
    """Per-thread connections to the database at ``path`` and its write transactions."""

    def __init__(self, path: Path):
        self.path = path
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        # True once the file passed its start-up check: only then are its states sealed
        self._healthy = False

    @property
    def db(self) -> sqlite_utils.Database:
        db = getattr(self._local, "db", None)
        if db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with storage_errors(self.path):
                conn = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_MS / 1000,
                                       isolation_level=None, check_same_thread=False)
                conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                retry_when_locked(lambda: conn.execute("PRAGMA journal_mode = WAL"))
                conn.execute("PRAGMA synchronous = FULL")
                conn.execute("PRAGMA foreign_keys = ON")
                conn.execute("PRAGMA secure_delete = ON")  # whatever the build's default
            _make_private(self.path)
            db = sqlite_utils.Database(conn)
            self._local.db = db
            with self._lock:
                self._connections.append(conn)
        return db

    def release_thread_connection(self) -> None:
        """Close this thread's connection (a short-lived thread's, as it ends: each thread that
        uses the store opens its own)."""
        db = getattr(self._local, "db", None)
        if db is None:
            return
        self._local.db = None
        with self._lock:
            if db.conn in self._connections:
                self._connections.remove(db.conn)
        with contextlib.suppress(sqlite3.Error):
            db.conn.close()

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            closed = bool(self._connections)
            self._connections.clear()
        self._local = threading.local()
        if closed and self._healthy:  # the files as this process leaves them (see integrity)
            integrity.write_seal(self.path)

    def transaction(self):
        """``with store.transaction() as db:`` one write transaction (BEGIN IMMEDIATE), for the
        core modules that own a table of their own (``app.storage.outbox``), and for writes
        that must land together or not at all: the store's own writes made inside it (on this
        thread) join it, so ``create_conversation`` and ``add_message`` in one ``with`` commit
        as one (a full disk never leaves a conversation without its first message)."""
        return self._tx()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite_utils.Database]:
        db = self.db
        depth = getattr(self._local, "tx_depth", 0)
        if depth:  # inside this thread's transaction: a savepoint, committed with it
            yield from self._savepoint(db, depth)
            return
        with storage_errors(self.path):
            retry_when_locked(lambda: db.conn.execute("BEGIN IMMEDIATE"))
            self._local.tx_depth = 1
            try:
                yield db
                db.conn.execute("COMMIT")
            except BaseException:
                # (a full disk or an I/O error may have rolled it back already)
                if db.conn.in_transaction:
                    db.conn.execute("ROLLBACK")
                raise
            finally:
                self._local.tx_depth = 0
        if self._healthy:
            integrity.write_seal(self.path)

    def _savepoint(self, db: sqlite_utils.Database, depth: int
                   ) -> Iterator[sqlite_utils.Database]:
        """A write inside the thread's open transaction: undone alone when it fails, else
        committed (or rolled back) with the transaction around it."""
        name = f"nested_{depth}"
        with storage_errors(self.path):
            db.conn.execute(f"SAVEPOINT {name}")
            self._local.tx_depth = depth + 1
            try:
                yield db
            except BaseException:
                if db.conn.in_transaction:
                    db.conn.execute(f"ROLLBACK TO {name}")
                    db.conn.execute(f"RELEASE {name}")
                raise
            finally:
                self._local.tx_depth = depth
            db.conn.execute(f"RELEASE {name}")
