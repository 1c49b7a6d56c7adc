"""`outpost ask` on a flaky network (user trial 8): what it says on stderr, with --json or
without, while a provider is rate limited or stalls. In process: the local model is a scripted
engine, the provider a fault server on loopback."""
from __future__ import annotations

import json

import pytest

from app import cli
from app.config.providers import ProviderConfig, ProviderRegistry
from app.config.settings import Settings
from tests.fault_server import fault_server, rate_limited
from tests.support import reply


@pytest.fixture
def server():
    """A provider "fault" on a fault server (OpenAI's wire; loopback: no key needed)."""
    with fault_server() as running:
        ProviderRegistry().add(ProviderConfig("fault", "openai", running.url + "/v1",
                                              "test-model"))
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


@pytest.mark.parametrize("route", ["auto", "cloud"])
def test_the_queued_line_is_on_stderr_with_json_or_without(capsys, local, server, route):
    """Auto + 429 with send-when-online: without --json stderr said where the message went
    ("queued in the outbox as item 1; …"); with --json that line was missing, though the
    README says stderr's lines are the same either way. (Cloud only: the error says it, once,
    either way.)"""
    setting("hedge_after_s", 0)  # (the 429 answers first: no race with a hedge)
    errs = []
    for as_json in (False, True):
        server.script([rate_limited(retry_after=3600)])  # (beyond the cap: not retried)
        local.script(reply("Local", " answer."))
        args = ["rl", "--provider", "fault", "--route", route, "--send-when-online"] + (
            ["--json"] if as_json else [])
        events, err = ask(capsys, *args, code=0 if route == "auto" else 4)
        errs.append(err.replace("item 2", "item N").replace("item 1", "item N"))
        if as_json:
            assert "queued" in [e["event"] for e in events]
    assert errs[0].lower().count("queued in the outbox as item n") == 1
    assert errs[1] == errs[0]
