"""The status bar's outbox button: how many messages wait for a cloud provider (hidden when
none), the Outbox panel it opens, and the news when queued messages were sent."""
from __future__ import annotations

from typing import Callable

from PySide6.QtCore import Signal, Slot
from PySide6.QtWidgets import QPushButton, QWidget

from app.domain.errors import EngineError, OutpostError
from app.storage.outbox import Outbox, SendReport
from app.storage.store import Store


class OutboxButton(QPushButton):
    """Counts the signed-in profile's queued messages (``refresh``), opens the panel
    (``open_panel``), and turns a send report into news (``show_report``)."""

    refreshed = Signal()  # after the count was read again
    failed = Signal(object)  # an OutpostError: the outbox could not be read
    answered = Signal(str, str)  # conversation id, the news: a queued message was answered
    send_failed = Signal(object)  # an EngineError: a queued message could not be sent
    conversations_changed = Signal()  # answers were stored: the conversation list may change
    send_requested = Signal()  # the panel's "Send now"

    def __init__(self, outbox: Outbox, store: Store,
                 panel_factory: Callable[[QWidget, Callable[[], str | None]], QWidget],
                 parent: QWidget | None = None):
        """``panel_factory(parent, profile_of)`` builds the ``ui.outbox_panel.OutboxPanel``."""
        super().__init__("Outbox", parent)
        self.outbox, self.store, self.panel_factory = outbox, store, panel_factory
        self.panel = None  # built the first time it is opened
        self.profile_name: str | None = None
        self.setFlat(True)
        self.setToolTip("Messages waiting for a cloud provider")
        self.hide()

    def set_profile(self, name: str | None) -> None:
        """Whose messages are counted and listed (the signed-in profile)."""
        self.profile_name = name

    def current_profile(self) -> str | None:
        return self.profile_name

    @Slot()
    def refresh(self) -> None:
        try:
            pending = self.outbox.pending(self.profile_name)
        except OutpostError as exc:
            self.failed.emit(exc)
            return
        sending = sum(item.state.value == "sending" for item in pending)
        waiting = len(pending) - sending
        said = [f"{sending} sending…"] if sending else []  # "1 sending…, 1 waiting"
        said += [f"{waiting} waiting"] if waiting or not sending else []
        self.setText("Outbox: " + ", ".join(said))
        self.setVisible(bool(pending))
        if self.panel is not None:
            self.panel.refresh()
        self.refreshed.emit()

    @Slot()
    def open_panel(self) -> None:
        if self.panel is None:
            self.panel = self.panel_factory(self.window(), self.current_profile)
            self.panel.send_requested.connect(self.send_requested)
        self.panel.refresh()
        self.panel.show()
        self.panel.raise_()

    def close_panel(self) -> None:
        if self.panel is not None:
            self.panel.close()

    @Slot(object)
    def show_report(self, report: SendReport) -> None:
        """The monitor sent queued messages: news for the signed-in profile's answers."""
        answered: dict[str, tuple[str, list[str]]] = {}  # conversation -> (title, providers)
        for item, _message in report.sent:
            try:
                conversation = self.store.get_conversation(item.conversation_id)
            except OutpostError:
                conversation = None
            if conversation is not None and conversation.profile not in (None,
                                                                         self.profile_name):
                continue  # another profile's message went out: theirs to see
            title = conversation.title if conversation else "a deleted conversation"
            answered.setdefault(item.conversation_id, (title, []))[1].append(item.provider)
        # one piece of news for the pass, named to each chat it answered in (it said one answer
        # in one chat, whichever came last: two answers in a chat read "… — 1/1")
        news = answered_news(list(answered.values()))
        for conversation_id in answered:
            self.answered.emit(conversation_id, news)
        for item, error in report.failed:
            self.send_failed.emit(EngineError(f"The queued message (outbox item {item.id}) "
                                              f"could not be sent to {item.provider}: {error}"))
        self.conversations_changed.emit()
        self.refresh()


def answered_news(chats: list[tuple[str, list[str]]]) -> str:
    """What one pass of the outbox answered: ``chats``, (title, the provider of each answer)
    per conversation, in order. "acme answered 2 of your queued messages in “Q1”."; over
    several chats, how many in each."""
    def who(providers: list[str]) -> str:
        names = list(dict.fromkeys(providers))
        return " and ".join(names) if len(names) < 3 else ", ".join(names[:-1]) + \
            f" and {names[-1]}"

    def count(n: int) -> str:
        return "your queued message" if n == 1 else f"{n} of your queued messages"

    if len(chats) == 1:
        [(title, providers)] = chats
        return f"{who(providers)} answered {count(len(providers))} in “{title}”."
    total = sum(len(providers) for _, providers in chats)
    each = ", ".join(f"{len(providers)} in “{title}” ({who(providers)})"
                     for title, providers in chats)
    return f"{total} of your queued messages were answered: {each}."
