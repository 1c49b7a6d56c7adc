"""Benchmark: several ``outpost ask`` processes on the local model at once, against one alone.

    python -m bench.local_processes [--processes 4] [--trials 3] [--tokens 4,256]
                                    [--fixed-threads K]

Each trial runs, alternately, one ``outpost ask`` process (the anchor) and N of them started
together, each a real CLI process (``python -m app.cli ask --offline --model <bundled model>``)
sharing one temporary OUTPOST_HOME, as N terminals would. Throughput is the tokens all processes
replied with divided by the wall time from the first start to the last exit (start-up and model
load included: that is what a user waits for); it is measured for the issue's 4-token replies
and for a longer reply where decoding dominates. Target: N processes' throughput >= 0.8 x one
process's (no collapse when llama.cpp thread teams compete for the cores). Also printed: the CPU
seconds each process used (a spinning thread team shows up here first), each reply's own decode
rate, and the machine load (os.getloadavg()) before and after.
The behaviour before engines/cpu_budget.py (every process on all cores, libgomp spinning ~10 ms
after each token) is ``GOMP_SPINCOUNT=300000 python -m bench.local_processes --fixed-threads 2``.
Nothing here runs in the test suite.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from pathlib import Path

from app.config.settings import Settings
from engines.model_files import resolve_model_path

PROMPT = "Write a long, detailed story about a lighthouse keeper who finds a map."


def ask_command(model: str, tokens: int) -> list[str]:
    return [sys.executable, "-m", "app.cli", "ask", PROMPT, "--offline", "--model", model,
            "--max-tokens", str(tokens), "--temperature", "0", "--json"]


def run_group(n: int, model: str, tokens: int, home: str) -> dict:
    """Start ``n`` asks at once; wall time, tokens, CPU seconds, decode rates."""
    env = dict(os.environ, OUTPOST_HOME=home)
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    procs = [subprocess.Popen(ask_command(model, tokens), env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(n)]
    outputs = [proc.communicate() for proc in procs]
    wall = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    total, rates = 0, []
    for proc, (out, err) in zip(procs, outputs):
        if proc.returncode != 0:
            raise SystemExit(f"outpost ask failed ({proc.returncode}): {err.strip()[-500:]}")
        events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        usage = [e for e in events if e.get("event") == "usage"][-1]
        finished = [e for e in events if e.get("event") == "finished"][-1]
        total += usage["completion_tokens"]
        if finished.get("tokens_per_s"):
            rates.append(finished["tokens_per_s"])
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    print(f"{n} x {tokens} tokens: {wall:.1f} s, {total} tokens, {cpu / n:.1f} CPU s/process, "
          f"loadavg {os.getloadavg()[0]:.2f}", file=sys.stderr, flush=True)
    return {"wall_s": wall, "tokens": total, "tok_s": total / wall, "cpu_s_per_process": cpu / n,
            "decode_tok_s": rates}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="", help="a GGUF file (default: the bundled model)")
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--tokens", default="4,256",
                        help="reply lengths to measure, comma-separated")
    parser.add_argument("--fixed-threads", type=int, default=0, metavar="K",
                        help="set the n_threads setting to K (default 0: the cores free now)")
    args = parser.parse_args()
    model = str(resolve_model_path(args.model))
    lengths = [int(t) for t in args.tokens.split(",") if t.strip()]
    results = {}
    with tempfile.TemporaryDirectory(prefix="outpost-bench-") as home:
        if args.fixed_threads:
            settings = Settings(Path(home) / "config" / "settings.json")
            settings.set("n_threads", args.fixed_threads)
            settings.save()
        run_group(1, model, 4, home)  # warm the page cache and the database
        for tokens in lengths:
            load_before = [round(x, 2) for x in os.getloadavg()]
            one, many = [], []
            for _ in range(args.trials):  # alternating: both see the same machine
                one.append(run_group(1, model, tokens, home))
                many.append(run_group(args.processes, model, tokens, home))
            ratio = statistics.median(m["tok_s"] for m in many) / \
                statistics.median(o["tok_s"] for o in one)
            results[tokens] = {
                "loadavg_before": load_before,
                "loadavg_after": [round(x, 2) for x in os.getloadavg()],
                "one_tok_s_median": round(statistics.median(o["tok_s"] for o in one), 2),
                "many_tok_s_median": round(statistics.median(m["tok_s"] for m in many), 2),
                "ratio_many_over_one": round(ratio, 3),
                "one_wall_s": [round(o["wall_s"], 2) for o in one],
                "many_wall_s": [round(m["wall_s"], 2) for m in many],
                "one_cpu_s": [round(o["cpu_s_per_process"], 2) for o in one],
                "many_cpu_s_per_process": [round(m["cpu_s_per_process"], 2) for m in many],
                "one_decode_tok_s": [r for o in one for r in o["decode_tok_s"]],
                "many_decode_tok_s": [r for m in many for r in m["decode_tok_s"]],
                "tokens_per_trial": {"one": [o["tokens"] for o in one],
                                     "many": [m["tokens"] for m in many]},
            }
    print(json.dumps({"model": os.path.basename(model), "cpus": os.cpu_count(),
                      "n_threads_setting": args.fixed_threads or "auto",
                      "GOMP_SPINCOUNT": os.environ.get("GOMP_SPINCOUNT", "Outpost's"),
                      "processes": args.processes, "by_reply_tokens": results}, indent=2))
    for tokens, row in results.items():
        print(f"\n{tokens} tokens/reply: 1 process {row['one_tok_s_median']} tok/s, "
              f"{args.processes} processes {row['many_tok_s_median']} tok/s in all, ratio "
              f"{row['ratio_many_over_one']} (target >= 0.8); CPU s/process "
              f"{statistics.median(row['one_cpu_s'])} alone, "
              f"{statistics.median(row['many_cpu_s_per_process'])} together; loadavg "
              f"{row['loadavg_before'][0]} -> {row['loadavg_after'][0]}")


if __name__ == "__main__":
    main()
