"""Choosing a route: the header's picker for the current conversation, and Chat ▸ Default route
for new chats (kept in the settings)."""
from __future__ import annotations

from PySide6.QtCore import Signal, Slot
from PySide6.QtGui import QAction, QActionGroup
from PySide6.QtWidgets import QComboBox, QMenu, QWidget

from app.config.settings import Settings
from app.domain.errors import OutpostError
from app.domain.routes import ROUTE_LABELS, Route
from ui.eliding_combo import ElidingComboBox
from ui.route_state import RouteState
from ui.setting_saver import save_setting


AUTO_WITHOUT_PROVIDER = "Auto (local: no provider)"


class RoutePicker(ElidingComboBox):
    """The current conversation's route. The user's pick is announced (``route_picked``); the
    window shows the route that applies with ``show_route`` (greyed out in Offline mode)."""

    route_picked = Signal(str)  # a Route value, picked by the user

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setAccessibleName("Route")
        self.setToolTip(
            "Route of this conversation. Auto: the chosen provider first; if it cannot be "
            "reached, is slow to start, or breaks off, the local model answers or continues. "
            "Local only: never leaves this computer. Cloud only: the provider or nothing (an "
            "unreachable provider's messages wait in the outbox).")
        for route in Route:
            self.addItem(ROUTE_LABELS[route], route.value)
        # narrow windows: the closed box ends its label with "…"; the list shows it whole
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(14)
        self.activated.connect(self._on_activated)

    @Slot(object)
    def show_route(self, state: RouteState) -> None:
        # with no cloud provider chosen, Auto answers on this computer: it says so rather
        # than "cloud" beside "Cloud provider: None"
        self.setItemText(self.findData(Route.AUTO.value), ROUTE_LABELS[Route.AUTO]
                         if state.provider else AUTO_WITHOUT_PROVIDER)
        self.blockSignals(True)
        self.setCurrentIndex(self.findData(state.selected))
        self.blockSignals(False)
        # (in Offline mode too: a provider on this computer still follows the route)

    @Slot(int)
    def _on_activated(self, _index: int) -> None:
        self.route_picked.emit(self.currentData())


# the menu's texts, each with its access letter (A, L, C)
_LETTERED = {route: "&" + label for route, label in ROUTE_LABELS.items()}


class DefaultRouteMenu(QMenu):
    """Chat ▸ Default route for new chats: one checkable entry per route, remembered in the
    settings (``default_route``)."""

    default_route_changed = Signal(str)  # after the setting changed
    failed = Signal(object)  # an OutpostError: the setting could not be saved

    def __init__(self, settings: Settings, parent: QWidget | None = None):
        super().__init__("&Default route for new chats", parent)
        self.settings = settings
        self.group = QActionGroup(self)
        for route in Route:
            action = QAction(_LETTERED[route], self, checkable=True)
            action.setData(route.value)
            action.setChecked(route.value == settings["default_route"])
            self.group.addAction(action)
            self.addAction(action)
        self.group.triggered.connect(self._on_picked)

    @Slot(QAction)
    def _on_picked(self, action: QAction) -> None:
        try:
            save_setting(self.settings, "default_route", action.data())
        except OutpostError as exc:
            self.failed.emit(exc)
        self.default_route_changed.emit(action.data())
