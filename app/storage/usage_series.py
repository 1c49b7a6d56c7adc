"""The usage dashboard's series, from the usage ledger (``request_log``): one grouped query per
chart, so a year of use (100,000 attempts) is summed by SQLite, not by Python.

* ``tokens_per_day``: tokens each day, the local model's and the cloud's apart (every day of
  the range, zeros included, so a chart's bars line up with its dates);
* ``cost_per_month``: each provider's cost per month (the local model costs nothing);
* ``speed_per_model``: each model's mean time to first token and tokens/s per day (answered
  attempts only). Tokens/s is the day's tokens after the first over the time they took,
  both summed across its timed attempts (``app.accounting.speed``: more than one token,
  spread over at least ``BURST_S``), not a mean of each attempt's rate: a reply that came
  in one burst (a proxy that buffered it) has no rate, and averaged in as 300 tokens over
  3 ms it put ~9,500 tokens/s on the chart beside a timed 191;
* ``problems_per_provider``: attempts, failed attempts and retries per provider.

Days and months are UTC, as the ledger's timestamps are.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from app.accounting.speed import BURST_S
from app.storage.sqlite_errors import storage_errors
from app.storage.store import Store


@dataclass(frozen=True)
class DayTokens:
    day: str  # YYYY-MM-DD
    local: int
    cloud: int


@dataclass(frozen=True)
class Speed:
    day: str
    ttft_ms: float | None
    tokens_per_s: float | None


@dataclass(frozen=True)
class Problems:
    provider: str
    attempts: int
    errors: int
    retries: int


def _scope(profile: str | None, since: dt.date) -> tuple[str, list]:
    where, args = "created_at >= ?", [since.isoformat()]
    if profile is not None:
        where += " AND profile = ?"
        args.append(profile)
    return where, args


def tokens_per_day(store: Store, profile: str | None, since: dt.date,
                   until: dt.date) -> list[DayTokens]:
    where, args = _scope(profile, since)
    with storage_errors(store.path):
        rows = store.db.execute(
            "SELECT substr(created_at, 1, 10) AS day, provider = 'local', "
            "sum(coalesce(prompt_tokens, 0) + coalesce(completion_tokens, 0)) "
            f"FROM request_log WHERE {where} GROUP BY day, provider = 'local'", args).fetchall()
    totals: dict[str, list[int]] = {}
    for day, local, tokens in rows:
        totals.setdefault(day, [0, 0])[0 if local else 1] += tokens or 0
    out, day = [], since
    while day <= until:
        local, cloud = totals.get(day.isoformat(), (0, 0))
        out.append(DayTokens(day.isoformat(), local, cloud))
        day += dt.timedelta(days=1)
    return out


def cost_per_month(store: Store, profile: str | None,
                   since: dt.date) -> dict[str, list[tuple[str, float]]]:
    """{provider: [(YYYY-MM, USD), …]} for the cloud providers, months in order."""
    where, args = _scope(profile, since)
    with storage_errors(store.path):
        rows = store.db.execute(
            "SELECT provider, substr(created_at, 1, 7) AS month, sum(coalesce(cost_usd, 0)) "
            f"FROM request_log WHERE {where} AND provider != 'local' "
            "GROUP BY provider, month ORDER BY provider, month", args).fetchall()
    out: dict[str, list[tuple[str, float]]] = {}
    for provider, month, cost in rows:
        out.setdefault(provider, []).append((month, round(cost, 6)))
    return out


def speed_per_model(store: Store, profile: str | None,
                    since: dt.date) -> dict[str, list[Speed]]:
    """{"provider · model": [Speed per day, …]} for attempts that answered; tokens/s None on
    a day with no timed attempt."""
    where, args = _scope(profile, since)
    timed = "completion_tokens > 1 AND latency_ms - ttft_ms >= ?"  # (app.accounting.speed)
    with storage_errors(store.path):
        rows = store.db.execute(
            "SELECT provider, model, substr(created_at, 1, 10) AS day, avg(ttft_ms), "
            f"sum(CASE WHEN {timed} THEN completion_tokens - 1 END), "
            f"sum(CASE WHEN {timed} THEN latency_ms - ttft_ms END) "
            f"FROM request_log WHERE {where} AND ttft_ms IS NOT NULL "
            "GROUP BY provider, model, day ORDER BY provider, model, day",
            [BURST_S * 1000, BURST_S * 1000, *args]).fetchall()
    out: dict[str, list[Speed]] = {}
    for provider, model, day, ttft, tokens, ms in rows:
        tps = tokens * 1000.0 / ms if tokens and ms else None
        out.setdefault(f"{provider} · {model}", []).append(Speed(day, ttft, tps))
    return out


def problems_per_provider(store: Store, profile: str | None, since: dt.date) -> list[Problems]:
    where, args = _scope(profile, since)
    with storage_errors(store.path):
        rows = store.db.execute(
            "SELECT provider, count(*), sum(error_kind IS NOT NULL), sum(attempt > 1) "
            f"FROM request_log WHERE {where} GROUP BY provider ORDER BY provider",
            args).fetchall()
    return [Problems(provider, attempts, errors or 0, retries or 0)
            for provider, attempts, errors, retries in rows]
