"""The offline outbox as a window: what waits for its cloud provider, what was sent, what failed.

Reads are cheap SQLite queries on the outbox table, so the panel reads on the GUI thread; it never
touches the network. What still waits is listed first (then what failed, then what was sent or
cancelled, newest first): with many sent rows the waiting ones were below the fold. A line above
the table says when the window tries each provider's waiting items next by itself. Sending is not done here: "Send now" only emits ``send_requested`` and the
owner runs the sender in the background, then calls ``refresh()``.
"""
from __future__ import annotations

import datetime as dt

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.chat.connectivity import Connectivity
from app.chat.outbox_words import clock_words, next_try_at
from app.domain.errors import OutpostError
from app.storage.outbox import Outbox, OutboxItem, OutboxState
from ui import theme
from ui.errors import window_words

ID_ROLE = Qt.ItemDataRole.UserRole
COLUMNS = ("#", "State", "Provider", "Model", "Queued", "Message", "Note")
MESSAGE_CHARS = 60
PROVIDER_DEFAULT = "provider's default"  # the Model column of an item that names no model
_COLUMN_AIR = 14  # px beyond the widest cell, so columns do not read as one run of text
STATE_LABELS = {
    OutboxState.QUEUED: "Waiting",
    OutboxState.SENDING: "Sending…",
    OutboxState.SENT: "Sent",
    OutboxState.FAILED: "Failed",
    OutboxState.CANCELLED: "Cancelled",
}
_COLOURED_STATES = (OutboxState.FAILED, OutboxState.SENT, OutboxState.CANCELLED)


