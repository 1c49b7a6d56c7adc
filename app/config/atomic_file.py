"""Writing a file Outpost owns: whole or not at all.

Every file Outpost writes (settings, providers, keys, policy, presets, quotas, load settings,
queues) goes through ``write_atomic``: the data goes to a temporary file in the same folder,
is flushed to disk (fsync), and is renamed over the target, so a kill, a crash or a full disk
leaves either the old file or the new one, never half of one, and no temporary file behind.
The file is created with ``mode`` (owner-only by default) from its first byte.
"""
from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from app.domain.errors import FileWriteFailed


def write_atomic(path: Path | str, data: bytes | str, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` (str is written as UTF-8). Raises ``FileWriteFailed``,
    one sentence, when it cannot; the previous file is then untouched."""
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    folder = path.parent if str(path.parent) else Path(".")
    temporary: str | None = None
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
        os.fchmod(handle, mode)
        with os.fdopen(handle, "wb") as out:
            out.write(payload)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
        temporary = None
        _sync_folder(folder)
    except OSError as exc:
        raise FileWriteFailed(_sentence(path, exc)) from None
    finally:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _sentence(path: Path, exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        why = "the disk is full"
    elif exc.errno == errno.EROFS:
        why = "the disk is read-only"
    elif exc.errno in (errno.EACCES, errno.EPERM):
        why = "permission denied"
    else:
        why = (exc.strerror or str(exc)).lower()
    return f"{path} could not be written: {why}; the previous version is kept."
