"""Best-of-n and self-consistency (issue 6): the best score wins, every candidate is metered,
the vote and its tie rule, stopping early, concurrency on cloud engines, the judge."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest
from fault_server import fault_server

from app.chat.candidates import CandidatesEngine, Plan, extractor, judge_request, normalise
from app.chat.router import RoutedEngine
from app.chat.service import ChatService, TurnOptions
from app.config.providers import ProviderConfig
from app.config.settings import Settings
from app.domain.errors import ProviderUnavailable, UsageError
from app.domain.messages import (
    ChatMessage,
    ChatRequest,
    Finished,
    FinishReason,
    Role,
    TextDelta,
    Usage,
)
from app.domain.sampling import sent_params
from app.domain.test_time import JUDGE_MAX_TOKENS
from app.storage.ledger import UsageLedger
from app.storage.store import Store
from engines.anthropic import AnthropicEngine
from engines.base import EngineBase, EngineCapabilities, EngineInfo
from engines.http_policy import RetryPolicy, Timeouts
from engines.openai_compat import OpenAICompatEngine


class Scripted(EngineBase):
    """Replies from a script, one per call: (text, mean_logprob); or, where the candidates run
    concurrently and so ask in any order, a dict from the end of the request's idempotency key
    ("~c0", "~c1", "~judge") to its reply. Records the requests and how many streams ran at
    once."""

    info = EngineInfo("test", "scripted")

    def __init__(self, replies, kind="local", delay=0.0):
        self.replies = dict(replies) if isinstance(replies, dict) else list(replies)
        self.capabilities = EngineCapabilities(knob_kind=kind)
        self.delay = delay
        self.requests: list[ChatRequest] = []
        self._lock = threading.Lock()
        self.running = self.most_at_once = 0

    def stream(self, request, cancel):
        with self._lock:
            self.requests.append(request)
            if isinstance(self.replies, dict):
                text, logprob = next(reply for end, reply in self.replies.items()
                                     if str(request.idempotency_key).endswith(end))
            else:
                text, logprob = self.replies.pop(0)
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            if self.delay:
                cancel.wait(self.delay)
            yield TextDelta(text)
            yield Usage(10, 3)
            yield Finished(FinishReason.STOP, ttft_ms=5.0, tokens_per_s=50.0,
                           mean_logprob=logprob)
        finally:
            with self._lock:
                self.running -= 1

    def close(self):
        pass


def request(**kw) -> ChatRequest:
    return ChatRequest(model="m", messages=(ChatMessage(Role.USER, "What is 3 + 4?"),),
                       temperature=0.8, **kw)


def run(engine, req=None):
    events = list(engine.stream(req or request(), threading.Event()))
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    return text, events


def test_best_of_n_keeps_the_highest_mean_logprob_and_sums_every_candidates_tokens():
    inner = Scripted([("meh", -1.5), ("good", -0.2), ("bad", -3.0), ("ok", -0.9)])
    engine = CandidatesEngine(inner, Plan("best_of", 4, scorer="logprob"))
    text, events = run(engine)
    assert text == "good"
    usage = [e for e in events if isinstance(e, Usage)][0]
    assert (usage.prompt_tokens, usage.completion_tokens) == (40, 12)  # all four metered
    selection = engine.selection.record()
    assert selection["winner"] == 1 and [c["score"] for c in selection["candidates"]] == [
        -1.5, -0.2, -3.0, -0.9]
    keys = [r.idempotency_key for r in inner.requests]
    assert len(set(keys)) == 4 and all("~c" in k for k in keys)  # distinct per candidate
    assert all(r.logprobs for r in inner.requests)
    assert len({r.seed for r in inner.requests}) == 4  # different samples


def test_best_of_n_ttft_is_the_wait_from_send_to_the_winner_shown():
    """Not the fastest candidate's own TTFT (the report: winner c0 took 2472 ms to its first
    token, c2 217 ms from the prompt cache, and the reply said 217 ms): the reply appears once
    every candidate is in, and that wait is what the turn records. A scripted clock stands in
    for time: the send at 10 s, the winner shown at 12.5 s."""
    inner = Scripted([("slow winner", -0.1), ("fast", -2.0), ("fast too", -3.0)])
    ticks = iter([10.0, 12.5])
    engine = CandidatesEngine(inner, Plan("best_of", 3, scorer="logprob"),
                              clock=lambda: next(ticks))
    text, events = run(engine)
    assert text == "slow winner"
    [finished] = [e for e in events if isinstance(e, Finished)]
    assert finished.ttft_ms == 2500.0  # each candidate's own was 5 ms
    assert finished.tokens_per_s == 50.0  # the winner's speed


def test_json_scorer_prefers_valid_json_and_breaks_ties_by_logprob():
    inner = Scripted([("not json", -0.1), ('{"a": 1}', -0.9), ('{"a": 2}', -0.4)])
    text, _ = run(CandidatesEngine(inner, Plan("best_of", 3, scorer="json")))
    assert text == '{"a": 2}'


def test_self_consistency_majority_and_the_tie_rule():
    answers = ["It is 7", "4", "**4**", "7.", "9"]  # 7: twice, 4: twice -> 7 came first
    inner = Scripted([(f"Thinking...\n{a}", None) for a in answers])
    engine = CandidatesEngine(inner, Plan("self_consistency", 5, extract="regex:(\\d+)"))
    text, _ = run(engine)
    selection = engine.selection.record()
    assert selection["votes"] == {"7": 2, "4": 2, "9": 1}
    assert text == "Thinking...\nIt is 7" and selection["winner"] == 0
    assert "appeared first" in selection["tie_rule"] and not selection["stopped_early"]


def test_self_consistency_stops_early_once_the_vote_is_decided():
    inner = Scripted([("5", None)] * 3 + [("6", None)] * 5)
    engine = CandidatesEngine(inner, Plan("self_consistency", 5))
    text, _ = run(engine)
    assert text == "5" and len(inner.requests) == 3  # 3 votes of 5: the rest cannot win
    assert engine.selection.record()["stopped_early"]


def test_cloud_candidates_run_concurrently_and_local_ones_one_after_another():
    cloud = Scripted([(str(i), None) for i in range(4)], kind="openai", delay=0.2)
    run(CandidatesEngine(cloud, Plan("best_of", 4, scorer="json")))
    assert cloud.most_at_once > 1
    local = Scripted([(str(i), -1.0) for i in range(4)], delay=0.05)
    run(CandidatesEngine(local, Plan("best_of", 4)))
    assert local.most_at_once == 1


def test_the_judge_picks_and_its_tokens_count():
    inner = Scripted([("Seven.", None), ("It is 7, because 3 + 4 = 7.", None),
                      ('{"best": 2}', None)])
    engine = CandidatesEngine(inner, Plan("best_of", 2, scorer="judge"))
    text, events = run(engine)
    assert text == "It is 7, because 3 + 4 = 7."
    judge = inner.requests[-1]
    assert judge.idempotency_key.endswith("~judge") and judge.response_format["schema"]
    assert "[1]\nSeven." in judge.messages[-1].content
    usage = [e for e in events if isinstance(e, Usage)][0]
    assert usage.completion_tokens == 9  # two candidates and the judge


def test_bad_plans_are_refused_before_anything_runs():
    for bad in (lambda: Plan("best_of", 1), lambda: Plan("best_of", 9),
                lambda: Plan("best_of", 3, scorer="vibes"),
                lambda: Plan("self_consistency", 3, extract="regex:(")):
        with pytest.raises(UsageError):
            bad()
    with pytest.raises(UsageError, match="needs the local model"):
        CandidatesEngine(Scripted([], kind="anthropic"), Plan("best_of", 2, scorer="logprob"))
    with pytest.raises(UsageError, match="temperature 0"):
        run(CandidatesEngine(Scripted([]), Plan("best_of", 2)), request().__class__(
            model="m", messages=(ChatMessage(Role.USER, "x"),), temperature=0.0))


def test_answer_extractors():
    assert extractor("last-line")("a\nb\n\n  The answer: 12  \n") == "The answer: 12"
    assert extractor("json:answer")('Here: {"answer": 12}') == "12"
    assert extractor("regex:=\\s*(\\d+)")("3 + 4 = 7, so = 7") == "7"
    assert normalise("  **Paris.** ") == normalise("paris") == "paris"
    said_so = ("4", "Answer: 4", "**Answer:** 4", "Final answer: 4.", "The answer is 4",
               "So the answer is: `4`", "ANSWER = 4")
    assert {normalise(text) for text in said_so} == {"4"}
    assert normalise("Answer") == "answer"  # a label alone is the answer it gives
    assert normalise("Answers vary: 4") == "answers vary: 4"  # not a label
    assert normalise("The answer is -4") == normalise("-4") == "-4"  # a minus is the answer's
    assert normalise("Answer - 4") == "4"


@pytest.mark.local_model
def test_every_candidate_is_in_the_ledger_under_its_turn(tmp_path, bundled_model):
    from engines.llama_local import LocalEngine

    store = Store(tmp_path / "outpost.db")
    service = ChatService(store, Settings(tmp_path / "settings.json"))
    service.ledger = UsageLedger(store, "ana")
    service.profile = "ana"
    local = LocalEngine(bundled_model, on_attempt=service.ledger.record)
    try:
        engine = CandidatesEngine(local, Plan("best_of", 3, scorer="logprob"))
        turn = service.start_turn("Name a fruit.", model="m",
                                  options=TurnOptions(max_tokens=8, temperature=0.9))
        list(turn.run(engine, threading.Event()))
        local.call_on_model_thread(lambda llm: None)  # the records land after the replies
    finally:
        local.close()
    rows = store.request_log()
    key = turn.request.idempotency_key
    assert sorted(r["idempotency_key"] for r in rows) == [f"{key}~c{i}" for i in range(3)]
    assert {r["conversation_id"] for r in rows} == {turn.conversation_id}
    message = store.get_message(turn.assistant_message_id)
    assert message.completion_tokens == sum(r["completion_tokens"] for r in rows)
    scores = [c["score"] for c in message.candidates["candidates"]]
    assert message.candidates["winner"] == scores.index(max(scores))
    assert message.content == message.candidates["candidates"][message.candidates["winner"]][
        "text"]
    assert message.params["test_time"] == {"mode": "best_of", "n": 3, "scorer": "logprob"}
    won = message.candidates["candidates"][message.candidates["winner"]]
    assert message.params["seed"] == won["seed"]  # the kept candidate's own sample
    assert service.ledger.turn_cost(key) == (0.0, False)
    store.close()


@pytest.mark.local_model
def test_cli_best_of_and_self_consistency(outpost_home):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True,
                              text=True, env=os.environ.copy(), timeout=120,
                              stdin=subprocess.DEVNULL)

    best = cli("ask", "Say hi.", "--best-of", "3", "--temperature", "0.9", "--max-tokens", "6",
               "--json")
    assert best.returncode == 0, best.stderr
    finished = json.loads(best.stdout.splitlines()[-1])
    assert finished["candidates"]["mode"] == "best_of" and len(
        finished["candidates"]["scores"]) == 3
    sc = cli("ask", "What is 2 + 2? Put the number alone on the last line.",
             "--self-consistency", "3", "--temperature", "0.9", "--max-tokens", "16",
             "--extract", "regex:(\\d+)")
    assert sc.returncode == 0 and "self-consistency over" in sc.stderr
    assert json.loads(cli("usage", "--json").stdout)["requests"] >= 4  # every sample metered
    refused = cli("ask", "x", "--best-of", "3", "--temperature", "0")
    assert refused.returncode == 2 and "temperature 0" in refused.stderr
    stray = cli("ask", "x", "--scorer", "judge")
    assert stray.returncode == 2 and "--scorer goes with --best-of" in stray.stderr


def test_cloud_self_consistency_sends_a_majority_first_and_the_rest_only_if_needed():
    agreed = Scripted([("5", None)] * 5, kind="openai")
    engine = CandidatesEngine(agreed, Plan("self_consistency", 5))
    text, _ = run(engine)
    assert text == "5" and len(agreed.requests) == 3  # 3 of 5 agreed: 2 never sent
    split = Scripted([("5", None), ("6", None), ("7", None), ("5", None), ("5", None)],
                     kind="openai")
    run(CandidatesEngine(split, Plan("self_consistency", 5)))
    assert len(split.requests) == 5  # undecided after the first 3: the rest went out


def test_the_judge_sees_the_conversation_not_only_the_last_message():
    inner = Scripted([("Blue.", None), ("Green.", None), ('{"best": 1}', None)])
    req = ChatRequest(model="m", temperature=0.8, messages=(
        ChatMessage(Role.SYSTEM, "Be brief."), ChatMessage(Role.USER, "My car is blue."),
        ChatMessage(Role.ASSISTANT, "Noted."), ChatMessage(Role.USER, "What colour is it?")))
    run(CandidatesEngine(inner, Plan("best_of", 2, scorer="judge")), req)
    shown = inner.requests[-1].messages[-1].content
    assert "My car is blue." in shown and "What colour is it?" in shown


USER_KNOBS = dict(temperature=0.9, top_p=0.5, top_k=20, min_p=0.1, presence_penalty=0.6,
                  frequency_penalty=0.4, repeat_penalty=1.3, seed=11, max_tokens=3000,
                  chosen=("temperature", "top_p", "top_k", "min_p", "presence_penalty",
                          "frequency_penalty", "repeat_penalty", "seed", "max_tokens"))


@pytest.mark.parametrize("kind", ["local", "openai", "anthropic"])
def test_the_judge_is_deterministic_whatever_the_users_knobs(kind):
    """The candidates get the user's knobs (they want variety); the judge does not: temperature
    0, no top_p, top_k, min_p or penalties, a fixed seed, the tokens its verdict needs,
    and nothing counted as given for the turn."""
    # on a cloud engine the two candidates ask at once: each is answered by its own index
    inner = Scripted({"~c0": ("Seven.", None), "~c1": ("7", None),
                      "~judge": ('{"best": 2}', None)}, kind=kind)
    engine = CandidatesEngine(inner, Plan("best_of", 2, scorer="judge"))
    asked = ChatRequest(model="m", messages=(ChatMessage(Role.USER, "What is 3 + 4?"),),
                        **USER_KNOBS)
    text, _ = run(engine, asked)
    # the judge picked candidate 2 (cloud candidates run at once: either reply may be its)
    assert text == engine.selection.candidates[1].text
    assert all(r.top_p == 0.5 and r.presence_penalty == 0.6 for r in inner.requests[:2])
    judge = inner.requests[-1]
    assert judge.idempotency_key.endswith("~judge")
    assert (judge.temperature, judge.top_p, judge.top_k, judge.min_p) == (0.0, None, None, None)
    assert (judge.presence_penalty, judge.frequency_penalty, judge.repeat_penalty) == (
        None, None, None)
    assert judge.seed == 0 and judge.max_tokens == JUDGE_MAX_TOKENS and judge.chosen == ()


def test_what_each_provider_is_sent_for_the_judge():
    """Anthropic gets the temperature 0 (a narrowed top_p would have gone in its place); an
    OpenAI reasoning model, which takes only its default temperature, gets no knob at all."""
    asked = ChatRequest(model="m", messages=(ChatMessage(Role.USER, "x"),), **USER_KNOBS)
    judge = judge_request(asked, asked.messages, {"type": "object"})
    anthropic = sent_params("anthropic", judge, "claude-sonnet-4-5")
    assert anthropic["temperature"] == 0.0 and not {"top_p", "top_k"} & set(anthropic)
    assert sent_params("openai", judge, "gpt-4o-mini")["temperature"] == 0.0
    reasoning = sent_params("openai", judge, "openai/o3-mini")
    assert not {"temperature", "top_p", "presence_penalty", "frequency_penalty"} & set(reasoning)
    assert reasoning["max_tokens"] == JUDGE_MAX_TOKENS


def judged_over_the_wire(make_engine) -> tuple[dict, list[dict]]:
    """Best of 2 by the judge through ``make_engine(url)`` against the loopback fault server,
    the user's knobs asked: (the judge's request body, the candidates' bodies)."""
    with fault_server() as server:
        engine = make_engine(server.url)
        asked = ChatRequest(model="m", messages=(ChatMessage(Role.USER, "x"),), **USER_KNOBS)
        run(CandidatesEngine(engine, Plan("best_of", 2, scorer="judge")), asked)
        engine.close()
        sent = {r.idempotency_key: r.json for r in server.chat_requests()}
    judge = next(body for key, body in sent.items() if key.endswith("~judge"))
    return judge, [body for key, body in sent.items() if not key.endswith("~judge")]


