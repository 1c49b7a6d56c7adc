"""A 400 that refuses a request parameter the engine sent is learnt per server and model
(``provider_facts.json``) and the request sent again at once without it, on both wire formats:
Anthropic's newer models refuse sampling parameters in Anthropic's own words ("`temperature`
is deprecated for this model.", "`temperature` and `top_p` cannot both be specified for this
model."), against the fault server's ``RefusesParams``, whose error body the official
``anthropic`` SDK reads. The attempts of such a turn are numbered in order, the re-send saying
why, in the request log (a real SQLite file)."""
from __future__ import annotations

import threading

import pytest
from fault_server import (
    DEFAULT_TEXT,
    Custom,
    Normal,
    Status,
    fault_server,
    reasoning_model,
    refuses_params,
)

from app.chat.candidates import CandidatesEngine, Plan
from app.config import provider_facts
from app.config.providers import ProviderConfig
from app.domain.errors import BadRequest
from app.domain.messages import ChatMessage, ChatRequest, FinishReason, Role, accumulate
from app.domain.sampling import sent_params
from app.storage.store import Store
from engines.anthropic import AnthropicEngine
from engines.http_policy import RetryPolicy, Timeouts, refused_params
from engines.openai_compat import OpenAICompatEngine

pytestmark = pytest.mark.timeout(30)

OPUS = "claude-opus-4-7"


@pytest.fixture
def server():
    with fault_server() as running:
        yield running


def anthropic_engine(server, model: str = OPUS, records=None, **kw) -> AnthropicEngine:
    """A new engine, as each `outpost ask` builds one (what it knows comes from the file)."""
    return AnthropicEngine(ProviderConfig("claude", "anthropic", server.url, model),
                           api_key="sk-ant-test", policy=kw.pop("policy", RetryPolicy(
                               max_retries=0)),
                           timeouts=Timeouts(connect=1, first_token=5, idle=2),
                           on_attempt=None if records is None else records.append)


def openai_engine(server, model: str, records=None) -> OpenAICompatEngine:
    return OpenAICompatEngine(ProviderConfig("router", "openai", server.url + "/v1", model),
                              api_key="sk-test", policy=RetryPolicy(max_retries=0),
                              timeouts=Timeouts(connect=1, first_token=5, idle=2),
                              on_attempt=None if records is None else records.append)


def request(**kw) -> ChatRequest:
    return ChatRequest(model="m", messages=(ChatMessage(Role.USER, "x"),), **kw)


def run(engine, req: ChatRequest):
    try:
        return accumulate(list(engine.stream(req, threading.Event())))
    finally:
        engine.close()


def test_the_anthropic_sdk_reads_the_refusal_as_anthropic_sends_it(server):
    anthropic = pytest.importorskip("anthropic")
    server.script([refuses_params("temperature")])
    client = anthropic.Anthropic(base_url=server.url, api_key="sk-ant-test", max_retries=0,
                                 timeout=5)
    try:
        with pytest.raises(anthropic.BadRequestError) as info:
            client.messages.create(model=OPUS, max_tokens=10, messages=[
                {"role": "user", "content": "x"}], extra_body={"temperature": 0.5})
    finally:
        client.close()
    assert info.value.body["error"] == {"type": "invalid_request_error",
                                        "message": "`temperature` is deprecated for this model."}


def test_a_refused_temperature_is_learnt_and_the_request_sent_again_without_it(server):
    """Outpost sends Anthropic a temperature on every turn (the settings' 0.7); a model that
    no longer takes one refuses it: sent again at once without it, the reply comes, and the
    next run does not send it at all."""
    server.script([refuses_params("temperature")] * 3)
    engine = anthropic_engine(server)
    reply = run(engine, request())
    assert reply.text == DEFAULT_TEXT and reply.finish.reason is FinishReason.STOP
    first, second = server.chat_requests()
    assert first.json["temperature"] == 0.7 and "temperature" not in second.json
    assert first.idempotency_key == second.idempotency_key
    assert engine.outcome().refused_knobs == {"temperature"}
    assert provider_facts.refused_params(server.url, OPUS) == {"temperature"}
    assert sent_params("anthropic", request(), OPUS, engine.outcome().refused_knobs) == {
        "max_tokens": 512}  # what the reply stores: what was sent
    run(anthropic_engine(server), request())  # a later run
    assert "temperature" not in server.chat_requests()[2].json
    assert len(server.chat_requests()) == 3
    # another model at the same server has learnt nothing
    assert provider_facts.refused_params(server.url, "claude-sonnet-4-5") == frozenset()


