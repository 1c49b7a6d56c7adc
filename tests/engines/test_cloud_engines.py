"""The two cloud engines on the wire, against the fault-injecting fake provider (fault_server.py).

Every test runs a real HTTP exchange on loopback: payload mapping, retries and their timing, the
Idempotency-Key, deadlines (connect, first token, idle), cancel, interrupted streams, error
mapping, usage, rate-limit headers and connection hygiene. Most are parametrized over both wire
formats (OpenAI-compatible and Anthropic). Deadlines are scaled down (idle 1 s, first token 2 s).

No test bounds the elapsed wall time from above (a busy machine only makes things slower): the
waits an engine makes between retries are read off its cancel Event (``WaitLog``), and a deadline
or a cancel is proved by what the server saw: the client hung up while the server was still
holding back what would have come next.
"""
from __future__ import annotations

import itertools
import re
import threading
import time

import pytest
from fault_server import (
    DEFAULT_CHUNKS,
    DEFAULT_TEXT,
    PROMPT_TOKENS,
    U2028_CHUNKS,
    UTF8_CHUNKS,
    CleanEOF,
    Custom,
    Cut,
    ErrorEvent,
    Exchange,
    FaultServer,
    JsonInsteadOfStream,
    Normal,
    Stall,
    Status,
    context_too_long,
    crlf,
    fault_server,
    keepalive_then_text,
    overloaded,
    overloaded_event,
    rate_limited,
    refused_url,
    server_error,
    slow_first_token,
    u2028,
    unauthorized,
    utf8_split,
)

from app.accounting.tokens import count_messages, count_text
from app.config.providers import ProviderConfig
from app.domain.errors import (
    AuthError,
    ConnectionFailed,
    ContextTooLong,
    NetworkIntercepted,
    OutpostError,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
    StreamInterrupted,
    TimeoutError_,
)
from app.domain.messages import (
    CancelWithReason,
    ChatMessage,
    ChatRequest,
    Finished,
    FinishReason,
    Retrying,
    Role,
    TextDelta,
    Usage,
    accumulate,
    estimate_tokens,
)
from engines.anthropic import AnthropicEngine
from engines.cloud import USER_AGENT
from engines.http_policy import AttemptRecord, RetryPolicy, Timeouts
from engines.openai_compat import OpenAICompatEngine

pytestmark = pytest.mark.timeout(30)

KEY = "sk-test-abcd1234"
FAST = RetryPolicy(initial_backoff=0.01, max_backoff=0.05, jitter=0.0)
TIMEOUTS = Timeouts(connect=1, first_token=2, idle=1)
SYSTEM = "You are terse."
PROMPT = "Say hello."


def make_request(**kw) -> ChatRequest:
    messages = kw.pop("messages", (ChatMessage(Role.SYSTEM, SYSTEM),
                                   ChatMessage(Role.USER, PROMPT)))
    return ChatRequest(model=kw.pop("model", "test-model"), messages=messages, **kw)


class Built:
    """An engine under test with the AttemptRecords it reported."""

    def __init__(self, engine, records: list[AttemptRecord]):
        self.engine = engine
        self.records = records

    def run(self, request: ChatRequest | None = None, cancel: threading.Event | None = None):
        events = list(self.engine.stream(request or make_request(), cancel or threading.Event()))
        check_contract(events)
        return events, accumulate(events)

    def fail(self, request: ChatRequest | None = None,
             cancel: threading.Event | None = None) -> OutpostError:
        """The stream must raise (no text ever reached the caller, only its retries were
        said): the error."""
        events: list = []
        with pytest.raises(OutpostError) as info:
            for event in self.engine.stream(request or make_request(),
                                            cancel or threading.Event()):
                events.append(event)
        assert all(isinstance(e, Retrying) for e in events), f"events before the error: {events}"
        return info.value

    def statuses(self) -> list[int | None]:
        return [r.status for r in self.records]


class WaitLog(threading.Event):
    """A cancel Event that notes each wait the engine makes on it: the backoff between retries
    waits on cancel, so that a stop wakes it. ``virtual``: a wait returns at once, as if its time
    had passed; ``stop_in_wait``: the user presses Stop during the first wait."""

    def __init__(self, virtual: bool = True, stop_in_wait: bool = False):
        super().__init__()
        self.virtual, self.stop_in_wait = virtual, stop_in_wait
        self.waits: list[float | None] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        if self.stop_in_wait:
            self.set()
        if self.virtual or self.is_set():
            return self.is_set()
        return super().wait(timeout)


