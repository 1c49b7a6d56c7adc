"""A provider (or a proxy in front of it) that echoes the request's key, anywhere: the key never
reaches what Outpost shows, stores or logs. And a reply whose stop reason arrived is complete.

The fault server (a real HTTP server on loopback) plays the echoing provider for both wire
formats: it reads the key from the request it got (``Authorization`` / ``x-api-key``) and sends
it back in the streamed text (split across two deltas), in an error event before and after the
text, and in rate-limit headers.
"""
from __future__ import annotations

import itertools
import threading

import httpx
import pytest

from app.chat.connectivity import Connectivity
from app.chat.router import RoutedEngine
from app.config.providers import ProviderConfig
from app.domain.errors import (
    AuthError,
    ConnectionFailed,
    OutpostError,
    StreamInterrupted,
)
from app.domain.messages import (
    ChatMessage,
    ChatRequest,
    Finished,
    FinishReason,
    Retrying,
    Role,
    Seam,
    TextDelta,
    Usage,
    accumulate,
)
from app.domain.secrets_mask import REDACTED, SecretMask
from app.storage.ledger import UsageLedger
from app.storage.store import Store
from engines.anthropic import AnthropicEngine
from engines.http_policy import AttemptRecord, RetryPolicy, Timeouts
from engines.openai_compat import OpenAICompatEngine
from tests.fault_server import Custom, ErrorEvent, Exchange, Normal, fault_server
from tests.support import ScriptedEngine

pytestmark = pytest.mark.timeout(60)

KEY = "sk-echo-test-7e6d5c4b3a29180fKEYZ"
FAST = RetryPolicy(initial_backoff=0.01, max_backoff=0.05, jitter=0.0)
TIMEOUTS = Timeouts(connect=1, first_token=3, idle=2)


def make_request() -> ChatRequest:
    return ChatRequest(model="test-model", messages=(ChatMessage(Role.USER, "Say hello."),))


def check_contract(events: list) -> None:
    """Retrying* (a cloud engine's retries, before any text), TextDelta*, then exactly one
    Usage, then exactly one Finished (engines.base)."""
    kinds = [type(e) for e in events]
    assert kinds[-2:] == [Usage, Finished], kinds
    retries = len(kinds) - len(list(itertools.dropwhile(lambda k: k is Retrying, kinds)))
    assert all(k is TextDelta for k in kinds[retries:-2]), kinds


def key_of(ex: Exchange) -> str:
    """The key the client sent, as the provider (or a proxy) sees it."""
    headers = ex.request.headers
    return headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ")


def echo_in_text(ex: Exchange) -> None:
    key = key_of(ex)
    Normal(chunks=("Your key is ", key[:9], key[9:], ". Keep it safe.")).stream(ex)


def echo_in_error_after_text(ex: Exchange) -> None:
    ErrorEvent(after=2, chunks=("Partial ", "answer"), error_type="invalid_request_error",
               message=f"Key {key_of(ex)} may not use this model.").stream(ex)


def echo_in_error_before_text(ex: Exchange) -> None:
    ErrorEvent(after=0, error_type="authentication_error",
               message=f"Incorrect API key provided: {key_of(ex)}.").stream(ex)


def echo_in_headers(ex: Exchange) -> None:
    key = key_of(ex)
    Normal(headers={"x-ratelimit-remaining-requests": f"99; key={key}",
                    "anthropic-ratelimit-requests-remaining": key,
                    "retry-after": key}).stream(ex)


def stop_reason_without_terminal_event(cut: bool):
    """Text, then the stop reason with the usage (Anthropic ``message_delta`` end_turn; OpenAI
    the finish_reason and usage chunks), then no ``message_stop`` / ``[DONE]``: the body ends,
    or (``cut``) the connection is cut."""

    def fn(ex: Exchange) -> None:
        ex.send_head(200, {})
        usage = (12, 3)
        for event in ex.wire.opening(usage):
            ex.send_event(event)
        for chunk in ("Hello", " there", "."):
            ex.send_event(ex.wire.text(chunk))
        for event in ex.wire.closing("stop", usage)[:-1]:  # all but the terminal event
            ex.send_event(event)
        if cut:
            ex.cut()
        ex.end()

    return Custom(fn, name="no_terminal_event")


