"""Keeps the fault server honest: the official ``openai`` and ``anthropic`` SDKs read its streams
and error bodies, and get exactly what Outpost's engines get from the same scenario.

If the fake drifted from the real wire formats (a missing field the SDK requires, a wrong event
name, an error body of the wrong shape), these tests fail before the engine tests can pass
against a server no real provider resembles. The SDKs are test-only dependencies.
"""
from __future__ import annotations

import threading

import pytest

anthropic = pytest.importorskip("anthropic")
openai = pytest.importorskip("openai")

from fault_server import (  # noqa: E402
    DEFAULT_TEXT,
    PROMPT_TOKENS,
    U2028_CHUNKS,
    UTF8_CHUNKS,
    Cut,
    ErrorEvent,
    Normal,
    context_too_long,
    crlf,
    fault_server,
    rate_limited,
    reasoning_model,
    u2028,
    unauthorized,
    utf8_split,
)

from app.config.providers import ProviderConfig  # noqa: E402
from app.domain.errors import ContextTooLong, RateLimited  # noqa: E402
from app.domain.messages import ChatMessage, ChatRequest, FinishReason, Role, accumulate  # noqa: E402
from engines.anthropic import AnthropicEngine  # noqa: E402
from engines.http_policy import RetryPolicy, Timeouts  # noqa: E402
from engines.openai_compat import OpenAICompatEngine  # noqa: E402

pytestmark = pytest.mark.timeout(30)

KEY = "sk-test-abcd1234"
PROMPT = "Say hello."
SCENARIOS = {
    "normal": (Normal, DEFAULT_TEXT),
    "crlf": (crlf, DEFAULT_TEXT),
    "utf8_split": (utf8_split, "".join(UTF8_CHUNKS)),
    "u2028": (u2028, "".join(U2028_CHUNKS)),
    "length": (lambda: Normal(finish="length", completion_tokens=40), DEFAULT_TEXT),
}


@pytest.fixture
def server():
    with fault_server() as running:
        yield running


@pytest.fixture
def openai_client(server):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=5)
    yield client
    client.close()


@pytest.fixture
def anthropic_client(server):
    client = anthropic.Anthropic(base_url=server.url, api_key=KEY, max_retries=0, timeout=5)
    yield client
    client.close()


def outpost(server, wire: str, scenario) -> tuple[str, tuple[int, int, bool], FinishReason]:
    """What Outpost's engine makes of a scenario: text, (prompt, completion, estimated), reason."""
    server.script([scenario()])
    if wire == "openai":
        engine = OpenAICompatEngine(ProviderConfig("fault", "openai", server.url + "/v1",
                                                   "test-model"), api_key=KEY,
                                    timeouts=Timeouts(connect=1, first_token=5, idle=2),
                                    policy=RetryPolicy(max_retries=0))
    else:
        engine = AnthropicEngine(ProviderConfig("fault-a", "anthropic", server.url,
                                                "claude-test"), api_key=KEY,
                                 timeouts=Timeouts(connect=1, first_token=5, idle=2),
                                 policy=RetryPolicy(max_retries=0))
    try:
        request = ChatRequest(model=engine.model, messages=(ChatMessage(Role.USER, PROMPT),),
                              max_tokens=100)
        reply = accumulate(engine.stream(request, threading.Event()))
    finally:
        engine.close()
    usage = reply.usage
    return reply.text, (usage.prompt_tokens, usage.completion_tokens, usage.estimated), \
        reply.finish.reason


