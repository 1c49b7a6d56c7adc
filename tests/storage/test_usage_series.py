"""The usage dashboard's series (app/storage/usage_series.py) on a real database: rows written
the way the ledger writes them, dated across days and months."""
from __future__ import annotations

import datetime as dt

from app.storage.store import Store
from app.storage.usage_series import (
    DayTokens,
    Problems,
    cost_per_month,
    problems_per_provider,
    speed_per_model,
    tokens_per_day,
)
from engines.http_policy import AttemptRecord


def row(store, when: str, provider: str, model: str, *, prompt=10, completion=20, cost=None,
        ttft=None, latency=1000.0, attempt=1, error=None, profile="ana"):
    store.db["request_log"].insert({
        "idempotency_key": "k", "provider": provider, "model": model, "attempt": attempt,
        "status": 200 if error is None else 503, "latency_ms": latency, "error_kind": error,
        "created_at": f"{when}T12:00:00.000000+00:00", "profile": profile,
        "prompt_tokens": prompt, "completion_tokens": completion, "cost_usd": cost,
        "ttft_ms": ttft})


def test_the_series_sum_what_the_ledger_holds(tmp_path):
    store = Store(tmp_path / "outpost.db")
    row(store, "2026-10-31", "openai", "gpt", cost=0.5)
    row(store, "2026-11-01", "local", "smol", ttft=100.0, latency=1100.0, completion=21)
    row(store, "2026-11-01", "openai", "gpt", cost=0.25, ttft=300.0, latency=2300.0,
        completion=41)
    row(store, "2026-11-01", "openai", "gpt", attempt=2, error="unavailable", completion=0,
        prompt=0)
    row(store, "2026-11-03", "anthropic", "claude", cost=1.0)
    row(store, "2026-11-03", "openai", "gpt", cost=9.0, profile="bob")  # someone else's
    # and one through the real path: the store's own insert, dated today
    store.log_attempt(AttemptRecord(1, 200, 50.0, None, provider="local", model="smol",
                                    prompt_tokens=3, completion_tokens=4), profile="ana")
    today = dt.datetime.now(dt.timezone.utc).date()

    days = tokens_per_day(store, "ana", dt.date(2026, 10, 31), dt.date(2026, 11, 3))
    assert days == [DayTokens("2026-10-31", 0, 30), DayTokens("2026-11-01", 31, 51),
                    DayTokens("2026-11-02", 0, 0), DayTokens("2026-11-03", 0, 30)]
    assert tokens_per_day(store, "ana", today, today) == [DayTokens(today.isoformat(), 7, 0)]

    assert cost_per_month(store, "ana", dt.date(2026, 10, 1)) == {
        "anthropic": [("2026-11", 1.0)], "openai": [("2026-10", 0.5), ("2026-11", 0.25)]}
    assert cost_per_month(store, None, dt.date(2026, 11, 1))["openai"] == [("2026-11", 9.25)]

    speed = speed_per_model(store, "ana", dt.date(2026, 11, 1))
    assert speed["local · smol"][0].ttft_ms == 100.0
    assert speed["local · smol"][0].tokens_per_s == 20.0  # 20 tokens after the first, in 1 s
    assert speed["openai · gpt"][0].tokens_per_s == 20.0

    assert problems_per_provider(store, "ana", dt.date(2026, 10, 1)) == [
        Problems("anthropic", 1, 0, 0), Problems("local", 2, 0, 0),
        Problems("openai", 3, 1, 1)]
    store.close()


def test_tokens_per_second_sums_timed_attempts_and_leaves_out_bursts(tmp_path):
    """Trial 10: a reply that came in one burst (300 tokens read in 3 ms) plotted ~9,500
    tokens/s beside a timed 191; the day's speed is the tokens over the time of the timed
    attempts, and a day with only bursts has none."""
    store = Store(tmp_path / "outpost.db")
    # timed: 100 tokens after the first in 1 s, then 300 in 2 s -> 400 in 3 s
    row(store, "2026-11-01", "openai", "gpt", ttft=200.0, latency=1200.0, completion=101)
    row(store, "2026-11-01", "openai", "gpt", ttft=200.0, latency=2200.0, completion=301)
    # a burst: 300 tokens within 3 ms of the first (untimed), and a one-token reply
    row(store, "2026-11-01", "openai", "gpt", ttft=200.0, latency=203.0, completion=301)
    row(store, "2026-11-01", "openai", "gpt", ttft=200.0, latency=900.0, completion=1)
    row(store, "2026-11-02", "openai", "gpt", ttft=100.0, latency=130.0, completion=50)

    day1, day2 = speed_per_model(store, "ana", dt.date(2026, 11, 1))["openai · gpt"]
    assert day1.tokens_per_s is not None and round(day1.tokens_per_s, 6) == round(400 / 3, 6)
    assert day1.ttft_ms == 200.0  # every answered attempt has a first token
    assert day2.tokens_per_s is None and day2.ttft_ms == 100.0
    store.close()