def build(wire: str, server_url: str, **kw) -> Built:
    records: list[AttemptRecord] = []
    options = dict(api_key=KEY, timeouts=TIMEOUTS, policy=FAST, on_attempt=records.append)
    model = kw.pop("model", None)
    options.update(kw)
    if wire == "openai":
        config = ProviderConfig("fault", "openai", server_url + "/v1", "test-model")
        engine = OpenAICompatEngine(config, model=model, **options)
    else:
        config = ProviderConfig("fault-a", "anthropic", server_url, "claude-test")
        engine = AnthropicEngine(config, model=model, **options)
    return Built(engine, records)


def check_contract(events: list) -> None:
    """Retrying* (a cloud engine's retries, before any text), TextDelta*, then exactly one
    Usage, then exactly one Finished (engines.base)."""
    kinds = [type(e) for e in events]
    assert kinds[-2:] == [Usage, Finished], kinds
    retries = len(kinds) - len(list(itertools.dropwhile(lambda k: k is Retrying, kinds)))
    assert all(k is TextDelta for k in kinds[retries:-2]), kinds


@pytest.fixture
def server():
    with fault_server() as running:
        yield running


@pytest.fixture(params=["openai", "anthropic"])
def wire(request) -> str:
    return request.param


@pytest.fixture
def make(server: FaultServer, wire: str):
    """make(**engine options) -> Built, for this test's wire format; closed at teardown."""
    built: list[Built] = []

    def factory(**kw) -> Built:
        b = build(wire, server.url, **kw)
        built.append(b)
        return b

    yield factory
    for b in built:
        b.engine.close()


def provider_name(wire: str) -> str:
    return "fault" if wire == "openai" else "fault-a"


# -- payload mapping -----------------------------------------------------------------------------
def test_openai_payload_maps_every_parameter(server):
    built = build("openai", server.url)
    request = make_request(temperature=0.3, top_p=0.9, max_tokens=77, stop=("END", "STOP"),
                           presence_penalty=0.5, frequency_penalty=0.25, seed=42, user="user-7",
                           top_k=40)
    _, reply = built.run(request)
    built.engine.close()
    assert reply.text == DEFAULT_TEXT
    [sent] = server.requests
    assert (sent.method, sent.path) == ("POST", "/v1/chat/completions")
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["accept"] == "text/event-stream"
    assert sent.headers["content-type"] == "application/json"
    assert sent.headers["user-agent"] == USER_AGENT
    assert sent.idempotency_key == request.idempotency_key
    assert sent.json == {
        "model": "test-model",
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.3,
        "top_p": 0.9,
        "max_tokens": 77,
        "stop": ["END", "STOP"],
        "presence_penalty": 0.5,
        "frequency_penalty": 0.25,
        "seed": 42,
        "user": "user-7",
    }  # top_k is not an OpenAI parameter: not sent


def test_stop_sequences_beyond_openais_four_end_the_reply_in_outpost(server):
    """OpenAI takes at most 4 stop sequences: the first 4 are sent, and Outpost ends the reply
    at the others itself (split across deltas too), as the provider would: the stop is not
    shown, the reply is complete (stopped), and nothing after it reaches the caller."""
    built = build("openai", server.url)
    server.script([Normal(chunks=("Apples, pears", ", plu", "ms and", " more fruit"))])
    stops = ("a1", "b2", "c3", "d4", ", plums")
    _, reply = built.run(make_request(stop=stops))
    assert server.requests[0].json["stop"] == ["a1", "b2", "c3", "d4"]
    assert reply.text == "Apples, pears"
    assert reply.finish.reason is FinishReason.STOP
    server.script([Normal(chunks=("No stop ", "in thi", "s one."))])
    _, whole = built.run(make_request(stop=stops))
    built.engine.close()
    assert whole.text == "No stop in this one."
    assert whole.finish.reason is FinishReason.STOP


FRUIT = ("Apples, pears", ", plu", "ms and", " more fruit")
FIVE_STOPS = ("a1", "b2", "c3", "d4", ", plums")  # the fifth is not sent: Outpost watches it


def test_a_stop_outpost_watches_still_gets_the_providers_usage(server):
    """The provider never saw the fifth stop, so it generates (and bills) on to its own end:
    the rest of the stream is read, its text not shown, and the usage it reports at the end
    is the reply's (it was thrown away, and the tokens estimated from the shown text)."""
    built = build("openai", server.url)
    server.script([Normal(chunks=FRUIT, delay=0.05)])
    events, reply = built.run(make_request(stop=FIVE_STOPS))
    built.engine.close()
    assert reply.text == "Apples, pears" and reply.finish.reason is FinishReason.STOP
    assert reply.usage == Usage(PROMPT_TOKENS, len(FRUIT), estimated=False)
    assert not server.requests[0].disconnected  # read to its end
    [record] = built.records
    assert (record.prompt_tokens, record.completion_tokens, record.tokens_estimated) == (
        PROMPT_TOKENS, len(FRUIT), False)


