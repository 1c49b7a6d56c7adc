"""Importing a file of conversations: read it safely, tell its format, check all of it, then
write it in one transaction.

* **Limits before parsing.** A file over ``MAX_IMPORT_BYTES`` (64 MiB) is refused before it is
  parsed (only that much plus one byte is ever read, so ``/dev/zero`` is refused too). JSON
  nested more than ``MAX_NESTING`` levels is refused (real exports need about 10); NaN and
  Infinity, which are not JSON, are refused.
* **The format** is told from the content, not the name: an object with ``"format":
  "outpost-conversations"`` (``outpost_json``), or a list of objects with a ``mapping``
  (ChatGPT's ``conversations.json``, ``chatgpt``); anything else is refused.
* **All or nothing.** The whole file is checked before anything is written, and then written
  in one transaction: a problem anywhere leaves the database as it was. The full-text index is
  kept by the messages table's own triggers, so imported text is found by search at once.
* **Never overwrite.** A conversation whose id is already in the database (imported before, or
  the export of this very database) is skipped and said so; so is one with a message id that
  another conversation already has. Imported conversations belong to the importing profile.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from app.domain.errors import UsageError
from app.storage import deletions
from app.storage.backups import BEFORE_IMPORT, KEEP_BEFORE_IMPORT
from app.storage.sqlite_errors import storage_errors
from app.storage.store import Store, now_iso
from app.storage.transfer import chatgpt, outpost_json, shape
from app.storage.transfer.records import CONVERSATIONS, MESSAGES, ConversationRows
from app.storage.transfer.shape import Where

MAX_IMPORT_BYTES = 64 * 1024 * 1024
MAX_NESTING = 64
OUTPOST, CHATGPT = "outpost", "chatgpt"


@dataclass
class LoadedFile:
    """A file read and checked, ready to be written."""

    path: Path
    format: str  # OUTPOST or CHATGPT
    conversations: list[ConversationRows]


@dataclass
class ImportSummary:
    file: str
    format: str
    imported: list[dict] = field(default_factory=list)  # id, title, messages, left_out
    skipped: list[dict] = field(default_factory=list)  # id, title, reason
    backup: str | None = None  # the backup taken first (None: nothing was added, or to keep)

    def as_dict(self) -> dict:
        return {"file": self.file, "format": self.format, "imported": self.imported,
                "skipped": self.skipped, "backup": self.backup}


def load(path: Path) -> LoadedFile:
    """Read, parse and check the whole file (nothing is written)."""
    where = Where(path.name or str(path))
    data = _read_json(path, where)
    if outpost_json.is_outpost(data):
        return LoadedFile(path, OUTPOST, outpost_json.parse(data, where))
    if chatgpt.is_chatgpt(data):
        return LoadedFile(path, CHATGPT, chatgpt.parse(data, where))
    raise where.fail("it is neither an Outpost export (\"format\": "
                     f"\"{outpost_json.FORMAT}\") nor ChatGPT's conversations.json (a list of "
                     "conversations with a \"mapping\")")


def write(store: Store, loaded: LoadedFile, profile: str | None) -> ImportSummary:
    """Add the file's conversations to ``profile`` in one transaction; skip those already
    here. When it adds any to a database that holds conversations, a backup is taken first
    (``before-import``; the newest ``KEEP_BEFORE_IMPORT`` kept): a bulk import is undone by
    restoring it."""
    summary = ImportSummary(str(loaded.path), loaded.format)
    summary.backup = _backup_first(store, loaded)
    with store.transaction() as db:
        for rows in loaded.conversations:
            reason = _conflict(db, rows)
            if reason:
                summary.skipped.append({"id": rows.id, "title": rows.title, "reason": reason})
                continue
            insert_conversation(db, rows, profile)
            summary.imported.append({"id": rows.id, "title": rows.title,
                                     "messages": len(rows.messages), "left_out": rows.left_out})
    return summary


def _backup_first(store: Store, loaded: LoadedFile) -> str | None:
    """The backup taken before an import that adds conversations (its path), when the
    database has conversations to keep; None otherwise."""
    db = store.db
    with storage_errors(store.path):
        if not db.execute("SELECT EXISTS (SELECT 1 FROM conversations)").fetchone()[0] or \
                all(_conflict(db, rows) for rows in loaded.conversations):
            return None
    made = store.backup(BEFORE_IMPORT)  # (DatabaseDamaged: nothing is imported)
    store.backups.prune_daily(KEEP_BEFORE_IMPORT, BEFORE_IMPORT)
    return str(made)


def insert_conversation(db, rows: ConversationRows, profile: str | None) -> None:
    """One conversation and its messages (inside the caller's transaction)."""
    conversation = dict(rows.conversation, profile=profile)
    # written again under ids deleted here before: not deleted any more (a restore or a
    # salvage would take them out again: app.storage.deletions)
    deletions.forget(db.conn, [rows.id] + [m["id"] for m in rows.messages], now_iso())
    _insert(db, CONVERSATIONS, [conversation])
    _insert(db, MESSAGES, [dict(m, conversation_id=rows.id, writer=None)
                           for m in rows.messages])


def _insert(db, table: str, rows: list[dict]) -> None:
    """Rows in the file's order (it is the order of siblings), consecutive rows that name the
    same columns in one statement."""
    names: tuple[str, ...] = ()
    batch: list[tuple] = []
    for row in rows:
        if tuple(row) != names and batch:
            _insert_many(db, table, names, batch)
            batch = []
        names = tuple(row)
        batch.append(tuple(row.values()))
    if batch:
        _insert_many(db, table, names, batch)


def _insert_many(db, table: str, names: tuple[str, ...], values: list[tuple]) -> None:
    columns = ", ".join(f'"{n}"' for n in names)
    marks = ", ".join("?" * len(names))
    db.conn.executemany(f'insert into "{table}" ({columns}) values ({marks})', values)


def _conflict(db, rows: ConversationRows) -> str | None:
    if db.execute("select 1 from conversations where id = ?", [rows.id]).fetchone():
        return "a conversation with this id is already here (imported before?); it was kept " \
               "as it is"
    ids = [m["id"] for m in rows.messages]
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        found = db.execute(f"select id from messages where id in ({', '.join('?' * len(chunk))})"
                           " limit 1", chunk).fetchone()
        if found:
            return f"its message {found[0]} is already in another conversation here"
    return None


def _read_json(path: Path, where: Where):
    if not path.exists():
        raise UsageError(f"There is no file {path}.")
    if path.is_dir():
        raise UsageError(f"{path} is a folder; give the export file itself.")
    limit_mb = MAX_IMPORT_BYTES // (1024 * 1024)
    too_big = UsageError(f"{path.name} is larger than {limit_mb} MB, the most Outpost imports "
                         "at once; nothing was imported.")
    try:
        if path.stat().st_size > MAX_IMPORT_BYTES:
            raise too_big
        with path.open("rb") as handle:
            raw = handle.read(MAX_IMPORT_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"{path} could not be read: {exc.strerror or exc}.") from None
    if len(raw) > MAX_IMPORT_BYTES:
        raise too_big
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise where.fail("it is not UTF-8 text, so not a JSON export") from None
    try:
        data = json.loads(text, parse_constant=_no_constants)
    except json.JSONDecodeError as exc:
        if path.suffix.lower() in (".md", ".markdown", ".html", ".htm"):  # an export to read
            raise where.fail("a Markdown or HTML export is for reading; only a JSON export "
                             "(Outpost's, or ChatGPT's conversations.json) can be imported "
                             "back") from None
        raise where.fail(f"it is not valid JSON ({exc.msg} at line {exc.lineno}, column "
                         f"{exc.colno})") from None
    except RecursionError:
        raise where.fail(f"it nests lists or objects more than {MAX_NESTING} deep") from None
    except _NotJsonNumber as exc:
        raise where.fail(f"it is not valid JSON ({exc} is not a JSON number)") from None
    except ValueError:  # Python reads integers of at most 4300 digits
        raise where.fail("it is not valid JSON (it holds a number thousands of digits long)"
                         ) from None
    if shape.depth_of(data) > MAX_NESTING:
        raise where.fail(f"it nests lists or objects more than {MAX_NESTING} deep")
    return data


class _NotJsonNumber(ValueError):
    """NaN, Infinity or -Infinity: Python's json reads them, JSON has no such numbers."""


def _no_constants(name: str):
    raise _NotJsonNumber(name)
