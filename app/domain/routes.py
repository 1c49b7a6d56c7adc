"""Routes: which kind of engine may answer a turn, decided before anything is built.

* ``local``: only the local model (private: no cloud engine is built, no socket opened);
* ``cloud``: only the chosen provider (when it cannot be reached, the request waits in the
  outbox);
* ``auto``: the provider first, the local model behind it (``app.chat.router.RoutedEngine``).

Offline mode forces ``local``, except for a provider on this computer (loopback: nothing sent
to it leaves the machine), which it leaves to the route; a conversation's own route wins over
the default. The errors that
send an Auto turn to the local model are named here too (``FAILOVER_ERRORS``).
"""
from __future__ import annotations

import dataclasses
import enum

from app.domain.errors import (
    ConnectionFailed,
    NoProviderForCloud,
    ProviderUnavailable,
    RateLimited,
    StreamInterrupted,
    TimeoutError_,
    UsageError,
)

FAILOVER_ERRORS = (ConnectionFailed, ProviderUnavailable, RateLimited, TimeoutError_)
# Errors that end a stream after text and that the local model may continue from.
CONTINUABLE_ERRORS = FAILOVER_ERRORS + (StreamInterrupted,)


class Route(str, enum.Enum):
    AUTO = "auto"
    LOCAL = "local"
    CLOUD = "cloud"


# why a queued outbox item was not sent: its conversation went Local only after it was queued
KEPT_LOCAL = ("Not sent: its conversation is Local only now, so nothing of it leaves this "
              "computer. To send it after all, choose Auto or Cloud only for that conversation "
              "and retry the item.")


def no_longer_local(item_id: int) -> str:
    """Why an item ``KEPT_LOCAL`` failed, once its conversation is Auto or Cloud only again
    (``KEPT_LOCAL`` says it is Local only now: no longer true)."""
    return (f"Not sent while its conversation was Local only; it is not any more. Retry the "
            f"item to send it (Retry in the Outbox, or `outpost outbox retry {item_id}`).")


# what the reply that stands for a Cloud only message in the outbox says in the same two cases
def kept_local_reply(item_id: int) -> str:
    """The reply standing for an item ``KEPT_LOCAL`` (it said the message is sent once the
    provider can be reached: no longer true)."""
    return (f"Outbox item {item_id} was not sent: this conversation is Local only now, so "
            "nothing of it leaves this computer. To send it after all, choose Auto or Cloud "
            f"only for this conversation and retry the item (Retry in the Outbox, or `outpost "
            f"outbox retry {item_id}`).")


def no_longer_local_reply(item_id: int) -> str:
    """The reply standing for an item ``KEPT_LOCAL``, once its conversation is Auto or Cloud
    only again (``no_longer_local``)."""
    return (f"Outbox item {item_id} was not sent while this conversation was Local only; it "
            f"is not any more. Retry the item to send it (Retry in the Outbox, or `outpost "
            f"outbox retry {item_id}`).")


OFFLINE_MODE = "offline mode"  # the route reason of a turn Offline mode (or --offline) keeps local

ROUTE_LABELS = {Route.AUTO: "Auto (cloud, local fallback)", Route.LOCAL: "Local only",
                Route.CLOUD: "Cloud only"}


def parse_route(value: str) -> Route:
    try:
        return Route(value)
    except ValueError:
        raise UsageError(f"Route must be auto, local or cloud; got {value!r}.") from None


@dataclasses.dataclass(frozen=True)
class RouteDecision:
    route: Route
    reason: str | None  # stored on the reply when the route alone explains who answered


def decide_route(conversation_route: str | None, default_route: str, offline_mode: bool,
                 provider: str | None) -> RouteDecision:
    """The effective route of a turn. Offline mode (``offline_mode``: it holds this turn, so
    its provider is not on this computer) wins over everything; a conversation's own route
    wins over the default; Auto without a provider is the local model."""
    if offline_mode:
        return RouteDecision(Route.LOCAL, OFFLINE_MODE)
    route = parse_route(conversation_route or default_route)
    if route is Route.LOCAL:
        return RouteDecision(Route.LOCAL, "local-only conversation")
    if provider is None:
        if route is Route.CLOUD:
            raise NoProviderForCloud("This conversation is Cloud only, but no cloud provider is "
                                     "chosen; pick one (or switch the conversation to Auto or "
                                     "Local only).")
        return RouteDecision(Route.LOCAL, "no cloud provider chosen")
    return RouteDecision(route, None)
