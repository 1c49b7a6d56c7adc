"""How errors reach the user: a dismissable banner for expected problems (one plain sentence),
and a dialog for bugs on the GUI thread (the excepthook). Cancellation is never shown as an error.

Errors travel as the exception objects of the one error tree (``app.domain.errors``) all the way
here: ``ErrorPresenter.present`` is the one place that turns one into words on the screen."""
from __future__ import annotations

import re
import sys
import traceback
from dataclasses import dataclass
from typing import Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QMessageBox, QPushButton, QWidget

from app.domain.errors import Cancelled, OutpostError
from app.domain.secrets_mask import SecretMask
from ui import theme


_COMMAND = re.compile(r"`([^`]+)`")


def window_words(text: str) -> str:
    """``text`` as the window shows it. The core's messages are shared with the command line
    and mark a command Markdown's way (store one with `outpost keys set P`); here, as in
    Settings' descriptions, a command is quoted (“outpost keys set P”)."""
    return _COMMAND.sub(r"“\1”", text)


@dataclass(frozen=True)
class BannerAction:
    """One thing to do about the news the banner shows: its button's text, what it does in
    words (the tooltip, read by screen readers) and the doing."""

    text: str
    description: str
    run: Callable[[], None]


class ErrorBanner(QWidget):
    dismissed = Signal()
    retry_requested = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("errorBanner")
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)  # paint the background
        theme.restyle(self, lambda: theme.banner_style("error"))
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.retry_button = QPushButton("Retry")
        self.retry_button.setToolTip("Answer the message that failed again")
        self.retry_button.hide()
        # news may come with one thing to do about it (open the chat it is about)
        self.action_button = QPushButton("Open")
        self.action_button.setToolTip("Open what this message is about")
        self.action_button.hide()
        self._action: BannerAction | None = None
        close = QPushButton("Dismiss")
        close.setToolTip("Hide this message")
        close.setFlat(True)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(12, 6, 8, 6)
        layout.addWidget(self.label, 1)
        layout.addWidget(self.action_button)
        layout.addWidget(self.retry_button)
        layout.addWidget(close)
        self.retry_button.clicked.connect(self.hide)
        self.retry_button.clicked.connect(self.retry_requested)
        close.clicked.connect(self.hide)
        close.clicked.connect(self.dismissed)
        self.action_button.clicked.connect(self._on_action)
        self.hide()

    def show_info(self, message: str,
                  action: BannerAction | None = None) -> None:
        """News that is not an error (e.g. a queued message was answered). ``action``: a
        button for this news only (the banner hides when it is clicked)."""
        theme.restyle(self, lambda: theme.banner_style("info"))
        self.label.setText(window_words(message))
        self.retry_button.hide()
        self._set_action(action)
        self.show()

    def show_error(self, message: str, can_retry: bool = False) -> None:
        theme.restyle(self, lambda: theme.banner_style("error"))
        self.label.setText(window_words(message))
        self.retry_button.setVisible(can_retry)
        self._set_action(None)
        self.show()

    def _set_action(self, action: BannerAction | None) -> None:
        self._action = action
        if action is not None:
            self.action_button.setText(action.text)
            self.action_button.setToolTip(action.description)
        self.action_button.setVisible(action is not None)

    def _on_action(self) -> None:
        action = self._action
        self.hide()
        if action is not None:
            action.run()


class ErrorPresenter:
    """Shows the error tree's exceptions in the banner (with Retry when the failed turn can be
    answered again), and news that is not an error."""

    def __init__(self, banner: ErrorBanner):
        self.banner = banner

    def present(self, error: OutpostError, can_retry: bool = False) -> None:
        if isinstance(error, Cancelled):
            return  # the user's own stop
        self.banner.show_error(str(error), can_retry=can_retry)

    def inform(self, news: str, action: BannerAction | None = None) -> None:
        """``action``: a button with this news."""
        self.banner.show_info(news, action)


def install_excepthook(parent_getter) -> None:
    """Unexpected exceptions on the GUI thread: a dialog with the traceback, the app keeps going."""

    def hook(exc_type, exc, tb):
        # a key this process sent may be quoted in a message or a frame's text: masked, as
        # everything stored and shown is (the keys it handled; no keychain call in a crash)
        text = SecretMask().scrub("".join(traceback.format_exception(exc_type, exc, tb)))
        sys.stderr.write(text)
        box = QMessageBox(parent_getter())
        box.setIcon(QMessageBox.Icon.Critical)
        box.setWindowTitle("Outpost: unexpected error")
        # only what is true whatever failed: messages are written as they are sent and as
        # replies arrive, so what was shown before is on disk; the action that failed may not be
        box.setText("Something went wrong inside Outpost. Messages shown before this error "
                    "are saved; what you were doing when it happened may not have finished.\n"
                    "Please report this with the details below.")
        box.setDetailedText(text)
        box.exec()

    sys.excepthook = hook
