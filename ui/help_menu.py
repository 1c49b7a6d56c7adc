"""Help ▸ Keyboard shortcuts and Help ▸ About Outpost.

The shortcuts list is generated from the window's own actions (every menu item with a key), plus
the keys that are not menu items (the composer, a focused reply, the chat list), so it cannot
drift from what the keys really do. About names the versions a bug report needs: Outpost,
Qt/PySide6, llama-cpp-python and the model in use; and the licences of Outpost, the bundled
model and the main libraries, with links.
"""
from __future__ import annotations

import html
import platform
from importlib import metadata
from typing import Callable

from PySide6 import __version__ as pyside_version
from PySide6.QtCore import Qt, qVersion
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFrame,
    QLabel,
    QMenu,
    QMessageBox,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from ui.message_actions import SHORTCUTS as MESSAGE_KEYS
from ui.sidebar import SHORTCUTS as CHAT_LIST_KEYS

OTHER_KEYS = (
    ("Tab / Shift+Tab", "The next / previous control (the arrow keys move inside a list)"),
    ("Alt+letter", "Open a menu by its underlined letter (Alt+C: Chat); then a letter "
                   "chooses an item"),
    ("Menu", "Every action of the focused message, or of the selected chat"),
    ("Enter", "Send the message (in the message box)"),
    ("Shift+Enter", "A new line in the message box"),
    ("Ctrl+Enter", "Send an edited message (in its editor)"),
    ("Esc", "Cancel editing a message"),
    ("Up / Down, Enter", "Choose and open a search result"),
    ("Up / Down, Enter", "Move the highlight in the chat list (it opens nothing); open that "
                         "chat"),
)
CHAT_LIST_LABELS = {"rename": "Rename the selected chat (in the chat list)",
                    "delete": "Delete the selected chat (in the chat list; asks first)"}
# a message's keys work on your messages and the replies alike, but for R and E
MESSAGE_LABELS = {"copy": "Copy the focused message (in its text: the selection, if any)",
                  "regenerate": "Answer the question again (on a reply)",
                  "edit": "Edit and resend the focused question",
                  "fork": "Fork a new chat from here",
                  "delete": "Delete the focused message and what follows",
                  "previous": "Previous version of the focused message",
                  "next": "Next version of the focused message"}


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def shortcut_rows(window: QWidget) -> list[tuple[str, str]]:
    """(keys, what) for every action of the window's menus that has a key, then the others."""
    rows = []

    def walk(actions) -> None:
        for action in actions:
            if action.menu() is not None:
                walk(action.menu().actions())
                continue
            keys = [k.toString(QKeySequence.SequenceFormat.NativeText)
                    for k in action.shortcuts() if not k.isEmpty()]
            if keys and action.text():
                rows.append((" or ".join(keys), action.text().replace("&", "")))

    walk(window.menuBar().actions())
    rows += [(k.toString(QKeySequence.SequenceFormat.NativeText), MESSAGE_LABELS[name])
             for name, k in MESSAGE_KEYS.items() if name in MESSAGE_LABELS]
    rows += [(k.toString(QKeySequence.SequenceFormat.NativeText), CHAT_LIST_LABELS[name])
             for name, k in CHAT_LIST_KEYS.items()]
    rows += list(OTHER_KEYS)
    seen, unique = set(), []
    for row in rows:
        if row not in seen:
            seen.add(row)
            unique.append(row)
    return unique


class ShortcutsDialog(QDialog):
    """Every key, in a table that scrolls up and down: whole, it is over 630 px tall, and on
    an 800x600 screen the dialog ran off it, its Close button out of reach. It opens as tall
    as the table (``ui.screen_fit`` makes it no taller than the screen)."""

    def __init__(self, rows: list[tuple[str, str]], parent=None):
        super().__init__(parent)
        self.setWindowTitle("Keyboard shortcuts")
        self.rows = rows
        layout = QVBoxLayout(self)
        table = "".join(f"<tr><td style='padding:2px 16px 2px 0'><b>{html.escape(k)}</b></td>"
                        f"<td>{html.escape(what)}</td></tr>" for k, what in rows)
        label = QLabel(f"<table>{table}</table>")
        label.setAccessibleName("Keyboard shortcuts")
        self.scroll = scroll = QScrollArea()
        scroll.setWidget(label)
        scroll.setAccessibleName("Keyboard shortcuts")  # (it takes the focus: the arrow keys)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        whole = label.sizeHint()
        scroll.setMinimumWidth(whole.width() + scroll.verticalScrollBar().sizeHint().width())
        layout.addWidget(scroll, 1)
        close = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)  # as every dialog
        close.rejected.connect(self.reject)
        layout.addWidget(close)
        margins = layout.contentsMargins()
        self.resize(self.minimumSizeHint().width(), whole.height() + layout.spacing() +
                    close.sizeHint().height() + margins.top() + margins.bottom())


