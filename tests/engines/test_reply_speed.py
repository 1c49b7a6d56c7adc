"""A cloud reply's tokens/s (user trial 8, defect 3): stalled then stopped it said 18266.18,
timed out 2249.09, ended early 4504.04, and the window's footer 1459.3 for a reply stalled 5 s
then stopped: the tokens divided by the microseconds a burst of buffered text took to be read.
Now the tokens after the first arrival over the time to the last one (a stall between them
counts), none from a burst or for fewer than two tokens. Times come from a virtual clock (the
engine's ``clock``, read once when the turn starts and once per piece of text), never the
wall's; the fault server only delivers the text."""
from __future__ import annotations

import threading

import pytest
from fault_server import Custom, Normal, fault_server

from app.accounting.speed import BURST_S, ArrivalMeter
from app.config.providers import ProviderConfig
from app.domain.messages import ChatMessage, ChatRequest, Finished, FinishReason, Role, TextDelta
from engines.http_policy import RetryPolicy, Timeouts
from engines.openai_compat import OpenAICompatEngine

pytestmark = pytest.mark.timeout(30)


# -- the meter ------------------------------------------------------------------------------
def test_the_tokens_after_the_first_arrival_over_the_time_to_the_last():
    meter = ArrivalMeter()
    for at in (10.0, 11.0, 12.0, 13.0, 14.0):  # five arrivals of one token each, 1 s apart
        meter.arrived("ab", at)
    assert meter.tokens_per_s(5) == pytest.approx(1.0)
    assert meter.first_at == 10.0


def test_a_stall_between_two_arrivals_counts():
    meter = ArrivalMeter()
    for at in (0.0, 0.5, 10.5):
        meter.arrived("ab", at)
    assert meter.tokens_per_s(3) == pytest.approx(2 / 10.5)


def test_a_burst_has_no_speed_nor_has_a_single_token():
    burst = ArrivalMeter()
    for at in (1.0, 1.0001, 1.0002):
        burst.arrived("Part one", at)
    assert burst.tokens_per_s(6) is None
    one = ArrivalMeter()
    one.arrived("Hi", 0.0)
    one.arrived("", 5.0)  # (an empty delta is no arrival)
    assert one.tokens_per_s(1) is None and one.tokens_per_s(2) is None
    assert ArrivalMeter().tokens_per_s(10) is None


def test_a_big_first_arrival_is_not_counted_as_if_it_came_later():
    """A proxy held 90 characters back and let them go at once, then 10 more came over a
    second: 10 tokens' worth in that second, not 99."""
    meter = ArrivalMeter()
    meter.arrived("x" * 90, 0.0)
    meter.arrived("x" * 10, 1.0)
    assert meter.tokens_per_s(100) == pytest.approx(10.0)


# -- the cloud engine, on the fault server ---------------------------------------------------
@pytest.fixture
def server():
    with fault_server() as running:
        yield running


def engine_for(server, ticks: list[float]) -> OpenAICompatEngine:
    engine = OpenAICompatEngine(ProviderConfig("fault", "openai", server.url + "/v1",
                                               "test-model"),
                                api_key="sk-test", policy=RetryPolicy(max_retries=0),
                                timeouts=Timeouts(connect=1, first_token=5, idle=1))
    times = iter(ticks)
    engine.clock = lambda: next(times)
    return engine


def request() -> ChatRequest:
    return ChatRequest(model="m", messages=(ChatMessage(Role.USER, "x"),))


def stall_after(*chunks: str) -> Custom:
    """The chunks (with their usage: one token each), then silence until the client goes."""
    def fn(ex):
        ex.send_head(200)
        for event in ex.wire.opening((12, len(chunks))):
            ex.send_event(event)
        for chunk in chunks:
            ex.send_event(ex.wire.text(chunk))
        ex.pause(30)
        ex.cut()
    return Custom(fn, name="stall_after_text")


def finish_of(engine, cancel_after: int | None = None) -> Finished:
    """The reply's Finished; ``cancel_after``: the user stops it once that many deltas came."""
    cancel = threading.Event()
    deltas = 0
    try:
        for event in engine.stream(request(), cancel):
            if isinstance(event, TextDelta):
                deltas += 1
                if deltas == cancel_after:
                    cancel.set()
            if isinstance(event, Finished):
                return event
    finally:
        engine.close()
    raise AssertionError("no Finished")


def test_a_burst_then_a_stall_then_stop_has_no_speed(server):
    """The trial's "stalled then SIGINT": two pieces read 0.1 ms apart, then nothing."""
    server.script([stall_after("Part one", " and part two")])
    finish = finish_of(engine_for(server, [0.0, 0.003, 0.0031]), cancel_after=2)
    assert finish.reason is FinishReason.CANCELLED
    assert finish.ttft_ms == 3.0 and finish.tokens_per_s is None


def test_a_burst_then_the_idle_timeout_has_no_speed(server):
    """The trial's 60 s idle timeout (1 s here): the wait for more text is no time the
    tokens took."""
    server.script([stall_after("Part one", " and part two")])
    finish = finish_of(engine_for(server, [0.0, 0.003, 0.0031]))
    assert finish.reason is FinishReason.ERROR and finish.tokens_per_s is None


def test_a_reply_read_at_once_has_no_speed(server):
    """"Hello from the fault server." said 13626.9 tok/s in the window."""
    server.script([Normal()])
    finish = finish_of(engine_for(server, [0.0] + [0.002 + i * BURST_S / 10
                                                   for i in range(8)]))
    assert finish.reason is FinishReason.STOP and finish.tokens_per_s is None


def test_a_stream_spread_over_time_has_its_speed(server):
    """Five tokens 1 s apart, the second after a 5 s stall: 4 tokens over 9 s."""
    server.script([Normal(chunks=("ab",) * 5)])
    finish = finish_of(engine_for(server, [0.0, 1.0, 6.0, 7.0, 8.0, 10.0]))
    assert finish.reason is FinishReason.STOP
    assert finish.tokens_per_s == pytest.approx(4 / 9)
