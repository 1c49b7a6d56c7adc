"""Fitting a conversation into the context window before sending (issue 5)."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading

import pytest

from app.chat.service import ChatService, TurnOptions
from app.config.settings import Settings
from app.domain.context import MessageTooLong, fit_messages
from app.domain.messages import ChatMessage, Role
from app.storage.store import Store


class WordCounter:
    """One token per word plus 2 per message: easy to reason about in the algorithm tests."""

    def __init__(self, window: int | None):
        self.context_window = window
        self.calls = 0

    def count_prompt(self, messages):
        self.calls += 1
        return sum(len(m.content.split()) + 2 for m in messages), True


def convo(turns: int, words: int = 10) -> list[ChatMessage]:
    out = [ChatMessage(Role.SYSTEM, "be brief")]
    for i in range(turns):
        out.append(ChatMessage(Role.USER, f"q{i} " + "w " * (words - 1)))
        out.append(ChatMessage(Role.ASSISTANT, f"a{i} " + "w " * (words - 1)))
    out.append(ChatMessage(Role.USER, "newest question"))
    return out


def test_everything_is_kept_when_it_fits():
    messages = convo(3)
    fit = fit_messages(messages, WordCounter(1000), max_tokens=100)
    assert fit.messages == tuple(messages) and fit.dropped == ()
    assert fit.prompt_tokens == 4 + 6 * 12 + 4 and fit.used == fit.prompt_tokens + 100


def test_oldest_whole_turns_are_dropped_never_system_or_newest():
    messages = convo(10)  # 4 + 20*12 + 4 = 248 tokens
    counter = WordCounter(150)
    fit = fit_messages(messages, counter, max_tokens=40)
    assert fit.messages[0] == messages[0] and fit.messages[-1] == messages[-1]
    assert fit.used <= 150
    # whole turns: what is left starts with a user message and drops pairs
    assert fit.messages[1].role is Role.USER and len(fit.dropped) % 2 == 0
    assert fit.dropped == tuple(messages[1:1 + len(fit.dropped)])  # the oldest ones
    # and it is the fewest drops that fit: keeping one more turn would not
    one_more = messages[:1] + messages[1 + len(fit.dropped) - 2:]
    assert WordCounter(150).count_prompt(one_more)[0] + 40 > 150
    assert counter.calls <= 8  # binary search, not one count per turn
    assert "oldest" in fit.describe_dropped() and "150-token" in fit.describe_dropped()


def test_a_message_that_cannot_fit_alone_is_refused():
    messages = convo(2)[:-1] + [ChatMessage(Role.USER, "word " * 500)]
    with pytest.raises(MessageTooLong, match="does not fit the model.s context window of 300"):
        fit_messages(messages, WordCounter(300), max_tokens=50)


def test_unknown_window_drops_nothing():
    messages = convo(50)
    assert fit_messages(messages, WordCounter(None), max_tokens=10).dropped == ()


# -- with the real local model's tokenizer ---------------------------------------------------


@pytest.fixture(scope="module")
def small_engine(bundled_model):
    from engines.llama_local import LoadSettings, LocalEngine

    engine = LocalEngine(bundled_model, LoadSettings(context_cap=256))
    engine.wait_ready(timeout=120)
    yield engine
    engine.close()


@pytest.mark.local_model
def test_local_counts_are_the_model_tokenizers(local_engine):
    from app.domain.messages import ChatRequest

    messages = (ChatMessage(Role.SYSTEM, "You are terse."), ChatMessage(Role.USER, "Hi there!"))
    tokens, exact = local_engine.count_prompt(messages)
    assert exact
    # the same prompt, evaluated by llama.cpp, reports the same prompt token count
    events = list(local_engine.stream(ChatRequest("m", messages, max_tokens=1),
                                      threading.Event()))
    usage = next(e for e in events if e.__class__.__name__ == "Usage")
    assert usage.prompt_tokens == tokens


@pytest.mark.local_model
def test_long_conversation_is_fitted_and_the_turn_runs(tmp_path, small_engine):
    store = Store(tmp_path / "outpost.db")
    service = ChatService(store, Settings())
    turn = None
    for i in range(6):
        turn = service.start_turn(f"Tell me fact number {i} about the sea, in detail.",
                                  turn.conversation_id if turn else None, model="m",
                                  options=TurnOptions(max_tokens=40, temperature=0.0),
                                  counter=small_engine)
        list(turn.run(small_engine, threading.Event()))
    assert turn.fit.dropped, "a 256-token window cannot hold six turns"
    assert turn.fit.used <= 256 and turn.fit.exact
    assert turn.request.messages[-1].content.startswith("Tell me fact number 5")
    assert turn.request.messages[0].role is Role.SYSTEM
    reply = store.get_message(turn.assistant_message_id)
    assert reply.status.value == "complete" and reply.prompt_tokens == turn.fit.prompt_tokens


@pytest.mark.local_model
def test_oversize_message_is_refused_and_nothing_is_written(tmp_path, small_engine):
    store = Store(tmp_path / "outpost.db")
    service = ChatService(store, Settings())
    with pytest.raises(MessageTooLong):
        service.start_turn("ocean " * 400, model="m", options=TurnOptions(max_tokens=40),
                           counter=small_engine)
    assert store.list_conversations() == []


@pytest.mark.local_model
def test_cli_refuses_an_oversize_prompt_with_exit_2(outpost_home):
    settings = Settings()
    settings.set("context_cap", 256)
    settings.save()
    env = os.environ.copy()
    result = subprocess.run([sys.executable, "-m", "app.cli", "ask", "ocean " * 400, "--json"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2 and "does not fit the model" in result.stderr
    listed = subprocess.run([sys.executable, "-m", "app.cli", "history", "list", "--json"],
                            capture_output=True, text=True, env=env, timeout=60)
    assert json.loads(listed.stdout) == []  # nothing saved, nothing sent
    ok = subprocess.run([sys.executable, "-m", "app.cli", "ask", "Hi", "--json",
                         "--max-tokens", "4"], capture_output=True, text=True, env=env,
                        timeout=120)
    context = [json.loads(x) for x in ok.stdout.splitlines() if '"context"' in x][0]
    assert context["context_window"] == 256 and context["exact"] is True
    assert context["dropped_messages"] == 0 and context["prompt_tokens"] > 0


def test_a_users_context_window_wins_over_the_table(outpost_home):
    import json

    from app.accounting.metering import CloudCounter, context_overrides_path

    assert CloudCounter("openai", "my-vllm-model").context_window is None  # unknown
    known = CloudCounter("openai", "gpt-4o-mini").context_window
    path = context_overrides_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"my-vllm-model": 32768, "gpt-4o-mini": 8000}))
    assert CloudCounter("openai", "my-vllm-model").context_window == 32768
    assert CloudCounter("openai", "gpt-4o-mini").context_window == 8000 != known
    path.write_text(json.dumps({"my-vllm-model": 0}))
    with pytest.raises(Exception, match="context_windows.json is invalid: .my-vllm-model. must be a whole number from 1"):
        CloudCounter("openai", "my-vllm-model").context_window


@pytest.mark.local_model
def test_a_refusal_by_the_local_model_says_its_window_is_capped(local_engine):
    """The bundled model was trained on 8,192 tokens and the context_cap setting keeps its
    window at 4,096: a message too long for that says so, and how to make room (it said "use a
    model with a larger context", when the model has more)."""
    assert local_engine.context_window < local_engine.gguf.context_length
    with pytest.raises(MessageTooLong) as refused:
        fit_messages([ChatMessage(Role.USER, "word " * 5000)], local_engine, max_tokens=64)
    said = str(refused.value)
    assert "raise the context_cap setting" in said and "trained on 8,192" in said
    assert "larger context" not in said
    with pytest.raises(MessageTooLong, match="use a model with a larger context"):
        fit_messages([ChatMessage(Role.USER, "word " * 50)], WordCounter(20), max_tokens=8)


def test_what_a_fit_left_out_is_kept_as_a_record_and_said_short_and_long():
    """``LeftOut``: a reply's parameters keep what its model did not see (trial 10); a refit
    for the engine that answered adds its own, in its window."""
    from app.domain.context import LeftOut
    from app.domain.messages import ChatMessage, Fit

    first = (ChatMessage(Role.USER, "a"), ChatMessage(Role.ASSISTANT, "b"))
    second = (ChatMessage(Role.USER, "c"), ChatMessage(Role.ASSISTANT, "d"))
    fit = Fit(messages=(), dropped=first, prompt_tokens=10, exact=True, window=8192,
              max_tokens=8)
    refit = Fit(messages=(), dropped=second, prompt_tokens=10, exact=True, window=2048,
                max_tokens=8)
    assert LeftOut.of(fit, None) == LeftOut(2, 1, 8192)
    both = LeftOut.of(fit, refit)
    assert both == LeftOut(4, 2, 2048)
    assert LeftOut.from_record(both.record()) == both
    assert both.short() == "4 oldest messages left out (2,048-token context)"
    assert both.describe() == ("The 2 oldest turns (4 messages) left out to fit the model's "
                               "2,048-token context; the model did not see them.")
    nothing = dataclasses.replace(fit, dropped=())
    assert LeftOut.of(nothing, None) is None and LeftOut.of(None, None) is None
    assert LeftOut.from_record(None) is None and LeftOut.from_record({"messages": "x"}) is None
