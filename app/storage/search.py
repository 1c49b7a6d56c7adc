"""Full-text search for the window: hits with highlighted snippets, titles and dates.

The words a user types are not FTS5 syntax (a quote, a dash or ``AND`` would be an error or an
operator): ``fts_query`` turns them into a query that finds messages containing every word,
the last one as a prefix (results while typing); ``command_line_query`` does the same for
``outpost history search``, every word as a prefix, unless the query is written in FTS5
syntax. ``search_hits`` runs it against the messages' FTS5 index (``app.storage.migrations``),
newest first by the messages' time, and marks the matched words in each snippet (the message
as it reads: Markdown's marks left out, code as written) with ``MARK_START``/``MARK_END`` (the
window escapes the text, then turns the marks into bold).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from app.domain.errors import BadSearch
from app.storage.sqlite_errors import storage_errors
from app.storage.store import Store

MARK_START, MARK_END = "\x02", "\x03"
_WORD = re.compile(r"\w+", re.UNICODE)
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class SearchHit:
    message_id: str
    conversation_id: str
    conversation_title: str
    role: str
    created_at: str
    snippet: str  # the matched words between MARK_START and MARK_END


def _words(text: str, prefix: str) -> str | None:
    """Every word of ``text`` as a quoted FTS5 term; with ``prefix`` "last" the last word,
    with "every" each word, is also the start of a longer one, unless a symbol follows it
    right away (``C++``, ``C#``: the word is whole; as a prefix "C" found every word in c).
    None when there is no word."""
    found = list(_WORD.finditer(text))
    if not found:
        return None
    terms = []
    for index, word in enumerate(found):
        end = word.end()
        whole = end < len(text) and not text[end].isspace()
        open_ended = prefix == "every" or prefix == "last" and index == len(found) - 1 and \
            end == len(text)  # (still typing it)
        terms.append(f'"{word.group()}"' + ("*" if open_ended and not whole else ""))
    return " ".join(terms)


def fts_query(text: str) -> str | None:
    """Every word of ``text`` must appear (the last may be the start of a word: results while
    typing); None when there is no word to look for."""
    return _words(text, "last")


# what makes a command-line query FTS5 syntax rather than words: a phrase or prefix mark, a
# group, or an operator in capitals (not a colon: "TODO: fix" is words, not a column filter)
_FTS_SYNTAX = re.compile(r'["*()]|\b(?:AND|OR|NOT|NEAR)\b')
# a query written in FTS5 syntax, piece by piece: a phrase (maybe a prefix), NEAR( and its
# closing ", N)", a bracket, or anything else up to a space, quote, bracket or comma
_PIECE = re.compile(r'"[^"]*"\*?|NEAR\(|,\s*\d+\s*\)|[()]|[^\s"(),]+')
_OPERATORS = frozenset({"AND", "OR", "NOT"})


def command_line_query(text: str) -> str | None:
    """``outpost history search``'s query. Plain words: every word at the start of a word in
    the message (``lighthouse`` finds "lighthouses", as the window's search finds it while it
    is typed). With FTS5 syntax (phrases, ``*``, brackets, ``AND``/``OR``/``NOT`` between two
    terms, ``NEAR(…, N)``), that syntax, each bare word in it taken as words (``e-mail``,
    ``Error:``, ``C#`` or ``don't`` are words, not a column filter or a syntax error); an
    operator with nothing on one side is a word. None when there is no word; ``BadSearch``
    for a quote left open."""
    if not _FTS_SYNTAX.search(text):
        return _words(text, "every")
    if text.count('"') % 2:
        raise BadSearch(text, "a quote is not closed")
    pieces = _PIECE.findall(text)
    out: list[str] = []
    depth = 0
    for index, piece in enumerate(pieces):
        after = pieces[index + 1] if index + 1 < len(pieces) else None
        if piece.startswith('"'):
            out.append(piece if _WORD.search(piece) else "")
        elif piece in ("(", "NEAR("):
            depth += 1
            out.append(piece)
        elif piece == ")" or piece.startswith(","):
            if depth == 0:
                continue  # a bracket closing nothing
            depth -= 1
            out.append(piece)
        elif piece in _OPERATORS and out and out[-1] not in ("", "(", "NEAR(", *_OPERATORS) \
                and after is not None and after != ")" and not after.startswith(","):
            out.append(piece)
        else:
            words = _WORD.findall(piece)
            out.append('"' + " ".join(words) + '"' + ("*" if piece.endswith("*") else "")
                       if words else "")
    query = " ".join(p for p in out if p) + ")" * depth
    return query if _WORD.search(query) else None


def words_query(text: str) -> str | None:
    """``text`` as plain words whatever it looks like (every word a prefix): what a query
    that is not valid FTS5 syntax is searched as."""
    return _words(text, "every")


# Markdown as a snippet shows it: code as it is (a fence's lines and a span's backticks left
# out); in prose, emphasis marks that come in pairs around text, a heading's, a quote's or a
# list item's start of line, and a link's target (its text stays). A lone * or _ (2 * 3,
# count_lamps, __init__ in prose) is text.
_CODE = re.compile(r"^[ \t]{0,3}(```|~~~)[^\n]*\n(.*?)(?:^[ \t]{0,3}\1[ \t]*$\n?|\Z)"
                   r"|(`+)(.+?)\3", re.MULTILINE | re.DOTALL)
_EMPHASIS = re.compile(r"(\*\*|~~)(?=\S)(.+?)(?<=\S)\1"
                       r"|(?<![\w*])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![\w*])"
                       r"|(?<!\w)(__?)(?=[^\s_])(.+?)(?<=[^\s_])\4(?!\w)", re.DOTALL)
_LINE_MARKS = re.compile(r"^[ \t]{0,3}(?:#{1,6}[ \t]+|>[ \t]?|[-*+][ \t]+|\d{1,9}[.)][ \t]+)",
                         re.MULTILINE)
_LINK = re.compile(r"!?\[([^\]\n]*)\]\([^)\n]*\)")


def _prose(markdown: str) -> str:
    text = _LINE_MARKS.sub("", _LINK.sub(r"\1", markdown))
    for _ in range(2):  # ***both*** is two pairs
        text = _EMPHASIS.sub(lambda m: m.group(2) or m.group(3) or m.group(5) or "", text)
    return text


def plain_text(markdown: str) -> str:
    """``markdown`` as it reads: ``**dry** trails`` is "dry trails"; code stays as written
    (```` `self._fit()` ```` is "self._fit()", ``2**8`` in a code block is "2**8")."""
    parts, done = [], 0
    for code in _CODE.finditer(markdown):
        parts += [_prose(markdown[done:code.start()]),
                  code.group(2) if code.group(1) else code.group(4)]
        done = code.end()
    return "".join(parts) + _prose(markdown[done:])


def snippet(content: str, text: str, width: int = 120) -> str:
    """The part of ``content`` around the first word of ``text`` it contains, as it reads
    (Markdown's marks left out), the words marked (the last one as a prefix, as the search
    matched it), on one line (a newline or a run of spaces is one space: a hit is a line).
    Made here rather than by FTS5's snippet(), which evaluates the whole query again for
    every hit (seconds for a prefix at a million messages)."""
    content = plain_text(content)
    words = _WORD.findall(text)
    if not words:
        return _SPACES.sub(" ", content[:width]).strip()
    typing = not text.endswith(tuple(" \"'"))
    alternatives = [re.escape(w) + (r"\w*" if typing and i == len(words) - 1 else r"\b")
                    for i, w in enumerate(words)]
    pattern = re.compile(r"\b(?:" + "|".join(alternatives) + ")", re.IGNORECASE | re.UNICODE)
    first = pattern.search(content)
    start = 0 if first is None else max(0, first.start() - width // 3)
    if start:
        space = content.find(" ", start)
        start = space + 1 if 0 <= space < first.start() else start
    end = min(len(content), start + width)
    piece = pattern.sub(lambda m: MARK_START + m.group(0) + MARK_END, content[start:end])
    piece = _SPACES.sub(" ", piece).strip()  # one line: a list's or a code block's too
    return ("…" if start else "") + piece + ("…" if end < len(content) else "")


def search_hits(store: Store, text: str, *, profile: str | None = None,
                conversation_id: str | None = None, limit: int = 50,
                offset: int = 0) -> list[SearchHit]:
    """Messages matching the words of ``text``, newest first by their time (the bounded plan
    of ``Store.search_seqs``), at most ``limit`` after the first ``offset`` (a next page:
    ask for one more than is shown to know whether more match, never counting them all);
    ``conversation_id``: only in that conversation; ``profile``: only in that profile's
    conversations."""
    query = fts_query(text)
    if query is None:
        return []
    seqs = store.search_seqs(query, offset + limit, profile=profile,
                             conversation_id=conversation_id)[offset:]
    if not seqs:
        return []
    marks = ",".join("?" * len(seqs))
    sql = ("SELECT m.seq, m.id, m.conversation_id, c.title, m.role, m.created_at, m.content "
           "FROM messages m JOIN conversations c ON c.id = m.conversation_id "
           f"WHERE m.seq IN ({marks})")
    with storage_errors(store.path):
        rows = {row[0]: row[1:] for row in store.db.execute(sql, seqs).fetchall()}
    return [SearchHit(*rows[s][:5], snippet(rows[s][5], text)) for s in seqs if s in rows]