def test_the_judge_sent_to_anthropic_over_the_wire_is_deterministic():
    """The real engine against the loopback fault server: two candidates with the user's
    top_p 0.5 (so no temperature: Anthropic gets one of the two), then the judge's request
    with temperature 0 and nothing else to sample with."""
    judge, candidates = judged_over_the_wire(lambda url: AnthropicEngine(
        ProviderConfig("claude", "anthropic", url, "claude-sonnet-4-5"), api_key="sk-ant-test",
        policy=RetryPolicy(max_retries=0), timeouts=Timeouts(connect=1, first_token=5, idle=2)))
    assert len(candidates) == 2
    assert all(c["top_p"] == 0.5 and c["top_k"] == 20 and c["max_tokens"] == 3000
               for c in candidates)
    assert judge["temperature"] == 0.0 and not {"top_p", "top_k"} & set(judge)
    assert judge["max_tokens"] == JUDGE_MAX_TOKENS


def test_the_judge_sent_to_an_openai_server_over_the_wire_has_no_top_p():
    """The real OpenAI-type engine against the loopback fault server: the candidates carry the
    user's top_p 0.5, the judge temperature 0, its seed and no top_p at all (it was sent as
    1.0, although the README says the judge asks with no top_p)."""
    judge, candidates = judged_over_the_wire(lambda url: OpenAICompatEngine(
        ProviderConfig("acme", "openai", url, "gpt-4o-mini"), "sk-test",
        policy=RetryPolicy(max_retries=0), timeouts=Timeouts(connect=1, first_token=5, idle=2)))
    assert len(candidates) == 2 and all(c["top_p"] == 0.5 for c in candidates)
    assert judge["temperature"] == 0.0 and judge["seed"] == 0
    assert not {"top_p", "top_k", "min_p", "presence_penalty", "frequency_penalty"} & set(judge)


