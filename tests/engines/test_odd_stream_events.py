"""Stream events of an unexpected shape (valid JSON, a field of another type) from a real HTTP
server on loopback: content sent as a list of parts is read; a token count that is not a
number is left out (the counts are then estimated); any other odd event ends the reply with a
ProviderError and the text before it kept, never a crash of the turn."""
from __future__ import annotations

import json
import threading

import pytest

from app.domain.errors import ProviderError
from app.domain.messages import Finished, FinishReason, TextDelta, Usage
from tests.engines.test_key_echo import check_contract, engine_for, make_request
from tests.fault_server import Custom, Exchange, fault_server


def openai_chunk(delta=None, *, choices=None, usage=None) -> list[str]:
    body: dict = {"id": "chatcmpl-odd", "object": "chat.completion.chunk", "model": "test-model",
                  "choices": choices if choices is not None else
                  [{"index": 0, "delta": delta or {}, "finish_reason": None}]}
    if usage is not None:
        body["usage"] = usage
    return [f"data: {json.dumps(body)}"]


def playing(*events: list[str], done: bool = True) -> Custom:
    def fn(ex: Exchange) -> None:
        ex.send_head(200, {})
        for event in events:
            ex.send_event(event)
        if done:
            ex.send_event(["data: [DONE]"])
        ex.end()

    return Custom(fn, name="odd")


def stream(wire: str, scenario: Custom) -> list:
    with fault_server() as server:
        server.script([scenario])
        engine = engine_for(wire, server.url, [])
        try:
            events = list(engine.stream(make_request(), threading.Event()))
        finally:
            engine.close()
    check_contract(events)
    return events


def text_of(events) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def test_content_sent_as_a_list_of_parts_is_read():
    events = stream("openai", playing(
        openai_chunk({"content": [{"type": "text", "text": "Meet at "}]}),
        openai_chunk({"content": [{"type": "text", "text": "the gate"},
                                  {"type": "image_url", "image_url": {"url": "x"}}]}),
        openai_chunk(choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}])))
    assert text_of(events) == "Meet at the gate"
    assert events[-1].reason is FinishReason.STOP


def test_a_token_count_that_is_not_a_number_is_left_out():
    events = stream("openai", playing(
        openai_chunk({"content": "Hello"}),
        openai_chunk(choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}]),
        openai_chunk(choices=[], usage={"prompt_tokens": "n/a", "completion_tokens": 1})))
    assert text_of(events) == "Hello"
    [usage] = [e for e in events if isinstance(e, Usage)]
    assert usage.estimated  # counted by Outpost instead of the server's "n/a"
    assert events[-1].reason is FinishReason.STOP


@pytest.mark.parametrize("odd", [
    openai_chunk(choices=["oops"]),
    openai_chunk({"content": 5}),
    openai_chunk({"content": [{"type": "text"}]}),  # a part without its text
], ids=["choice-not-an-object", "content-a-number", "part-without-text"])
def test_an_odd_openai_event_ends_the_reply_with_the_text_before_it_kept(odd):
    events = stream("openai", playing(openai_chunk({"content": "Water: 20 L. "}), odd,
                                      openai_chunk({"content": "never read"})))
    assert text_of(events) == "Water: 20 L. "
    finished = events[-1]
    assert isinstance(finished, Finished) and finished.reason is FinishReason.ERROR
    assert "cannot read" in str(finished.error)


def test_an_odd_anthropic_event_ends_the_reply_with_the_text_before_it_kept():
    def fn(ex: Exchange) -> None:
        ex.send_head(200, {})
        for event in ex.wire.opening((12, 3)):
            ex.send_event(event)
        ex.send_event(ex.wire.text("Rice: 5 kg. "))
        ex.send_event(["event: content_block_delta",
                       'data: {"type": "content_block_delta", "index": 0, "delta": "oops"}'])
        ex.send_event(ex.wire.text("never read"))
        ex.end()

    events = stream("anthropic", Custom(fn, name="odd"))
    assert text_of(events) == "Rice: 5 kg. "
    finished = events[-1]
    assert isinstance(finished, Finished) and finished.reason is FinishReason.ERROR
    assert "cannot read" in str(finished.error)


def test_an_odd_event_before_any_text_is_a_provider_error():
    from app.domain.errors import OutpostError

    with pytest.raises(OutpostError) as caught:
        stream("openai", playing(openai_chunk(choices=["oops"])))
    assert isinstance(caught.value, ProviderError)
    assert "cannot read" in str(caught.value)


def test_token_counts_written_as_whole_floats_are_read():
    events = stream("openai", playing(
        openai_chunk({"content": "Hello"}),
        openai_chunk(choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}]),
        openai_chunk(choices=[], usage={"prompt_tokens": 12.0, "completion_tokens": 1.0})))
    [usage] = [e for e in events if isinstance(e, Usage)]
    assert (usage.prompt_tokens, usage.completion_tokens, usage.estimated) == (12, 1, False)