def engine_for(wire: str, url: str, records: list, cls=None, key: str = KEY):
    options = dict(timeouts=TIMEOUTS, policy=FAST, on_attempt=records.append)
    if wire == "openai":
        config = ProviderConfig("echo", "openai", url + "/v1", "test-model")
        return (cls or OpenAICompatEngine)(config, key, **options)
    config = ProviderConfig("echo-a", "anthropic", url, "claude-test")
    return (cls or AnthropicEngine)(config, key, **options)


@pytest.fixture(params=["openai", "anthropic"])
def wire(request) -> str:
    return request.param


def run(engine) -> list:
    events = list(engine.stream(make_request(), threading.Event()))
    check_contract(events)
    return events


def test_a_key_echoed_in_the_text_is_masked_even_split_across_deltas(wire):
    records: list[AttemptRecord] = []
    with fault_server() as server:
        server.script([Custom(echo_in_text)])
        engine = engine_for(wire, server.url, records)
        try:
            events = run(engine)
        finally:
            engine.close()
    assert server.requests[0].headers.get("x-api-key", server.requests[0].headers.get(
        "authorization")).endswith(KEY)  # the server really had the key to echo
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert "".join(deltas) == f"Your key is {REDACTED}. Keep it safe."
    assert deltas[0] == "Your key is "  # ordinary text is not held back
    assert not any(KEY[:9] in d or KEY[9:] in d for d in deltas)
    assert events[-1].reason is FinishReason.STOP


def test_a_key_echoed_in_an_error_event_after_text_is_masked(wire):
    records: list[AttemptRecord] = []
    with fault_server() as server:
        server.script([Custom(echo_in_error_after_text)])
        engine = engine_for(wire, server.url, records)
        try:
            events = run(engine)
        finally:
            engine.close()
    finished = events[-1]
    assert isinstance(finished, Finished) and finished.reason is FinishReason.ERROR
    assert isinstance(finished.error, StreamInterrupted)
    assert f"Key {REDACTED} may not use this model." in str(finished.error)
    assert KEY not in str(finished.error) and KEY not in repr(finished.error.args)
    assert finished.error.partial == "Partial answer"


def test_a_key_echoed_in_an_error_event_before_any_text_is_masked(wire):
    records: list[AttemptRecord] = []
    with fault_server() as server:
        server.script([Custom(echo_in_error_before_text)])
        engine = engine_for(wire, server.url, records)
        try:
            with pytest.raises(AuthError) as raised:
                list(engine.stream(make_request(), threading.Event()))
        finally:
            engine.close()
    assert f"Incorrect API key provided: {REDACTED}." in str(raised.value)
    assert KEY not in str(raised.value) and KEY not in repr(raised.value.args)


def test_a_key_echoed_in_rate_limit_headers_never_reaches_the_request_log(wire, tmp_path):
    store = Store(tmp_path / "outpost.db")
    ledger = UsageLedger(store, "tester")
    with fault_server() as server:
        server.script([Custom(echo_in_headers)])
        engine = engine_for(wire, server.url, [])
        engine.on_attempt = ledger.record
        try:
            run(engine)
        finally:
            engine.close()
    assert all(KEY not in v for v in engine.rate_limits.values())
    assert engine.rate_limits["anthropic-ratelimit-requests-remaining"] == REDACTED
    rows = store.request_log()
    assert len(rows) == 1
    assert rows[0]["rate_limits"]["x-ratelimit-remaining-requests"] == f"99; key={REDACTED}"
    assert KEY not in repr(rows)
    assert (tmp_path / "outpost.db-wal").exists()  # still open: the WAL holds the rows
    for path in tmp_path.rglob("*"):  # the database, its -wal and -shm
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


