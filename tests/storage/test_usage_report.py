"""Usage over any period, by local day: ``outpost usage --since/--until/--csv`` and what the usage
dialog exports (app/storage/usage_report.py)."""
from __future__ import annotations

import csv
import datetime as dt
import io
import json
import time

import pytest

from app.config.paths import database_path
from app.domain.errors import UsageError
from app.storage.ledger import UsageLedger
from app.storage.store import Store
from app.storage.usage_report import (
    CSV_COLUMNS,
    Period,
    daily_rows,
    parse_day,
    period_from,
    write_csv,
)
from tests.storage.test_ledger import attempt
from tests.storage.test_profiles import cli

TODAY = dt.date(2026, 12, 1)


@pytest.fixture
def auckland(monkeypatch):
    """A time zone 13 hours ahead of UTC (New Zealand's summer time, as a POSIX rule: no
    zone database needed): a UTC day and a local day differ."""
    monkeypatch.setenv("TZ", "NZDT-13")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def record_at(store: Store, ledger: UsageLedger, key: str, utc: str, **kw) -> None:
    ledger.record(attempt(key=key, **kw))
    store.db.execute("update request_log set created_at = ? where idempotency_key = ?",
                     [utc, key])


def test_days_are_local_days_and_both_ends_are_included(tmp_path, auckland):
    store = Store(tmp_path / "outpost.db")
    ledger = UsageLedger(store, "ana", price_for=lambda kind, provider, model: None)
    # 10:59 UTC on 30 Nov is 23:59 there; 11:30 UTC is 00:30 on 1 Dec there
    record_at(store, ledger, "a", "2026-11-30T10:59:00.000+00:00", prompt=1, completion=1)
    record_at(store, ledger, "b", "2026-11-30T11:30:00.000+00:00", prompt=10, completion=5)
    record_at(store, ledger, "c", "2026-11-30T11:45:00.000+00:00", prompt=20, completion=5,
              provider="local", model="smol.gguf", kind="local")
    record_at(store, ledger, "d", "2026-11-28T10:00:00.000+00:00")  # 28 Nov 23:00 there
    rows = daily_rows(store, "ana", Period(dt.date(2026, 11, 29), dt.date(2026, 12, 1)))
    assert [(r["day"], r["provider"], r["requests"], r["prompt_tokens"]) for r in rows] == [
        ("2026-11-30", "openai", 1, 1), ("2026-12-01", "local", 1, 20),
        ("2026-12-01", "openai", 1, 10)]
    cloud = rows[2]
    assert cloud["cost_usd"] is None and cloud["cost_known"] is False  # no price: not $0
    assert rows[1]["cost_usd"] == 0.0 and rows[1]["cost_known"] is True
    assert rows[1]["local_seconds"] == pytest.approx(0.012)
    # one day, the first of December there: only b and c
    one = Period(dt.date(2026, 12, 1), dt.date(2026, 12, 1))
    assert sum(r["requests"] for r in daily_rows(store, None, one)) == 2
    assert ledger.totals(one.start(), "ana", one.end()).requests == 2


def test_rows_keep_profiles_apart_and_known_costs(tmp_path):
    store = Store(tmp_path / "outpost.db")
    priced = UsageLedger(store, "ana", price_for=lambda kind, provider, model:
                         None if model == "mystery" else _price())
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")
    record_at(store, priced, "a", now, prompt=1000, completion=1000)
    record_at(store, UsageLedger(store, "bo", priced.price_for), "b", now)
    record_at(store, priced, "c", now, model="mystery")
    today = dt.date.today()
    rows = daily_rows(store, None, Period(today, today))
    assert [(r["profile"], r["model"]) for r in rows] == [
        ("ana", "gpt-4o-mini"), ("ana", "mystery"), ("bo", "gpt-4o-mini")]
    assert rows[0]["cost_usd"] == pytest.approx(0.003) and rows[0]["cost_known"]
    assert rows[1]["cost_usd"] is None and not rows[1]["cost_known"]
    assert [r["profile"] for r in daily_rows(store, "bo", Period(today, today))] == ["bo"]


def _price():
    from app.accounting.pricing import Price
    return Price(input=1.0, output=2.0)


def test_csv_has_a_header_empty_unknown_costs_and_reads_back():
    rows = [{"day": "2026-12-01", "profile": "ana", "provider": "openai", "model": "a,b",
             "requests": 2, "prompt_tokens": 10, "completion_tokens": 5, "cost_usd": None,
             "cost_known": False, "estimated": True, "local_seconds": 0.0}]
    out = io.StringIO()
    write_csv(rows, out)
    back = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert tuple(back[0]) == CSV_COLUMNS
    assert back[0]["model"] == "a,b" and back[0]["cost_usd"] == ""
    assert back[0]["cost_known"] == "false" and back[0]["estimated"] == "true"


@pytest.mark.parametrize("text, day", [("today", TODAY), ("yesterday", dt.date(2026, 11, 30)),
                                       ("7d", dt.date(2026, 11, 24)), ("0d", TODAY),
                                       ("2026-02-28", dt.date(2026, 2, 28))])
def test_days_as_written(text, day):
    assert parse_day(text, "--since", TODAY) == day


@pytest.mark.parametrize("since, until, words", [
    ("2026-13-01", None, "is not a day: give YYYY-MM-DD"),
    ("last week", None, "is not a day"),
    (None, "today", "--until needs --since"),
    ("2027-01-01", None, "is after today (2026-12-01)"),
    ("3d", "5d", "--until 2026-11-26 is before --since 2026-11-28"),
])
def test_a_period_that_cannot_be_is_refused_saying_why(since, until, words):
    with pytest.raises(UsageError, match=words.replace("(", r"\(").replace(")", r"\)")):
        period_from(since, until, TODAY)


def test_period_until_defaults_to_today():
    assert period_from("2026-11-01", None, TODAY) == Period(dt.date(2026, 11, 1), TODAY)
    assert Period(dt.date(2026, 11, 1), TODAY).days == 31


def test_cli_since_until_csv_and_json(outpost_home):
    [me] = json.loads(cli("profile", "list", "--json").stdout)
    store = Store(database_path())
    ledger = UsageLedger(store, "root")
    old = (dt.datetime.now().astimezone() - dt.timedelta(days=40)).isoformat()
    record_at(store, ledger, "now", dt.datetime.now(dt.timezone.utc).isoformat(), prompt=7)
    record_at(store, ledger, "old", old, prompt=1000)
    store.db.execute("update request_log set profile = ?", [me["name"]])
    store.close()
    month_ago = (dt.date.today() - dt.timedelta(days=45)).isoformat()
    lines = cli("usage", "--since", month_ago, "--csv")
    assert lines.returncode == 0, lines.stderr
    rows = list(csv.DictReader(io.StringIO(lines.stdout)))
    assert sorted(int(r["prompt_tokens"]) for r in rows) == [7, 1000]
    recent = json.loads(cli("usage", "--since", "7d", "--json").stdout)
    assert recent["period"] == "range" and recent["prompt_tokens"] == 7
    assert recent["last_day"] == dt.date.today().isoformat()
    text = cli("usage", "--since", month_ago)
    assert f"{month_ago} to {dt.date.today().isoformat()}: 2 requests" in text.stdout
    clash = cli("usage", "--month", "--since", "7d")
    assert clash.returncode == 2 and "--month or --since/--until, not both" in clash.stderr
    bad = cli("usage", "--since", "someday")
    assert bad.returncode == 2 and "'someday' is not a day" in bad.stderr
