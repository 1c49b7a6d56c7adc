"""The worker that runs chat turns off the GUI thread.

A QObject moved to its own long-lived QThread; it talks only through signals. It never touches
widgets: it runs the core's turn (``app.chat.pipeline.PendingTurn.run``) and emits its events as
plain data; the GUI thread (ChatController) updates the view. ``turn_ended`` is emitted only after
the turn's generator has closed, so the stored message is final when the GUI reads it. Errors cross
as the exception objects of the error tree, never as strings.
"""
from __future__ import annotations

import threading

from PySide6.QtCore import QObject, Signal, Slot

from app.chat.pipeline import ModelLoading, Notice, PendingTurn, Queued, TurnEnded
from app.domain.errors import InternalError
from app.domain.messages import Restart, Seam, TextDelta, Usage


class StreamWorker(QObject):
    model_wait_started = Signal()
    delta_received = Signal(str)
    usage_received = Signal(object)  # app.domain.messages.Usage
    seam_received = Signal(str, str, int)  # who continues ("local · model"), why, text offset
    restarted = Signal(str)  # the reply starts over (invalid JSON asked again): why
    turn_queued = Signal(object)  # app.chat.pipeline.Queued: the request went to the outbox
    notice = Signal(str)  # plain news that is not the turn's error
    turn_ended = Signal(object)  # app.chat.pipeline.TurnOutcome
    turn_failed = Signal(object)  # app.domain.errors.InternalError: a bug stopped the turn

    @Slot(object, object)
    def run_turn(self, pending: PendingTurn, cancel: threading.Event) -> None:
        try:
            for event in pending.run(cancel):
                if isinstance(event, TextDelta):
                    self.delta_received.emit(event.text)
                elif isinstance(event, Usage):
                    self.usage_received.emit(event)
                elif isinstance(event, Seam):
                    self.seam_received.emit(f"{event.engine} · {event.model}", event.reason,
                                            event.offset)
                elif isinstance(event, Restart):
                    self.restarted.emit(event.reason)
                elif isinstance(event, ModelLoading):
                    self.model_wait_started.emit()
                elif isinstance(event, Queued):
                    self.turn_queued.emit(event)
                elif isinstance(event, Notice):
                    self.notice.emit(event.text)
                elif isinstance(event, TurnEnded):
                    self.turn_ended.emit(event.outcome)
        except Exception as exc:  # a bug: still end the turn so the window stays usable
            self.turn_failed.emit(InternalError(f"Unexpected error: {exc!r}"))
