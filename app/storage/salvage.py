"""Restoring a backup in place of a damaged database without losing what came after it.

A backup is up to a day old, and damage is often in a page that holds no conversation (the
request log, an index). So when the file a restore replaced is damaged (it fails
``PRAGMA quick_check``), what it still holds is read, table by table, every row that can be
read (past a damaged page too, row by row: ``_read``), from a copy (the kept file and its
write-ahead log, in a temporary folder: the kept file is never changed), and brought into the
restored database:

* ``profiles``: those the backup does not have (not as the admin: the backup's stays);
* ``conversations`` and ``messages``: those the backup does not have, and those changed since
  it (``updated_at`` newer: a reply that finished, a renamed chat), in one transaction;
* ``outbox``: the messages waiting for a provider, the same way (an item sent since is sent);
* ``request_log`` (the usage ledger): every record of a request the database lacks. What was
  used and spent is a fact about the past, which no backup undoes: without it the usage
  report, the Usage dialog and the monthly cost budget said $0 for requests already paid for.
  A record is never changed after it is written, and its ``id`` is no key across copies (the
  restored database gives the next requests the ids the copy gave its own), so a record is
  known by its turn, provider, attempt and time (``_LEDGER_KEY``): one the database has is
  not added again. ``quota_holds`` (what running requests reserve) is left: no request of the
  copy is running.

A row that cannot go in (a message whose conversation could not be read, a row that reads as
garbage: ``_sound``) is left out and counted; rows that could not be read at all are counted
per table, those the database lacks after the salvage only, where an index names them (a row
the backup holds is no loss: ``_still_lost``). A file restored on purpose over a healthy one
is a rollback: nothing is brought over but the usage ledger's records (the replaced file is
kept in the backups folder either way).

Deletions hold (``app.storage.deletions``): the copy's tombstones are merged with the
database's; a row deleted later than the copy's row was last changed is not brought over, and
the database's rows deleted since (a restored backup's, a rollback's) are deleted again.
"""
from __future__ import annotations

import datetime as dt
import json
import shutil
import sqlite3
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from app.domain.errors import OutpostError, UsageError
from app.domain.wording import counted
from app.storage import deletions
from app.storage.backups import SQLITE_MAGIC, Backup, Backups, quick_check_file
from app.storage.restore import restore_backup, set_aside_damaged
# the store's own readers of a row: a row brought over must read as one of its own
from app.storage.rows import row_to_conversation, row_to_message
from app.storage.store import Store

# in this order (a conversation's profile, a message's conversation), with their keys
TABLES = (("profiles", "name"), ("conversations", "id"), ("messages", "id"), ("outbox", "id"))
_NEWER_WINS = {"conversations", "messages", "outbox"}
# the key a row is known by in any copy (an outbox item's id is its rowid: none)
_KEYS = {table: key for table, key in TABLES if table != "outbox"}
# the usage ledger, and what tells one of its records from another in any copy (not its id)
_LEDGER = "request_log"
_LEDGER_KEY = ("idempotency_key", "provider", "attempt", "created_at")
# a number read off garbage would count against a budget
_LEDGER_NUMBERS = ("attempt", "status", "latency_ms", "prompt_tokens", "completion_tokens",
                   "cached_prompt_tokens", "tokens_estimated", "cost_usd", "cost_estimated",
                   "ttft_ms")
_NOUNS = {"profiles": "profile", "conversations": "conversation", "messages": "message",
          "outbox": "outbox item", deletions.TABLE: "deletion record",
          _LEDGER: "usage record"}
_TIMES = ("created_at", "updated_at", "locked_until")  # ISO times, in the tables read
# How many rowids in a row may give no row before a table read by rowid is taken as ended,
# when nothing else says where it ends (see ``_read_by_rowid``). Rowids are given out one
# above the highest, so gaps come only from rows deleted (a deleted conversation's
# messages): this is far more than one makes, and 10,000 lookups take a fraction of a second.
_GAP = 10_000


