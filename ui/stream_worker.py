"""The worker that runs chat turns off the GUI thread.

A QObject moved to its own long-lived QThread. It never touches widgets: it runs the core's turn
(``app.chat.pipeline.PendingTurn.run``) and hands its events to the GUI thread (ChatController),
which updates the view. ``turn_ended`` is emitted only after the turn's generator has closed, so
the stored message is final when the GUI reads it. Errors cross as the exception objects of the
error tree, never as strings.

Text deltas do not cross as signals: a fast model gives 2,000 a second, and as many queued
signals woke the GUI thread 2,000 times a second to run a Python slot for each. The worker appends them to its ``TextMailbox`` and the GUI thread takes the
text when it renders (every ``ChatController`` flush). Every other event is a signal, rare. The
finished reply's Markdown is rendered to HTML here too (``reply_rendered``) when it is not what
streamed (a repaired JSON reply), so the GUI thread only sets it.
"""
from __future__ import annotations

import threading

from PySide6.QtCore import QCoreApplication, QObject, Signal, Slot
from PySide6.QtGui import QGuiApplication

from app.chat.pipeline import ModelLoading, Notice, PendingTurn, Queued, TurnEnded
from app.domain.errors import InternalError
from app.domain.messages import (
    Refit,
    Resent,
    Restart,
    Retrying,
    Seam,
    Stalled,
    TextDelta,
    Usage,
)
from ui.markdown import render


WARM_UP = "A *reply*:\n\n- with `code`\n\n```python\nprint('hello')\n```\n\n| a |\n|---|\n| 1 |\n"


