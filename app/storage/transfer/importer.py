"""Importing a file of conversations: read it a conversation at a time, tell its format,
check all of it, then write it in one transaction.

* **Read as a stream.** The file is read a chunk at a time (``json_stream``): one conversation
  is in memory at once, never the whole file, so a heavy user's ChatGPT export or Outpost's own
  ``export --all`` of thousands of conversations imports in a few tens of megabytes.
* **Limits.** A file over ``MAX_IMPORT_BYTES`` (2 GiB) is refused (its size is counted as it is
  read, so ``/dev/zero`` or a pipe without end stops there too), and so is one conversation of
  more than ``MAX_CONVERSATION_CHARS`` (64 Mi characters). JSON nested more than ``MAX_NESTING``
  levels is refused (real exports need about 10); NaN and Infinity, which are not JSON, are
  refused.
* **The format** is told from the content, not the name: an object with ``"format":
  "outpost-conversations"`` (``outpost_json``), or a list of objects with a ``mapping``
  (ChatGPT's ``conversations.json``, ``chatgpt``); anything else is refused.
* **All or nothing.** ``load`` reads and checks the whole file and keeps nothing but its format
  and count; ``write`` reads it again and writes it conversation by conversation inside one
  transaction: a problem anywhere (even one met while writing, in a file changed in between)
  leaves the database as it was. The full-text index is kept by the messages table's own
  triggers, so imported text is found by search at once.
* **Never overwrite; add what is new.** A conversation whose id is already here (imported
  before, or the export of this very database) keeps every message, its title and settings.
  The file's messages that are not here yet were written since the last import, elsewhere
  (ChatGPT's ids are derived from its own, so they are the same each time): they are added,
  each below its parent, unless they were deleted here: a deleted message has a tombstone
  (``app.storage.deletions``) and is not brought back, nor is anything below it
  (``not_brought_back`` counts them). (A message deleted before tombstones were kept cannot be
  told from a new one; it comes back.) The shown path moves to the
  file's (ChatGPT's ``current_node``) only when the one shown now is part of it, i.e. the new
  messages continue what is shown; a branch chosen or continued here stays shown, the new
  messages a version away (Outpost cannot tell a branch chosen here since the last import from
  the one that import chose, so it never overrides one). A conversation with nothing new is
  skipped and said so; so is one with a message id that another conversation already has.
* **Profiles.** Imported conversations belong to the importing profile. One that another
  profile already has (its id, or one of its messages' ids) is imported as this profile's own
  copy, its ids derived from the profile and the file's (``own_ids``): the same every time, so
  importing twice into one profile still finds it, and nothing is said of the other profile's.
"""
from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from app.domain.errors import UsageError
from app.storage import deletions
from app.storage.backups import BEFORE_IMPORT, KEEP_BEFORE_IMPORT
from app.storage.sqlite_errors import storage_errors
from app.storage.store import Store, now_iso
from app.storage.transfer import chatgpt, json_stream, outpost_json, shape
from app.storage.transfer.records import CONVERSATIONS, MESSAGES, ConversationRows
from app.storage.transfer.shape import Where

MAX_IMPORT_BYTES = 2 * 1024 ** 3
MAX_CONVERSATION_CHARS = 64 * 1024 ** 2
MAX_NESTING = 64
OUTPOST, CHATGPT = "outpost", "chatgpt"
_READABLE_SUFFIXES = (".md", ".markdown", ".html", ".htm")


@dataclass
class LoadedFile:
    """A file read and checked, ready to be written (``write`` reads it again)."""

    path: Path
    format: str  # OUTPOST or CHATGPT
    conversations: int  # how many it holds


