"""Benchmark: what erasing a deleted conversation's words from the file costs, side by side in
one run.

    python -m bench.erase [--messages 100000] [--db PATH] [--trials 3]

Builds (once; ``--db`` keeps it for later runs) the database ``bench.quick_check`` builds (a
short question and a ~1.2 kB answer in turn, 50 per conversation, with the FTS5 index), then,
on a fresh copy each trial, times deleting one conversation:

* the rows alone (what a delete cost before: the words stayed in the index and the log);
* the rows, then ``Store.erase_deleted``: the search index merged into one segment and the
  write-ahead log checkpointed to 0 bytes (``app.storage.erasure``).

Prints the medians and their ratio; nothing here runs in the tests.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from app.storage.store import Store
from bench.quick_check import build


def fresh_copy(path: Path, folder: Path) -> Path:
    copy = folder / "copy.db"
    for suffix in ("", "-wal", "-shm", "-checked"):
        copy.with_name(copy.name + suffix).unlink(missing_ok=True)
    shutil.copyfile(path, copy)
    return copy


def delete(path: Path, erase: bool) -> float:
    store = Store(path, daily_backup=False)
    if not erase:
        store.run_erasure = lambda erase_deleted: None
    try:
        started = time.perf_counter()
        store.delete_conversation("c5")
        return time.perf_counter() - started
    finally:
        store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--db", metavar="PATH")
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp())
    path = Path(args.db) if args.db else folder / "outpost.db"
    if not path.exists():
        started = time.perf_counter()
        build(path, args.messages)
        print(f"built {args.messages:,} messages in {time.perf_counter() - started:.1f} s")
    Store(path, daily_backup=False).close()  # its log applied: each copy starts whole
    print(f"{path}: {path.stat().st_size / 1e6:.1f} MB; load {os.getloadavg()[0]:.2f}")
    times: dict[str, list[float]] = {"rows only": [], "rows, then erased": []}
    for _ in range(args.trials):
        times["rows only"].append(delete(fresh_copy(path, folder), erase=False))
        times["rows, then erased"].append(delete(fresh_copy(path, folder), erase=True))
    base = statistics.median(times["rows only"])
    for name, spent in times.items():
        median = statistics.median(spent)
        print(f"{name:18} median {median * 1000:8.1f} ms  ({median / base:6.1f}x rows only)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
