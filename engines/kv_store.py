"""Saved KV states: a long conversation's follow-up after a restart skips re-reading its history.

After a reply, the local engine saves the KV cache of the prompt's reusable tokens (the whole
batches of a reproducible evaluation, see ``engines/llama_local.py``) to a file here; a later
process whose prompt starts with those tokens loads the file instead of evaluating them again.

* **Keyed, then checked.** A file belongs to an *identity*: a JSON dict naming everything the
  KV values depend on besides the tokens (the model file's content digest, its chat template,
  the load settings that change the numbers, the LoRA adapters and their scales, the llama.cpp
  version and the CPU features it runs with). The file name carries a digest of the identity and
  of the tokens, but the file itself holds the whole identity and token list: a file is used only
  when its identity equals the engine's exactly and its tokens share a prefix with the prompt,
  never on the strength of its name.
* **Whole or not at all.** Files are written with ``write_atomic`` (temporary file + rename, mode
  0600), so processes sharing the folder never see half a file; a reader holds the inode it
  opened even if another process replaces or evicts the file meanwhile. A blake2b digest over
  the tokens and the state catches a damaged or truncated file, which is then deleted and
  ignored: it is only a cache.
* **Bounded.** The folder holds at most ``max_bytes``; the least recently used files (mtime,
  touched on every use, as atime is often off) go first. A new state makes older states of the
  same identity whose tokens are a prefix of its own redundant: they are deleted.

File layout: ``MAGIC``, a little-endian u32 header length, a JSON header (identity, token count,
state size, digest), the tokens as little-endian int32, then llama.cpp's sequence state bytes.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import sys
import time
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from app.config.atomic_file import write_atomic
from app.domain.errors import FileWriteFailed

log = logging.getLogger(__name__)

MAGIC = b"OUTPOST-KV\x00\x01"
SUFFIX = ".kv"
DEFAULT_MAX_BYTES = 2 * 1024 ** 3
# a temporary file older than this was left by a killed writer
STALE_TEMPORARY_S = 3600.0
_HEADER_LIMIT = 1 << 20  # a header longer than this is garbage, not a header


def digest(data: bytes | str, size: int = 12) -> str:
    return hashlib.blake2b(data.encode() if isinstance(data, str) else data,
                           digest_size=size).hexdigest()


def identity_key(identity: dict[str, Any]) -> str:
    return digest(json.dumps(identity, sort_keys=True, separators=(",", ":")))


def file_fingerprint(path: str | Path, sample: int = 4 * 1024 * 1024) -> str:
    """A model or adapter file's content identity: its size and a digest of its first and last
    ``sample`` bytes (the GGUF header and metadata, the first and last tensors' data). Cheap
    enough to take at every load, and unlike path + mtime it survives a copy or a move."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        h.update(f.read(sample))
        if size > sample:
            f.seek(max(sample, size - sample))
            h.update(f.read(sample))
    return f"{size}:{h.hexdigest()}"


def _tokens_bytes(tokens: Sequence[int]) -> bytes:
    packed = array("i", tokens)
    if packed.itemsize != 4:  # pragma: no cover - every platform llama.cpp runs on
        raise RuntimeError("int is not 32 bits here")
    if sys.byteorder != "little":  # pragma: no cover
        packed.byteswap()
    return packed.tobytes()


def _tokens_from(data: bytes) -> list[int]:
    packed = array("i")
    packed.frombytes(data)
    if sys.byteorder != "little":  # pragma: no cover
        packed.byteswap()
    return packed.tolist()


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


@dataclass(frozen=True)
class SavedState:
    """One file's header, read without its state: enough to rank it against a prompt."""

    path: Path
    tokens: tuple[int, ...]
    state_offset: int
    state_bytes: int
    checksum: str
    # where each batch its tokens were evaluated in ends, after a 0 (the local engine's
    # reproducible evaluation, engines.llama_kv_resume.batch_starts); () when not recorded
    bounds: tuple[int, ...] = ()


# _parse's answer for a whole file of another identity
_NOT_OURS = SavedState(Path(), (), 0, 0, "")


class KVStore:
    """A folder of saved KV states (see the module doc). Every method is safe against other
    processes using the same folder and never raises for a damaged file or a full disk: a
    cache that fails is a cache miss."""

    def __init__(self, folder: str | Path, max_bytes: int = DEFAULT_MAX_BYTES):
        self.folder = Path(folder)
        self.max_bytes = max_bytes
        # headers already read: path -> (mtime_ns, size, header); re-read when either changes
        self._headers: dict[Path, tuple[int, int, SavedState]] = {}

    # -- finding -------------------------------------------------------------------------------
    def candidates(self, identity: dict[str, Any], tokens: Sequence[int],
                   longer_than: int = 0) -> list[tuple[int, SavedState]]:
        """Saved states of ``identity`` sharing more than ``longer_than`` leading tokens with
        ``tokens``, longest shared prefix first, as (shared tokens, state)."""
        found = []
        for path in self._files(identity):
            saved = self._header(path, identity)
            if saved is None:
                continue
            shared = common_prefix(saved.tokens, tokens)
            if shared > longer_than:
                found.append((shared, saved))
        found.sort(key=lambda pair: -pair[0])
        return found

    def read_state(self, saved: SavedState) -> bytearray | None:
        """The state bytes of ``saved`` (a bytearray: llama.cpp can read it without a copy),
        checked against its digest; None (and the file deleted) when it is damaged. A use
        counts for eviction: the file is touched."""
        state = bytearray(saved.state_bytes)
        try:
            with open(saved.path, "rb") as f:
                f.seek(saved.state_offset)
                got = f.readinto(state)
                whole = got == saved.state_bytes and not f.read(1)
        except OSError:
            return None  # evicted or replaced by another process meanwhile
        check = hashlib.blake2b(_tokens_bytes(saved.tokens), digest_size=16)
        check.update(state)
        if not whole or check.hexdigest() != saved.checksum:
            log.warning("deleting the damaged KV state %s", saved.path.name)
            self.discard(saved.path)
            return None
        self._touch(saved.path)
        return state

    def has(self, identity: dict[str, Any], tokens: Sequence[int],
            bounds: Sequence[int] = ()) -> bool:
        """Whether exactly these tokens (evaluated in ``bounds``) are saved for ``identity``
        (and touch the file)."""
        path = self._path(identity, tokens)
        saved = self._header(path, identity)
        if saved is None or list(saved.tokens) != list(tokens) or \
                list(saved.bounds) != list(bounds):
            return False
        self._touch(path)
        return True

    # -- saving --------------------------------------------------------------------------------
    def save(self, identity: dict[str, Any], tokens: Sequence[int],
             state: bytes | memoryview, since: float | None = None,
             bounds: Sequence[int] = ()) -> Path | None:
        """Write ``state`` (the KV cache of exactly ``tokens``), delete the states it makes
        redundant, then evict down to the cap. None when it was not written (bigger than the
        whole cap, or the disk refused, or messages were deleted (``forget_all``) after
        ``since``, the wall time its reply began: the state may hold their words).
        ``bounds``: the batches the tokens were evaluated in (``SavedState.bounds``)."""
        token_bytes = _tokens_bytes(tokens)
        check = hashlib.blake2b(token_bytes, digest_size=16)
        check.update(state)
        header = json.dumps({"identity": identity, "tokens": len(tokens),
                             "state_bytes": len(state), "digest": check.hexdigest(),
                             "bounds": [int(b) for b in bounds]},
                            sort_keys=True).encode()
        payload = b"".join((MAGIC, struct.pack("<I", len(header)), header, token_bytes, state))
        if len(payload) > self.max_bytes:
            return None
        path = self._path(identity, tokens)
        if since is not None and forgotten_at(self.folder) >= since:
            return None
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_atomic(path, payload)
        except (FileWriteFailed, OSError) as exc:
            log.warning("the KV state was not saved: %s", exc)
            return None
        if since is not None and forgotten_at(self.folder) >= since:
            self.discard(path)  # deleted while it was written: gone with the rest
            return None
        for other in self._files(identity):
            if other == path:
                continue
            saved = self._header(other, identity)
            if saved is not None and len(saved.tokens) < len(tokens) and \
                    common_prefix(saved.tokens, tokens) == len(saved.tokens):
                self.discard(other)  # the new state holds all of it
        self.evict(keep=path)
        return path

    def evict(self, keep: Path | None = None) -> None:
        """Delete the least recently used states until the folder fits ``max_bytes``, and
        temporary files a killed writer left behind."""
        files = []
        now = time.time()
        try:
            entries = list(os.scandir(self.folder))
        except OSError:
            return
        for entry in entries:
            try:
                stat = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if entry.name.endswith(".tmp") and now - stat.st_mtime > STALE_TEMPORARY_S:
                Path(entry.path).unlink(missing_ok=True)
            elif entry.name.endswith(SUFFIX):
                files.append((stat.st_mtime_ns, stat.st_size, Path(entry.path)))
        total = sum(size for _, size, _ in files)
        for _, size, path in sorted(files, key=lambda f: f[0]):
            if total <= self.max_bytes:
                break
            if path == keep:
                continue
            self.discard(path)
            total -= size

    def discard(self, path: Path) -> None:
        self._headers.pop(path, None)
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass

    # -- files ---------------------------------------------------------------------------------
    def _path(self, identity: dict[str, Any], tokens: Sequence[int]) -> Path:
        return self.folder / f"{identity_key(identity)}-{digest(_tokens_bytes(tokens))}{SUFFIX}"

    def _files(self, identity: dict[str, Any]) -> list[Path]:
        try:
            return sorted(self.folder.glob(f"{identity_key(identity)}-*{SUFFIX}"))
        except OSError:
            return []

    def _touch(self, path: Path) -> None:
        try:
            os.utime(path)
            stat = path.stat()
        except OSError:
            return
        cached = self._headers.get(path)
        if cached is not None:
            self._headers[path] = (stat.st_mtime_ns, stat.st_size, cached[2])

    def _header(self, path: Path, identity: dict[str, Any]) -> SavedState | None:
        """The header of ``path`` if it is a whole state file of exactly ``identity``; a file
        that is not (damaged, truncated, someone else's format) is deleted."""
        try:
            with open(path, "rb") as f:
                stat = os.fstat(f.fileno())
                cached = self._headers.get(path)
                if cached is not None and cached[:2] == (stat.st_mtime_ns, stat.st_size):
                    return cached[2]
                saved = self._parse(path, f, stat.st_size, identity)
        except FileNotFoundError:
            self._headers.pop(path, None)
            return None
        except OSError:
            return None
        if saved is None:
            log.warning("deleting the damaged KV state %s", path.name)
            self.discard(path)
            return None
        if saved is _NOT_OURS:
            return None
        self._headers[path] = (stat.st_mtime_ns, stat.st_size, saved)
        return saved

    @staticmethod
    def _parse(path: Path, f, size: int, identity: dict[str, Any]) -> SavedState | None:
        """The header, None when the file is damaged, ``_NOT_OURS`` when it is whole but of
        another identity."""
        start = f.read(len(MAGIC) + 4)
        if len(start) != len(MAGIC) + 4 or not start.startswith(MAGIC):
            return None
        (header_len,) = struct.unpack("<I", start[len(MAGIC):])
        if header_len > _HEADER_LIMIT:
            return None
        try:
            header = json.loads(f.read(header_len))
            count, state_bytes = int(header["tokens"]), int(header["state_bytes"])
            checksum = str(header["digest"])
            bounds = tuple(int(b) for b in header.get("bounds", ()))
            # compared as JSON sees it (tuples are lists there)
            same = header["identity"] == json.loads(json.dumps(identity))
        except (ValueError, KeyError, TypeError):
            return None
        offset = len(start) + header_len + 4 * count
        if count < 1 or state_bytes < 1 or size != offset + state_bytes:
            return None  # truncated, or not what its header says
        if not same:
            # the name's digest matched but the identity does not (a digest collision, or a
            # hand-copied file): never use it, and leave it for its own identity's owner
            return _NOT_OURS
        token_data = f.read(4 * count)
        if len(token_data) != 4 * count:
            return None
        return SavedState(path, tuple(_tokens_from(token_data)), offset, state_bytes, checksum,
                          bounds)


__all__ = ["KVStore", "SavedState", "DEFAULT_MAX_BYTES", "identity_key", "file_fingerprint",
           "common_prefix"]


FORGOTTEN = ".forgotten"  # when messages were last deleted (``forget_all``), for ``save``


def forgotten_at(folder: str | Path) -> float:
    """The wall time of the last ``forget_all`` in ``folder`` (0: never)."""
    try:
        return float((Path(folder) / FORGOTTEN).read_text(encoding="ascii"))
    except (OSError, ValueError):
        return 0.0


def forget_all(folder: str | Path) -> int:
    """Delete every saved state in ``folder`` (how many): messages were deleted, and a state
    holds their tokens, from which their words can be read back. The states are a cache (the
    next reply of a long conversation reads its history again, once), so all of them go: which
    conversation a state came from is not recorded, and a state shared by several (a common
    system prompt) holds words of each. When it happened is noted first, so a state a reply
    that began before is still saving (another thread, another process) is not kept."""
    folder = Path(folder)
    try:  # (the folder too, if no state was ever saved: one may be on its way)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(folder / FORGOTTEN, repr(time.time()))
    except (FileWriteFailed, OSError) as exc:
        log.warning("could not note that messages were deleted: %s", exc)
    gone = 0
    try:
        files = list(Path(folder).glob(f"*{SUFFIX}"))
    except OSError:
        return 0
    for path in files:
        try:
            path.unlink()
            gone += 1
        except FileNotFoundError:  # another process got there first
            continue
    return gone

