"""How many CPU threads the local model should use now, and how llama.cpp's threads wait.

llama.cpp splits every operation of a token over ``n_threads`` threads that meet at a barrier
after each one (hundreds per token). That pays on an idle machine and collapses on a busy one:
a barrier waits for its slowest thread, and a thread that lost its core to another process makes
the others wait a whole scheduler slice. Two rules follow.

* **Threads = the cores free now.** ``choose_threads`` takes the usable cores (affinity mask,
  cgroup quota, physical cores), subtracts what *other* processes used lately (``/proc/stat``
  busy time minus this process's own CPU time over the same window) and rounds. One thread needs
  no barrier at all, so a busy machine or a second Outpost process degrades to one thread per
  reply instead of to spinning. ``CpuBudget`` re-reads the machine about every
  ``RECHECK_S`` during a reply (the engine calls ``threads_now`` before each token's decode;
  ``llama_set_n_threads`` takes effect on the next one) and at the start of each reply.
* **Waiting threads sleep soon.** The llama-cpp-python wheel is built with OpenMP (GNU libgomp,
  ``OPENMP = 1`` in ``llama_print_system_info()``). libgomp's idle and barrier threads spin
  ``GOMP_SPINCOUNT`` times (300,000 by default, ~10 ms) before sleeping: after every token, and
  whenever a team-mate was preempted, a whole core burns on nothing. ``prepare_openmp`` lowers
  the count to ``SPINCOUNT`` (~0.3 ms: barriers between a token's operations are microseconds
  apart, so they still meet spinning) unless the user set ``OMP_WAIT_POLICY`` or
  ``GOMP_SPINCOUNT`` themselves. libgomp reads the environment once, when it is loaded, so this
  must run before ``llama_cpp`` is first imported; ``engines.llama_local`` calls it on import.

Readings are injectable (``CpuReading``), so the choice is tested without a busy machine.
"""
from __future__ import annotations

import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

SPINCOUNT = "10000"
# the user's own OpenMP wait settings win over ours
_USER_WAIT_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
RECHECK_S = 0.25  # how often a reply re-reads the machine (a /proc/stat read: ~30 µs)
STALE_S = 5.0  # an older window says little about now: use the run queue instead
_PROC_STAT = Path("/proc/stat")
_LOADAVG = Path("/proc/loadavg")
_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def prepare_openmp() -> bool:
    """Make libgomp's waiting threads sleep after a short spin. Returns False (and logs why)
    when it is too late (libgomp already loaded with ``llama_cpp``) or the user chose a policy."""
    if any(os.environ.get(name) for name in _USER_WAIT_VARS):
        return False
    if "llama_cpp" in sys.modules:
        log.warning("llama_cpp was imported before engines.cpu_budget.prepare_openmp(); its "
                    "OpenMP threads keep spinning ~10 ms after each token")
        return False
    os.environ["GOMP_SPINCOUNT"] = SPINCOUNT
    return True


def physical_cores() -> int:
    """Physical cores of the machine (hyperthreads share a core's arithmetic units)."""
    try:
        import psutil  # deferred: only to count physical cores once

        count = psutil.cpu_count(logical=False)
    except Exception:  # psutil missing or unsupported platform
        count = None
    return max(1, count or os.cpu_count() or 1)


