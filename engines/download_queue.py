"""The download queue: models to download when the network allows, kept across restarts.

``<models_dir>/downloads.json`` lists the pending downloads in the order they were added, each
with a state:

* ``queued``: the next run downloads it;
* ``waiting_for_network``: added while offline, or its download stopped because the network went
  away; the next run while online downloads it;
* ``failed``: its download was refused or stopped while the network was up; ``message`` says why
  (the one sentence ``download()`` raised, in the command line's words), and ``resume`` keeps
  what a resumable failure said without them (``DownloadFailed.what`` and ``first``), so the
  window says its own way to resume (``failure_words``). It stays, with its message, until it is
  retried (``retry``, or ``add`` of the same URL) or removed; runs skip it.

Whether the network is up is the caller's knowledge: ``add`` and the runs take ``online``, a bool
or a callable that is asked again before each download and after each failure (a failure while
offline leaves the download waiting for the network, not failed; so does Offline mode's
refusal, ``OfflineModeOn`` from ``engines.network_guard``). ``run_next`` and
``run_pending`` download in order with ``engines.model_download.download`` (so with all its
checks: size, GGUF header, the given or Hugging Face sha256) and remove each download that
completed; its model is then in the library. ``cancel`` stops a run and keeps the download queued.

**A restart** finds the file again: the ``.part`` of a download that was cut stays next to it,
and the next run resumes it with a Range request.

The file is written atomically (a temporary file in the same folder, then ``os.replace``) and
read again before every change, so a window and a CLI on one models folder see each other's
changes; within one process the changes are serialised by a lock (across processes the last
write wins). A ``downloads.json`` that cannot be understood is **set aside** as
``downloads.json.corrupt-<unix time>`` with one sentence to ``on_notice``, and the queue starts
empty: a broken queue file never stops the app, and what it held is kept for the user to read.
A queue file that cannot be read or written at all (permissions, full disk) raises
``KnownStorageError``.
"""
from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from app.domain.errors import (Cancelled, DownloadFailed, KnownStorageError, OfflineModeOn,
                                OutpostError, UsageError)
from engines.model_download import checked_sha256, download, name_from_url
from engines.model_library import ModelEntry, ModelLibrary, _checked_name

QUEUE_FILE = "downloads.json"
QUEUE_VERSION = 1

Online = bool | Callable[[], bool]


class QueueState(StrEnum):
    QUEUED = "queued"
    WAITING_FOR_NETWORK = "waiting_for_network"
    FAILED = "failed"


@dataclass(frozen=True)
class QueuedDownload:
    """One download of the queue: what to fetch, the name and sha256 the user gave (None: from
    the URL, or from Hugging Face / unchecked), where it stands and, when failed, why."""

    url: str
    name: str | None = None
    sha256: str | None = None
    state: QueueState = QueueState.QUEUED
    message: str | None = None
    # a failure that kept the part: what happened and what to do first ("free some space"; "")
    resume: tuple[str, str] | None = None

    @property
    def model_name(self) -> str:
        """The name the model will have in the library."""
        return _checked_name(self.name) if self.name else name_from_url(self.url)

    def failure_words(self, how_to_resume: str) -> str | None:
        """Why it failed, with a front end's own way to resume it when it can be resumed
        (``DownloadFailed.saying``); None when it has not failed."""
        if self.resume is not None:
            what, first = self.resume
            return DownloadFailed(what, resumable=True, first=first).saying(how_to_resume)
        return self.message

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "name": self.name, "sha256": self.sha256,
                "state": self.state.value, "message": self.message,
                "resume": None if self.resume is None else
                {"what": self.resume[0], "first": self.resume[1]}}


@dataclass(frozen=True)
class QueueOutcome:
    """What one run did with one download: the model when it completed (and left the queue),
    else the error, with ``item`` as it now stands in the queue (failed or waiting)."""

    item: QueuedDownload
    entry: ModelEntry | None = None
    error: OutpostError | None = None

    @property
    def completed(self) -> bool:
        return self.entry is not None


