"""A cloud request's socket watched from another thread (``Watchdog``: the user's cancel,
the first-token deadline, a body that goes on too long after its end), the request sent and
its response headers awaited on a thread of its own (``RequestSender``) and its body read on
another (``BodyReader``), so that the stream can say it waits while a send or a read blocks.
Used by ``engines.cloud``."""
from __future__ import annotations

import enum
import queue
import threading
import time
from typing import Any, Callable, Iterator

from engines.sockets import SocketTracker


class WatchdogReason(enum.Enum):
    """Why the watchdog shut the request's socket down."""

    CANCEL = "cancel"  # the user (or the router) cancelled
    FIRST_TOKEN = "first_token"  # the first token was later than its deadline
    DRAIN = "drain"  # the body went on too long after the terminal event


class Watchdog:
    """Shuts the request's socket down when the user cancels or the first token is late, from
    before the request is sent until the stream ends (waiting for headers included)."""

    POLL_S = 0.02

    def __init__(self, cancel: threading.Event, first_token_deadline: float,
                 tracker: SocketTracker, owner: int | None = None):
        self.cancel = cancel
        self.deadline = first_token_deadline
        self.got_text = False
        self.fired: WatchdogReason | None = None
        self.drain_until: float | None = None
        self._tracker = tracker
        # the thread that sends the request (``RequestSender``): its socket is the request's
        self._owner = owner if owner is not None else threading.get_ident()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="outpost-stream-watchdog",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._tracker.forget(self._owner)

    def _run(self) -> None:
        while not self._done.wait(self.POLL_S):
            if self.cancel.is_set():
                self._fire(WatchdogReason.CANCEL)
                return
            if not self.got_text and time.monotonic() >= self.deadline:
                self._fire(WatchdogReason.FIRST_TOKEN)
                return
            if self.drain_until is not None and time.monotonic() >= self.drain_until:
                self._fire(WatchdogReason.DRAIN)
                return

    def _fire(self, reason: WatchdogReason) -> None:
        self.fired = reason
        self.hang_up()

    def hang_up(self) -> None:
        """Shut the request's socket down: a read blocked on it returns at once."""
        self._tracker.shutdown_for(self._owner)


class RequestSender:
    """Sends a request (``send``: returns the response once its headers came) on a thread of
    its own, so that the stream can say it waits (``Stalled``) while a server that accepted
    the connection holds its headers back: the stream takes the response with ``next`` (a
    timeout; the send's exception raised there). The thread stays until ``release``, so its
    id, under which ``engines.sockets`` keeps the request's socket, is no other thread's
    while the request lasts; a response that came after the stream left is closed there."""

    def __init__(self, send: Callable[[], Any]):
        self._queue: queue.Queue = queue.Queue()
        self._released = threading.Event()
        self.answered = False  # the stream took the response (or the send's exception)
        self._thread = threading.Thread(target=self._send, args=(send,),
                                        name="outpost-request-sender", daemon=True)
        self._thread.start()

    @property
    def ident(self) -> int:
        return self._thread.ident or 0  # (started in __init__: never 0)

    def _send(self, send: Callable[[], Any]) -> None:
        try:
            self._queue.put(send())
        except BaseException as exc:  # noqa: BLE001 - raised on the stream's thread (next)
            self._queue.put(exc)
        self._released.wait()
        try:  # a response the stream never took (it left while waiting) is closed here
            left = self._queue.get_nowait()
        except queue.Empty:
            return
        if not isinstance(left, BaseException):
            left.close()

    def next(self, timeout: float | None) -> Any:
        """The response, or None when ``timeout`` s passed before its headers came."""
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        self.answered = True
        if isinstance(item, BaseException):
            raise item
        return item

    def release(self) -> None:
        """The request is over (call after ``Watchdog.stop``): the thread may end."""
        self._released.set()


BODY_END = object()  # the end of a response body (``BodyReader``)


class BodyReader:
    """A response body read on a thread of its own into a queue, so that the stream can say
    it waits (``Stalled``) while a read blocks: the stream takes the chunks with ``next``
    (a timeout, the reader's exception raised there, ``BODY_END`` at the end) or by iterating.
    The watchdog still ends a read (cancel, deadlines: it shuts the socket down); ``close``
    hangs up a read still going (a stream left before its end) before the response is
    closed, so no thread is left reading it."""

    def __init__(self, chunks: Iterator[bytes], watchdog: Watchdog):
        self._queue: queue.Queue = queue.Queue()
        self._watchdog = watchdog
        self.last_at = time.monotonic()  # when bytes last came (the idle deadline's count)
        self.ended = False  # the stream took the end (or the reader's exception)
        self._thread = threading.Thread(target=self._read, args=(chunks,),
                                        name="outpost-stream-reader", daemon=True)
        self._thread.start()

    def _read(self, chunks: Iterator[bytes]) -> None:
        try:
            for chunk in chunks:
                self.last_at = time.monotonic()
                self._queue.put(chunk)
        except BaseException as exc:  # noqa: BLE001 - raised on the stream's thread (next)
            self._queue.put(exc)
            return
        self._queue.put(BODY_END)

    def next(self, timeout: float | None) -> object:
        """The next chunk (bytes), ``BODY_END``, or None when ``timeout`` s passed without one."""
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if isinstance(item, BaseException):
            self.ended = True
            raise item
        self.ended = item is BODY_END
        return item

    def __iter__(self) -> Iterator[bytes]:
        while not self.ended:
            item = self.next(None)
            if isinstance(item, bytes):
                yield item

    def close(self) -> None:
        """A body the stream left before its end is hung up, as closing it unread did (read
        ahead to its end here or not): the connection is not used again."""
        if not self.ended:
            self._watchdog.hang_up()
        self._thread.join(timeout=5)