class TextMailbox:
    """The streamed text on its way from the worker to the GUI thread, joined: the worker
    ``put``s every delta, the GUI thread ``take``s what has come when it renders.

    A seam or a restart is a signal, and text must not overtake it: the worker ``seal``s the
    text before emitting one; text put after a seal is taken only once the GUI thread has
    handled that signal (``unseal``). Thread-safe; one worker, one reader.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parts: list[tuple[int, list[str]]] = []  # (seals made before, deltas)
        self._sealed = 0  # seals the worker made
        self._unsealed = 0  # seals the GUI thread handled
        self.puts = 0  # deltas put (what a test counts)

    def put(self, text: str) -> None:
        with self._lock:
            if self._parts and self._parts[-1][0] == self._sealed:
                self._parts[-1][1].append(text)
            else:
                self._parts.append((self._sealed, [text]))
            self.puts += 1

    def seal(self) -> None:
        """Worker: what was put so far comes before the signal about to be emitted."""
        with self._lock:
            self._sealed += 1

    def unseal(self) -> None:
        """GUI thread: the signal of the oldest seal was handled; text after it may come."""
        with self._lock:
            self._unsealed += 1

    def take(self) -> str:
        """GUI thread: the text the GUI may show now (put before any seal not handled yet)."""
        with self._lock:
            ready = [text for seal, texts in self._parts if seal <= self._unsealed
                     for text in texts]
            self._parts = [part for part in self._parts if part[0] > self._unsealed]
        return "".join(ready)

    def take_all(self) -> str:
        """GUI thread, when the turn has ended: everything left, and the seals forgotten."""
        with self._lock:
            text = "".join(text for _seal, texts in self._parts for text in texts)
            self._parts.clear()
            self._unsealed = self._sealed
        return text


class StreamWorker(QObject):
    model_wait_started = Signal()
    usage_received = Signal(object)  # app.domain.messages.Usage
    seam_received = Signal(str, str, int)  # who continues ("local · model"), why, text offset
    restarted = Signal(str)  # the reply starts over (invalid JSON asked again): why
    retrying = Signal(object)  # app.domain.messages.Retrying: a cloud request sent again soon
    stalled = Signal(object)  # app.domain.messages.Stalled: nothing has come for a while
    resent = Signal(object)  # app.domain.messages.Resent: sent again without a refused param
    turn_queued = Signal(object)  # app.chat.pipeline.Queued: the request went to the outbox
    notice = Signal(str)  # plain news that is not the turn's error
    # the finished reply's text, its HTML (ui.markdown.render) and the palette it was rendered
    # in (QPalette.cacheKey): emitted just before turn_ended, for replies without a seam
    reply_rendered = Signal(str, str, object)
    turn_ended = Signal(object)  # app.chat.pipeline.TurnOutcome
    turn_failed = Signal(object)  # app.domain.errors.InternalError: a bug stopped the turn

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.mailbox = TextMailbox()

    @Slot()
    def warm_up(self) -> None:
        """Render a little Markdown once, here, before any reply: the first render imports
        the code highlighter's lexer and works out the palette's code colours (tens of ms),
        which the first flush of the first reply would otherwise spend on the GUI thread."""
        if isinstance(QCoreApplication.instance(), QGuiApplication):
            render(WARM_UP)

    @Slot(object, object)
    def run_turn(self, pending: PendingTurn, cancel: threading.Event) -> None:
        mailbox = self.mailbox
        streamed: list[str] | None = []  # the reply as streamed, None once a seam or a restart
        try:
            for event in pending.run(cancel):
                if isinstance(event, TextDelta):
                    mailbox.put(event.text)
                    if streamed is not None:
                        streamed.append(event.text)
                elif isinstance(event, Usage):
                    self.usage_received.emit(event)
                elif isinstance(event, Seam):
                    mailbox.seal()
                    streamed = None
                    self.seam_received.emit(f"{event.engine} · {event.model}", event.reason,
                                            event.offset)
                elif isinstance(event, Restart):
                    mailbox.seal()
                    streamed = None
                    self.restarted.emit(event.reason)
                elif isinstance(event, Retrying):  # (before any text: said during its wait)
                    self.retrying.emit(event)
                elif isinstance(event, Stalled):  # (said while the silence lasts)
                    self.stalled.emit(event)
                elif isinstance(event, Resent):  # (before any text: said until it comes)
                    self.resent.emit(event)
                elif isinstance(event, ModelLoading):
                    self.model_wait_started.emit()
                elif isinstance(event, Queued):
                    self.turn_queued.emit(event)
                elif isinstance(event, Notice):
                    self.notice.emit(event.text)
                elif isinstance(event, Refit) and event.fit.dropped:
                    # the local model answers Auto, fitted to its smaller window: what it
                    # leaves out is said as the local route's fit is (ChatController)
                    self.notice.emit(event.fit.describe_dropped())
                elif isinstance(event, TurnEnded):
                    self._render_reply(event.outcome, streamed)
                    self.turn_ended.emit(event.outcome)
        except Exception as exc:  # a bug: still end the turn so the window stays usable
            self.turn_failed.emit(InternalError(f"Unexpected error: {exc!r}"))

    def _render_reply(self, outcome, streamed: list[str] | None) -> None:
        """The finished reply's HTML, worked out here rather than on the GUI thread (a
        20,000-token reply takes a few hundred ms of pure Python). Markdown and the theme's
        colours only read the application palette; the key says which palette it was, so the
        GUI thread renders again itself if the palette changed meanwhile.

        Not for a reply stored as it streamed: the bubble already shows it, rendered block by
        block (``MessageBubble.set_text``). Rendering it whole here anyway made ~200 ms of
        objects whose garbage collection, holding the GIL, stalled the GUI thread by as much."""
        message = outcome.message
        if message is None or not message.content or len(message.segments or []) > 1 or \
                not isinstance(QCoreApplication.instance(), QGuiApplication):
            return  # nothing to render (or no GUI: a test of the bridge alone)
        if streamed is not None and "".join(streamed) == message.content:
            return
        key = QGuiApplication.palette().cacheKey()
        self.reply_rendered.emit(message.content, render(message.content), key)
