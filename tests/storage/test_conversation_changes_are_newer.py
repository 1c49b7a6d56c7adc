"""Every change to a conversation moves its ``updated_at``: a restore over a damaged file brings
a conversation over from that file only when it is newer than the backup's, so a rename, a pin,
a branch switch (and a route, a target, knobs, a deleted branch) made since the backup were
lost while the summary said "Nothing newer than the backup could be read" (found by a trial).
The clock is a fake one, a millisecond on at each reading: nothing here depends on how fast the
machine is."""
from __future__ import annotations

import datetime as dt
import types

import pytest

from app.domain.messages import Role
from app.storage import rows
from app.storage.salvage import salvage
from app.storage.store import Store


@pytest.fixture(autouse=True)
def ticking_clock(monkeypatch):
    """``now_iso`` reads a clock that moves one millisecond at each reading."""
    moment = [dt.datetime(2026, 11, 30, 9, 0, tzinfo=dt.timezone.utc)]

    def now(tz=None):
        moment[0] += dt.timedelta(milliseconds=1)
        return moment[0]

    monkeypatch.setattr(rows, "dt", types.SimpleNamespace(
        datetime=types.SimpleNamespace(now=now), timezone=dt.timezone))


def two_branches(store: Store, title: str) -> tuple[str, str, str]:
    """A conversation whose question has two answers, the second active: (id, first, second)."""
    chat = store.create_conversation(title)
    question = store.add_message(chat.id, Role.USER, "Which way?")
    first = store.add_message(chat.id, Role.ASSISTANT, "Left.", parent_id=question.id)
    second = store.add_message(chat.id, Role.ASSISTANT, "Right.", parent_id=question.id)
    return chat.id, first.id, second.id


def test_a_restore_keeps_the_changes_made_to_conversations_since_the_backup(tmp_path):
    store = Store(tmp_path / "outpost.db")
    renamed, _, _ = two_branches(store, "Old title")
    pinned, _, _ = two_branches(store, "To pin")
    switched, first, _ = two_branches(store, "To switch")
    routed, _, _ = two_branches(store, "To route")
    targeted, _, _ = two_branches(store, "To target")
    knobs, _, _ = two_branches(store, "To tune")
    pruned, _, pruned_second = two_branches(store, "To prune")
    backup = store.backup("daily")
    store.rename_conversation(renamed, "New title")
    store.set_pinned(pinned, True)
    store.set_active(switched, first)
    store.set_conversation_route(routed, "local")
    store.set_target(targeted, "provider:far", "m1")
    store.set_conversation_sampling(knobs, {"temperature": 0.2}, system_prompt="Be brief.")
    store.delete_subtree(pruned_second)
    store.close()
    # the backup put back in place, and what the newer file holds brought over
    restored = Store(tmp_path / "restored" / "outpost.db", daily_backup=False)
    restored.close()
    restored.path.write_bytes(backup.read_bytes())
    restored = Store(restored.path, daily_backup=False)

    result = salvage(store.path, restored)

    get = restored.get_conversation
    assert get(renamed).title == "New title"
    assert get(pinned).pinned
    assert get(switched).active_leaf_id == first
    assert get(routed).route == "local"
    assert (get(targeted).target, get(targeted).target_model) == ("provider:far", "m1")
    assert (get(knobs).sampling, get(knobs).system_prompt) == ({"temperature": 0.2},
                                                              "Be brief.")
    assert [m.content for m in restored.branch(pruned)] == ["Which way?", "Left."]
    assert result.rows["conversations"] == 7
    assert not result.describe().startswith("Nothing")
    restored.close()


def test_a_write_that_changes_nothing_leaves_the_conversation_where_it_is(tmp_path):
    """Opening a conversation saves its knobs and switches to its branch again: unchanged,
    they do not move it to the top of the list."""
    store = Store(tmp_path / "outpost.db")
    chat, _, second = two_branches(store, "Quiet")
    store.set_conversation_sampling(chat, {"temperature": 0.2})
    before = store.get_conversation(chat).updated_at
    store.set_conversation_sampling(chat, {"temperature": 0.2})
    store.set_active(chat, second)
    store.rename_conversation(chat, "Quiet")
    store.set_pinned(chat, False)
    assert store.get_conversation(chat).updated_at == before
    store.rename_conversation(chat, "Loud")
    assert store.get_conversation(chat).updated_at > before
    store.close()
