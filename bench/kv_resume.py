"""Benchmark: a long conversation's follow-up in a new process, with and without its saved KV state.

    python -m bench.kv_resume [--model PATH] [--trials 5] [--entries 90]

Setup: one engine answers a long conversation (~2,000 prompt tokens on the bundled model with
the default 90 log entries) with saved KV states on, which saves the state of its prompt; the
save's time and the file's size are printed. Then, alternating trials, the follow-up question
(the conversation + that reply + a new question) is answered:

* **restored**: in a new process, by a new engine whose folder holds a copy of that state (a
  copy per trial: the follow-up saves a longer state, which would serve the next trial);
* **scratch**: in a new process, by a new engine without saved states: the whole history is
  evaluated (the anchor);
* **in memory**: by one engine without saved states, kept open in this process, right after
  the first question again (what the follow-up costs when the app was never closed).

TTFT is the engine's own (from the request to the first token; the model's load is printed
apart). The state file is in the page cache (it was just copied), as after a recent save; a
cold disk adds its size divided by the disk's read speed. Prints medians, the ratios to the
scratch anchor, and the machine load before and after; nothing here runs in the test suite.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from app.domain.messages import ChatMessage, ChatRequest, Role, accumulate
from engines.llama_local import LoadSettings, LocalEngine
from engines.model_files import resolve_model_path

DIRECTIONS = ("north", "east", "south", "west")


def conversation(entries: int) -> tuple[ChatMessage, ...]:
    """A fixed long history: a log pasted in three parts, each acknowledged, and a question."""
    messages = [ChatMessage(Role.SYSTEM, "You are a helpful assistant.")]
    part = max(1, entries // 3)
    for start in range(0, entries, part):
        log = " ".join(f"Entry {i}: wind {i * 7 % 40} knots from the {DIRECTIONS[i % 4]}, "
                       f"{i % 3 + 1} ships passed." for i in range(start, min(entries,
                                                                              start + part)))
        messages += [ChatMessage(Role.USER, f"More of my lighthouse log. {log}"),
                     ChatMessage(Role.ASSISTANT, "Noted. Send the next part when ready.")]
    messages.append(ChatMessage(Role.USER, "Which entry had the strongest wind?"))
    return tuple(messages)


def follow_up(messages, reply: str) -> tuple[ChatMessage, ...]:
    return (*messages, ChatMessage(Role.ASSISTANT, reply),
            ChatMessage(Role.USER, "And which one had the most ships?"))


def request(messages) -> ChatRequest:
    return ChatRequest(model="bench", messages=tuple(messages), temperature=0.0, max_tokens=8)


def answer(engine: LocalEngine, messages) -> dict:
    reply = accumulate(engine.stream(request(messages), threading.Event()))
    engine.call_on_model_thread(lambda llm: None)  # the state is saved after Finished
    return {"text": reply.text, "ttft_ms": reply.finish.ttft_ms,
            "prompt_tokens": reply.usage.prompt_tokens,
            "evaluated": reply.usage.evaluated_prompt_tokens}


def trial(args) -> None:
    """One follow-up in this (new) process; prints one JSON line."""
    started = time.perf_counter()
    folder = Path(args.folder) if args.folder else None
    engine = LocalEngine(args.model, LoadSettings(kv_cache_dir=folder))
    engine.wait_ready()
    load_ms = (time.perf_counter() - started) * 1000
    messages = follow_up(conversation(args.entries), args.reply)
    result = answer(engine, messages)
    engine.close()
    print(json.dumps(dict(result, load_ms=load_ms)))


def in_new_process(args, model: Path, reply: str, folder: Path | None) -> dict:
    command = [sys.executable, "-m", "bench.kv_resume", "--trial", "--model", str(model),
               "--entries", str(args.entries), "--reply", reply]
    if folder is not None:
        command += ["--folder", str(folder)]
    proc = subprocess.run(command, capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parent.parent)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def median(rows, key) -> float:
    return round(statistics.median(row[key] for row in rows), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="")
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--entries", type=int, default=90)
    parser.add_argument("--trial", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--folder", default="", help=argparse.SUPPRESS)
    parser.add_argument("--reply", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trial:
        return trial(args)

    load_before = os.getloadavg()
    model = resolve_model_path(args.model)
    work = Path(tempfile.mkdtemp(prefix="outpost-kv-bench-"))
    saved = work / "saved"
    engine = LocalEngine(model, LoadSettings(kv_cache_dir=saved))
    engine.wait_ready()
    messages = conversation(args.entries)
    first = answer(engine, messages)
    save = engine.kv_last_save
    if save is None:
        raise SystemExit("The first reply saved no state: is the conversation long enough?")
    [state_file] = saved.glob("*.kv")
    state_mib = round(state_file.stat().st_size / 2 ** 20, 1)
    # the setup engine's own follow-ups save longer states into its folder: trials copy this
    pristine = work / "pristine"
    shutil.copytree(saved, pristine)
    follow = follow_up(messages, first["text"])
    # the in-memory arm: an engine without saved states (it would otherwise load its own)
    engine.close()
    engine = LocalEngine(model, LoadSettings())
    engine.wait_ready()

    rows: dict[str, list[dict]] = {"restored": [], "scratch": [], "in memory": []}
    texts = set()
    for i in range(args.trials):
        folder = work / f"trial-{i}"
        shutil.copytree(pristine, folder)
        rows["restored"].append(in_new_process(args, model, first["text"], folder))
        rows["scratch"].append(in_new_process(args, model, first["text"], None))
        answer(engine, messages)  # the first question again: the cache as the app left it
        rows["in memory"].append(answer(engine, follow))
        shutil.rmtree(folder)
        texts |= {row[-1]["text"] for row in rows.values()}
    engine.close()
    shutil.rmtree(work)
    load_after = os.getloadavg()

    anchor = median(rows["scratch"], "ttft_ms")
    result = {
        "model": model.name,
        "history_prompt_tokens": first["prompt_tokens"],
        "follow_up_prompt_tokens": rows["scratch"][0]["prompt_tokens"],
        "saved_tokens": save[0],
        "state_file_mib": state_mib,
        "save_ms": round(save[2] * 1000, 1),
        "trials": args.trials,
        "arms": {name: {"ttft_ms_median": median(arm, "ttft_ms"),
                        "ttft_ms_all": [round(r["ttft_ms"], 1) for r in arm],
                        "evaluated_prompt_tokens": arm[-1]["evaluated"],
                        "ratio_to_scratch": round(median(arm, "ttft_ms") / anchor, 3),
                        # trial by trial against the scratch run next to it: steadier on a
                        # machine whose load comes and goes
                        "paired_ratio_median": round(statistics.median(
                            r["ttft_ms"] / s["ttft_ms"] for r, s in zip(arm, rows["scratch"])),
                            3),
                        **({"load_ms_median": median(arm, "load_ms")}
                           if "load_ms" in arm[0] else {})}
                 for name, arm in rows.items()},
        "same_greedy_reply_in_every_arm": len(texts) == 1,
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in load_after],
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))
    arms = result["arms"]
    print(f"\nfollow-up TTFT in a new process, {result['follow_up_prompt_tokens']} prompt "
          f"tokens: restored {arms['restored']['ttft_ms_median']} ms "
          f"({arms['restored']['evaluated_prompt_tokens']} evaluated) vs scratch {anchor} ms "
          f"({arms['scratch']['evaluated_prompt_tokens']} evaluated): ratio "
          f"{arms['restored']['ratio_to_scratch']} (paired "
          f"{arms['restored']['paired_ratio_median']}); in memory "
          f"{arms['in memory']['ttft_ms_median']} ms")
    print(f"save: {result['saved_tokens']} tokens, {result['state_file_mib']} MiB, "
          f"{result['save_ms']} ms; load average before {result['load_before']}, after "
          f"{result['load_after']} on {result['cpus']} CPUs")


if __name__ == "__main__":
    main()
