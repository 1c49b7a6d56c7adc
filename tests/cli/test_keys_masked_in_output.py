"""A stored text may hold one of the user's keys: a Local only chat checks none the keychain
holds, and a message queued before its key was stored was checked against none. ``history`` and
``outbox list`` print such a text masked, as exports do. In process (``cli.main``), a real
SQLite file, the key stored as the user stores it (``keep_key``) and this process made to
forget the keys it handled, as a fresh ``outpost`` would not know them."""
from __future__ import annotations

import pytest

from app import cli
from app.compose import build_service
from app.config.providers import ProviderConfig, ProviderRegistry
from app.config.settings import Settings
from app.storage.store import Store

KEY = "sk-stored-then-printed-2a3b4c5d6e7f8091"


def run(capsys, *args: str) -> tuple[int, str]:
    code = cli.main(list(args))
    out = capsys.readouterr()
    assert KEY not in out.err
    return code, out.out


@pytest.fixture
def chat_with_a_key(outpost_home, monkeypatch, keep_key):
    monkeypatch.setattr("app.domain.secrets_mask._remembered", {})
    ProviderRegistry().add(ProviderConfig("acme", "openai", "http://127.0.0.1:9/v1", "m"))
    store = Store()
    service = build_service(store, Settings(), "root")
    turn = service.start_turn(f"local: {KEY}", model="local.gguf", effective_route="local")
    service.queue_for_later(turn, "acme", None)  # as if queued before the key was stored
    store.close()
    keep_key("acme", KEY)
    monkeypatch.setattr("app.domain.secrets_mask._remembered", {})
    return turn.conversation_id


def test_history_and_the_outbox_print_a_stored_key_masked(capsys, chat_with_a_key):
    conversation = chat_with_a_key
    for args in (("history", "list"), ("history", "show", conversation),
                 ("history", "show", conversation, "--tree"), ("history", "search", "local"),
                 ("outbox", "list")):
        code, out = run(capsys, *args)
        assert code == 0 and KEY not in out and "local: [redacted]" in out, (args, out)
    for args in (("history", "list", "--json"), ("history", "show", conversation, "--json"),
                 ("history", "search", "local", "--json"), ("outbox", "list", "--json")):
        code, out = run(capsys, *args)
        assert code == 0 and KEY not in out and "local: [redacted]" in out, (args, out)
