"""Keeps an eye on the providers the window needs, and empties the outbox when they come back.

Every few seconds (``TICK_MS``) it works out which providers matter now: the chosen provider when
the current conversation may go to the cloud, and every provider with queued outbox items. Only
those are probed (a TCP connect, in the background, at the back-off pace ``app.chat.connectivity``
sets); nothing is probed for a Local only conversation, nor in Offline mode but a provider on
this computer (localhost), so those never open a socket beyond it. When a provider with queued items is online, the outbox is sent in the background, one
pass at a time; each answer arrives as a sibling reply and the window is told. Each item that
changes state on the way (claimed, sent, failed, queued again) says so at once
(``outbox_changed``), so the status bar's count never waits for the end of the pass. An item
that failed changed its conversation too (a failed reply, the queued one saying so): each such
conversation is named once the pass ends (``item_failed``), so the window shows it again when it
is the one on screen.

Closing the app (``stop``) cancels a send in flight with the reason ``CLOSING``: not the user's
stop, so its item goes back to the queue (its part kept, marked interrupted) and is sent again,
same idempotency key, at the next start or ``outpost outbox send``.
"""
from __future__ import annotations

from PySide6.QtCore import QObject, Qt, QTimer, Signal, Slot

from app.chat.connectivity import LinkState
from app.chat.outbox_sender import OutboxSender
from app.config.settings import default_user_id
from app.domain.messages import CLOSING, CancelWithReason
from app.storage.outbox import SendReport

TICK_MS = 2000


class OutboxMonitor(QObject):
    links_changed = Signal()
    # after a pass that sent or failed something: the app.storage.outbox.SendReport
    sent = Signal(object)
    # after such a pass, once per conversation with an item that failed: its id (its replies
    # changed: the one that said "queued" says it failed, beside the failed answer)
    item_failed = Signal(str)
    outbox_changed = Signal()  # (always emitted on the GUI thread)
    # from the sender's thread: an item changed state (relayed as outbox_changed)
    _item_moved = Signal()

    def __init__(self, settings, connectivity, outbox, cloud, tasks, watched, parent=None,
                 ledger=None, keep_unsaved=None, quotas=None):
        """``watched()`` -> provider names the current conversation needs (GUI thread)."""
        super().__init__(parent)
        self.settings, self.connectivity, self.outbox = settings, connectivity, outbox
        self.cloud, self.tasks, self.watched = cloud, tasks, watched
        self.sender = OutboxSender(outbox, cloud.fresh_engine, ledger=ledger,
                                   default_route=lambda: settings["default_route"],
                                   keep_unsaved=keep_unsaved, quotas=quotas,
                                   default_profile=lambda: default_user_id(settings))
        self._probing: set[str] = set()
        self._sending = False
        self._cancel = CancelWithReason()
        # (from the sender's thread: queued to this, the GUI thread)
        self._item_moved.connect(self._on_item_moved, Qt.ConnectionType.QueuedConnection)
        self.timer = QTimer(self)
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(self.tick)

    def start(self) -> None:
        self.timer.start()
        QTimer.singleShot(0, self.tick)

    def stop(self) -> None:
        """The app is closing: a send in flight ends, and its item waits for the next start."""
        self.timer.stop()
        self._cancel.set_because(CLOSING)

    @Slot()
    def _on_item_moved(self) -> None:
        self.outbox_changed.emit()

    def providers(self) -> list[str]:
        """The providers that matter now (in Offline mode only those on this computer)."""
        names = [name for name in self.watched() if not self._held_offline(name)]
        for item in self.outbox.pending():
            if item.provider not in names and not self.sender.stays_here(item) and \
                    not self._held_offline(item.provider):
                names.append(item.provider)
        return names

    def _held_offline(self, name: str) -> bool:
        """Offline mode keeps ``name`` from being probed or sent to: it is not on this
        computer (a provider at localhost still is)."""
        return bool(self.settings["offline_mode"]) and \
            not self.cloud.registry.on_this_computer(name)

    @Slot()
    def tick(self) -> None:
        names = self.providers()
        for name in names:
            if name not in self._probing and self.connectivity.due_for_probe(name):
                self._probe(name)
        self._maybe_send(names)
        self.links_changed.emit()

    def _probe(self, name: str) -> None:
        try:
            base_url = self.cloud.registry.get(name).base_url
        except Exception:  # the provider was removed: its items wait (and show it)
            return
        self._probing.add(name)

        def done(_state) -> None:
            self._probing.discard(name)
            self.links_changed.emit()
            self._maybe_send(self.providers())

        def failed(_exc) -> None:
            self._probing.discard(name)

        self.tasks.run_in_background(lambda: self.connectivity.probe(name, base_url), done,
                                     failed)

    def _maybe_send(self, names: list[str]) -> None:
        if self._sending:
            return
        pending = [item for item in self.outbox.pending() if item.provider in names]
        if not any(self.connectivity.state(item.provider) is LinkState.ONLINE
                   for item in pending):
            return
        self.send_now(only_online=True)

    def send_now(self, only_online: bool = False) -> bool:
        """Send the queued items now (the outbox panel's "Send now" asks with
        ``only_online=False``: try every provider once)."""
        if self._sending or self.settings["offline_mode"] and all(
                self._held_offline(item.provider) for item in self.outbox.pending()):
            return False
        self._sending = True
        self.outbox_changed.emit()
        skip = (lambda name: self._held_offline(name) or (
            only_online and self.connectivity.state(name) is not LinkState.ONLINE))

        def done(report: SendReport) -> None:
            self._sending = False
            self.outbox_changed.emit()
            self.links_changed.emit()
            if report.sent or report.failed:
                self.sent.emit(report)
            for conversation_id in dict.fromkeys(item.conversation_id
                                                 for item, _ in report.failed):
                self.item_failed.emit(conversation_id)

        def failed(exc) -> None:
            self._sending = False
            self.outbox_changed.emit()

        self.tasks.run_in_background(
            lambda: self.sender.send(cancel=self._cancel, skip_provider=skip,
                                     moved=self._item_moved.emit), done, failed)
        return True
