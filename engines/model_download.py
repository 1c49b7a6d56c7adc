"""Downloading a GGUF model into the library: resumable, verified, never half-offered.

* The bytes go to ``<models_dir>/<name>.gguf.part``; only a complete, checked file is renamed to
  ``<name>.gguf`` (the library never lists a ``.part``).
* **Resume**: a ``.part`` left by a dropped connection or a closed app is continued with an HTTP
  ``Range`` request. A server that answers the range with the whole file (no Range support) is
  started over from byte 0, and ``on_notice`` says so.
* **Checks**: the first bytes must be ``GGUF`` (an HTML error page is refused at once); the size
  must be what the server announced; the whole GGUF header is read before the rename; with
  ``sha256`` the hash must match (a mismatch deletes the part and says so).
* Free space is checked before the first byte; two downloads of the same file at once are
  refused (a lock file next to the part, naming the process); ``cancel`` stops between chunks
  and keeps the part for a later resume.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import unquote, urlparse

import httpx

from app.domain.errors import Cancelled, DownloadFailed, ModelInvalid, UsageError
from engines.gguf import MAGIC, read_gguf
from engines.model_library import ModelEntry, ModelLibrary, _checked_name

CHUNK = 1024 * 1024
USER_AGENT = "Outpost/0.1"


@dataclass(frozen=True)
class Progress:
    """Where a download is: bytes written (resumed ones included), the total when the server
    said it, the speed of this session and the time left at that speed."""

    done: int
    total: int | None
    speed_bps: float
    resumed_from: int = 0

    @property
    def fraction(self) -> float | None:
        return self.done / self.total if self.total else None

    @property
    def eta_s(self) -> float | None:
        if not self.total or self.speed_bps <= 0:
            return None
        return max(0.0, (self.total - self.done) / self.speed_bps)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def name_from_url(url: str) -> str:
    last = unquote(urlparse(url).path.rsplit("/", 1)[-1])
    if not last.endswith(".gguf"):
        raise UsageError(f"The URL {url} does not name a .gguf file; give the model a name "
                         "with --name.")
    return _checked_name(last)


def download(url: str, library: ModelLibrary, *, name: str | None = None,
             sha256: str | None = None, client: httpx.Client | None = None,
             on_progress: Callable[[Progress], None] | None = None,
             on_notice: Callable[[str], None] | None = None,
             cancel: threading.Event | None = None,
             clock: Callable[[], float] = time.monotonic) -> ModelEntry:
    """Download ``url`` into the library (see the module) and return the new model."""
    if not url.startswith(("https://", "http://")):
        raise UsageError(f"{url} is not an http(s) URL.")
    stem = _checked_name(name) if name else name_from_url(url)
    if sha256 is not None:
        sha256 = sha256.strip().lower()
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise UsageError("--sha256 must be 64 hexadecimal digits.")
    if any(e.name == stem for e in library.entries()):
        raise UsageError(f"A model called {stem} is already in the library.")
    library.models_dir.mkdir(parents=True, exist_ok=True)
    target = library.models_dir / f"{stem}.gguf"
    part = target.with_name(target.name + ".part")
    notice = on_notice or (lambda text: None)
    cancel = cancel or threading.Event()
    own_client = client is None
    client = client or httpx.Client(timeout=httpx.Timeout(30.0, read=60.0),
                                    follow_redirects=True, max_redirects=10,
                                    headers={"User-Agent": USER_AGENT})
    with _Lock(part):
        try:
            _fetch(client, url, part, on_progress, notice, cancel, clock)
        finally:
            if own_client:
                client.close()
        try:
            if sha256 is not None:
                got = file_sha256(part)
                if got != sha256:
                    part.unlink(missing_ok=True)
                    raise DownloadFailed(f"The download of {stem} does not match its sha256 "
                                         f"(expected {sha256}, got {got}); the file was "
                                         "deleted.")
            read_gguf(part)  # the whole header, and the size its tensors need
        except ModelInvalid as exc:
            part.unlink(missing_ok=True)
            raise DownloadFailed(f"The download of {stem} is not a usable model ({exc}); the "
                                 "file was deleted.") from None
        os.replace(part, target)
    return ModelEntry(stem, target, "library", read_gguf(target))


def _fetch(client: httpx.Client, url: str, part: Path, on_progress, notice, cancel,
           clock) -> None:
    have = part.stat().st_size if part.exists() else 0
    # the bytes as stored (no compression on the wire, so a Range is a range of the file)
    headers = {"Accept-Encoding": "identity", **({"Range": f"bytes={have}-"} if have else {})}
    try:
        with client.stream("GET", url, headers=headers) as response:
            if response.status_code == 416 and have:  # the part is already complete
                return
            if response.status_code >= 400:
                raise DownloadFailed(f"The server answered {response.status_code} "
                                     f"{response.reason_phrase} for {url}; nothing was "
                                     "downloaded.")
            if have and response.status_code == 200:
                notice(f"The server does not resume downloads: starting {part.stem} over "
                       "from the beginning.")
                have = 0
            elif have and response.status_code == 206:
                start = response.headers.get("content-range", "").split(" ")[-1].split("-")[0]
                if start != str(have):
                    notice("The server resumed at another byte than asked: starting over.")
                    have = 0
            length = response.headers.get("content-length")
            total = have + int(length) if length and length.isdigit() else None
            free = shutil.disk_usage(part.parent).free
            if total is not None and total - have > free:
                raise DownloadFailed(f"There is not enough free space in {part.parent} for "
                                     f"{part.stem}: it needs {total - have:,} more bytes, "
                                     f"{free:,} are free.")
            _write(response, part, have, total, on_progress, cancel, clock)
    except httpx.TooManyRedirects:
        raise DownloadFailed(f"{url} redirects in a loop (more than 10 redirects); nothing "
                             "was downloaded.") from None
    except httpx.TransportError as exc:
        done = part.stat().st_size if part.exists() else 0
        raise DownloadFailed(f"The download stopped after {done:,} bytes ({exc}); run the same "
                             "command again to resume it.") from None


def _write(response: httpx.Response, part: Path, have: int, total: int | None, on_progress,
           cancel: threading.Event, clock) -> None:
    started, done = clock(), have
    with part.open("r+b" if have else "wb") as handle:
        handle.seek(have)
        handle.truncate()
        checked = have >= len(MAGIC)
        for chunk in response.iter_raw():  # as it arrives: a cut keeps every byte received
            if cancel.is_set():
                raise Cancelled(f"The download was stopped at {done:,} bytes; the part is kept "
                                "and resumes next time.")
            if not checked and done + len(chunk) >= len(MAGIC):
                head = (part.read_bytes()[:done] if done else b"") + chunk
                if not head.startswith(MAGIC):
                    handle.close()
                    part.unlink(missing_ok=True)
                    raise DownloadFailed(f"What the server sends is not a GGUF model (it starts "
                                         f"with {head[:16]!r}, e.g. an HTML error page); "
                                         "nothing was kept.")
                checked = True
            handle.write(chunk)
            done += len(chunk)
            if on_progress is not None:
                elapsed = max(clock() - started, 1e-6)
                on_progress(Progress(done, total, (done - have) / elapsed, have))
    if total is not None and done != total:
        raise DownloadFailed(f"The server announced {total:,} bytes but sent {done:,}; run the "
                             "same command again to resume.")


class _Lock:
    """One download of a file at a time, also across processes: a lock file naming the pid
    (a lock left by a process that died is taken over)."""

    def __init__(self, part: Path):
        self.path = part.with_name(part.name + ".lock")

    def __enter__(self) -> "_Lock":
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                if self._holder_alive():
                    raise DownloadFailed(f"{self.path.name.removesuffix('.part.lock')} is "
                                         "already being downloaded (by another window or "
                                         "command); wait for it.") from None
                self.path.unlink(missing_ok=True)  # left by a process that died
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(str(os.getpid()))
            return self
        raise DownloadFailed(f"The download lock {self.path} cannot be taken.")

    def _holder_alive(self) -> bool:
        try:
            pid = int(self.path.read_text().strip() or 0)
            os.kill(pid, 0)
        except (ValueError, ProcessLookupError, FileNotFoundError):
            return False
        except PermissionError:
            return True
        return pid > 0

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)