def test_each_refused_sampling_parameter_is_learnt_in_turn(server):
    """A model that takes none of temperature, top_p and top_k (Opus 4.7): top_p narrowed
    below 0.95 goes instead of the temperature, then the temperature once top_p is refused;
    each refusal is learnt, and the reply comes."""
    server.script([refuses_params("temperature", "top_p", "top_k")] * 5)
    reply = run(anthropic_engine(server), request(top_p=0.5, top_k=20))
    assert reply.text == DEFAULT_TEXT
    bodies = [r.json for r in server.chat_requests()]
    assert len(bodies) == 4
    assert (bodies[0]["top_p"], bodies[0]["top_k"]) == (0.5, 20)
    assert "temperature" not in bodies[0] and bodies[1]["temperature"] == 0.7
    assert not {"temperature", "top_p", "top_k"} & set(bodies[-1])
    assert provider_facts.refused_params(server.url, OPUS) == {"temperature", "top_p", "top_k"}
    run(anthropic_engine(server), request(top_p=0.5, top_k=20))  # a later run: sent once
    assert not {"temperature", "top_p", "top_k"} & set(server.chat_requests()[4].json)
    assert len(server.chat_requests()) == 5


def test_a_refused_stop_sequences_is_watched_for_by_outpost(server):
    server.script([refuses_params("stop_sequences")] * 2)
    reply = run(anthropic_engine(server), request(stop=(" fault",)))
    assert reply.text == "Hello from the" and reply.finish.reason is FinishReason.STOP
    first, second = server.chat_requests()
    assert first.json["stop_sequences"] == [" fault"] and "stop_sequences" not in second.json
    assert provider_facts.refused_params(server.url, OPUS) == {"stop"}


@pytest.mark.parametrize("message", [
    "`top_k` is deprecated for this model.",  # a parameter that was not sent
    "max_tokens: 100000 > 64000, which is the maximum allowed number of output tokens.",
    "messages: text content blocks must be non-empty",
])
def test_a_400_that_refuses_nothing_sent_is_not_asked_again(server, message):
    server.script([Status(400, message=message), Normal()])
    with pytest.raises(BadRequest):
        run(anthropic_engine(server), request())
    assert len(server.chat_requests()) == 1
    assert provider_facts.refused_params(server.url, OPUS) == frozenset()


@pytest.mark.parametrize("chosen, dropped, kept", [((), "top_p", "temperature"),
                                                   (("top_p",), "temperature", "top_p")])
def test_both_refused_together_drops_the_one_not_given_for_the_turn(server, chosen, dropped,
                                                                    kept):
    """Claude behind an OpenAI-compatible router, which passes on Anthropic's words: OpenAI's
    wire sends temperature and top_p together. One goes: the one not given for the turn
    (a flag, a preset), else the last named."""
    server.script([refuses_params(not_both=("temperature", "top_p"))] * 2)
    reply = run(openai_engine(server, "anthropic/claude-sonnet-4.5"),
                request(top_p=0.9, chosen=chosen))
    assert reply.text == DEFAULT_TEXT
    first, second = server.chat_requests()
    assert {"temperature", "top_p"} <= set(first.json)
    assert dropped not in second.json and kept in second.json
    assert provider_facts.refused_params(server.url + "/v1",
                                         "anthropic/claude-sonnet-4.5") == {dropped}


