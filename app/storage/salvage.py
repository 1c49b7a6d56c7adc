"""Restoring a backup in place of a damaged database without losing what came after it.

A backup is up to a day old, and damage is often in a page that holds no conversation (the
request log, an index). So when the file a restore replaced is damaged (it fails
``PRAGMA quick_check``), what it still holds is read, table by table, as far as each can be
read, from a copy (the kept file and its write-ahead log, in a temporary folder: the kept file
is never changed), and brought into the restored database:

* ``profiles``: those the backup does not have (not as the admin: the backup's stays);
* ``conversations`` and ``messages``: those the backup does not have, and those changed since
  it (``updated_at`` newer: a reply that finished, a renamed chat), in one transaction.

A row that cannot go in (a message whose conversation could not be read) is left out and
counted. A file restored on purpose over a healthy one is a rollback: nothing is brought over
(the replaced file is kept in the backups folder either way).
"""
from __future__ import annotations

import shutil
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from app.domain.errors import OutpostError
from app.domain.wording import counted
from app.storage.backups import Backup, quick_check_file
from app.storage.restore import restore_backup
from app.storage.store import Store

# in this order (a conversation's profile, a message's conversation), with their keys
TABLES = (("profiles", "name"), ("conversations", "id"), ("messages", "id"))
_NEWER_WINS = {"conversations", "messages"}


@dataclass
class Salvage:
    """What was brought over from the damaged file."""

    rows: dict[str, int] = field(default_factory=dict)  # per table: added or brought up to date
    left_out: int = 0  # rows read that could not go in
    unreadable: list[str] = field(default_factory=list)  # "messages: why", read only in part
    failed: str | None = None  # why nothing could be brought over at all

    def describe(self, source: str = "the damaged file", than: str = "the backup") -> str:
        """One sentence for the user: what came from ``source``, newer than ``than``."""
        if self.failed is not None:
            return self.failed
        conversations, messages = self.rows.get("conversations", 0), \
            self.rows.get("messages", 0)
        if conversations or messages:
            text = (f"From {source}, {counted(conversations, 'conversation')} and "
                    f"{counted(messages, 'message')} newer than {than} were brought back")
        else:
            text = f"Nothing newer than {than} could be read from {source}"
        if self.left_out:
            text += f" ({counted(self.left_out, 'row')} could not be)"
        if self.unreadable:
            text += f"; could not be read whole: {'; '.join(self.unreadable)}"
        return text + "."


def restore_and_salvage(db_path: Path, name: str | None = None
            ) -> tuple[Backup, Path | None, Salvage | None]:
    """``restore_backup``, then, when the file it replaced is damaged, what that file still
    holds brought over (None: nothing to bring, a healthy file or none)."""
    backup, kept = restore_backup(db_path, name)
    if kept is None or quick_check_file(kept) is None:
        return backup, kept, None
    try:
        store = Store(db_path, daily_backup=False)
        try:
            return backup, kept, salvage(kept, store)
        finally:
            store.close()
    except (OutpostError, OSError, sqlite3.Error) as exc:  # the restore itself is done
        return backup, kept, Salvage(failed=f"What the damaged file held could not be brought "
                                            f"over ({exc}); it is kept as {kept}.")


def salvage(damaged: Path, store: Store) -> Salvage:
    """Bring what ``damaged`` (a kept copy, with its ``-wal`` beside it) can still give into
    ``store`` (see the module's docstring)."""
    result = Salvage()
    with tempfile.TemporaryDirectory(prefix="outpost-salvage-") as folder:
        copy = Path(folder) / "damaged.db"
        for suffix in ("", "-wal", "-shm"):
            source = damaged.with_name(damaged.name + suffix)
            if source.exists():
                shutil.copyfile(source, copy.with_name(copy.name + suffix))
        try:
            source_db = sqlite3.connect(copy)
        except sqlite3.Error as exc:
            result.unreadable.append(f"the file ({exc})")
            return result
        # a text of bytes that are not UTF-8 (garbage on a page) is read with "\ufffd" for
        # them, rather than stop reading its table there
        source_db.text_factory = lambda data: data.decode("utf-8", "replace")
        try:
            read = {table: _read(source_db, table, result) for table, _ in TABLES}
        finally:
            source_db.close()
    with store.transaction() as db:
        for table, key in TABLES:
            columns, rows = read[table]
            wanted = [c for c in columns if c in set(db[table].columns_dict)]
            if not rows or key not in wanted:
                continue
            names = ", ".join(f'"{c}"' for c in wanted)
            marks = ", ".join("?" * len(wanted))
            if table in _NEWER_WINS and "updated_at" in wanted:
                updates = ", ".join(f'"{c}" = excluded."{c}"' for c in wanted if c != key)
                sql = (f'INSERT INTO "{table}" ({names}) VALUES ({marks}) ON CONFLICT("{key}") '
                       f'DO UPDATE SET {updates} WHERE excluded.updated_at > '
                       f'"{table}".updated_at')
            else:
                sql = f'INSERT OR IGNORE INTO "{table}" ({names}) VALUES ({marks})'
            index = [columns.index(c) for c in wanted]
            admin = wanted.index("is_admin") if table == "profiles" and \
                "is_admin" in wanted else None
            count = 0
            for row in rows:
                values = [row[i] for i in index]
                if admin is not None:  # the backup's admin stays the one admin there is
                    values[admin] = 0
                try:
                    count += db.conn.execute(sql, values).rowcount
                except sqlite3.IntegrityError:  # its conversation (or a value) is missing
                    result.left_out += 1
            result.rows[table] = count
    return result


def _read(source: sqlite3.Connection, table: str, result: Salvage
          ) -> tuple[list[str], list[tuple]]:
    """(columns, rows) of ``table`` as far as it can be read, in rowid order."""
    columns: list[str] = []
    rows: list[tuple] = []
    try:
        columns = [r[1] for r in source.execute(f'PRAGMA table_info("{table}")')]
        if not columns:
            return [], []
        names = ", ".join(f'"{c}"' for c in columns)
        for row in source.execute(f'SELECT {names} FROM "{table}" ORDER BY rowid'):
            rows.append(row)
    except sqlite3.DatabaseError as exc:  # damaged here: what came before is kept
        result.unreadable.append(f"{table} ({exc})")
    return columns, rows
