"""Failures are said as they happened, in plain sentences (the window's banner, the outbox, the
CLI print them as they are; a route reason or a link state says the error's kind in words):

* broken JSON in the stream is a garbled stream (``UnreadableStream``), not a broken connection,
  and its text is never dropped silently;
* a provider's error event in the middle of a reply (Anthropic's "overloaded") is the provider's
  doing: the interruption carries its kind ("the provider is overloaded or down");
* a reset or closed connection is "The connection to <provider> was reset ...", never
  "[Errno 104]"; the OS's or httpx's own words ("Connection reset by peer", "peer closed
  connection without sending complete message body: incomplete chunked read") stay in the
  error's ``detail`` (the log), and are in parentheses at the end of the sentence only when it
  cannot say what happened itself (a TLS failure, a failure of no known kind).

The fault server plays the provider; a scripted engine plays the local model."""
from __future__ import annotations

import re
import threading

import httpx
import pytest

from app.chat.connectivity import Connectivity, LinkState
from app.chat.router import RoutedEngine
from app.chat.service import ChatService, TurnOptions
from app.config.providers import ProviderConfig
from app.config.settings import Settings
from app.domain.errors import (
    ConnectionFailed,
    ProviderUnavailable,
    StreamInterrupted,
    UnreadableStream,
    kind_words,
)
from app.domain.messages import Finished, FinishReason, TextDelta, Usage
from app.domain.routes import CONTINUABLE_ERRORS
from app.storage.store import Store
from engines.anthropic import AnthropicEngine
from engines.http_policy import RetryPolicy, Timeouts
from tests.engines.test_key_echo import check_contract, engine_for, make_request
from tests.fault_server import BrokenJson, Custom, Cut, ErrorEvent, Exchange, fault_server
from tests.support import ScriptedEngine, fault_cloud, reply

pytestmark = pytest.mark.timeout(60)

OS_JARGON = re.compile(r"\[Errno|errno|\[SSL|_ssl\.c")
DETAIL_AT_END = re.compile(r"^[^()]+ \([^()]+\)\.$")  # a sentence, then (the OS's words).
PLAIN = re.compile(r"^[^()]+\.$")  # a sentence, nothing of the library's words


def play(wire: str, *scenarios, records: list | None = None):
    """The engine's events against ``scenarios``, or the error it raised before any text."""
    with fault_server() as server:
        server.script(list(scenarios))
        engine = engine_for(wire, server.url, [] if records is None else records)
        try:
            events = list(engine.stream(make_request(), threading.Event()))
        except ConnectionFailed as exc:
            return exc, len(server.chat_requests())
        except UnreadableStream as exc:
            return exc, len(server.chat_requests())
        finally:
            engine.close()
    check_contract(events)
    return events, None


def text_of(events) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def says_no_broken_connection(text: str) -> None:
    assert "connection" not in text.lower(), text


# -- broken JSON ----------------------------------------------------------------------------------
@pytest.mark.parametrize("then", ["end", "rest"])
@pytest.mark.parametrize("wire", ["openai", "anthropic"])
def test_broken_json_mid_stream_is_a_garbled_stream_not_a_broken_connection(wire, then):
    events, _ = play(wire, BrokenJson(after=2, then=then))
    assert text_of(events) == "Hello from"  # what came before it; nothing after a gap
    finished = events[-1]
    assert finished.reason is FinishReason.ERROR
    error = finished.error
    assert isinstance(error, StreamInterrupted) and isinstance(error, CONTINUABLE_ERRORS)
    assert isinstance(error.cause, UnreadableStream)
    assert error.kind == "unreadable_stream"
    assert "garbled" in kind_words(error.kind)
    says_no_broken_connection(kind_words(error.kind))
    says_no_broken_connection(str(error))
    assert "cannot read" in str(error) and "broken JSON" in str(error)


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
def test_broken_json_before_any_text_is_an_unreadable_stream(wire):
    records: list = []
    error, sent = play(wire, BrokenJson(after=0), records=records)
    assert isinstance(error, UnreadableStream) and not isinstance(error, ConnectionFailed)
    assert sent == 1  # the provider answered: asking again would not change it
    assert records[0].error_kind == "unreadable_stream"
    says_no_broken_connection(str(error))


def _data_that_is_not_json(ex: Exchange) -> None:
    ex.send_head(200, {})
    for event in ex.wire.opening((12, 2)):
        ex.send_event(event)
    ex.send_event(ex.wire.text("Still "))
    ex.send_event(["data: keep-alive"])  # not meant as JSON: passed over, as before
    ex.send_event(ex.wire.text("here."))
    for event in ex.wire.closing("stop", (12, 2)):
        ex.send_event(event)
    ex.end()


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
def test_data_that_is_not_json_at_all_is_still_passed_over(wire):
    events, _ = play(wire, Custom(_data_that_is_not_json))
    assert text_of(events) == "Still here." and events[-1].reason is FinishReason.STOP


