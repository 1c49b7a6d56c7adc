"""The status bar's route badge: says who answers the current conversation (the local model,
Auto with a provider, Cloud only), coloured by whether anything leaves this computer."""
from __future__ import annotations

from PySide6.QtCore import Qt, Slot
from PySide6.QtWidgets import QLabel, QWidget

from ui import theme
from ui.route_state import LOCAL_COLOUR, RouteState

_STYLE = "font-weight:600; padding:0 8px;"
WIDEST = 220


class RouteBadge(QLabel):
    """A label with one input, ``show_route``; it starts as "Offline — local model" until the
    window shows the first route."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__("● Offline — local model", parent)
        self.setToolTip("Every reply is generated on this computer; nothing is sent over the "
                        "network.")
        theme.set_colour(self, LOCAL_COLOUR, _STYLE)

    @Slot(object)
    def show_route(self, state: RouteState) -> None:
        texts = state.texts()
        # at most WIDEST px (a long provider name ends in "…"), whole in the tooltip and for a
        # screen reader: the badge is part of the status bar's least width, the window's
        self.setText(self.fontMetrics().elidedText(texts.badge, Qt.TextElideMode.ElideRight,
                                                   WIDEST))
        self.setAccessibleName(texts.badge)
        self.setToolTip(f"{texts.badge}: {texts.tooltip}" if self.text() != texts.badge
                        else texts.tooltip)
        theme.set_colour(self, texts.colour, _STYLE)
