"""Search and switch: Ctrl+F finds words in this conversation; Ctrl+K (or Ctrl+Shift+F) finds
chats by title and words in every conversation of the profile.

Results come from the messages' full-text index (``app.storage.search``) as you type, the
newest first, with the matched words in bold, the conversation's title and the date. Up/Down
move through them while the cursor stays in the search field; Enter opens the conversation
scrolled to the message (switching to its branch if it is not on the active one); Escape
closes. With an empty field, the all-conversations search lists the recent chats (a switcher).

Messages come ``PAGE`` at a time: one more is asked for, so the dialog knows whether more match
without counting them all (a common word is in most messages: README "Search"); then it says
"50+ results", and *More results* (or Down on the last row) lists the next page.
"""
from __future__ import annotations

import html

from PySide6.QtCore import QEvent, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import (
    QDialog,
    QLabel,
    QLineEdit,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
)

from app.domain.errors import OutpostError
from app.domain.wording import counted
from app.storage.search import MARK_END, MARK_START, search_hits
from app.storage.store import Store
from ui import theme
from ui.hinted_list import HintedList

TYPING_PAUSE_MS = 120
RECENT = 20
PAGE = 50  # messages listed at a time


def snippet_html(snippet: str) -> str:
    """The snippet escaped, its matched words in bold, on one line."""
    text = html.escape(" ".join(snippet.split()))
    return text.replace(MARK_START, "<b>").replace(MARK_END, "</b>")


def day(timestamp: str) -> str:
    return timestamp[:10]