# what About credits, as a user expects to find it there: (what, licence, the licence's text,
# the project's page). Outpost's own is pyproject.toml's; the bundled model's is its model
# card's; the rest are what the window is built on (every other package keeps its own licence
# in its installed metadata).
APP_LICENCE = "Apache-2.0"
_APACHE = "https://www.apache.org/licenses/LICENSE-2.0"
CREDITS = (
    ("Outpost", APP_LICENCE, _APACHE, ""),
    ("SmolLM2-135M-Instruct, the bundled model", "Apache-2.0", _APACHE,
     "https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct"),
    ("Qt and PySide6", "LGPL-3.0", "https://www.gnu.org/licenses/lgpl-3.0.html",
     "https://www.qt.io/qt-for-python"),
    ("llama.cpp", "MIT", "https://github.com/ggml-org/llama.cpp/blob/master/LICENSE",
     "https://github.com/ggml-org/llama.cpp"),
    ("llama-cpp-python", "MIT",
     "https://github.com/abetlen/llama-cpp-python/blob/main/LICENSE.md",
     "https://github.com/abetlen/llama-cpp-python"),
    ("pyqtgraph (the usage charts)", "MIT",
     "https://github.com/pyqtgraph/pyqtgraph/blob/master/LICENSE.txt",
     "https://www.pyqtgraph.org/"),
)


def credits_html() -> str:
    """The licences as a table: a licence links to its text, a name to its project."""
    rows = []
    for what, licence, text_url, home in CREDITS:
        name = html.escape(what)
        if home:
            name = f'<a href="{html.escape(home)}">{name}</a>'
        rows.append(f"<tr><td style='padding-right:12px'>{name}</td>"
                    f'<td><a href="{html.escape(text_url)}">{html.escape(licence)}</a></td></tr>')
    return f"<p><b>Licences</b></p><table>{''.join(rows)}</table>"


def about_text(model: str | None) -> str:
    try:
        import llama_cpp  # deferred: only to name its version (it loads with the model anyway)

        llama = llama_cpp.__version__
    except ImportError:
        llama = "not installed"
    return (f"<h3>Outpost {html.escape(version('outpost'))}</h3>"
            "<p>Chat with language models, online or offline.</p>"
            f"<p>Qt {qVersion()} · PySide6 {pyside_version} · llama-cpp-python "
            f"{html.escape(llama)} · Python {platform.python_version()}<br>"
            f"Local model: {html.escape(model or 'none loaded')}</p>" + credits_html())


class HelpMenu(QMenu):
    def __init__(self, window: QWidget, model_in_use: Callable[[], str | None]):
        super().__init__("&Help", window)
        self.window_ = window
        self.model_in_use = model_in_use
        self.shortcuts_action = QAction("&Keyboard shortcuts", self)
        self.shortcuts_action.setShortcut(QKeySequence("Ctrl+/"))
        self.about_action = QAction("&About Outpost", self)
        self.addAction(self.shortcuts_action)
        self.addAction(self.about_action)
        self.shortcuts_action.triggered.connect(self.show_shortcuts)
        self.about_action.triggered.connect(self.show_about)

    def show_shortcuts(self) -> ShortcutsDialog:
        dialog = ShortcutsDialog(shortcut_rows(self.window_), self.window_)
        dialog.show()
        return dialog

    def show_about(self) -> QMessageBox:
        box = QMessageBox(QMessageBox.Icon.Information, "About Outpost",
                          about_text(self.model_in_use()), parent=self.window_)
        box.setTextFormat(Qt.TextFormat.RichText)
        # the links open in the browser, by the mouse or by Tab and Enter
        box.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)
        box.show()
        return box