@dataclass
class Unread:
    """Rows of a table (or the file) that could not be read from the damaged file."""

    table: str  # or "the file"
    why: str  # SQLite's words for the first failure
    rows: int | None = None  # how many (None: not known, nothing of it could be read)
    exact: bool = True  # False: rowids the damage hides, some may be of rows deleted before
    more: bool = False  # rows after the last one read may be lost too (not counted)
    # the keys of the rows counted, when an index names them: a salvage then counts only
    # those the database still lacks after it (``_still_lost``)
    keys: list | None = None

    def describe(self) -> str:
        """"2 messages could not be read (why)" and the like."""
        if self.rows is None:
            return f"{self.table} could not be read ({self.why})"
        noun = _NOUNS.get(self.table, f"{self.table} row")
        if self.exact:
            return f"{counted(self.rows, noun)} could not be read ({self.why})"
        if not self.rows:  # only rows after the last one read, if there were any
            return f"{noun}s after the last one read could not be read ({self.why})"
        after = ", and any after the last one read," if self.more else ""
        return f"up to {counted(self.rows, noun)}{after} could not be read ({self.why})"


@dataclass
class Salvage:
    """What was brought over from the damaged file."""

    rows: dict[str, int] = field(default_factory=dict)  # per table: added or brought up to date
    left_out: int = 0  # rows read that could not go in
    unreadable: list[Unread] = field(default_factory=list)  # tables read only in part
    failed: str | None = None  # why nothing could be brought over at all
    # deleted since (not brought over, or deleted again): conversations, and messages outside
    # them, by id
    deleted: dict[str, set[str]] = field(
        default_factory=lambda: {"conversations": set(), "messages": set()})
    # only deletions and usage records were carried over (a restore over a good file)
    rollback: bool = False

    def describe_deleted(self, since: str = "since") -> str | None:
        """"1 conversation and 2 messages deleted ``since`` stay deleted" (None: none)."""
        conversations, messages = (len(self.deleted["conversations"]),
                                   len(self.deleted["messages"]))
        if not conversations and not messages:
            return None
        what = " and ".join(counted(n, noun) for n, noun in (
            (conversations, "conversation"), (messages, "message")) if n)
        verb = "stays" if conversations + messages == 1 else "stay"
        return f"{what} deleted {since} {verb} deleted"

    def describe(self, source: str = "the damaged file", than: str | None = "the backup"
                 ) -> str:
        """One sentence for the user: what came from ``source``, newer than ``than`` (None:
        into a new, empty database)."""
        if self.failed is not None:
            return self.failed
        deleted = self.describe_deleted("since the backup" if than == "the backup" else
                                        "here")
        ledger = self.rows.get(_LEDGER, 0)
        used = f"{counted(ledger, 'usage record')} (what requests used and cost)"
        if self.rollback:  # (only when something was deleted again or kept in the ledger)
            kept = (f"{used} made since the backup {'stays' if ledger == 1 else 'stay'} in "
                    "the usage ledger") if ledger else None
            return "; ".join(part for part in (deleted, kept) if part) + "."
        conversations, messages = self.rows.get("conversations", 0), \
            self.rows.get("messages", 0)
        newer = f" newer than {than}" if than else ""
        lacked = f" that {than} lacked" if than else ""
        queued = self.rows.get("outbox", 0)
        if conversations or messages:
            text = (f"From {source}, {counted(conversations, 'conversation')} and "
                    f"{counted(messages, 'message')}"
                    + (f" (and {counted(queued, 'outbox item')})" if queued else "")
                    + f"{newer} were brought back"
                    + (f", and {used}{lacked}" if ledger else ""))
        elif ledger:
            text = f"From {source}, {used}{lacked} {'was' if ledger == 1 else 'were'} " \
                   "brought back"
        else:
            text = f"Nothing{newer} could be read from {source}"
        if self.left_out:
            text += f" ({counted(self.left_out, 'row')} could not be)"
        if deleted:
            text += f"; {deleted}"
        for unread in self.unreadable:
            text += f"; {unread.describe()}"
        return text + "."


