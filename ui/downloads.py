"""Model downloads in the window: the download queue (``engines.download_queue``) run on a
background thread, progress and results back by signal.

* A download added while the network is away (Offline mode, or its host unreachable) waits in
  the queue; every ``TICK_MS`` the runner checks whether the host answers again (a TCP connect
  through the link tracker, ``app.chat.connectivity``; never in Offline mode) and starts the
  waiting downloads when it does. The queue lives in the models folder, so downloads left when
  the app closed resume (HTTP Range) at the next start.
* One download at a time. ``stop`` cancels the running one between chunks; its ``.part`` is
  kept, so adding the same URL again resumes it.
* A failed download stays in the queue with a Retry button; a failure that kept the part says
  so in the window's words (``failure_words``: "… Press Retry to resume it."), not the command
  line's ("run the same command again").
"""
from __future__ import annotations

import threading
from urllib.parse import urlparse

from PySide6.QtCore import QObject, QTimer, Signal

from app.chat.connectivity import LinkState
from app.domain.errors import Cancelled, DownloadFailed, OutpostError
from engines.download_queue import DownloadQueue, QueueState
from engines.model_download import Progress
from engines.model_library import ModelLibrary

TICK_MS = 5000
RESUME_HERE = "press Retry to resume it"  # the failed download's row has a Retry button


def failure_words(error: OutpostError) -> str:
    """A download's failure as the window says it: a resumable one with the window's way to
    resume (``RESUME_HERE``), any other as it is."""
    return error.saying(RESUME_HERE) if isinstance(error, DownloadFailed) else str(error)


def link_name(url: str) -> str:
    """The link tracker's name for a download host."""
    return f"download:{urlparse(url).hostname or ''}"


class Downloads(QObject):
    progress = Signal(str, object)  # url, engines.model_download.Progress
    notice = Signal(str)  # one sentence: a restart without Range, verified, a full disk…
    finished = Signal(object)  # the new engines.model_library.ModelEntry
    failed = Signal(str, object)  # url, the OutpostError
    changed = Signal()  # the queue changed (added, started, waiting, failed, removed)

    def __init__(self, library: ModelLibrary, settings, connectivity, parent=None,
                 tick_ms: int = TICK_MS):
        super().__init__(parent)
        self.settings, self.connectivity = settings, connectivity
        self.queue = DownloadQueue(library, on_notice=self.notice.emit)
        self.running: str | None = None  # the URL downloading now
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self.timer = QTimer(self)
        self.timer.setInterval(tick_ms)
        self.timer.timeout.connect(self.kick)
        self.finished.connect(lambda _: self.changed.emit())
        self.failed.connect(lambda *_: self.changed.emit())

    def start(self) -> None:
        self.timer.start()
        self.kick()

    def items(self):
        return self.queue.items()

    def add(self, url: str, sha256: str | None = None, name: str | None = None) -> None:
        """Queue ``url`` (checked at once: raises UsageError) and start it if the network
        allows."""
        self.queue.add(url.strip(), name=name or None, sha256=sha256 or None,
                       online=not self.settings["offline_mode"])
        self.changed.emit()
        self.kick()

    def retry(self, url: str) -> None:
        self.queue.retry(url, online=not self.settings["offline_mode"])
        self.changed.emit()
        self.kick()

    def remove(self, url: str) -> None:
        """Take a download off the queue (stopping it first); its part is kept for later."""
        if url == self.running:
            self.stop()
            if self._thread is not None:
                self._thread.join(timeout=10)
        self.queue.remove(url)
        self.changed.emit()

    def stop(self) -> None:
        self._cancel.set()

    def kick(self) -> None:
        """Run the pending downloads in the background, unless one is running already."""
        if self._thread is not None and self._thread.is_alive():
            return
        if self.settings["offline_mode"] or not self.queue.pending():
            return
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, name="outpost-downloads",
                                        daemon=True)
        self._thread.start()

    def _online(self) -> bool:
        """Asked before each download and after a failure: Offline mode is off and the next
        download's host takes a TCP connection."""
        if self.settings["offline_mode"]:
            return False
        pending = self.queue.pending()
        if not pending:
            return True
        url = pending[0].url
        return self.connectivity.probe(link_name(url), url) is LinkState.ONLINE

    def _run(self) -> None:
        cancel = self._cancel

        def on_progress(p: Progress) -> None:
            self.progress.emit(self.running or "", p)

        while not cancel.is_set():
            pending = self.queue.pending()
            if not pending:
                break
            self.running = pending[0].url
            self.changed.emit()
            try:
                outcome = self.queue.run_next(self._online, on_progress=on_progress,
                                              on_notice=self.notice.emit, cancel=cancel)
            except Cancelled:  # stopped: the item stays queued, its part kept
                break
            except OutpostError as exc:  # the queue file itself (a full disk)
                self.failed.emit(self.running, exc)
                break
            finally:
                self.running = None
            if outcome is None:
                break
            if outcome.completed:
                self.finished.emit(outcome.entry)
            elif outcome.error is not None and outcome.item.state == QueueState.FAILED:
                self.failed.emit(outcome.item.url, outcome.error)
            if outcome.item.state == QueueState.WAITING_FOR_NETWORK:
                break  # the network went away: the timer tries again
        self.changed.emit()

    def shutdown(self) -> None:
        self.timer.stop()
        self.stop()
        if self._thread is not None:
            self._thread.join(timeout=10)
