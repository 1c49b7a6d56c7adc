"""Who writes a row that is still being written: a process's identity (pid and start time, so
a reused pid is not mistaken for the writer), and whether that writer still runs. A reply left
``streaming`` by a writer that is gone was interrupted (``Store.mark_orphaned_streaming``); the
outbox claims its sends the same way."""
from __future__ import annotations

import os

import psutil


def _process_identity(pid: int) -> str | None:
    try:
        return f"{pid}:{int(psutil.Process(pid).create_time() * 1000)}"
    except (psutil.Error, OSError):
        return None


def this_writer() -> str:
    return _process_identity(os.getpid()) or f"{os.getpid()}:0"


def writer_alive(writer: str | None) -> bool:
    """Is the process that wrote ``pid:start-ms`` still running? The start time guards against
    pid reuse; a second of slack absorbs clock steps that shift psutil's boot time."""
    if not writer:
        return False
    try:
        pid_text, start_text = writer.split(":", 1)
        pid, start = int(pid_text), int(start_text)
    except ValueError:
        return False
    current = _process_identity(pid)
    if current is None:
        return False
    return abs(int(current.split(":", 1)[1]) - start) <= 1000