def allowed_cpus() -> tuple[int, ...]:
    """The CPU ids this process may run on (its affinity mask; all CPUs where unknown)."""
    try:
        return tuple(sorted(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS, Windows
        return tuple(range(os.cpu_count() or 1))


def cgroup_cpu_limit(path: Path = _CPU_MAX) -> float | None:
    """The container's CPU quota in cores (cgroup v2 ``cpu.max``), None when unlimited."""
    try:
        quota, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return max(float(quota) / float(period), 0.01)
    except (ValueError, ZeroDivisionError):
        return None


@dataclass(frozen=True)
class CpuReading:
    """One look at the machine: cumulative busy and total seconds of the allowed CPUs
    (``/proc/stat``), this process's own CPU seconds, the wall clock, and the run queue."""

    busy_s: float
    total_s: float
    own_s: float
    wall_s: float
    runnable: int | None = None  # /proc/loadavg's running tasks, this thread included


def others_busy(before: CpuReading, after: CpuReading) -> float:
    """Cores that other processes kept busy between two readings."""
    wall = after.wall_s - before.wall_s
    if wall <= 0:
        return 0.0
    busy = (after.busy_s - before.busy_s) - (after.own_s - before.own_s)
    return max(0.0, busy / wall)


def choose_threads(usable: float, busy_elsewhere: float, limit: int) -> int:
    """Threads for the next tokens: the free cores, rounded, between 1 and ``limit``.

    ``usable``: cores this process may use (affinity, quota); ``busy_elsewhere``: cores other
    processes keep busy; ``limit``: physical cores (or the user's thread setting)."""
    free = max(0.0, usable - busy_elsewhere)
    return max(1, min(limit, math.floor(free + 0.5), math.floor(usable + 0.5) or 1))


def read_machine(cpus: tuple[int, ...] | None = None) -> CpuReading:
    """A ``CpuReading`` of this machine now (Linux; elsewhere nothing is ever busy)."""
    cpus = allowed_cpus() if cpus is None else cpus
    wall = time.monotonic()
    own = time.process_time()
    busy = total = 0.0
    try:
        lines = _PROC_STAT.read_text().splitlines()
    except OSError:
        lines = []
    wanted = {f"cpu{i}" for i in cpus}
    for line in lines:
        name, _, rest = line.partition(" ")
        if name not in wanted:
            continue
        ticks = [int(v) for v in rest.split()]
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
        steal = ticks[7] if len(ticks) > 7 else 0
        all_ = sum(ticks[:8])
        total += all_
        busy += all_ - idle - steal
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    runnable = None
    try:
        runnable = int(_LOADAVG.read_text().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        pass
    if not lines:  # no /proc: treat the machine as ours alone
        return CpuReading(busy_s=own, total_s=wall * len(cpus), own_s=own, wall_s=wall)
    return CpuReading(busy_s=busy / hz, total_s=total / hz, own_s=own, wall_s=wall,
                      runnable=runnable)


class CpuBudget:
    """The thread count for the local model, re-read from the machine as it goes.

    ``threads_now()`` is cheap and may be called per token: it re-reads the machine only every
    ``RECHECK_S``. The first call after a pause longer than ``STALE_S`` cannot use a window (a
    minute-long average says nothing about now), so it counts the tasks running at this instant
    instead (``/proc/loadavg``), this thread aside; the next re-read corrects it.
    """

    def __init__(self, limit: int, *, read: Callable[[], CpuReading] | None = None,
                 clock: Callable[[], float] = time.monotonic, usable: float | None = None,
                 recheck_s: float = RECHECK_S, stale_s: float = STALE_S):
        """``read`` and ``clock`` are injectable (tests); ``clock`` must be the clock of the
        readings' ``wall_s``."""
        cpus = allowed_cpus()
        self._read = read or (lambda: read_machine(cpus))
        self._clock = clock
        quota = cgroup_cpu_limit()
        self.usable = usable if usable is not None else \
            min(float(len(cpus)), quota if quota is not None else float("inf"))
        self.limit = max(1, min(limit, math.floor(self.usable + 0.5) or 1))
        self.recheck_s = recheck_s
        self.stale_s = stale_s
        self._last: CpuReading | None = None
        self.threads = self.limit
        self.busy_elsewhere = 0.0

    def threads_now(self) -> int:
        last = self._last
        if last is not None and self._clock() - last.wall_s < self.recheck_s:
            return self.threads
        reading = self._read()
        if last is not None and reading.wall_s - last.wall_s <= self.stale_s:
            self.busy_elsewhere = others_busy(last, reading)
        elif reading.runnable is not None:
            self.busy_elsewhere = float(max(0, reading.runnable - 1))
        else:
            self.busy_elsewhere = 0.0
        self._last = reading
        self.threads = choose_threads(self.usable, self.busy_elsewhere, self.limit)
        return self.threads


__all__ = ["CpuBudget", "CpuReading", "choose_threads", "others_busy", "prepare_openmp",
           "physical_cores", "allowed_cpus", "cgroup_cpu_limit", "read_machine", "SPINCOUNT"]
