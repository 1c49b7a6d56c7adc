"""What the window shows about "who answers" the current conversation, as one value.

The main window reads it from the controller and the settings after anything that can change it
(a conversation opened, the route, the provider, Offline mode, the default route) and hands the
same value to every widget that shows part of it: the route picker, the target and model
pickers, the status bar's route badge, the composer. None of them reads another's state.
"""
from __future__ import annotations

from dataclasses import dataclass

from app.domain.routes import Route

# the route badge's colours (ui.theme's kinds): local (nothing leaves this computer), cloud,
# and "needs a choice"
LOCAL_COLOUR = "ok"
CLOUD_COLOUR = "accent"
WARNING_COLOUR = "warning"

_LOCAL_TOOLTIP = "Every reply is generated on this computer; nothing is sent over the network."


@dataclass(frozen=True)
class RouteTexts:
    """The words for one route state: the status bar badge and the empty conversation."""

    badge: str
    tooltip: str
    colour: str  # a ui.theme colour kind
    placeholder: str  # the composer's, before "(Enter sends, …)"
    empty: str  # the conversation view's, while it has no message


@dataclass(frozen=True)
class RouteState:
    """The current conversation's route as the window shows it."""

    own: str | None  # the conversation's own route (None: it follows the default)
    default: str  # the default route for new chats (settings)
    route: Route  # the route that applies now (Offline mode: local, but for a provider here)
    provider: str | None  # the chosen cloud provider, None: the local model only
    offline: bool
    send_when_online: bool  # the Auto route's "also queue for the cloud" choice
    hedge_after_s: float
    # the provider is on this computer (localhost): Offline mode leaves it to the route
    provider_here: bool = False
    # Offline mode keeps the local model answering although a provider elsewhere is chosen
    # on a route that reaches it: the message may wait for it until Offline mode is off
    held_offline: bool = False

    @classmethod
    def of(cls, controller, settings) -> RouteState:
        """Read it from a ``ui.chat_controller.ChatController`` and the settings."""
        return cls(own=controller.conversation_route(), default=settings["default_route"],
                   route=Route(controller.effective_route()), provider=controller.provider,
                   offline=bool(settings["offline_mode"]),
                   send_when_online=controller.send_when_online,
                   hedge_after_s=settings["hedge_after_s"],
                   provider_here=controller.provider_on_this_computer(),
                   held_offline=controller.held_by_offline_mode())

    @property
    def selected(self) -> str:
        """The route picker's entry: the conversation's own route, else the default."""
        return self.own or self.default

    @property
    def cloud_possible(self) -> bool:
        """A provider is chosen and the route lets messages go to it."""
        return self.route is not Route.LOCAL and self.provider is not None

    @property
    def uses_cloud(self) -> bool:
        """The cloud provider's engine answers (its knobs apply, its models may be listed);
        in Offline mode only one on this computer does (``route`` is local otherwise)."""
        return self.cloud_possible

    def texts(self) -> RouteTexts:
        provider = self.provider
        if self.route is Route.CLOUD and provider is None:
            return RouteTexts(
                "⚠ Cloud only: choose a provider",
                "This conversation is Cloud only but no cloud provider is chosen: pick one next "
                "to the Route, or switch the route to Auto or Local only.",
                WARNING_COLOUR, "Choose a cloud provider first…",
                "This conversation is Cloud only: choose a cloud provider above.")
        if not self.cloud_possible:
            why = ("Offline mode" if self.offline else "Local only" if self.route is Route.LOCAL
                   else "Local model")
            return RouteTexts(
                f"● {why}", _LOCAL_TOOLTIP, LOCAL_COLOUR, "Message the local model…",
                "Start a conversation: type below and press Enter.\n"
                "Everything stays on this computer with the local model.")
        here = (f"Offline mode is on, and {provider} is on this computer (localhost), so it "
                "still answers. ") if self.offline else ""
        if self.route is Route.CLOUD:
            return RouteTexts(
                f"☁ Cloud only · {provider}",
                here + "Messages of this chat are sent to the provider only; when it cannot be "
                "reached they wait in the outbox.",
                CLOUD_COLOUR, f"Message {provider}…",
                f"Start a conversation: type below and press Enter.\nMessages go to {provider} "
                "only; while it cannot be reached they wait in the outbox.")
        return RouteTexts(
            f"☁ Auto · {provider}",
            here + f"Auto: messages go to {provider}; when it cannot be reached, is slower than "
            f"{self.hedge_after_s:g} s to start, or breaks off, the local model answers or "
            "continues (the reply says so).",
            CLOUD_COLOUR, f"Message {provider}…",
            f"Start a conversation: type below and press Enter.\nMessages go to {provider}; "
            "the local model steps in when it cannot answer.")
