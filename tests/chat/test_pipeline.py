"""The turn pipeline (``app.chat.pipeline``) is the whole of a turn: a third front end needs no
routing, engine or outbox code of its own. Proved by driving it directly with a scripted engine and
comparing the rows it stores with those of the CLI path (``outpost ask``), given the same engine."""
from __future__ import annotations

import threading

import pytest

from app import cli
from app.chat.pipeline import ModelLoading, TurnEnded, TurnPipeline, TurnStarted, TurnTarget
from app.chat.service import TurnOptions
from app.compose import build_service
from app.config.settings import Settings
from app.domain.errors import Cancelled, NoProviderForCloud
from app.domain.messages import Finished, TextDelta, Usage
from app.storage.store import Store
from tests.support import FixedEngines, ScriptedEngine, held_open, reply

SCRIPT = ("The", " sea", " is", " wide", ".")


def stored_rows(store: Store, conversation_id: str) -> dict:
    """What a turn leaves in the database, without ids, times and the turn's random key."""
    conversation = store.get_conversation(conversation_id)
    messages = []
    for m in store.messages(conversation_id):
        row = m.as_dict()
        for name in ("id", "conversation_id", "parent_id", "created_at", "updated_at"):
            row.pop(name)
        if row["params"]:
            row["params"] = {k: v for k, v in row["params"].items() if k != "idempotency_key"}
        messages.append(row)
    ledger = [{k: v for k, v in r.items() if k in (
        "provider", "model", "outcome", "prompt_tokens", "completion_tokens", "route", "profile",
        "cost_usd")} for r in store.request_log() if r["conversation_id"] == conversation_id]
    return {"title": conversation.title, "route": conversation.route,
            "sampling": conversation.sampling, "messages": messages, "ledger": ledger}


def test_a_third_front_end_stores_what_the_cli_stores(outpost_home, monkeypatch, capsys):
    # the CLI path, with the scripted engine where the real model would be
    cli_engine = ScriptedEngine(reply(*SCRIPT))
    monkeypatch.setattr("app.compose.create_local_engine", cli_engine.factory)
    assert cli.main(["ask", "--max-tokens", "20", "--temperature", "0.5", "Tell me"]) == 0
    assert capsys.readouterr().out == "The sea is wide.\n"
    store = Store()
    [via_cli] = [c.id for c in store.list_conversations()]

    # a new front end: the composition root's service and the pipeline, nothing else
    service = build_service(store, Settings(), store.list_conversations()[0].profile)
    engine = ScriptedEngine(reply(*SCRIPT))
    engine.on_attempt = service.ledger.record  # as the composition root wires the model
    pipeline = TurnPipeline(service, FixedEngines(engine))
    events = list(pipeline.send("Tell me", options=TurnOptions(max_tokens=20, temperature=0.5)))
    started = next(e for e in events if isinstance(e, TurnStarted))
    [ended] = [e for e in events if isinstance(e, TurnEnded)]
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "The sea is wide."
    assert ended.outcome.error is None and ended.outcome.message.content == "The sea is wide."
    assert ended.outcome.answered.engine == "local"
    assert [type(e) for e in events][-3:] == [Usage, Finished, TurnEnded]

    cli_rows = stored_rows(store, via_cli)
    new_rows = stored_rows(store, started.conversation_id)
    assert len(cli_rows["ledger"]) == 1 and len(store.request_log()) == 2
    assert [m["content"] for m in cli_rows["messages"]] == ["Tell me", "The sea is wide."]
    assert cli_rows == new_rows
    assert new_rows["messages"][1]["route_reason"] == "no cloud provider chosen"
    store.close()


def test_the_outcome_is_typed_and_the_error_is_the_exception(outpost_home):
    store = Store()
    service = build_service(store, Settings(), "ana")
    engine = ScriptedEngine(held_open("Part"), ready=False)
    pipeline = TurnPipeline(service, FixedEngines(engine))
    cancel = threading.Event()
    events = pipeline.send("Hi", cancel=cancel)
    assert isinstance(next(events), TurnStarted)  # saved before anything is sent
    assert isinstance(next(events), ModelLoading)  # the model is still loading
    engine.finish_loading()
    assert next(events) == TextDelta("Part")
    cancel.set()
    [ended] = [e for e in events if isinstance(e, TurnEnded)]
    assert isinstance(ended.outcome.error, Cancelled)
    assert ended.outcome.message.status.value == "interrupted"
    assert ended.outcome.message.content == "Part"
    store.close()


def test_cloud_only_without_a_provider_is_refused_before_anything_is_saved(outpost_home):
    store = Store()
    service = build_service(store, Settings(), "ana")
    pipeline = TurnPipeline(service, FixedEngines(ScriptedEngine()))
    with pytest.raises(NoProviderForCloud):
        pipeline.prepare("Hi", target=TurnTarget(route="cloud"))
    assert store.list_conversations() == []
    store.close()
