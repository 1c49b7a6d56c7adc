"""The list of conversations: new, open (a click, or Enter), rename (double-click or F2), delete
(Del), pin.

Moving the current row (Tab into the list, the arrow keys) only moves a highlight: it opens
nothing, as in LM Studio or Jan. Tab giving the list the focus made Qt pick its top row, which
opened that chat and threw away a new one just started (its Sampling knobs, its draft).

Grouped by when they were last used: Pinned, Today, Yesterday, Previous 7 days, then one group
per month ("October 2026"); the group headers are not selectable (the arrow keys skip them).
Each conversation's tooltip says who answers it (the local model or a provider and model).
"""
from __future__ import annotations

import calendar
import datetime as dt
from typing import Callable

from PySide6.QtCore import QEvent, QObject, Qt, Signal, Slot
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.config.providers import target_provider
from app.domain.messages import Conversation
from app.domain.secrets_mask import SecretMask
from app.storage.backup_erasure import backups_hold
from ui import theme
from ui.confirm import confirm, confirm_with_option
from ui.hinted_list import HintedList

# The list's keys, bound here and listed by Help ▸ Keyboard shortcuts (``ui.help_menu``).
SHORTCUTS = {"rename": QKeySequence(Qt.Key.Key_F2), "delete": QKeySequence(Qt.Key.Key_Delete)}

# what the list says while there is no chat (the first start)
EMPTY_HINT = "No chats yet. Type a message below and press Enter to start one."

ID_ROLE = Qt.ItemDataRole.UserRole
PINNED_ROLE = Qt.ItemDataRole.UserRole + 1
HEADER_ROLE = Qt.ItemDataRole.UserRole + 2


def group_of(updated_at: str, today: dt.date) -> str:
    """The date group of a conversation last updated at ``updated_at`` (ISO, UTC)."""
    try:
        when = dt.datetime.fromisoformat(updated_at.replace("Z", "+00:00"))
    except ValueError:
        return "Older"
    if when.tzinfo is not None:
        when = when.astimezone()  # the user's day, not UTC's
    day = when.date()
    if day >= today:
        return "Today"
    if day == today - dt.timedelta(days=1):
        return "Yesterday"
    if day > today - dt.timedelta(days=7):
        return "Previous 7 days"
    return f"{calendar.month_name[day.month]} {day.year}"


def who_answers(conversation: Conversation) -> str:
    name = target_provider(conversation.target)
    if name is None:  # the local model, none yet, or a target Outpost never writes
        return "the local model"
    return f"{name} · {conversation.target_model}" if conversation.target_model else name


class TitleEditing(QObject):
    """The inline editor of a chat's title (F2, double-click, the menu's Rename), named for
    screen readers and with its whole title selected, so typing replaces it (the cursor stood
    at the end, and the user pressed Ctrl+A first). It watches the list's viewport, where the
    view puts its editor, polished once its text is set: a Python item delegate doing this
    left the editor's Python wrapper unusable in the application's event filter
    (``ui.input_guard``: "already deleted"), and the window crashed."""

    def __init__(self, view: QListWidget):
        super().__init__(view)
        view.viewport().installEventFilter(self)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt naming)
        if event.type() == QEvent.Type.ChildPolished and isinstance(event.child(), QLineEdit):
            editor = event.child()
            editor.setAccessibleName("Chat title")
            editor.installEventFilter(self)  # all selected as it gets the focus
        elif event.type() == QEvent.Type.FocusIn and isinstance(watched, QLineEdit):
            watched.selectAll()
            watched.removeEventFilter(self)  # once: a click later places the cursor
        return False


