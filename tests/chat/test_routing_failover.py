"""Failover in the middle of a reply and hedged requests (issue 4): the fault server plays the
cloud, the real bundled model is the local engine."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

import pytest

from app.chat.connectivity import Connectivity
from app.chat.router import RoutedEngine
from app.chat.service import ChatService, TurnOptions
from app.config.providers import ProviderConfig
from app.config.settings import Settings
from app.domain.messages import Finished, FinishReason, MessageStatus, Seam, TextDelta, Usage
from app.storage.store import Store
from engines.http_policy import Timeouts
from engines.openai_compat import OpenAICompatEngine
from tests.fault_server import Cut, Normal, fault_server, normal, slow_first_token
from tests.support import Borrowed, fault_cloud

pytestmark = pytest.mark.local_model


def run_turn(store: Store, engine, prompt: str = "Say hello.", max_tokens: int = 16):
    turn = ChatService(store, Settings()).start_turn(
        prompt, model=engine.info.model,
        options=TurnOptions(max_tokens=max_tokens, temperature=0.0))
    events = list(turn.run(engine, threading.Event()))
    return turn, events, store.get_message(turn.assistant_message_id)


def test_stream_cut_mid_answer_is_continued_locally_in_the_same_message(tmp_path, local_engine):
    store = Store(tmp_path / "outpost.db")
    with fault_server() as server:
        server.script([Cut(chunks=("The capital", " of France", " is", " Paris"), after=2)])
        routed = RoutedEngine(fault_cloud(server.url + "/v1", store),
                              lambda: Borrowed(local_engine),
                              Connectivity(), hedge_after_s=None,
                              on_attempt=store.log_attempt)
        turn, events, message = run_turn(store, routed)
    cloud_part = "The capital of France"
    seams = [e for e in events if isinstance(e, Seam)]
    assert len(seams) == 1 and seams[0].offset == len(cloud_part)
    assert seams[0].engine == "local" and "stream broke" in seams[0].reason
    # text before the seam came from the cloud, text after it from the local model
    assert message.content.startswith(cloud_part) and len(message.content) > len(cloud_part)
    assert message.status is MessageStatus.COMPLETE
    assert message.engine == "local" and "continued locally" in message.route_reason
    assert [(s["engine"], s["start"], s["end"]) for s in message.segments] == [
        ("fault", 0, len(cloud_part)), ("local", len(cloud_part), len(message.content))]
    assert len([m for m in store.messages(turn.conversation_id) if m.role.value == "assistant"
                ]) == 1
    # one Usage and one Finished for the whole reply, and the TTFT is the cloud's first text
    assert len([e for e in events if isinstance(e, Usage)]) == 1
    finished = [e for e in events if isinstance(e, Finished)]
    assert len(finished) == 1 and finished[0].reason in (FinishReason.STOP, FinishReason.LENGTH)
    # the local model was really given the partial text as the start of its reply
    log = store.request_log(turn.request.idempotency_key)
    assert [r["provider"] for r in log] == ["fault", "local"]
    assert log[1]["outcome"] == "won"


def test_the_seam_is_stored_as_it_happens(tmp_path, local_engine):
    """When the local model takes over, the row says so at once (engine, why, the parts): a
    process killed during the local part leaves a reply credited to both, not to the cloud
    alone. The last part has no end until the reply ends (it grows)."""
    store = Store(tmp_path / "outpost.db")
    with fault_server() as server:
        server.script([Cut(chunks=("The capital", " of France", " is", " Paris"), after=2)])
        routed = RoutedEngine(fault_cloud(server.url + "/v1", store),
                              lambda: Borrowed(local_engine),
                              Connectivity(), hedge_after_s=None)
        turn = ChatService(store, Settings()).start_turn(
            "Say hello.", model=routed.info.model,
            options=TurnOptions(max_tokens=16, temperature=0.0))
        stream = turn.run(routed, threading.Event())
        for event in stream:
            if isinstance(event, Seam):
                break
        row = store.get_message(turn.assistant_message_id)  # before any final write
        stream.close()
    assert row.status is MessageStatus.STREAMING
    assert row.engine == "local" and "continued locally" in row.route_reason
    cloud_part = len("The capital of France")
    assert [(s["engine"], s["start"], s.get("end")) for s in row.segments] == [
        ("fault", 0, cloud_part), ("local", cloud_part, None)]


def test_the_local_model_continues_from_the_partial_text(local_engine):
    """Greedy decoding: continuing from a prefix gives what the model would have written after
    that prefix, not a fresh answer."""
    from app.domain.messages import ChatMessage, ChatRequest, Role, accumulate

    messages = (ChatMessage(Role.USER, "Count from one to ten in words."),)
    full = accumulate(local_engine.stream(ChatRequest("m", messages, temperature=0.0,
                                                      max_tokens=24), threading.Event())).text
    prefix = full[: len(full) // 2]
    rest = accumulate(local_engine.stream(
        ChatRequest("m", messages, temperature=0.0, max_tokens=24, assistant_prefix=prefix),
        threading.Event())).text
    assert rest and full.startswith(prefix) and (prefix + rest).startswith(full[: len(prefix) + 3])


def test_slow_first_token_is_hedged_and_the_local_model_wins(tmp_path, local_engine):
    store = Store(tmp_path / "outpost.db")
    with fault_server() as server:
        # The cloud holds its first token back (keep-alives only) for longer than the test can
        # last, and its own first-token deadline is longer still: the local hedge is the only
        # one that can answer, however long the model takes on a busy machine.
        server.script([slow_first_token(delay=25.0)])
        patient = OpenAICompatEngine(
            ProviderConfig("fault", "openai", server.url + "/v1", "test-model"), "sk-test",
            timeouts=Timeouts(connect=1, first_token=60, idle=2), on_attempt=store.log_attempt)
        routed = RoutedEngine(patient, lambda: Borrowed(local_engine), Connectivity(),
                              hedge_after_s=0.5, on_attempt=store.log_attempt)
        turn, events, message = run_turn(store, routed)
        # the cloud request's connection was closed while its first token was still held back
        assert server.wait_disconnected(0, timeout=10)
        assert server.requests[0].completed_at is None
    assert message.engine == "local" and message.status is MessageStatus.COMPLETE
    assert "later than 0.5 s" in message.route_reason
    finished = [e for e in events if isinstance(e, Finished)][0]
    assert finished.ttft_ms >= 500  # counted from the start of the turn, not the hedge
    log = {r["provider"]: r for r in store.request_log(turn.request.idempotency_key)}
    assert log["local"]["outcome"] == "won" and log["fault"]["outcome"] == "hedge_lost"


def test_cloud_that_answers_in_time_wins_and_no_hedge_starts(tmp_path, local_engine):
    store = Store(tmp_path / "outpost.db")

    def no_local():
        raise AssertionError("the local model should not be needed")

    with fault_server() as server:
        server.script([normal()])
        routed = RoutedEngine(fault_cloud(server.url + "/v1", store), no_local, Connectivity(),
                              hedge_after_s=2.5)
        _, events, message = run_turn(store, routed)
    assert message.engine == "fault" and message.content == "Hello from the fault server."
    assert message.segments == [{"engine": "fault", "model": "test-model", "start": 0,
                                 "end": len(message.content)}]
    assert not any(isinstance(e, Seam) for e in events)


@dataclass(repr=False)
class AfterEvent(Normal):
    """A normal reply whose text waits (after the opening events) until ``event`` is set."""

    event: threading.Event = field(default_factory=threading.Event)
    name: str = "after_event"

    def wait(self, ex, seconds: float) -> None:
        for _ in range(1500):  # 30 s at most: then the text comes anyway
            if self.event.is_set():
                return
            ex.pause(0.02)


def test_cloud_wins_against_a_started_hedge(tmp_path, local_engine):
    """The hedge starts, but the cloud's text arrives first: the local attempt is cancelled and
    logged as lost."""
    store = Store(tmp_path / "outpost.db")

    hedge_started = threading.Event()

    class SlowLocal(Borrowed):
        def stream(self, request, cancel):
            hedge_started.set()
            if cancel.wait(5):  # never streams before it is cancelled
                yield Usage(1, 0, estimated=True)
                yield Finished(FinishReason.CANCELLED)

    with fault_server() as server:
        # the cloud's first text comes once the hedge has started: no race with the clock
        server.script([AfterEvent(event=hedge_started)])
        routed = RoutedEngine(fault_cloud(server.url + "/v1", store),
                              lambda: SlowLocal(local_engine), Connectivity(),
                              hedge_after_s=0.2, on_attempt=store.log_attempt)
        turn, _, message = run_turn(store, routed)
    assert message.engine == "fault" and message.content == "Hello from the fault server."
    assert "local hedge was cancelled" in message.route_reason
    log = {r["provider"]: r for r in store.request_log(turn.request.idempotency_key)}
    assert log["local"]["outcome"] == "hedge_lost" and log["fault"]["status"] == 200


def test_user_cancel_stops_both_engines_of_a_hedge(tmp_path, local_engine):
    store = Store(tmp_path / "outpost.db")
    with fault_server() as server:
        server.script([slow_first_token(delay=8.0)])
        routed = RoutedEngine(fault_cloud(server.url + "/v1", store),
                              lambda: Borrowed(local_engine),
                              Connectivity(), hedge_after_s=0.3)
        turn = ChatService(store, Settings()).start_turn(
            "Write a long story about the sea.", model="m",
            options=TurnOptions(max_tokens=400))
        cancel = threading.Event()
        events = []
        for event in turn.run(routed, cancel):
            events.append(event)
            if isinstance(event, TextDelta):
                cancel.set()
    assert isinstance(events[-1], Finished) and events[-1].reason is FinishReason.CANCELLED
    message = store.get_message(turn.assistant_message_id)
    assert message.status is MessageStatus.INTERRUPTED


def test_the_continuation_gets_what_is_left_of_the_token_budget(tmp_path, local_engine):
    store = Store(tmp_path / "outpost.db")
    with fault_server() as server:
        # 4 of the reply's 12 tokens written by the cloud (it reports usage), then the cut
        server.script([Cut(chunks=("One,", " two,", " three,", " four,", " five"), after=4,
                           prompt_tokens=20, completion_tokens=4)])
        routed = RoutedEngine(fault_cloud(server.url + "/v1", store),
                              lambda: Borrowed(local_engine),
                              Connectivity(), hedge_after_s=None)
        _, events, message = run_turn(store, routed, "Count to ten.", max_tokens=12)
    usage = [e for e in events if isinstance(e, Usage)][0]
    assert usage.completion_tokens <= 12
    assert message.finish_reason == "length"


def test_a_continuation_that_cannot_start_says_why_and_credits_the_cloud(tmp_path):
    """The cloud breaks off, and the local model cannot go on (the conversation does not fit
    its smaller window): the reply is the cloud's part, interrupted, credited to the cloud
    alone, and the error says both why it broke and why the local model did not continue (it
    said "continued locally" with nothing local, and only the cut)."""
    from app.domain.context import MessageTooLong
    from tests.support import ScriptedEngine

    store = Store(tmp_path / "outpost.db")
    local = ScriptedEngine([MessageTooLong("This conversation does not fit the local model's "
                                           "context window of 4,096 tokens.")])
    with fault_server() as server:
        server.script([Cut(chunks=("The capital", " of France", " is", " Paris"), after=2)])
        routed = RoutedEngine(fault_cloud(server.url + "/v1", store), lambda: local,
                              Connectivity(), hedge_after_s=None)
        turn, events, message = run_turn(store, routed)
    cloud_part = "The capital of France"
    assert message.content == cloud_part and message.status is MessageStatus.INTERRUPTED
    assert message.engine == "fault" and "continued locally" not in (message.route_reason or "")
    assert [(s["engine"], s["start"], s["end"]) for s in message.segments] == [
        ("fault", 0, len(cloud_part))]
    assert "cut off" in message.error and "could not go on" in message.error
    assert "does not fit the local model's context window" in message.error


def test_a_local_engine_that_logs_itself_records_that_it_won(tmp_path, bundled_model):
    """The engines the CLI and the window build log their own attempts: the local one that won
    a hedge is in the request log as "won" beside the cloud's "hedge_lost" (its row had no
    outcome, and the race could not be read back from the log)."""
    from engines.llama_local import LocalEngine

    store = Store(tmp_path / "outpost.db")
    local = LocalEngine(bundled_model, on_attempt=store.log_attempt)
    local.wait_ready(timeout=120)
    with fault_server() as server:
        server.script([slow_first_token(delay=25.0)])
        patient = OpenAICompatEngine(
            ProviderConfig("fault", "openai", server.url + "/v1", "test-model"), "sk-test",
            timeouts=Timeouts(connect=1, first_token=60, idle=2), on_attempt=store.log_attempt)
        routed = RoutedEngine(patient, lambda: local, Connectivity(), hedge_after_s=0.5,
                              on_attempt=store.log_attempt)
        try:
            turn, _, message = run_turn(store, routed)
            assert server.wait_disconnected(0, timeout=10)
        finally:
            routed.close()  # (the local engine with it)
    assert message.engine == "local"
    log = {r["provider"]: r["outcome"] for r in store.request_log(turn.request.idempotency_key)}
    assert log == {"local": "won", "fault": "hedge_lost"}


def test_a_local_attempt_that_failed_is_not_logged_as_won(bundled_model):
    """The router marks the local model's attempt "won" when it takes a reply over; an
    attempt that then fails (here llama.cpp itself, mid-reply) is logged with its error kind,
    not as won."""
    from app.domain.messages import CancelWithReason, ChatMessage, ChatRequest, Role
    from engines.llama_local import LocalEngine

    records = []
    local = LocalEngine(bundled_model, on_attempt=records.append)
    try:
        local.wait_ready(timeout=120)

        def failing(*args, **kwargs):  # llama.cpp failing as the reply starts
            raise RuntimeError("llama_decode returned -1")
            yield  # (a generator, as llama-cpp-python's)

        local._llm.generate = failing
        cancel = CancelWithReason()
        cancel.outcome = "won"
        request = ChatRequest("m", (ChatMessage(Role.USER, "Hi"),), max_tokens=4)
        events = list(local.stream(request, cancel))
    finally:
        local.close()
    assert events[-1].reason is FinishReason.ERROR
    assert [(r.outcome, r.error_kind is not None) for r in records] == [(None, True)]
