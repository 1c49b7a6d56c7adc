"""OpenAI's reasoning models (o1, o3, o4-mini, gpt-5) refuse sampling knobs other models take
(HTTP 400, ``unsupported_value`` / ``unsupported_parameter``): Outpost does not send them the
settings' defaults, and learns any refusal per server and model (asked again without the
parameter, once, and never sent it again), against the fault server's ``ReasoningModel``,
which refuses as OpenAI does (tests/engines/test_sdk_honesty.py shows the SDK reads it)."""
from __future__ import annotations

import threading

import pytest
from fault_server import DEFAULT_TEXT, Normal, Status, fault_server, reasoning_model

from app.config import provider_facts
from app.config.providers import ProviderConfig
from app.domain.errors import BadRequest
from app.domain.messages import ChatMessage, ChatRequest, FinishReason, Role, accumulate
from app.domain.sampling import sent_params, withheld
from engines.http_policy import RetryPolicy, Timeouts
from engines.openai_compat import OpenAICompatEngine

pytestmark = pytest.mark.timeout(30)

SAMPLING = ("temperature", "top_p", "presence_penalty", "frequency_penalty")


@pytest.fixture
def server():
    with fault_server() as running:
        yield running


def engine_for(server, model: str) -> OpenAICompatEngine:
    """A new engine, as each `outpost ask` builds one (what it knows comes from the file)."""
    return OpenAICompatEngine(ProviderConfig("oai", "openai", server.url + "/v1", model),
                              api_key="sk-test", policy=RetryPolicy(max_retries=0),
                              timeouts=Timeouts(connect=1, first_token=5, idle=2))


def request(**kw) -> ChatRequest:
    return ChatRequest(model="m", messages=(ChatMessage(Role.USER, "x"),), **kw)


def run(engine: OpenAICompatEngine, req: ChatRequest):
    try:
        return accumulate(list(engine.stream(req, threading.Event())))
    finally:
        engine.close()


@pytest.mark.parametrize("model", ["o3-mini", "o1", "o4-mini", "gpt-5", "gpt-5-mini"])
def test_a_reasoning_model_gets_no_knob_it_refuses_from_the_defaults(server, model):
    """The settings' temperature 0.7 and top_p 0.95, a conversation's penalties: not given for
    this turn, so not sent; the reply comes at the first try (it was a 400)."""
    server.script([reasoning_model()])
    reply = run(engine_for(server, model), request(max_tokens=50, presence_penalty=0.5,
                                                   frequency_penalty=0.2, seed=7))
    assert reply.text == DEFAULT_TEXT
    [sent] = server.chat_requests()
    assert not set(SAMPLING) & set(sent.json)
    assert sent.json["max_completion_tokens"] == 50 and sent.json["seed"] == 7


@pytest.mark.parametrize("model", ["gpt-4o-mini", "gpt-5-chat-latest", "test-model"])
def test_other_models_still_get_every_knob(server, model):
    reply = run(engine_for(server, model), request(presence_penalty=0.5))
    assert reply.text == DEFAULT_TEXT
    [sent] = server.chat_requests()
    assert (sent.json["temperature"], sent.json["top_p"], sent.json["presence_penalty"]) == (
        0.7, 0.95, 0.5)


def test_a_knob_given_for_the_turn_is_sent_and_a_refusal_is_learnt(server):
    """--temperature 0.5 to o3-mini: sent (the user asked); OpenAI refuses it, so the request
    goes again without it, once, and the next run does not send it at all."""
    server.script([reasoning_model()] * 3)
    given = request(temperature=0.5, chosen=("temperature",))
    engine = engine_for(server, "o3-mini")
    reply = run(engine, given)
    assert reply.text == DEFAULT_TEXT and reply.finish.reason is FinishReason.STOP
    first, second = server.chat_requests()
    assert first.json["temperature"] == 0.5 and "temperature" not in second.json
    assert first.idempotency_key == second.idempotency_key
    assert engine.outcome().refused_knobs == {"temperature"}
    assert provider_facts.refused_params(server.url + "/v1", "o3-mini") == {"temperature"}
    assert sent_params("openai", given, "o3-mini", engine.outcome().refused_knobs) == {
        "max_tokens": 512}  # what the reply stores: what was sent
    run(engine_for(server, "o3-mini"), given)  # a later run
    assert "temperature" not in server.chat_requests()[2].json


def test_each_refused_knob_of_an_unknown_model_is_learnt_in_turn(server):
    """A model Outpost does not know as a reasoning model, behind an OpenAI-compatible
    server with OpenAI's rules: max_tokens (then max_completion_tokens), temperature, top_p
    and a penalty are refused one after the other; each is learnt, and the reply comes."""
    server.script([reasoning_model()] * 6)
    reply = run(engine_for(server, "house-reasoner"), request(presence_penalty=0.5))
    assert reply.text == DEFAULT_TEXT
    bodies = [r.json for r in server.chat_requests()]
    assert len(bodies) == 5
    assert "max_tokens" in bodies[0] and bodies[-1]["max_completion_tokens"] == 512
    assert not set(SAMPLING) & set(bodies[-1])
    assert provider_facts.refused_params(server.url + "/v1", "house-reasoner") == {
        "max_tokens", "temperature", "top_p", "presence_penalty"}  # (no frequency_penalty set)
    # the same model at another server, or another model here, has learnt nothing
    assert provider_facts.refused_params(server.url + "/v1", "gpt-4o-mini") == frozenset()