@dataclass
class ImportSummary:
    file: str
    format: str
    imported: list[dict] = field(default_factory=list)  # id, title, messages, left_out
    continued: list[dict] = field(default_factory=list)  # id, title, messages (added)
    skipped: list[dict] = field(default_factory=list)  # id, title, reason
    backup: str | None = None  # the backup taken first (None: nothing was added, or to keep)

    @property
    def added_messages(self) -> int:
        """New messages added to conversations that were here already."""
        return sum(item["messages"] for item in self.continued)

    def as_dict(self) -> dict:
        return {"file": self.file, "format": self.format, "imported": self.imported,
                "continued": self.continued, "skipped": self.skipped, "backup": self.backup}


def load(path: Path) -> LoadedFile:
    """Read and check the whole file (nothing is written, nothing of it is kept)."""
    found, count = OUTPOST, 0
    for found, rows in _conversations(path):
        count += rows is not None
    return LoadedFile(path, found, count)


def write(store: Store, loaded: LoadedFile, profile: str | None) -> ImportSummary:
    """Add the file's conversations to ``profile`` in one transaction; to those already here,
    the messages that are new. When that adds anything to a database that holds
    conversations, a backup is taken first (``before-import``; the newest
    ``KEEP_BEFORE_IMPORT`` kept): a bulk import is undone by restoring it."""
    summary = ImportSummary(str(loaded.path), loaded.format)
    summary.backup = _backup_first(store, loaded, profile)
    with store.transaction() as db:
        for found, rows in _conversations(loaded.path):
            if found != loaded.format:
                raise _where(loaded.path).fail("it changed while it was being imported")
            if rows is not None:  # (None: the end of the file)
                _write_one(db, rows, profile, summary)
    return summary


def _backup_first(store: Store, loaded: LoadedFile, profile: str | None) -> str | None:
    """The backup taken before an import that adds anything (its path), when the database has
    conversations to keep; None otherwise (an empty database, or a file of which nothing would
    be written: every conversation skipped, as ``_write_one`` decides). A backup taken for an
    import that adds nothing would rotate away one that undoes a real import."""
    db = store.db
    with storage_errors(store.path):
        if not db.execute("SELECT EXISTS (SELECT 1 FROM conversations)").fetchone()[0] or \
                not any(_adds_anything(db, rows, profile)
                        for _, rows in _conversations(loaded.path) if rows is not None):
            return None
    made = store.backup(BEFORE_IMPORT)  # (DatabaseDamaged: nothing is imported)
    store.backups.prune_daily(KEEP_BEFORE_IMPORT, BEFORE_IMPORT)
    return str(made)


def _adds_anything(db, rows: ConversationRows, profile: str | None) -> bool:
    """Whether ``_write_one`` would write ``rows`` (a new conversation, or new messages of one
    here) rather than skip it. The file's ids are each once in it (``outpost_json``), so what
    an earlier conversation of the file writes does not change this for a later one."""
    rows, here = _as_here(db, rows, profile)
    added = rows.messages if here is None else _to_add(db, rows)[0]
    if here is not None and not added:
        return False
    return _taken(db, [m["id"] for m in added]) is None


def _as_here(db, rows: ConversationRows, profile: str | None
             ) -> tuple[ConversationRows, tuple | None]:
    """``rows`` under the ids it has here (this profile's own when another profile has the
    file's), and the conversation here (``_conversation_here``; None: not here)."""
    here = _conversation_here(db, rows.id)
    if (here is not None and here[0] not in (None, profile)) or \
            (here is None and _in_others(db, [m["id"] for m in rows.messages], profile)):
        rows = own_ids(rows, profile)  # another profile has it: this profile's own copy
        here = _conversation_here(db, rows.id)
    return rows, here


def _write_one(db, rows: ConversationRows, profile: str | None, summary: ImportSummary
               ) -> None:
    rows, here = _as_here(db, rows, profile)
    if here is not None:
        _continue(db, rows, updated_at=here[1], active_leaf=here[2], summary=summary)
        return
    reason = _taken(db, [m["id"] for m in rows.messages])
    if reason:
        summary.skipped.append({"id": rows.id, "title": rows.title, "reason": reason})
        return
    insert_conversation(db, rows, profile)
    summary.imported.append({"id": rows.id, "title": rows.title,
                             "messages": len(rows.messages), "left_out": rows.left_out})


