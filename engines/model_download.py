"""Downloading a GGUF model into the library: resumable, verified, never half-offered.

* The bytes go to ``<models_dir>/<name>.gguf.part``; only a complete, checked file is renamed to
  ``<name>.gguf`` (the library never lists a ``.part``).
* **Resume**: a ``.part`` left by a dropped connection or a closed app is continued with an HTTP
  ``Range`` request. A server that answers the range with the whole file (no Range support) is
  started over from byte 0, and ``on_notice`` says so.
* **Checks**: the first bytes must be ``GGUF`` (an HTML error page is refused at once); the size
  must be what the server announced; the whole GGUF header is read before the rename; with a
  sha256 the hash must match (a mismatch deletes the part and says where the expected hash came
  from). ``on_verified`` is told which hash was checked and where it came from.
* **The sha256 from Hugging Face**: when no ``sha256`` is given and the URL is a Hugging Face
  resolve URL (``{endpoint}/{owner}/{repo}/resolve/{revision}/{path}``, where ``endpoint`` is
  ``HF_ENDPOINT`` or ``https://huggingface.co``, as in ``huggingface_hub``), the expected hash is
  the ``lfs.oid`` the Hub's tree API lists for that file, and ``on_notice`` says "verified
  against Hugging Face" once it matched. A file kept in git rather than LFS has no sha256 there,
  and a Hub API that cannot be reached or answers an error only costs the check: the download
  goes on unverified, and ``on_notice`` says so in one sentence. A given ``sha256`` always wins.
* Free space is checked before the first byte (when the server says the size), and a disk that
  fills up while writing (``ENOSPC``) stops the download with one sentence naming the folder;
  the part is kept for a resume and, being a ``.part``, never listed. Two downloads of the same
  file at once are refused (a lock file next to the part, naming the process); ``cancel`` stops
  between chunks and keeps the part for a later resume.
* A finished download whose content is already in the library (the same size, then the same
  sha256, as ``models import`` checks) is deleted, and the ``UsageError`` names that model.
"""
from __future__ import annotations

import errno
import os
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Self
from urllib.parse import quote, unquote, urlparse

import httpx

from app.domain.errors import Cancelled, DownloadFailed, ModelInvalid, UsageError
from engines import network_guard
from engines.gguf import MAGIC, read_gguf
from engines.http_policy import connect_failure, how_it_broke, os_words, with_detail
from engines.model_files import file_sha256
from engines.model_library import ModelEntry, ModelLibrary, _checked_name

CHUNK = 1024 * 1024
USER_AGENT = "Outpost/0.1"
HF_DEFAULT_ENDPOINT = "https://huggingface.co"
HUB_API_TIMEOUT = httpx.Timeout(10.0)
HUB_API_MAX_PAGES = 50  # the tree API pages long folders (a Link: rel="next" header)
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


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


@dataclass(frozen=True)
class Verification:
    """The sha256 a finished download was checked against, and where that hash came from:
    ``"given"`` (the caller's ``sha256``, e.g. ``--sha256``) or ``"huggingface"`` (the Hub API)."""

    sha256: str
    source: Literal["given", "huggingface"]

    def __str__(self) -> str:
        where = "Hugging Face" if self.source == "huggingface" else "the sha256 given"
        return f"verified against {where} (sha256 {self.sha256})"


@dataclass(frozen=True)
class HubFile:
    """A file of a Hugging Face model repository, as its resolve URL names it."""

    endpoint: str
    repo_id: str  # owner/repo
    revision: str
    path: str  # inside the repository, e.g. "q4/model.Q4_K_M.gguf"

    @property
    def tree_url(self) -> str:
        """The Hub API listing of the folder holding the file (its LFS sha256 is there)."""
        folder = self.path.rpartition("/")[0]
        return (f"{self.endpoint}/api/models/{self.repo_id}/tree/{quote(self.revision, safe='')}"
                + (f"/{quote(folder)}" if folder else ""))


