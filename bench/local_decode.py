"""Benchmark: the local engine against a raw llama-cpp-python loop, measured side by side.

    python -m bench.local_decode [--model PATH] [--trials 5] [--tokens 128] [--load N]
                                 [--load-kind spin|decode] [--raw-threads K] [--skip-ttft]

1. Decode tokens/s: alternating trials of ``LocalEngine.stream`` and a bare ``Llama.generate``
   loop with the same settings (the engine's own ``Llama`` object, so the same context, GPU
   layers; greedy sampling; same prompt), so both see the same machine load. The raw loop
   runs on the model's thread: llama.cpp's OpenMP team belongs to the calling thread, and two
   teams on the same cores would slow each other down. The raw loop uses the thread count a
   llama-cpp-python user would pass (the physical cores, or ``--raw-threads``); the engine
   chooses its own from the cores free now (engines/cpu_budget.py). Target: engine / raw >= 0.97,
   on a quiet machine and under load. Also printed: the median of each engine trial's rate over
   the raw trial right after it, steadier when other programs come and go.
   ``--load N`` keeps N busy processes running for the whole measurement: ``spin`` (a Python
   busy loop, one core each) or ``decode`` (a raw llama-cpp-python decode loop on the same
   model with default settings: a second llama.cpp program). Both loops share this process's
   OpenMP settings; ``GOMP_SPINCOUNT=300000 python -m bench.local_decode`` measures libgomp's
   default spinning instead (engines.cpu_budget leaves a user's setting alone).
2. TTFT of turn 10 vs turn 1 of one conversation, each turn adding a same-size user message
   (KV-cache reuse means turn 10 evaluates only its new tokens). Target: <= 1.2. Measured with
   ``reproducible_seeds=False`` (llama-cpp-python's longest-prefix reuse); what the default
   reproducible evaluation costs instead is ``bench/seed_cost.py``'s to measure.
Prints medians and the ratios; nothing here runs in the test suite.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

from app.domain.messages import ChatMessage, ChatRequest, Role, accumulate
from app.domain.sampling import LOCAL_DEFAULTS
from engines.llama_local import LoadSettings, LocalEngine, _eog_checker
from engines.model_files import resolve_model_path

SYSTEM = "You are a helpful assistant."
LONG_PROMPT = "Write a long, detailed story about a lighthouse keeper who finds a map."


def engine_decode(engine: LocalEngine, tokens: int) -> tuple[float, int]:
    request = ChatRequest(model="bench", temperature=0.0, max_tokens=tokens, messages=(
        ChatMessage(Role.SYSTEM, SYSTEM), ChatMessage(Role.USER, LONG_PROMPT)))
    reply = accumulate(engine.stream(request, threading.Event()))
    return reply.finish.tokens_per_s or 0.0, reply.usage.completion_tokens


SPIN = "while True: pass"
# a second llama.cpp program: default settings (threads = physical cores), decoding forever
DECODE = """
import os, sys
from llama_cpp import Llama
llm = Llama(sys.argv[1], n_threads=int(sys.argv[2]), n_ctx=512, verbose=False)
tokens = llm.tokenize(b"Tell me a very long story about the sea.")
while True:
    for i, _ in enumerate(llm.generate(tokens, temp=0.0, reset=True)):
        if i >= 200:
            break
"""


def start_load(n: int, kind: str, model: str, threads: int) -> list[subprocess.Popen]:
    """N busy processes, started now; stop them with ``stop_load``."""
    code = SPIN if kind == "spin" else DECODE
    args = [] if kind == "spin" else [model, str(threads)]
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    return [subprocess.Popen([sys.executable, "-c", code, *args], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(n)]


def stop_load(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.kill()
    for proc in procs:
        proc.wait()


def load_now() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def raw_decode(llm, prompt_tokens: list[int], tokens: int,
               threads: int | None = None) -> tuple[float, int]:
    """The loop a llama-cpp-python user would write: generate, stop at EOG, detokenize
    (with ``threads`` set on the context, as the user's ``n_threads`` would)."""
    import llama_cpp  # deferred: the benchmark's engine has loaded it by now

    engines_threads = llama_cpp.llama_n_threads(llm._ctx.ctx)
    if threads:
        llama_cpp.llama_set_n_threads(llm._ctx.ctx, threads, threads)
    is_eog = _eog_checker(llm)
    first = last = None
    count = 0
    try:
        for token in llm.generate(prompt_tokens, temp=0.0, top_p=0.95,
                                  top_k=LOCAL_DEFAULTS["top_k"], min_p=LOCAL_DEFAULTS["min_p"],
                                  repeat_penalty=1.0, reset=True):
            now = time.perf_counter()
            first = first or now
            last = now
            if is_eog(token):
                break
            count += 1
            llm.detokenize([token])
            if count >= tokens:
                break
    finally:  # hand the context back with the engine's own thread count
        llama_cpp.llama_set_n_threads(llm._ctx.ctx, engines_threads, engines_threads)
    return ((count - 1) / (last - first) if count > 1 else 0.0), count


def ttft_turns(engine: LocalEngine, trial: int, turns: int = 10) -> tuple[list[float], list[int]]:
    """TTFT and evaluated prompt tokens of each turn. Each trial starts with its own system
    prompt so that its turn 1 is not served from the previous trial's KV cache."""
    messages = [ChatMessage(Role.SYSTEM, f"Session {trial}. {SYSTEM}")]
    ttfts, evaluated = [], []
    for i in range(turns):
        messages.append(ChatMessage(Role.USER, f"Give me one short fact about the number {i + 10}."))
        request = ChatRequest(model="bench", temperature=0.0, max_tokens=24,
                              messages=tuple(messages))
        reply = accumulate(engine.stream(request, threading.Event()))
        ttfts.append(reply.finish.ttft_ms)
        evaluated.append(reply.usage.evaluated_prompt_tokens)
        messages.append(ChatMessage(Role.ASSISTANT, reply.text))
    return ttfts, evaluated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="")
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--load", type=int, default=0, metavar="N",
                        help="N busy processes during the measurement")
    parser.add_argument("--load-kind", choices=["spin", "decode"], default="spin")
    parser.add_argument("--raw-threads", type=int, default=0, metavar="K",
                        help="the raw loop's n_threads (default: physical cores)")
    parser.add_argument("--skip-ttft", action="store_true", help="only the decode rows")
    args = parser.parse_args()

    path = resolve_model_path(args.model)
    engine = LocalEngine(path, LoadSettings(reproducible_seeds=False))
    engine.wait_ready()
    raw_threads = args.raw_threads or engine.n_threads
    load_before = load_now()
    load = start_load(args.load, args.load_kind, str(path), raw_threads)
    try:
        run(args, engine, path, raw_threads, load_before)
    finally:
        stop_load(load)
        engine.close()


