"""The seed guarantee (README, "Seeds"): the same model file, prompt, knobs and seed give the
same text (a) twice in a row in one process, (b) after other conversations have used the model,
and in a follow-up turn whose cache holds the earlier turn, (c) in a new process, and (d) in the
window and the CLI alike.

Why it can fail: llama.cpp's logits depend in their last bits on the batch a token was evaluated
in (on AVX2 CPUs a prompt token evaluated alone differs from the same token inside a batch), and
at temperature 1.3 a last-bit difference is enough for the sampler to pick another word. The
local engine therefore evaluates every prompt in the same aligned chunks as a cold cache does
(engines/llama_local.py). These tests compare runs with each other, never with expected words.
"""
from __future__ import annotations

import json
import os
import subprocess
import threading

import pytest

from app.domain.messages import ChatMessage, ChatRequest, Role, accumulate
from tests.conftest import outpost_cmd
from tests.support import send

pytestmark = pytest.mark.local_model

PROMPT = "Write one sentence about the sea."
HOT = dict(temperature=1.3, top_p=1.0, top_k=0, min_p=0.0)


def ask(engine, *texts: str, seed: int, max_tokens: int = 24, logprobs: bool = False):
    """(text, mean logprob) of one reply; ``texts`` alternate user / assistant."""
    messages = tuple(ChatMessage(Role.USER if i % 2 == 0 else Role.ASSISTANT, text)
                     for i, text in enumerate(texts))
    request = ChatRequest(model="local", messages=messages, max_tokens=max_tokens, seed=seed,
                          logprobs=logprobs, **HOT)
    events = list(engine.stream(request, threading.Event()))
    return accumulate(events).text, events[-1].mean_logprob


def test_same_seed_same_text_twice_in_a_row_and_after_other_conversations(local_engine):
    first = ask(local_engine, PROMPT, seed=7, logprobs=True)
    assert first[0]
    assert ask(local_engine, PROMPT, seed=7, logprobs=True) == first  # (a), logprob to the bit
    # (b) other conversations in between: one sharing the template's first tokens, one long
    # enough to fill several prompt chunks, one that extends this very prompt
    ask(local_engine, "Name three rivers.", seed=1)
    ask(local_engine, "Summarise: " + "The pump at site four leaks oil. " * 40, seed=2)
    ask(local_engine, PROMPT, first[0], "Another one, please.", seed=3)
    assert ask(local_engine, PROMPT, seed=7, logprobs=True) == first
    assert ask(local_engine, PROMPT, seed=7) == (first[0], None)  # logprobs change nothing


def test_a_follow_up_turn_gives_the_same_text_on_a_warm_and_a_cold_model(fresh_engine):
    """(b) In one conversation the cache holds turn 1's prompt and the reply decoded token by
    token; a new process evaluates the whole conversation at once. Same seed, same text."""
    long_first = "Here are my notes: " + "the pump at site four leaks oil again. " * 30
    warm = fresh_engine()
    reply, _ = ask(warm, long_first, seed=5, max_tokens=40)
    follow_up = (long_first, reply, "Write one sentence about that.")
    on_warm = ask(warm, *follow_up, seed=11, logprobs=True)
    cold = fresh_engine()
    assert ask(cold, *follow_up, seed=11, logprobs=True) == on_warm