def _conversation_here(db, conversation_id: str) -> tuple | None:
    """(profile, updated_at, active_leaf_id) of the conversation, None when it is not here."""
    return db.execute("select profile, updated_at, active_leaf_id from conversations "
                      "where id = ?", [conversation_id]).fetchone()


def _in_others(db, message_ids: list[str], profile: str | None) -> bool:
    """Whether one of the messages is in a conversation of another profile."""
    for start in range(0, len(message_ids), 500):
        chunk = message_ids[start:start + 500]
        found = db.execute(
            "select 1 from messages m join conversations c on c.id = m.conversation_id "
            f"where m.id in ({', '.join('?' * len(chunk))}) and c.profile is not null "
            "and c.profile is not ? limit 1", [*chunk, profile]).fetchone()
        if found:
            return True
    return False


_PROFILE_IDS = uuid.uuid5(uuid.NAMESPACE_URL, "https://outpost.invalid/import/profile")


def own_ids(rows: ConversationRows, profile: str | None) -> ConversationRows:
    """The conversation with ids of ``profile``'s own (UUID 5 of the profile and each id):
    the same every time, so importing the file again into this profile finds them, and never
    another profile's."""
    def own(old: str | None) -> str | None:
        return None if old is None else uuid.uuid5(_PROFILE_IDS, f"{profile or ''}\n{old}").hex

    conversation = dict(rows.conversation, id=own(rows.id),
                        active_leaf_id=own(rows.conversation.get("active_leaf_id")))
    messages = [dict(m, id=own(m["id"]), parent_id=own(m["parent_id"])) for m in rows.messages]
    return ConversationRows(conversation, messages, rows.left_out)


_ALREADY_HERE = "a conversation with this id is already here (imported before?); it was kept " \
    "as it is"


def _continue(db, rows: ConversationRows, updated_at: str, active_leaf: str | None,
              summary: ImportSummary) -> None:
    """Add the file's new messages to the conversation already here (see the module's
    docstring), and say so in ``summary``."""
    added, here = _to_add(db, rows)
    missing = sum(m["id"] not in here for m in rows.messages) - len(added)
    item: dict = {"id": rows.id, "title": rows.title}
    if missing:
        item["not_brought_back"] = missing
    reason = _taken(db, [m["id"] for m in added]) if added else _ALREADY_HERE
    if reason:
        summary.skipped.append(dict(item, reason=reason))
        return
    _insert(db, MESSAGES, [dict(m, conversation_id=rows.id, writer=None) for m in added])
    parents = dict({key: parent for key, (parent, _) in here.items()},
                   **{m["id"]: m["parent_id"] for m in added})
    changes = {"updated_at": now_iso()}  # changed now: restores, export --since, the list
    leaf = rows.conversation.get("active_leaf_id")
    shown = active_leaf if active_leaf in parents else None
    if leaf is not None and leaf in parents and (shown is None or
                                                 _on_path(parents, shown, leaf)):
        changes["active_leaf_id"] = leaf
    db.execute(f"update conversations set {', '.join(f'{k} = ?' for k in changes)} where id = ?",
               [*changes.values(), rows.id])
    summary.continued.append(dict(item, messages=len(added)))


def _to_add(db, rows: ConversationRows) -> tuple[list[dict], dict[str, tuple[str | None, str]]]:
    """The file's messages to add to its conversation here (``_new_messages``), and the
    messages here: id -> (parent id, created_at)."""
    here = {row[0]: (row[1], row[2]) for row in db.execute(
        "select id, parent_id, created_at from messages where conversation_id = ?",
        [rows.id])}
    return _new_messages(rows.messages, here, _tombstoned(db, [m["id"] for m in rows.messages
                                                               if m["id"] not in here])), here