def restore_and_salvage(db_path: Path, name: str | None = None
            ) -> tuple[Backup, Path | None, Salvage | None]:
    """``restore_backup``, then, when the file it replaced is damaged, what that file still
    holds brought over; when it is healthy (a rollback), only its deletions and usage records,
    so that what was deleted since the backup stays deleted and what was spent since stays
    counted (None: nothing to bring, or no file replaced)."""
    backup, kept = restore_backup(db_path, name)
    if kept is None:
        return backup, kept, None
    rollback = quick_check_file(kept) is None
    try:
        store = Store(db_path, daily_backup=False)
        try:
            if rollback:  # nothing is brought over; what was deleted since stays deleted
                carried = carry_deletions(kept, store)
                return backup, kept, carried if carried.describe_deleted() or \
                    carried.rows.get(_LEDGER) else None
            return backup, kept, salvage(kept, store)
        finally:
            store.close()
    except (OutpostError, OSError, sqlite3.Error) as exc:  # the restore itself is done
        return backup, kept, Salvage(failed=f"What the damaged file held could not be brought "
                                            f"over ({exc}); it is kept as {kept}.")


def start_over_and_salvage(db_path: Path) -> tuple[Path, Salvage]:
    """A damaged database with no good backup: keep it in the backups folder, start a new
    one, and bring into it what the damaged file still holds (``salvage``). Outpost starts and
    answers again, with every conversation that could be read. Returns where the damaged file
    is kept, and what came over. Refused for a database that passes its check (there is
    nothing to start over from: it is whole) and when a good backup exists (a restore
    keeps more: the backup's messages, and what the damaged file holds since)."""
    if db_path.exists() and quick_check_file(db_path) is None:
        raise UsageError(f"The database {db_path} is not damaged (it passes its check); "
                         "nothing was changed. Starting over is for a damaged database with no "
                         "good backup.")
    good = Backups(db_path).newest_good()
    if good is not None:
        raise UsageError(f"There is a good backup ({good.describe()}): `outpost backup "
                         "restore` puts it back and brings back what the damaged file holds "
                         "since; nothing was changed.")
    kept = set_aside_damaged(db_path)
    try:
        store = Store(db_path, daily_backup=False)
        try:
            return kept, salvage(kept, store, new_database=True)
        finally:
            store.close()
    except (OutpostError, OSError, sqlite3.Error) as exc:  # the new database is there
        return kept, Salvage(failed=f"What the damaged file held could not be brought over "
                                    f"({exc}); it is kept as {kept}.")


def salvage(damaged: Path, store: Store, new_database: bool = False,
            named: bool = False) -> Salvage:
    """Bring what ``damaged`` (a kept copy, with its ``-wal`` beside it) can still give into
    ``store`` (see the module's docstring). ``new_database``: ``store`` was started over
    empty, so the damaged file's admin is its admin (else the database's own admin stays the
    one there is, and a profile made admin since comes back as a plain one). ``named``: a
    file the user named (``outpost backup salvage FILE``, after ``refuse_non_sqlite``): an
    SQLite database without Outpost's tables is refused (``UsageError``) before anything is
    written."""
    result = Salvage()
    read = _read_copy(damaged, [table for table, _ in TABLES] + [deletions.TABLE, _LEDGER],
                      result)
    if read is None:
        return result
    if named and not result.unreadable and not any(columns for columns, _ in read.values()):
        # its schema was read, and it holds none of Outpost's tables
        raise _foreign(damaged, "it is an SQLite database without Outpost's tables")
    with store.transaction() as db:
        gone = _merge_deletions(db, read[deletions.TABLE])
        admin_taken = not new_database or db.execute(
            "select 1 from profiles where is_admin = 1").fetchone() is not None
        for table, key in TABLES:
            columns, rows = read[table]
            # (a message's search key is this database's own: the row gets one as it goes in)
            wanted = [c for c in columns if c in set(db[table].columns_dict)
                      and (table, c) != ("messages", "seq")]
            if not rows or key not in wanted:
                continue
            names = ", ".join(f'"{c}"' for c in wanted)
            marks = ", ".join("?" * len(wanted))
            if table in _NEWER_WINS and "updated_at" in wanted:
                # a message keeps the time it has here: a time and a text changed in one
                # statement re-keyed the row in the search index under its old text
                updates = ", ".join(f'"{c}" = excluded."{c}"' for c in wanted if c != key
                                    and (table, c) != ("messages", "created_at"))
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
                if gone and _deleted_since(table, columns, row, gone, result):
                    continue
                if not _sound(table, columns, row):
                    result.left_out += 1
                    continue
                values = [row[i] for i in index]
                if table == "outbox" and not _asks_something(db, dict(zip(wanted, values))):
                    result.left_out += 1  # its conversation or question could not be read
                    continue
                if admin is not None:
                    if values[admin] and not admin_taken:
                        admin_taken = True
                    else:
                        values[admin] = 0
                try:
                    count += db.conn.execute(sql, values).rowcount
                except sqlite3.IntegrityError:  # its conversation (or a value) is missing
                    result.left_out += 1
            result.rows[table] = count
        result.rows[_LEDGER] = _bring_ledger(db, read[_LEDGER], result)
        _still_lost(db, result, gone)
        _delete_again(db, result)
    if result.describe_deleted():
        store.forgot()  # their words out of the file too
    return result


