"""Structured output (issue 6): schemas checked, every result validated, grammar-constrained
JSON on the real bundled model, the repair path (lenient, then one re-ask), and the payload
each wire format gets."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest

from app.chat.service import ChatService, TurnOptions
from app.config.providers import ProviderConfig
from app.config.settings import Settings
from app.domain.errors import UsageError
from app.domain.messages import (
    ChatMessage,
    ChatRequest,
    Finished,
    FinishReason,
    Role,
    TextDelta,
    Usage,
)
from app.domain.structured import check_schema, lenient, validate
from app.storage.store import Store
from engines.base import EngineBase, EngineCapabilities, EngineInfo
from engines.openai_compat import OpenAICompatEngine
from tests.fault_server import fault_server
from tests.support import wire_engine

PERSON = {"type": "object", "properties": {"name": {"type": "string"},
                                           "age": {"type": "integer", "minimum": 0}},
          "required": ["name", "age"], "additionalProperties": False}


@pytest.fixture
def service(tmp_path):
    store = Store(tmp_path / "outpost.db")
    yield ChatService(store, Settings(tmp_path / "settings.json"))
    store.close()


def test_a_bad_schema_is_refused_naming_the_problem():
    with pytest.raises(UsageError, match="not valid at properties/age/type"):
        check_schema({"type": "object", "properties": {"age": {"type": "integr"}}})
    with pytest.raises(UsageError, match="must be a JSON object"):
        check_schema(["type", "object"])
    assert check_schema(PERSON) is PERSON


def test_validation_and_the_lenient_repair():
    assert validate('{"name": "Ada", "age": 36}', PERSON).valid
    assert "empty" in validate("  ", PERSON).error
    wrong = validate('{"name": "Ada", "age": -1}', PERSON)
    assert not wrong.valid and "at age" in wrong.error
    fenced = "Sure! Here it is:\n```json\n{\"name\": \"Ada\", \"age\": 36}\n```"
    assert not validate(fenced, PERSON).valid
    fixed = lenient(fenced, PERSON)
    assert fixed.valid and json.loads(fixed.text) == {"name": "Ada", "age": 36}
    assert lenient('The answer is {"name": "Bo", "age": 2} and more', PERSON).valid
    assert not lenient("no json here", PERSON).valid


def test_the_lenient_repair_takes_the_whole_reply_never_a_fragment_nested_in_it():
    """A reply cut inside its outer object once passed off an object nested in it as the
    answer (the report's {"type": "json", "data": {"name": "Floats", ...}, "properties": ...
    cut at max tokens printed {"name": "Floats", ...})."""
    cut = '{"type": "json", "data": {"name": "Floats", "age": 3}, "properties": {"descr'
    assert not lenient(cut, None).valid
    assert not lenient(cut, PERSON).valid
    assert not lenient("Here: " + cut, PERSON).valid
    # a whole value with prose or a fence around it is still repaired; braces in its strings
    # and in the prose before it are text
    fine = lenient('Note {x} first. {"name": "a {b", "age": 1} Done.', PERSON)
    assert fine.valid and fine.value == {"name": "a {b", "age": 1}
    # two values that would both do: which one is meant is not for the repair to guess
    assert not lenient('{"name": "A", "age": 1} or {"name": "B", "age": 2}', PERSON).valid


class Scripted(EngineBase):
    """An engine that replies with the given texts, one per call (the real engines are tested
    against the fault server and the real model below)."""

    capabilities = EngineCapabilities(knob_kind="local")
    info = EngineInfo("test", "scripted")

    def __init__(self, *texts: str, reasons: tuple[FinishReason, ...] = ()):
        self.texts = list(texts)
        self.reasons = list(reasons)  # how each reply ends (default: stop)
        self.requests: list[ChatRequest] = []

    def stream(self, request, cancel):
        self.requests.append(request)
        text = self.texts.pop(0)
        if text:
            yield TextDelta(text)
        yield Usage(10, 5)
        reason = self.reasons.pop(0) if self.reasons else FinishReason.STOP
        yield Finished(reason, ttft_ms=1.0, tokens_per_s=10.0)

    def close(self):
        pass


def run(service, engine, schema=PERSON):
    turn = service.start_turn("Who?", model="m", options=TurnOptions(json_schema=schema,
                                                                     json_mode=True))
    events = list(turn.run(engine, threading.Event()))
    return turn, events, service.store.get_message(turn.assistant_message_id)


def test_valid_json_passes_untouched(service):
    turn, _, message = run(service, Scripted('{"name": "Ada", "age": 36}'))
    assert message.output_check == {"mode": "json_schema", "valid": True, "error": None,
                                    "repair": None}
    assert message.content == '{"name": "Ada", "age": 36}'


def test_fenced_json_is_repaired_leniently_without_asking_again(service):
    engine = Scripted('```json\n{"name": "Ada", "age": 36}\n```')
    _, _, message = run(service, engine)
    assert len(engine.requests) == 1
    assert message.output_check["valid"] and message.output_check["repair"] == "lenient"
    assert json.loads(message.content) == {"name": "Ada", "age": 36}
    assert message.output_check["raw"].startswith("```json")


def test_invalid_json_is_asked_again_once_with_the_error(service):
    from app.domain.messages import Restart

    engine = Scripted('{"name": "Ada"}', '{"name": "Ada", "age": 36}')
    turn, events, message = run(service, engine)
    assert len(engine.requests) == 2
    again = engine.requests[1]
    # its own key (no provider hands back the cached invalid reply), filed under the turn
    assert again.idempotency_key == turn.request.idempotency_key + "~repair"
    assert again.messages[-2] == ChatMessage(Role.ASSISTANT, '{"name": "Ada"}')
    assert "'age' is a required property" in again.messages[-1].content
    assert again.max_tokens == turn.request.max_tokens  # not cut: the same room
    assert any(isinstance(e, Restart) for e in events)
    assert message.output_check["valid"] and message.output_check["repair"] == "reask"
    assert message.content == '{"name": "Ada", "age": 36}'
    assert message.completion_tokens == 10  # both attempts' tokens


NESTED_CUT = ('{"type": "json", "data": {"name": "Floats", "age": 3}, "properties": '
              '{"description": "')


def test_a_reply_cut_at_max_tokens_is_asked_again_with_twice_the_room(service):
    engine = Scripted(NESTED_CUT, '{"name": "Ada", "age": 36}',
                      reasons=(FinishReason.LENGTH, FinishReason.STOP))
    turn, _, message = run(service, engine)
    assert len(engine.requests) == 2
    assert engine.requests[1].max_tokens == 2 * turn.request.max_tokens
    assert message.output_check["repair"] == "reask" and message.output_check["valid"]
    assert message.content == '{"name": "Ada", "age": 36}'


def test_a_re_ask_cut_again_is_invalid_json_never_a_fragment_of_it(service):
    engine = Scripted(NESTED_CUT, NESTED_CUT, reasons=(FinishReason.LENGTH,) * 2)
    _, _, message = run(service, engine, schema=None)
    assert message.output_check["valid"] is False
    assert "cut at max tokens" in message.output_check["error"]
    assert message.content == NESTED_CUT and "invalid JSON" in message.error


def test_a_cut_reply_with_a_whole_value_in_it_is_still_asked_again(service):
    """Cut at max tokens, the reply is not whole: a value complete before the cut may be
    followed by more of the answer, so it is asked again rather than taken."""
    engine = Scripted('{"name": "Ada", "age": 36}\n{"name": "Bo', '{"name": "Bo", "age": 2}',
                      reasons=(FinishReason.LENGTH, FinishReason.STOP))
    _, _, message = run(service, engine)
    assert len(engine.requests) == 2 and message.content == '{"name": "Bo", "age": 2}'


def test_still_invalid_after_the_repair_is_marked_with_the_raw_text_kept(service):
    engine = Scripted("I cannot do that.", "")
    _, _, message = run(service, engine)
    assert len(engine.requests) == 2  # one repair only
    check = message.output_check
    assert check["valid"] is False and "empty" in check["error"]
    assert "(raw text kept)" not in message.error
    assert check["raw"] == "I cannot do that."
    assert message.error and "invalid JSON" in message.error


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
def test_each_wire_format_gets_its_structured_request(service, wire):
    reply = '{"name": "Ada", "age": 36}'
    with fault_server() as server:
        engine = wire_engine(wire, server.url)
        server.script([tool_reply(reply) if wire == "anthropic" else text_reply(reply)])
        try:
            turn, _, message = run(service, engine)
        finally:
            engine.close()
        [sent] = server.chat_requests()
    body = sent.json
    if wire == "openai":
        assert body["response_format"] == {"type": "json_schema", "json_schema": {
            "name": "reply", "schema": PERSON, "strict": True}}
    else:
        assert body["tools"] == [{"name": "reply", "description": body["tools"][0]["description"],
                                  "input_schema": PERSON}]
        assert body["tool_choice"] == {"type": "tool", "name": "reply"}
    assert message.output_check["valid"] and json.loads(message.content)["age"] == 36


def test_json_mode_says_json_in_the_messages_as_openai_requires(service):
    """OpenAI refuses ``json_object`` unless a message says "JSON" (HTTP 400, "'messages'
    must contain the word 'json' in some form"): the fault server enforces that rule, as
    OpenAI does. JSON mode with no schema gets the instruction in the system message;
    messages that already say JSON go as they are; a schema the server would not take as
    json_schema goes in the instruction."""
    from tests.fault_server import Custom, Status

    def openai_rule(reply):
        def answer(ex):
            said = " ".join(str(m.get("content")) for m in ex.request.json["messages"])
            if ex.request.json.get("response_format", {}).get("type") == "json_object" and \
                    "json" not in said.lower():
                Status(400, message="'messages' must contain the word 'json' in some form, "
                                    "to use 'response_format' of type 'json_object'.").stream(ex)
            else:
                text_reply(reply).stream(ex)
        return Custom(fn=answer)

    def ask(prompt, system=None):
        options = TurnOptions(json_mode=True, system_prompt=system)
        turn = service.start_turn(prompt, model="m", options=options)
        list(turn.run(engine, threading.Event()))
        return service.store.get_message(turn.assistant_message_id)

    with fault_server() as server:
        engine = wire_engine("openai", server.url)
        server.script([openai_rule('{"name": "Ada"}') for _ in range(3)])
        try:
            plain = ask("Give me a person.")
            kept = ask("Give me a person.", system="You are terse.")
            said = ask("Give me a person as json.")
        finally:
            engine.close()
        bodies = [r.json for r in server.chat_requests()]
    assert [m.status.value for m in (plain, kept, said)] == ["complete"] * 3
    assert bodies[0]["messages"][0]["content"].endswith("\n\nReply with a JSON object.")
    assert bodies[1]["messages"][0] == {"role": "system",
                                        "content": "You are terse.\n\nReply with a JSON object."}
    assert "Reply with a JSON object" not in json.dumps(bodies[2]["messages"])


def test_a_schema_sent_as_json_object_is_told_to_the_model(service):
    from engines.openai_compat import json_object_messages

    told = json_object_messages([{"role": "user", "content": "Who? (JSON)"}], PERSON)
    assert told[0] == {"role": "system", "content": "Reply with a JSON object matching this "
                                                    f"JSON Schema: {json.dumps(PERSON)}"}
    assert told[1:] == [{"role": "user", "content": "Who? (JSON)"}]
    assert json_object_messages([{"role": "user", "content": "Who?"}], None) == [
        {"role": "system", "content": "Reply with a JSON object."},
        {"role": "user", "content": "Who?"}]


def text_reply(text):
    from tests.fault_server import Normal

    return Normal(chunks=(text[:10], text[10:]))


def tool_reply(text):
    from tests.fault_server import ToolUse

    return ToolUse(partial_json=(text[:10], text[10:]))


@pytest.mark.local_model
def test_local_grammar_gives_valid_json_20_times_out_of_20(local_engine):
    from app.domain.structured import response_format

    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
                                               "population": {"type": "integer"}},
              "required": ["city", "population"]}
    valid = 0
    for seed in range(20):
        request = ChatRequest(model="local", messages=(ChatMessage(
            Role.USER, "Name a big city and its population as JSON."),), max_tokens=60,
            temperature=0.9, seed=seed, response_format=response_format(schema))
        text = "".join(e.text for e in local_engine.stream(request, threading.Event())
                       if isinstance(e, TextDelta))
        valid += validate(text, schema).valid
    assert valid == 20


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True,
                          text=True, env=os.environ.copy(), timeout=120,
                          stdin=subprocess.DEVNULL)


@pytest.mark.local_model
def test_cli_json_schema_file(outpost_home, tmp_path):
    schema = tmp_path / "colour.json"
    schema.write_text(json.dumps({"type": "object", "properties": {
        "colour": {"type": "string", "enum": ["red", "green", "blue"]}},
        "required": ["colour"]}))
    result = cli("ask", "Pick a colour.", "--json-schema", str(schema), "--max-tokens", "30")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["colour"] in ("red", "green", "blue")
    bad = tmp_path / "bad.json"
    bad.write_text('{"type": "objekt"}')
    refused = cli("ask", "x", "--json-schema", str(bad))
    assert refused.returncode == 2 and "JSON Schema is not valid" in refused.stderr
    assert json.loads(cli("history", "list", "--json").stdout)[0]["title"] == "Pick a colour."


def test_a_server_without_json_schema_gets_json_object_and_the_reply_is_still_checked(service):
    from tests.fault_server import Status

    with fault_server() as server:
        engine = OpenAICompatEngine(ProviderConfig("f", "openai", server.url + "/v1",
                                                   "test-model"), "sk-test")
        server.script([Status(400, message="Invalid parameter: 'response_format' of type "
                                           "'json_schema' is not supported with this model."),
                       text_reply('{"name": "Ada", "age": 36}'),
                       text_reply('{"name": "Bo", "age": 7}')])
        try:
            _, _, first = run(service, engine)
            _, _, second = run(service, engine)
        finally:
            engine.close()
        bodies = [r.json for r in server.chat_requests()]
    assert [b["response_format"]["type"] for b in bodies] == ["json_schema", "json_object",
                                                              "json_object"]
    assert first.output_check["valid"] and second.output_check["valid"]
    assert second.params["response_format"].startswith("json_object")
    # learnt for good: a new engine (the next CLI run) asks json_object straight away
    from app.config.provider_facts import refuses_json_schema

    assert refuses_json_schema(server.url + "/v1", "test-model")


def test_a_json_reply_cut_at_max_tokens_is_asked_again_with_more_room(service):
    class Cut(Scripted):
        def stream(self, request, cancel):
            self.requests.append(request)
            text = self.texts.pop(0)
            yield TextDelta(text)
            yield Usage(10, 5)
            yield Finished(FinishReason.LENGTH if text.startswith('{"name": "Ad"') is False
                           and not text.endswith("}") else FinishReason.STOP)

    engine = Cut('{"name": "Ada", "ag', '{"name": "Ada", "age": 36}')
    turn = service.start_turn("Who?", model="m", options=TurnOptions(json_schema=PERSON,
                                                                     max_tokens=8))
    events = list(turn.run(engine, threading.Event()))
    from app.domain.messages import Restart

    [restart] = [e for e in events if isinstance(e, Restart)]
    assert "cut at max tokens (8)" in restart.reason
    assert engine.requests[1].max_tokens == 16
    assert service.store.get_message(turn.assistant_message_id).output_check["valid"]


@pytest.mark.parametrize("after", [0, 1], ids=["before-any-text", "mid-answer"])
def test_a_repair_whose_connection_drops_keeps_the_first_reply_whole(service, after):
    """The re-ask's connection is cut on a real server (before its first word: the engine
    raises; after it: the stream ends in an error): the reply stored is the first one, whole,
    marked not valid, never the re-ask's part or nothing."""
    import contextlib

    from app.domain.errors import OutpostError
    from engines.http_policy import RetryPolicy
    from tests.fault_server import Cut

    first = "The supply list: water 20 L, rice 5 kg, matches."
    with fault_server() as server:
        engine = OpenAICompatEngine(ProviderConfig("f", "openai", server.url + "/v1",
                                                   "test-model"), "sk-test",
                                    policy=RetryPolicy(max_retries=0))
        server.script([text_reply(first), Cut(after=after, chunks=('{"water": ', '"20 L"}'))])
        turn = service.start_turn("The supplies as JSON", model="m",
                                  options=TurnOptions(json_mode=True))
        raised = pytest.raises(OutpostError) if after == 0 else contextlib.nullcontext()
        try:
            with raised:
                list(turn.run(engine, threading.Event()))
        finally:
            engine.close()
    message = service.store.get_message(turn.assistant_message_id)
    assert message.content == first
    assert message.status.value == "complete"
    check = message.output_check
    assert check["valid"] is False and check["repair_failed"] is True
    assert check["raw"] == first
    assert "asking again for valid JSON failed" in message.error
    assert message.finish_reason == "stop"  # how the first reply ended, not the re-ask


def test_a_repair_that_ends_in_an_error_keeps_the_first_reply_whole(service):
    class FailsSecond(Scripted):
        def stream(self, request, cancel):
            if not self.requests:
                yield from super().stream(request, cancel)
                return
            self.requests.append(request)
            yield TextDelta('{"name": ')
            yield Finished(FinishReason.ERROR, error=RuntimeError("the model crashed"))

    _, _, message = run(service, FailsSecond("I cannot do that."))
    assert message.content == "I cannot do that."
    assert message.output_check["repair_failed"] is True
    assert "the model crashed" in message.output_check["error"]
