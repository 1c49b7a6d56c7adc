"""Usage over any period, day by day: what ``outpost usage --since/--until`` and the usage
dialog's period show, and what ``--csv`` and the dialog's "Export CSV…" write (an expense report,
a spreadsheet).

A period is a run of whole local days, both ends included (``Period``), as the quotas' days are
(they reset at local midnight). The ledger's timestamps are UTC; a row's day here is its local
day (SQLite's ``localtime``, the same clock as Python's), so a request at 00:30 counts on the day
the user saw it. The charts (``app.storage.usage_series``) stay in UTC days.

A CSV row is one day, one profile, one provider and one model: the requests, the tokens, the cost
of those whose price is known (empty, not 0, when none is: ``cost_known`` is false when any of
the row's cloud requests had no known price) and the local model's seconds.
"""
from __future__ import annotations

import csv
import datetime as dt
import re
from dataclasses import dataclass
from typing import TextIO

from app.domain.errors import UsageError
from app.storage.ledger import GROUP_FIGURES, utc_iso
from app.storage.sqlite_errors import storage_errors
from app.storage.store import Store

CSV_COLUMNS = ("day", "profile", "provider", "model", "requests", "prompt_tokens",
               "completion_tokens", "cost_usd", "cost_known", "estimated", "local_seconds")
_DAYS = re.compile(r"(\d{1,4})d")


@dataclass(frozen=True)
class Period:
    """Whole local days, ``first`` to ``last`` included."""

    first: dt.date
    last: dt.date

    def start(self) -> dt.datetime:
        """Local midnight at the start of ``first`` (aware)."""
        return dt.datetime.combine(self.first, dt.time()).astimezone()

    def end(self) -> dt.datetime:
        """Local midnight after ``last`` (aware): the period's end, not included."""
        return dt.datetime.combine(self.last + dt.timedelta(days=1), dt.time()).astimezone()

    def words(self) -> str:
        if self.first == self.last:
            return self.first.isoformat()
        return f"{self.first.isoformat()} to {self.last.isoformat()}"

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1


def parse_day(text: str, flag: str, today: dt.date) -> dt.date:
    """A day as given on the command line: ``YYYY-MM-DD``, ``today``, ``yesterday`` or ``Nd``
    (N days ago: ``0d`` is today)."""
    word = text.strip().lower()
    if word == "today":
        return today
    if word == "yesterday":
        return today - dt.timedelta(days=1)
    days = _DAYS.fullmatch(word)
    if days:
        return today - dt.timedelta(days=int(days.group(1)))
    try:
        return dt.date.fromisoformat(word)
    except ValueError:
        raise UsageError(f"{flag} {text!r} is not a day: give YYYY-MM-DD (2026-11-30), today, "
                         f"yesterday, or Nd for N days ago (7d).") from None


def period_from(since: str | None, until: str | None,
                today: dt.date | None = None) -> Period:
    """The period ``--since``/``--until`` name; ``until`` defaults to today. Refused: an end
    before the start, or a start after today (nothing can have been used yet)."""
    today = today or dt.date.today()
    if since is None:
        raise UsageError("--until needs --since: the first day of the period.")
    first = parse_day(since, "--since", today)
    last = parse_day(until, "--until", today) if until is not None else today
    if first > today:
        raise UsageError(f"--since {first.isoformat()} is after today ({today.isoformat()}): "
                         "nothing has been used then yet.")
    if last < first:
        raise UsageError(f"--until {last.isoformat()} is before --since {first.isoformat()}.")
    return Period(first, last)


def daily_rows(store: Store, profile: str | None, period: Period) -> list[dict]:
    """One row per local day, profile, provider and model with any attempt in ``period``
    (``profile`` None: everyone), oldest day first; the keys are ``CSV_COLUMNS``."""
    where = "created_at >= ? and created_at < ?"
    args: list = [utc_iso(period.start()), utc_iso(period.end())]
    if profile is not None:
        where += " and profile = ?"
        args.append(profile)
    with storage_errors(store.path):
        found = store.db.execute(
            "select date(created_at, 'localtime') as day, profile, provider, model, "
            f"{GROUP_FIGURES}, "
            "sum(case when provider = 'local' then coalesce(latency_ms, 0) else 0 end) "
            f"from request_log where {where} group by day, profile, provider, model "
            "order by day, profile, provider, model", args).fetchall()
    rows = []
    for day, who, provider, model, count, prompt, completion, cost, unknown, t_est, c_est, \
            ms in found:
        rows.append({"day": day, "profile": who, "provider": provider, "model": model,
                     "requests": count, "prompt_tokens": prompt,
                     "completion_tokens": completion,
                     "cost_usd": None if unknown and not cost else round(float(cost), 6),
                     "cost_known": not unknown, "estimated": bool(t_est) or bool(c_est),
                     "local_seconds": round((ms or 0) / 1000, 3)})
    return rows


def write_csv(rows: list[dict], out: TextIO) -> None:
    """``rows`` (``daily_rows``) as CSV with a header line; an unknown cost is an empty
    field, booleans are ``true``/``false``."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow(["" if row[c] is None else
                         ("true" if row[c] else "false") if isinstance(row[c], bool) else row[c]
                         for c in CSV_COLUMNS])