def refuse_non_sqlite(path: Path) -> None:
    """``UsageError`` when the file the user named to salvage from is no SQLite database at
    all, told by its first bytes: empty, or something else (a JSON export, a text). Checked
    before the database is opened. Only what no damage explains: a damaged page or a file cut
    short is what a salvage reads past."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise UsageError(f"{path} cannot be read ({exc.strerror or exc}); nothing was "
                         "brought over.") from None
    if head.startswith(SQLITE_MAGIC):
        return
    if not head:
        raise _foreign(path, "it is empty: 0 bytes")
    if head.lstrip()[:1] in (b"{", b"["):
        raise _foreign(path, "it is JSON; an export is read back with `outpost import`")
    raise _foreign(path, "it does not begin as an SQLite database does")


def _foreign(path: Path, why: str) -> UsageError:
    return UsageError(f"{path} is not an Outpost database ({why}); nothing was brought over.")


def carry_deletions(kept: Path, store: Store) -> Salvage:
    """A rollback: ``kept`` (the healthy file a restore replaced) is not merged, but its
    deletions are, so what was deleted since the backup stays deleted, and its usage records
    the backup lacks, so what was used and spent since stays counted (``_bring_ledger``)."""
    result = Salvage(rollback=True)
    read = _read_copy(kept, [deletions.TABLE, _LEDGER], result)
    if read is None or not (read[deletions.TABLE][1] or read[_LEDGER][1]):
        return result
    with store.transaction() as db:
        _merge_deletions(db, read[deletions.TABLE])
        result.rows[_LEDGER] = _bring_ledger(db, read[_LEDGER], result)
        _delete_again(db, result)
    if result.describe_deleted():
        store.forgot()
    return result


def _read_copy(damaged: Path, tables: list[str], result: Salvage
               ) -> dict[str, tuple[list[str], list[tuple]]] | None:
    """(columns, rows) of each of ``tables`` that ``damaged`` (with its ``-wal`` beside it)
    can give, read from a copy in a temporary folder (``damaged`` is never changed); None when
    the file cannot be opened at all (said in ``result``)."""
    with tempfile.TemporaryDirectory(prefix="outpost-salvage-") as folder:
        copy = Path(folder) / "damaged.db"
        for suffix in ("", "-wal", "-shm"):
            source = damaged.with_name(damaged.name + suffix)
            if source.exists():
                shutil.copyfile(source, copy.with_name(copy.name + suffix))
        try:
            source_db = sqlite3.connect(copy)
        except sqlite3.Error as exc:
            result.unreadable.append(Unread("the file", str(exc)))
            return None
        # a text of bytes that are not UTF-8 (garbage on a page) is read with "\ufffd" for
        # them, rather than stop reading its table there
        source_db.text_factory = lambda data: data.decode("utf-8", "replace")
        try:
            return {table: _read(source_db, table, result) for table in tables}
        finally:
            source_db.close()


def _bring_ledger(db, read: tuple[list[str], list[tuple]], result: Salvage) -> int:
    """The copy's usage records (as read) that the database lacks, added; how many. A
    record the database has (the same ``_LEDGER_KEY``) is not added again, so nothing is
    counted twice, however often a copy is salvaged; the record gets this database's next
    ``id``. One that reads as garbage (``_sound``) is left out and counted."""
    columns, rows = read
    have = set(db[_LEDGER].columns_dict)
    if not rows or not set(_LEDGER_KEY) <= set(columns) & have:
        return 0
    wanted = [c for c in columns if c in have and c != "id"]
    index = [columns.index(c) for c in wanted]
    key_at = [columns.index(c) for c in _LEDGER_KEY]
    names = ", ".join(f'"{c}"' for c in _LEDGER_KEY)
    known = set(db.execute(f'SELECT {names} FROM "{_LEDGER}"').fetchall())
    into = ", ".join(f'"{c}"' for c in wanted)
    sql = f'INSERT INTO "{_LEDGER}" ({into}) VALUES ({", ".join("?" * len(wanted))})'
    count = 0
    for row in rows:
        key = tuple(row[i] for i in key_at)
        if key in known:
            continue
        if not _sound(_LEDGER, columns, row):
            result.left_out += 1
            continue
        db.conn.execute(sql, [row[i] for i in index])
        known.add(key)
        count += 1
    return count


def _merge_deletions(db, read: tuple[list[str], list[tuple]]) -> dict:
    """The copy's tombstones (as read) merged into the database's; the merged ones."""
    columns, rows = read
    if {"id", "kind", "deleted_at"} <= set(columns):
        at = [columns.index(c) for c in ("id", "kind", "deleted_at")]
        deletions.merge(db.conn, [tuple(row[i] for i in at) for row in rows])
    return deletions.read(db.conn)


def _deleted_since(table: str, columns: list[str], row: tuple, gone: dict,
                   result: Salvage) -> bool:
    """Whether the copy's ``row`` of ``table`` was deleted here later than it was last
    changed (counted in ``result.deleted``: a conversation, or a message outside one)."""
    if table not in _NEWER_WINS:
        return False
    record = defaultdict(lambda: None, zip(columns, row))
    if table == "conversations":
        ids = [record["id"]]
    elif table == "messages":
        ids = [record["id"], record["conversation_id"]]
    else:  # an outbox item of a deleted conversation or question goes with it
        ids = [record["conversation_id"], record["user_message_id"]]
    if not deletions.deleted_since(gone, record["updated_at"], *ids):
        return False
    if table == "conversations":
        result.deleted["conversations"].add(record["id"])
    elif table == "messages" and record["conversation_id"] not in gone:
        result.deleted["messages"].add(record["id"])
    return True


def _delete_again(db, result: Salvage) -> None:
    """The database's own rows its (merged) tombstones cover, deleted (counted)."""
    removed = deletions.apply(db.conn)
    for kind, ids in removed.items():
        result.deleted[kind] |= ids


