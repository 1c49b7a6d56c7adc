"""May Outpost open a connection now? The one place that answers, and the HTTP client that obeys.

Offline mode (the ``offline_mode`` setting; the window's switch) promises that nothing leaves the
computer. That promise is kept here, in the network layer, not only by the callers' care (no
cloud engine built, no probe scheduled):

* ``client(...)`` builds every ``httpx.Client`` Outpost uses (cloud engines, model lists, model
  downloads, the Hugging Face API). Its transport (``GuardedTransport``) asks ``refusal`` before
  each request, redirects included, and raises ``OfflineModeOn`` ("Offline mode is on: … was not
  contacted …") before any socket is opened or any name is looked up. Transports httpx adds for
  proxies from the environment are guarded the same way.
* ``may_connect(host)`` is asked by the raw TCP probes (``app.chat.connectivity``).

**Loopback is allowed.** A host that is this computer (``localhost``, or an address of
``127.0.0.0/8`` or ``::1`` written as such in the URL) may be contacted in Offline mode: a
llama.cpp server or Ollama the user configured as a provider on their own machine is not the
network, and nothing sent to it leaves the computer. Every other host is refused, and so is any
request sent through a proxy (the proxy may be elsewhere).

Where "is Offline mode on" comes from: the window's ``Settings`` object once the window calls
``follow(settings)`` (so a change takes effect at once, even when the settings file could not be
written), else the settings file, read again at each question (so ``outpost offline on`` in
another terminal counts from the next request). A followed object whose file is not the current
settings file (another ``OUTPOST_HOME``) is ignored.
"""
from __future__ import annotations

import weakref
from typing import Any
from urllib.parse import urlparse

import httpx

from app.config import paths
from app.config.providers import is_loopback  # (the one definition: routing asks it too)
from app.config.settings import Settings
from app.domain.errors import OfflineModeOn

_followed: weakref.ref[Settings] | None = None


def follow(settings: Settings) -> None:
    """Take Offline mode from this (the window's) settings object while it lives."""
    global _followed
    _followed = weakref.ref(settings)


def offline_mode() -> bool:
    """Is Offline mode on? (See the module for where the answer comes from.)"""
    followed = _followed() if _followed is not None else None
    if followed is not None and followed.path == paths.settings_path():
        return bool(followed["offline_mode"])
    return bool(Settings()["offline_mode"])


def offline_message(what: str) -> str:
    return (f"Offline mode is on: {what} was not contacted (Offline mode opens no connection "
            "beyond this computer; turn it off with `outpost offline off` or Chat ▸ Offline "
            "mode).")


def refusal(host: str, what: str | None = None, *,
            loopback_ok: bool = True) -> OfflineModeOn | None:
    """The error to raise instead of connecting to ``host``, or None when that is allowed."""
    if loopback_ok and is_loopback(host):
        return None
    if not offline_mode():
        return None
    return OfflineModeOn(offline_message(what or host or "the server"))


def check_url(url: str, what: str | None = None) -> None:
    """Raise ``OfflineModeOn`` now when a request to ``url`` would be refused (a front end that
    wants to say so before building anything, e.g. before looking up an API key)."""
    refused = refusal(urlparse(url).hostname or "", what)
    if refused is not None:
        raise refused


def may_connect(host: str) -> bool:
    """For code that opens sockets itself (probes): False when Offline mode forbids ``host``."""
    return refusal(host) is None


class GuardedTransport(httpx.BaseTransport):
    """An httpx transport that asks ``refusal`` before handing a request to ``inner``.
    ``inner`` stays reachable (``engines.sockets`` installs itself on its connection pool)."""

    def __init__(self, inner: httpx.BaseTransport, *, through_proxy: bool = False):
        self.inner = inner
        self.through_proxy = through_proxy

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        what = f"{host}" + (" (through a proxy)" if self.through_proxy else "")
        refused = refusal(host, what, loopback_ok=not self.through_proxy)
        if refused is not None:
            raise refused
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def client(**kwargs: Any) -> httpx.Client:
    """An ``httpx.Client`` (same keywords) whose every request passes the guard. Every client
    Outpost builds comes from here; a caller that injects its own (tests) owns that choice.

    httpx builds its transports as it always does (so proxies from the environment still work:
    passing ``transport=`` would turn them off) and each is then wrapped."""
    built = httpx.Client(**kwargs)
    built._transport = GuardedTransport(built._transport)
    built._mounts = {pattern: (GuardedTransport(mounted, through_proxy=True)
                               if mounted is not None else None)
                     for pattern, mounted in built._mounts.items()}
    return built