def test_after_a_stop_outpost_watches_the_usage_is_waited_for_a_short_while_only(server):
    """A provider that goes on long after the stop: Outpost hangs up after
    ``usage_after_stop`` (the server still holding back the rest), the reply complete at the
    stop, its tokens estimated from all the text that came."""
    built = build("openai", server.url, timeouts=Timeouts(connect=1, first_token=60, idle=60,
                                                          usage_after_stop=0.2))
    server.script([Normal(chunks=("Apples, pears, plums and", " more fruit"), delay=20)])
    _, reply = built.run(make_request(stop=FIVE_STOPS))
    built.engine.close()
    assert reply.text == "Apples, pears" and reply.finish.reason is FinishReason.STOP
    assert reply.finish.error is None
    assert server.wait_disconnected(0)  # hung up while the rest was held back
    assert reply.usage.estimated and reply.usage.completion_tokens == count_text(
        "Apples, pears, plums and", "test-model").tokens


def test_a_stop_pressed_while_the_usage_is_read_leaves_the_reply_complete(server):
    """The reply ended at the stop; the user's Stop while the usage is read (text no longer
    comes) ends the reading, not the reply: complete, not cancelled."""
    built = build("openai", server.url, timeouts=LONG)
    server.script([Normal(chunks=("Apples, pears, plums and", " more fruit"), delay=20)])
    cancel = threading.Event()
    events = []
    for event in built.engine.stream(make_request(stop=FIVE_STOPS), cancel):
        events.append(event)
        if isinstance(event, TextDelta):
            cancel.set()
    built.engine.close()
    check_contract(events)
    reply = accumulate(events)
    assert reply.text == "Apples, pears" and reply.finish.reason is FinishReason.STOP
    assert reply.usage.estimated and server.wait_disconnected(0)


def test_openai_optional_parameters_are_not_sent_when_unset(server):
    built = build("openai", server.url)
    built.run(make_request())
    built.engine.close()
    body = server.requests[0].json
    for absent in ("stop", "presence_penalty", "frequency_penalty", "seed", "user", "top_k",
                   "max_completion_tokens"):
        assert absent not in body
    assert body["max_tokens"] == 512


@pytest.mark.parametrize("model,key,other", [("o3-mini", "max_completion_tokens", "max_tokens"),
                                             ("gpt-4o-mini", "max_tokens",
                                              "max_completion_tokens")])
def test_openai_reasoning_models_take_max_completion_tokens(server, model, key, other):
    built = build("openai", server.url, model=model)
    built.run(make_request(max_tokens=33))
    built.engine.close()
    body = server.requests[0].json
    assert body["model"] == model
    assert body[key] == 33 and other not in body


def test_anthropic_payload_and_headers(server):
    built = build("anthropic", server.url)
    request = make_request(
        messages=(ChatMessage(Role.SYSTEM, SYSTEM), ChatMessage(Role.SYSTEM, "Be kind."),
                  ChatMessage(Role.USER, PROMPT), ChatMessage(Role.ASSISTANT, "Hi."),
                  ChatMessage(Role.USER, "Again."), ChatMessage(Role.USER, "Please.")),
        temperature=1.7, top_p=0.8, max_tokens=99, stop=("END",), top_k=40, user="user-7",
        presence_penalty=0.5, seed=3)
    _, reply = built.run(request)
    built.engine.close()
    assert reply.text == DEFAULT_TEXT
    [sent] = server.requests
    assert (sent.method, sent.path) == ("POST", "/v1/messages")
    assert sent.headers["x-api-key"] == KEY
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in sent.headers
    assert sent.idempotency_key == request.idempotency_key
    assert sent.json == {
        "model": "claude-test",
        "max_tokens": 99,
        "messages": [{"role": "user", "content": PROMPT},
                     {"role": "assistant", "content": "Hi."},
                     {"role": "user", "content": "Again.\n\nPlease."}],
        "system": f"{SYSTEM}\n\nBe kind.",
        "stream": True,
        "top_p": 0.8,  # narrowed, so sent instead of temperature (newer models refuse both)
        "top_k": 40,
        "stop_sequences": ["END"],
        "metadata": {"user_id": "user-7"},
    }  # no presence_penalty / seed: not Anthropic parameters


def test_anthropic_sends_max_tokens_always_and_nothing_unset(server):
    built = build("anthropic", server.url)
    built.run(make_request(messages=(ChatMessage(Role.USER, PROMPT),), temperature=0.2))
    built.engine.close()
    body = server.requests[0].json
    assert body["max_tokens"] == 512 and body["temperature"] == 0.2
    for absent in ("system", "top_k", "stop_sequences", "metadata"):
        assert absent not in body


