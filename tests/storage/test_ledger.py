"""The usage ledger (issue 5): one row per attempt, totals over it, cost never silently zero."""
from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading

import pytest

from app.chat.service import ChatService, TurnOptions
from app.config.settings import Settings
from app.storage.ledger import UsageLedger, make_ledger, start_of_day, start_of_month
from app.storage.store import Store
from engines.http_policy import AttemptRecord


def attempt(provider="openai", model="gpt-4o-mini", prompt=100, completion=50, key="k1",
            estimated=False, kind="openai") -> AttemptRecord:
    return AttemptRecord(attempt=1, status=200, latency_ms=12.0, error_kind=None,
                         idempotency_key=key, provider=provider, model=model, kind=kind,
                         prompt_tokens=prompt, completion_tokens=completion,
                         tokens_estimated=estimated, ttft_ms=5.0)


def test_unknown_price_is_unknown_not_zero(tmp_path):
    store = Store(tmp_path / "outpost.db")
    ledger = UsageLedger(store, "ana", price_for=lambda kind, provider, model: None)
    ledger.record(attempt(key="t1"))
    ledger.record(attempt(provider="local", model="smol.gguf", kind="local", key="t2"))
    [cloud, local] = store.request_log()
    assert cloud["cost_usd"] is None and cloud["profile"] == "ana"
    assert local["cost_usd"] == 0.0  # local replies cost nothing, their tokens still count
    assert ledger.turn_cost("t1") == (None, True)
    assert ledger.turn_cost("t2") == (0.0, False)
    totals = ledger.totals(start_of_day())
    assert totals.requests == 2 and totals.cloud_requests == 1
    assert totals.unknown_cost_requests == 1 and totals.cost_usd == 0.0
    assert totals.cloud_tokens == 150 and totals.local_tokens == 150
    assert {r["provider"]: r["cost_usd"] for r in totals.by_model} == {"openai": None, "local": 0.0}
    assert totals.local_seconds == pytest.approx(0.012)  # free, but its time is counted


def test_totals_by_profile_day_and_month(tmp_path):
    store = Store(tmp_path / "outpost.db")
    UsageLedger(store, "ana").record(attempt(key="a"))
    UsageLedger(store, "bo").record(attempt(key="b", prompt=7, completion=3))
    # an attempt from last month
    old = (start_of_month() - dt.timedelta(days=2)).astimezone(dt.timezone.utc).isoformat()
    UsageLedger(store, "ana").record(attempt(key="c"))
    store.db.execute("update request_log set created_at = ? where idempotency_key = 'c'", [old])
    ledger = UsageLedger(store, "ana")
    assert ledger.totals(start_of_day(), "ana").requests == 1
    assert ledger.totals(start_of_day(), "bo").prompt_tokens == 7
    assert ledger.totals(start_of_day()).requests == 2  # everyone
    assert ledger.totals(start_of_month(), "ana").requests == 1  # last month's not counted


WRITER = """
import sys
from app.storage.ledger import UsageLedger
from app.storage.store import Store
from engines.http_policy import AttemptRecord
store = Store(sys.argv[1])
ledger = UsageLedger(store, sys.argv[2])
for i in range(150):
    ledger.record(AttemptRecord(attempt=1, status=200, latency_ms=1.0, error_kind=None,
                                idempotency_key=f"{sys.argv[2]}-{i}", provider="openai",
                                model="m", kind="openai", prompt_tokens=10,
                                completion_tokens=1))
"""


def test_two_processes_writing_the_ledger_lose_nothing(tmp_path):
    path = tmp_path / "outpost.db"
    Store(path).close()  # migrated once, so both writers only insert
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), name],
                              env=os.environ.copy()) for name in ("ana", "bo")]
    assert [p.wait(120) for p in procs] == [0, 0]
    ledger = UsageLedger(Store(path), "ana")
    assert ledger.totals(start_of_day(), "ana").requests == 150
    assert ledger.totals(start_of_day(), "bo").requests == 150
    assert ledger.totals(start_of_day()).prompt_tokens == 3000


@pytest.mark.local_model
def test_a_local_turn_is_in_the_ledger_with_exact_tokens(tmp_path, bundled_model):
    from engines.llama_local import LocalEngine

    store = Store(tmp_path / "outpost.db")
    service = ChatService(store, Settings())
    service.ledger = UsageLedger(store, "ana")
    service.profile = "ana"
    engine = LocalEngine(bundled_model, on_attempt=service.ledger.record)
    try:
        turn = service.start_turn("Say hi.", model="m", options=TurnOptions(max_tokens=6),
                                  counter=None)
        events = list(turn.run(engine, threading.Event()))
        engine.call_on_model_thread(lambda llm: None)  # the record is written after the reply
    finally:
        engine.close()
    usage = [e for e in events if e.__class__.__name__ == "Usage"][0]
    [row] = store.request_log(turn.request.idempotency_key)
    assert row["provider"] == "local" and row["kind"] == "local"
    assert (row["prompt_tokens"], row["completion_tokens"]) == (usage.prompt_tokens,
                                                                usage.completion_tokens)
    assert row["cost_usd"] == 0.0 and row["conversation_id"] == turn.conversation_id
    assert row["ttft_ms"] is not None and row["profile"] == "ana"
    assert store.get_message(turn.assistant_message_id).cost_usd == 0.0


def test_cli_usage_reports_today(outpost_home):
    result = subprocess.run([sys.executable, "-m", "app.cli", "usage", "--json"],
                            capture_output=True, text=True, env=os.environ.copy(), timeout=60)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["requests"] == 0 and data["period"] == "day" and data["cost_usd"] == 0.0


