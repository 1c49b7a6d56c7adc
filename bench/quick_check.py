"""Benchmark: what checking the database at start costs, side by side in one run.

    python -m bench.quick_check [--messages 100000] [--db PATH] [--trials 5]

Builds (once; ``--db`` keeps it for later runs) a real Outpost database of ``--messages``
messages (a short question and a ~1.2 kB answer in turn, 50 per conversation, with the FTS5
index the store keeps), then times, alternating, with the file in the page cache:

* a sealed start (the files as the last Outpost left them: no check), the common case;
* an unsealed start (a crash, a copy, a file changed by another program): ``quick_check``;
* the day's first start: the rolling backup, checked before it counts.

Prints the medians and each one's ratio to the sealed start; nothing here runs in the tests.
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

from app.storage import integrity
from app.storage.backups import Backups
from app.storage.store import Store

WORDS = tuple(f"w{i}" for i in range(3000)) + ("the", "a", "to", "and", "of", "is", "in")


def build(path: Path, messages: int) -> None:
    store = Store(path)
    rng = random.Random(7)
    per = 50
    with store.transaction() as db:
        for c in range(max(1, messages // per)):
            cid = f"c{c}"
            db.execute("INSERT INTO conversations (id, title, system_prompt, created_at, "
                       "updated_at, profile) VALUES (?, ?, '', ?, ?, 'ana')",
                       [cid, f"chat {c}", "2026-01-01T00:00:00", "2026-01-01T00:00:00"])
            rows = []
            for m in range(per):
                n = rng.randrange(8, 30) if m % 2 == 0 else rng.randrange(120, 280)
                text = " ".join(rng.choice(WORDS) for _ in range(n))
                rows.append((f"{cid}m{m}", cid, "user" if m % 2 == 0 else "assistant", text,
                             "complete", "2026-01-01T00:00:00", "2026-01-01T00:00:00"))
            db.conn.executemany("INSERT INTO messages (id, conversation_id, role, content, "
                                "status, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                                rows)
    store.close()


def sealed_start(path: Path) -> None:
    Store(path).close()


def unsealed_start(path: Path) -> None:
    integrity.forget_seal(path)
    Store(path).close()


def first_start_of_the_day(path: Path) -> None:
    for backup in Backups(path).all():
        backup.path.unlink()
    Store(path).close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--db", metavar="PATH")
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args(argv)
    path = Path(args.db) if args.db else Path(tempfile.mkdtemp()) / "outpost.db"
    if not path.exists():
        started = time.perf_counter()
        build(path, args.messages)
        print(f"built {args.messages:,} messages in {time.perf_counter() - started:.1f} s")
    print(f"{path}: {path.stat().st_size / 1e6:.1f} MB; load {os.getloadavg()[0]:.2f}")
    runs = {"sealed start": sealed_start, "unsealed start": unsealed_start,
            "day's first start": first_start_of_the_day}
    Store(path).close()  # sealed, today's backup taken
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.trials):
        for name, fn in runs.items():
            Store(path).close()  # each run starts from a sealed file with today's backup
            started = time.perf_counter()
            fn(path)
            times[name].append(time.perf_counter() - started)
    base = statistics.median(times["sealed start"])
    for name, spent in times.items():
        median = statistics.median(spent)
        print(f"{name:18} median {median * 1000:8.1f} ms  ({median / base:6.1f}x sealed)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
