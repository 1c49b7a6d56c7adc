"""Exporting conversations: JSON (lossless, ``outpost_json``), Markdown or HTML (``readable``).

Everything is read in one read transaction, so a reply being written meanwhile is exported as
it was at one moment (never an active leaf without its message). Which conversations a profile
may export is the caller's business (the CLI exports only the signed-in profile's).

``export_pieces`` gives the file in pieces, a conversation at a time, each read from the
database only when its piece is asked for, so a writer (``files.write_pieces``) streams a
history of any size to disk holding one conversation in memory, not the whole file.

``secrets`` (the caller's known API keys) are masked in the file, as written (JSON- or
HTML-escaped too): replies are masked before they are stored, but a database written by an
older version may still hold a key a provider echoed.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import html
import json
from pathlib import PurePath
from typing import Iterable, Iterator, Sequence

from app.domain.errors import UsageError
from app.domain.messages import Conversation
from app.domain.secrets_mask import SecretMask
from app.storage.sqlite_errors import storage_errors
from app.storage.store import Store
from app.storage.transfer import outpost_json, readable

FORMATS = ("json", "md", "html")
_BY_SUFFIX = {".json": "json", ".md": "md", ".markdown": "md", ".html": "html", ".htm": "html"}


def format_for(path: str | None) -> str:
    """The format a file name asks for (``chats.html``: html); json otherwise."""
    return _BY_SUFFIX.get(PurePath(path).suffix.lower(), "json") if path else "json"


def export_conversations(store: Store, conversation_ids: list[str], fmt: str,
                         secrets: Iterable[str] = ()) -> str:
    """The conversations, in the order given, as the text of one file in ``fmt`` (whole: for
    small exports and tests; files are written from ``export_pieces``)."""
    return "".join(export_pieces(store, conversation_ids, fmt, secrets))


def export_pieces(store: Store, conversation_ids: list[str], fmt: str,
                  secrets: Iterable[str] = ()) -> Iterator[str]:
    """The text of one file in ``fmt``, in pieces that join into it: a conversation at a
    time, read when its piece is asked for (on the caller's thread: the store's connection
    is that thread's). An unknown format is refused here, before anything is read."""
    if fmt not in FORMATS:
        raise UsageError(f"Unknown export format {fmt!r}: use {', '.join(FORMATS)}.")
    written = {form for secret in secrets if secret
               for form in (secret, json.dumps(secret)[1:-1], html.escape(secret))}
    return _pieces(store, conversation_ids, fmt, SecretMask(written))


def _pieces(store: Store, conversation_ids: list[str], fmt: str,
            mask: SecretMask) -> Iterator[str]:
    text = mask.stream()  # a key split across two pieces is still masked
    with _snapshot(store):
        if fmt == "json":
            pieces = outpost_json.dump(store, conversation_ids)
        else:
            items = (_shown(store, conversation_id) for conversation_id in conversation_ids)
            if fmt == "md":
                pieces = readable.markdown(items)
            else:
                only = store.get_conversation(conversation_ids[0]).title \
                    if len(conversation_ids) == 1 else None
                pieces = readable.page(items, len(conversation_ids), only)
        for piece in pieces:
            shown = text.feed(piece)
            if shown:
                yield shown
    rest = text.flush()
    if rest:
        yield rest


def _shown(store: Store, conversation_id: str) -> readable.Shown:
    conversation = store.get_conversation(conversation_id)
    everything = store.messages(conversation_id)
    path = store.branch(conversation_id)
    by_parent: dict[str | None, list[str]] = {}
    for m in everything:  # oldest first: the first answer is version 1
        by_parent.setdefault(m.parent_id, []).append(m.id)
    versions = {mid: (i + 1, len(ids)) for ids in by_parent.values()
                for i, mid in enumerate(ids)}
    return readable.Shown(conversation, path, versions, len(everything) - len(path))


def changed_between(conversations: Sequence[Conversation], first: dt.date | None,
                    last: dt.date | None) -> list[Conversation]:
    """The conversations last changed (``updated_at``) on a local day from ``first`` to
    ``last``, both included (None: no bound), oldest first, as ``export --all`` orders them. A
    time written without an offset (an imported file may have one) is taken as UTC, as Outpost
    writes them."""
    start = dt.datetime.combine(first, dt.time()).astimezone() if first else None
    end = dt.datetime.combine(last + dt.timedelta(days=1), dt.time()).astimezone() \
        if last else None
    chosen = []
    for conversation in conversations:
        when = _aware(conversation.updated_at)
        if (start is None or when >= start) and (end is None or when < end):
            chosen.append(conversation)
    return sorted(chosen, key=lambda c: (c.created_at, c.id))


def _aware(stamp: str) -> dt.datetime:
    when = dt.datetime.fromisoformat(stamp)
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


@contextlib.contextmanager
def _snapshot(store: Store) -> Iterator[None]:
    """One read transaction on this thread's connection: every read inside sees one moment."""
    conn = store.db.conn
    with storage_errors(store.path):
        conn.execute("BEGIN")
    try:
        yield
    finally:
        with storage_errors(store.path):
            conn.execute("COMMIT")
