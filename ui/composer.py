"""The message box: Enter sends, Shift+Enter adds a line; one button that is Send or Stop."""
from __future__ import annotations

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.domain.routes import Route
from ui.route_state import RouteState


class PromptEdit(QPlainTextEdit):
    submit_requested = Signal()

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 (Qt naming)
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and \
                not event.modifiers() & Qt.KeyboardModifier.ShiftModifier:
            self.submit_requested.emit()
            return
        super().keyPressEvent(event)


_WHEN_ONLINE_TIP = ("If the provider cannot be reached, the local model answers now and your "
                    "message also waits in the outbox; it is sent once the provider is back, "
                    "and its answer appears next to the local one.")
_LATER_TIP = ("Offline mode is on, so the local model answers now. Ticked, your message also "
              "waits in the outbox and is sent to {provider} once Offline mode is off; its "
              "answer appears next to the local one.")


class Composer(QWidget):
    send_requested = Signal(str)
    stop_requested = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.edit = PromptEdit()
        self.edit.setPlaceholderText("Message the local model…  (Enter sends, Shift+Enter: new line)")
        self.edit.setFixedHeight(76)
        self.edit.setTabChangesFocus(True)
        self.edit.setAccessibleName("Message")
        self.edit.setAccessibleDescription("Your next message. Enter sends it, Shift+Enter "
                                           "starts a new line, Tab moves on.")
        self.button = QPushButton("Send")
        self.button.setFixedWidth(84)
        self.button.setMinimumHeight(36)
        # Auto route: if the provider cannot be reached, the local model answers now and the
        # message also waits in the outbox for the provider. Cloud only: always (shown checked).
        self.when_online = QCheckBox("Send to cloud when online")
        self.when_online.setToolTip(_WHEN_ONLINE_TIP)
        side = QVBoxLayout()
        side.setSpacing(4)
        side.addStretch(1)
        side.addWidget(self.when_online)
        side.addWidget(self.button, 0, Qt.AlignmentFlag.AlignRight)
        row = QHBoxLayout()
        row.addWidget(self.edit, 1)
        row.addLayout(side)
        self._outer = QVBoxLayout(self)
        self._outer.setContentsMargins(12, 4, 12, 10)
        self._outer.setSpacing(3)
        self._outer.addLayout(row)
        self._busy = False
        self.edit.submit_requested.connect(self._on_submit)
        self.button.clicked.connect(self._on_button)

    def set_meter(self, meter: QWidget) -> None:
        """The live token meter, shown above the text box."""
        self._outer.insertWidget(0, meter)
        self.meter = meter
        self.edit.textChanged.connect(lambda: meter.draft_changed(self.edit.toPlainText()))

    def set_busy(self, busy: bool) -> None:
        """While a reply streams the button stops it; the text box stays editable."""
        self._busy = busy
        self.button.setText("Stop" if busy else "Send")
        self.button.setToolTip("Stop the reply (Esc)" if busy else "Send (Enter)")

    @Slot(object)
    def show_route(self, state: RouteState) -> None:
        """Who the message goes to (the placeholder), and whether "Send to cloud when online"
        applies: offered on Auto, shown ticked and fixed on Cloud only, hidden otherwise. In
        Offline mode, with a provider elsewhere chosen on Auto or Cloud only, it offers to
        keep the message in the outbox until Offline mode is off (`ask --send-when-online`)."""
        self.edit.setPlaceholderText(
            f"{state.texts().placeholder}  (Enter sends, Shift+Enter: new line)")
        self.edit.viewport().update()  # the placeholder is painted, not a widget
        later = state.held_offline
        self.when_online.setText(f"Send to {state.provider} once Offline mode is off"
                                 if later else "Send to cloud when online")
        self.when_online.setToolTip(_LATER_TIP.format(provider=state.provider) if later
                                    else _WHEN_ONLINE_TIP)
        self.when_online.setVisible(state.cloud_possible or later)
        self.when_online.setEnabled(state.route is Route.AUTO or later)
        self.when_online.blockSignals(True)
        self.when_online.setChecked(state.send_when_online if later else
                                    state.route is Route.CLOUD or state.send_when_online)
        self.when_online.blockSignals(False)

    def text(self) -> str:
        return self.edit.toPlainText()

    def clear(self) -> None:
        self.edit.clear()

    @Slot()
    def _on_submit(self) -> None:
        if not self._busy and self.text().strip():
            self.send_requested.emit(self.text())

    @Slot()
    def _on_button(self) -> None:
        if self._busy:
            self.stop_requested.emit()
        else:
            self._on_submit()
