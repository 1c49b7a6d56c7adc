"""The SSE decoder: WHATWG line/field rules, any fragmentation of the byte stream, UTF-8 safety."""
from __future__ import annotations

import json
import random

import pytest

from engines.sse import ServerSentEvent, SSEDecoder

OPENAI_STREAM = (
    b'data: {"id":"c1","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n'
    b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"Hel"}}]}\n\n'
    b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"lo \xc3\xa9\xe4\xb8\xad"}}]}\n\n'
    b'data: {"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    b"data: [DONE]\n\n"
)

ANTHROPIC_STREAM = (
    b"event: message_start\r\n"
    b'data: {"type":"message_start","message":{"id":"msg_1","usage":{"input_tokens":5}}}\r\n\r\n'
    b"event: content_block_start\r\n"
    b'data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}'
    b"\r\n\r\n"
    b"event: ping\r\n"
    b'data: {"type": "ping"}\r\n\r\n'
    b"event: content_block_delta\r\n"
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}'
    b"\r\n\r\n"
    b"event: content_block_stop\r\n"
    b'data: {"type":"content_block_stop","index":0}\r\n\r\n'
    b"event: message_stop\r\n"
    b'data: {"type":"message_stop"}\r\n\r\n'
)


def decode(*chunks: bytes) -> tuple[list[ServerSentEvent], SSEDecoder]:
    decoder = SSEDecoder()
    events = [event for chunk in chunks for event in decoder.feed(chunk)]
    assert decoder.flush() == []
    return events, decoder


def one_byte_at_a_time(stream: bytes) -> list[bytes]:
    return [stream[i:i + 1] for i in range(len(stream))]


def test_openai_stream_whole_and_byte_by_byte_agree():
    whole, decoder = decode(OPENAI_STREAM)
    assert not decoder.incomplete
    assert [e.event for e in whole] == ["message"] * 5
    assert whole[-1].data == "[DONE]"
    contents = [e.json()["choices"][0]["delta"].get("content") for e in whole[:-1]]
    assert contents == ["", "Hel", "lo é中", None]
    assert whole[3].json()["choices"][0]["finish_reason"] == "stop"
    assert all(e.id is None and e.retry is None for e in whole)

    bytewise, decoder = decode(*one_byte_at_a_time(OPENAI_STREAM))
    assert bytewise == whole
    assert not decoder.incomplete


def test_anthropic_stream_event_names_and_payloads():
    events, decoder = decode(ANTHROPIC_STREAM)
    assert [e.event for e in events] == ["message_start", "content_block_start", "ping",
                                         "content_block_delta", "content_block_stop",
                                         "message_stop"]
    assert [e.json()["type"] for e in events] == [e.event for e in events]
    assert events[0].json()["message"]["usage"]["input_tokens"] == 5
    assert events[3].json()["delta"] == {"type": "text_delta", "text": "Hi"}
    assert not decoder.incomplete
    assert decode(*one_byte_at_a_time(ANTHROPIC_STREAM))[0] == events


@pytest.mark.parametrize("eol", [b"\r\n", b"\r", b"\n"], ids=["crlf", "cr", "lf"])
def test_every_line_ending_is_recognised(eol):
    stream = eol.join([b"event: a", b"data: 1", b"", b"data: 2", b"data: 3", b"", b""])
    events, decoder = decode(stream)
    assert events == [ServerSentEvent("a", "1"), ServerSentEvent("message", "2\n3")]
    assert decode(*one_byte_at_a_time(stream))[0] == events
    assert not decoder.incomplete


def test_cr_then_lf_across_chunks_is_one_line_end():
    # Were CR|LF counted as two line ends, the blank line would dispatch "1" on its own.
    decoder = SSEDecoder()
    assert decoder.feed(b"data: 1\r") == []
    assert decoder.feed(b"\ndata: 2\r") == []
    assert decoder.feed(b"\n") == []
    assert decoder.feed(b"\r") == [ServerSentEvent(data="1\n2")]
    assert decoder.feed(b"\n") == []  # the LF belongs to the CR above: not a second blank line
    assert decoder.feed(b"data: 3\r") == []
    assert decoder.feed(b"\r") == [ServerSentEvent(data="3")]
    assert decoder.flush() == [] and not decoder.incomplete


