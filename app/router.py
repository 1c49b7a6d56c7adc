"""Which engine answers a turn, and why (issue 4, second step: route policies and failover
before the first token; mid-stream continuation, hedging and the outbox come next).

* ``local``  — private: only the local model; a cloud engine is never built.
* ``cloud``  — only the chosen provider; its failures are shown.
* ``auto``   — the provider first; if it cannot be reached (connection failed, timeout,
  unavailable/overloaded, rate limited with retries exhausted) *before any token*, the local model
  answers at once in the same reply, marked with the reason. Authentication and bad-request
  errors are the user's to fix: they are shown, never silently failed over.
"""
from __future__ import annotations

import enum
import threading
from typing import Iterator

from app.connectivity import Connectivity, LinkState
from app.domain import ChatRequest, StreamEvent
from app.errors import (ConnectionFailed, ProviderUnavailable, RateLimited, TimeoutError_,
                        UsageError)

FAILOVER_ERRORS = (ConnectionFailed, ProviderUnavailable, RateLimited, TimeoutError_)


class Route(str, enum.Enum):
    AUTO = "auto"
    LOCAL = "local"
    CLOUD = "cloud"


def parse_route(value: str) -> Route:
    try:
        return Route(value)
    except ValueError:
        raise UsageError(f"Route must be auto, local or cloud; got {value!r}.") from None


class RoutedEngine:
    """The cloud engine with the local one behind it (route ``auto``), behind the same
    ``Engine`` contract. After streaming, ``answered`` is who wrote the reply and ``reason``
    says why, in plain words; the chat service stores both on the message."""

    def __init__(self, cloud, local_factory, connectivity: Connectivity | None = None):
        self.cloud = cloud
        self._local_factory = local_factory  # built only when needed
        self.connectivity = connectivity
        self.answered = cloud.info
        self.reason = f"cloud first ({cloud.info.engine})"
        self._local = None

    @property
    def info(self):
        return self.cloud.info

    ready = True

    def wait_ready(self, timeout: float | None = None) -> None:
        return None

    def close(self) -> None:
        self.cloud.close()
        if self._local is not None:
            self._local.close()

    def stream(self, request: ChatRequest, cancel: threading.Event) -> Iterator[StreamEvent]:
        name = self.cloud.info.engine
        if self.connectivity is not None and \
                self.connectivity.state(name) is LinkState.OFFLINE:
            reason = f"{self.connectivity.reason(name)}: answered locally"
        else:
            try:
                # A cloud engine raises only before its first event; after text it ends the
                # stream with Finished(error) instead, so nothing is ever resent here.
                yield from self.cloud.stream(request, cancel)
                return
            except FAILOVER_ERRORS as exc:
                reason = f"{name} failed before answering ({exc.kind}): answered locally"
                if self.connectivity is not None:
                    self.connectivity.record(name, exc.kind)
        local = self._local = self._local or self._local_factory()
        local.wait_ready()
        self.answered, self.reason = local.info, reason
        yield from local.stream(request, cancel)
