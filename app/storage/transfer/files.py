"""Writing an export file: whole or not at all (a temporary file beside it, renamed over it),
readable by its owner only, as the database is."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from app.domain.errors import UsageError


def write_whole(target: Path, data: bytes) -> None:
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part",
                                             dir=target.parent if str(target.parent) else ".")
    except OSError as exc:
        raise UsageError(f"{target} could not be written: {exc.strerror or exc}.") from None
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise UsageError(f"{target} could not be written: {exc.strerror or exc}.") from None
