"""The list of conversations: new, select, rename (double-click or F2), delete (Del)."""
from __future__ import annotations

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.domain.messages import Conversation
from ui import theme

ID_ROLE = Qt.ItemDataRole.UserRole


class Sidebar(QWidget):
    new_requested = Signal()
    conversation_selected = Signal(str)
    rename_requested = Signal(str, str)
    delete_requested = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.new_button = QPushButton("+  New chat")
        self.new_button.setMinimumHeight(32)
        self.list = QListWidget()
        self.list.setEditTriggers(QAbstractItemView.EditTrigger.DoubleClicked
                                  | QAbstractItemView.EditTrigger.EditKeyPressed)
        self.list.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.list.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.list.setWordWrap(False)
        self.list.setStyleSheet(theme.sidebar_style())
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.addWidget(self.new_button)
        layout.addWidget(self.list, 1)
        self.delete_action = QAction("Delete", self.list)
        self.delete_action.setShortcut(QKeySequence.StandardKey.Delete)
        self.delete_action.setShortcutContext(Qt.ShortcutContext.WidgetShortcut)
        self.list.addAction(self.delete_action)
        self._filling = False
        # conversation id -> news not seen yet (a queued message's answer arrived): in bold
        self.news: dict[str, str] = {}
        self.new_button.clicked.connect(self.new_requested)
        self.list.currentItemChanged.connect(self._on_current_changed)
        self.list.itemChanged.connect(self._on_item_changed)
        self.list.customContextMenuRequested.connect(self._on_context_menu)
        self.delete_action.triggered.connect(self._on_delete_current)

    def set_conversations(self, conversations: list[Conversation], current_id: str | None) -> None:
        self._filling = True
        try:
            self.list.clear()
            for conversation in conversations:
                news = self.news.get(conversation.id)
                item = QListWidgetItem(conversation.title or "Untitled")
                item.setData(ID_ROLE, conversation.id)
                item.setToolTip(f"{conversation.title}\nupdated {conversation.updated_at}"
                                + (f"\n{news}" if news else ""))
                _set_bold(item, bool(news))
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsEditable)
                self.list.addItem(item)
                if conversation.id == current_id:
                    self.list.setCurrentItem(item)
        finally:
            self._filling = False

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

    @Slot(QListWidgetItem, QListWidgetItem)
    def _on_current_changed(self, current: QListWidgetItem | None, _previous) -> None:
        if current is not None and not self._filling:
            conversation_id = current.data(ID_ROLE)
            if self.news.pop(conversation_id, None) is not None:
                self._filling = True
                try:
                    _set_bold(current, False)
                finally:
                    self._filling = False
            self.conversation_selected.emit(conversation_id)

    @Slot(QListWidgetItem)
    def _on_item_changed(self, item: QListWidgetItem) -> None:
        if not self._filling:
            self.rename_requested.emit(item.data(ID_ROLE), item.text())

    @Slot()
    def _on_delete_current(self) -> None:
        item = self.list.currentItem()
        if item is not None:
            self._confirm_delete(item)

    def _confirm_delete(self, item: QListWidgetItem) -> None:
        """Deleting cannot be undone, so it is asked first (Del and the context menu alike)."""
        answer = QMessageBox.question(
            self, "Delete conversation",
            f"Delete \u201c{item.text()}\u201d and all its messages? This cannot be undone.")
        if answer == QMessageBox.StandardButton.Yes:
            self.delete_requested.emit(item.data(ID_ROLE))

    @Slot(object)
    def _on_context_menu(self, pos) -> None:
        item = self.list.itemAt(pos)
        if item is None:
            return
        menu = QMenu(self)
        rename = menu.addAction("Rename")
        delete = menu.addAction("Delete")
        chosen = menu.exec(self.list.viewport().mapToGlobal(pos))
        if chosen is rename:
            self.list.editItem(item)
        elif chosen is delete:
            self._confirm_delete(item)


def _set_bold(item: QListWidgetItem, bold: bool) -> None:
    font = item.font()
    font.setBold(bold)
    item.setFont(font)
