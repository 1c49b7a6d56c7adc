"""`outpost ask` to OpenAI's reasoning models (o1, o3, o4-mini, gpt-5), as the tester did it:
the settings' default knobs are not sent (OpenAI refuses them: HTTP 400), a knob given as a flag
is, and a refusal of it is learnt, with the reply stored with what was actually sent. Against
the fault server's ``ReasoningModel``, which refuses as OpenAI does."""
from __future__ import annotations

import json

import pytest

from app import cli
from app.config.providers import ProviderConfig, ProviderRegistry
from app.storage.store import Store
from tests.fault_server import fault_server, reasoning_model

pytestmark = pytest.mark.timeout(60)
SAMPLING = {"temperature", "top_p", "presence_penalty", "frequency_penalty"}


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setattr("signal.signal", lambda *args: None)  # (ask's Ctrl+C, not pytest's)
    with fault_server() as running:
        ProviderRegistry().add(ProviderConfig("oai", "openai", running.url + "/v1",
                                              "gpt-4o-mini"))
        yield running


def ask(capsys, *args: str) -> dict:
    capsys.readouterr()
    assert cli.main(["ask", *args, "--provider", "oai", "--route", "cloud", "--json"]) == 0
    out, _ = capsys.readouterr()
    [finished] = [e for e in map(json.loads, out.splitlines()) if e["event"] == "finished"]
    return finished


def stored_params(message_id: str) -> dict:
    store = Store()
    try:
        return store.get_message(message_id).params
    finally:
        store.close()


@pytest.mark.parametrize("model", ["o3-mini", "gpt-5-mini"])
def test_the_defaults_are_not_sent_to_a_reasoning_model(capsys, server, model):
    """`ask "x" --model o3-mini` sent "temperature": 0.7, "top_p": 0.95 (never set by the
    user) and OpenAI refused it: exit 4. Now it is answered at the first request."""
    server.script([reasoning_model()])
    finished = ask(capsys, "x", "--model", model, "--max-tokens", "50")
    [sent] = server.chat_requests()
    assert not SAMPLING & set(sent.json) and sent.json["max_completion_tokens"] == 50
    params = stored_params(finished["message_id"])
    assert not SAMPLING & set(params) and params["max_tokens"] == 50


def test_a_flag_is_sent_and_its_refusal_learnt(capsys, server):
    """`--presence-penalty 0.5` is the user's own: sent; refused, so asked again without it,
    and the next `ask` (a new process would read provider_facts.json) does not send it."""
    server.script([reasoning_model()] * 3)
    finished = ask(capsys, "x", "--model", "o3-mini", "--presence-penalty", "0.5")
    first, second = server.chat_requests()
    assert first.json["presence_penalty"] == 0.5 and "presence_penalty" not in second.json
    assert "presence_penalty" not in stored_params(finished["message_id"])  # as sent
    ask(capsys, "y", "--model", "o3-mini", "--presence-penalty", "0.5")
    assert "presence_penalty" not in server.chat_requests()[2].json
    assert len(server.chat_requests()) == 3  # no refusal this time
    capsys.readouterr()
    assert cli.main(["preset", "knobs"]) == 0
    said = capsys.readouterr().out
    assert f"refused by {server.url}/v1 for o3-mini, so not sent to it: presence_penalty." in said
    assert "reasoning: OpenAI's reasoning models (o1, o3, o4-mini, gpt-5)" in said


def test_a_preset_counts_as_given(capsys, server):
    """A preset is the user's choice too: Precise's temperature 0.2 and top_p 0.9 go to the
    reasoning model (and are learnt when refused)."""
    server.script([reasoning_model()] * 3)
    ask(capsys, "x", "--model", "o3-mini", "--preset", "Precise")
    first = server.chat_requests()[0].json
    assert first["temperature"] == 0.2