def test_lone_cr_then_lf_on_a_later_chunk_after_an_empty_chunk():
    decoder = SSEDecoder()
    assert decoder.feed(b"data: x\r") == []
    assert decoder.feed(b"") == []
    assert decoder.feed(b"\n\r\n") == [ServerSentEvent(data="x")]


def test_comments_are_counted_and_produce_no_events():
    events, decoder = decode(b": keep-alive\n\n:\n: another\r\ndata: x\n: inside an event\n\n")
    assert events == [ServerSentEvent(data="x")]
    assert decoder.comments == 4
    only_comments, decoder = decode(b": ping\n\n: ping\n\n")
    assert only_comments == [] and decoder.comments == 2 and not decoder.incomplete


def test_multi_line_data_is_joined_with_newlines():
    assert decode(b"data: a\ndata: b\n\n")[0] == [ServerSentEvent(data="a\nb")]
    assert decode(b"data: a\ndata:\ndata: b\n\n")[0] == [ServerSentEvent(data="a\n\nb")]
    # A lone empty data line is still data: the event is dispatched with data "".
    assert decode(b"data\n\n")[0] == [ServerSentEvent(data="")]


@pytest.mark.parametrize("char", ["é", "中", "😀"])
def test_multibyte_character_split_at_every_byte_offset(char):
    payload = json.dumps({"text": f"a{char}b"}, ensure_ascii=False)
    stream = f"data: {payload}\n\n".encode()
    start = stream.index(char.encode())
    for cut in range(start + 1, start + len(char.encode())):
        events, _ = decode(stream[:cut], stream[cut:])
        assert events == [ServerSentEvent(data=payload)]
        assert events[0].json() == {"text": f"a{char}b"}
    assert decode(*one_byte_at_a_time(stream))[0] == [ServerSentEvent(data=payload)]


def test_unicode_line_separators_inside_json_are_not_line_ends():
    text = "one\u2028two\u2029three\u0085four\x0bfive\x0csix"
    payload = json.dumps({"text": text}, ensure_ascii=False)
    events, decoder = decode(f"data: {payload}\n\n".encode())
    assert len(events) == 1
    assert events[0].data == payload
    assert events[0].json() == {"text": text}
    assert not decoder.incomplete


def test_invalid_utf8_is_replaced_not_raised():
    events, _ = decode(b"data: \xff\xfe ok\n\n")
    assert events == [ServerSentEvent(data="\ufffd\ufffd ok")]


def test_bom_is_stripped_only_at_the_very_start():
    assert decode(b"\xef\xbb\xbfdata: x\n\n")[0] == [ServerSentEvent(data="x")]
    # Split across chunks too.
    assert decode(b"\xef", b"\xbb", b"\xbfdata: x\n\n")[0] == [ServerSentEvent(data="x")]
    # Without the BOM stripped, the first field name would be "\ufeffdata" and be ignored;
    # a second BOM is not stripped, so that line is an unknown field.
    assert decode(b"\xef\xbb\xbf\xef\xbb\xbfdata: x\n\ndata: y\n\n")[0] == [
        ServerSentEvent(data="y")]
    # A stream that merely starts with the BOM's first byte is not swallowed.
    assert decode(b"\xef\n", b"data: z\n\n")[0] == [ServerSentEvent(data="z")]


def test_exactly_one_space_after_the_colon_is_removed():
    events, _ = decode(b"data:x\n\ndata:  x\n\ndata: \n\nevent:e\ndata:\tx \n\n")
    assert events == [ServerSentEvent(data="x"), ServerSentEvent(data=" x"),
                      ServerSentEvent(data=""), ServerSentEvent("e", "\tx ")]
    # Only the first colon separates name from value.
    assert decode(b"data: a: b\n\n")[0] == [ServerSentEvent(data="a: b")]


