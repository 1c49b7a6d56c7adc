"""The usage ledger: one row per request attempt (cloud retries, hedged and local attempts alike)
with who asked (profile), where it went, the tokens (reported, or estimated and marked so), the
cost from the price table and the timings. It lives in the ``request_log`` table; daily and
monthly totals are queries over it (``totals``), so two processes writing at once lose nothing
(each row is its own committed insert).

Costs: a cloud attempt is priced from ``resources/prices.json`` (``app.accounting.pricing``); a
model with no known price has ``cost_usd`` NULL, counted and shown as *unknown*, never as zero,
whatever its tokens: a group of attempts (``totals``' models, the CSV's lines) of such a model is
unknown even when none of them reached the provider. One attempt that never reached it (no
tokens: connection refused, an HTTP error status) costs nothing certain, so a reply's cost
(``turn_cost``) leaves it out; a priced model's is a known $0. An attempt that reached the
provider without a usage report (a hedge that lost, a cancel, a cut) comes with its prompt
counted as before sending, marked estimated (``engines.cloud``), and is priced so (``~``).
Local attempts cost nothing; their tokens and seconds are still counted.

A row the disk refuses (full) is kept in memory (``UsageLedger.unsaved``, counted in its turn's
cost meanwhile) and written, with the time of its attempt, before the next row or with the reply
a full disk also held back (``app.chat.turn.Turn.save_again``).

No key reaches a row: the response headers an attempt kept are masked again here with every key
this process handled (``app.domain.secrets_mask``), whoever built the record.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
from dataclasses import dataclass, field
from typing import Callable

from app.accounting.metering import price_table
from app.accounting.pricing import Cost, cost_of, format_usd
from app.config.settings import default_user_id
from app.domain.errors import KnownStorageError, OutpostError
from app.domain.messages import Usage
from app.domain.secrets_mask import SecretMask
from app.domain.wording import counted
from app.storage.rows import now_iso
from app.storage.sqlite_errors import storage_errors
from app.storage.store import Store

log = logging.getLogger(__name__)


@dataclass
class Totals:
    since: str  # ISO timestamp (UTC) the totals start from
    until: str | None = None  # ISO timestamp (UTC) they end before (None: now)
    requests: int = 0
    cloud_requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cloud_tokens: int = 0
    local_tokens: int = 0
    cost_usd: float = 0.0  # the attempts whose price is known
    unknown_cost_requests: int = 0  # cloud attempts to a model with no known price
    local_seconds: float = 0.0  # time the local model spent (it costs no money, but time)
    estimated: bool = False  # some tokens or costs were estimated
    cost_estimated: bool = False  # some of cost_usd was reckoned from estimated tokens (~)
    by_model: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return dict(self.__dict__)

    def cost_words(self, brief: bool = False) -> str:
        """The cloud cost as ``outpost usage`` and the usage dialog say it: ``$1.20`` (``~``
        when estimated); ``$1.20 + unknown (1 request with no known price)`` (``brief``:
        ``$1.20 + 1 unknown``) when some had no known price; ``unknown (1 request with no
        known price)`` when nothing known was paid (never ``$0 + …``)."""
        cost = format_usd(Cost(self.cost_usd, self.cost_estimated))
        if not self.unknown_cost_requests:
            return cost
        unknown = (f"unknown ({counted(self.unknown_cost_requests, 'request')} "
                   "with no known price)")
        if not self.cost_usd:
            return unknown
        return f"{cost} + " + (f"{self.unknown_cost_requests:,} unknown" if brief else unknown)


def start_of_day(now: dt.datetime | None = None) -> dt.datetime:
    """Midnight, local time, as an aware datetime (quotas reset at local midnight)."""
    now = (now or dt.datetime.now().astimezone())
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def start_of_month(now: dt.datetime | None = None) -> dt.datetime:
    return start_of_day(now).replace(day=1)


# a group of attempts in figures (after its grouping columns): attempts, prompt and completion
# tokens, the known cost, cloud attempts with no known price (with tokens or not: a model with
# no price is unknown, never $0), and whether any count or cost was estimated (``totals``;
# app.storage.usage_report's days)
GROUP_FIGURES = (
    "count(*), sum(coalesce(prompt_tokens, 0)), sum(coalesce(completion_tokens, 0)), "
    "sum(coalesce(cost_usd, 0)), "
    "sum(case when cost_usd is null and provider != 'local' then 1 else 0 end), "
    "max(tokens_estimated), max(cost_estimated)")


def utc_iso(when: dt.datetime) -> str:
    return when.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds")


class UsageLedger:
    """The ``on_attempt`` sink: prices each attempt and writes its ledger row."""

    def __init__(self, store: Store, profile: str,
                 price_for: Callable[[str, str, str], object] | None = None):
        """``profile``: whose attempts these are unless a turn says otherwise (the window's
        signed-in profile; it changes when the user switches). ``price_for(kind, provider,
        model)`` -> an ``app.accounting.pricing.Price`` or None (unknown)."""
        self.store = store
        self.profile = profile
        self.price_for = price_for
        # idempotency key -> {"route", "profile", "conversation_id"}: noted when a turn starts
        # (or an outbox item is sent), so every attempt of that turn is filed under them
        self.turns: dict[str, dict] = {}
        # called after each row with (record, profile, tokens): the quota guard charges
        # attempts beyond a turn's first (retries, hedges) to the per-minute buckets
        self.listeners: list[Callable] = []
        # (record, its row's fields) the disk refused (full), oldest first: written before
        # the next row, and with a reply saved late (``save_unsaved``); never dropped
        self.unsaved: list[tuple[object, dict]] = []
        self._unsaved_lock = threading.Lock()

    def note_turn(self, idempotency_key: str, *, route: str | None = None,
                  profile: str | None = None, conversation_id: str | None = None) -> None:
        self.turns[idempotency_key] = {"route": route, "profile": profile,
                                       "conversation_id": conversation_id}

    def cost(self, kind: str, provider: str, model: str, usage: Usage | None):
        """(usd or None when unknown, estimated). ``usage`` None: nothing reached the
        provider; that is $0 at a known price, and unknown, as every attempt, at none."""
        estimated = usage is not None and usage.estimated
        if kind == "local" or provider == "local":
            return 0.0, estimated
        price = self.price_for(kind, provider, model) if self.price_for is not None else None
        if price is None:
            return None, estimated
        if usage is None:
            return 0.0, False
        cost = cost_of(usage, price)
        return cost.usd, cost.estimated

    def record(self, record) -> None:
        """Price ``record`` (an attempt) and write its row. A row the disk refuses (full) is
        kept and written before the next one, or with the reply saved late: never lost."""
        if record.rate_limits:
            secrets = SecretMask()
            record = dataclasses.replace(record, rate_limits={
                secrets.scrub(str(k)): secrets.scrub(str(v))
                for k, v in record.rate_limits.items()})
        usage = None
        if record.prompt_tokens is not None or record.completion_tokens is not None:
            usage = Usage(record.prompt_tokens or 0, record.completion_tokens or 0,
                          estimated=record.tokens_estimated,
                          cached_prompt_tokens=record.cached_prompt_tokens or 0)
        usd, estimated = self.cost(record.kind, record.provider, record.model, usage)
        # a best-of-n candidate ("<key>~c2") or judge ("<key>~judge") is filed under its turn
        turn = self.turns.get((record.idempotency_key or "").split("~")[0], {})
        profile = turn.get("profile") or self.profile
        fields = dict(profile=profile, route=turn.get("route"),
                      conversation_id=turn.get("conversation_id"), cost_usd=usd,
                      cost_estimated=estimated, created_at=now_iso())
        with self._unsaved_lock:
            self.unsaved.append((record, fields))
        if self.save_unsaved():  # (a full disk: kept, and counted by ``turn_cost`` meanwhile)
            log.warning("the usage record of %s is kept until the disk takes it",
                        record.idempotency_key)
        tokens = (record.prompt_tokens or 0) + (record.completion_tokens or 0)
        for listener in self.listeners:
            listener(record, profile, tokens)

    def save_unsaved(self) -> int:
        """Write the rows the disk refused, oldest first; how many still wait. Each keeps
        the time of its attempt, so it counts towards the day and the month it was made."""
        with self._unsaved_lock:
            while self.unsaved:
                record, fields = self.unsaved[0]
                try:
                    self.store.log_attempt(record, **fields)
                except KnownStorageError:  # full, read-only, locked: tried again later
                    break
                except BaseException:  # a bug, not the disk: raised once, not with every row
                    self.unsaved.pop(0)
                    raise
                self.unsaved.pop(0)
            return len(self.unsaved)

    # -- reading -----------------------------------------------------------------------------
    def turn_cost(self, idempotency_key: str) -> tuple[float | None, bool]:
        """The cost of one turn: every attempt it made (retries, hedges, continuations).
        None when a cloud attempt with tokens has no known price; one with no tokens never
        reached the provider and adds nothing, priced or not."""
        with storage_errors(self.store.path):
            rows = self.store.db.execute(
                "select cost_usd, cost_estimated, prompt_tokens, completion_tokens, provider "
                "from request_log where idempotency_key = ? or idempotency_key like ?",
                [idempotency_key, idempotency_key + "~%"]).fetchall()
        with self._unsaved_lock:  # the rows the disk has not taken yet count too
            rows += [(f["cost_usd"], f["cost_estimated"], r.prompt_tokens,
                      r.completion_tokens, r.provider) for r, f in self.unsaved
                     if (r.idempotency_key or "").split("~")[0] == idempotency_key]
        total, estimated = 0.0, False
        for usd, est, prompt, completion, provider in rows:
            if usd is None and (prompt or completion) and provider != "local":
                return None, True
            total += usd or 0.0
            estimated = estimated or bool(est)
        return total, estimated

    def recent(self, profile: str, what: str, seconds: float, count_local: bool,
               now: dt.datetime) -> list[tuple[float, float]]:
        """(seconds ago, amount) of this profile's attempts in the last ``seconds``: one per
        request (``what`` = "requests") or its tokens ("tokens"); seeds the rate buckets."""
        since = now - dt.timedelta(seconds=seconds)
        local = "" if count_local else " and provider != 'local'"
        with storage_errors(self.store.path):
            rows = self.store.db.execute(
                "select created_at, coalesce(prompt_tokens, 0) + coalesce(completion_tokens, 0) "
                f"from request_log where profile = ? and created_at >= ?{local}",
                [profile, utc_iso(since)]).fetchall()
        out = []
        for created, tokens in rows:
            ago = (now - dt.datetime.fromisoformat(created)).total_seconds()
            out.append((max(0.0, ago), 1.0 if what == "requests" else float(tokens)))
        return out

    def totals(self, since: dt.datetime, profile: str | None = None,
               until: dt.datetime | None = None) -> Totals:
        """Every attempt from ``since`` (included) to ``until`` (not included; None: now),
        of ``profile`` (None: everyone's)."""
        where, params = "created_at >= ?", [utc_iso(since)]
        if until is not None:
            where += " and created_at < ?"
            params.append(utc_iso(until))
        if profile is not None:
            where += " and profile = ?"
            params.append(profile)
        with storage_errors(self.store.path):
            rows = self.store.db.execute(
                f"select provider, model, {GROUP_FIGURES}, sum(coalesce(latency_ms, 0)) "
                f"from request_log where {where} group by provider, model "
                "order by provider, model", params).fetchall()
        totals = Totals(since=utc_iso(since),
                        until=utc_iso(until) if until is not None else None)
        for provider, model, count, prompt, completion, cost, unknown, t_est, c_est, ms in rows:
            local = provider == "local"
            if local:
                totals.local_seconds += (ms or 0) / 1000
            totals.requests += count
            totals.cloud_requests += 0 if local else count
            totals.prompt_tokens += prompt
            totals.completion_tokens += completion
            if local:
                totals.local_tokens += prompt + completion
            else:
                totals.cloud_tokens += prompt + completion
            totals.cost_usd += cost
            totals.unknown_cost_requests += unknown
            totals.estimated = totals.estimated or bool(t_est) or bool(c_est)
            totals.cost_estimated = totals.cost_estimated or bool(c_est and cost)
            totals.by_model.append({
                "provider": provider, "model": model, "requests": count,
                "prompt_tokens": prompt, "completion_tokens": completion,
                "cost_usd": None if unknown and not cost else round(cost, 6),
                "unknown_cost_requests": unknown, "seconds": round((ms or 0) / 1000, 1),
                "cost_estimated": bool(c_est and cost)})
        totals.cost_usd = round(totals.cost_usd, 6)
        return totals


def make_ledger(store: Store, settings) -> UsageLedger:
    """The ledger for this user, priced from the shipped price table (when it loads)."""
    try:
        table = price_table()
    except OutpostError as exc:  # a damaged price table: costs become unknown, never zero

        logging.getLogger(__name__).warning("%s", exc)
        return UsageLedger(store, default_user_id(settings))

    def price_for(kind: str, provider: str, model: str):
        # the wire kind prices OpenAI/Anthropic ids; a preset name (openrouter, …) finds a
        # vendor-prefixed id ("openai/gpt-4o")
        return table.price_for(kind, model) or table.price_for(provider, model)

    return UsageLedger(store, default_user_id(settings), price_for)
