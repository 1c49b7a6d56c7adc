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
from app.domain import Finished, TextDelta, Usage
from app.errors import OutpostError


class StreamWorker(QObject):
    model_wait_started = Signal()
    delta_received = Signal(str)
    usage_received = Signal(object)  # app.domain.Usage
    turn_finished = Signal(object)  # app.domain.Finished
    turn_failed = Signal(str, str)  # error kind, plain message

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
                elif isinstance(event, Finished):
                    finish = event
        except OutpostError as exc:
            self.turn_failed.emit(exc.kind, str(exc))
            return
        except Exception as exc:  # a bug: still end the turn so the window stays usable
            self.turn_failed.emit("bug", f"Unexpected error: {exc!r}")
            return
        self.turn_finished.emit(finish)