class OutboxPanel(QDialog):
    """A non-modal window listing every outbox item, what waits first (in queue order), with
    Send now, Cancel item and Retry. ``rows()`` gives what the table shows, for tests."""

    send_requested = Signal()

    def __init__(self, outbox: Outbox, parent: QWidget | None = None, profile_of=None,
                 default_route=None, links: Connectivity | None = None, offline=None):
        """``profile_of()``: the signed-in profile, whose items are listed (None: all);
        ``default_route()``: the settings' route, for a Retry in a chat that has none;
        ``links``: the window's connectivity tracker, whose probes say when waiting items are
        tried next (None: not said); ``offline()``: Offline mode is on (nothing is sent)."""
        super().__init__(parent)
        self.links = links
        self.offline = offline or (lambda: False)
        self.profile_of = profile_of or (lambda: None)
        self.default_route = default_route or (lambda: "auto")
        self.setWindowTitle("Outbox")
        self.setModal(False)
        self.resize(1000, 380)
        self.outbox = outbox
        self._items: dict[int, OutboxItem] = {}

        intro = QLabel("Messages waiting for their cloud provider. Each is sent once, in order, "
                       "when the provider can be reached; its answer appears in the "
                       "conversation (next to the local answer, if the local model "
                       "answered meanwhile).")
        intro.setWordWrap(True)
        self.next_try = QLabel()  # when the window tries the waiting items next by itself
        self.next_try.setWordWrap(True)
        self.next_try.setAccessibleName("Next automatic try")
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setAccessibleName("Outbox messages")
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.table.verticalHeader().setVisible(False)
        self.table.setAlternatingRowColors(True)
        header = self.table.horizontalHeader()
        header.setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(True)  # the note takes what is left; full text in tooltip
        self.placeholder = QLabel("The outbox is empty.")
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        theme.set_colour(self.placeholder, "muted")
        self.stack = QStackedWidget()
        self.stack.addWidget(self.table)
        self.stack.addWidget(self.placeholder)
        self.error = QLabel()
        self.error.setWordWrap(True)
        theme.set_colour(self.error, "error")
        self.error.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error.hide()

        self.send_button = QPushButton("Send now")
        self.send_button.setToolTip("Try to send every waiting message now.")
        self.cancel_button = QPushButton("Cancel item")
        self.cancel_button.setToolTip("Stop waiting: the selected message is never sent to the "
                                      "cloud (it stays in the conversation).")
        self.retry_button = QPushButton("Retry")
        self.retry_button.setToolTip("Put the selected failed message back in the queue.")
        close_button = QPushButton("Close")
        buttons = QHBoxLayout()
        buttons.addWidget(self.send_button)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.retry_button)
        buttons.addStretch(1)
        buttons.addWidget(close_button)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addWidget(self.next_try)
        layout.addWidget(self.stack, 1)
        layout.addWidget(self.error)
        layout.addLayout(buttons)

        self.send_button.clicked.connect(self.send_requested)
        self.cancel_button.clicked.connect(self._on_cancel)
        self.retry_button.clicked.connect(self._on_retry)
        close_button.clicked.connect(self.close)
        self.table.itemSelectionChanged.connect(self._on_selection_changed)
        self.refresh()
        theme.on_palette_change(self, self._recolour_states)

    # -- public ------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Reload from the database, keeping the selected item selected (by id)."""
        selected = self.selected_id()
        try:
            items = self.outbox.items(profile=self.profile_of())
        except OutpostError as exc:
            self._show_error(str(exc))
            items = []
        items.sort(key=_shown_order)
        self._items = {item.id: item for item in items}
        self.table.blockSignals(True)
        try:
            self.table.setRowCount(0)
            self.table.setRowCount(len(items))
            for row, item in enumerate(items):
                self._fill_row(row, item)
                if item.id == selected:
                    self.table.selectRow(row)
        finally:
            self.table.blockSignals(False)
        self._fit_columns()
        self.stack.setCurrentWidget(self.table if items else self.placeholder)
        self.table.scrollToTop()
        self.next_try.setText(self._next_try_words(items))
        self.next_try.setVisible(bool(self.next_try.text()))
        self._update_buttons()

    def _next_try_words(self, items: list[OutboxItem]) -> str:
        """"Next automatic try: acme at 16:12:05, when it is checked again; …", for the first
        waiting item of each provider (the rest go after it, in order)."""
        waiting: dict[str, OutboxItem] = {}
        for item in items:
            if item.state is OutboxState.QUEUED:
                waiting.setdefault(item.provider, item)
        if not waiting:
            return ""
        if self.offline():
            return "Offline mode is on: nothing is sent until it is off."
        if self.links is None:
            return ""
        now = dt.datetime.now(dt.timezone.utc)
        said = []
        for provider, item in waiting.items():
            when = next_try_at(item, self.links, now)
            if when is None:
                continue
            why = "not before: it asked to wait" if when == item.held_until(now) else \
                "when it is checked again"
            said.append(f"{provider} at {clock_words(when, now)} ({why})")
        return "Next automatic try: " + "; ".join(said) + ". Send now tries at once." \
            if said else ""

    def rows(self) -> list[tuple[int, str, str]]:
        """(id, state label, provider) per row, as shown."""
        return [(int(self.table.item(row, 0).data(ID_ROLE)), self.table.item(row, 1).text(),
                 self.table.item(row, 2).text()) for row in range(self.table.rowCount())]

    def selected_id(self) -> int | None:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return None
        return int(self.table.item(rows[0].row(), 0).data(ID_ROLE))

    def select(self, item_id: int) -> bool:
        for row in range(self.table.rowCount()):
            if self.table.item(row, 0).data(ID_ROLE) == item_id:
                self.table.selectRow(row)
                return True
        return False

    # -- rows --------------------------------------------------------------------------------
    def _fill_row(self, row: int, item: OutboxItem) -> None:
        queued_at = _local_time(item.created_at)
        cells = (str(item.id), STATE_LABELS[item.state], item.provider,
                 item.model or item.request.model or PROVIDER_DEFAULT,
                 queued_at.strftime("%H:%M") if queued_at else item.created_at,
                 _first_line(item.prompt), _note(item))
        for column, text in enumerate(cells):
            cell = QTableWidgetItem(text)
            cell.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
            self.table.setItem(row, column, cell)
        self.table.item(row, 0).setData(ID_ROLE, item.id)
        self.table.item(row, 0).setTextAlignment(Qt.AlignmentFlag.AlignRight
                                                 | Qt.AlignmentFlag.AlignVCenter)
        _colour_state(self.table.item(row, 1), item.state)
        if queued_at:
            self.table.item(row, 4).setToolTip(queued_at.strftime("%Y-%m-%d %H:%M:%S"))
        if not item.model:
            self.table.item(row, 3).setToolTip("The provider's default model when it was "
                                               "queued (Model ▸ Providers)")
        self.table.item(row, 5).setToolTip(item.prompt)
        note = self.table.item(row, 6)
        note.setToolTip(note.text())

    def _recolour_states(self) -> None:
        for row in range(self.table.rowCount()):
            item = self._items.get(self.table.item(row, 0).data(ID_ROLE))
            if item is not None:
                _colour_state(self.table.item(row, 1), item.state)

    def _fit_columns(self) -> None:
        """Fit to the contents plus some air (the user can still drag them wider)."""
        self.table.resizeColumnsToContents()
        for column in range(len(COLUMNS) - 1):
            self.table.setColumnWidth(column, self.table.columnWidth(column) + _COLUMN_AIR)

    # -- buttons -----------------------------------------------------------------------------
    def _selected_item(self) -> OutboxItem | None:
        item_id = self.selected_id()
        return self._items.get(item_id) if item_id is not None else None

    def _update_buttons(self) -> None:
        selected = self._selected_item()
        self.send_button.setEnabled(any(i.state is OutboxState.QUEUED
                                        for i in self._items.values()))
        self.cancel_button.setEnabled(selected is not None
                                      and selected.state is OutboxState.QUEUED)
        self.retry_button.setEnabled(selected is not None and selected.state in (
            OutboxState.FAILED, OutboxState.CANCELLED))

    def _show_error(self, text: str) -> None:
        self.error.setText(window_words(text))
        self.error.setVisible(bool(text))

    @Slot()
    def _on_selection_changed(self) -> None:
        self._update_buttons()

    @Slot()
    def _on_cancel(self) -> None:
        item_id = self.selected_id()
        if item_id is not None:
            self._act(lambda: self.outbox.cancel(item_id))

    @Slot()
    def _on_retry(self) -> None:
        item_id = self.selected_id()
        if item_id is not None:
            self._act(lambda: self.outbox.requeue_failed(item_id, self.default_route()))

    def _act(self, action) -> None:
        """Run one outbox change; its error (say the item was sent meanwhile) shows inline,
        and the table is reloaded either way, since the state may have moved on."""
        try:
            action()
        except OutpostError as exc:
            self._show_error(str(exc))
        else:
            self._show_error("")
        self.refresh()


