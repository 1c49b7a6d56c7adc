"""What `outpost ask` says while a turn runs and after it: retries and waits (a line on stderr,
and with --json an event), a reply another engine went on with, flags the provider was not
sent as given, and a message Offline mode keeps for the outbox. In process: the local model is
a scripted engine, the providers fault servers on loopback."""
from __future__ import annotations

import argparse
import json

import pytest

from app import cli
from app.chat.pipeline import RateLimitWait
from app.cli.commands.ask import _render
from app.config.providers import ProviderConfig, ProviderRegistry
from app.config.settings import Settings
from app.storage.store import Store
from tests.fault_server import Cut, Normal, Status, fault_server, rate_limited
from tests.support import ScriptedEngine, reply


@pytest.fixture
def local(monkeypatch) -> ScriptedEngine:
    """The local model of every command: a scripted engine."""
    engine = ScriptedEngine()
    monkeypatch.setattr("app.compose.create_local_engine", engine.factory)
    monkeypatch.setattr("signal.signal", lambda *args: None)  # (ask's Ctrl+C, not pytest's)
    return engine


@pytest.fixture
def server():
    """Providers on a fault server (loopback: no key needed): "fake" speaks OpenAI's wire,
    "ant" Anthropic's."""
    with fault_server() as running:
        registry = ProviderRegistry()
        registry.add(ProviderConfig("fake", "openai", running.url + "/v1", "test-model"))
        registry.add(ProviderConfig("ant", "anthropic", running.url, "claude-test"))
        yield running


def ask(capsys, *args: str, code: int = 0) -> tuple[list[dict], str]:
    """``outpost ask ARGS``: its JSON events (with --json; else []) and its stderr."""
    capsys.readouterr()
    assert cli.main(["ask", *args]) == code
    out, err = capsys.readouterr()
    events = [json.loads(line) for line in out.splitlines()] if "--json" in args else []
    return events, err


def setting(name: str, value) -> None:
    settings = Settings()
    settings.set(name, value)
    settings.save()


def stored(message_id: str):
    store = Store()
    try:
        return store.get_message(message_id), store.request_log(
            store.get_message(message_id).params["idempotency_key"])
    finally:
        store.close()


# -- a reply the local model went on with (defect 8) ---------------------------------------------
def test_a_reply_continued_locally_reports_the_prompt_the_local_model_was_sent(
        capsys, local, server):
    """`usage` and the stored reply said the cloud's prompt (19) while the ledger's local row
    said the local model's (25): the README says the reply's prompt tokens are those the
    local model was sent, and the ledger agrees now."""
    server.script([Cut(after=3, rst=True)])
    local.script(reply(" and", " more", prompt_tokens=44))
    events, _ = ask(capsys, "cut auto", "--provider", "fake", "--max-tokens", "30", "--json")
    [usage] = [e for e in events if e["event"] == "usage"]
    message, log = stored(events[-1]["message_id"])
    [cloud_row] = [r for r in log if r["provider"] == "fake"]
    [local_row] = [r for r in log if r["provider"] == "local"]
    assert usage["prompt_tokens"] == message.prompt_tokens == local_row["prompt_tokens"] == 44
    assert usage["completion_tokens"] == message.completion_tokens == \
        cloud_row["completion_tokens"] + local_row["completion_tokens"]
    assert usage["estimated"] is True  # the cloud's part was counted, not reported
