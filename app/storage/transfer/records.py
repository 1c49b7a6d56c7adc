"""Conversations as rows of the database's own columns, between a file and the store.

The columns are this version's schema, read from the migrations themselves (applied once to an
in-memory database), so a column a later migration adds is exported, checked and imported
without a change here. Three kinds of column are told apart from the rest: JSON columns (stored
as text, written to files as the JSON they hold), flags (stored as 0/1, written as true/false),
and the columns a file never carries (``writer``: the process streaming a row, meaningless
elsewhere; ``conversation_id``: a message sits inside its conversation; ``seq``: its search key,
the database's own, given as it is stored).
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass

import sqlite_utils

from app.domain.errors import UsageError
from app.storage.migrations import MIGRATIONS
from app.storage.sqlite_errors import storage_errors
from app.storage.store import Store

CONVERSATIONS, MESSAGES = "conversations", "messages"
JSON_COLUMNS: dict[str, dict[str, type]] = {
    CONVERSATIONS: {"sampling": dict},
    MESSAGES: {"params": dict, "segments": list, "output_check": dict, "candidates": dict},
}
FLAG_COLUMNS = {MESSAGES: frozenset({"tokens_estimated", "cost_estimated"})}
NOT_IN_FILES = {CONVERSATIONS: frozenset(),
                MESSAGES: frozenset({"writer", "conversation_id", "seq"})}


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # TEXT, INTEGER, REAL
    required: bool  # NOT NULL without a default


@functools.lru_cache(maxsize=1)
def schema() -> dict[str, dict[str, Column]]:
    """table -> column name -> Column, for the two tables a file holds."""
    db = sqlite_utils.Database(memory=True)
    for migration in MIGRATIONS:
        migration(db)
    tables = {}
    for table in (CONVERSATIONS, MESSAGES):
        tables[table] = {c.name: Column(c.name, c.type.upper(), bool(c.notnull) and
                                        c.default_value is None)
                         for c in db[table].columns}
    db.close()
    return tables


def file_columns(table: str) -> list[str]:
    """The columns a file carries for ``table``, in the table's order."""
    return [name for name in schema()[table] if name not in NOT_IN_FILES[table]]


@dataclass
class ConversationRows:
    """One conversation ready to insert: rows as stored (JSON columns as text, flags as 0/1);
    ``left_out``: messages of the source that were not imported (see ``chatgpt``)."""

    conversation: dict
    messages: list[dict]
    left_out: int = 0

    @property
    def id(self) -> str:
        return self.conversation["id"]

    @property
    def title(self) -> str:
        return self.conversation.get("title") or ""


def to_file(table: str, row: dict) -> dict:
    """A stored row as a file holds it."""
    record = {}
    for name in file_columns(table):
        value = row.get(name)
        if value is not None and name in JSON_COLUMNS[table]:
            value = json.loads(value)
        elif value is not None and name in FLAG_COLUMNS.get(table, ()):
            value = bool(value)
        record[name] = value
    return record


def read_conversation(store: Store, conversation_id: str) -> tuple[dict, list[dict]]:
    """The conversation's row and every message row (all branches), oldest first; ties in
    time keep the order they were written in (rowid), as ``Store.messages`` does."""
    with storage_errors(store.path):
        db = store.db
        found = list(db.query("select * from conversations where id = ?", [conversation_id]))
        messages = list(db.query("select * from messages where conversation_id = ? "
                                 "order by created_at, rowid", [conversation_id]))
    if not found:
        raise UsageError(f"There is no conversation with id {conversation_id!r}.")
    return found[0], messages