def _shown_order(item: OutboxItem) -> tuple[int, int]:
    """What waits (being sent, or queued) first in queue order, then what failed, then what
    was sent or cancelled, newest first."""
    if item.state in (OutboxState.SENDING, OutboxState.QUEUED):
        return (0, item.id)
    if item.state is OutboxState.FAILED:
        return (1, item.id)
    return (2, -item.id)


def _colour_state(cell: QTableWidgetItem, state: OutboxState) -> None:
    if state in _COLOURED_STATES:
        cell.setForeground(QBrush(QColor(theme.state_colour(state.value))))


def _local_time(iso: str) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(iso).astimezone()
    except (TypeError, ValueError):
        return None


def _first_line(prompt: str) -> str:
    lines = prompt.strip().splitlines()
    first = lines[0].strip() if lines else ""
    if len(first) > MESSAGE_CHARS:
        return first[:MESSAGE_CHARS - 1].rstrip() + "…"
    return first + (" …" if len(lines) > 1 else "")


def _note(item: OutboxItem) -> str:
    if item.state is OutboxState.SENT:  # (answered in its chat after it failed: says so)
        return window_words(item.last_error) if item.last_error else "answered"
    if item.state is OutboxState.SENDING:
        return f"attempt {item.attempts}"
    held = item.held() if item.state is OutboxState.QUEUED else None
    if held is not None:  # the provider's Retry-After: not sent before then
        return held
    if item.state in (OutboxState.QUEUED, OutboxState.FAILED):
        return window_words(item.last_error) if item.last_error else f"waits until {item.provider} can be reached"
    return "cancelled: not sent (Retry queues it again)"