class DownloadQueue:
    """The persistent queue of model downloads of one library (see the module)."""

    def __init__(self, library: ModelLibrary,
                 on_notice: Callable[[str], None] | None = None):
        self.library = library
        self.path = library.models_dir / QUEUE_FILE
        self._notice = on_notice or (lambda text: None)
        self._lock = threading.RLock()

    # -- what there is ------------------------------------------------------------------------
    def items(self) -> list[QueuedDownload]:
        """Every download of the queue, in order, failed ones included."""
        with self._lock:
            return self._load()

    def pending(self) -> list[QueuedDownload]:
        """The downloads a run would take, in order (everything but the failed ones)."""
        return [item for item in self.items() if item.state != QueueState.FAILED]

    # -- changes ------------------------------------------------------------------------------
    def add(self, url: str, name: str | None = None, sha256: str | None = None, *,
            online: Online = True) -> QueuedDownload:
        """Queue a download (checked as ``download()`` would: URL, name, sha256, a model of that
        name already in the library). Adding a failed download's URL again retries it."""
        if not url.startswith(("https://", "http://")):
            raise UsageError(f"{url} is not an http(s) URL.")
        item = QueuedDownload(url, _checked_name(name) if name else None, checked_sha256(sha256),
                              _state_for(online))
        stem = item.model_name
        if any(e.name == stem for e in self.library.entries()):
            raise UsageError(f"A model called {stem} is already in the library.")
        with self._lock:
            items = self._load()
            for other in items:
                if other.url == url and other.state != QueueState.FAILED:
                    raise UsageError(f"{url} is already in the download queue "
                                     f"({other.state.value}).")
                if other.url != url and other.model_name == stem:
                    raise UsageError(f"A download called {stem} is already queued "
                                     f"({other.url}); choose another name (--name).")
            items = [i for i in items if i.url != url] + [item]
            self._save(items)
        return item

    def remove(self, url: str, *, discard_part: bool = False) -> QueuedDownload:
        """Take a download off the queue; with ``discard_part`` its ``.part`` is deleted too
        (else a later download of it resumes)."""
        with self._lock:
            items = self._load()
            item = self._find(items, url)
            part = self.library.models_dir / f"{item.model_name}.gguf.part"
            if discard_part and part.with_name(part.name + ".lock").exists():
                raise UsageError(f"{item.model_name} is being downloaded right now; stop it "
                                 "before removing it.")
            self._save([i for i in items if i.url != url])
        if discard_part:
            part.unlink(missing_ok=True)
        return item

    def mark_failed(self, url: str, message: str) -> QueuedDownload:
        """Set a download aside as failed, with the sentence that says why."""
        return self._update(url, QueueState.FAILED, message)

    def retry(self, url: str, *, online: Online = True) -> QueuedDownload:
        """Put a failed download back in the queue (its message is dropped)."""
        return self._update(url, _state_for(online), None)

    # -- runs ---------------------------------------------------------------------------------
    def run_next(self, online: Online = True, **download_kwargs: Any) -> QueueOutcome | None:
        """Download the first pending item (``download_kwargs``: ``download()``'s keywords but
        ``name`` and ``sha256``, e.g. ``on_progress``, ``cancel``). None when nothing ran:
        the queue has nothing pending, or ``online`` is false (then every queued download is
        marked waiting for the network). ``Cancelled`` leaves the item queued."""
        return self._run_one(online, set(), download_kwargs)

    def run_pending(self, online: Online = True, **download_kwargs: Any) -> list[QueueOutcome]:
        """Download every pending item in order (as ``run_next``), each at most once; stops
        when the network goes away."""
        outcomes: list[QueueOutcome] = []
        tried: set[str] = set()
        while (outcome := self._run_one(online, tried, download_kwargs)) is not None:
            outcomes.append(outcome)
            if outcome.item.state == QueueState.WAITING_FOR_NETWORK:
                break
        return outcomes

    def _run_one(self, online: Online, tried: set[str],
                 download_kwargs: dict[str, Any]) -> QueueOutcome | None:
        if not _is_up(online):
            self._wait_for_network()
            return None
        with self._lock:
            items = self._load()
            item = next((i for i in items
                         if i.state != QueueState.FAILED and i.url not in tried), None)
            if item is None:
                return None
            if item.state != QueueState.QUEUED:
                item = replace(item, state=QueueState.QUEUED)
                self._save([item if i.url == item.url else i for i in items])
        tried.add(item.url)
        try:
            entry = download(item.url, self.library, name=item.name, sha256=item.sha256,
                             **download_kwargs)
        except Cancelled:
            raise
        except OutpostError as exc:
            # offline now (the network went away, or Offline mode refused the connection):
            # not the download's fault, it waits
            state, message = ((QueueState.FAILED, str(exc))
                              if _is_up(online) and not isinstance(exc, OfflineModeOn)
                              else (QueueState.WAITING_FOR_NETWORK, None))
            resume = (exc.what, exc.first) if message is not None and \
                isinstance(exc, DownloadFailed) and exc.resumable else None
            try:
                item = self._update(item.url, state, message, resume)
            except UsageError:  # removed from the queue while it was downloading
                item = replace(item, state=state, message=message, resume=resume)
            return QueueOutcome(item, None, exc)
        with self._lock:
            self._save([i for i in self._load() if i.url != item.url])
        return QueueOutcome(item, entry, None)

    def _wait_for_network(self) -> None:
        with self._lock:
            items = self._load()
            if any(i.state == QueueState.QUEUED for i in items):
                self._save([replace(i, state=QueueState.WAITING_FOR_NETWORK)
                            if i.state == QueueState.QUEUED else i for i in items])

    # -- the file -----------------------------------------------------------------------------
    def _update(self, url: str, state: QueueState, message: str | None,
                resume: tuple[str, str] | None = None) -> QueuedDownload:
        with self._lock:
            items = self._load()
            item = replace(self._find(items, url), state=state, message=message, resume=resume)
            self._save([item if i.url == url else i for i in items])
        return item

    def _find(self, items: list[QueuedDownload], url: str) -> QueuedDownload:
        for item in items:
            if item.url == url:
                return item
        raise UsageError(f"{url} is not in the download queue.")

    def _load(self) -> list[QueuedDownload]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise KnownStorageError(f"The download queue {self.path} cannot be read "
                                    f"({exc.strerror}).") from None
        try:
            return _parse(data)
        except _Damaged as exc:
            self._set_aside(str(exc))
            return []

    def _set_aside(self, problem: str) -> None:
        aside = self.path.with_name(f"{QUEUE_FILE}.corrupt-{int(time.time())}")
        while aside.exists():  # one set aside earlier in the same second is kept too
            aside = aside.with_name(aside.name + "-1")
        try:
            os.replace(self.path, aside)
        except OSError as exc:
            raise KnownStorageError(f"The download queue {self.path} is damaged ({problem}) and "
                                    f"cannot be set aside ({exc.strerror}).") from None
        self._notice(f"The download queue {self.path} could not be read ({problem}); it was "
                     f"set aside as {aside.name} and the queue starts empty.")

    def _save(self, items: list[QueuedDownload]) -> None:
        text = json.dumps({"version": QUEUE_VERSION,
                           "downloads": [item.to_json() for item in items]}, indent=2)
        folder = self.path.parent
        tmp: str | None = None
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{QUEUE_FILE}.", suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())  # the new file is whole before it replaces the old
            os.replace(tmp, self.path)
        except OSError as exc:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            raise KnownStorageError(f"The download queue {self.path} could not be written "
                                    f"({exc.strerror or exc}).") from None


