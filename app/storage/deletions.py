"""Deletions are remembered: a tombstone per deleted conversation or message (its id, what it
was, and when it was deleted; never a word of it), in the ``deletions`` table (migration
m015).

A copy of the database (a backup, a file a restore kept) still holds what was deleted after it
was taken. A salvage merges a copy's rows that are "missing or newer", and a restore puts an
older copy in place, so without a record of deletions both brought deleted conversations back.
With it (``app.storage.salvage``):

* a copy's row is not brought over when its id, or its conversation's, has a tombstone at or
  after the row's ``updated_at`` (deleted later than that row was last changed); a row changed
  after the deletion (in another copy's history) comes back;
* a copy's tombstones are merged with the database's (the later time kept), and rows of the
  database they cover are deleted: a restore of an older backup leaves deleted what was deleted
  since (``apply``).

A conversation or message written again under a deleted id (an import of an export) is marked
so (``forget``: kind ``rewritten``, the time it came back). Per id the latest mark wins, in the
database and when a copy's marks are merged, so an older copy's tombstone never deletes what
came back after it.
"""
from __future__ import annotations

import datetime as dt
import sqlite3
from typing import Iterable, Sequence

from app.storage.erasure import blank_outbox_requests

CONVERSATION, MESSAGE = "conversation", "message"
REWRITTEN = "rewritten"  # written again after it was deleted: not a tombstone any more
TABLE = "deletions"


def record(conn: sqlite3.Connection, kind: str, ids: Sequence[str], when: str) -> None:
    """Tombstones for ``ids`` (``CONVERSATION`` or ``MESSAGE``), inside the caller's
    transaction."""
    conn.executemany(f"INSERT INTO {TABLE} (id, kind, deleted_at) VALUES (?, ?, ?) "
                     "ON CONFLICT(id) DO UPDATE SET kind = excluded.kind, "
                     "deleted_at = excluded.deleted_at",
                     [(i, kind, when) for i in ids])


def drop_conversations(conn: sqlite3.Connection, ids: Sequence[str], when: str) -> None:
    """Delete conversations with their messages and outbox items, and record their
    tombstones, inside the caller's transaction (``Store.delete_conversation``, a profile
    removed with its conversations)."""
    for conversation_id in ids:
        conn.execute("DELETE FROM outbox WHERE conversation_id = ?", [conversation_id])
        conn.execute("DELETE FROM messages WHERE conversation_id = ?", [conversation_id])
        conn.execute("DELETE FROM conversations WHERE id = ?", [conversation_id])
    record(conn, CONVERSATION, ids, when)


def forget(conn: sqlite3.Connection, ids: Iterable[str], when: str) -> None:
    """``ids`` are written again (at ``when``): no longer deleted, nor by an older tombstone
    merged from a copy later. Only ids that had a tombstone are marked."""
    listed = list(ids)
    for start in range(0, len(listed), 500):
        chunk = listed[start:start + 500]
        conn.execute(f"UPDATE {TABLE} SET kind = ?, deleted_at = ? WHERE id IN "
                     f"({', '.join('?' * len(chunk))})", [REWRITTEN, when, *chunk])


def merge(conn: sqlite3.Connection, marks: Iterable[tuple[str, str, str]]) -> None:
    """Another copy's marks (id, kind, time) into the database's, inside the caller's
    transaction: per id, the later one wins."""
    conn.executemany(f"INSERT INTO {TABLE} (id, kind, deleted_at) VALUES (?, ?, ?) "
                     f"ON CONFLICT(id) DO UPDATE SET kind = excluded.kind, deleted_at = "
                     f"excluded.deleted_at WHERE julianday(excluded.deleted_at) > "
                     f"julianday({TABLE}.deleted_at)",
                     [m for m in marks if m[0] is not None and m[2] is not None])


