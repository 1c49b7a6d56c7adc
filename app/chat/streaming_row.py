"""The row of a reply that is streaming, kept close behind its text, so that a crash, a kill or
a power cut loses at most the last moment of it.

* As text comes, the row is written on the thread that reads the stream, at most once every
  ``interval`` seconds (by the turn's clock: tests pass a virtual one).
* When the stream goes quiet with text not yet written (a provider that stalls, a connection
  that hangs until its idle timeout, keep-alives and no text), a helper thread writes it once the
  quiet has lasted ``interval`` (by the same clock). Without it, the words shown just before a
  stall stayed in memory only, for up to the idle timeout, or for good if the process died.
* A write that fails because the database is busy (another process held its lock for longer
  than the busy timeout), full or read-only does not end the reply: it is tried again an
  interval later, and the final write (``Turn._save_final``) is the one that must succeed.
* ``close`` stops the helper before the final write, so an older text can never land after it.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from app.domain.errors import KnownStorageError, OutpostError
from app.storage.store import Store

log = logging.getLogger(__name__)


class StreamingRow:
    def __init__(self, store: Store, message_id: str, interval: float,
                 clock: Callable[[], float] = time.monotonic):
        self.store, self.message_id, self.interval, self.clock = \
            store, message_id, interval, clock
        self._lock = threading.Condition()
        self._unsaved: str | None = None  # text not written yet
        self._written_at = clock()  # when the row was last written (or tried)
        self._text_at = self._written_at  # when text last came
        self._closed = False
        self._helper: threading.Thread | None = None
        self.failed_writes = 0  # writes that did not go through (for tests and the log)

    def text(self, text: str) -> None:
        """The reply's text so far (on the thread that reads the stream)."""
        with self._lock:
            idle = self._unsaved is None  # the helper waits for text to come (or is not made)
            self._unsaved = text
            self._text_at = self.clock()
            if self._text_at - self._written_at >= self.interval:
                self._write()
            elif self._helper is None:
                self._helper = threading.Thread(target=self._watch, daemon=True,
                                                name="outpost-streaming-row")
                self._helper.start()
            elif idle:  # (not on every token: at 2,000 tokens/s that woke it 2,000 times/s)
                self._lock.notify()

    def close(self) -> None:
        """No more writes from here (the caller writes the final row next)."""
        with self._lock:
            self._closed = True
            self._lock.notify()
        if self._helper is not None:
            self._helper.join()

    def _write(self) -> None:
        """Write the unsaved text (the lock held: one write at a time, in order)."""
        text, self._unsaved = self._unsaved, None
        self._written_at = self.clock()
        if text is None:
            return
        try:
            self.store.update_message(self.message_id, content=text)
        except KnownStorageError as exc:  # busy, full, read-only: the next write tries again
            self.failed_writes += 1
            log.warning("the streaming reply %s could not be saved yet: %s", self.message_id,
                        exc)
            if self._unsaved is None:
                self._unsaved = text

    def _watch(self) -> None:
        """The helper: writes text that a quiet stream left unsaved."""
        try:
            with self._lock:
                while not self._closed:
                    if self._unsaved is None:
                        self._lock.wait()
                        continue
                    quiet = self.clock() - self._text_at
                    if quiet >= self.interval and \
                            self.clock() - self._written_at >= self.interval:
                        try:
                            self._write()
                        except OutpostError as exc:  # the row is gone (deleted elsewhere):
                            # the reading thread's next write or the final one says so
                            log.warning("the streaming reply %s: %s", self.message_id, exc)
                            return
                        continue
                    # until the quiet would be long enough (by this clock; a virtual one
                    # stands still, so at least a moment between looks)
                    self._lock.wait(max(0.05, self.interval - quiet))
        finally:
            self.store.release_thread_connection()
