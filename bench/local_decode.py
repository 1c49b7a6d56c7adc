"""Benchmark: the local engine against a raw llama-cpp-python loop, measured side by side.

    python -m bench.local_decode [--model PATH] [--trials 5] [--tokens 128]

1. Decode tokens/s: alternating trials of ``LocalEngine.stream`` and a bare ``Llama.generate``
   loop with the same settings (the engine's own ``Llama`` object, so the same threads, context,
   GPU layers; greedy sampling; same prompt), so both see the same machine load. The raw loop
   runs on the model's thread: llama.cpp's OpenMP team belongs to the calling thread, and two
   teams on the same cores would slow each other down. Target: engine / raw >= 0.97.
2. TTFT of turn 10 vs turn 1 of one conversation, each turn adding a same-size user message
   (KV-cache reuse means turn 10 evaluates only its new tokens). Target: <= 1.2. Measured with
   ``reproducible_seeds=False`` (llama-cpp-python's longest-prefix reuse); what the default
   reproducible evaluation costs instead is ``bench/seed_cost.py``'s to measure.
Prints medians and the ratios; nothing here runs in the test suite.
"""
from __future__ import annotations

import argparse
import json
import statistics
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


def raw_decode(llm, prompt_tokens: list[int], tokens: int) -> tuple[float, int]:
    """The loop a llama-cpp-python user would write: generate, stop at EOG, detokenize."""
    is_eog = _eog_checker(llm)
    first = last = None
    count = 0
    for token in llm.generate(prompt_tokens, temp=0.0, top_p=0.95, top_k=LOCAL_DEFAULTS["top_k"],
                              min_p=LOCAL_DEFAULTS["min_p"], repeat_penalty=1.0, reset=True):
        now = time.perf_counter()
        first = first or now
        last = now
        if is_eog(token):
            break
        count += 1
        llm.detokenize([token])
        if count >= tokens:
            break
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
    args = parser.parse_args()

    path = resolve_model_path(args.model)
    engine = LocalEngine(path, LoadSettings(reproducible_seeds=False))
    engine.wait_ready()
    request = ChatRequest(model="bench", messages=(ChatMessage(Role.SYSTEM, SYSTEM),
                                                   ChatMessage(Role.USER, LONG_PROMPT)))
    prompt = engine._formatter.format(request.messages)
    prompt_tokens = engine.call_on_model_thread(
        lambda llm: llm.tokenize(prompt.text.encode(), add_bos=prompt.add_bos, special=True))

    def raw(n: int) -> tuple[float, int]:
        return engine.call_on_model_thread(lambda llm: raw_decode(llm, prompt_tokens, n))

    engine_decode(engine, 16)  # warm both
    raw(16)
    eng_rates, raw_rates, counts = [], [], []
    for _ in range(args.trials):
        rate, n = engine_decode(engine, args.tokens)
        eng_rates.append(rate)
        counts.append(n)
        rate, n = raw(args.tokens)
        raw_rates.append(rate)
        counts.append(n)

    ratios_ttft, first, tenth = [], [], []
    for trial in range(args.trials):
        ttfts, evaluated = ttft_turns(engine, trial)
        first.append(ttfts[0])
        tenth.append(ttfts[-1])
        ratios_ttft.append(ttfts[-1] / ttfts[0])

    result = {
        "model": path.name,
        "engine": engine.info.detail,
        "decode_tokens_per_trial": counts,
        "engine_decode_tok_s_median": round(statistics.median(eng_rates), 1),
        "raw_decode_tok_s_median": round(statistics.median(raw_rates), 1),
        "decode_ratio_engine_over_raw": round(statistics.median(eng_rates)
                                              / statistics.median(raw_rates), 3),
        "ttft_turn1_ms_median": round(statistics.median(first), 1),
        "ttft_turn10_ms_median": round(statistics.median(tenth), 1),
        "ttft_ratio_turn10_over_turn1": round(statistics.median(ratios_ttft), 3),
        "evaluated_prompt_tokens_per_turn_last_trial": evaluated,
    }
    print(json.dumps(result, indent=2))
    print(f"\ndecode tok/s  engine {result['engine_decode_tok_s_median']}  raw "
          f"{result['raw_decode_tok_s_median']}  ratio {result['decode_ratio_engine_over_raw']}"
          f"  (target >= 0.97)")
    print(f"TTFT turn 10 / turn 1: {result['ttft_turn10_ms_median']} ms / "
          f"{result['ttft_turn1_ms_median']} ms = {result['ttft_ratio_turn10_over_turn1']}"
          f"  (target <= 1.2)")
    engine.close()


if __name__ == "__main__":
    main()
