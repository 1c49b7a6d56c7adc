"""Writing an export file: whole or not at all (a temporary file beside it, renamed over it),
readable by its owner only, as the database is. ``write_pieces`` writes the pieces as they
come (an export, a conversation at a time), so the file is never held whole in memory."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable

from app.domain.errors import UsageError


def write_whole(target: Path, data: bytes) -> None:
    write_pieces(target, (data,))


def write_pieces(target: Path, pieces: Iterable[bytes]) -> int:
    """Write each piece as it comes to a temporary file beside ``target``, then rename it over
    ``target``; returns the bytes written. A failure (of the disk, or of whatever makes the
    pieces) leaves no temporary file and ``target`` as it was."""
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part",
                                             dir=target.parent if str(target.parent) else ".")
    except OSError as exc:
        raise UsageError(f"{target} could not be written: {exc.strerror or exc}.") from None
    size = 0
    try:
        with os.fdopen(handle, "wb") as out:
            for piece in pieces:
                out.write(piece)
                size += len(piece)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise UsageError(f"{target} could not be written: {exc.strerror or exc}.") from None
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return size