def test_the_error_bodies_name_what_they_refuse():
    anthropic_body = ('{"type": "error", "error": {"type": "invalid_request_error", "message": '
                      '"`temperature` and `top_p` cannot both be specified for this model. '
                      'Please use only one."}, "request_id": "req_1"}')
    assert refused_params(anthropic_body) == ("temperature", "top_p")
    assert refused_params('{"type": "error", "error": {"type": "invalid_request_error", '
                          '"message": "top_k: Extra inputs are not permitted"}}') == ("top_k",)
    assert refused_params('{"error": {"message": "Unsupported parameter: \'max_tokens\' is not '
                          'supported with this model. Use \'max_completion_tokens\' instead.", '
                          '"type": "invalid_request_error", "param": null, "code": null}}') == (
        "max_tokens", "max_completion_tokens")
    assert refused_params('{"type": "error", "error": {"type": "invalid_request_error", '
                          '"message": "temperature: range: 0..1"}}') == ()
    assert refused_params("not json") == ()


def test_the_attempts_of_a_re_sent_turn_are_numbered_in_order_with_why(server, tmp_path):
    """A 500 (retried), the 400 that refuses the temperature, then the re-send: attempts 1, 2
    and 3 (they were 1, 2 and 1 again), the third saying why, in the request log."""
    server.script([Status(500), refuses_params("temperature"), Normal()])
    records: list = []
    engine = anthropic_engine(server, records=records,
                              policy=RetryPolicy(max_retries=1, initial_backoff=0.0))
    reply = run(engine, request())
    assert reply.text == DEFAULT_TEXT
    assert [(r.attempt, r.status, r.note) for r in records] == [
        (1, 500, None), (2, 400, None), (3, 200, "re-sent without temperature")]
    store = Store(tmp_path / "outpost.db")
    for record in records:
        store.log_attempt(record)
    assert [(row["attempt"], row["status"], row["note"]) for row in store.request_log()] == [
        (1, 500, None), (2, 400, None), (3, 200, "re-sent without temperature")]


def test_an_openai_re_send_is_numbered_too(server):
    server.script([Status(400, message="Unsupported value: 'temperature' does not support 0.7 "
                          "with this model. Only the default (1) value is supported.",
                          code="unsupported_value"), Normal()])
    records: list = []
    run(openai_engine(server, "house-model", records), request())
    assert [(r.attempt, r.status, r.note) for r in records] == [
        (1, 400, None), (2, 200, "re-sent without temperature")]


def test_candidates_refused_at_once_are_each_sent_again(server):
    """Best of 3 on o3-mini with --temperature: the three candidates go out together and are
    all refused before any of them learnt it (the fault server holds each refusal until the
    three have arrived). Each is sent again without the temperature, whichever learnt it
    first: three replies, six requests."""
    def held_refusal(ex) -> None:
        while len(ex.server.chat_requests()) < 3:
            ex.pause(0.02)
        reasoning_model().stream(ex)

    server.script([Custom(held_refusal)] * 3)
    engine = openai_engine(server, "o3-mini")
    candidates = CandidatesEngine(engine, Plan("best_of", 3, scorer="json"))
    try:
        reply = accumulate(list(candidates.stream(
            request(temperature=0.9, chosen=("temperature",)), threading.Event())))
    finally:
        engine.close()
    assert reply.text == DEFAULT_TEXT and reply.finish.error is None
    assert [c.text for c in candidates.selection.candidates] == [DEFAULT_TEXT] * 3
    bodies = [r.json for r in server.chat_requests()]
    assert len(bodies) == 6
    assert sum("temperature" in body for body in bodies) == 3


def test_a_re_send_is_said_as_an_event_not_only_in_the_request_log(server):
    """The re-send was silent but for the request log: the stream now says it (``Resent``),
    before any text, so the CLI and the window can tell the user."""
    from app.domain.messages import Resent, TextDelta

    server.script([Status(400, message="Unsupported value: 'temperature' does not support 0.7 "
                          "with this model. Only the default (1) value is supported.",
                          code="unsupported_value"), Normal()])
    engine = openai_engine(server, "house-model")
    try:
        events = list(engine.stream(request(), threading.Event()))
    finally:
        engine.close()
    [resent] = [e for e in events if isinstance(e, Resent)]
    assert (resent.change, resent.knob) == ("without temperature", "temperature")
    assert resent.describe() == ("router refused temperature for house-model: re-sent "
                                 "without temperature")
    first_text = next(i for i, e in enumerate(events) if isinstance(e, TextDelta))
    assert events.index(resent) < first_text