def _new_messages(messages: list[dict], here: dict[str, tuple[str | None, str]],
                  deleted: set[str]) -> list[dict]:
    """The file's messages to add, in the file's order: not here, not ``deleted`` here, and
    hanging from a message here or another one added."""
    new = {m["id"]: m for m in messages if m["id"] not in here and m["id"] not in deleted}
    hangs: dict[str, bool] = {}  # a new message: whether its parents lead to one here

    def placed(message_id: str) -> bool:
        trail, node = [], message_id
        while node in new and node not in hangs:
            parent = new[node]["parent_id"]
            if parent is None or parent in here:
                hangs[node] = True
                break
            trail.append(node)
            node = parent
        for step in trail:
            hangs[step] = hangs.get(node, False)
        return hangs[message_id]

    return [m for m in messages if m["id"] in new and placed(m["id"])]


def _tombstoned(db, message_ids: list[str]) -> set[str]:
    """Those of ``message_ids`` deleted here (a tombstone that is not a rewrite)."""
    found: set[str] = set()
    for start in range(0, len(message_ids), 500):
        chunk = message_ids[start:start + 500]
        found.update(row[0] for row in db.execute(
            f"select id from {deletions.TABLE} where kind != ? and id in "
            f"({', '.join('?' * len(chunk))})", [deletions.REWRITTEN, *chunk]))
    return found


def _on_path(parents: dict[str, str | None], message_id: str, leaf: str) -> bool:
    """Whether ``message_id`` is ``leaf`` or one of its ancestors."""
    node: str | None = leaf
    while node is not None:
        if node == message_id:
            return True
        node = parents.get(node)
    return False


def _moment(stamp: str) -> dt.datetime:
    """An ISO time as an instant (one written without an offset is UTC, as Outpost writes)."""
    when = dt.datetime.fromisoformat(stamp)
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


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


def _taken(db, ids: list[str]) -> str | None:
    """Why the messages cannot be written: one of their ids is in another conversation."""
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        found = db.execute(f"select id from messages where id in ({', '.join('?' * len(chunk))})"
                           " limit 1", chunk).fetchone()
        if found:
            return f"its message {found[0]} is already in another conversation here"
    return None


def size_words(size: int) -> str:
    """A limit as a sentence says it: ``2 GB``, ``64 MB`` (binary units, as file managers
    round them)."""
    for unit, scale in (("GB", 2 ** 30), ("MB", 2 ** 20), ("KB", 2 ** 10)):
        if size >= scale:
            return f"{size / scale:g} {unit}"
    return f"{size} bytes"


def _where(path: Path) -> Where:
    return Where(path.name or str(path))


