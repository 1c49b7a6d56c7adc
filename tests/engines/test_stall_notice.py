"""A stream that goes quiet says so while it waits (user trial 8, defect 2): Cloud only with
a stall before any text printed nothing until "fault sent no text within 30 s", and a stall
after some text nothing until the 60 s idle timeout. Now the engine's stream carries a
``Stalled`` once a silence has lasted ``Timeouts.stall_notice`` (once per silence), saying
when it gives up. The fault server holds the stream (short deadlines here); nothing is
asserted on elapsed time."""
from __future__ import annotations

import threading

import pytest

from app.config.providers import ProviderConfig
from app.domain.errors import TimeoutError_
from app.domain.messages import (
    ChatMessage,
    ChatRequest,
    Finished,
    FinishReason,
    Role,
    Stalled,
    TextDelta,
)
from engines.http_policy import RetryPolicy, Timeouts
from engines.openai_compat import OpenAICompatEngine
from tests.fault_server import fault_server, text_and_silences

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def server():
    with fault_server() as running:
        yield running


def engine_for(server, **timeouts) -> OpenAICompatEngine:
    return OpenAICompatEngine(ProviderConfig("fault", "openai", server.url + "/v1",
                                             "test-model"),
                              api_key="sk-test", policy=RetryPolicy(max_retries=0),
                              timeouts=Timeouts(**{"connect": 1, "first_token": 2.0, "idle": 1.5,
                                                   "stall_notice": 0.3, **timeouts}))


def request() -> ChatRequest:
    return ChatRequest(model="m", messages=(ChatMessage(Role.USER, "x"),))


script = text_and_silences  # (shared with the other stall tests)


def events_of(engine) -> list:
    events: list = []
    try:
        for event in engine.stream(request(), threading.Event()):
            events.append(event)
    except TimeoutError_ as exc:
        events.append(exc)
    finally:
        engine.close()
    return events


def shape(events) -> list:
    return [e.text if isinstance(e, TextDelta) else type(e).__name__ for e in events]


def test_a_stall_before_any_text_is_said_once_with_when_it_gives_up(server):
    server.script([script(20)])
    events = events_of(engine_for(server))
    assert shape(events) == ["Stalled", "TimeoutError_"]
    assert events[0] == Stalled("fault", 0.3, 2.0, before_text=True)
    assert events[0].describe() == "no text from fault for 0.3 s; giving up at 2 s"


def test_a_stall_after_some_text_is_said_once_with_the_idle_deadline(server):
    server.script([script("Part one", " and part two", 20)])
    events = events_of(engine_for(server))
    assert shape(events)[:3] == ["Part one", " and part two", "Stalled"]
    assert shape(events).count("Stalled") == 1
    assert events[2] == Stalled("fault", 0.3, 1.5, before_text=False)
    assert events[2].describe() == "no data from fault for 0.3 s; giving up at 1.5 s"
    assert isinstance(events[-1], Finished) and events[-1].reason is FinishReason.ERROR


def test_each_silence_is_said_once_and_text_ends_it(server):
    """Two pauses in one reply: each said once, between the texts around it."""
    server.script([script("One", 0.8, " two", 0.8, " three.")])
    events = events_of(engine_for(server))
    assert shape(events) == ["One", "Stalled", " two", "Stalled", " three.", "Usage",
                             "Finished"]
    assert events[-1].reason is FinishReason.STOP


def test_no_notice_when_the_deadline_comes_first_or_the_stream_flows(server):
    server.script([script("One", 0.2, " two")])
    assert "Stalled" not in shape(events_of(engine_for(server)))
    server.script([script(20)])
    assert shape(events_of(engine_for(server, stall_notice=5.0))) == ["TimeoutError_"]


def test_headers_held_back_are_said_as_waiting_for_the_reply_to_start(server):
    """A server that accepted the connection but sends no headers: nothing was said until the
    deadline ("fault sent no reply within 2 s"); now the wait is said once, as such."""
    server.script([script("Late", head_after=20)])
    events = events_of(engine_for(server))
    assert shape(events) == ["Stalled", "TimeoutError_"]
    assert events[0] == Stalled("fault", 0.3, 1.5, before_text=True, before_head=True)
    assert events[0].describe() == ("waiting for the reply from fault to start: nothing for "
                                    "0.3 s; giving up at 1.5 s")


def test_headers_held_back_then_text_say_the_silence_once(server):
    """The headers after the notice, then text: the one silence is said once (not again as
    "no text" once the headers came), and the reply is whole."""
    server.script([script("Pump 3", " leaks.", head_after=0.8)])
    events = events_of(engine_for(server))
    assert shape(events) == ["Stalled", "Pump 3", " leaks.", "Usage", "Finished"]
    assert events[0].before_head and events[-1].reason is FinishReason.STOP


def test_a_cancel_while_the_headers_are_held_back_ends_the_wait(server):
    """Cancelled while the headers are held back (after the notice): the stream ends as
    cancelled and the server sees the client go away."""
    server.script([script("Late", head_after=20)])
    engine, cancel = engine_for(server, first_token=20.0, idle=20.0), threading.Event()
    events = []
    for event in engine.stream(request(), cancel):
        events.append(event)
        if isinstance(event, Stalled):
            cancel.set()
    engine.close()
    assert shape(events) == ["Stalled", "Usage", "Finished"]
    assert events[-1].reason is FinishReason.CANCELLED
    assert server.wait_disconnected(0, timeout=5)


def test_a_stream_left_while_the_headers_are_held_back_hangs_up(server):
    """The caller stops reading at the notice (closes the stream): the request's socket is
    hung up, not left waiting for the headers."""
    server.script([script("Late", head_after=20)])
    engine = engine_for(server, first_token=20.0, idle=20.0)
    stream = engine.stream(request(), threading.Event())
    assert isinstance(next(stream), Stalled)
    stream.close()
    assert server.wait_disconnected(0, timeout=5)
    engine.close()