def _garbled_usage_after_the_stop(ex: Exchange) -> None:
    ex.send_head(200, {})
    ex.send_event(ex.wire.text("Whole answer."))
    ex.send_event(ex.wire.closing("stop", None)[0])  # the finish reason
    ex.send_event(['data: {"id":"x","choices":[],"usage":{"prompt_tok'])
    ex.send_event(["data: [DONE]"])
    ex.end()


def test_a_garbled_event_after_the_stop_reason_leaves_the_reply_whole():
    events, _ = play("openai", Custom(_garbled_usage_after_the_stop))
    assert text_of(events) == "Whole answer." and events[-1].reason is FinishReason.STOP
    [usage] = [e for e in events if isinstance(e, Usage)]
    assert usage.estimated


# -- the provider's error event -------------------------------------------------------------------
@pytest.mark.parametrize("wire", ["openai", "anthropic"])
def test_an_overloaded_event_mid_reply_is_the_provider_not_the_connection(wire):
    events, _ = play(wire, ErrorEvent(after=2, error_type="overloaded_error",
                                      message="Overloaded"))
    error = events[-1].error
    assert isinstance(error, StreamInterrupted) and isinstance(error.cause, ProviderUnavailable)
    assert error.kind == "provider_unavailable"
    assert "overloaded" in kind_words(error.kind)
    says_no_broken_connection(kind_words(error.kind))
    says_no_broken_connection(str(error))
    assert "overloaded" in str(error)


# -- a reset or closed connection -----------------------------------------------------------------
@pytest.mark.parametrize("wire", ["openai", "anthropic"])
def test_a_reset_mid_reply_is_said_in_plain_words(wire):
    events, _ = play(wire, Cut(after=2, rst=True))
    error = events[-1].error
    assert isinstance(error, StreamInterrupted) and isinstance(error.cause, ConnectionFailed)
    assert error.kind == "stream_interrupted"  # here the connection did break
    text = str(error)
    assert "was reset" in text and not OS_JARGON.search(text), text
    assert PLAIN.match(text) and error.cause.detail, text


@pytest.mark.parametrize("rst", [True, False], ids=["reset", "closed"])
@pytest.mark.parametrize("wire", ["openai", "anthropic"])
def test_a_connection_lost_before_any_text_is_said_in_plain_words(wire, rst):
    cut = Cut(after=0, rst=rst)
    error, sent = play(wire, cut, cut, cut)
    assert type(error) is ConnectionFailed and sent == 3  # retried, as a dropped link is
    text = str(error)
    assert text.startswith(f"The connection to {error_provider(wire)} "), text
    assert ("was reset" if rst else "closed before the reply was complete") in text
    assert not OS_JARGON.search(text) and PLAIN.match(text), text


def _hang_up(rst: bool):
    def fn(ex: Exchange) -> None:
        ex.cut(rst)  # before any response head

    return Custom(fn, name="hang_up")


@pytest.mark.parametrize("rst", [True, False], ids=["reset", "closed"])
@pytest.mark.parametrize("wire", ["openai", "anthropic"])
def test_a_connection_lost_before_the_answer_is_said_in_plain_words(wire, rst):
    error, sent = play(wire, _hang_up(rst), _hang_up(rst), _hang_up(rst))
    assert type(error) is ConnectionFailed and sent == 3
    text = str(error)
    name = error_provider(wire)
    expected = (f"The connection to {name} was reset" if rst
                else f"{name} closed the connection without answering")
    assert text.startswith(expected), text
    assert not OS_JARGON.search(text) and PLAIN.match(text), text


def error_provider(wire: str) -> str:
    return "echo" if wire == "openai" else "echo-a"


def test_a_refused_connection_is_still_said_as_before():
    with fault_server() as server:
        url = server.url
    engine = engine_for("openai", url, [])  # the server is gone: nothing listens there
    try:
        with pytest.raises(ConnectionFailed) as caught:
            list(engine.stream(make_request(), threading.Event()))
    finally:
        engine.close()
    assert "connection refused" in str(caught.value) and not OS_JARGON.search(str(caught.value))


@pytest.mark.parametrize("words", ["[Errno -2] Name or service not known",
                                   "[Errno -3] Temporary failure in name resolution",
                                   "[Errno -5] No address associated with hostname"])
