"""Full-text search for the window: hits with highlighted snippets, titles and dates.

The words a user types are not FTS5 syntax (a quote, a dash or ``AND`` would be an error or an
operator): ``fts_query`` turns them into a query that finds messages containing every word,
the last one as a prefix (results while typing). ``search_hits`` runs it against the messages'
FTS5 index (``app.storage.migrations``), best match first, and marks the matched words in each
snippet with ``MARK_START``/``MARK_END`` (the window escapes the text, then turns the marks
into bold).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from app.storage.store import Store, storage_errors

MARK_START, MARK_END = "\x02", "\x03"
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class SearchHit:
    message_id: str
    conversation_id: str
    conversation_title: str
    role: str
    created_at: str
    snippet: str  # the matched words between MARK_START and MARK_END


def fts_query(text: str) -> str | None:
    """Every word of ``text`` must appear (the last may be the start of a word); None when
    there is no word to look for."""
    words = _WORD.findall(text)
    if not words:
        return None
    quoted = [f'"{w}"' for w in words]
    if not text.endswith(tuple(" \"'")):  # still typing the last word
        quoted[-1] += "*"
    return " ".join(quoted)


def search_hits(store: Store, text: str, *, profile: str | None = None,
                conversation_id: str | None = None, limit: int = 50) -> list[SearchHit]:
    """Messages matching the words of ``text``, newest first (the bounded plan of
    ``Store.search_rowids``); ``conversation_id``: only in that conversation; ``profile``:
    only in that profile's conversations. Snippets are made for the hits only."""
    query = fts_query(text)
    if query is None:
        return []
    rowids = store.search_rowids(query, limit, profile=profile, conversation_id=conversation_id)
    if not rowids:
        return []
    marks = ",".join("?" * len(rowids))
    sql = ("SELECT m.rowid, m.id, m.conversation_id, c.title, m.role, m.created_at, "
           "snippet(messages_fts, 0, ?, ?, '…', 16) "
           "FROM messages_fts JOIN messages m ON m.rowid = messages_fts.rowid "
           "JOIN conversations c ON c.id = m.conversation_id "
           f"WHERE messages_fts MATCH ? AND messages_fts.rowid IN ({marks})")
    with storage_errors(store.path):
        rows = {row[0]: row[1:] for row in store.db.execute(
            sql, [MARK_START, MARK_END, query] + rowids).fetchall()}
    return [SearchHit(*rows[r]) for r in rowids if r in rows]