def cli_reply(seed: int, env: dict) -> str:
    proc = subprocess.run(outpost_cmd() + [
        "ask", "--route", "local", "--seed", str(seed), "--temperature", "1.3", "--top-p", "1",
        "--max-tokens", "24", "--json", PROMPT], capture_output=True, text=True, env=env,
        timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert events[-1]["event"] == "finished"
    return "".join(e["text"] for e in events if e["event"] == "delta")


@pytest.mark.slow
@pytest.mark.gui
def test_the_cli_in_new_processes_and_the_window_give_the_same_text(qtbot, outpost):
    env = dict(os.environ)
    first = cli_reply(13, env)
    assert first
    assert cli_reply(13, env) == first  # (c) a new process, the same text
    assert cli_reply(14, env) != first or cli_reply(15, env) != first  # the seed matters

    # (d) the window: the same prompt, knobs and seed, typed into the real window, after the
    # model has answered something else in another conversation
    window = outpost.window

    def set_knobs(seed: int) -> None:
        panel = window.sampling
        panel.fields["temperature"].setValue(1.3)
        panel.fields["top_p"].setValue(1.0)
        panel.fields["max_tokens"].setValue(24)
        panel.use["seed"].setChecked(True)
        panel.fields["seed"].setValue(seed)

    set_knobs(99)
    send(qtbot, outpost, "Something else first.")
    window.new_action.trigger()
    set_knobs(13)
    send(qtbot, outpost, PROMPT)
    reply = outpost.store.messages(window.controller.conversation_id)[-1]
    assert reply.params["seed"] == 13 and reply.params["temperature"] == 1.3
    assert reply.content == first


def test_a_follow_up_evaluates_only_what_is_new_and_still_replies_as_from_scratch(
        fresh_engine):
    """The user trial's conversation: a follow-up in the same engine evaluates only the new
    question and the template's glue around it. The previous reply, decoded one token at a
    time, was evaluated again as a batch of its own after it was written (before, only whole
    128-token chunks of the previous *prompt* were reused: turn 3 evaluated 520 of its 648
    tokens). Counted in llama.cpp's eval, never timed. The seed still reproduces: a cold
    engine gives the last turn the same text and log-probability."""
    questions = ("Hi! What can you do?",
                 "Write a Python function that reverses a string, then show a markdown table "
                 "comparing Python, Rust and Go (columns: language, typing, speed).",
                 "Thanks. Now list three tips for writing clean code.")
    warm = fresh_engine()
    texts: list[str] = []
    previous = None
    for seed, question in enumerate(questions):
        texts.append(question)
        messages = tuple(ChatMessage(Role.USER if i % 2 == 0 else Role.ASSISTANT, text)
                         for i, text in enumerate(texts))
        request = ChatRequest(model="local", messages=messages, max_tokens=120, seed=seed,
                              logprobs=True, **HOT)
        reply = accumulate(list(warm.stream(request, threading.Event())))
        warm.call_on_model_thread(lambda llm: None)  # the reply is kept after Finished
        usage = reply.usage
        assert reply.text and usage is not None
        if previous is not None:
            # the previous prompt ends with the assistant's header, its reply's text follows
            reply_tokens = warm.call_on_model_thread(
                lambda llm: llm.tokenize(previous[1].encode(), add_bos=False, special=False))
            new = usage.prompt_tokens - previous[0] - len(reply_tokens)
            assert usage.evaluated_prompt_tokens == new, (seed, usage)
            assert new < len(question) // 2 + 12  # the question and the glue, nothing more
        previous = (usage.prompt_tokens, reply.text)
        texts.append(reply.text)
    cold = fresh_engine()
    again = accumulate(list(cold.stream(request, threading.Event())))
    assert again.usage.cached_prompt_tokens == 0
    assert (again.text, again.finish.mean_logprob) == (texts[-1], reply.finish.mean_logprob)


def test_best_of_candidates_on_the_local_model_share_one_prompt_evaluation(fresh_engine):
    """Best-of-n on the local model: the prompt is evaluated once and each later candidate
    samples on from it (its usage says its whole prompt came from the cache; the turn's sum
    counts the prompt n times, evaluated once), and each candidate is still the reply its seed
    gives on a cold model, to the bit. Before, every candidate evaluated the whole prompt
    again (prompt_tokens 3 x 24, cached 0)."""
    from app.chat.candidates import CandidatesEngine, Plan

    warm = fresh_engine()
    request = ChatRequest(model="local", messages=(ChatMessage(Role.USER, PROMPT),),
                          max_tokens=12, seed=10, **HOT)
    engine = CandidatesEngine(warm, Plan("best_of", 3, scorer="logprob"))
    seen: list = []
    real_stream = warm.stream

    def stream(req, cancel):  # each candidate's own events, as the local engine gave them
        events = list(real_stream(req, cancel))
        seen.append((req.seed, accumulate(events).text, events[-1].mean_logprob, events[-2]))
        yield from events

    warm.stream = stream
    total = [e for e in engine.stream(request, threading.Event())
             if type(e).__name__ == "Usage"][0]
    assert [seed for seed, *_ in seen] == [10, 11, 12]
    usages = [usage for *_, usage in seen]
    prompt = usages[0].prompt_tokens
    assert usages[0].cached_prompt_tokens == 0  # a fresh engine: evaluated once...
    assert all(u.prompt_tokens == prompt and u.cached_prompt_tokens == prompt
               for u in usages[1:])  # ... and not again
    assert (total.prompt_tokens, total.cached_prompt_tokens) == (3 * prompt, 2 * prompt)
    for seed, text, logprob, _ in seen:
        cold = fresh_engine()
        assert ask(cold, PROMPT, seed=seed, max_tokens=12, logprobs=True) == (text, logprob)
        cold.close()