def test_ttft_counts_from_the_first_send_when_a_refusal_is_sent_again(server):
    """A 400 that teaches a refused knob, then the re-send: the time to the first token is
    what the user waited, the refused send included. A virtual clock: 10 s pass with each
    request the server receives (never wall time)."""
    server.script([reasoning_model()] * 2)
    records: list = []
    engine = OpenAICompatEngine(ProviderConfig("oai", "openai", server.url + "/v1", "o3-mini"),
                                api_key="sk-test", policy=RetryPolicy(max_retries=0),
                                timeouts=Timeouts(connect=1, first_token=5, idle=2),
                                on_attempt=records.append)
    engine.clock = lambda: 10.0 * len(server.chat_requests())
    reply = run(engine, request(temperature=0.5, chosen=("temperature",)))
    assert reply.text == DEFAULT_TEXT and len(server.chat_requests()) == 2
    # sent at 0 s, refused; sent again, its first token read at 20 s
    assert reply.finish.ttft_ms == 20_000
    assert [r.status for r in records] == [400, 200] and records[-1].ttft_ms == 20_000


def test_a_refused_stop_is_watched_for_by_outpost(server):
    """A server that takes no ``stop`` for the model: asked again without it, and Outpost ends
    the reply at the stop itself, as it does beyond OpenAI's four."""
    server.script([reasoning_model(refuses_stop=True)] * 2)
    reply = run(engine_for(server, "o4-mini"), request(stop=(" fault",)))
    assert reply.text == "Hello from the" and reply.finish.reason is FinishReason.STOP
    first, second = server.chat_requests()
    assert first.json["stop"] == [" fault"] and "stop" not in second.json


def test_a_400_about_something_else_is_not_asked_again(server):
    server.script([Status(400, message="Invalid request: messages is empty."), Normal()])
    with pytest.raises(BadRequest):
        run(engine_for(server, "o3-mini"), request())
    assert len(server.chat_requests()) == 1
    assert provider_facts.refused_params(server.url + "/v1", "o3-mini") == frozenset()


def test_a_refusal_said_only_in_words_is_learnt_too(server):
    """The tester's simulation: a 400 with OpenAI's message and code but no ``param``."""
    server.script([Status(400, message="Unsupported value: 'temperature' does not support 0.7 "
                          "with this model. Only the default (1) value is supported.",
                          code="unsupported_value"), Normal()])
    run(engine_for(server, "my-model"), request())
    assert "temperature" not in server.chat_requests()[1].json


def test_the_map_withholds_only_what_the_openai_api_has():
    assert withheld("openai", "o3-mini") == set(SAMPLING)
    assert withheld("openai", "o3-mini", chosen=("top_p",)) == set(SAMPLING) - {"top_p"}
    assert withheld("openai", "o3-mini", chosen=SAMPLING, refused=("top_p",)) == {"top_p"}
    assert withheld("anthropic", "o3-mini") == frozenset()  # a name, at another API
    assert withheld("local", "o3") == frozenset()
    assert withheld("openai", "o3-mini", refused=("max_tokens",)) == set(SAMPLING)


@pytest.mark.parametrize("model", ["openai/o3-mini", "openai/gpt-5", "openai/o4-mini",
                                   "team/eu/o1"])
def test_a_reasoning_model_behind_a_routers_prefix_gets_no_default_knob(server, model):
    """OpenRouter names OpenAI's models ``openai/o3-mini``; a proxy may add a prefix of its own:
    the name after the last ``/`` says it is a reasoning model, so the settings' temperature
    and top_p and the conversation's penalties are not sent (OpenRouter, like the fault
    server's ``Normal``, takes ``max_tokens`` for every model)."""
    reply = run(engine_for(server, model), request(max_tokens=50, presence_penalty=0.5,
                                                   frequency_penalty=0.2))
    assert reply.text == DEFAULT_TEXT
    [sent] = server.chat_requests()
    assert not set(SAMPLING) & set(sent.json)
    assert sent.json["max_tokens"] == 50
    assert withheld("openai", model) == set(SAMPLING)


def test_a_prefixed_name_given_a_knob_for_the_turn_sends_it(server):
    given = request(temperature=0.5, chosen=("temperature",))
    run(engine_for(server, "openai/o3-mini"), given)
    [sent] = server.chat_requests()
    assert sent.json["temperature"] == 0.5 and "top_p" not in sent.json


@pytest.mark.parametrize("model", ["openai/gpt-5-chat-latest", "openai/gpt-4o-mini",
                                   "o3-labs/llama-3-8b"])
def test_other_prefixed_models_still_get_every_knob(server, model):
    run(engine_for(server, model), request(presence_penalty=0.5))
    [sent] = server.chat_requests()
    assert (sent.json["temperature"], sent.json["top_p"], sent.json["presence_penalty"]) == (
        0.7, 0.95, 0.5)
