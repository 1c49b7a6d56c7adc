"""Is each cloud provider reachable? online / degraded / offline, per provider.

Fed by two sources (issue 4, first step): the outcome of every real request attempt
(``record_attempt``, wired to the engines' ``on_attempt``) and cheap active probes (``probe``: a
TCP connect to the provider's host, at most 2 s, no HTTP and never a key). While a provider is
offline the probes back off (5 s, 10 s, 20 s … up to 5 min), so a laptop without network does
not spin. One failed send counts once, however many attempts it made (its retries, and the
router's word on the same send, carry its idempotency key): counting each attempt pushed the
next probe minutes away after two messages, so a provider back within seconds waited for it. The router (next step of issue 4) reads ``state`` and ``reason`` from here. Qt-free: the
window may feed OS network-change signals in through ``network_changed``.

In Offline mode a probe opens no socket: it asks ``engines.network_guard`` first (the same guard
every HTTP client of Outpost passes) and, refused, leaves the link as it was. A refusal by
Offline mode (kind ``offline_mode``) says nothing about a provider either way and is not
recorded.
"""
from __future__ import annotations

import datetime as dt
import enum
import socket
import threading
import time
import urllib.request
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlparse

from app.domain.errors import OfflineModeOn, kind_words
from app.domain.messages import CANCEL_OUTCOMES
from engines import network_guard

PROBE_TIMEOUT_S = 2.0
MIN_BACKOFF_S = 5.0
MAX_BACKOFF_S = 300.0
ONLINE_RECHECK_S = 60.0  # an online provider the window uses is probed again this often
# Errors that say the provider could not be reached at all, versus reached but unhappy.
_UNREACHABLE = {"connection_failed", "timeout"}
_UNHAPPY = {"provider_unavailable", "rate_limited", "stream_interrupted"}


class LinkState(str, enum.Enum):
    UNKNOWN = "unknown"
    ONLINE = "online"
    DEGRADED = "degraded"  # reachable but failing (5xx, overloaded, rate limited), or one miss
    OFFLINE = "offline"  # unreachable twice in a row


@dataclass
class ProviderLink:
    state: LinkState = LinkState.UNKNOWN
    since: dt.datetime | None = None  # wall-clock time of the last state change
    failures: int = 0  # consecutive unreachable outcomes (a send counts once)
    failed_send: str | None = None  # the idempotency key of the send counted last
    last_error: str | None = None
    last_probe_at: dt.datetime | None = None
    next_probe_at: float = 0.0  # monotonic


