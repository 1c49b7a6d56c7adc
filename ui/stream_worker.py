"""The worker that runs chat turns off the GUI thread.

A QObject moved to its own long-lived QThread; it talks only through signals. It never touches
widgets: it emits plain data and the GUI thread (ChatController) updates the view.
``turn_finished`` / ``turn_failed`` are emitted only after the turn's generator has closed, so the
stored message is final when the GUI reads it back.
"""
from __future__ import annotations

import threading

from PySide6.QtCore import QObject, Signal, Slot

from app.chat_service import Turn
from app.domain import Finished, Restart, Seam, TextDelta, Usage
from app.errors import OutpostError


class StreamWorker(QObject):
    model_wait_started = Signal()
    delta_received = Signal(str)
    usage_received = Signal(object)  # app.domain.Usage
    turn_finished = Signal(object)  # app.domain.Finished
    turn_failed = Signal(str, str)  # error kind ("queued": it went to the outbox), message
    seam_received = Signal(str, str, int)  # who continues ("local · model"), why, text offset
    restarted = Signal(str)  # the reply starts over (invalid JSON asked again): why
    turn_queued = Signal(str)  # the request also went to the outbox: plain words for the user

    def __init__(self, service=None):
        super().__init__()
        self.service = service  # ChatService: queues unreachable requests in the outbox

    @Slot(object, object, object)
    def run_turn(self, turn: Turn, engine, cancel: threading.Event) -> None:
        finish: Finished | None = None
        try:
            if not engine.ready:
                self.model_wait_started.emit()
            engine.wait_ready()  # a message sent while the model loads waits here
            for event in turn.run(engine, cancel):
                if isinstance(event, TextDelta):
                    self.delta_received.emit(event.text)
                elif isinstance(event, Usage):
                    self.usage_received.emit(event)
                elif isinstance(event, Seam):
                    self.seam_received.emit(f"{event.engine} · {event.model}", event.reason,
                                            event.offset)
                elif isinstance(event, Restart):
                    self.restarted.emit(event.reason)
                elif isinstance(event, Finished):
                    finish = event
        except OutpostError as exc:
            item = self._queue(turn, engine, exc)
            if item is not None:
                self.turn_queued.emit(
                    f"{item.provider} cannot be reached: your message waits in the outbox "
                    f"(item {item.id}) and is sent once {item.provider} is back.")
                self.turn_failed.emit("queued", str(exc))
                return
            self.turn_failed.emit(exc.kind, str(exc))
            return
        except Exception as exc:  # a bug: still end the turn so the window stays usable
            self.turn_failed.emit("bug", f"Unexpected error: {exc!r}")
            return
        item = self._queue(turn, engine)
        if item is not None:
            self.turn_queued.emit(
                f"{item.provider} could not be reached, so the local model answered. Your "
                f"message also waits in the outbox (item {item.id}); {item.provider}'s answer "
                "will appear next to this one once it is back.")
        self.turn_finished.emit(finish)

    def _queue(self, turn: Turn, engine, error: Exception | None = None):
        if self.service is None:
            return None
        try:
            return self.service.queue_if_unreachable(turn, engine, error)
        except OutpostError as exc:
            self.turn_queued.emit(f"The message could not be put in the outbox: {exc}")
            return None