# -- a normal reply ------------------------------------------------------------------------------
def test_normal_reply_text_usage_and_one_attempt(make, server, wire):
    built = make()
    events, reply = built.run()
    assert [e.text for e in events if isinstance(e, TextDelta)] == list(DEFAULT_CHUNKS)
    assert reply.text == DEFAULT_TEXT
    assert reply.finish.reason is FinishReason.STOP and reply.finish.error is None
    assert reply.finish.ttft_ms is not None and reply.finish.ttft_ms >= 0
    assert reply.usage == Usage(PROMPT_TOKENS, len(DEFAULT_CHUNKS), estimated=False)
    [record] = built.records
    assert (record.attempt, record.status, record.error_kind) == (1, 200, None)
    assert record.provider == provider_name(wire)
    assert record.idempotency_key == server.requests[0].idempotency_key


def test_usage_is_estimated_when_the_provider_reports_none(make, server):
    """Counted as the meter and the context fit counted the prompt before sending: characters
    / 4 with the per-message overhead for a model tiktoken does not know."""
    server.script([Normal(usage=False)])
    built = make()
    _, reply = built.run()
    messages = make_request().messages
    assert reply.text == DEFAULT_TEXT
    assert reply.usage.estimated is True
    assert reply.usage.completion_tokens == estimate_tokens(DEFAULT_TEXT)
    assert reply.usage.prompt_tokens == built.engine.count_prompt(messages)[0] == \
        count_messages(messages, built.engine.model).tokens
    assert reply.usage.prompt_tokens > estimate_tokens(SYSTEM + PROMPT)  # the overhead too
    [record] = built.records
    assert (record.prompt_tokens, record.tokens_estimated) == (reply.usage.prompt_tokens, True)


def test_an_unreported_prompt_is_the_exact_count_shown_before_sending(server):
    """An OpenAI model's prompt is counted exactly before sending (tiktoken); a provider that
    reports no usage leaves that figure, not a chars/4 guess, in the ledger and the quotas."""
    server.script([Normal(usage=False)])
    built = build("openai", server.url, model="gpt-4o-mini")
    request = make_request(model="gpt-4o-mini",
                           messages=(ChatMessage(Role.USER, "Hello there"),))
    tokens, exact = built.engine.count_prompt(request.messages)
    _, reply = built.run(request)
    built.engine.close()
    assert exact and reply.usage.prompt_tokens == tokens
    assert tokens != estimate_tokens("Hello there")
    assert reply.usage.completion_tokens == count_text(DEFAULT_TEXT, "gpt-4o-mini").tokens
    assert reply.usage.estimated is True  # not reported: counted by Outpost, and said so
    [record] = built.records
    assert (record.prompt_tokens, record.tokens_estimated) == (tokens, True)


def test_finish_reason_length(make, server):
    server.script([Normal(finish="length")])
    _, reply = make().run()
    assert reply.text == DEFAULT_TEXT
    assert reply.finish.reason is FinishReason.LENGTH and reply.finish.error is None


@pytest.mark.parametrize("scenario,chunks", [(crlf, DEFAULT_CHUNKS), (utf8_split, UTF8_CHUNKS),
                                             (u2028, U2028_CHUNKS)],
                         ids=["crlf", "utf8_split", "u2028"])
def test_wire_encodings_give_the_exact_text(make, server, scenario, chunks):
    server.script([scenario()])
    events, reply = make().run()
    assert [e.text for e in events if isinstance(e, TextDelta)] == list(chunks)
    assert reply.text == "".join(chunks)
    assert reply.finish.reason is FinishReason.STOP
    assert reply.usage.estimated is False


def test_close_delimited_body_is_read_to_the_end(make, server):
    server.script([Normal(framing="close")])
    _, reply = make().run()
    assert reply.text == DEFAULT_TEXT and reply.finish.reason is FinishReason.STOP


def test_rate_limit_headers_are_kept(make, server, wire):
    if wire == "openai":
        headers = {"x-ratelimit-remaining-requests": "99", "x-ratelimit-limit-tokens": "1000"}
    else:
        headers = {"anthropic-ratelimit-requests-remaining": "49",
                   "anthropic-ratelimit-tokens-reset": "2030-01-01T00:00:00Z"}
    server.script([Normal(headers={**headers, "x-unrelated": "1"})])
    built = make()
    built.run()
    assert built.engine.rate_limits == headers
    assert built.records[0].rate_limits == headers


# -- retries -------------------------------------------------------------------------------------
def test_the_same_idempotency_key_on_every_attempt(make, server):
    server.script([server_error(500), server_error(503), Normal()])
    built = make()
    request = make_request()
    _, reply = built.run(request)
    assert reply.text == DEFAULT_TEXT
    keys = [r.idempotency_key for r in server.requests]
    assert keys == [request.idempotency_key] * 3
    assert [r.idempotency_key for r in built.records] == keys
    assert [(r.attempt, r.status) for r in built.records] == [(1, 500), (2, 503), (3, 200)]
    # the JSON body is the same on every attempt too
    assert server.requests[0].json == server.requests[1].json == server.requests[2].json
    built.run(make_request())  # the next turn has its own key
    assert server.requests[3].idempotency_key not in (None, request.idempotency_key)