def _still_lost(db, result: Salvage, gone: dict) -> None:
    """Rows that could not be read and that the database has anyway (the backup held them,
    unchanged or not) or that were deleted are no loss: not counted (a table left with none
    is not named). Only where an index named the rows' keys (``Unread.keys``)."""
    kept = []
    for unread in result.unreadable:
        if unread.keys is not None:
            key = _KEYS[unread.table]
            unread.rows = sum(1 for value in unread.keys if value is None or (
                value not in gone and db.execute(
                    f'SELECT 1 FROM "{unread.table}" WHERE "{key}" = ?', [value]
                    ).fetchone() is None))
            if not unread.rows:
                continue
        kept.append(unread)
    result.unreadable = kept


def _asks_something(db, item: dict) -> bool:
    """Whether an outbox item's conversation and question are in the database (the outbox
    has no foreign keys: an item whose question is lost would break every send)."""
    return bool(db.execute("SELECT 1 FROM messages WHERE id = ? AND conversation_id = ?",
                           [item.get("user_message_id"), item.get("conversation_id")]
                           ).fetchone())


def _sound(table: str, columns: list[str], row: tuple) -> bool:
    """Whether ``row`` of ``table`` reads as a row Outpost wrote: the store's own reader takes
    it (a role and status it knows, JSON where JSON goes) and its times are times. A damaged
    page the tree does not notice (one of a long message's overflow chain: its tail, status
    and times) reads without an error, as garbage; brought over, it would stop its
    conversation from opening, and a garbage ``updated_at`` would win over the backup's row.
    Text is not judged: bytes that are not UTF-8 are read with U+FFFD for them."""
    record = defaultdict(lambda: None, zip(columns, row))  # a column an older file lacks: None
    try:
        if table == "messages":
            row_to_message(record)
        elif table == "conversations":
            row_to_conversation(record)
        elif table == "outbox":
            json.loads(record["request"])  # the request it sends, whole
        elif table == _LEDGER:  # counted by its time, and its numbers summed
            if record["created_at"] is None or any(
                    record[c] is not None and not isinstance(record[c], (int, float))
                    for c in _LEDGER_NUMBERS):
                return False
        for column in _TIMES:
            if record[column] is not None:
                dt.datetime.fromisoformat(record[column])
    except (ValueError, TypeError):  # json.JSONDecodeError is a ValueError
        return False
    return True


