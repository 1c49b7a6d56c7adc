"""What the outbox says about an item in words: why it was queued (kept with the item, so every
process and every later note says the real cause: a 429 is no outage) and when it is tried
next. The window's banner, ``outpost ask`` and the replies' route notes all say it from here.
"""
from __future__ import annotations

import datetime as dt

from app.chat.connectivity import Connectivity, LinkState
from app.domain.errors import OfflineModeOn, ProviderUnavailable, RateLimited, TimeoutError_


def unreachable_clause(provider: str) -> str:
    return f"{provider} could not be reached"


def queued_because(provider: str, error: Exception | None, offline: bool = False) -> str:
    """Why a message went to the outbox for ``provider``, as a clause kept with the item:
    ``error`` is what kept the provider from answering (None: it was not asked, known to be
    unreachable; ``offline``: Offline mode held it back)."""
    if offline or isinstance(error, OfflineModeOn):
        return "Offline mode was on"
    if isinstance(error, RateLimited):
        asked = f" and asked to wait {error.retry_after:.0f} s" if error.retry_after else ""
        return f"{provider} was rate limiting requests{asked}"
    if isinstance(error, TimeoutError_):  # "fault sent no text within 30 s."
        return str(error).strip().rstrip(".")
    if isinstance(error, ProviderUnavailable):
        status = getattr(error, "status", None)
        return f"{provider} was overloaded or down" + (f" (HTTP {status})" if status else "")
    return unreachable_clause(provider)


def next_try_at(item, links: Connectivity | None,
                now: dt.datetime | None = None) -> dt.datetime | None:
    """When the window tries ``item`` next by itself: not before the time its provider asked
    for (429, Retry-After), and once a probe finds the provider reachable (``links``: the
    window's; None: no window sends it, only the time asked for counts)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    held = item.held_until(now)
    if links is None:
        return held
    check = now if links.state(item.provider) is LinkState.ONLINE else \
        links.next_probe_time(item.provider)
    return max(t for t in (held, check, now) if t is not None)


def clock_words(when: dt.datetime, now: dt.datetime | None = None) -> str:
    """``when`` as the user's clock says it: 18:49:05 (with the date when not today)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    local = when.astimezone()
    return local.strftime("%H:%M:%S") if local.date() == now.astimezone().date() else \
        local.strftime("%Y-%m-%d %H:%M:%S")


def next_try_words(item, links: Connectivity | None, now: dt.datetime | None = None) -> str:
    """"the next try is at 18:50:12 (not before: fault asked to wait)", for a sentence."""
    now = now or dt.datetime.now(dt.timezone.utc)
    held = item.held_until(now)
    when = next_try_at(item, links, now)
    if links is None:  # (the CLI: nothing sends it by itself)
        start = f" from {clock_words(held, now)} on (not before: {item.provider} asked to " \
            "wait)" if held is not None else f" once {item.provider} can be reached"
        return f"`outpost outbox send` (or the window) sends it{start}"
    assert when is not None  # (with links there is always a time)
    if held is not None and when <= held:
        return f"the next try is at {clock_words(when, now)} (not before: {item.provider} " \
            "asked to wait)"
    return f"the next try is at {clock_words(when, now)}, when {item.provider} is checked " \
        "again (Send now in the Outbox tries at once)"


def queued_news(item, answered_locally: bool, links: Connectivity | None = None,
                now: dt.datetime | None = None) -> str:
    """The news that a message waits in the outbox: the real cause, and when it is tried
    next (``links``: the window's; None: the CLI's words)."""
    cause = item.queued_because or unreachable_clause(item.provider)
    after = next_try_words(item, links, now)
    if answered_locally:
        return (f"{cause}, so the local model answered. Your message also waits in the "
                f"outbox (item {item.id}), and {after}; {item.provider}'s answer will appear "
                "next to this one.")
    return f"{cause}: your message waits in the outbox (item {item.id}), and {after}."


def route_note(item, how: str, now: dt.datetime | None = None) -> str:
    """Why a reply came from the outbox, and how its send went (``how``: "sent", "cut off",
    "failed"): only an answer that came says the message was sent."""
    queued_at = _hhmm(item.created_at)
    because = item.queued_because
    if because is None or because == unreachable_clause(item.provider):
        queued = f"queued in the outbox at {queued_at} while {item.provider} was unreachable"
        return f"{queued}; sent when it was back" if how == "sent" else \
            f"{queued}; tried when it was back: {how}"
    at = (now or dt.datetime.now(dt.timezone.utc)).astimezone().strftime("%H:%M")
    queued = f"queued in the outbox at {queued_at} because {because}"
    return f"{queued}; sent at {at}" if how == "sent" else f"{queued}; tried at {at}: {how}"


def _hhmm(iso: str) -> str:
    try:
        return dt.datetime.fromisoformat(iso).astimezone().strftime("%H:%M")
    except ValueError:
        return iso