def run(args, engine: LocalEngine, path, raw_threads: int, load_before: list[float]) -> None:
    request = ChatRequest(model="bench", messages=(ChatMessage(Role.SYSTEM, SYSTEM),
                                                   ChatMessage(Role.USER, LONG_PROMPT)))
    prompt = engine._formatter.format(request.messages)
    prompt_tokens = engine.call_on_model_thread(
        lambda llm: llm.tokenize(prompt.text.encode(), add_bos=prompt.add_bos, special=True))

    def raw(n: int) -> tuple[float, int]:
        return engine.call_on_model_thread(
            lambda llm: raw_decode(llm, prompt_tokens, n, raw_threads))

    engine_decode(engine, 16)  # warm both
    raw(16)
    engine.threads_used.clear()
    eng_rates, raw_rates, counts = [], [], []
    for _ in range(args.trials):
        rate, n = engine_decode(engine, args.tokens)
        eng_rates.append(rate)
        counts.append(n)
        rate, n = raw(args.tokens)
        raw_rates.append(rate)
        counts.append(n)
    threads_used = dict(sorted(engine.threads_used.items()))
    load_decode = load_now()

    ratios_ttft, first, tenth = [], [], []
    for trial in range(args.trials if not args.skip_ttft else 0):
        ttfts, evaluated = ttft_turns(engine, trial)
        first.append(ttfts[0])
        tenth.append(ttfts[-1])
        ratios_ttft.append(ttfts[-1] / ttfts[0])

    result = {
        "model": path.name,
        "engine": engine.info.detail,
        "load_processes": f"{args.load} x {args.load_kind}" if args.load else "none",
        "loadavg_before": load_before,
        "loadavg_after_decode": load_decode,
        "raw_threads": raw_threads,
        "engine_decode_calls_by_threads": threads_used,
        "decode_tokens_per_trial": counts,
        "engine_decode_tok_s_median": round(statistics.median(eng_rates), 1),
        "raw_decode_tok_s_median": round(statistics.median(raw_rates), 1),
        "decode_ratio_engine_over_raw": round(statistics.median(eng_rates)
                                              / statistics.median(raw_rates), 3),
        # each engine trial against the raw trial right after it (the same moment's load):
        # steadier than the ratio of medians when other programs come and go
        "decode_ratio_paired_median": round(statistics.median(
            e / r for e, r in zip(eng_rates, raw_rates) if r), 3),
    }
    if first:
        result.update({
            "ttft_turn1_ms_median": round(statistics.median(first), 1),
            "ttft_turn10_ms_median": round(statistics.median(tenth), 1),
            "ttft_ratio_turn10_over_turn1": round(statistics.median(ratios_ttft), 3),
            "evaluated_prompt_tokens_per_turn_last_trial": evaluated,
        })
    result["loadavg_end"] = load_now()
    print(json.dumps(result, indent=2))
    print(f"\nload: {result['load_processes']}, loadavg {load_before[0]} -> "
          f"{result['loadavg_end'][0]} on {os.cpu_count()} CPUs")
    print(f"decode tok/s  engine {result['engine_decode_tok_s_median']}  raw "
          f"{result['raw_decode_tok_s_median']} ({raw_threads} threads)  ratio "
          f"{result['decode_ratio_engine_over_raw']} (paired trials: "
          f"{result['decode_ratio_paired_median']})  (target >= 0.97)")
    if first:
        print(f"TTFT turn 10 / turn 1: {result['ttft_turn10_ms_median']} ms / "
              f"{result['ttft_turn1_ms_median']} ms = {result['ttft_ratio_turn10_over_turn1']}"
              f"  (target <= 1.2)")


if __name__ == "__main__":
    main()