def _read(source: sqlite3.Connection, table: str, result: Salvage
          ) -> tuple[list[str], list[tuple]]:
    """(columns, rows) of ``table``: every row that can be read, in rowid order.

    A scan of the table stops at its first damaged page, but the rows after that page are
    still there: a lookup by rowid goes down the table's tree to its own page only. So when
    the scan fails, the rows it did not reach are looked up one by one (``_read_by_rowid``),
    and those that cannot be read are counted in ``result.unreadable``. A scan that goes
    through can still miss rows (a damaged page that reads as holding other rowids): the rows
    an index lists and the scan did not give are looked up too, and counted when they give
    none."""
    try:
        columns = [r[1] for r in source.execute(f'PRAGMA table_info("{table}")')]
    except sqlite3.DatabaseError as exc:  # the schema itself: nothing of the table
        result.unreadable.append(Unread(table, str(exc)))
        return [], []
    if not columns:
        return [], []
    names = ", ".join(f'"{c}"' for c in columns)
    found: dict[int, tuple] = {}
    try:
        for rowid, *row in source.execute(f'SELECT rowid, {names} FROM "{table}" '
                                          'ORDER BY rowid'):
            found[rowid] = tuple(row)
    except sqlite3.DatabaseError as exc:  # damaged here: what came before is kept
        unread = _read_by_rowid(source, table, names, found, str(exc))
    else:
        listed = _listed_rowids(source, table)
        unread = _read_listed(source, table, names, found, listed,
                              "its index lists rows the table does not give") \
            if listed is not None and listed - found.keys() else None
    if unread is not None:
        if unread.exact:  # (counted from an index's list)
            unread.keys = _lost_keys(source, table, columns, found)
        result.unreadable.append(unread)
    return columns, [found[rowid] for rowid in sorted(found)]


def _read_listed(source: sqlite3.Connection, table: str, names: str, found: dict[int, tuple],
                 listed: set[int], why: str) -> Unread | None:
    """Look up the rows an index of ``table`` lists (``listed``) that are not in ``found``
    yet, into it; what could not be read (None: every one was found). A listed row is a row
    the table holds: a lookup that fails or gives no row is a row lost, counted."""
    select = f'SELECT {names} FROM "{table}" WHERE rowid = ?'
    lost = 0
    for rowid in sorted(listed - found.keys()):
        try:
            row = source.execute(select, [rowid]).fetchone()
        except sqlite3.DatabaseError:
            row = None
        if row is None:
            lost += 1
        else:
            found[rowid] = tuple(row)
    return Unread(table, why, lost) if lost else None


