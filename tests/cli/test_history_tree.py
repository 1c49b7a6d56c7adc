"""``outpost history show`` (the active path, ‹i/n› marks), ``--tree``, ``history switch`` and
``ask --reply-to`` on a conversation with an edit, a retry and an outbox answer. In process, with a
scripted engine where the model would be, so the tree is the same on every machine."""
from __future__ import annotations

import json
import re
import threading

import pytest

from app import cli
from app.chat.outbox_sender import OutboxSender
from app.chat.pipeline import TurnEnded, TurnPipeline
from app.compose import build_service
from app.config.settings import Settings
from app.domain.errors import StreamInterrupted
from app.domain.messages import Finished, FinishReason, TextDelta, Usage
from app.storage.outbox import Outbox
from app.storage.store import Store
from tests.support import FixedEngines, ScriptedEngine, reply


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def tree(outpost_home, monkeypatch, capsys):
    """Q1 -> [broken, retried]; retried -> [Q2 -> A2, "Q2 edited" -> A2'];
    the edited branch's answer -> [local answer, cloud answer from the outbox]."""
    engine = ScriptedEngine()
    monkeypatch.setattr("app.compose.create_local_engine", engine.factory)
    store = Store()
    service = build_service(store, Settings(), "root")
    pipeline = TurnPipeline(service, FixedEngines(engine))
    engine.script([TextDelta("Broken"), Usage(5, 1),
                   Finished(FinishReason.ERROR, error=StreamInterrupted("The stream broke."))],
                  reply("Retried"))
    first = next(e for e in pipeline.send("Q1") if isinstance(e, TurnEnded)).outcome
    list(pipeline.retry(first.turn).run(threading.Event()))
    conversation = first.conversation_id
    engine.script(reply("A2"), reply("Edited answer"), reply("Local answer"))
    assert run(capsys, "ask", "--conversation", conversation, "Q2")[0] == 0
    retried = [m for m in store.messages(conversation) if m.content == "Retried"][0]
    assert run(capsys, "ask", "--conversation", conversation, "--reply-to", retried.id,
               "Q2 edited")[0] == 0
    edited = next(e for e in pipeline.send("Q3", conversation) if isinstance(e, TurnEnded))
    service.queue_for_later(edited.outcome.turn, "acme", None)
    cloud = ScriptedEngine(reply("Cloud answer"))
    OutboxSender(Outbox(store), lambda provider, model: cloud).send()
    yield store, conversation
    store.close()


def strip_ids(text: str) -> str:
    return re.sub(r"\[[0-9a-f]{8}\]", "[ID]", re.sub(r"\([0-9a-f]{32}\)", "(ID)", text))


def test_the_tree_prints_every_branch_with_the_active_path_starred(tree, capsys):
    store, conversation = tree
    code, out, _ = run(capsys, "history", "show", conversation, "--tree")
    assert code == 0
    assert strip_ids(out) == """\
# Q1  (ID)  * the active path
* user: Q1  [ID]
    assistant ‹1/2› [interrupted]: Broken  [ID]
*   assistant ‹2/2›: Retried  [ID]
      user ‹1/2›: Q2  [ID]
        assistant: A2  [ID]
*     user ‹2/2›: Q2 edited  [ID]
*       assistant: Edited answer  [ID]
*         user: Q3  [ID]
            assistant ‹1/2›: Local answer  [ID]
*           assistant ‹2/2›: Cloud answer  [ID]
"""


def test_show_prints_the_active_path_and_marks_versions(tree, capsys):
    store, conversation = tree
    code, out, _ = run(capsys, "history", "show", conversation)
    assert code == 0
    contents = [block.strip().splitlines()[-1] for block in out.split("\n\n")[1:]]
    assert contents == ["Q1", "Retried", "Q2 edited", "Edited answer", "Q3", "Cloud answer"]
    assert "[queued in the outbox at" in out  # why the cloud answer came late
    retried = next(m for m in store.messages(conversation) if m.content == "Retried")
    # each message's id's start, for switch, fork and --reply-to
    assert f"assistant · local · scripted-model.gguf  ‹2/2› · {retried.id[:8]}:\nRetried" \
        in out
    code, out, _ = run(capsys, "history", "show", conversation, "--json")
    rows = json.loads(out)
    assert [(r["content"], r["sibling_index"], r["siblings"]) for r in rows] == [
        ("Q1", 1, 1), ("Retried", 2, 2), ("Q2 edited", 2, 2), ("Edited answer", 1, 1),
        ("Q3", 1, 1), ("Cloud answer", 2, 2)]
    assert all(r["active"] for r in rows)
    assert [r["parent_id"] for r in rows[1:]] == [r["id"] for r in rows[:-1]]


def test_switch_makes_another_branch_active_and_the_next_ask_sees_it(tree, capsys,
                                                                      monkeypatch):
    store, conversation = tree
    q2 = next(m for m in store.messages(conversation) if m.content == "Q2")
    code, out, _ = run(capsys, "history", "switch", q2.id, "--json")
    assert code == 0
    assert [r["content"] for r in json.loads(out)] == ["Q1", "Retried", "Q2", "A2"]
    engine = ScriptedEngine(reply("Four"))
    monkeypatch.setattr("app.compose.create_local_engine", engine.factory)
    assert run(capsys, "ask", "--conversation", conversation, "Q4")[0] == 0
    assert [m.content for m in engine.requests[0].messages][1:] == [
        "Q1", "Retried", "Q2", "A2", "Q4"]