def test_a_priced_cloud_turn_costs_what_the_table_says(tmp_path):
    from app.accounting.metering import price_table
    from app.accounting.pricing import cost_of
    from app.domain.messages import Usage
    from app.storage.ledger import make_ledger
    from tests.fault_server import fault_server, normal
    from tests.support import fault_cloud

    store = Store(tmp_path / "outpost.db")
    service = ChatService(store, Settings())
    service.ledger = make_ledger(store, Settings())
    with fault_server() as server:
        server.script([normal(prompt_tokens=1200, completion_tokens=300)])
        engine = fault_cloud(server.url + "/v1", store)
        engine.model = "gpt-4o-mini"
        engine.on_attempt = service.ledger.record
        turn = service.start_turn("Hello", model="gpt-4o-mini", counter=engine,
                                  effective_route="cloud")
        list(turn.run(engine, threading.Event()))
        engine.close()
    expected = cost_of(Usage(1200, 300), price_table().price_for("openai", "gpt-4o-mini")).usd
    assert expected and expected > 0
    [row] = store.request_log(turn.request.idempotency_key)
    assert row["cost_usd"] == pytest.approx(expected) and row["kind"] == "openai"
    message = store.get_message(turn.assistant_message_id)
    assert message.cost_usd == pytest.approx(expected) and not message.cost_estimated
    assert turn.fit.exact and turn.fit.window == 128000  # tiktoken count, table window


def test_ledger_rows_carry_the_turns_route(tmp_path):
    store = Store(tmp_path / "outpost.db")
    service = ChatService(store, Settings())
    service.ledger = UsageLedger(store, "ana")
    service.profile = "ana"
    turn = service.start_turn("Hi", model="m", effective_route="auto")
    service.ledger.record(attempt(key=turn.request.idempotency_key))
    [row] = store.request_log(turn.request.idempotency_key)
    assert row["route"] == "auto" and row["profile"] == "ana"


def refused(key: str, model: str, provider: str = "acme") -> AttemptRecord:
    """An attempt that never reached the provider (connection refused): no tokens."""
    return AttemptRecord(attempt=1, status=None, latency_ms=3.0, error_kind="connection_failed",
                         idempotency_key=key, provider=provider, model=model, kind="openai")


def test_a_model_with_no_known_price_is_unknown_whatever_its_tokens(tmp_path):
    """Its attempts that never reached the provider are unknown too, never $0, in the totals
    (`outpost usage`, the dialog) and the days (the CSV); a priced model's are a known $0.
    A reply's cost leaves out what never reached the provider: it cost nothing certain."""
    from app.storage.usage_report import Period, daily_rows

    store = Store(tmp_path / "outpost.db")
    ledger = make_ledger(store, Settings())
    ledger.record(refused("t1", "gpt-4o-mini-slow"))  # no price in the table
    ledger.record(refused("t2", "gpt-4o-mini"))  # priced
    rows = {r["model"]: r for r in store.request_log()}
    assert rows["gpt-4o-mini-slow"]["cost_usd"] is None
    assert rows["gpt-4o-mini"]["cost_usd"] == 0.0
    totals = ledger.totals(start_of_day())
    assert {r["model"]: r["cost_usd"] for r in totals.by_model} == {
        "gpt-4o-mini-slow": None, "gpt-4o-mini": 0.0}
    assert totals.unknown_cost_requests == 1 and totals.cost_usd == 0.0
    today = dt.date.today()
    days = {r["model"]: r for r in daily_rows(store, None, Period(today, today))}
    assert (days["gpt-4o-mini-slow"]["cost_usd"], days["gpt-4o-mini-slow"]["cost_known"]) == (
        None, False)
    assert (days["gpt-4o-mini"]["cost_usd"], days["gpt-4o-mini"]["cost_known"]) == (0.0, True)
    assert ledger.turn_cost("t1") == (0.0, False)  # nothing reached the provider
    assert ledger.turn_cost("t2") == (0.0, False)


def test_old_zero_cost_rows_of_unpriced_models_become_unknown(tmp_path):
    """Rows an older Outpost wrote with $0 for a model with no known price and no tokens are
    unknown after the migration; a priced model's $0, and rows with tokens, stay."""
    from app.storage.migrations import m017_unpriced_attempts_cost_unknown

    store = Store(tmp_path / "outpost.db")
    for model, provider, kind, prompt, cost in (
            ("gpt-4o-mini-slow", "slow", "openai", None, 0.0),  # the old "$0"
            ("gpt-4o-mini", "fake", "openai", None, 0.0),  # priced: a known $0
            ("gpt-4o", "openrouter", "openai", None, 0.0),  # priced under its vendor's id
            ("smol.gguf", "local", "local", 20, 0.0),  # free
            ("mystery", "acme", "openai", 30, None)):  # unknown already
        store.db["request_log"].insert({
            "idempotency_key": model, "provider": provider, "model": model, "kind": kind,
            "attempt": 1, "created_at": "2026-11-02T10:00:00.000+00:00", "profile": "ana",
            "prompt_tokens": prompt, "cost_usd": cost})
    m017_unpriced_attempts_cost_unknown(store.db)
    assert {r["model"]: r["cost_usd"] for r in store.request_log()} == {
        "gpt-4o-mini-slow": None, "gpt-4o-mini": 0.0, "gpt-4o": 0.0, "smol.gguf": 0.0,
        "mystery": None}
