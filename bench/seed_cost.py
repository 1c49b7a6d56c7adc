"""Benchmark: what the seed guarantee costs in time to first token, measured side by side.

    python -m bench.seed_cost [--model PATH] [--trials 3] [--turns 6] [--reply 64]

Two engines on the same model file, used in alternation so both see the same machine load:
``reproducible_seeds=True`` (the default: prompts evaluated in aligned chunks as on a cold
cache; follow-ups reuse only whole chunks of an earlier prompt) and ``False`` (llama-cpp-python's
longest-common-prefix reuse, which also keeps the previous reply's KV entries).

1. TTFT of turn 1 (cold) with an explicit seed and with a drawn one, on the reproducible
   engine: a seed itself costs nothing, every local reply has one.
2. TTFT of each follow-up turn of one conversation (greedy, so both engines write the same
   replies), with the prompt tokens each actually evaluated.
Prints medians and the ratios reproducible / fast; nothing here runs in the test suite.
"""
from __future__ import annotations

import argparse
import statistics
import threading

from app.domain.messages import ChatMessage, ChatRequest, Role, accumulate
from engines.llama_local import PROMPT_CHUNK, LoadSettings, LocalEngine
from engines.model_files import resolve_model_path

QUESTIONS = ["Describe the pump at site {n} and what usually breaks on it.",
             "What should a field technician check first at site {n}?",
             "Write a short checklist for a visit to site {n}.",
             "Summarise the risks at site {n} in three sentences.",
             "How would you explain the repair at site {n} to a new colleague?",
             "What spare parts should be carried to site {n}?"]


def ask(engine: LocalEngine, messages: list[ChatMessage], reply: int, seed: int | None):
    request = ChatRequest(model="bench", messages=tuple(messages), temperature=0.0,
                          max_tokens=reply, seed=seed)
    result = accumulate(engine.stream(request, threading.Event()))
    return result, result.finish.ttft_ms or 0.0


def conversation(engine: LocalEngine, trial: int, turns: int, reply: int):
    """TTFT (ms) and evaluated prompt tokens of each turn; each trial has its own system prompt
    so that its first turn is cold."""
    messages = [ChatMessage(Role.SYSTEM, f"Session {trial} of the bench. You are a careful "
                                         "maintenance assistant for field staff.")]
    ttfts, evaluated = [], []
    for turn in range(turns):
        messages.append(ChatMessage(Role.USER, QUESTIONS[turn % len(QUESTIONS)].format(n=trial)))
        result, ttft = ask(engine, messages, reply, seed=42)
        ttfts.append(ttft)
        evaluated.append(result.usage.prompt_tokens - result.usage.cached_prompt_tokens)
        messages.append(ChatMessage(Role.ASSISTANT, result.text))
    return ttfts, evaluated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="GGUF file (default: the bundled model)")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--turns", type=int, default=6)
    parser.add_argument("--reply", type=int, default=64, help="max tokens of each reply")
    args = parser.parse_args()
    path = resolve_model_path(args.model)
    engines = {"reproducible": LocalEngine(path, LoadSettings(reproducible_seeds=True)),
               "fast": LocalEngine(path, LoadSettings(reproducible_seeds=False))}
    for engine in engines.values():
        engine.wait_ready(timeout=300)
    print(f"model {path.name}, {engines['fast'].info.detail}, prompt chunk {PROMPT_CHUNK}")

    seeded, drawn = [], []
    for trial in range(args.trials):
        for seed, into in ((7, seeded), (None, drawn)):
            messages = [ChatMessage(Role.SYSTEM, f"Cold start {trial} {seed}."),
                        ChatMessage(Role.USER, QUESTIONS[0].format(n=trial))]
            into.append(ask(engines["reproducible"], messages, 8, seed)[1])
    print(f"1. cold TTFT, explicit seed {statistics.median(seeded):.1f} ms, drawn seed "
          f"{statistics.median(drawn):.1f} ms: ratio "
          f"{statistics.median(seeded) / statistics.median(drawn):.2f}")

    per_turn = {name: [[] for _ in range(args.turns)] for name in engines}
    evaluated = {}
    for trial in range(args.trials):
        for name, engine in engines.items():  # alternate: both see the same load
            ttfts, evaluated[name] = conversation(engine, 100 + trial, args.turns, args.reply)
            for turn, ttft in enumerate(ttfts):
                per_turn[name][turn].append(ttft)
    print("2. TTFT per turn (median ms) and prompt tokens evaluated, reproducible vs fast:")
    for turn in range(args.turns):
        slow = statistics.median(per_turn["reproducible"][turn])
        fast = statistics.median(per_turn["fast"][turn])
        print(f"   turn {turn + 1}: {slow:7.1f} ms ({evaluated['reproducible'][turn]:4d} tok)  "
              f"vs {fast:7.1f} ms ({evaluated['fast'][turn]:4d} tok)   ratio {slow / fast:.2f}")
    for engine in engines.values():
        engine.close()


if __name__ == "__main__":
    main()