def test_429_retry_after_ms_is_waited_once_then_the_reply_arrives(make, server):
    server.script([rate_limited(retry_after_ms=1500), Normal()])
    built = make()
    cancel = WaitLog(virtual=False)  # really waited: the TTFT below must count it
    _, reply = built.run(cancel=cancel)
    assert reply.text == DEFAULT_TEXT and reply.finish.reason is FinishReason.STOP
    assert cancel.waits == [1.5]  # the server's 1500 ms, once, instead of our own backoff
    first, second = server.requests
    assert second.received_at - first.received_at >= 1.5
    assert [(r.status, r.error_kind) for r in built.records] == [(429, "rate_limited"), (200, None)]
    assert built.records[0].rate_limits.get("retry-after-ms") == "1500"
    assert reply.finish.ttft_ms >= 1500  # time to first token counts the wait


def test_429_retry_after_beyond_the_cap_is_not_waited(make, server):
    server.script([rate_limited(retry_after=121), Normal()])
    built = make()
    cancel = WaitLog()
    error = built.fail(cancel=cancel)
    assert cancel.waits == []  # not waited at all
    assert isinstance(error, RateLimited)
    assert error.retry_after == 121 and error.status == 429
    assert re.fullmatch(r"\d\d:\d\d:\d\d", error.retry_at)
    assert f"after {error.retry_at}" in error.message and "121 s" in error.message
    assert len(server.requests) == 1 and server.pending == 1
    assert built.statuses() == [429]


@pytest.mark.parametrize("failure", [lambda: server_error(500), overloaded, overloaded_event],
                         ids=["500", "529", "overloaded_error_event"])
def test_transient_failure_then_ok_is_retried(make, server, failure):
    server.script([failure(), Normal()])
    built = make()
    _, reply = built.run()
    assert reply.text == DEFAULT_TEXT and reply.finish.reason is FinishReason.STOP
    assert len(server.requests) == 2
    assert [r.error_kind for r in built.records] == ["provider_unavailable", None]


def test_429_without_retry_after_is_retried_with_backoff(make, server):
    server.script([rate_limited(), Normal()])
    built = make()
    _, reply = built.run()
    assert reply.text == DEFAULT_TEXT
    assert [r.error_kind for r in built.records] == ["rate_limited", None]


@pytest.mark.parametrize("status,should_retry,requests", [(500, "false", 1), (400, "true", 2)])
def test_x_should_retry_is_obeyed(make, server, status, should_retry, requests):
    server.script([Status(status, headers={"x-should-retry": should_retry}), Normal()])
    built = make()
    if requests == 1:
        assert built.fail().status == status
    else:
        assert built.run()[1].text == DEFAULT_TEXT
    assert len(server.requests) == requests


def test_at_most_two_retries_by_default(make, server):
    server.script([server_error(500)] * 3 + [Normal()])
    built = make(policy=RetryPolicy(initial_backoff=0.01, max_backoff=0.02))  # max_retries default
    error = built.fail()
    assert isinstance(error, ProviderUnavailable) and error.status == 500
    assert len(server.requests) == 3 and server.pending == 1
    assert [(r.attempt, r.status) for r in built.records] == [(1, 500), (2, 500), (3, 500)]


def test_backoff_between_retries_grows(make, server):
    server.script([server_error(500), server_error(500), Normal()])
    built = make(policy=RetryPolicy(initial_backoff=0.2, max_backoff=1.0, jitter=0.0))
    cancel = WaitLog()
    _, reply = built.run(cancel=cancel)
    assert reply.text == DEFAULT_TEXT and len(server.requests) == 3
    assert cancel.waits == [0.2, 0.4]


def test_each_retry_is_said_before_its_wait(make, server):
    """A front end can say a retry while its wait lasts (`ask` was silent for a Retry-After):
    the engine yields which attempt failed, why, and the wait, before waiting it; a failure
    that is not retried (x-should-retry: false, the last attempt) is no Retrying."""
    server.script([server_error(500), rate_limited(retry_after_ms=300), Normal()])
    built = make(policy=RetryPolicy(initial_backoff=0.2, max_backoff=1.0, jitter=0.0))
    cancel = WaitLog()
    events, reply = built.run(cancel=cancel)
    name = built.engine.info.engine
    said = [(e.engine, e.attempt, e.error.kind, e.wait_s, e.attempts) for e in events
            if isinstance(e, Retrying)]
    assert said == [(name, 1, "provider_unavailable", 0.2, 3), (name, 2, "rate_limited", 0.3, 3)]
    assert cancel.waits == [0.2, 0.3] and reply.text == DEFAULT_TEXT

    server.script([Status(503, headers={"x-should-retry": "false"})])
    events = []
    with pytest.raises(ProviderUnavailable):
        events.extend(make().engine.stream(make_request(), threading.Event()))
    assert events == []


