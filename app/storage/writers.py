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


def _start_ticks(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (Linux's /proc/PID/stat, field
    22): exact and steady. psutil's create_time adds the boot time, which /proc/stat gives as
    "now minus uptime", so it drifted by more than a second on a busy VM and a live writer
    was taken for dead. None where there is no /proc, or no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            data = stat.read()
        return int(data[data.rindex(b")") + 2:].split()[19])  # (the name may hold ") ")
    except (OSError, ValueError, IndexError):
        return None


def _process_identity(pid: int) -> str | None:
    """``pid:tTICKS`` (the start in ticks since boot) where /proc has it, else
    ``pid:MILLISECONDS`` (psutil's start time)."""
    ticks = _start_ticks(pid)
    if ticks is not None:
        return f"{pid}:t{ticks}"
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
    """Is the process that wrote ``pid:tTICKS`` (or ``pid:start-ms``) still running? The start
    time guards against pid reuse: ticks must match exactly; milliseconds (psutil's, where
    there is no /proc, and rows written before ticks were used) within a second, which absorbs
    clock steps that shift psutil's boot time. Given the row's id, a row whose writer is this
    process is alive only while a turn here writes it."""
    if not writer:
        return False
    if message_id is not None and writer == this_writer():
        with _writing_lock:
            return message_id in _writing_here
    try:
        pid_text, start_text = writer.split(":", 1)
        pid = int(pid_text)
        if start_text.startswith("t"):
            return _start_ticks(pid) == int(start_text[1:])
        start = int(start_text)
    except ValueError:
        return False
    try:
        current = int(psutil.Process(pid).create_time() * 1000)
    except (psutil.Error, OSError):
        return False
    return abs(current - start) <= 1000

