"""What the window remembers between runs: its geometry, the docks and their sizes, the
sidebar/chat split, and the conversation that was open.

Kept with Qt's QSettings in an INI file next to settings.json (``window.ini`` in the config
folder): this is the window's state, not a user setting, and Qt's geometry blobs restore the
screen, size and maximised state the way the platform expects. A missing or damaged file just
gives the defaults.
"""
from __future__ import annotations

from PySide6.QtCore import QByteArray, QSettings
from PySide6.QtWidgets import QMainWindow, QSplitter

from app.config import paths

FILE = "window.ini"


class WindowState:
    def __init__(self):
        self.qsettings = QSettings(str(paths.config_dir() / FILE), QSettings.Format.IniFormat)

    def restore(self, window: QMainWindow, splitter: QSplitter) -> str | None:
        """Put the window back as it was; returns the conversation that was open (or None)."""
        s = self.qsettings
        for key, apply in (("geometry", window.restoreGeometry),
                           ("state", window.restoreState),
                           ("splitter", splitter.restoreState)):
            value = s.value(key)
            if isinstance(value, QByteArray) and not value.isEmpty():
                apply(value)
        last = s.value("last_conversation")
        return str(last) if last else None

    def save(self, window: QMainWindow, splitter: QSplitter,
             conversation_id: str | None) -> None:
        s = self.qsettings
        s.setValue("geometry", window.saveGeometry())
        s.setValue("state", window.saveState())
        s.setValue("splitter", splitter.saveState())
        s.setValue("last_conversation", conversation_id or "")
        s.sync()
