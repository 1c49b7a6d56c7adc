"""Per-profile quotas and rate limits, enforced in the core before any request is sent.

Limits (all optional; unset = no limit):

* ``cloud_tokens_per_day``   prompt + completion tokens sent to cloud providers since local
  midnight (retries, hedged attempts and continuations all count: they are ledger rows);
* ``cloud_cost_per_month``   US dollars of cloud use this calendar month (attempts with an
  unknown price count as zero here and are reported as unknown by ``outpost usage``);
* ``requests_per_minute`` / ``tokens_per_minute``   token buckets with continuous refill: a
  bucket holds one minute's worth and refills at that rate per minute. At least 1: a rate of 0
  refills nothing, so it is refused (``none`` removes a limit; ``cloud_tokens_per_day = 0``
  keeps a profile off the cloud). A 0 that an older Outpost saved in quotas.json, where it
  meant no limit, is read as no limit;
* ``allowed_routes``         e.g. ``["local"]`` for a profile that may not use the cloud;
* ``count_local``            whether local tokens count toward the token limits (default no);
* ``allow_unpriced``         with a cost limit, whether models with no known price may be used
                             (default no: their cost could not be counted against the budget).

Where limits come from, strongest first: the **policy file** (TOML, ``OUTPOST_POLICY`` or
``<config dir>/policy.toml``; a fleet provisions it, nothing in Outpost overrides it), then what
the admin profile set (``outpost quota set`` or the window's Profiles dialog), stored in
``config/quotas.json`` (both read by ``app.storage.quota_book.QuotaBook``). Non-admin profiles
cannot change quotas at all (``app.storage.profiles``).

Both files are checked against their schema when read: a table ``[default]`` and tables
``[profiles.NAME]`` (NAME matched as profile names are, without regard to case: ``Alice`` is
alice's table, and two tables of one profile are refused), each holding only the limits
above, every number finite (never NaN or an infinity, which would mean "no limit") and at
most a million million. A file that cannot be read or
has the wrong shape is refused with one sentence naming the file, the key and what was expected
(exit 2): running without a fleet's limits, or writing over the admin's, is never the fallback.

A policy table that names no profile on this machine applies to nobody: ``policy_warnings``
says so (``outpost quota show``, the window's Profiles dialog). It is not an error, because a
fleet's one file may name profiles that only some machines have.

A budget holds for the whole request: one with room for the prompt but not for ``max_tokens``
of reply limits the reply to what is left (``QuotaGuard.check`` returns a ``ReplyCap``; the
chat service sends that as max_tokens); under Auto, when the local model may answer in full,
``CloudReplyCapped`` says so instead and the local model answers. Over a budget, or without
room for the prompt and a reply of ``MIN_REPLY_TOKENS``: ``QuotaExceeded`` names the limit,
the usage, what the message could need and when it resets; nothing is sent.
``tokens_per_minute`` limits the reply the same way, to what a full bucket holds after the
prompt (the request may then wait for the bucket to refill); a prompt that does not fit with a
``MIN_REPLY_TOKENS`` reply is refused, saying how to fix it (and under Auto, when the limit does
not count the local model, the local model answers).
Rate limited: ``RateLimitedLocally`` says how long to wait (the caller waits with a countdown or
refuses, per the ``rate_limit_wait`` setting); under Auto, when the limits do not count the
local model, ``CloudRateLimited`` says so instead and the local model answers now.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
import threading
import time
from typing import Callable

from app.accounting.pricing import (
    Price,
    affordable_output_tokens,
    estimate_before_sending,
    format_usd,
)
from app.domain.context import ONE_REQUEST, Fanout, ReplyCap
from app.domain.errors import KnownStorageError, UsageError
from app.domain.routes import ROUTE_LABELS, Route
from app.domain.wording import counted
from app.storage.ledger import UsageLedger, start_of_day, start_of_month
from app.storage.quota_holds import Held, QuotaHolds
from app.storage.quota_book import (  # (the limits, where they come from; kept importable here)
    LIMIT_NAMES,
    MAX_COST_USD,
    MAX_COUNT,
    PER_MINUTE,
    Limits,
    QuotaBook,
    limit_text,
    policy_path,
)

log = logging.getLogger(__name__)

# what callers import from here: the guard, its errors, and the limits it reads
__all__ = ["LIMIT_NAMES", "MAX_COST_USD", "MAX_COUNT", "MIN_REPLY_TOKENS", "PER_MINUTE",
           "PER_MINUTE_CAP", "Limits",
           "QuotaBook", "QuotaExceeded", "QuotaGuard", "RateLimitedLocally", "RouteNotAllowed",
           "CloudRateLimited", "CloudReplyCapped", "TokenBucket", "limit_text", "policy_path"]

# the shortest reply worth sending a request for: a budget with less room than the prompt and
# this many reply tokens (or max_tokens, if fewer) refuses the turn rather than limit the reply
MIN_REPLY_TOKENS = 16

# what a reply limited by ``tokens_per_minute`` says limited it (``ReplyCap.limit``): a
# request never asks for more than a minute's tokens, so "hi" goes with max_tokens lowered
PER_MINUTE_CAP = "tokens per minute limit"


class QuotaExceeded(UsageError):
    kind = "quota_exceeded"

    def __init__(self, message: str, cloud_budget: str | None = None, advice: str = "",
                 lasting: bool = False):
        """``cloud_budget``: which cloud-only budget is spent, in a few words ("daily token
        quota reached"), when the local model is not limited by it: Auto then answers
        locally (``app.chat.pipeline``) instead of refusing. ``advice``: what the user can do
        (" Switch …"), after the message; ``finding`` is the message without it (Auto, which
        answers locally by itself, says that instead). ``lasting``: no wait makes room (a
        route not allowed, a request larger than a per-minute limit, a model with no price
        under a budget): only a change of the limits or of the request does, so a queued
        request fails, saying so, rather than wait (``app.chat.outbox_sender``)."""
        super().__init__(message + advice)
        self.cloud_budget = cloud_budget
        self.finding = message
        self.lasting = lasting


class CloudReplyCapped(QuotaExceeded):
    """Under Auto, a budget the local model is not counted against would limit the cloud's
    reply (``cap``), and the local model may answer: it answers in full instead
    (``QuotaGuard.check`` with ``local_instead``; ``app.chat.pipeline``). Nothing is taken
    from the buckets; with no local model to answer, the turn is checked again without
    ``local_instead`` and goes to the cloud, capped."""

    def __init__(self, profile: str, cap: ReplyCap):
        limited = f"{cap.limit} would limit the reply to {cap.max_tokens:,} tokens " \
            f"({cap.asked:,} asked)"
        super().__init__(f"{profile}'s {limited}.", cloud_budget=limited)
        self.cap = cap


class CloudRateLimited(QuotaExceeded):
    """Under Auto, the per-minute limits (which do not count the local model) would have the
    cloud's request wait ``wait_s`` for its bucket to refill, and the local model may
    answer: it answers now instead (``QuotaGuard.check`` with ``local_instead``;
    ``app.chat.pipeline``), as for a budget. Nothing is taken from the buckets; with no local
    model, the turn is checked again without ``local_instead`` (and waits, or is refused,
    as ``RateLimitedLocally`` says)."""

    def __init__(self, profile: str, limit: str, wait_s: float):
        """``limit``: which, as "limit of 500 tokens per minute"."""
        wait = f"wait {math.ceil(wait_s)} s"  # whole seconds, rounded up, as the wait says
        super().__init__(f"{profile}'s {limit} would have the cloud {wait}.",
                         cloud_budget=f"{limit}: the cloud would {wait}")
        self.wait_s = wait_s


class RouteNotAllowed(QuotaExceeded):
    """The profile's ``allowed_routes`` leave out the turn's ``route``: no wait makes room
    (an outbox item fails, saying so, rather than wait). ``allowed``: the routes it may use;
    ``source``: where that limit comes from ("policy file", "quota set")."""

    def __init__(self, message: str, profile: str, route: str, allowed: tuple[str, ...],
                 source: str):
        super().__init__(message, lasting=True)
        self.profile, self.route, self.allowed, self.source = profile, route, allowed, source

    @property
    def route_words(self) -> str:
        return route_words(self.route)

    @property
    def allowed_words(self) -> str:
        return ", ".join(route_words(r) for r in self.allowed) or "none"


class RateLimitedLocally(UsageError):
    kind = "rate_limited_locally"

    def __init__(self, message: str, wait_s: float):
        super().__init__(message)
        self.wait_s = wait_s


class TokenBucket:
    """Continuous refill: ``rate`` units per minute, holding at most ``capacity`` (default: one
    minute's worth). In any window of T seconds it admits at most capacity + rate * T / 60."""

    def __init__(self, rate_per_minute: float, capacity: float | None = None,
                 clock: Callable[[], float] = time.monotonic):
        if rate_per_minute <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate_per_minute / 60.0  # per second
        self.capacity = float(capacity if capacity is not None else rate_per_minute)
        self.level = self.capacity
        self.clock = clock
        self.updated = clock()
        self._lock = threading.Lock()

    def seed(self, events: list[tuple[float, float]]) -> None:
        """Start from past takes, ``(seconds_ago, amount)``: a new process (the CLI) picks up
        what the ledger says was used in the last minute, so limits hold across processes."""
        with self._lock:
            level, previous = self.capacity, None
            for ago, amount in sorted(events, key=lambda e: -e[0]):
                if previous is not None:
                    level = min(self.capacity, level + (previous - ago) * self.rate)
                level = max(0.0, level - amount)
                previous = ago
            if previous is not None:
                level = min(self.capacity, level + previous * self.rate)
            self.level = level
            self.updated = self.clock()

    def _refill(self) -> None:
        now = self.clock()
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    def wait_time(self, amount: float) -> float:
        """Seconds until ``amount`` can be taken (0: now). More than the capacity: never."""
        with self._lock:
            self._refill()
            if amount > self.capacity:
                return float("inf")
            return max(0.0, (amount - self.level) / self.rate)

    def charge(self, amount: float) -> None:
        """Take ``amount`` even when it is not there (an attempt already made: a retry, a
        hedge): the level may go below zero, and later requests wait longer."""
        with self._lock:
            self._refill()
            self.level -= amount

    def take(self, amount: float) -> bool:
        with self._lock:
            self._refill()
            if amount > self.level:
                return False
            self.level -= amount
            return True


def _next_midnight(now: dt.datetime) -> dt.datetime:
    return start_of_day(now) + dt.timedelta(days=1)


def _next_month(now: dt.datetime) -> dt.datetime:
    first = start_of_month(now)
    return (first + dt.timedelta(days=32)).replace(day=1)


class QuotaGuard:
    """Checks a turn against its profile's limits before anything is sent."""

    def __init__(self, book: QuotaBook, ledger, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], dt.datetime] = lambda: dt.datetime.now().astimezone(),
                 holds: QuotaHolds | None = None):
        """``holds``: where requests in flight reserve their share of the budgets (default:
        the ledger's database; ``app.storage.quota_holds``)."""
        self.book, self.ledger, self.clock, self.wall = book, ledger, clock, wall
        self.holds = holds if holds is not None else \
            QuotaHolds(ledger.store) if isinstance(ledger, UsageLedger) else None
        self._buckets: dict[tuple[str, str, int], TokenBucket] = {}
        # turns whose first attempts the check already took from the buckets: idempotency
        # key -> attempts still paid for (one; best-of-n: its candidates and judge). Every
        # further attempt (an automatic retry, a hedge, a continuation) is charged as it lands
        # in the ledger, so it counts toward the per-minute limits at once
        self._turns: dict[str, int] = {}
        if hasattr(ledger, "listeners"):
            ledger.listeners.append(self._on_attempt)

    def note_turn(self, idempotency_key: str, fanout: Fanout = ONE_REQUEST) -> None:
        """The turn that just passed ``check``: its first attempts (one, or the requests of
        its ``fanout``) are paid for."""
        self._turns[idempotency_key] = fanout.requests

    def _on_attempt(self, record, profile: str, tokens: int) -> None:
        key = (record.idempotency_key or "").split("~")[0]  # candidates count with their turn
        if self._turns.get(key, 0) > 0:
            self._turns[key] -= 1
            return  # an attempt the check took from the buckets
        try:
            limits = self.book.limits(profile)
        except Exception:  # noqa: BLE001 - a broken file is reported by the next check
            return
        if record.kind == "local" or record.provider == "local":
            if not limits.count_local:
                return
        for (who, what, rate), bucket in list(self._buckets.items()):
            if who == profile and (
                    (what == "requests" and rate == limits.requests_per_minute) or
                    (what == "tokens" and rate == limits.tokens_per_minute)):
                bucket.charge(1 if what == "requests" else tokens)

    def _bucket(self, profile: str, what: str, rate: int, count_local: bool) -> TokenBucket:
        key = (profile, what, rate)
        if key not in self._buckets:
            bucket = TokenBucket(rate, clock=self.clock)
            bucket.seed(self.ledger.recent(profile, what, 60.0, count_local, self.wall()))
            self._buckets[key] = bucket
        return self._buckets[key]

    def check(self, profile: str, route: str, cloud: bool, prompt_tokens: int,
              max_tokens: int, price_known: bool = True, model: str = "",
              price: Price | None = None, fanout: Fanout = ONE_REQUEST,
              local_instead: bool = False, hold: str | None = None,
              dry: bool = False) -> ReplyCap | None:
        """Raise QuotaExceeded / RateLimitedLocally, or take from the buckets and return.

        A budget (the daily tokens, the monthly dollars at ``price``) that has room for the
        prompt and a reply of at least ``MIN_REPLY_TOKENS`` (or ``max_tokens``, if fewer), but
        not for ``max_tokens`` of reply, limits the reply: the ``ReplyCap`` returned says to
        how many tokens (the caller sends that as the request's max_tokens). None: the
        request goes as asked. ``fanout``: the requests the turn sends (best-of-n's candidates
        and its judge), all reckoned: each candidate's reply is limited alike, and the rate
        buckets are charged for them all. ``local_instead`` (Auto, which can answer locally):
        rather than limit the reply, raise ``CloudReplyCapped`` when the local model may
        answer in full (its route allowed, and ``count_local`` off: then no limit counts it).

        The budgets count what requests still running reserved (``app.storage.quota_holds``),
        and with ``hold`` (the turn's idempotency key) the request reserves what it may use,
        in the same transaction (so two processes checking at once cannot both take what is
        left), until ``release(hold)``.

        ``dry``: the same answer (the cap, or the same error) without reserving or taking
        anything, for the window's token meter as the user types (``hold`` is ignored)."""
        limits = self.book.limits(profile)
        budgets = (cloud or limits.count_local) and limits.cloud_tokens_per_day is not None \
            or cloud and limits.cloud_cost_per_month is not None
        if dry or self.holds is None or not budgets:
            return self._check(limits, profile, route, cloud, prompt_tokens, max_tokens,
                               price_known, model, price, fanout, local_instead, None, dry)
        with self.holds.store.transaction():
            return self._check(limits, profile, route, cloud, prompt_tokens, max_tokens,
                               price_known, model, price, fanout, local_instead, hold)

    def release(self, hold: str) -> None:
        """The request that ``check`` reserved for under ``hold`` ended (its usage is in the
        ledger): what it reserved is free again."""
        if self.holds is None:
            return
        try:
            self.holds.release(hold)
        except KnownStorageError as exc:  # (a full disk): it lapses (HOLD_EXPIRY_S)
            log.warning("the quota hold of %s stays until it lapses: %s", hold, exc)

    def _held(self, profile: str, since: dt.datetime, now: dt.datetime) -> Held:
        return self.holds.held(profile, since, now) if self.holds is not None else Held()

    def _check(self, limits: Limits, profile: str, route: str, cloud: bool,
               prompt_tokens: int, max_tokens: int, price_known: bool, model: str,
               price: Price | None, fanout: Fanout, local_instead: bool,
               hold: str | None, dry: bool = False) -> ReplyCap | None:
        now = self.wall()
        if limits.allowed_routes is not None and route not in limits.allowed_routes:
            allowed = ", ".join(route_words(r) for r in limits.allowed_routes) or "none"
            source = limits.sources.get("allowed_routes", limits.source)
            raise RouteNotAllowed(f"The profile {profile} may use only these routes: {allowed} "
                                  f"({source}); this conversation's route is "
                                  f"{route_words(route)}.", profile, route,
                                  tuple(limits.allowed_routes), source)
        counts = cloud or limits.count_local
        minimal = min(max_tokens, MIN_REPLY_TOKENS)
        room: list[tuple[int, str]] = []  # (reply tokens a budget leaves, which budget)
        if counts and limits.cloud_tokens_per_day is not None:
            room.append(self._daily_room(profile, limits, now, cloud, prompt_tokens,
                                         max_tokens, minimal, fanout))
        if cloud and limits.cloud_cost_per_month is not None:
            if not price_known and not limits.allow_unpriced:
                raise QuotaExceeded(
                    f"{profile} has a monthly cloud budget, and {model or 'this model'} has no "
                    "known price (it is not in resources/prices.json), so its cost could not "
                    "be counted against the budget. Use a priced model or Local only; the "
                    "admin can allow unpriced models (allow_unpriced = true).",
                    cloud_budget=f"{model or 'the model'} has no price under a cloud budget",
                    lasting=True)
            affordable = self._monthly_room(profile, limits, now, prompt_tokens, max_tokens,
                                            minimal, price, model, fanout)
            if affordable is not None:
                room.append((affordable, "monthly cloud budget"))
        if counts and limits.tokens_per_minute is not None:
            room.append(self._minute_room(profile, limits, cloud, prompt_tokens, minimal,
                                          fanout))
        # under Auto, what the cloud could do only limited, or later, the local model (no
        # limit counts it) may do in full, now
        local_may_answer = local_instead and cloud and not limits.count_local and (
            limits.allowed_routes is None or "local" in limits.allowed_routes)
        cap = None
        tightest = min(room, default=None)
        if tightest is not None and tightest[0] < max_tokens:
            limit = tightest[1] if fanout.requests == 1 else \
                f"{tightest[1]}, shared by {fanout.what}"
            cap = ReplyCap(tightest[0], max_tokens, limit)
            if local_may_answer:
                raise CloudReplyCapped(profile, cap)
            max_tokens = cap.max_tokens
        if hold is not None and self.holds is not None:  # (rolled back if the buckets refuse)
            cost = estimate_before_sending(fanout.prompts * prompt_tokens + fanout.extra,
                                           fanout.replies * max_tokens, price).usd \
                if cloud and price is not None else 0.0
            self.holds.hold(hold, profile, fanout.tokens(prompt_tokens, max_tokens)
                            if counts else 0, cost, now)
        self._take_from_buckets(profile, limits, counts, fanout.tokens(prompt_tokens, max_tokens),
                                fanout, local_may_answer, dry)
        return cap

    def admit(self, profile: str, route: str, request, prompt_tokens: int, *,
              asked: int | None = None, price_known: bool = True,
              price: Price | None = None, fanout: Fanout = ONE_REQUEST,
              local_instead: bool = False, cloud: bool | None = None):
        """A request already built, about to go again (a Retry, an outbox send): ``check``ed
        for ``asked`` tokens of reply (default: its max_tokens), its requests noted as paid
        for. ``cloud``: whether it goes to the cloud now (default: unless ``route`` is
        local). Returns (the request with max_tokens as it may go, the ReplyCap or None)."""
        asked = request.max_tokens if asked is None else asked
        cloud = route != "local" if cloud is None else cloud
        cap = self.check(profile, route, cloud, prompt_tokens, asked,
                         price_known=price_known, model=request.model, price=price,
                         fanout=fanout, local_instead=local_instead,
                         hold=request.idempotency_key)
        request = dataclasses.replace(request, max_tokens=cap.max_tokens if cap else asked)
        self.note_turn(request.idempotency_key, fanout)  # its requests are paid for
        return request, cap

    def _daily_room(self, profile: str, limits: Limits, now: dt.datetime, cloud: bool,
                    prompt_tokens: int, max_tokens: int, minimal: int,
                    fanout: Fanout) -> tuple[int, str]:
        """The reply tokens today's token quota leaves after the prompt (each reply's, when
        the turn sends several); QuotaExceeded when that is less than ``minimal``."""
        used = self.ledger.totals(start_of_day(now), profile)
        held = self._held(profile, start_of_day(now), now).tokens
        spent = used.cloud_tokens + (used.local_tokens if limits.count_local else 0)
        limit = limits.cloud_tokens_per_day
        assert limit is not None
        left = limit - spent - held
        if (room := fanout.reply_room(left, prompt_tokens)) >= minimal:
            return room, "daily token quota"
        reset = _next_midnight(now)
        cloud_only = cloud and not limits.count_local
        raise QuotaExceeded(
            f"Daily token quota reached for {profile}: {spent:,} of {limit:,} tokens used "
            "today" + (f" and {held:,} reserved by requests still running" if held else "")
            + f", and this message could need {fanout.tokens(prompt_tokens, max_tokens):,} "
            f"more ({fanout.need(prompt_tokens, max_tokens)}); "
            + (f"the {left:,} left {'is' if left == 1 else 'are'} not enough for the prompt "
               f"and a {minimal:,}-token reply"
               + ("" if fanout.requests == 1 else " to each request")
               if left > 0 else "nothing is left")
            + ". It resets "
            f"at {reset:%H:%M} ({limits.sources.get('cloud_tokens_per_day', limits.source)}).",
            advice=" The local model is not limited: switch this chat to Local only."
            if cloud_only else "",
            cloud_budget=f"daily token quota reached ({spent:,} of {limit:,})"
            if cloud_only else None)

    def _minute_room(self, profile: str, limits: Limits, cloud: bool, prompt_tokens: int,
                     minimal: int, fanout: Fanout) -> tuple[int, str]:
        """The reply tokens ``tokens_per_minute`` can ever hold after the prompt (a full
        bucket: the request may still wait for it to refill); QuotaExceeded (lasting: no wait
        makes room) when not even the prompt and a ``minimal`` reply fit. It reserved the
        whole max_tokens, so with the default 512 a limit of 500 refused even "hi"."""
        rate = limits.tokens_per_minute
        assert rate is not None
        if (room := fanout.reply_room(rate, prompt_tokens)) >= minimal:
            return room, PER_MINUTE_CAP
        prompts = fanout.prompts * prompt_tokens + fanout.extra
        what = f"This message's prompt ({prompts:,} tokens) with a {minimal:,}-token reply" \
            if fanout.requests == 1 else \
            f"This message ({fanout.what}: {fanout.requests} requests, {prompts:,} prompt " \
            f"tokens, with a {minimal:,}-token reply each)"
        cloud_only = cloud and not limits.count_local
        raise QuotaExceeded(
            f"{what} is larger than {profile}'s limit of {counted(rate, 'token')} per minute.",
            advice=" Shorten the message (or start a new chat: the conversation so far is sent "
            "with it), or ask the admin to raise tokens_per_minute ("
            f"{limits.sources.get('tokens_per_minute', limits.source)})."
            + (" The local model is not limited: switch this chat to Local only."
               if cloud_only else ""),
            cloud_budget=f"the prompt does not fit the limit of {counted(rate, 'token')} per "
            "minute" if cloud_only else None, lasting=True)

    def _monthly_room(self, profile: str, limits: Limits, now: dt.datetime,
                      prompt_tokens: int, max_tokens: int, minimal: int,
                      price: Price | None, model: str, fanout: Fanout) -> int | None:
        """The reply tokens this month's cloud budget still buys at ``price`` after the
        prompt (None: no limit it can reckon: no price, or free output); QuotaExceeded when
        that is less than ``minimal``, or when the budget is spent. A turn of several requests
        (``fanout``) pays for each prompt, and its replies share what is left (a judge's copy
        of the candidates at the output price: the most it can cost)."""
        limit = limits.cloud_cost_per_month
        assert limit is not None
        used = self.ledger.totals(start_of_month(now), profile)
        held = self._held(profile, start_of_month(now), now).cost_usd
        affordable = None
        if price is not None:
            affordable = affordable_output_tokens(
                limit - used.cost_usd - held, fanout.prompts * prompt_tokens + fanout.extra, price)
            if affordable is not None and affordable >= 0:
                affordable //= fanout.replies
            if affordable is None or affordable >= minimal:
                return affordable
        elif used.cost_usd + held < limit:
            return None
        reset = _next_month(now)
        spent = f"{format_usd(used.cost_usd)} of {format_usd(limit)}"
        need = ""
        if price is not None:
            most = estimate_before_sending(fanout.prompts * prompt_tokens + fanout.extra,
                                           fanout.replies * max_tokens, price).usd
            left = limit - used.cost_usd - held
            said = f"{prompt_tokens:,} prompt tokens and up to {max_tokens:,} reply tokens" \
                if fanout.requests == 1 else fanout.need(prompt_tokens, max_tokens, " tokens")
            need = (f", and this message could cost up to {format_usd(most)} "
                    f"({said} at {model or 'the model'}'s price); "
                    + (f"the {format_usd(left)} left is not enough for the prompt and a "
                       f"{minimal:,}-token reply" if left > 0 else "nothing is left"))
        raise QuotaExceeded(
            f"Monthly cloud budget reached for {profile}: {spent} spent this month"
            + (f" and {format_usd(held)} reserved by requests still running" if held else "")
            + f"{need}. It "
            f"resets on {reset:%Y-%m-%d} "
            f"({limits.sources.get('cloud_cost_per_month', limits.source)}).",
            cloud_budget=f"monthly cloud budget reached ({spent})")

    def _take_from_buckets(self, profile: str, limits: Limits, counts: bool,
                           needed: int, fanout: Fanout = ONE_REQUEST,
                           local_may_answer: bool = False, dry: bool = False) -> None:
        """The per-minute limits: RateLimitedLocally (or QuotaExceeded, for a request no
        bucket can ever hold), or take ``needed`` tokens and the turn's requests (``dry``:
        take nothing). ``local_may_answer`` (Auto, the local model not counted):
        CloudRateLimited instead of a wait."""
        requests = fanout.requests
        if not counts:
            return
        waits = []
        buckets = []
        if limits.requests_per_minute is not None:
            bucket = self._bucket(profile, "requests", limits.requests_per_minute,
                                  limits.count_local)
            waits.append((bucket.wait_time(requests), "request", limits.requests_per_minute))
            buckets.append((bucket, requests))
        if limits.tokens_per_minute is not None:
            bucket = self._bucket(profile, "tokens", limits.tokens_per_minute,
                                  limits.count_local)
            waits.append((bucket.wait_time(needed), "token", limits.tokens_per_minute))
            buckets.append((bucket, needed))
        wait, noun, rate = max(waits, default=(0.0, "", 0))
        if wait == float("inf"):
            what = f"This request ({needed:,} tokens with max tokens)" if requests == 1 else \
                f"This message ({fanout.what}: {requests} requests, {needed:,} tokens with max " \
                "tokens)"
            raise QuotaExceeded(f"{what} is larger than {profile}'s limit of "
                                f"{counted(rate, noun)} per minute.", lasting=True)
        if wait > 0 and local_may_answer:
            raise CloudRateLimited(profile, f"limit of {counted(rate, noun)} per minute",
                                   wait)
        if wait > 0:  # whole seconds, rounded up: never "try again in 0 s"
            raise RateLimitedLocally(f"Rate limit for {profile}: {counted(rate, noun)} per "
                                     f"minute; try again in {math.ceil(wait)} s.", wait)
        if dry:
            return
        for bucket, amount in buckets:
            bucket.take(amount)


def route_words(value: str) -> str:
    """A route as the window names it ("local" -> "Local only")."""
    try:
        return ROUTE_LABELS[Route(value)]
    except ValueError:
        return value
