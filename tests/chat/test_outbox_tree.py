"""An outbox answer and the conversation around it: the tree stays whole.

A Cloud only message the provider could not take waits in the outbox behind an empty "queued"
reply; the user may go on meanwhile (that reply is then the parent of the follow-up). When the
answer comes, it takes the queued reply's place: what followed moves under it, so the
conversation is one tree, shown whole, and the next turn's context has every turn in order.
An item whose answer broke off every time fails showing its longest part, saying so.

The real CLI in subprocesses, a real SQLite file under the per-test OUTPOST_HOME, the fault
server as the cloud.
"""
from __future__ import annotations

import dataclasses

from app.domain.messages import MessageStatus, Role
from app.storage.migrations import MIGRATIONS
from app.storage.outbox import Outbox, OutboxState
from app.storage.store import Store
from tests.chat.test_outbox import (
    add_provider,
    cli,
    events,
    history,
    outbox_list,
    queue_turn,
)
from tests.fault_server import Cut, fault_server, server_error

ANSWER = "Hello from the fault server."


def test_a_follow_up_asked_while_the_message_waited_moves_under_the_outbox_answer(
        outpost_home):
    with fault_server() as server:
        add_provider("acme", server.url + "/v1")
        server.script([server_error(500)] * 3)  # every attempt of the first ask
        first = cli("ask", "first q", "--provider", "acme", "--route", "cloud",
                    "--max-tokens", "8", "--json")
        assert first.returncode == 4, first.stderr  # queued
        [queued] = [e for e in events(first.stdout) if e["event"] == "queued"]
        conversation = queued["conversation_id"]
        [placeholder] = [m for m in history(conversation) if m["role"] == "assistant"]
        assert placeholder["content"] == "" and "Queued in the outbox" in placeholder["error"]

        second = cli("ask", "second q", "--conversation", conversation, "--max-tokens", "8")
        assert second.returncode == 0, second.stderr
        sent = cli("outbox", "send")
        assert sent.returncode == 0, sent.stdout + sent.stderr
        [item] = outbox_list("--all")
        assert item["state"] == "sent"

        tree = history(conversation, tree=True)
        ids = {m["id"] for m in tree}
        # no message names a parent that is not there; one root
        assert all(m["parent_id"] in ids for m in tree if m["parent_id"] is not None)
        assert [m["content"] for m in tree if m["parent_id"] is None] == ["first q"]
        assert placeholder["id"] not in ids  # the empty "queued" reply has done its job
        path = history(conversation)
        assert [(m["role"], m["content"]) for m in path] == [
            ("user", "first q"), ("assistant", ANSWER), ("user", "second q"),
            ("assistant", ANSWER)]
        assert path[1]["id"] == item["answer_message_id"]
        assert {m["id"] for m in path} == ids  # every message is on the active path

        third = cli("ask", "third q", "--conversation", conversation, "--max-tokens", "8")
        assert third.returncode == 0, third.stderr
        sent_then = [(m["role"], m["content"]) for m in server.chat_requests()[-1].json[
            "messages"] if m["role"] != "system"]
    assert sent_then == [("user", "first q"), ("assistant", ANSWER), ("user", "second q"),
                         ("assistant", ANSWER), ("user", "third q")]


def test_an_empty_reply_something_follows_is_never_deleted_as_empty(tmp_path):
    """``delete_empty_reply`` (a queued request's attempt that got no text) keeps a row that
    has children: they would be left naming a parent that is gone."""
    store = Store(tmp_path / "outpost.db")
    conversation = store.create_conversation("c").id
    question = store.add_message(conversation, Role.USER, "first q")
    empty = store.add_message(conversation, Role.ASSISTANT, "", status=MessageStatus.ERROR)
    follow_up = store.add_message(conversation, Role.USER, "second q")
    store.delete_empty_reply(empty.id)
    assert store.get_message(follow_up.id).parent_id == empty.id
    assert [m.id for m in store.branch(conversation)] == [question.id, empty.id, follow_up.id]
    store.close()


