"""Offline mode: every conversation is answered on this computer (the local model, or a provider
at localhost) and no connection beyond it is opened.
One switch, shown twice (Chat ▸ Offline mode and a status bar button), kept in the settings.
The network layer's guard (``engines.network_guard``) follows the same settings object, so the
switch refuses every connection from the moment it is on, even if the file cannot be saved."""
from __future__ import annotations

from PySide6.QtCore import QObject, Signal, Slot
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QPushButton, QWidget

from app.config.settings import Settings
from app.domain.errors import OutpostError
from engines import network_guard
from ui import theme
from ui.route_state import LOCAL_COLOUR
from ui.setting_saver import save_setting


class OfflineSwitch(QObject):
    """Owns ``action`` (the menu entry, Ctrl+Shift+O) and ``button`` (the status bar); either
    one switches, both show the state, the settings remember it (``offline_mode``)."""

    offline_mode_changed = Signal()  # after the setting changed (read it from the settings)
    failed = Signal(object)  # an OutpostError: the setting could not be saved

    def __init__(self, settings: Settings, parent: QWidget):
        super().__init__(parent)
        self.settings = settings
        network_guard.follow(settings)
        self.action = QAction("&Offline mode", parent)
        self.action.setCheckable(True)
        self.action.setShortcut(QKeySequence("Ctrl+Shift+O"))
        self.action.setChecked(bool(settings["offline_mode"]))
        self.button = QPushButton()
        self.button.setCheckable(True)
        self.button.setFlat(True)
        self.button.setToolTip("Offline mode: every conversation is answered on this computer "
                               "(the local model, or a provider at localhost); nothing is sent "
                               "beyond it, no other connection is opened.")
        self._show(self.action.isChecked())
        self.action.toggled.connect(self._on_toggled)
        self.button.toggled.connect(self.action.setChecked)

    def _show(self, on: bool) -> None:
        self.button.blockSignals(True)
        self.button.setChecked(on)
        self.button.blockSignals(False)
        self.button.setText("● Offline mode: on" if on else "Offline mode: off")
        theme.set_colour(self.button, LOCAL_COLOUR if on else None,
                         "font-weight:600;" if on else "")

    @Slot(bool)
    def _on_toggled(self, on: bool) -> None:
        self._show(on)
        if bool(self.settings["offline_mode"]) != on:
            try:
                save_setting(self.settings, "offline_mode", on)
            except OutpostError as exc:
                self.failed.emit(exc)
        self.offline_mode_changed.emit()
