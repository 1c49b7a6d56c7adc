"""A deleted message's words leave the database file itself: not in the rows' freed space, not
in the full-text index, not in the write-ahead log. Each test reads the bytes of ``outpost.db``
and ``outpost.db-wal`` for a word that was only in what was deleted.

SQLite builds differ in whether freed space is overwritten (``secure_delete``: on in Debian's,
off in many others): every connection here starts as such a build's would, with it off, so
the store must turn it on itself."""
from __future__ import annotations

import sqlite3

import pytest

from app.domain.messages import ChatMessage, ChatRequest, Role
from app.storage.outbox import Outbox
from app.storage.profiles import Profiles
from app.storage.store import Store
from tests.support import files_holding

_connect = sqlite3.connect


@pytest.fixture(autouse=True)
def a_build_that_keeps_freed_space(monkeypatch):
    """Every new connection starts with ``secure_delete`` off, as in many SQLite builds."""

    def connect(*args, **kwargs):
        conn = _connect(*args, **kwargs)
        conn.execute("PRAGMA secure_delete = OFF")
        return conn

    monkeypatch.setattr(sqlite3, "connect", connect)


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "outpost.db")
    yield store
    store.close()


def chat_with(store: Store, secret: str, title: str = "Notes") -> tuple[str, str]:
    """A conversation whose question and long answer (over several pages) hold ``secret``."""
    chat = store.create_conversation(title)
    question = store.add_message(chat.id, Role.USER, f"Tell me about {secret} please")
    store.add_message(chat.id, Role.ASSISTANT, f"{secret} is " + "a long answer " * 800
                      + secret, parent_id=question.id)
    return chat.id, question.id


def kept_chats(store: Store) -> None:
    """Other conversations, which stay: the index is shared with them."""
    for n in range(30):
        chat = store.create_conversation(f"kept {n}")
        store.add_message(chat.id, Role.USER, f"lighthouse keeper number{n} " * 20)


def test_a_deleted_conversations_words_are_not_in_the_file(store):
    kept_chats(store)
    chat_id, _ = chat_with(store, "zanzibarquokka", title="zanzibarquokka trip")
    kept_chats(store)
    assert files_holding(store.path, "zanzibarquokka")

    store.delete_conversation(chat_id)

    assert files_holding(store.path, "zanzibarquokka") == []
    assert [m.content for m in store.search("number7")]  # the index still answers
    assert store.search("zanzibarquokka") == []
    store.close()
    assert files_holding(store.path, "zanzibarquokka") == []
    assert store.integrity_check() == "ok"


def test_the_index_is_merged_in_steps_each_its_own_transaction(store, monkeypatch):
    """The merge rewrites the whole index (~2.5 s at a million messages) and held the write
    lock throughout: a reply saved meanwhile waited for all of it. It goes in steps, each
    committed on its own (a trace of the statements), and the words still leave the file,
    the index merged as far as an 'optimize' would (nothing left for one to do)."""
    import app.storage.erasure as erasure

    monkeypatch.setattr(erasure, "MERGE_PAGES", 1)
    kept_chats(store)
    chat_id, _ = chat_with(store, "wombatcardamom")
    kept_chats(store)
    statements: list[str] = []
    store.db.conn.set_trace_callback(statements.append)

    store.delete_conversation(chat_id)

    store.db.conn.set_trace_callback(None)
    merges = [i for i, s in enumerate(statements) if "'merge'" in s]
    commits = [i for i, s in enumerate(statements) if s.strip().upper() == "COMMIT"]
    assert len(merges) >= 3
    assert all(any(a < c < b for c in commits) for a, b in zip(merges, merges[1:]))
    assert files_holding(store.path, "wombatcardamom") == []
    before = store.db.conn.total_changes
    store.db.execute("INSERT INTO messages_fts(messages_fts) VALUES ('optimize')")
    assert store.db.conn.total_changes - before < 2  # one segment already
    assert [m.content for m in store.search("number7")]


def test_a_deleted_messages_words_are_not_in_the_file(store):
    kept_chats(store)
    chat_id, question_id = chat_with(store, "quetzalpangolin")
    store.add_message(chat_id, Role.USER, "an earlier branch stays", parent_id=None)
    kept_chats(store)

    store.delete_subtree(question_id)

    assert files_holding(store.path, "quetzalpangolin") == []
    assert [m.content for m in store.messages(chat_id)] == ["an earlier branch stays"]


def test_a_profiles_deleted_conversations_are_not_in_the_file(store):
    profiles = Profiles(store)
    admin = profiles.ensure_default("ana")
    profiles.add("bo", admin)
    kept_chats(store)
    chat_id, _ = chat_with(store, "okapimarmalade")
    with store.transaction() as db:
        db["conversations"].update(chat_id, {"profile": "bo"})

    assert profiles.remove("bo", admin, delete_conversations=True) == 1

    assert files_holding(store.path, "okapimarmalade") == []


def test_a_queued_request_for_a_deleted_question_keeps_none_of_its_words(store):
    """The outbox keeps the request it will send, the question's words with it; a deleted
    question's item stays cancelled (the outbox says so), without them."""
    chat_id, question_id = chat_with(store, "narwhalsaffron")
    request = ChatRequest(messages=(ChatMessage(Role.USER, "Tell me about narwhalsaffron"),),
                          model="m", idempotency_key="k1")
    item = Outbox(store).enqueue(chat_id, question_id, "fault", "m", request)

    store.delete_subtree(question_id)

    assert files_holding(store.path, "narwhalsaffron") == []
    kept = Outbox(store).get(item.id)
    assert kept.state.value == "cancelled" and kept.prompt == ""