class Sidebar(QWidget):
    new_requested = Signal()
    conversation_selected = Signal(str)
    rename_requested = Signal(str, str)
    delete_requested = Signal(str, bool)  # conversation id, from the backups too
    pin_requested = Signal(str, bool)  # conversation id, pinned

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        # whether a backup may hold a conversation (by id): the window's lookup
        # (``app.storage.backup_erasure.held_in_backups``); until it is given, say they may
        self.held_in_backups: Callable[[str], bool] = lambda conversation_id: True
        # the keys to mask in titles (the window passes those it knows)
        self.mask: Callable[[], SecretMask] = SecretMask
        self._titles = SecretMask()
        self.new_button = QPushButton("+  New chat")
        self.new_button.setAccessibleName("New chat")  # not "plus New chat"
        self.new_button.setToolTip("Start a new conversation (Ctrl+N)")
        self.new_button.setMinimumHeight(32)
        self.list = HintedList(EMPTY_HINT)
        self.list.setAccessibleName("Conversations")
        self.list.setAccessibleDescription(
            "Your chats by date, pinned ones first. Up and Down move; Enter opens the chat; "
            "F2 renames it, Delete deletes it, the Menu key pins it.")
        self.list.setEditTriggers(QAbstractItemView.EditTrigger.DoubleClicked
                                  | QAbstractItemView.EditTrigger.EditKeyPressed)
        self.title_editing = TitleEditing(self.list)
        self.list.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.list.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.list.setWordWrap(False)
        theme.restyle(self.list, theme.sidebar_style)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.addWidget(self.new_button)
        layout.addWidget(self.list, 1)
        # F2 was the view's own edit key (EditKeyPressed, still there: Return on macOS); an
        # action bound to SHORTCUTS is what the shortcuts list can name
        self.rename_action = QAction("Rename", self.list)
        self.delete_action = QAction("Delete…", self.list)  # (it asks first)
        for action, name in ((self.rename_action, "rename"), (self.delete_action, "delete")):
            action.setShortcut(SHORTCUTS[name])
            action.setShortcutContext(Qt.ShortcutContext.WidgetShortcut)
            self.list.addAction(action)
        self._filling = False
        # conversation id -> news not seen yet (a queued message's answer arrived): in bold
        self.news: dict[str, str] = {}
        self.new_button.clicked.connect(self.new_requested)
        # a click opens; so does Enter (the view's ``activated``: Enter, and a click or a
        # double click by the style, where a double click renames first and opens nothing)
        self.list.itemClicked.connect(self._open)
        self.list.itemActivated.connect(self._open)
        self.list.itemChanged.connect(self._on_item_changed)
        self.list.customContextMenuRequested.connect(self._on_context_menu)
        self.rename_action.triggered.connect(self._on_rename_current)
        self.delete_action.triggered.connect(self._on_delete_current)

    def set_conversations(self, conversations: list[Conversation], current_id: str | None,
                          today: dt.date | None = None) -> None:
        """Show ``conversations`` (newest first) under their groups; ``today``: for tests."""
        today = today or dt.date.today()
        self._titles = self.mask()  # a title holding a known key (a Local only chat's) is masked
        self._filling = True
        try:
            self.list.clear()
            pinned = [c for c in conversations if c.pinned]
            groups: dict[str, list[Conversation]] = {"Pinned": pinned} if pinned else {}
            for conversation in conversations:
                if not conversation.pinned:
                    groups.setdefault(group_of(conversation.updated_at, today),
                                      []).append(conversation)
            for group, members in groups.items():
                self._add_header(group)
                for conversation in members:
                    self._add_conversation(conversation, current_id)
        finally:
            self._filling = False

    def _add_header(self, text: str) -> None:
        header = QListWidgetItem(text)
        header.setFlags(Qt.ItemFlag.NoItemFlags)  # not selectable: the arrow keys skip it
        font = header.font()
        font.setBold(True)
        font.setPointSizeF(font.pointSizeF() * 0.85)
        header.setFont(font)
        header.setData(HEADER_ROLE, True)
        self.list.addItem(header)

    def _add_conversation(self, conversation: Conversation, current_id: str | None) -> None:
        news = self.news.get(conversation.id)
        title = self._titles.scrub(conversation.title)
        item = QListWidgetItem(title or "Untitled")
        item.setData(ID_ROLE, conversation.id)
        item.setData(PINNED_ROLE, conversation.pinned)
        item.setToolTip(f"{title}\nanswered by {who_answers(conversation)}"
                        f"\nupdated {conversation.updated_at[:16].replace('T', ' ')}"
                        + (f"\n{news}" if news else ""))
        _set_bold(item, bool(news))
        item.setFlags(item.flags() | Qt.ItemFlag.ItemIsEditable)
        self.list.addItem(item)
        if conversation.id == current_id:
            self.list.setCurrentItem(item)

    def conversation_items(self) -> list[QListWidgetItem]:
        """The conversations' items, in order (not the group headers)."""
        items = (self.list.item(i) for i in range(self.list.count()))
        return [item for item in items if item.data(ID_ROLE) is not None]

    def conversation_count(self) -> int:
        return len(self.conversation_items())

    def titles(self) -> list[str]:
        """What the list shows, headers included (for tests and accessibility checks)."""
        return [self.list.item(i).text() for i in range(self.list.count())]

    def current_id(self) -> str | None:
        item = self.list.currentItem()
        return item.data(ID_ROLE) if item else None

    def mark_news(self, conversation_id: str, news: str) -> None:
        """Mark a conversation (not the one on screen) with news until it is opened: its title
        in bold, the news in its tooltip."""
        self.news[conversation_id] = news
        for row in range(self.list.count()):
            item = self.list.item(row)
            if item.data(ID_ROLE) == conversation_id:
                self._filling = True
                try:
                    _set_bold(item, True)
                    item.setToolTip(item.toolTip() + f"\n{news}")
                finally:
                    self._filling = False

    @Slot(QListWidgetItem)
    def _open(self, item: QListWidgetItem) -> None:
        """Open ``item``'s chat (a click on it, Enter on it); a group's header opens nothing."""
        conversation_id = item.data(ID_ROLE)
        if conversation_id is None:
            return
        if self.news.pop(conversation_id, None) is not None:
            self._filling = True
            try:
                _set_bold(item, False)
            finally:
                self._filling = False
        self.conversation_selected.emit(conversation_id)

    @Slot(QListWidgetItem)
    def _on_item_changed(self, item: QListWidgetItem) -> None:
        if not self._filling:
            self.rename_requested.emit(item.data(ID_ROLE), item.text())

    @Slot()
    def _on_rename_current(self) -> None:
        item = self.list.currentItem()
        if item is not None and item.data(ID_ROLE) is not None:  # (not a group's header)
            self.list.editItem(item)

    @Slot()
    def _on_delete_current(self) -> None:
        item = self.list.currentItem()
        if item is not None:
            self._confirm_delete(item)

    def _confirm_delete(self, item: QListWidgetItem) -> None:
        """Deleting cannot be undone, so it is asked first (Del and the context menu alike);
        when a backup holds the conversation (``held_in_backups``), the question says so,
        offering to delete it there too (a trial found it said so of a conversation begun
        after the last backup)."""
        conversation_id = item.data(ID_ROLE)
        text = f"Delete \u201c{item.text()}\u201d and all its messages? This cannot be undone."
        if not self.held_in_backups(conversation_id):
            if confirm(self, "Delete conversation", text, "Delete"):
                self.delete_requested.emit(conversation_id, False)
            return
        asked, from_backups = confirm_with_option(
            self, "Delete conversation", f"{text}\n\n{backups_hold('it')}", "Delete",
            "Delete it from the backups too")
        if asked:
            self.delete_requested.emit(conversation_id, from_backups)

    def menu_for(self, item: QListWidgetItem) -> QMenu:
        """A conversation's menu (the right click, the Menu key): each action's data says
        what it does ("pin", "rename", "delete")."""
        menu = QMenu(self)
        for text, what in (("&Unpin" if item.data(PINNED_ROLE) else "&Pin to the top", "pin"),
                           ("&Rename", "rename"), ("&Delete…", "delete")):  # (asks first)
            menu.addAction(text).setData(what)
        return menu

    @Slot(object)
    def _on_context_menu(self, pos) -> None:
        item = self.list.itemAt(pos)
        if item is None or item.data(ID_ROLE) is None:  # nothing, or a group's header
            return
        chosen = self.menu_for(item).exec(self.list.viewport().mapToGlobal(pos))
        what = chosen.data() if chosen is not None else None
        if what == "pin":
            self.pin_requested.emit(item.data(ID_ROLE), not item.data(PINNED_ROLE))
        elif what == "rename":
            self.list.editItem(item)
        elif what == "delete":
            self._confirm_delete(item)


def _set_bold(item: QListWidgetItem, bold: bool) -> None:
    font = item.font()
    font.setBold(bold)
    item.setFont(font)
