"""Short background jobs, results back on the GUI thread (after Anki's taskman).

``run_in_background(fn, on_done, on_error)`` runs ``fn`` on Qt's thread pool and calls one of the
callbacks on the GUI thread. Never call processEvents() to keep the window alive instead.
"""
from __future__ import annotations

from typing import Any, Callable

import shiboken6
from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal, Slot


def _alive(callback: Callable) -> bool:
    """Whether ``callback`` can still run: a widget's method whose widget was deleted while its
    job ran (a window closed, a dialog gone) cannot (its result is dropped: calling it raised
    "already deleted" from inside Qt's event loop)."""
    owner = getattr(callback, "__self__", None)
    return not isinstance(owner, QObject) or shiboken6.isValid(owner)


class _Relay(QObject):
    done = Signal(object)
    failed = Signal(object)


class _Task(QRunnable):
    def __init__(self, fn: Callable[[], Any], relay: _Relay):
        super().__init__()
        self.fn = fn
        self.relay = relay

    def run(self) -> None:
        try:
            result = self.fn()
        except Exception as exc:  # delivered to on_error on the GUI thread
            self.relay.failed.emit(exc)
        else:
            self.relay.done.emit(result)


class TaskRunner(QObject):
    """Owns the relays so they live until their callbacks ran."""

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._pool = QThreadPool(self)
        self._relays: set[_Relay] = set()

    def run_in_background(self, fn: Callable[[], Any], on_done: Callable[[Any], None],
                          on_error: Callable[[Exception], None]) -> None:
        relay = _Relay(self)  # lives on the GUI thread: its signals arrive there

        @Slot(object)
        def finish_ok(result: Any) -> None:
            self._relays.discard(relay)
            if _alive(on_done):
                on_done(result)

        @Slot(object)
        def finish_err(exc: Exception) -> None:
            self._relays.discard(relay)
            if _alive(on_error):
                on_error(exc)

        relay.done.connect(finish_ok)
        relay.failed.connect(finish_err)
        self._relays.add(relay)
        self._pool.start(_Task(fn, relay))

    def wait(self, msecs: int = 30000) -> bool:
        return self._pool.waitForDone(msecs)