@pytest.mark.parametrize("scenario", [lambda: Status(400, message="Invalid 'temperature'."),
                                      unauthorized, context_too_long],
                         ids=["400", "401", "context"])
def test_client_errors_are_not_retried(make, server, scenario):
    server.script([scenario(), Normal()])
    built = make()
    error = built.fail()
    assert isinstance(error, ProviderError) and error.status in (400, 401)
    assert len(server.requests) == 1 and server.pending == 1


# -- interrupted streams: the partial text is kept, nothing is resent ----------------------------
def test_error_event_after_text_ends_with_the_partial_and_no_resend(make, server):
    server.script([ErrorEvent(after=2, error_type="overloaded_error", message="Overloaded"),
                   Normal()])
    built = make()
    events, reply = built.run()
    partial = "".join(DEFAULT_CHUNKS[:2])
    assert reply.text == partial
    assert reply.finish.reason is FinishReason.ERROR
    assert isinstance(reply.finish.error, StreamInterrupted)
    assert reply.finish.error.partial == partial
    assert "Overloaded" in str(reply.finish.error)
    assert len(server.requests) == 1 and server.pending == 1  # no silent resend
    assert len(built.records) == 1 and built.records[0].error_kind is not None


@pytest.mark.parametrize("rst", [False, True], ids=["fin", "rst"])
def test_connection_cut_after_text_keeps_the_partial(make, server, rst):
    server.script([Cut(after=3, rst=rst), Normal()])
    built = make()
    _, reply = built.run()
    partial = "".join(DEFAULT_CHUNKS[:3])
    assert reply.text == partial
    assert reply.finish.reason is FinishReason.ERROR
    assert isinstance(reply.finish.error, StreamInterrupted)
    assert reply.finish.error.partial == partial
    assert len(server.requests) == 1 and server.pending == 1
    # it connected and answered: logged as a stream that broke (the CLI said "could not
    # connect" for it), not a failure to connect
    assert built.records[0].error_kind == "stream_interrupted"


def test_clean_eof_without_the_terminal_event_is_not_a_success(make, server):
    server.script([CleanEOF(after=2), Normal()])
    built = make()
    _, reply = built.run()
    assert reply.text == "".join(DEFAULT_CHUNKS[:2])
    assert reply.finish.reason is FinishReason.ERROR
    assert isinstance(reply.finish.error, StreamInterrupted)
    assert reply.finish.error.partial == reply.text
    assert len(server.requests) == 1


def test_clean_eof_before_any_text_is_raised(make, server):
    server.script([CleanEOF(after=0)] * 3 + [Normal()])
    built = make()
    error = built.fail()
    assert isinstance(error, StreamInterrupted) and error.partial == ""
    # no text reached the caller, so it was tried again (the same turn, the same key)
    assert len(server.requests) == 3 and server.pending == 1
    assert len({r.idempotency_key for r in server.requests}) == 1


@pytest.mark.parametrize("wire_", ["openai", "anthropic"])
def test_usage_of_an_interrupted_stream_is_estimated(server, wire_):
    server.script([Cut(after=3)])
    built = build(wire_, server.url)
    _, reply = built.run()
    built.engine.close()
    assert reply.finish.reason is FinishReason.ERROR
    assert reply.usage.estimated is True
    assert reply.usage.completion_tokens == estimate_tokens(reply.text)


# -- deadlines -----------------------------------------------------------------------------------
def test_keepalives_longer_than_the_idle_deadline_do_not_time_out(make, server):
    server.script([keepalive_then_text(every=0.3, for_s=2.5)])
    built = make(timeouts=Timeouts(connect=1, first_token=5, idle=1))
    started = time.monotonic()
    _, reply = built.run()
    assert time.monotonic() - started >= 2.5
    assert reply.text == DEFAULT_TEXT and reply.finish.reason is FinishReason.STOP
    assert len(server.requests) == 1


def test_a_stall_after_the_headers_trips_the_idle_deadline(make, server):
    server.script([Stall(seconds=10), Normal()])
    built = make()
    started = time.monotonic()
    error = built.fail()
    assert isinstance(error, TimeoutError_)
    assert "sent nothing for 1 s" in error.message  # the idle deadline, not the first-token one
    assert time.monotonic() - started >= 0.9  # it did wait for the deadline
    assert len(server.requests) == 1
    # the client hung up during the 10 s stall (the server would have cut it after)
    assert server.wait_disconnected(0)
    assert server.wait_all_closed()


