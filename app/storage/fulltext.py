"""Full-text search over message content (FTS5, the index ``app.storage.migrations`` keeps),
newest first, in bounded windows: the query under both ``history search`` and the window's
search (``app.storage.search`` turns what a user types into its query and its hits into
snippets)."""
from __future__ import annotations

import sqlite3

from app.domain.errors import StorageError, UsageError
from app.domain.messages import Message
from app.storage.connections import Connections
from app.storage.rows import row_to_message
from app.storage.sqlite_errors import storage_error_class, storage_errors


class FullTextSearch(Connections):
    """Full-text search of ``app.storage.store.Store``."""

    # one a few growing ones. A page's matches are filtered by profile or conversation through
    # their rowids only. At most SEARCH_WINDOWS windows are read (bench/search.py has the
    # figures).
    SEARCH_TARGET = 400
    SEARCH_WINDOWS = 40

    def search_rowids(self, query: str, limit: int = 50, profile: str | None = None,
                      conversation_id: str | None = None) -> list[int]:
        """The rowids of the newest messages matching the FTS5 ``query`` (in that profile or
        conversation), newest first, at most ``limit``."""
        # the scope is checked on a window's rowids only: "+" keeps SQLite from walking the
        # conversation index over every message of the profile instead (60 ms at a million)
        scope, args = [], []
        if conversation_id is not None:
            scope.append("+m.conversation_id = ?")
            args.append(conversation_id)
        if profile is not None:
            scope.append("c.profile = ?")
            args.append(profile)
        found: list[int] = []
        with storage_errors(self.path):
            try:
                top = self.db.execute("SELECT max(rowid) FROM messages").fetchone()[0]
                high = (top or 0) + 1
                window = 2 * self.SEARCH_TARGET
                for _ in range(self.SEARCH_WINDOWS):
                    if high <= 0 or len(found) >= limit:
                        break
                    low = max(0, high - window)
                    page = sorted((r[0] for r in self.db.execute(
                        "SELECT rowid FROM messages_fts WHERE messages_fts MATCH ? "
                        "AND rowid >= ? AND rowid < ?", [query, low, high]).fetchall()),
                        reverse=True)
                    if page and scope:
                        marks = ",".join("?" * len(page))
                        kept = {r[0] for r in self.db.execute(
                            "SELECT m.rowid FROM messages m CROSS JOIN conversations c ON "
                            f"c.id = m.conversation_id WHERE m.rowid IN ({marks}) AND "
                            + " AND ".join(scope), page + args).fetchall()}
                        page = [rowid for rowid in page if rowid in kept]
                    found += page
                    # the next window: about SEARCH_TARGET matches at this one's density
                    density = len(page) / (high - low)
                    grow = self.SEARCH_TARGET / (density * window) if density else 8.0
                    window = int(window * min(64.0, max(1.0, grow)))
                    high = low
            except sqlite3.OperationalError as exc:
                # FTS5 reports query syntax as OperationalError; disk/lock problems stay
                # storage errors
                if storage_error_class(exc) is StorageError:  # SQLITE_ERROR: the syntax
                    raise UsageError(f"The search {query!r} is not valid full-text search "
                                     f"syntax ({exc}); put words in double quotes to search "
                                     "them as they are.") from None
                raise
        return found[:limit]

    def search(self, query: str, limit: int = 50, profile: str | None = None) -> list[Message]:
        """Full-text search over message content (FTS5 query syntax), newest first;
        ``profile``: only in that profile's conversations."""
        rowids = self.search_rowids(query, limit, profile)
        if not rowids:
            return []
        marks = ",".join("?" * len(rowids))
        with storage_errors(self.path):
            rows = {r["rowid"]: r for r in self.db.query(
                f"SELECT rowid, * FROM messages WHERE rowid IN ({marks})", rowids)}
        return [row_to_message(rows[r]) for r in rowids if r in rows]
