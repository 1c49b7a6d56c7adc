"""``outpost usage`` and ``outpost quota``: the usage ledger's totals, the limits."""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys

from app.accounting.pricing import Cost, format_usd
from app.cli.commands.common import emit, open_core
from app.domain.errors import UsageError
from app.domain.profile_names import EVERYONE, name_key
from app.storage.ledger import start_of_day, start_of_month
from app.storage.profiles import NotAllowed
from app.storage.quotas import LIMIT_NAMES, QuotaBook, limit_text
from app.storage.usage_report import Period, daily_rows, period_from, write_csv

# every limit `quota set` takes, with the form of its value where a name does not say it
LIMITS_HELP = ", ".join(name + {"cloud_cost_per_month": " (USD)",
                                "allowed_routes": " (comma list)",
                                "count_local": " (true/false)",
                                "allow_unpriced": " (true/false)"}.get(name, "")
                        for name in LIMIT_NAMES)


def cmd_usage(args: argparse.Namespace) -> int:
    period = _usage_period(args)
    core = open_core(args)
    store, service = core.store, core.service
    try:
        ledger = service.ledger
        profile = None if name_key(args.profile or "") == EVERYONE else (
            core.profiles.get(args.profile).name if args.profile else core.profile.name)
        if profile != core.profile.name and not core.profile.is_admin:
            raise NotAllowed(f"Only the admin can see other profiles' usage; you are signed in "
                             f"as {core.profile.name}.")
        if args.csv:
            write_csv(daily_rows(store, profile, period), sys.stdout)
            sys.stdout.flush()
            return 0
        if args.month:
            since, until, name, words = start_of_month(), None, "month", None
        elif args.since is not None:
            since, until, name, words = period.start(), period.end(), "range", period.words()
        else:
            since, until, name, words = start_of_day(), None, "day", "today"
        totals = ledger.totals(since, profile, until)
        if args.json:
            extra = {"first_day": period.first.isoformat(), "last_day": period.last.isoformat()}
            emit(dict(totals.as_dict(), profile=profile or EVERYONE, period=name, **extra))
            return 0
        period_words = since.strftime("%B %Y") if args.month else words

        cost = totals.cost_words()  # "$0.0012 + unknown (…)"; nothing known: "unknown (…)"
        approx = " (some counts estimated)" if totals.estimated else ""
        plural = "request" if totals.requests == 1 else "requests"
        print(f"Usage of {profile or 'everyone'}, {period_words}: {totals.requests} {plural} "
              f"({totals.cloud_requests} cloud), {totals.prompt_tokens:,} prompt + "
              f"{totals.completion_tokens:,} completion tokens{approx}; cloud cost {cost}; "
              f"local model time {totals.local_seconds:,.1f} s.")
        for row in totals.by_model:
            price = f"free, {row['seconds']:,.1f} s" if row["provider"] == "local" \
                else format_usd(Cost(row["cost_usd"], row["cost_estimated"]))
            print(f"  {row['provider']:12} {row['model'][:36]:36} {row['requests']:>5} req "
                  f"{row['prompt_tokens']:>9,} in {row['completion_tokens']:>9,} out  {price}")
        return 0
    finally:
        store.close()


def _usage_period(args: argparse.Namespace) -> Period:
    """The days ``outpost usage`` covers: today, this month, or --since/--until; a clash of
    flags is refused before anything is opened."""
    if args.csv and args.json:
        raise UsageError("--csv or --json, not both.")
    if args.month and (args.since is not None or args.until is not None):
        raise UsageError("--month or --since/--until, not both.")
    today = dt.date.today()
    if args.since is not None or args.until is not None:
        return period_from(args.since, args.until, today)
    if args.month:
        return Period(today.replace(day=1), today)
    return Period(today, today)


def cmd_quota(args: argparse.Namespace) -> int:
    core = open_core(args)
    try:
        book = QuotaBook()
        me = core.profile
        profile = core.profiles.get(args.profile).name if args.profile else me.name
        if args.quota_command == "set":
            if args.name not in LIMIT_NAMES:
                raise UsageError(f"Unknown limit {args.name!r}; known: "
                                 f"{', '.join(LIMIT_NAMES)}.")
            value = _parse_limit(args.name, args.value)
            book.set(profile, args.name, value, by=me)
            print(f"{args.name} for {profile}: " + ("removed" if value is None else
                                                     limit_text(value)) + ".")
            return 0
        if profile != me.name and not me.is_admin:
            raise NotAllowed(f"Only the admin can see other profiles' limits; you are signed "
                             f"in as {me.name}.")
        limits = book.limits(profile)
        for warning in book.policy_warnings(p.name for p in core.profiles.list()):
            sys.stderr.write(f"outpost: warning: {warning}\n")
        if getattr(args, "json", False):
            emit(dict(limits.as_dict(), profile=profile))
            return 0
        print(f"Limits of {profile} " + (f"(policy file: {book.policy}):" if book.policy.exists()
                                          else f"(no policy file; one at {book.policy} would "
                                               "win over these):"))
        for name in LIMIT_NAMES:
            value = getattr(limits, name)
            where = limits.sources.get(name)
            print(f"  {name:22} {'no limit' if value is None else limit_text(value)}"
                  + (f"  ({where})" if where else ""))
        return 0
    finally:
        core.store.close()

def _parse_limit(name: str, text: str):
    text = text.strip()
    if text.lower() == "none":
        return None
    if name == "allowed_routes":  # "local,auto" or the TOML/JSON form ["local", "auto"]
        if text.startswith("["):
            try:
                return list(json.loads(text))
            except (ValueError, TypeError, RecursionError):  # not JSON, not a list, too deep
                raise UsageError("allowed_routes must be a comma list such as local,auto."
                                 ) from None
        return [part.strip() for part in text.split(",") if part.strip()]
    if name in ("count_local", "allow_unpriced"):
        if text.lower() not in ("true", "false", "yes", "no", "on", "off"):
            raise UsageError(f"{name} must be true or false.")
        return text.lower() in ("true", "yes", "on")
    try:
        return float(text) if name == "cloud_cost_per_month" else int(text)
    except ValueError:
        kind = "a number" if name == "cloud_cost_per_month" else "a whole number"
        raise UsageError(f"{name} must be {kind}, got {text!r}.") from None