def test_a_slow_first_token_trips_the_first_token_deadline(make, server):
    server.script([slow_first_token(delay=5, keepalive_every=0.3), Normal()])
    built = make(timeouts=Timeouts(connect=1, first_token=1.5, idle=1))
    started = time.monotonic()
    error = built.fail()
    assert isinstance(error, TimeoutError_)
    assert "sent no text within 1.5 s" in error.message
    assert time.monotonic() - started >= 1.4  # it did wait for the deadline
    assert len(server.requests) == 1 and server.pending == 1  # not retried
    # the client hung up while the server still held the first token back (for 5 s)
    assert server.wait_disconnected(0)
    assert server.wait_all_closed()


def test_the_first_token_deadline_also_covers_waiting_for_the_headers(make, server):
    server.script([Normal(head_delay=6)])
    built = make(timeouts=Timeouts(connect=1, first_token=1, idle=2),
                 policy=RetryPolicy(max_retries=0))
    error = built.fail()
    assert isinstance(error, TimeoutError_)
    # the first-token deadline (1 s) fired, not the 2 s idle read timeout, and before the head
    assert error.message.endswith("sent no reply within 1 s.")
    assert server.wait_disconnected(0) and server.requests[0].status is None


# -- errors --------------------------------------------------------------------------------------
def test_a_json_200_is_a_clear_provider_error(make, server):
    server.script([JsonInsteadOfStream(), Normal()])
    built = make()
    error = built.fail()
    assert type(error) is ProviderError and error.status == 200
    assert "application/json" in error.message and "event stream" in error.message
    assert "base URL" in error.message
    assert len(server.requests) == 1 and server.pending == 1


def test_401_says_how_to_fix_it_and_never_shows_the_key(make, server, wire):
    server.script([unauthorized()])
    error = make().fail()
    assert isinstance(error, AuthError) and error.status == 401
    assert f"outpost keys set {provider_name(wire)}" in error.message
    assert KEY not in error.message and KEY not in repr(error)
    assert len(server.requests) == 1


def test_a_key_echoed_by_the_provider_is_redacted(make, server):
    server.script([unauthorized(echo_key=True)])
    error = make().fail()
    assert isinstance(error, AuthError)
    assert KEY not in error.message


def test_400_context_length_exceeded_is_context_too_long(make, server):
    server.script([context_too_long()])
    error = make().fail()
    assert isinstance(error, ContextTooLong) and error.status == 400
    assert "too long" in error.message and "new chat" in error.message


def test_connection_refused_is_connection_failed_after_the_retries(wire):
    with refused_url() as url:
        built = build(wire, url)
        cancel = WaitLog()
        error = built.fail(cancel=cancel)
        built.engine.close()
    assert isinstance(error, ConnectionFailed)
    assert cancel.waits == [0.01, 0.02]  # FAST's backoff, nothing longer
    assert [(r.attempt, r.status, r.error_kind) for r in built.records] == [
        (1, None, "connection_failed"), (2, None, "connection_failed"),
        (3, None, "connection_failed")]
    assert url in error.message


class FallbackWaitLog(WaitLog, CancelWithReason):
    """The cancel the router gives the cloud's stream on Auto: the local model stands behind."""

    fallback = True


def test_connection_refused_is_not_retried_when_the_local_model_stands_behind(wire):
    """Auto (the router marks the cloud's cancel ``fallback``): nothing answers there, so the
    local model answers at once: one attempt, no backoff wait (Cloud only: the test above)."""
    with refused_url() as url:
        built = build(wire, url)
        cancel = FallbackWaitLog()
        error = built.fail(cancel=cancel)
        built.engine.close()
    assert isinstance(error, ConnectionFailed)
    assert cancel.waits == []
    assert [(r.attempt, r.error_kind) for r in built.records] == [(1, "connection_failed")]


def test_a_5xx_is_still_retried_when_the_local_model_stands_behind(make, server):
    """Only a provider nothing answers for fails over at once: one that answered (500) gets
    its retries, as on Cloud only."""
    server.script([server_error(500), Normal()])
    built = make()
    _, reply = built.run(cancel=FallbackWaitLog())
    assert reply.text == DEFAULT_TEXT and built.statuses() == [500, 200]


# -- cancel and connection hygiene ---------------------------------------------------------------
SLOW_CHUNKS = tuple(f"chunk{i} " for i in range(10))


# The server holds the second chunk back for 20 s (idle and first-token deadlines are 60 s): a
# client that hangs up before it is sent did so because of the cancel, not a deadline or the end.
HELD = Normal(chunks=SLOW_CHUNKS[:2], delay=20)
LONG = Timeouts(connect=1, first_token=60, idle=60)


