"""`outpost ask` remembers who answers a conversation, as the window does: the provider (or
local model) it was given is stored with the conversation, so the window opens the chat with
those pickers and a later `ask --conversation` without --provider/--model goes there too.
In process: the local model is a scripted engine, the provider a fault server on loopback."""
from __future__ import annotations

import json

import pytest

from app import cli
from app.config.providers import ProviderConfig, ProviderRegistry
from app.storage.store import Store
from tests.fault_server import fault_server
from tests.support import reply


@pytest.fixture
def server():
    """A provider called "fake" on a fault server (loopback: no key needed)."""
    with fault_server() as running:
        ProviderRegistry().add(ProviderConfig("fake", "openai", running.url + "/v1",
                                              "test-model"))
        yield running


def ask(capsys, *args: str) -> tuple[dict, str]:
    """``outpost ask ARGS --json``: its finished event, and what it said on stderr."""
    capsys.readouterr()
    assert cli.main(["ask", *args, "--json"]) == 0
    out, err = capsys.readouterr()
    [finished] = [e for e in map(json.loads, out.splitlines()) if e["event"] == "finished"]
    return finished, err


def remembered(cid: str) -> tuple[str | None, str | None]:
    store = Store()
    try:
        conversation = store.get_conversation(cid)
        return conversation.target, conversation.target_model
    finally:
        store.close()


def test_a_chat_asked_of_a_provider_goes_on_with_it(capsys, local, server):
    """`ask --provider fake` stores provider:fake with the new conversation (the columns stayed
    empty, and the window opened the chat on the local model); `ask --conversation C` alone
    then goes to fake again (it was answered locally: "no cloud provider chosen")."""
    first, _ = ask(capsys, "Hello there", "--provider", "fake")
    cid = first["conversation_id"]
    assert first["engine"] == "fake" and remembered(cid) == ("provider:fake", None)
    then, err = ask(capsys, "And another?", "--conversation", cid)
    assert then["engine"] == "fake" and then["conversation_id"] == cid
    assert len(server.chat_requests()) == 2 and local.requests == [] and err == ""
    assert remembered(cid) == ("provider:fake", None)

    with_model, _ = ask(capsys, "Hi", "--provider", "fake", "--model", "other-model")
    ask(capsys, "Again", "--conversation", with_model["conversation_id"])
    assert remembered(with_model["conversation_id"]) == ("provider:fake", "other-model")
    assert server.chat_requests()[-1].json["model"] == "other-model"  # the model too


def test_a_chat_asked_of_a_local_model_goes_on_with_that_model(capsys, local):
    local.script(reply("Hi."), reply("Again."))
    first, _ = ask(capsys, "Hello", "--model", "gemma")
    cid = first["conversation_id"]
    assert remembered(cid) == ("local", "gemma")
    ask(capsys, "And another?", "--conversation", cid)
    assert local.loads == ["gemma", "gemma"]  # (the configured model: None)
    plain, _ = ask(capsys, "Hello")
    assert remembered(plain["conversation_id"]) == ("local", None)


def test_flags_on_a_later_turn_answer_it_say_so_and_are_remembered(capsys, local, server):
    """As in the window, where the pickers changed and a message sent: the flags answer the
    turn and the conversation remembers them from then on, which `ask` says on stderr."""
    first, _ = ask(capsys, "Hello there", "--provider", "fake")
    cid = first["conversation_id"]
    local.script(reply("Local."))
    moved, err = ask(capsys, "Locally now", "--conversation", cid, "--model", "gemma")
    assert moved["engine"] == "local" and local.loads == ["gemma"]
    assert "was answered by fake; it is answered by the local model gemma now" in err
    assert remembered(cid) == ("local", "gemma")
    _, err = ask(capsys, "Still", "--conversation", cid, "--model", "gemma")
    assert err == ""  # what it remembers: nothing to say


def test_a_remembered_provider_since_removed_leaves_the_local_model(capsys, local, server):
    first, _ = ask(capsys, "Hello there", "--provider", "fake")
    ProviderRegistry().remove("fake")
    local.script(reply("Local."))
    then, err = ask(capsys, "Are you there?", "--conversation", first["conversation_id"])
    assert then["engine"] == "local" and len(server.chat_requests()) == 1
    assert "answered by fake, which is no longer configured: the local model answers" in err
    assert remembered(first["conversation_id"]) == ("local", None)  # as the window would


def test_regenerate_uses_the_remembered_target_and_its_flags_are_for_that_answer(
        capsys, local, server):
    first, _ = ask(capsys, "Hello there", "--provider", "fake")
    capsys.readouterr()
    assert cli.main(["regenerate", first["message_id"], "--json"]) == 0
    assert len(server.chat_requests()) == 2 and local.requests == []
    local.script(reply("Local."))
    assert cli.main(["regenerate", first["message_id"], "--model", "gemma", "--json"]) == 0
    assert local.loads == ["gemma"] and "answered by" not in capsys.readouterr().err
    assert remembered(first["conversation_id"]) == ("provider:fake", None)


def test_a_target_outpost_never_writes_is_as_if_none_were_remembered():
    """A conversation whose target is "openai" (imported before the import checked it, see
    tests/storage/test_transfer.py) is answered as one that remembers none: by the local
    model, even with a provider called openai configured, and nothing is said."""
    from app.chat.pipeline import TurnTarget
    from app.chat.targets import describe, remembered_target
    from app.domain.messages import Conversation

    registry = ProviderRegistry()
    registry.add(ProviderConfig("openai", "openai", "http://127.0.0.1:9/v1", "m0"))
    chat = Conversation("c1", "Imported", "2026-12-01T10:00:00+00:00",
                        "2026-12-01T10:00:00+00:00", target="openai")
    assert remembered_target(TurnTarget(), chat, registry) == (TurnTarget(), None)
    assert describe("openai", None) == "the local model"