def hub_endpoint() -> str:
    """Where Hugging Face is: ``HF_ENDPOINT`` (a mirror, a test server) or huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or HF_DEFAULT_ENDPOINT).rstrip("/")


def hub_file(url: str) -> HubFile | None:
    """The repository file a Hugging Face resolve URL names, or None for any other URL."""
    endpoint = hub_endpoint()
    if not url.startswith(endpoint + "/"):
        return None
    rest = url[len(endpoint) + 1:].split("#", 1)[0].split("?", 1)[0]
    parts = rest.split("/")
    if len(parts) < 5 or parts[2] != "resolve" or not all(parts):
        return None
    owner, repo, _, revision, *path = (unquote(p) for p in parts)
    return HubFile(endpoint, f"{owner}/{repo}", revision, "/".join(path))


def hub_sha256(file: HubFile, client: httpx.Client) -> str | None:
    """The sha256 the Hub lists for ``file`` (its LFS object id), or None for a file kept in git
    (the Hub has no sha256 for it). Raises ``DownloadFailed`` when the Hub cannot say."""
    url: str | None = file.tree_url
    for _ in range(HUB_API_MAX_PAGES):
        if url is None:
            break
        try:
            response = client.get(url, timeout=HUB_API_TIMEOUT,
                                  headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise DownloadFailed(f"the Hugging Face API could not be reached ({exc})") from None
        if response.status_code >= 400:
            raise DownloadFailed(f"the Hugging Face API answered {response.status_code} "
                                 f"{response.reason_phrase}")
        try:
            listing = response.json()
        except ValueError:
            listing = None
        if not isinstance(listing, list):
            raise DownloadFailed("the Hugging Face API answered something else than a file "
                                 "list")
        for entry in listing:
            if isinstance(entry, dict) and entry.get("path") == file.path:
                return _lfs_sha256(entry)
        url = response.links.get("next", {}).get("url")
    raise DownloadFailed(f"Hugging Face does not list {file.path} in {file.repo_id} at "
                         f"{file.revision}")


def _lfs_sha256(entry: dict) -> str | None:
    lfs = entry.get("lfs")
    if not lfs:
        return None
    oid = lfs.get("oid") if isinstance(lfs, dict) else None
    if not _is_sha256(oid):
        raise DownloadFailed(f"the Hugging Face API lists no usable sha256 for {entry['path']} "
                             f"({oid!r})")
    return str(oid).lower()


def _is_sha256(value: object) -> bool:
    return (isinstance(value, str) and len(value) == 64
            and all(c in "0123456789abcdef" for c in value.lower()))


def checked_sha256(value: str | None) -> str | None:
    """A sha256 as given by a user (spaces, capitals) in lower case; ``UsageError`` if it is
    not 64 hexadecimal digits."""
    if value is None:
        return None
    value = value.strip().lower()
    if not _is_sha256(value):
        raise UsageError("--sha256 must be 64 hexadecimal digits.")
    return value


def name_from_url(url: str) -> str:
    last = unquote(urlparse(url).path.rsplit("/", 1)[-1])
    if not last.endswith(".gguf"):
        raise UsageError(f"The URL {url} does not end in a .gguf file's name: use the file's "
                         "own download link (on Hugging Face: …/resolve/main/NAME.gguf), or, on "
                         "the command line, give the model a name with --name.")
    return _checked_name(last)


def download(url: str, library: ModelLibrary, *, name: str | None = None,
             sha256: str | None = None, client: httpx.Client | None = None,
             on_progress: Callable[[Progress], None] | None = None,
             on_notice: Callable[[str], None] | None = None,
             cancel: threading.Event | None = None,
             clock: Callable[[], float] = time.monotonic,
             on_verified: Callable[[Verification], None] | None = None) -> ModelEntry:
    """Download ``url`` into the library (see the module) and return the new model."""
    if not url.startswith(("https://", "http://")):
        raise UsageError(f"{url} is not an http(s) URL.")
    stem = _checked_name(name) if name else name_from_url(url)
    sha256 = checked_sha256(sha256)
    if any(e.name == stem for e in library.entries()):
        raise UsageError(f"A model called {stem} is already in the library.")
    library.models_dir.mkdir(parents=True, exist_ok=True)
    target = library.models_dir / f"{stem}.gguf"
    part = target.with_name(target.name + ".part")
    notice = on_notice or (lambda text: None)
    cancel = cancel or threading.Event()
    own_client = client is None
    client = client or network_guard.client(timeout=httpx.Timeout(30.0, read=60.0),
                                            follow_redirects=True, max_redirects=10,
                                            headers={"User-Agent": USER_AGENT})
    with _Lock(part):
        try:
            expected = (Verification(sha256, "given") if sha256 is not None
                        else _expected_from_hub(url, stem, client, notice))
            _fetch(client, url, part, on_progress, notice, cancel, clock)
        finally:
            if own_client:
                client.close()
        try:
            if expected is not None:
                got = file_sha256(part)
                if got != expected.sha256:
                    part.unlink(missing_ok=True)
                    origin = ("from Hugging Face" if expected.source == "huggingface"
                              else "as given")
                    raise DownloadFailed(f"The download of {stem} does not match its sha256 "
                                         f"{origin} (expected {expected.sha256}, got {got}); "
                                         "the file was deleted.")
            info = read_gguf(part)  # the whole header, and the size its tensors need
        except ModelInvalid as exc:
            part.unlink(missing_ok=True)
            raise DownloadFailed(f"The download of {stem} is not a usable model ({exc}); the "
                                 "file was deleted.") from None
        twin = library.holding(info)  # as an import of the same file would be refused
        if twin is not None:
            part.unlink(missing_ok=True)
            raise UsageError(f"The download of {stem} is already in the library, as "
                             f"{twin.name}: {twin.path} has the same content (size and "
                             "sha256), so the downloaded file was deleted.")
        os.replace(part, target)
    if expected is not None:
        if expected.source == "huggingface":
            notice(f"{stem} was {expected}.")
        if on_verified is not None:
            on_verified(expected)
    return ModelEntry(stem, target, "library", read_gguf(target))


def _expected_from_hub(url: str, stem: str, client: httpx.Client,
                       notice: Callable[[str], None]) -> Verification | None:
    """The hash Hugging Face lists for ``url`` (None, with a notice, when there is none)."""
    file = hub_file(url)
    if file is None:
        return None
    try:
        sha256 = hub_sha256(file, client)
    except DownloadFailed as exc:
        notice(f"{stem} could not be verified against Hugging Face ({exc}); it is downloaded "
               "without a sha256 check.")
        return None
    if sha256 is None:
        notice(f"Hugging Face lists no sha256 for {file.path} (it is kept in git, not LFS); "
               f"{stem} is downloaded without a sha256 check.")
        return None
    return Verification(sha256, "huggingface")


def _fetch(client: httpx.Client, url: str, part: Path, on_progress, notice, cancel,
           clock) -> None:
    have = part.stat().st_size if part.exists() else 0
    # the bytes as stored (no compression on the wire, so a Range is a range of the file)
    headers = {"Accept-Encoding": "identity", **({"Range": f"bytes={have}-"} if have else {})}
    answered = False
    try:
        with client.stream("GET", url, headers=headers) as response:
            answered = True
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
                                     f"{_stem(part)}: it needs {total - have:,} more bytes, "
                                     f"{free:,} are free.")
            _write(response, part, have, total, on_progress, cancel, clock)
    except httpx.TooManyRedirects:
        raise DownloadFailed(f"{url} redirects in a loop (more than 10 redirects); nothing "
                             "was downloaded.") from None
    except httpx.TransportError as exc:
        raise _transport_failed(exc, url, part, answered) from None


def _transport_failed(exc: httpx.TransportError, url: str, part: Path,
                      answered: bool) -> DownloadFailed:
    """The connection failed: before the server answered, in the words a provider's failure
    gets (``connect_failure``: a name that could not be looked up, refused, …), else as the
    download breaking off; a resume is offered only when bytes were kept."""
    if answered:
        said = f"The download of {_stem(part)} broke off{_how_it_broke_off(exc)}"
    else:
        said = connect_failure(exc, urlparse(url).hostname or url, url, "the URL")
    kept = part.stat().st_size if part.exists() else 0
    if not kept:
        return DownloadFailed(f"{said} Nothing was downloaded.")
    return DownloadFailed(f"{said} {kept:,} bytes are kept in {part.name}", resumable=True)


def _how_it_broke_off(exc: httpx.TransportError) -> str:
    """The end of "The download of X broke off…" in plain words: who closed the connection and
    after how many of the bytes it announced (httpx says "peer closed connection without
    sending complete message body: received N bytes, expected M"), else the library's words."""
    kind = how_it_broke(exc)
    counted = re.search(r"received (\d+) bytes, expected (\d+)", str(exc))
    after = f" after {int(counted[1]):,} of the {int(counted[2]):,} bytes it announced" \
        if counted else ""
    if kind == "closed":
        return f": the server closed the connection{after}."
    if kind == "reset":
        return f": the connection was reset{after}."
    return with_detail("", os_words(exc))


def _write(response: httpx.Response, part: Path, have: int, total: int | None, on_progress,
           cancel: threading.Event, clock) -> None:
    try:
        _write_part(response, part, have, total, on_progress, cancel, clock)
    except OSError as exc:  # the disk, not the network: say which and keep what was written
        raise _write_failed(exc, part) from None


def _stem(part: Path) -> str:
    """The model name a ``<name>.gguf.part`` is for."""
    return part.name.removesuffix(".gguf.part")


def _write_failed(exc: OSError, part: Path) -> DownloadFailed:
    stem = _stem(part)
    if exc.errno in _DISK_FULL:
        kept = part.stat().st_size if part.exists() else 0
        return DownloadFailed(f"The disk holding {part.parent} is full: {stem} stopped after "
                              f"{kept:,} bytes (kept in {part.name})", resumable=True,
                              first="free some space")
    return DownloadFailed(f"{stem} could not be written to {part.parent} "
                          f"({exc.strerror or exc}); nothing was listed.")


def _write_part(response: httpx.Response, part: Path, have: int, total: int | None,
                on_progress, cancel: threading.Event, clock) -> None:
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
        raise DownloadFailed(f"The server announced {total:,} bytes but sent {done:,}",
                             resumable=True)


class _Lock:
    """One download of a file at a time, also across processes: a lock file naming the pid
    (a lock left by a process that died is taken over)."""

    def __init__(self, part: Path):
        self.path = part.with_name(part.name + ".lock")

    def __enter__(self) -> Self:
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
            except OSError as exc:  # a full or read-only disk
                raise _write_failed(exc, self.path.with_suffix("")) from None
            try:
                with os.fdopen(fd, "w") as handle:
                    handle.write(str(os.getpid()))
            except OSError as exc:
                self.path.unlink(missing_ok=True)
                raise _write_failed(exc, self.path.with_suffix("")) from None
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
