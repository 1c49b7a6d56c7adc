"""`outpost ask` on a flaky network (user trial 8): what it says on stderr, with --json or
without, while a provider is rate limited or stalls. In process: the local model is a scripted
engine, the provider a fault server on loopback."""
from __future__ import annotations

import functools
import re

import pytest

from app.config.providers import ProviderConfig, ProviderRegistry
from engines.http_policy import Timeouts
from tests.cli.test_ask_reports import ask, setting
from tests.fault_server import Custom, fault_server, rate_limited, text_and_silences
from tests.support import reply


@pytest.fixture
def server():
    """A provider "fault" on a fault server (OpenAI's wire; loopback: no key needed)."""
    with fault_server() as running:
        ProviderRegistry().add(ProviderConfig("fault", "openai", running.url + "/v1",
                                              "test-model"))
        yield running


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
        # (the two runs' "until 20:46:19" may fall a second apart)
        errs.append(re.sub(r"\b\d\d:\d\d:\d\d\b", "HH:MM:SS",
                           err.replace("item 2", "item N").replace("item 1", "item N")))
        if as_json:
            assert "queued" in [e["event"] for e in events]
    assert errs[0].lower().count("queued in the outbox as item n") == 1
    assert errs[1] == errs[0]


def stall_after(*chunks: str, seconds: float = 20) -> Custom:
    """The chunks, then silence (the client gives up first)."""
    def fn(ex):
        ex.send_head(200)
        for event in ex.wire.opening(None):
            ex.send_event(event)
        for chunk in chunks:
            ex.send_event(ex.wire.text(chunk))
        ex.pause(seconds)
        ex.cut()
    return Custom(fn, name="stall_after_text")


@pytest.fixture
def quick_notice(monkeypatch):
    """Deadlines of 1-2 s (the settings), the stall said after 0.3 s (10 s in use)."""
    monkeypatch.setattr("engines.registry.Timeouts", functools.partial(Timeouts,
                                                                       stall_notice=0.3))
    setting("first_token_timeout_s", 2.0)
    setting("idle_timeout_s", 1.5)


@pytest.mark.parametrize("chunks, line, gives_up", [
    ((), "no text from fault for 0.3 s; giving up at 2 s", 2.0),
    (("Part one", " and part two"), "no data from fault for 0.3 s; giving up at 1.5 s", 1.5),
    (None, "waiting for the reply from fault to start: nothing for 0.3 s; giving up at 1.5 s",
     1.5),
], ids=["before-text", "after-text", "headers-held-back"])
def test_a_stall_is_said_once_on_stderr_and_as_an_event(capsys, local, server, quick_notice,
                                                        chunks, line, gives_up):
    """Cloud only: nothing was said until the deadline ended the reply ("[30.7] outpost: fault
    sent no text within 30 s"), nor with Auto after some text until the 60 s idle timeout,
    nor while the server held its response headers back (chunks None) until its read timed
    out. The event's keys are the same for all three; only the reason differs."""
    for as_json in (True, False):
        server.script([stall_after(*chunks) if chunks is not None else
                       text_and_silences("Late", head_after=20)])
        args = ["stall", "--provider", "fault", "--route", "cloud"] + (
            ["--json"] if as_json else [])
        events, err = ask(capsys, *args, code=4)
        lines = err.splitlines()
        assert lines.count(f"outpost: {line}.") == 1, err
        if as_json:
            [stall] = [e for e in events if e["event"] == "stall"]
            assert stall == {"event": "stall", "engine": "fault", "reason": line,
                             "silent_s": 0.3, "gives_up_s": gives_up}
            kinds = [e["event"] for e in events]
            assert kinds.index("stall") > max([i for i, k in enumerate(kinds) if k == "delta"],
                                              default=-1)


def test_auto_says_a_stall_after_text_before_the_local_model_goes_on(capsys, local, server,
                                                                     quick_notice):
    setting("hedge_after_s", 0)
    server.script([stall_after("Part one", " and part two")])
    local.script(reply(" and three."))
    events, err = ask(capsys, "stall auto", "--provider", "fault", "--json")
    kinds = [e["event"] for e in events]
    assert kinds.index("stall") < kinds.index("seam")
    assert "outpost: no data from fault for 0.3 s; giving up at 1.5 s." in err.splitlines()
