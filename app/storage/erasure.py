"""Deleted text leaves the database file, not only the tables.

A ``DELETE`` makes rows unreachable; their bytes stay in the file until reused. Three places
kept a deleted message readable to anyone who reads the file (``grep -a``, a disk image):

* **Freed space.** ``PRAGMA secure_delete = ON`` (set on every connection:
  ``app.storage.connections``) makes SQLite overwrite a deleted row's cell, and pages it frees,
  with zeros. Builds differ in the default (Debian's is on, many others are off).
* **The full-text index.** FTS5 records a delete as a marker in a new segment; the message's
  words stay in the older segments until they are merged. ``merge_search_index`` merges every
  segment into one ('optimize'): the deleted entries are dropped and the old segments' pages
  freed (zeroed, above). It rewrites the whole index: ~1 s at 100k messages (160 MB),
  ``python -m bench.erase``; ~2.3-2.8 s at a million, which held the write lock throughout
  (a reply being saved waited). ``merge_search_index_step`` does the same in steps of
  ``MERGE_PAGES`` pages ('merge' with a negative size: the incremental 'optimize'), each its
  own transaction: at a million, ~36 steps of at most ~0.12 s, then nothing left for an
  'optimize' to do, and the deleted words gone from the file alike. FTS5's own
  ``secure-delete`` option (SQLite 3.42+) would cost only the deleted rows, but it moves the
  index to a format that SQLite before 3.42 cannot read at all ("invalid fts5 file format"),
  for good: a portable install or a backup opened by an older SQLite would lose search.
  Python's SQLite here is 3.40.
* **The write-ahead log.** Every page ever committed is in ``outpost.db-wal`` until a
  checkpoint copies it back; ``empty_log`` checkpoints and truncates the log to 0 bytes. A
  reader in another process (the window while ``outpost`` runs) can hold it back: then the log
  is emptied by a later checkpoint (SQLite's own, every 1000 pages, or the last close).

What this does not reach: copies outside the file (the backups: ``app.storage.backup_erasure``
deletes it from them when the user asks), and what the disk or file system keeps of blocks a
file no longer uses (journaling file systems, SSDs): full-disk encryption covers those.
"""
from __future__ import annotations

import sqlite3

import sqlite_utils

SEARCH_INDEX = "messages_fts"


MERGE_PAGES = 500  # index pages written per step of the merge (one transaction each)
MOST_MERGE_STEPS = 100_000  # a bound (writers may add segments as it goes): ~50 M pages


def merge_search_index_step(db: sqlite_utils.Database) -> bool:
    """One step of merging the full-text index into one segment, ``MERGE_PAGES`` index pages at
    most (inside the caller's write transaction); False when there was nothing left to merge
    (FTS5 changes at least two rows when a merge does any work)."""
    if SEARCH_INDEX not in db.table_names():
        return False
    before = db.conn.total_changes
    db.execute(f"INSERT INTO {SEARCH_INDEX}({SEARCH_INDEX}, rank) VALUES ('merge', ?)",
               [-MERGE_PAGES])
    return db.conn.total_changes - before >= 2


def merge_search_index(db: sqlite_utils.Database) -> None:
    """Merge the full-text index into one segment, dropping what deleted messages left in it
    (inside the caller's write transaction)."""
    if SEARCH_INDEX in db.table_names():
        db.execute(f"INSERT INTO {SEARCH_INDEX}({SEARCH_INDEX}) VALUES ('optimize')")


def blank_outbox_requests(conn: sqlite3.Connection, message_ids: list[str]) -> None:
    """The outbox items of deleted questions (``message_ids``): a queued one is not sent any
    more, and none keeps the words of the request it was to send (the item stays, cancelled,
    to say so); one being sent is left to its sender. Inside the caller's transaction."""
    marks = ", ".join("?" * len(message_ids))
    conn.execute(f"UPDATE outbox SET state = 'cancelled' WHERE user_message_id IN ({marks}) "
                 "AND state IN ('queued', 'failed')", message_ids)
    conn.execute(
        "UPDATE outbox SET request = json_set(request, '$.messages', (SELECT "
        "json_group_array(json_object('role', json_extract(value, '$.role'), 'content', '')) "
        "FROM json_each(request, '$.messages')), '$.assistant_prefix', '') "
        f"WHERE user_message_id IN ({marks}) AND state != 'sending'", message_ids)


def empty_log(conn: sqlite3.Connection) -> bool:
    """Checkpoint the write-ahead log and truncate it to 0 bytes; False when a reader
    elsewhere kept it from being emptied (not an error: a later checkpoint empties it)."""
    busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    return not busy