def test_the_ledger_masks_headers_whoever_built_the_record(tmp_path):
    store = Store(tmp_path / "outpost.db")
    SecretMask([KEY])  # (a mask alone remembers nothing: the engine or the key store does)
    engine_for("openai", "http://127.0.0.1:9", [])  # building an engine remembers its key
    UsageLedger(store, "tester").record(AttemptRecord(
        attempt=1, status=200, latency_ms=1.0, error_kind=None, provider="p", model="m",
        rate_limits={"x-ratelimit-limit-requests": KEY}))
    assert store.request_log()[0]["rate_limits"] == {"x-ratelimit-limit-requests": REDACTED}


class _BadHeaderEngine(OpenAICompatEngine):
    """Builds a header HTTP cannot carry, holding the key (as a buggy proxy setting might)."""

    bad = ""

    def build_request(self, request):
        url, headers, body = super().build_request(request)
        return url, {**headers, "X-Forwarded-Key": self.bad.format(key=self.api_key)}, body


@pytest.mark.parametrize("bad", ["{key}\r\nX-Injected: 1", "é{key}"], ids=["crlf", "non-ascii"])
def test_the_http_librarys_header_messages_are_never_passed_on(bad):
    """h11 quotes an illegal header value in its message, and httpx raises UnicodeEncodeError on
    a non-ASCII one: both become one sentence of Outpost's, without the key."""
    _BadHeaderEngine.bad = bad
    with fault_server() as server:
        engine = engine_for("openai", server.url, [], cls=_BadHeaderEngine)
        try:
            with pytest.raises(ConnectionFailed) as raised:
                list(engine.stream(make_request(), threading.Event()))
        finally:
            engine.close()
        assert server.chat_requests() == []  # nothing was sent
    assert str(raised.value) == ("Outpost could not send the request to echo: a request header "
                                 "has characters HTTP does not allow; check the API key with "
                                 "`outpost keys set echo`.")
    message = OpenAICompatEngine(ProviderConfig("echo", "openai", "http://127.0.0.1:9/v1", "m"),
                                 KEY)._connection_error(httpx.LocalProtocolError(
                                     f"Illegal header value b'Bearer {KEY}\\r\\n'"))
    assert KEY not in str(message)


def test_an_engine_refuses_a_key_with_a_line_break_without_printing_it():
    with pytest.raises(OutpostError) as refused:
        OpenAICompatEngine(ProviderConfig("echo", "openai", "http://127.0.0.1:9/v1", "m"),
                           f"sk-abc\r\n{KEY}")
    assert str(refused.value).startswith("The API key for echo contains a line break at "
                                         "character 7")
    assert KEY not in str(refused.value) and "sk-abc" not in str(refused.value)


# -- a reply whose stop reason arrived is complete --------------------------------------------
@pytest.mark.parametrize("cut", [False, True], ids=["body-ends", "connection-cut"])
def test_a_reply_whose_stop_reason_arrived_is_complete(wire, cut):
    records: list[AttemptRecord] = []
    with fault_server() as server:
        server.script([stop_reason_without_terminal_event(cut)])
        engine = engine_for(wire, server.url, records)
        try:
            events = run(engine)
        finally:
            engine.close()
    reply = accumulate(events)
    assert reply.text == "Hello there."
    assert reply.finish.reason is FinishReason.STOP and reply.finish.error is None
    usage = [e for e in events if isinstance(e, Usage)][0]
    assert (usage.prompt_tokens, usage.completion_tokens, usage.estimated) == (12, 3, False)
    assert len(server.chat_requests()) == 1 and records[-1].error_kind is None


def test_on_auto_the_local_model_never_appends_to_a_finished_reply():
    local = ScriptedEngine([TextDelta(" and the local model went on"), Usage(1, 6),
                            Finished(FinishReason.STOP)])
    with fault_server() as server:
        server.script([stop_reason_without_terminal_event(cut=False)])
        cloud = engine_for("anthropic", server.url, [])
        routed = RoutedEngine(cloud, lambda: local, Connectivity(), hedge_after_s=None)
        try:
            events = list(routed.stream(make_request(), threading.Event()))
        finally:
            routed.close()
    reply = accumulate(events)
    assert reply.text == "Hello there."
    assert not [e for e in events if isinstance(e, Seam)]
    assert reply.finish.reason is FinishReason.STOP
    assert local.requests == []  # never asked to continue
    assert routed.outcome().answered.engine == "echo-a"