class _Damaged(Exception):
    """A queue file that cannot be understood (the message says why)."""


def _parse(data: bytes) -> list[QueuedDownload]:
    """The downloads of a queue file; ``_Damaged`` (saying what is wrong) if it is damaged."""
    try:
        document = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise _Damaged("it is not UTF-8 text") from None
    except RecursionError:  # nested thousands deep: json gives up on its own stack
        raise _Damaged("it nests lists or objects thousands of levels deep") from None
    except ValueError as exc:
        raise _Damaged(f"it is not JSON: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("downloads"), list):
        raise _Damaged("it has no list of downloads")
    if document.get("version") != QUEUE_VERSION:
        raise _Damaged(f"its version {document.get('version')!r} is not "
                         f"{QUEUE_VERSION}")
    items = []
    for number, entry in enumerate(document["downloads"], start=1):
        if not isinstance(entry, dict) or not isinstance(entry.get("url"), str) or \
                entry.get("state") not in tuple(QueueState) or \
                not all(isinstance(entry.get(key), str | None)
                        for key in ("name", "sha256", "message")):
            raise _Damaged(f"download {number} is not a url with a known state")
        resume = entry.get("resume")  # (absent from a queue written before it was kept)
        if resume is not None and not (isinstance(resume, dict) and all(
                isinstance(resume.get(key), str) for key in ("what", "first"))):
            raise _Damaged(f"download {number} has a resume that is not what and first")
        item = QueuedDownload(entry["url"], entry.get("name"), entry.get("sha256"),
                              QueueState(entry["state"]), entry.get("message"),
                              None if resume is None else (resume["what"], resume["first"]))
        try:
            item.model_name  # noqa: B018 (checks the name or the URL's file name)
        except UsageError as exc:
            raise _Damaged(f"download {number}: {exc}") from None
        items.append(item)
    return items


def _is_up(online: Online) -> bool:
    return bool(online() if callable(online) else online)


def _state_for(online: Online) -> QueueState:
    return QueueState.QUEUED if _is_up(online) else QueueState.WAITING_FOR_NETWORK