def _lost_keys(source: sqlite3.Connection, table: str, columns: list[str],
               found: dict[int, tuple]) -> list | None:
    """The keys (``_KEYS``) of the rows of ``table`` that the index of its key lists and
    ``found`` lacks, or holds another row for (a damaged cell that reads as another rowid):
    the rows lost, by key (an index holds the key and the rowid: it is read without the
    table's pages, where the damage is). None when no such index can be read."""
    key = _KEYS.get(table)
    if key is None or key not in columns:
        return None
    at = columns.index(key)
    try:
        for index in [r[1] for r in source.execute(f'PRAGMA index_list("{table}")')]:
            if [r[2] for r in source.execute(f'PRAGMA index_info("{index}")')] != [key]:
                continue
            listed = source.execute(f'SELECT rowid, "{key}" FROM "{table}" INDEXED BY '
                                    f'"{index}"').fetchall()
            return [value for rowid, value in listed
                    if rowid not in found or found[rowid][at] != value]
    except sqlite3.DatabaseError:  # the index is damaged too: each row stays counted
        return None
    return None


def _read_by_rowid(source: sqlite3.Connection, table: str, names: str,
                   found: dict[int, tuple], why: str) -> Unread | None:
    """Look up, one by one, the rows of ``table`` its scan did not reach, into ``found``
    (rowid: row); what could not be read (None: nothing, every row was found after all).

    Which rowids to look up: those an index of the table lists, when one can be read whole
    (an index is a tree of its own, on other pages: it names every row, the damaged ones
    too, so the count of rows that could not be read is exact: a listed rowid that gives no
    row is a row lost as much as one whose lookup fails). Otherwise every rowid after
    the last one the scan read, up to ``max(rowid)`` when it answers and that row can be
    read (the end of the table), else on until ``_GAP`` rowids in a row give no row. A
    rowid whose lookup fails before the last row found is counted ("up to": it may have
    been a row deleted before), failures after it are only said (the rest of the table
    lost, or nothing: it cannot be told)."""
    select = f'SELECT {names} FROM "{table}" WHERE rowid = ?'
    failed: list[int] = []

    def look_up(rowid: int) -> bool:
        """Read the row ``rowid`` into ``found`` (a lookup that fails: into ``failed``);
        whether there was one."""
        try:
            row = source.execute(select, [rowid]).fetchone()
        except sqlite3.DatabaseError:
            failed.append(rowid)
            return False
        if row is not None:
            found[rowid] = tuple(row)
        return row is not None

    listed = _listed_rowids(source, table)
    if listed is not None:
        return _read_listed(source, table, names, found, listed, why)
    end = _end(source, table)
    # rowids are given out from 1 (the table's first rowid when the scan read none)
    rowid = last = max(found, default=0)
    while (rowid < end) if end is not None else (rowid - last < _GAP):
        rowid += 1
        if look_up(rowid):
            last = rowid
    if not failed:
        return None
    hidden = sum(1 for r in failed if r <= last)  # between rows: a row, or one deleted
    return Unread(table, why, hidden, exact=False, more=hidden < len(failed))


def _listed_rowids(source: sqlite3.Connection, table: str) -> set[int] | None:
    """The rowids of ``table`` as the first of its indexes that can be read whole lists
    them (a partial index lists only some rows: not used); None when none can be."""
    try:
        indexes = [(r[1], r[4]) for r in source.execute(f'PRAGMA index_list("{table}")')]
    except sqlite3.DatabaseError:
        return None
    for index, partial in indexes:
        if partial:
            continue
        try:
            return {r[0] for r in source.execute(
                f'SELECT rowid FROM "{table}" INDEXED BY "{index}"')}
        except sqlite3.DatabaseError:  # damaged too: the next one
            continue
    return None


def _end(source: sqlite3.Connection, table: str) -> int | None:
    """``max(rowid)`` of ``table`` (found down the right edge of its tree, without a scan),
    when it answers and that row can be read (a number read off a damaged page is not
    taken); None otherwise."""
    try:
        end = source.execute(f'SELECT max(rowid) FROM "{table}"').fetchone()[0]
        if end is None or source.execute(f'SELECT 1 FROM "{table}" WHERE rowid = ?',
                                         [end]).fetchone() is None:
            return None
    except sqlite3.DatabaseError:
        return None
    return end