class Connectivity:
    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], dt.datetime] = lambda: dt.datetime.now().astimezone()):
        self._clock = clock
        self._wall = wall
        self._links: dict[str, ProviderLink] = {}
        self._lock = threading.Lock()

    def link(self, provider: str) -> ProviderLink:
        with self._lock:
            return self._links.setdefault(provider, ProviderLink())

    def state(self, provider: str) -> LinkState:
        return self.link(provider).state

    def reason(self, provider: str) -> str:
        """Plain words for the message footer and the indicator."""
        link = self.link(provider)
        when = link.since.strftime("%H:%M") if link.since else "?"
        if link.state is LinkState.OFFLINE:
            return f"{provider} unreachable since {when}"
        if link.state is LinkState.DEGRADED:
            return f"{provider} degraded since {when} ({kind_words(link.last_error)})"
        if link.state is LinkState.ONLINE:
            return f"{provider} online"
        return f"{provider} not tried yet"

    # -- outcomes ------------------------------------------------------------------------------
    def record(self, provider: str, error_kind: str | None, send: str | None = None,
               again: bool = False, probe: bool = False) -> LinkState:
        """One outcome: ``None`` for success; an error kind (``OutpostError.kind``) otherwise.
        ``send``: the idempotency key of the send it belongs to; ``again``: a later attempt of
        that send (a retry), or the router's word on it: an unreachable outcome of the send
        counted last is not counted again (nor is the next probe put off further).
        ``probe``: a probe's TCP connect; after sends that timed out it proves the host is
        there, not that it answers in time: online (worth a try), the timeouts still counted,
        so each one that follows puts the next try further off, as unreachable sends do."""
        link = self.link(provider)
        if error_kind == OfflineModeOn.kind:  # nothing was tried: nothing learnt
            return link.state
        with self._lock:
            if error_kind is None and probe and link.last_error == "timeout" and \
                    link.failures:
                self._set(link, LinkState.ONLINE)  # (the failures stand until an answer)
                link.next_probe_at = self._clock() + ONLINE_RECHECK_S
            elif error_kind is None or error_kind not in _UNREACHABLE | _UNHAPPY:
                # success, or an answer that proves the server is there (401, 400, ...)
                link.failures, link.failed_send = 0, None
                link.last_error = error_kind
                self._set(link, LinkState.ONLINE)
                link.next_probe_at = self._clock() + ONLINE_RECHECK_S
            elif error_kind in _UNREACHABLE:
                link.last_error = error_kind
                if again and send and send == link.failed_send:
                    return link.state  # the same send, counted already
                link.failures += 1
                link.failed_send = send
                self._set(link, LinkState.OFFLINE if link.failures >= 2 else LinkState.DEGRADED)
                backoff = min(MAX_BACKOFF_S, MIN_BACKOFF_S * 2 ** max(0, link.failures - 1))
                link.next_probe_at = self._clock() + backoff
            else:
                link.failures, link.failed_send = 0, None
                link.last_error = error_kind
                self._set(link, LinkState.DEGRADED)
                link.next_probe_at = self._clock() + MIN_BACKOFF_S
            return link.state

    def record_attempt(self, record) -> None:
        """Adapter for the engines' ``on_attempt`` (an ``engines.http_policy.AttemptRecord``).
        The local model's attempts, and attempts cancelled before an answer (by the user,
        because a hedge won, or the app closing), say nothing about the provider's link. The
        retries of one send (attempt 2, 3, … with its idempotency key) count as that send."""
        if record.provider == "local" or record.outcome in CANCEL_OUTCOMES and \
                record.status is None:
            return
        self.record(record.provider, record.error_kind, send=record.idempotency_key or None,
                    again=record.attempt > 1)

    def next_probe_time(self, provider: str) -> dt.datetime:
        """When ``provider`` is probed next (wall clock; now when it is due): what waits for it
        goes once a probe finds it online."""
        wait = max(0.0, self.link(provider).next_probe_at - self._clock())
        return self._wall() + dt.timedelta(seconds=wait)

    def network_changed(self) -> None:
        """The OS says the network changed: probe every provider at the next chance."""
        with self._lock:
            for link in self._links.values():
                link.next_probe_at = 0.0

    # -- probes --------------------------------------------------------------------------------
    def due_for_probe(self, provider: str) -> bool:
        return self._clock() >= self.link(provider).next_probe_at

    def probe(self, provider: str, base_url: str,
              timeout: float = PROBE_TIMEOUT_S) -> LinkState:
        """A TCP connect to the base URL's host and port: cheap, sends nothing, no key. Behind
        a proxy (``HTTPS_PROXY`` and the like, which the requests themselves go through), to
        the proxy instead: the provider's host is neither looked up nor contacted from here.
        In Offline mode (``engines.network_guard``) nothing is opened and the state is
        unchanged."""
        url = urlparse(base_url)
        if not network_guard.may_connect(url.hostname or ""):
            return self.state(provider)
        host, port = probe_address(url)
        try:
            with socket.create_connection((host, port), timeout=min(timeout, PROBE_TIMEOUT_S)):
                error = None
        except OSError:
            error = "connection_failed"
        state = self.record(provider, error, probe=True)
        self.link(provider).last_probe_at = self._wall()
        return state

    def _set(self, link: ProviderLink, state: LinkState) -> None:
        if link.state is not state:
            link.state = state
            link.since = self._wall()


def probe_address(url) -> tuple[str, int]:
    """Where a probe of ``url`` (parsed) connects: the proxy the environment names for it
    (httpx's requests go through it: ``trust_env``), else its own host and port."""
    default = 443 if url.scheme == "https" else 80
    host = url.hostname or ""
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if proxy and not urllib.request.proxy_bypass_environment(host, proxies):
        via = urlparse(proxy if "://" in proxy else "http://" + proxy)
        if via.hostname:
            return via.hostname, via.port or (1080 if via.scheme.startswith("socks") else 80)
    return host, url.port or default