class _OneBusyCloud(EngineBase):
    """A provider that answers candidate 1 and, once it has, is overloaded for candidate 0:
    both candidates are on their way before either is answered."""

    info = EngineInfo("acme", "cloud-model")
    capabilities = EngineCapabilities(knob_kind="openai")

    def __init__(self):
        self.both_sent = threading.Barrier(2, timeout=10)
        self.answered = threading.Event()

    def stream(self, request, cancel):
        self.both_sent.wait()
        if request.idempotency_key.endswith("~c0"):
            self.answered.wait(10)
            raise ProviderUnavailable("acme is overloaded right now.")
        yield TextDelta('{"a": 1}')
        yield Usage(10, 3)
        yield Finished(FinishReason.STOP)
        self.answered.set()

    def close(self):
        pass


class _Local(EngineBase):
    info = EngineInfo("local", "tiny.gguf")

    def stream(self, request, cancel):
        yield TextDelta("not json")
        yield Usage(10, 2)
        yield Finished(FinishReason.STOP)

    def close(self):
        pass


def test_auto_candidates_each_keep_their_own_route_outcome():
    """Best-of-n on Auto streams its candidates through one router at once: candidate 0
    failing over to the local model says nothing of candidate 1, which the cloud answered and
    which won, so the reply is the cloud's and nothing was unreachable (it was: the outbox
    queued such a turn, and the reply said the local model answered it)."""
    routed = RoutedEngine(_OneBusyCloud(), _Local, hedge_after_s=None)
    engine = CandidatesEngine(routed, Plan("best_of", 2, scorer="json"))
    text, _ = run(engine)
    assert text == '{"a": 1}' and engine.selection.winner == 1
    outcome = engine.outcome()
    assert outcome.answered.engine == "acme"
    assert not outcome.cloud_unreachable and outcome.cloud_error is None
    assert outcome.reason == "cloud first (acme)"
    assert [s.engine for s in outcome.segments] == ["acme"]