def openai_sdk(client, server, scenario) -> tuple[str, tuple[int, int], str | None]:
    server.script([scenario()])
    stream = client.chat.completions.create(
        model="test-model", messages=[{"role": "user", "content": PROMPT}], max_tokens=100,
        stream=True, stream_options={"include_usage": True})
    text, usage, finish = "", None, None
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk" and chunk.model == "test-model"
        if chunk.usage is not None:
            assert chunk.choices == []  # the usage chunk comes alone, last
            usage = (chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    return text, usage, finish


def anthropic_sdk(client, server, scenario) -> tuple[str, tuple[int, int], str | None]:
    server.script([scenario()])
    with client.messages.stream(model="claude-test", max_tokens=100,
                                messages=[{"role": "user", "content": PROMPT}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert final.role == "assistant" and final.model == "claude-test"
    assert [block.text for block in final.content] == [text]
    return text, (final.usage.input_tokens, final.usage.output_tokens), final.stop_reason


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_openai_sdk_and_outpost_read_the_same_reply(server, openai_client, name):
    scenario, expected = SCENARIOS[name]
    sdk_text, sdk_usage, sdk_finish = openai_sdk(openai_client, server, scenario)
    text, (prompt, completion, estimated), reason = outpost(server, "openai", scenario)
    assert sdk_text == text == expected
    assert sdk_usage == (prompt, completion) and estimated is False
    assert sdk_usage[0] == PROMPT_TOKENS
    assert sdk_finish == ("length" if name == "length" else "stop")
    assert reason is (FinishReason.LENGTH if name == "length" else FinishReason.STOP)
    # both clients sent what the server expects of a streamed chat request
    sdk_request, outpost_request = server.requests
    for sent in (sdk_request, outpost_request):
        assert sent.path == "/v1/chat/completions"
        assert sent.json["stream"] is True
        assert sent.json["stream_options"] == {"include_usage": True}
    assert outpost_request.headers["authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_anthropic_sdk_and_outpost_read_the_same_reply(server, anthropic_client, name):
    scenario, expected = SCENARIOS[name]
    sdk_text, sdk_usage, sdk_stop = anthropic_sdk(anthropic_client, server, scenario)
    text, (prompt, completion, estimated), reason = outpost(server, "anthropic", scenario)
    assert sdk_text == text == expected
    assert sdk_usage == (prompt, completion) and estimated is False
    assert sdk_usage[0] == PROMPT_TOKENS
    assert sdk_stop == ("max_tokens" if name == "length" else "end_turn")
    assert reason is (FinishReason.LENGTH if name == "length" else FinishReason.STOP)
    sdk_request, outpost_request = server.requests
    for sent in (sdk_request, outpost_request):
        assert sent.path == "/v1/messages"
        assert sent.json["stream"] is True and sent.json["max_tokens"] == 100
        assert sent.headers["anthropic-version"]  # the SDK sends its own (newer) version
    assert outpost_request.headers["x-api-key"] == KEY


def test_the_sdks_list_the_same_models_as_outpost(server, openai_client, anthropic_client):
    expected = sorted(server.models)
    assert sorted(m.id for m in openai_client.models.list()) == expected
    assert sorted(m.id for m in anthropic_client.models.list()) == expected
    for engine in (OpenAICompatEngine(ProviderConfig("fault", "openai", server.url + "/v1",
                                                     "test-model"), api_key=KEY),
                   AnthropicEngine(ProviderConfig("fault-a", "anthropic", server.url,
                                                  "claude-test"), api_key=KEY)):
        try:
            assert engine.list_models() == expected
        finally:
            engine.close()


# -- the fault scenarios look real to the SDKs too -----------------------------------------------
def test_openai_sdk_reads_the_error_bodies(server, openai_client):
    messages = [{"role": "user", "content": PROMPT}]
    server.script([rate_limited(retry_after_ms=1500), unauthorized(), context_too_long()])
    with pytest.raises(openai.RateLimitError) as info:
        openai_client.chat.completions.create(model="test-model", messages=messages, stream=True)
    assert info.value.code == "rate_limit_exceeded"
    assert info.value.response.headers["retry-after-ms"] == "1500"
    with pytest.raises(openai.AuthenticationError) as info:
        openai_client.chat.completions.create(model="test-model", messages=messages, stream=True)
    assert info.value.code == "invalid_api_key" and KEY not in info.value.message
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.chat.completions.create(model="test-model", messages=messages, stream=True)
    assert info.value.code == "context_length_exceeded"


def test_openai_sdk_reads_a_reasoning_models_refusals(server, openai_client):
    """The reasoning-model scenario refuses as OpenAI does: the SDK's BadRequestError carries
    the code and the parameter; a request without them is answered."""
    messages = [{"role": "user", "content": PROMPT}]
    server.script([reasoning_model(), reasoning_model(), reasoning_model()])
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.chat.completions.create(model="o3-mini", messages=messages, stream=True,
                                              temperature=0.7, max_completion_tokens=50)
    assert (info.value.code, info.value.param) == ("unsupported_value", "temperature")
    assert "Only the default (1) value is supported" in info.value.message
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.chat.completions.create(model="o3-mini", messages=messages, stream=True,
                                              presence_penalty=0.5)
    assert (info.value.code, info.value.param) == ("unsupported_parameter",
                                                   "presence_penalty")
    stream = openai_client.chat.completions.create(model="o3-mini", messages=messages,
                                                   stream=True, max_completion_tokens=50)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == \
        DEFAULT_TEXT


def test_anthropic_sdk_reads_the_error_bodies(server, anthropic_client):
    messages = [{"role": "user", "content": PROMPT}]
    server.script([rate_limited(retry_after=121), unauthorized(), context_too_long(),
                   ErrorEvent(after=0), ErrorEvent(after=2)])
    with pytest.raises(anthropic.RateLimitError) as info:
        anthropic_client.messages.create(model="claude-test", max_tokens=10, messages=messages)
    assert info.value.body["error"]["type"] == "rate_limit_error"
    with pytest.raises(anthropic.AuthenticationError):
        anthropic_client.messages.create(model="claude-test", max_tokens=10, messages=messages)
    with pytest.raises(anthropic.BadRequestError) as info:
        anthropic_client.messages.create(model="claude-test", max_tokens=10, messages=messages)
    assert "prompt is too long" in info.value.body["error"]["message"]
    for expected_text in ("", "Hello from"):  # overloaded_error first, then after some text
        text = ""
        with pytest.raises(anthropic.APIStatusError) as info:
            with anthropic_client.messages.stream(model="claude-test", max_tokens=10,
                                                  messages=messages) as stream:
                for delta in stream.text_stream:
                    text += delta
        assert info.value.body["error"]["type"] == "overloaded_error"
        assert text == expected_text


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
def test_outpost_maps_the_same_error_bodies(server, wire):
    """The bodies the SDKs just accepted become the matching Outpost errors."""
    server.script([rate_limited(retry_after=121), context_too_long()])
    config = (ProviderConfig("fault", "openai", server.url + "/v1", "test-model")
              if wire == "openai" else
              ProviderConfig("fault-a", "anthropic", server.url, "claude-test"))
    cls = OpenAICompatEngine if wire == "openai" else AnthropicEngine
    engine = cls(config, api_key=KEY, policy=RetryPolicy(max_retries=0),
                 timeouts=Timeouts(connect=1, first_token=5, idle=2))
    request = ChatRequest(model=engine.model, messages=(ChatMessage(Role.USER, PROMPT),))
    try:
        with pytest.raises(RateLimited):
            list(engine.stream(request, threading.Event()))
        with pytest.raises(ContextTooLong):
            list(engine.stream(request, threading.Event()))
    finally:
        engine.close()


def test_the_sdks_do_not_take_a_cut_stream_for_a_reply(server, openai_client, anthropic_client):
    messages = [{"role": "user", "content": PROMPT}]
    server.script([Cut(after=2), Cut(after=2)])
    with pytest.raises(Exception) as info:  # the SDKs let httpx's error through
        for _ in openai_client.chat.completions.create(model="test-model", messages=messages,
                                                       stream=True):
            pass
    assert "incomplete chunked read" in str(info.value) or isinstance(
        info.value, (openai.APIError,))
    with pytest.raises(Exception) as info:
        with anthropic_client.messages.stream(model="claude-test", max_tokens=10,
                                              messages=messages) as stream:
            stream.get_final_message()
    assert "incomplete chunked read" in str(info.value) or isinstance(
        info.value, (anthropic.APIError,))
