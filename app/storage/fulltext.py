"""Full-text search over message content (FTS5, the index ``app.storage.migrations`` keeps),
newest first by the messages' time, in bounded windows: the query under both ``history search``
and the window's search (``app.storage.search`` turns what a user types into its query and its
hits into snippets)."""
from __future__ import annotations

import json
import sqlite3

from app.domain.errors import BadSearch, StorageError
from app.domain.messages import Message
from app.storage.connections import Connections
from app.storage.rows import row_to_message
from app.storage.sqlite_errors import storage_error_class, storage_errors


# how FTS5 says a query is not valid (SQLite 3.40): a quote left open, an operator with nothing
# after it, a word before ":" taken for a column, NEAR's distance; any other SQLITE_ERROR (too
# many SQL variables, say) is not the user's query and stays a storage error
QUERY_ERRORS = ("fts5: ", "unterminated string", "no such column", "expected integer",
                "unknown special query")


class FullTextSearch(Connections):
    """Full-text search of ``app.storage.store.Store``.

    The plan (bench/search.py measures it at a million messages). The index's rowid is each
    message's ``seq``: a unique key in the order of its ``created_at``, ties in the order they
    were stored (migration m014), so newest first is highest key first, whenever a message was
    stored (an imported history, salvage). Ranking every match by bm25 made a very common word
    cost ~0.5 s (every hit scored, then sorted), and FTS5's ``ORDER BY rowid DESC`` is no cure:
    it reads a term's whole doclist to walk it backwards (~0.85 s for "the"). FTS5 does seek to
    a rowid range cheaply, so the search walks back from the newest message in windows, each a
    number of messages counted down the key's index (``idx_messages_seq``: ~20 ns a message,
    so a window's bounds cost far less than its matches; raw key ranges would not do, as keys
    are times and a range of them may hold a day or a whole imported year). A window holds
    about SEARCH_TARGET matches at the last one's density: a common word needs one small
    window, a rare one a few growing ones, and once a window would pass SEARCH_REST messages
    it is every message left (no counting), as is the last of SEARCH_WINDOWS windows: a search
    never stops before ``limit`` or the oldest message. A window's matches are checked against
    the profile through their keys only (one JSON array: a window may hold more matches than
    SQLite takes parameters). In one conversation (Ctrl+F) the windows stay within the keys
    from its first message to its last, and its own keys (read once) pick its matches:
    1.0-1.2 ms p50 at a million, in the conversation stored first, halfway or last (before:
    "too many SQL variables" for "the" in any but the newest). A conversation spread over
    many others (its span holds over SPREAD times its own messages) is searched by its own
    keys instead, each looked up in the index: 200 messages spread over the million, 5.5 ms
    for "the", 3.1 for a rare word, 10 for two words (walking its span: 150, 30, 31 ms).

    Measured (bench/search.py, a million messages, the last fifth an older history stored
    after the rest; 2 cores at load ~4), p50 / p95: "the" 1.8 / 4.4 ms, "th" 2.1 / 2.4, a rare
    word 2.2 / 3.0, two words 3.2 / 7.3; by rowid, as before (newest stored first, so the older
    history's hits), 1.7 / 2.0, 1.9 / 2.3, 0.7 / 1.0, 0.7 / 1.0: the difference for the rare
    shapes is mostly counting ~58,000 messages for the windows before the last."""

    SEARCH_TARGET = 400
    SEARCH_WINDOWS = 40
    SEARCH_REST = 1 << 17
    # Ctrl+F in a conversation whose span holds more than SPREAD times its own messages (a
    # short chat continued now and then over months of others): each of its own keys is
    # looked up instead, KEYS_PER_ASK at first, twice as many each time after (up to 8x)
    SPREAD = 8
    KEYS_PER_ASK = 64

    def search_seqs(self, query: str, limit: int = 50, profile: str | None = None,
                    conversation_id: str | None = None) -> list[int]:
        """The keys (``messages.seq``) of the newest messages matching the FTS5 ``query`` (in
        that profile or conversation), newest first, at most ``limit``."""
        # the scope is checked on a window's keys only, never by SQLite walking the
        # conversation index over every message of the profile (60 ms at a million); a
        # conversation's own keys bound the windows and are checked here, in Python
        own: set[int] | None = None
        floor: int | None = None  # the lowest key a window may reach (None: the oldest)
        high: int | None = None  # the window's end (not in it); None: the newest
        found: list[int] = []
        with storage_errors(self.path):
            if conversation_id is not None:
                own, floor, high = self._conversation_keys(conversation_id, profile)
                if not own:
                    return []
            try:
                if own is not None and self._spread(own, floor, high):
                    return self._by_own_keys(query, own, limit)
                window = 2 * self.SEARCH_TARGET
                for tried in range(1, self.SEARCH_WINDOWS + 1):
                    every = window >= self.SEARCH_REST or tried == self.SEARCH_WINDOWS
                    low = None if every else self._seq_below(high, window)
                    if floor is not None and (low is None or low <= floor):
                        low = floor  # the conversation's first message: the last window
                    last = low is None or low == floor
                    page = self._window(query, low, high)
                    if own is not None:
                        page = [seq for seq in page if seq in own]
                    elif page and profile is not None:
                        page = self._in_profile(page, profile)
                    found += page
                    if last or len(found) >= limit:
                        break  # every message was in a window, or enough are found
                    # the next window: about SEARCH_TARGET matches (or as many as are still
                    # wanted) at this one's density
                    wanted = max(self.SEARCH_TARGET, limit - len(found))
                    grow = wanted / len(page) if page else 8.0
                    window = int(window * min(64.0, max(1.0, grow)))
                    high = low
            except sqlite3.OperationalError as exc:
                # FTS5 reports query syntax as OperationalError; disk/lock problems stay
                # storage errors
                if storage_error_class(exc) is StorageError and \
                        str(exc).startswith(QUERY_ERRORS):  # the query's syntax, nothing else
                    raise BadSearch(query, str(exc), "put words in double quotes to search "
                                    "them as they are") from None
                raise
        return found[:limit]

    def _conversation_keys(self, conversation_id: str, profile: str | None
                           ) -> tuple[set[int], int | None, int | None]:
        """The keys of a conversation's messages (none when it is not in ``profile``), the
        lowest, and the end of the highest (not in it): a search in one conversation looks at
        that range only (a small chat among a million messages, stored long ago, costs the
        matches of its own span, not of everything stored since)."""
        if profile is not None and self.db.execute(
                "SELECT 1 FROM conversations WHERE id = ? AND profile = ?",
                [conversation_id, profile]).fetchone() is None:
            return set(), None, None
        own = {r[0] for r in self.db.execute(
            "SELECT seq FROM messages WHERE conversation_id = ? AND seq IS NOT NULL",
            [conversation_id])}
        if not own:
            return own, None, None
        return own, min(own), max(own) + 1

    def _spread(self, own: set[int], low: int | None, high: int | None) -> bool:
        """Whether a conversation's span holds more than ``SPREAD`` times its own messages
        (counted down the key's index, at most that many: ~20 ns a message)."""
        cap = self.SPREAD * len(own)
        return self.db.execute(
            "SELECT count(*) FROM (SELECT 1 FROM messages WHERE seq >= ? AND seq < ? LIMIT ?)",
            [low, high, cap]).fetchone()[0] >= cap

    def _by_own_keys(self, query: str, own: set[int], limit: int) -> list[int]:
        """The matches among ``own`` keys, newest first: the index asked about each key
        (~25 us a key at a million, a very common word or none), a growing piece of them at a
        time from the newest, until ``limit`` are found."""
        keys, found = sorted(own, reverse=True), []
        start, size = 0, self.KEYS_PER_ASK
        while start < len(keys) and len(found) < limit:
            piece = keys[start:start + size]
            found += sorted((r[0] for r in self.db.execute(
                "SELECT rowid FROM messages_fts WHERE messages_fts MATCH ? AND rowid IN "
                f"({','.join('?' * len(piece))})", [query, *piece])), reverse=True)
            start, size = start + size, min(2 * size, 8 * self.KEYS_PER_ASK)
        return found[:limit]

    def _in_profile(self, page: list[int], profile: str) -> list[int]:
        """The keys of ``page`` whose messages are in ``profile``'s conversations, in order.
        The keys go in as one JSON array: a window may hold more matches than SQLite takes
        parameters (32,766; a search in a profile with few, old conversations failed so)."""
        kept = {r[0] for r in self.db.execute(
            "SELECT m.seq FROM json_each(?) j CROSS JOIN messages m ON m.seq = j.value "
            "CROSS JOIN conversations c ON c.id = m.conversation_id WHERE c.profile = ?",
            [json.dumps(page), profile])}
        return [seq for seq in page if seq in kept]

    def _seq_below(self, high: int | None, count: int) -> int | None:
        """The key ``count`` messages down from ``high`` (not counted; None: from the newest),
        counted down the key's index; None when fewer messages are left."""
        if high is None:
            row = self.db.execute("SELECT seq FROM messages WHERE seq IS NOT NULL ORDER BY "
                                  "seq DESC LIMIT 1 OFFSET ?", [count - 1]).fetchone()
        else:
            row = self.db.execute("SELECT seq FROM messages WHERE seq < ? ORDER BY seq DESC "
                                  "LIMIT 1 OFFSET ?", [high, count - 1]).fetchone()
        return None if row is None else row[0]

    def _window(self, query: str, low: int | None, high: int | None) -> list[int]:
        """The keys of the messages matching ``query`` from ``low`` up to ``high`` (not
        included; None: no bound), newest first."""
        bounds, args = "", [query]
        if low is not None:
            bounds += " AND rowid >= ?"
            args.append(low)
        if high is not None:
            bounds += " AND rowid < ?"
            args.append(high)
        return sorted((r[0] for r in self.db.execute(
            f"SELECT rowid FROM messages_fts WHERE messages_fts MATCH ?{bounds}", args)),
            reverse=True)

    def search(self, query: str, limit: int = 50, profile: str | None = None,
               offset: int = 0) -> list[Message]:
        """Full-text search over message content (FTS5 query syntax), newest first, at most
        ``limit`` after the first ``offset``; ``profile``: only in that profile's
        conversations."""
        seqs = self.search_seqs(query, offset + limit, profile)[offset:]
        if not seqs:
            return []
        marks = ",".join("?" * len(seqs))
        with storage_errors(self.path):
            rows = {r["seq"]: r for r in self.db.query(
                f"SELECT * FROM messages WHERE seq IN ({marks})", seqs)}
        return [row_to_message(rows[s]) for s in seqs if s in rows]
