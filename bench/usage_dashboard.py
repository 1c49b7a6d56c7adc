"""Benchmark: the usage dashboard with a year of use against a week of it, side by side.

    QT_QPA_PLATFORM=offscreen python -m bench.usage_dashboard [--rows 100000] [--trials 5]

Builds two real ledgers (``request_log`` rows as the ledger writes them): ``--rows`` attempts
spread over 365 days (three providers, five models, a few failures and retries) and 1/100 of
that over 7 days. Each trial, alternating, times ``UsageCharts.refresh()`` (the five grouped
queries and the drawing) on both. Target: the year's refresh stays interactive (≤ 250 ms) and
its ratio to the week's is what the extra rows cost. Prints medians and the ratio; nothing here
runs in the test suite.
"""
from __future__ import annotations

import argparse
import datetime as dt
import random
import statistics
import tempfile
import time
from pathlib import Path

from app.storage.store import Store

MODELS = (("local", "smol"), ("local", "gemma"), ("openai", "gpt-4o-mini"),
          ("openai", "gpt-4o"), ("anthropic", "claude-haiku"))


def fill(store: Store, rows: int, days: int, today: dt.date, seed: int = 1) -> None:
    rng = random.Random(seed)
    batch = []
    for _ in range(rows):
        provider, model = rng.choice(MODELS)
        day = today - dt.timedelta(days=rng.randrange(days))
        failed = rng.random() < 0.03
        batch.append({
            "idempotency_key": f"k{rng.randrange(10**9)}", "provider": provider,
            "model": model, "attempt": 2 if failed and rng.random() < 0.5 else 1,
            "status": 503 if failed else 200, "latency_ms": rng.uniform(300, 4000),
            "error_kind": "unavailable" if failed else None,
            "created_at": f"{day.isoformat()}T{rng.randrange(24):02d}:00:00.000000+00:00",
            "profile": "ana", "prompt_tokens": rng.randrange(20, 2000),
            "completion_tokens": 0 if failed else rng.randrange(1, 800),
            "cost_usd": None if provider == "local" else rng.uniform(0, 0.02),
            "ttft_ms": None if failed else rng.uniform(50, 900)})
    with store._tx() as db:
        db["request_log"].insert_all(batch, batch_size=5000)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args(argv)
    from PySide6.QtWidgets import QApplication  # deferred: a GUI benchmark, one QApplication

    from ui.usage_charts import UsageCharts

    app = QApplication.instance() or QApplication([])
    today = dt.date(2026, 11, 30)
    with tempfile.TemporaryDirectory(prefix="outpost-bench-") as tmp:
        year, week = Store(Path(tmp) / "year.db"), Store(Path(tmp) / "week.db")
        fill(year, args.rows, 365, today)
        fill(week, max(1, args.rows // 100), 7, today)
        charts = {name: UsageCharts(store, "ana", monthly_budget=20.0, today=lambda: today)
                  for name, store in (("year", year), ("week", week))}
        for widget in charts.values():
            widget.resize(1200, 800)
            widget.show()
        app.processEvents()
        times: dict[str, list[float]] = {"year": [], "week": []}
        for trial in range(args.trials):
            for name in (("year", "week") if trial % 2 == 0 else ("week", "year")):
                started = time.perf_counter()
                charts[name].refresh()
                app.processEvents()  # the drawing
                times[name].append((time.perf_counter() - started) * 1000)
        year.close()
        week.close()
    medians = {k: statistics.median(v) for k, v in times.items()}
    print(f"ledger rows: year {args.rows:,} (365 days), week {max(1, args.rows // 100):,} "
          f"(7 days); {args.trials} alternating trials")
    for name, value in medians.items():
        print(f"  refresh, {name:<5} median {value:8.1f} ms")
    print(f"  year / week {medians['year'] / medians['week']:.2f}x "
          f"(target: the year's refresh <= 250 ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