def test_follow_ups_an_earlier_outbox_answer_cut_off_are_put_back_under_it(tmp_path):
    """A database written before the fix: the queued reply was deleted under a follow-up.
    Migration m020 moves the follow-up under the item's answer; nothing else moves."""
    path = tmp_path / "outpost.db"
    old = Store(path, [m for m in MIGRATIONS if m.__name__ != "m020_outbox_follow_ups_"
                       "reattached"])
    conversation = old.create_conversation("c").id
    question = old.add_message(conversation, Role.USER, "first q")
    placeholder = old.add_message(conversation, Role.ASSISTANT, "", status=MessageStatus.ERROR)
    follow_up = old.add_message(conversation, Role.USER, "second q")
    reply = old.add_message(conversation, Role.ASSISTANT, ANSWER)
    answer = old.add_message(conversation, Role.ASSISTANT, ANSWER, parent_id=question.id,
                             activate="never")
    other = old.create_conversation("d").id
    lonely = old.add_message(other, Role.USER, "a root stays a root")
    outbox = Outbox(old)
    item = queue_turn(old, "queued elsewhere")  # (a second item, unrelated)
    sent = outbox.enqueue(conversation, question.id, "fault", None, dataclasses.replace(
        item.request, idempotency_key="k"), placeholder.id)
    outbox._finish(sent.id, OutboxState.SENT, None, answer.id)
    old.db.execute("delete from messages where id = ?", [placeholder.id])  # as it was
    old.db.conn.commit()
    old.close()
    new = Store(path)
    try:
        assert new.get_message(follow_up.id).parent_id == answer.id
        assert [m.id for m in new.branch(conversation)] == [question.id, answer.id,
                                                             follow_up.id, reply.id]
        assert new.get_message(lonely.id).parent_id is None
        assert new.get_message(question.id).parent_id is None
    finally:
        new.close()


def test_an_item_cut_off_every_time_fails_showing_its_longest_part_and_saying_so(
        outpost_home):
    """Cloud only: the answer breaks off three times, each try shorter than the one before.
    The item fails; the version shown is the longest part (not the last, shortest one), and
    it says the item failed and how to ask once more, in the place of the queued reply."""
    chunks = ("Water ", "20 L, ", "rice ", "5 kg.")
    with fault_server() as server:
        add_provider("acme", server.url + "/v1")
        server.script([server_error(500)] * 3)
        first = cli("ask", "first q", "--provider", "acme", "--route", "cloud",
                    "--max-tokens", "8", "--json")
        [queued] = [e for e in events(first.stdout) if e["event"] == "queued"]
        conversation, item_id = queued["conversation_id"], queued["outbox_id"]
        server.script([Cut(after=n, chunks=chunks) for n in (3, 2, 1)])
        results = [cli("outbox", "send") for _ in range(3)]
    assert [r.returncode for r in results] == [4, 4, 4]
    assert f"Item {item_id} failed:" in results[2].stdout
    [item] = outbox_list()
    assert item["state"] == "failed" and "cut off 3 times" in item["last_error"]
    path = history(conversation)
    shown = path[-1]
    assert (shown["content"], shown["status"]) == ("Water 20 L, rice ", "interrupted")
    assert f"Outbox item {item_id} failed: its answer was cut off 3 times" in shown["error"]
    assert f"`outpost outbox retry {item_id}`" in shown["error"]
    replies = [m for m in history(conversation, tree=True) if m["role"] == "assistant"]
    # the longest part took the place of the empty "queued" reply: one reply says it failed
    assert sorted(m["content"] for m in replies) == [
        "Water ", "Water 20 L, ", "Water 20 L, rice "]
    assert not any("Queued in the outbox" in (m["error"] or "") for m in replies)
    text = cli("history", "show", conversation).stdout  # the words say it too
    assert f"Outbox item {item_id} failed" in text