class SearchDialog(QDialog):
    open_requested = Signal(str, str)  # conversation id, message id ("" : the conversation)

    def __init__(self, store: Store, profile: str | None, conversation_id: str | None = None,
                 parent=None):
        """``conversation_id``: search only there (Ctrl+F); None: every conversation."""
        super().__init__(parent)
        self.store, self.profile, self.conversation_id = store, profile, conversation_id
        # as the Chat menu names them (Ctrl+F: "Find in this chat…")
        self.setWindowTitle("Find in this chat" if conversation_id else
                            "Find a chat or a message")
        self.resize(640, 460)
        # no smaller than a few results can be read in: it shrank to 92 x 140 (its field
        # showing "Chat titl…", a result's date cut to "2026-12-")
        self.setMinimumSize(360, 240)
        layout = QVBoxLayout(self)
        self.field = QLineEdit()
        self.field.setPlaceholderText("Words to find" if conversation_id else
                                      "Chat title or words in any message")
        self.field.setAccessibleName("Search")
        self.field.setClearButtonEnabled(True)
        self.results = HintedList()
        self.results.setAccessibleName("Results")
        self.results.setWordWrap(True)
        self.results.setUniformItemSizes(False)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.more_button = QPushButton("More results")
        self.more_button.setAccessibleName("More results")
        self.more_button.setAccessibleDescription(
            f"Lists the next {PAGE} messages that match, older ones")
        self.more_button.clicked.connect(self.show_more)
        self.more_button.hide()
        self._text = ""  # what the results were found for
        self._messages = 0  # message hits listed: the next page's offset
        self._more = False  # whether more messages match than are listed
        layout.addWidget(self.field)
        layout.addWidget(self.results, 1)
        layout.addWidget(self.status)
        layout.addWidget(self.more_button)
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(TYPING_PAUSE_MS)
        self.timer.timeout.connect(self.run)
        self.field.textChanged.connect(lambda _: self.timer.start())
        self.field.returnPressed.connect(self.open_current)
        self.field.installEventFilter(self)
        self.results.viewport().installEventFilter(self)  # its width: the rows' heights
        self.results.itemActivated.connect(lambda _: self.open_current())
        self.results.currentItemChanged.connect(self._show_current)
        theme.on_palette_change(self, lambda: self._show_current(self.results.currentItem(),
                                                                 None))
        self.run()

    def _show_current(self, current, previous) -> None:
        """The chosen result's text takes the selection's text colour (readable on it)."""
        for item, chosen in ((previous, False), (current, True)):
            view = self.results.itemWidget(item) if item is not None else None
            if view is not None:
                colour = self.palette().color(QPalette.ColorRole.HighlightedText).name()
                view.setStyleSheet(f"color:{colour};" if chosen else "")

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 (Qt naming)
        """Up/Down in the field move through the results; the rows follow the list's width."""
        if watched is self.results.viewport() and event.type() == QEvent.Type.Resize:
            for row in range(self.results.count()):
                self._fit(self.results.item(row))
            return False
        if watched is self.field and event.type() == QEvent.Type.KeyPress and \
                event.key() in (Qt.Key.Key_Up, Qt.Key.Key_Down):
            row = self.results.currentRow() + (1 if event.key() == Qt.Key.Key_Down else -1)
            if row == self.results.count() and self._more:
                self.show_more()  # Down on the last row: the next page, and on to its first
            if 0 <= row < self.results.count():
                self.results.setCurrentRow(row)
            return True
        return super().eventFilter(watched, event)

    def run(self) -> None:
        """Search for what the field says now."""
        text = self.field.text()
        self.results.clear()
        self._text, self._messages, self._more = text, 0, False
        try:
            rows = self._title_rows(text) + self._message_rows(text)
        except OutpostError as exc:
            self.more_button.hide()
            self.status.setText(str(exc))
            return
        self._add(rows)
        if rows:
            self.results.setCurrentRow(0)
        self._say()
        # in place of the results: what to do before a word is typed (the list was blank)
        self.results.set_hint("" if text.strip() else
                              "Type words to find them in this chat." if self.conversation_id
                              else "No chats yet.")

    def show_more(self) -> None:
        """The next page of messages, below those listed (the chosen row stays chosen)."""
        if not self._more:
            return
        try:
            rows = self._message_rows(self._text)
        except OutpostError as exc:
            self.status.setText(str(exc))
            return
        listed = {self.results.item(i).data(Qt.ItemDataRole.UserRole)
                  for i in range(self.results.count())}
        # (a message written since the first page moves the rest down one: not twice)
        self._add([row for row in rows if row[:2] not in listed])
        self._say()

    def _add(self, rows: list[tuple[str, str, str]]) -> None:
        for conversation_id, message_id, label in rows:
            item = QListWidgetItem()
            item.setData(Qt.ItemDataRole.UserRole, (conversation_id, message_id))
            self.results.addItem(item)
            view = QLabel(label)
            view.setTextFormat(Qt.TextFormat.RichText)
            view.setWordWrap(True)
            view.setContentsMargins(6, 4, 6, 4)
            self.results.setItemWidget(item, view)
            self._fit(item)

    def _say(self) -> None:
        """How many are listed, never as a total when more match (they are not counted)."""
        found = self.results.count()
        nothing = ("Nothing found in this chat; Ctrl+K searches every chat."
                   if self.conversation_id else "Nothing found.")
        many = (f"{found:,}+ results, the newest first (More results lists older ones)"
                if self._more else counted(found, "result"))
        self.status.setText("" if not self._text.strip() else nothing if not found else
                            f"{many}: Enter opens, Up/Down choose.")
        self.more_button.setVisible(self._more)

    def _fit(self, item: QListWidgetItem) -> None:
        """The row as tall as its text wrapped at the list's width (a wrapped label's own
        size hint guesses a width, so rows of one line came out two or three lines tall)."""
        width = self.results.viewport().width()
        view = self.results.itemWidget(item)
        if view is None:  # a row just added (its label comes next, and fits it then): the
            return  # scroll bar it made appear resized the list before that
        item.setSizeHint(QSize(width, view.heightForWidth(width)))


    def _title_rows(self, text: str) -> list[tuple[str, str, str]]:
        if self.conversation_id is not None:
            return []
        words = text.lower().split()
        rows = []
        for conversation in self.store.list_conversations(self.profile):
            if all(w in conversation.title.lower() for w in words):
                rows.append((conversation.id, "",
                             f"<b>{html.escape(conversation.title)}</b> "
                             f"<span>· chat · {day(conversation.updated_at)}</span>"))
        return rows[:RECENT if not words else 10]

    def _message_rows(self, text: str) -> list[tuple[str, str, str]]:
        """The next page of message hits (one more asked for: whether more match)."""
        hits = search_hits(self.store, text, profile=self.profile,
                           conversation_id=self.conversation_id, limit=PAGE + 1,
                           offset=self._messages)
        self._more = len(hits) > PAGE
        hits = hits[:PAGE]
        self._messages += len(hits)
        where = (lambda h: "") if self.conversation_id else \
            (lambda h: f"{html.escape(h.conversation_title)} · ")
        return [(h.conversation_id, h.message_id,
                 f"{snippet_html(h.snippet)}<br><small>{where(h)}{h.role} · "
                 f"{day(h.created_at)}</small>") for h in hits]

    def open_current(self) -> None:
        item = self.results.currentItem()
        if item is None:
            return
        conversation_id, message_id = item.data(Qt.ItemDataRole.UserRole)
        self.open_requested.emit(conversation_id, message_id)
        self.accept()
