"""A deleted message's words are nowhere else either: the saved KV states (which hold a
prompt's tokens, from which its words can be read back) go when messages are deleted, whichever
way: a conversation, a message and what is below it, a profile with its conversations."""
from __future__ import annotations

import pytest

from app.compose import build_service
from app.config.settings import Settings
from app.domain.messages import Role
from app.storage.profiles import Profiles
from app.storage.store import Store
from engines.registry import kv_cache_dir


@pytest.fixture
def store(outpost_home):
    store = Store()
    build_service(store, Settings(), "ana")  # (what the window and every command build)
    yield store
    store.close()


def saved_states() -> list[str]:
    return sorted(p.name for p in kv_cache_dir().glob("*.kv"))


def save_some_states() -> None:
    folder = kv_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("model-1a2b.kv", "model-3c4d.kv"):
        (folder / name).write_bytes(b"OUTPOST-KV tokens of a prompt")
    (folder / "not-a-state.txt").write_text("kept")


def test_deleting_a_conversation_or_a_message_forgets_the_saved_states(store):
    chat = store.create_conversation("Patient notes", profile="ana")
    question = store.add_message(chat.id, Role.USER, "KVSECRET patient notes")
    store.add_message(chat.id, Role.ASSISTANT, "Noted.", parent_id=question.id)
    save_some_states()
    store.delete_subtree(question.id)
    assert saved_states() == [] and (kv_cache_dir() / "not-a-state.txt").exists()
    save_some_states()
    store.delete_conversation(chat.id)
    assert saved_states() == []


def test_removing_a_profile_with_its_conversations_forgets_them_too(store):
    profiles = Profiles(store)
    admin = profiles.ensure_default("ana")
    profiles.add("bo", admin)
    store.create_conversation("Bo's chat", profile="bo")
    save_some_states()
    assert profiles.remove("bo", admin, delete_conversations=True) == 1
    assert saved_states() == []