def test_cancel_mid_stream_finishes_at_once_and_hangs_up(make, server):
    server.script([HELD])
    built = make(timeouts=LONG)
    cancel = threading.Event()
    events: list = []
    for event in built.engine.stream(make_request(), cancel):
        events.append(event)
        if isinstance(event, TextDelta):
            cancel.set()
    check_contract(events)
    reply = accumulate(events)
    assert reply.finish.reason is FinishReason.CANCELLED and reply.finish.error is None
    assert reply.text == SLOW_CHUNKS[0]
    # hung up while the second chunk was still held back: the reply was not finished
    assert server.wait_disconnected(0) and server.requests[0].completed_at is None
    assert server.wait_all_closed()
    assert len(server.requests) == 1


def test_closing_the_generator_hangs_up(make, server):
    server.script([HELD])
    built = make(timeouts=LONG)
    stream = built.engine.stream(make_request(), threading.Event())
    assert isinstance(next(stream), TextDelta)
    stream.close()
    assert server.wait_disconnected(0) and server.requests[0].completed_at is None
    assert server.wait_all_closed()


def test_cancel_during_the_retry_wait(make, server):
    server.script([server_error(500), Normal()])
    built = make(policy=RetryPolicy(initial_backoff=5.0, jitter=0.0))
    cancel = WaitLog(stop_in_wait=True)
    events = list(built.engine.stream(make_request(), cancel))
    assert cancel.waits == [5.0]  # the backoff waits on cancel, so a stop ends it at once
    reply = accumulate(events)
    assert reply.finish.reason is FinishReason.CANCELLED and reply.text == ""
    assert len(server.requests) == 1


def test_cancel_during_the_retry_wait_keeps_the_event_contract(make, server):
    server.script([server_error(500), Normal()])
    built = make(policy=RetryPolicy(initial_backoff=5.0, jitter=0.0))
    built.run(cancel=WaitLog(stop_in_wait=True))  # checks TextDelta*, Usage, Finished


def test_cancel_while_waiting_for_the_headers(make, server):
    server.script([Normal(head_delay=20)])
    built = make(timeouts=LONG)
    cancel = threading.Event()
    # the user stops once the server has the request (and is holding the head back)
    threading.Thread(target=lambda: server.wait_until(lambda: bool(server.requests), 10)
                     and cancel.set(), daemon=True).start()
    events = list(built.engine.stream(make_request(), cancel))
    assert accumulate(events).finish.reason is FinishReason.CANCELLED
    # hung up before the head was sent: the cancel woke the wait for the headers
    assert server.wait_disconnected(0) and server.requests[0].status is None


def test_no_connection_is_left_open_after_failed_or_cancelled_streams(make, server):
    built = make()
    server.script([ErrorEvent(after=2)])
    built.run()
    assert server.wait_all_closed(), server.connections
    server.script([Cut(after=1)])
    built.run()
    assert server.wait_all_closed(), server.connections
    server.script([Stall(seconds=10)])
    with pytest.raises(TimeoutError_):
        built.run()
    assert server.wait_all_closed(), server.connections
    # (a clean EOF without the terminal event is a complete HTTP response: pooling it is fine)


def test_a_finished_reply_keeps_its_connection_for_reuse_until_close(make, server):
    built = make()
    built.run()
    built.run()
    assert [r.connection for r in server.requests] == [0, 0]  # kept alive and reused
    assert server.open_connections() == 1
    built.engine.close()
    assert server.wait_all_closed()


def test_retries_after_an_http_error_reuse_the_connection(make, server):
    server.script([server_error(500), Normal()])
    make().run()
    assert [r.connection for r in server.requests] == [0, 0]


# -- models ---------------------------------------------------------------------------------------
def test_list_models(make, server, wire):
    built = make()
    assert built.engine.list_models() == sorted(["test-model", "o3-mini", "gpt-4o-mini"])
    [sent] = server.requests
    # Anthropic's listing is paginated: one page of up to 1000 (the most it gives) is asked for
    path = "/v1/models" if wire == "openai" else "/v1/models?limit=1000"
    assert (sent.method, sent.path) == ("GET", path)
    if wire == "openai":
        assert sent.headers["authorization"] == f"Bearer {KEY}"
    else:
        assert sent.headers["x-api-key"] == KEY and sent.headers["anthropic-version"]


def test_list_models_401_is_an_auth_error_without_the_key(make, server):
    server.script([unauthorized()])
    with pytest.raises(AuthError) as info:
        make().engine.list_models()
    assert KEY not in info.value.message


def _html_200(ex: Exchange) -> None:
    body = b"<!doctype html><title>Welcome</title>"
    ex.send_head(200, content_type="text/html", framing="length", length=len(body))
    ex._send(body)
    ex.ended = True


def test_list_models_on_a_web_page_says_the_network_answered(make, server):
    """A web page in place of the listing: a captive portal, or a wrong base URL (the message
    says both; tests/engines/test_captive_portal.py has the rest)."""
    server.script([Custom(_html_200)])
    with pytest.raises(NetworkIntercepted) as info:
        make().engine.list_models()
    assert "in place of" in str(info.value) and "base URL" in str(info.value)