def read(conn: sqlite3.Connection) -> dict[str, dt.datetime]:
    """The database's tombstones: id -> when it was deleted (times that do not read as times,
    garbage on a damaged page, are not taken)."""
    found = {}
    for row_id, when in conn.execute(f"SELECT id, deleted_at FROM {TABLE} WHERE kind != ?",
                                     [REWRITTEN]):
        stamp = parse_time(when)
        if row_id is not None and stamp is not None:
            found[row_id] = stamp
    return found


def parse_time(value) -> dt.datetime | None:
    """An ISO time as an aware datetime (one without a zone is UTC); None when it is not."""
    try:
        stamp = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.timezone.utc)


def deleted_since(tombstones: dict[str, dt.datetime], updated_at,
                  *ids: str | None) -> bool:
    """Whether a row last changed at ``updated_at`` was deleted later (any of ``ids``: its
    own, its conversation's, has a tombstone at or after that time)."""
    changed = parse_time(updated_at)
    for row_id in ids:
        when = tombstones.get(row_id) if row_id is not None else None
        if when is not None and (changed is None or when >= changed):
            return True
    return False


def apply(conn: sqlite3.Connection) -> dict[str, set[str]]:
    """Delete the database's rows its tombstones cover (deleted at or after they were last
    changed), with their messages, what is below a deleted message, and their outbox items;
    inside the caller's transaction. Returns the ids of the conversations that went, and of
    the messages outside them."""
    tombstones = read(conn)
    conversations = {row_id for row_id, updated_at in conn.execute(
        f"SELECT c.id, c.updated_at FROM {TABLE} d JOIN conversations c ON c.id = d.id")
        if deleted_since(tombstones, updated_at, row_id)}
    messages = {row_id for row_id, conversation_id, updated_at in conn.execute(
        f"SELECT m.id, m.conversation_id, m.updated_at FROM {TABLE} d JOIN messages m "
        f"ON m.id = d.id UNION SELECT m.id, m.conversation_id, m.updated_at FROM {TABLE} d "
        "JOIN messages m ON m.conversation_id = d.id")
        if deleted_since(tombstones, updated_at, row_id, conversation_id)}
    if not conversations and not messages:
        return {"conversations": set(), "messages": set()}
    conn.execute("CREATE TEMP TABLE doomed (id TEXT PRIMARY KEY, conversation_id TEXT)")
    conn.executemany("INSERT OR IGNORE INTO temp.doomed SELECT id, conversation_id FROM "
                     "messages WHERE id = ?", [(m,) for m in messages])
    conn.executemany("INSERT OR IGNORE INTO temp.doomed SELECT id, conversation_id FROM "
                     "messages WHERE conversation_id = ?", [(c,) for c in conversations])
    below = list(conn.execute(
        "WITH RECURSIVE below(id, conversation_id) AS (SELECT id, conversation_id FROM "
        "temp.doomed UNION SELECT m.id, m.conversation_id FROM messages m JOIN below b ON "
        "m.parent_id = b.id) SELECT id, conversation_id FROM below"))
    conn.executemany("INSERT OR IGNORE INTO temp.doomed VALUES (?, ?)", below)
    doomed = list(conn.execute("SELECT id, conversation_id FROM temp.doomed"))
    ids = [row_id for row_id, _ in doomed]
    for start in range(0, len(ids), 500):
        blank_outbox_requests(conn, ids[start:start + 500])
    conn.execute("UPDATE outbox SET answer_message_id = NULL "
                 "WHERE answer_message_id IN (SELECT id FROM temp.doomed)")
    conn.executemany("DELETE FROM outbox WHERE conversation_id = ?",
                     [(c,) for c in conversations])
    conn.execute("UPDATE conversations SET active_leaf_id = NULL "
                 "WHERE active_leaf_id IN (SELECT id FROM temp.doomed)")
    conn.execute("DELETE FROM messages WHERE id IN (SELECT id FROM temp.doomed)")
    conn.executemany("DELETE FROM conversations WHERE id = ?", [(c,) for c in conversations])
    conn.execute("DROP TABLE temp.doomed")
    return {"conversations": conversations,
            "messages": {row_id for row_id, c in doomed if c not in conversations}}
