"""A profile that is not the admin learns nothing of another profile's conversations by
naming them (trial 10): its whole id, a message's in it, or its outbox item get what an id
that names nothing gets, as a start of its id did (``app.storage.short_ids`` does not expand
another profile's), with the same exit status; the admin is still told whose it is. In
process, on a real database; no model is loaded (the refusal comes first)."""
from __future__ import annotations

import json

import pytest

from app import cli
from app.domain.messages import ChatRequest, ChatMessage, Role
from app.storage.outbox import Outbox
from app.storage.store import Store

pytestmark = pytest.mark.usefixtures("outpost_home")

NOWHERE = "0123456789abcdef0123456789abcdef"  # an id nothing has


def run(capsys, *args: str) -> tuple[int, str]:
    code = cli.main(list(args))
    return code, capsys.readouterr().err


@pytest.fixture
def bobs(capsys):
    """alice and bob (not the admin); bob's conversation, his question and its answer, and an
    outbox item of his."""
    assert cli.main(["profile", "add", "alice"]) == 0 and cli.main(["profile", "add", "bob"]) == 0
    store = Store(daily_backup=False)
    try:
        chat = store.create_conversation("Bob's plans", profile="bob")
        question = store.add_message(chat.id, Role.USER, "What are my plans?")
        answer = store.add_message(chat.id, Role.ASSISTANT, "To sail.", parent_id=question.id)
        item = Outbox(store).enqueue(chat.id, question.id, "acme", "gpt-4o-mini", ChatRequest(
            messages=[ChatMessage(Role.USER, "What are my plans?")], model="gpt-4o-mini"))
    finally:
        store.close()
    capsys.readouterr()
    return chat.id, answer.id, item.id


def same_as_nothing(capsys, args: list[str], real: str, nowhere: str) -> str:
    """What alice is told for ``real`` (bob's), checked to be what she is told for
    ``nowhere`` (nothing's), the id aside."""
    code, said = run(capsys, "--as", "alice", *[real if a == "ID" else a for a in args])
    code_none, said_none = run(capsys, "--as", "alice", *[nowhere if a == "ID" else a
                                                          for a in args])
    assert (code, said.replace(real, "ID")) == (code_none, said_none.replace(nowhere, "ID"))
    assert "another profile" not in said and code == 2
    return said


@pytest.mark.parametrize("args", [
    ["history", "show", "ID"], ["history", "show", "ID", "--tree"], ["export", "ID"],
    ["history", "delete", "ID", "--yes"], ["ask", "--conversation", "ID", "Hello"],
])
def test_a_conversation_of_another_profile_is_said_not_to_exist(bobs, capsys, args):
    conversation, _, _ = bobs
    said = same_as_nothing(capsys, args, conversation, NOWHERE)
    assert f"There is no conversation with id '{conversation}'." in said
    # a start of its id was (and is) answered so too
    _, prefix = run(capsys, "--as", "alice", *[conversation[:8] if a == "ID" else a
                                               for a in args])
    assert f"There is no conversation with id '{conversation[:8]}'." in prefix


@pytest.mark.parametrize("args", [
    ["regenerate", "ID"], ["history", "switch", "ID"], ["history", "fork", "ID"],
    ["history", "delete", "--message", "ID", "--yes"],
])
def test_a_message_of_another_profile_is_said_not_to_exist(bobs, capsys, args):
    conversation, message, _ = bobs
    said = same_as_nothing(capsys, args, message, NOWHERE)
    assert f"There is no message with id '{message}'." in said and conversation not in said


def test_the_json_error_of_a_regenerate_is_the_same_too(bobs, capsys):
    _, message, _ = bobs
    assert cli.main(["--as", "alice", "regenerate", message, "--json"]) == 2
    theirs = capsys.readouterr().out
    assert cli.main(["--as", "alice", "regenerate", NOWHERE, "--json"]) == 2
    assert json.loads(theirs.replace(message, "ID")) == \
        json.loads(capsys.readouterr().out.replace(NOWHERE, "ID"))


@pytest.mark.parametrize("verb", ["cancel", "retry"])
def test_an_outbox_item_of_another_profile_is_said_not_to_exist(bobs, capsys, verb):
    conversation, _, item = bobs
    said = same_as_nothing(capsys, ["outbox", verb, "ID"], str(item), str(item + 100))
    assert f"There is no outbox item {item}." in said and conversation not in said


def test_the_admin_is_still_told_whose_it_is(bobs, capsys):
    conversation, message, _ = bobs
    code, said = run(capsys, "history", "show", conversation)
    assert code == 2 and f"The conversation {conversation} belongs to another profile." in said
    code, said = run(capsys, "regenerate", message)
    assert code == 2 and "belongs to another profile" in said


def test_profile_list_counts_only_the_signed_in_profiles_conversations(bobs, capsys):
    """Another profile's conversation count is the admin's to see, as its limits are."""
    assert cli.main(["--as", "alice", "profile", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["bob"]["conversations"] is None and rows["alice"]["conversations"] == 0
    assert cli.main(["--as", "alice", "profile", "list"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "conversation" not in lines["bob"] and "0 conversations" in lines["alice"]
    assert cli.main(["profile", "list", "--json"]) == 0  # the admin
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["bob"]["conversations"] == 1