def _conversations(path: Path) -> Iterator[tuple[str, ConversationRows | None]]:
    """Each conversation of the file, checked, with the file's format, as it is read; then
    ``(format, None)`` once the whole file is read and checked."""
    where = _where(path)
    if not path.exists():
        raise UsageError(f"There is no file {path}.")
    if path.is_dir():
        raise UsageError(f"{path} is a folder; give the export file itself.")
    too_big = UsageError(f"{path.name} is larger than {size_words(MAX_IMPORT_BYTES)}, the most "
                         "Outpost imports at once; nothing was imported.")
    try:
        if path.stat().st_size > MAX_IMPORT_BYTES:
            raise too_big
        with path.open("rb") as handle:
            entries = json_stream.top_level(handle, "conversations", MAX_IMPORT_BYTES,
                                            MAX_CONVERSATION_CHARS)
            first = next(entries, None)
            if first is not None and first.kind == "list" and first.key is None:
                yield from _chatgpt(entries, where)
            elif first is not None and first.kind != "value":
                yield from _outpost(first, entries, where)
            else:
                outpost_json.check_header({}, where, whole=True)  # not an export: says so
    except OSError as exc:
        raise UsageError(f"{path} could not be read: {exc.strerror or exc}.") from None
    except json_stream.TooBig as exc:
        if exc.entry is None:
            raise too_big from None
        what = f"conversation {exc.entry.index}" if exc.entry.kind == "item" else \
            f"its {exc.entry.key or 'content'}"
        raise where.fail(f"{what} is larger than {size_words(MAX_CONVERSATION_CHARS)}, the "
                         "most Outpost reads as one conversation") from None
    except json_stream.NotUtf8:
        raise where.fail("it is not UTF-8 text, so not a JSON export") from None
    except json_stream.JsonSyntaxError as exc:
        if path.suffix.lower() in _READABLE_SUFFIXES:  # an export to read
            raise where.fail("a Markdown or HTML export is for reading; only a JSON export "
                             "(Outpost's, or ChatGPT's conversations.json) can be imported "
                             "back") from None
        raise where.fail(f"it is not valid JSON ({exc})") from None
    except RecursionError:
        raise where.fail(f"it nests lists or objects more than {MAX_NESTING} deep") from None
    except json_stream.NotJsonNumber as exc:
        raise where.fail(f"it is not valid JSON ({exc} is not a JSON number)") from None
    except ValueError:  # Python reads integers of at most 4300 digits
        raise where.fail("it is not valid JSON (it holds a number thousands of digits long)"
                         ) from None


def _chatgpt(entries: Iterator[json_stream.Entry], where: Where
             ) -> Iterator[tuple[str, ConversationRows | None]]:
    seen: set[str] = set()
    for entry in entries:
        _check_depth(entry.value, 1, where)
        if not chatgpt.is_conversation(entry.value):
            if entry.index == 1:  # a list of something else
                outpost_json.check_header({}, where, whole=True)
            raise where.at(f"conversation {entry.index}").fail(
                'it is not a ChatGPT conversation (an object with a "mapping")')
        assert isinstance(entry.value, dict)
        yield CHATGPT, chatgpt.conversation(entry.value, entry.index, where, seen)
    yield CHATGPT, None


def _outpost(first: json_stream.Entry, entries: Iterator[json_stream.Entry], where: Where
             ) -> Iterator[tuple[str, ConversationRows | None]]:
    """An object's members; its conversations are checked as they come. Outpost writes its keys
    sorted, so the conversations come before the format and version: a problem in one of them
    is told only once the whole top level says the file is Outpost's (else it is not an
    export at all, or of a newer version, and that is the sentence)."""
    members: dict = {}
    seen = outpost_json.Seen()
    problem: UsageError | None = None
    for entry in _chain(first, entries):
        if entry.kind in ("member", "list") and entry.key in members:  # json.loads: the last
            raise where.fail(f"it has the field {entry.key!r} twice")
        if entry.kind == "member":
            _check_depth(entry.value, 1, where)
            members[entry.key] = entry.value
        elif entry.kind == "list":
            members[entry.key] = []  # streamed: its items follow
        elif problem is None:
            _check_depth(entry.value, 2, where)
            header = "format" in members and "version" in members
            if header:
                outpost_json.check_header(members, where, whole=False)
            try:
                rows = outpost_json.conversation(entry.value, entry.index, where, seen)
            except UsageError as exc:
                if header:
                    raise
                problem = exc  # the rest is still read, for its format and version
                continue
            yield OUTPOST, rows
        else:
            _check_depth(entry.value, 2, where)
    outpost_json.check_header(members, where, whole=True)
    if problem is not None:
        raise problem
    yield OUTPOST, None


def _chain(first: json_stream.Entry, rest: Iterator[json_stream.Entry]
           ) -> Iterator[json_stream.Entry]:
    yield first
    yield from rest


def _check_depth(value: object, above: int, where: Where) -> None:
    """``above``: how many lists or objects hold ``value`` in the file."""
    if shape.depth_of(value) + above > MAX_NESTING:
        raise where.fail(f"it nests lists or objects more than {MAX_NESTING} deep")
