"""What the window remembers between runs: its geometry, the docks and their sizes, the
sidebar/chat split, the conversation that was open, and the message being typed (``Draft``:
a second after typing stops, so closing, a crash or a power cut loses at most that second).
None of it waits for a clean close: the open conversation is written when it changes, the
geometry half a second after the user stops resizing or moving (``GeometryKeeper``).

Kept with Qt's QSettings in an INI file next to settings.json (``window.ini`` in the config
folder): this is the window's state, not a user setting, and Qt's geometry blobs restore the
screen, size and maximised state the way the platform expects. A missing or damaged file just
gives the defaults.
"""
from __future__ import annotations

import os
import urllib.parse
from pathlib import Path
from typing import Callable

from PySide6.QtCore import (
    QByteArray,
    QEvent,
    QObject,
    QSettings,
    QStandardPaths,
    QTimer,
    Slot,
)
from PySide6.QtWidgets import QMainWindow, QPlainTextEdit, QSplitter

from app.config import paths
from app.domain.secrets_mask import SecretMask

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
        """Everything, as the window closes."""
        self.qsettings.setValue("last_conversation", conversation_id or "")
        self.save_geometry(window, splitter)

    def save_geometry(self, window: QMainWindow, splitter: QSplitter) -> None:
        """The window's size and place, its docks and the split (``GeometryKeeper``)."""
        s = self.qsettings
        s.setValue("geometry", window.saveGeometry())
        s.setValue("state", window.saveState())
        s.setValue("splitter", splitter.saveState())
        self._sync()

    @Slot(str)
    def save_last_conversation(self, conversation_id: str) -> None:
        """The conversation open now ("" : a new chat), written as it changes: a crash or a
        power cut mid-reply opens it again at the next start."""
        self.qsettings.setValue("last_conversation", conversation_id)
        self._sync()

    def sampling_squeezed(self) -> bool:
        """Whether the Sampling panel was hidden for want of room (``ui.sampling_room``)."""
        return str(self.qsettings.value("sampling_squeezed", "false")).lower() == "true"

    def save_sampling_squeezed(self, squeezed: bool) -> None:
        self.qsettings.setValue("sampling_squeezed", "true" if squeezed else "false")
        self._sync()

    def draft(self, profile: str) -> str:
        value = self.qsettings.value(_draft_key(profile))
        return value if isinstance(value, str) else ""

    def save_draft(self, profile: str, text: str) -> None:
        self.qsettings.setValue(_draft_key(profile), text)
        self._sync()

    def forget_draft(self, profile: str) -> None:
        """A removed profile's draft goes with it."""
        self.qsettings.remove(_draft_key(profile))
        self._sync()

    def _sync(self) -> None:
        self.qsettings.sync()
        try:  # a draft is the user's words: readable by them only, as the database is
            os.chmod(self.qsettings.fileName(), 0o600)
        except OSError:
            pass


def start_folder(kind: str, default: Callable[[], Path]) -> Path:
    """Where a file dialog of ``kind`` ("model", "lora", "export", "import", "import-model",
    "schema", "usage", "setting-NAME" for a Settings field) opens: the folder
    last used for it (``remember_folder``), else ``default()``, else the home folder (never the
    process's current folder: the source checkout, or wherever Outpost was started from)."""
    kept = WindowState().qsettings.value(f"folders/{kind}")
    for folder in ((Path(kept),) if isinstance(kept, str) and kept else ()) + (default(),):
        if folder.is_dir():
            return folder
    return Path.home()


def remember_folder(kind: str, chosen: str) -> None:
    """The file ``chosen`` in a file dialog of ``kind``: its folder is where the next opens."""
    state = WindowState()
    state.qsettings.setValue(f"folders/{kind}", str(Path(chosen).parent))
    state._sync()


def documents_folder() -> Path:
    """The user's documents folder (the home folder where there is none)."""
    return _standard_folder(QStandardPaths.StandardLocation.DocumentsLocation)


def downloads_folder() -> Path:
    """The user's downloads folder, where a model fetched with a browser lands (the home
    folder where there is none)."""
    return _standard_folder(QStandardPaths.StandardLocation.DownloadLocation)


def _standard_folder(location: QStandardPaths.StandardLocation) -> Path:
    found = QStandardPaths.writableLocation(location)
    return Path(found) if found and Path(found).is_dir() else Path.home()


def _draft_key(profile: str) -> str:
    return "drafts/" + urllib.parse.quote(profile, safe="")


class Draft(QObject):
    """Keeps ``edit``'s text in ``state``, for the signed-in profile, a second after typing
    stops (and when asked: the window closing), and puts it back into an empty ``edit`` at the
    next start, for that profile only (a draft is nobody else's to read). Sending clears the
    box, and so the draft. A known API key in the box is kept as ``[redacted]``: a key never
    goes onto disk, not even one pasted by mistake (``mask``: the keys known now)."""

    SAVE_AFTER_MS = 1000

    def __init__(self, edit: QPlainTextEdit, state: WindowState, profile: str,
                 parent: QObject | None = None,
                 mask: Callable[[], SecretMask] = SecretMask):
        super().__init__(parent)
        self.edit, self.state, self.profile = edit, state, profile
        self.mask = mask
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(self.SAVE_AFTER_MS)
        self.timer.timeout.connect(self.save)
        edit.textChanged.connect(self.timer.start)
        if state.qsettings.contains("draft"):  # an older Outpost's one draft for everyone:
            state.qsettings.remove("draft")  # not shown to whoever comes; not left on disk

    def save(self) -> None:
        self.timer.stop()
        self.state.save_draft(self.profile, self.mask().scrub(self.edit.toPlainText()))

    def restore(self) -> None:
        kept = self.state.draft(self.profile)
        text = self.mask().scrub(kept) if kept else kept
        if text != kept:  # an older Outpost's draft holding a key: not left on disk either
            self.state.save_draft(self.profile, text)
        if text and not self.edit.toPlainText():
            self.edit.setPlainText(text)
            self.edit.moveCursor(self.edit.textCursor().MoveOperation.End)

    def switch(self, profile: str) -> None:
        """Another profile signs in: the box's text is kept as the previous one's draft, and
        the box shows this one's."""
        if profile == self.profile:
            return
        self.save()
        self.profile = profile
        self.edit.clear()
        self.timer.stop()  # (the clear is no typing of the new profile's)
        self.restore()


class GeometryKeeper(QObject):
    """Writes the window's geometry, docks and split ``SAVE_AFTER_MS`` after the user stops
    resizing or moving the window (or dragging the split), so a kill or a power cut does not
    bring the next start back at the default size."""

    SAVE_AFTER_MS = 500
    _MOVES = (QEvent.Type.Resize, QEvent.Type.Move, QEvent.Type.WindowStateChange)

    def __init__(self, window: QMainWindow, splitter: QSplitter, state: WindowState):
        super().__init__(window)
        self.window, self.splitter, self.state = window, splitter, state
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(self.SAVE_AFTER_MS)
        self.timer.timeout.connect(self.save)
        splitter.splitterMoved.connect(self.timer.start)
        window.installEventFilter(self)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt naming)
        if watched is self.window and event.type() in self._MOVES:
            self.timer.start()
        return False

    @Slot()
    def save(self) -> None:
        self.timer.stop()
        self.state.save_geometry(self.window, self.splitter)
