"""Who writes a row that is still being written: a process's identity (pid and start time, so
a reused pid is not mistaken for the writer), and whether that writer still runs. A reply left
``streaming`` by a writer that is gone was interrupted (``Store.mark_orphaned_streaming``); the
outbox claims its sends the same way.

Within this process a row's writer is known exactly: a turn says which rows it is writing
(``writing``), so a row this process left ``streaming`` after its turn ended (its final write
failed: a full disk) counts as not being written, and can be deleted or marked interrupted
without a restart."""
from __future__ import annotations

import functools
import os
import threading
from contextlib import contextmanager
from typing import Iterator

import psutil

_writing_here: set[str] = set()  # ids of the rows this process's turns are writing now
_writing_lock = threading.Lock()


def _process_identity(pid: int) -> str | None:
    try:
        return f"{pid}:{int(psutil.Process(pid).create_time() * 1000)}"
    except (psutil.Error, OSError):
        return None


def this_writer() -> str:
    return _this_process(os.getpid())


@functools.lru_cache(maxsize=4)
def _this_process(pid: int) -> str:  # (by pid: a forked child is another writer)
    return _process_identity(pid) or f"{pid}:0"


def begin_writing(message_id: str) -> None:
    """This process writes the row ``message_id`` from now on (until ``end_writing``)."""
    with _writing_lock:
        _writing_here.add(message_id)


def end_writing(message_id: str) -> None:
    with _writing_lock:
        _writing_here.discard(message_id)


@contextmanager
def writing(message_id: str) -> Iterator[None]:
    """This process writes the row ``message_id`` for as long as the block runs."""
    begin_writing(message_id)
    try:
        yield
    finally:
        end_writing(message_id)


def writer_alive(writer: str | None, message_id: str | None = None) -> bool:
    """Is the process that wrote ``pid:start-ms`` still running? The start time guards against
    pid reuse; a second of slack absorbs clock steps that shift psutil's boot time. Given the
    row's id, a row whose writer is this process is alive only while a turn here writes it."""
    if not writer:
        return False
    if message_id is not None and writer == this_writer():
        with _writing_lock:
            return message_id in _writing_here
    try:
        pid_text, start_text = writer.split(":", 1)
        pid, start = int(pid_text), int(start_text)
    except ValueError:
        return False
    current = _process_identity(pid)
    if current is None:
        return False
    return abs(int(current.split(":", 1)[1]) - start) <= 1000

