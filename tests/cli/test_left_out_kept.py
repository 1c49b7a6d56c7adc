"""The oldest turns left out of a reply's request to fit the model's context window are kept
with the reply (its parameters' ``context_left_out``), so ``history show`` (and ``--json``) say
so after the turn's own stderr line is gone (trial 10: nothing about them was stored). In
process, with a scripted local model whose window is small."""
from __future__ import annotations

import json

from app import cli
from app.storage.store import Store
from tests.support import ScriptedEngine, reply

LONG = "Tell me about the harbour lights. " + "beacons and buoys " * 120  # ~600 tokens


class SmallWindow(ScriptedEngine):
    context_window = 1024  # two LONG turns and a reply's room do not fit


def test_history_show_says_which_reply_did_not_see_the_oldest_turns(outpost_home, monkeypatch,
                                                                     capsys):
    engine = SmallWindow(reply("First."), reply("Second."))
    monkeypatch.setattr("app.compose.create_local_engine", engine.factory)
    assert cli.main(["ask", "--route", "local", "--max-tokens", "64", LONG]) == 0
    store = Store()
    [conversation] = store.list_conversations("root")
    assert cli.main(["ask", "--route", "local", "--max-tokens", "64",
                     "--conversation", conversation.id, LONG]) == 0
    err = capsys.readouterr().err
    assert "The oldest turn (2 messages" in err  # the turn said so as it ran
    first, second = [m for m in store.branch(conversation.id) if m.role.value == "assistant"]
    assert "context_left_out" not in (first.params or {})
    assert second.params["context_left_out"] == {"messages": 2, "turns": 1, "window": 1024}

    assert cli.main(["history", "show", conversation.id]) == 0
    shown = capsys.readouterr().out
    assert shown.count("left out") == 1
    after_second = shown.split("Second.")[0].rsplit("assistant", 1)[1]
    assert "[2 oldest messages left out (1,024-token context)]" in after_second

    assert cli.main(["history", "show", conversation.id, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    kept = [r["params"].get("context_left_out") for r in rows if r["role"] == "assistant"]
    assert kept == [None, {"messages": 2, "turns": 1, "window": 1024}]
    store.close()