def test_a_message_of_another_profile_is_refused_with_exit_2(tree, capsys, monkeypatch):
    store, conversation = tree
    mine = store.messages(conversation)[0]
    other = store.create_conversation("theirs", profile="someone-else")
    code, _, err = run(capsys, "ask", "--conversation", other.id, "--reply-to", mine.id, "Hi")
    assert code == 2 and "belongs to another profile" in err
    stranger = store.add_message(other.id, __import__("app.domain.messages", fromlist=[
        "Role"]).Role.USER, "theirs")
    code, _, err = run(capsys, "history", "switch", stranger.id)
    assert code == 2 and "another profile" in err
    before = store.get_conversation(conversation).active_leaf_id
    code, _, err = run(capsys, "ask", "--conversation", conversation, "--reply-to",
                       stranger.id, "Crossed")
    assert code == 2 and "no message" in err
    assert store.get_conversation(conversation).active_leaf_id == before


def test_regenerate_answers_again_beside_the_reply_and_fork_copies_the_path(tree, capsys,
                                                                          monkeypatch):
    store, conversation = tree
    edited = next(m for m in store.messages(conversation) if m.content == "Edited answer")
    engine = ScriptedEngine(reply("Edited, again"))
    monkeypatch.setattr("app.compose.create_local_engine", engine.factory)
    code, out, _ = run(capsys, "regenerate", edited.id, "--temperature", "0.9", "--json")
    assert code == 0
    finished = json.loads(out.strip().splitlines()[-1])
    again = store.get_message(finished["message_id"])
    assert again.parent_id == edited.parent_id and again.content == "Edited, again"
    assert again.params["temperature"] == 0.9
    # the model saw the path up to the question, not the reply it replaces
    assert [m.content for m in engine.requests[0].messages][1:] == ["Q1", "Retried",
                                                                    "Q2 edited"]
    assert [m.content for m in store.branch(conversation)][-2:] == ["Q2 edited",
                                                                    "Edited, again"]
    code, out, err = run(capsys, "regenerate", again.parent_id)
    assert code == 2 and "not a reply" in err
    # --system answers with that prompt and keeps it with the conversation, as `ask` does
    engine.script(reply("Arr."))
    code, _, _ = run(capsys, "regenerate", again.id, "--system", "You are a pirate.")
    assert code == 0 and engine.requests[-1].messages[0].content == "You are a pirate."
    assert store.get_conversation(conversation).system_prompt == "You are a pirate."

    before = [m.id for m in store.messages(conversation)]
    code, out, _ = run(capsys, "history", "fork", again.id, "--json")
    assert code == 0
    rows = json.loads(out)
    assert [r["content"] for r in rows] == ["Q1", "Retried", "Q2 edited", "Edited, again"]
    fork = rows[0]["conversation_id"]
    assert fork != conversation and store.get_conversation(fork).title == "Q1 (fork)"
    assert [m.id for m in store.messages(conversation)] == before  # the original is unchanged
    assert not {r["id"] for r in rows} & set(before)  # copies, with ids of their own


def test_ask_and_regenerate_json_say_where_the_reply_stands(tree, capsys, monkeypatch):
    store, conversation = tree
    engine = ScriptedEngine(reply("Four"), reply("Four, again"))
    monkeypatch.setattr("app.compose.create_local_engine", engine.factory)
    code, out, _ = run(capsys, "ask", "--conversation", conversation, "Q4", "--json")
    asked = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and (asked["sibling_index"], asked["siblings"]) == (1, 1)
    assert store.get_message(asked["parent_id"]).content == "Q4"
    code, out, _ = run(capsys, "regenerate", asked["message_id"], "--json")
    again = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and again["parent_id"] == asked["parent_id"]
    assert (again["sibling_index"], again["siblings"]) == (2, 2)


def test_show_json_has_what_a_reply_recorded(outpost_home, capsys):
    """`history show --json` carries how a reply was checked and chosen and what it cost, as
    the README says (the export had them; `show` left them out)."""
    from app.domain.messages import MessageStatus, Role

    store = Store()
    conversation = store.create_conversation("Checked")
    question = store.add_message(conversation.id, Role.USER, "A person as JSON")
    answer = store.add_message(conversation.id, Role.ASSISTANT, '{"name": "Ada"}',
                               parent_id=question.id, status=MessageStatus.STREAMING)
    recorded = {"output_check": {"mode": "json", "valid": True, "error": None, "repair": None},
                "candidates": {"mode": "best_of", "n": 2, "winner": 1, "candidates": []},
                "cost_usd": 0.00042, "cost_estimated": True, "tokens_estimated": True}
    store.update_message(answer.id, status=MessageStatus.COMPLETE, **recorded)
    store.close()
    code, out, _ = run(capsys, "history", "show", conversation.id, "--json")
    assert code == 0
    shown = json.loads(out)[-1]
    assert {key: shown[key] for key in recorded} == recorded