def test_unknown_fields_and_empty_events_are_ignored_and_event_type_resets():
    events, _ = decode(b"foo: bar\nDATA: no\ndata : no\n\n"  # no data: nothing dispatched
                       b"event: dropped\n\n"  # empty data: type resets without dispatch
                       b"data: 1\n\n"
                       b"event: named\ndata: 2\n\n"
                       b"data: 3\n\n")  # type reset after dispatch
    assert events == [ServerSentEvent("message", "1"), ServerSentEvent("named", "2"),
                      ServerSentEvent("message", "3")]


def test_event_without_final_blank_line_is_not_dispatched():
    decoder = SSEDecoder()
    assert decoder.feed(b"data: 1\n\ndata: 2\n") == [ServerSentEvent(data="1")]
    assert decoder.flush() == []
    assert decoder.incomplete is True
    # An unterminated last line counts too.
    _, decoder = decode(b"data: 1\n\ndata: 2")
    assert decoder.incomplete is True
    # A complete stream leaves it False.
    events, decoder = decode(b"data: 1\n\n")
    assert events == [ServerSentEvent(data="1")] and decoder.incomplete is False
    assert SSEDecoder().incomplete is False
    _, decoder = decode(b"")
    assert decoder.incomplete is False


def test_id_persists_across_events_and_nul_ids_are_ignored():
    events, _ = decode(b"data: a\n\n"
                       b"id: 1\ndata: b\n\n"
                       b"data: c\n\n"  # keeps id 1
                       b"id: 2\n\n"  # no data: no event, but the last id becomes 2
                       b"data: d\n\n"
                       b"id: bad\x00id\ndata: e\n\n"  # NUL: ignored
                       b"id\ndata: f\n\n")  # empty id resets to ""
    assert [(e.data, e.id) for e in events] == [("a", None), ("b", "1"), ("c", "1"),
                                                ("d", "2"), ("e", "2"), ("f", "")]


def test_retry_is_parsed_only_when_all_ascii_digits():
    events, _ = decode(b"retry: 3000\ndata: a\n\n"
                       b"data: b\n\n"  # retry belongs to the event that carried it
                       b"retry: 12a\ndata: c\n\n"
                       b"retry: -5\ndata: d\n\n"
                       b"retry:\ndata: e\n\n"
                       b"retry: \xd9\xa3\ndata: f\n\n"  # Arabic-Indic digit three: not ASCII
                       b"retry:0\ndata: g\n\n")
    assert [(e.data, e.retry) for e in events] == [("a", 3000), ("b", None), ("c", None),
                                                   ("d", None), ("e", None), ("f", None),
                                                   ("g", 0)]


FIXED_STREAMS = [
    OPENAI_STREAM,
    ANTHROPIC_STREAM,
    b"\xef\xbb\xbf: hi\r\nid: 7\rretry: 10\revent: x\r\ndata: \xf0\x9f\x98\x80\r\r\ndata: 2\n\r",
    b"data: a\r\n\r\ndata: b\r\r: c\n\ndata: \xe2\x80\xa8\xc2\x85\n\ndata: tail",
]


@pytest.mark.parametrize("stream", FIXED_STREAMS, ids=["openai", "anthropic", "mixed", "tail"])
def test_any_fragmentation_gives_the_same_events(stream):
    reference, ref_decoder = decode(stream)
    assert reference  # the streams do produce events
    rng = random.Random(20240611)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(stream)), rng.randint(1, min(12, len(stream) - 1))))
        chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)])]
        assert b"".join(chunks) == stream
        events, decoder = decode(*chunks)
        assert events == reference
        assert decoder.incomplete == ref_decoder.incomplete
        assert decoder.comments == ref_decoder.comments