def test_a_name_that_could_not_be_looked_up_is_said_so(words):
    """A machine with no DNS server at all says "Temporary failure in name resolution", which
    fell through to the OS's words (also for `models download`, which words it alike)."""
    engine = engine_for("openai", "http://llm.example:8080", [])
    try:
        text = str(engine._connection_error(httpx.ConnectError(words)))
    finally:
        engine.close()
    assert text == ("Could not connect to echo: the address of http://llm.example:8080/v1 could "
                    "not be looked up. Offline, or a typo in the base URL?"), text


# -- what Auto says about it ---------------------------------------------------------------------
def routed_reason(tmp_path, cloud_of, scenario) -> tuple[str, LinkState]:
    store = Store(tmp_path / "outpost.db")
    links = Connectivity()
    with fault_server() as server:
        server.script([scenario])
        routed = RoutedEngine(cloud_of(server.url, store),
                              lambda: ScriptedEngine(reply(" and the rest.")), links,
                              hedge_after_s=None, on_attempt=store.log_attempt)
        turn = ChatService(store, Settings()).start_turn(
            "Say hello.", model=routed.info.model,
            options=TurnOptions(max_tokens=64, temperature=0.0))
        try:
            events = list(turn.run(routed, threading.Event()))
        finally:
            routed.close()
    assert isinstance(events[-1], Finished)
    message = store.get_message(turn.assistant_message_id)
    assert message.engine == "local" and message.content.startswith("Hello from")
    store.close()
    return message.route_reason, links.state("fault")


def anthropic_cloud(url: str, store):
    return AnthropicEngine(ProviderConfig("fault", "anthropic", url, "claude-test"), "sk-test",
                           policy=RetryPolicy(initial_backoff=0.01, max_backoff=0.02),
                           timeouts=Timeouts(connect=1, first_token=3, idle=2),
                           on_attempt=store.log_attempt)


def test_auto_says_an_overloaded_provider_broke_the_stream_not_the_connection(tmp_path):
    reason, link = routed_reason(tmp_path, anthropic_cloud, ErrorEvent(after=2))
    assert "continued locally" in reason and f"({kind_words('provider_unavailable')})" in reason
    assert "connection" not in reason
    assert link is LinkState.DEGRADED


def test_auto_says_a_garbled_stream_broke_the_reply_not_the_connection(tmp_path):
    reason, _ = routed_reason(tmp_path, lambda url, store: fault_cloud(url + "/v1", store),
                              BrokenJson(after=2))
    assert "continued locally" in reason and f"({kind_words('unreadable_stream')})" in reason
    assert "connection" not in reason


def test_auto_still_says_a_reset_broke_the_connection(tmp_path):
    reason, _ = routed_reason(tmp_path, lambda url, store: fault_cloud(url + "/v1", store),
                              Cut(after=2, rst=True))
    assert "continued locally" in reason and "(the connection broke)" in reason


@pytest.mark.parametrize("exc, start, plain", [
    (httpx.ReadError("[Errno 104] Connection reset by peer"), "The connection to echo was reset",
     True),
    (httpx.RemoteProtocolError("Server disconnected without sending a response."),
     "echo closed the connection without answering", True),
    (httpx.WriteError("[Errno 32] Broken pipe"), "The connection to echo broke while", True),
    (httpx.ConnectError("[Errno 101] Network is unreachable"), "Could not connect to echo",
     True),
    (httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
                        "self-signed certificate (_ssl.c:1006)"),
     "Could not set up a secure connection to echo", False),
    (httpx.ReadError(""), "Could not connect to echo", False),
], ids=["reset", "disconnected", "broken-pipe", "no-route", "tls", "no-words"])
def test_what_the_library_says_becomes_a_plain_sentence(exc, start, plain):
    engine = engine_for("openai", "http://127.0.0.1:9", [])
    try:
        error = engine._connection_error(exc)
    finally:
        engine.close()
    text = str(error)
    assert text.startswith(start), text
    # the library's words only where the sentence cannot say it (TLS, no known kind)
    assert not OS_JARGON.search(text), text
    assert (PLAIN if plain else DETAIL_AT_END).match(text), text
    assert error.detail and not OS_JARGON.search(error.detail)


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
def test_a_chunked_body_cut_mid_reply_is_said_without_httpx_words(wire):
    """User trial 8: the banner, the bubble, `history show` and `outbox list` said "(peer
    closed connection without sending complete message body: incomplete chunked read)". The
    sentence says it plainly; httpx's words are the error's ``detail`` (the log)."""
    events, _ = play(wire, Cut(after=2, rst=False))
    error = events[-1].error
    assert isinstance(error, StreamInterrupted) and isinstance(error.cause, ConnectionFailed)
    text = str(error)
    assert text == (f"The reply from {error_provider(wire)} was cut off: the connection to "
                    f"{error_provider(wire)} closed before the reply was complete."), text
    assert "chunked" in error.cause.detail or "peer closed" in error.cause.detail
