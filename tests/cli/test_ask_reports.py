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
from tests.fault_server import (
    Cut,
    Normal,
    Status,
    fault_server,
    rate_limited,
    reasoning_model,
)
from tests.support import reply


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


# -- retries and waits (trial 5, defects 7 and 11) ---------------------------------------------
def test_a_retry_is_said_before_its_wait_as_a_line_and_an_event(capsys, local, server):
    """`--json` was silent for the whole of a provider's Retry-After (stdout had `context`,
    then nothing for 2 s; stderr nothing)."""
    server.script([rate_limited(retry_after_ms=200), Normal()])
    events, err = ask(capsys, "rl", "--provider", "fake", "--route", "cloud", "--json")
    kinds = [e["event"] for e in events]
    assert kinds.index("retry") < kinds.index("delta")
    [retry] = [e for e in events if e["event"] == "retry"]
    assert retry == {"event": "retry", "engine": "fake", "attempt": 1, "kind": "rate_limited",
                     "reason": "rate limited", "wait_s": 0.2}
    assert err == "outpost: fake, attempt 1: rate limited; trying again in 0.2 s.\n"


def test_a_failure_that_is_not_retried_is_not_called_an_attempt(capsys, local, server):
    """"fake, attempt 1: the provider is overloaded or down." was printed for a 503 with
    x-should-retry: false, and "attempt 1: the connection broke." for a cut that is never
    retried: both read as if a retry were coming. The error says what happened, in
    sentences ("The provider said: HTTP 503 Queued in the outbox" lacked its full stop)."""
    server.script([Status(503, headers={"x-should-retry": "false"}, message="HTTP 503")])
    _, err = ask(capsys, "down", "--provider", "fake", "--route", "cloud", code=4)
    assert "attempt" not in err
    assert "The provider said: HTTP 503. Queued in the outbox as item 1;" in err
    store = Store()
    try:
        [item] = store.db.execute("SELECT placeholder_message_id FROM outbox").fetchall()
        placeholder = store.get_message(item[0])
    finally:
        store.close()
    assert "The provider said: HTTP 503. Queued in the outbox (item 1)" in placeholder.error

    server.script([Cut(after=3)])
    _, err = ask(capsys, "cut", "--provider", "fake", "--route", "cloud", code=4)
    assert "attempt" not in err and "cut off" in err


def test_a_hedge_while_the_cloud_waits_to_retry_says_why(capsys, local, server):
    """A hedge that started while the provider's Retry-After was waited was recorded as "cloud
    first token later than 2.5 s"; and with --json, who answered instead was not on stderr."""
    setting("hedge_after_s", 1.5)  # (the 429 comes back long before; the retry in 5 s)
    server.script([rate_limited(retry_after=5)])
    local.script(reply("Local", " answer."))
    events, err = ask(capsys, "rl auto", "--provider", "fake", "--json")
    reason = "fake failed before answering (rate limited) and was to try again in 5 s: " \
        "answered locally"
    finished = events[-1]
    assert finished["event"] == "finished" and finished["engine"] == "local"
    assert finished["route_reason"] == reason
    assert [e["attempt"] for e in events if e["event"] == "retry"] == [1]
    assert err.splitlines() == ["outpost: fake, attempt 1: rate limited; trying again in 5 s.",
                                f"outpost: {reason}."]
    assert len(server.chat_requests()) == 1  # the retry never went: the local model won


def test_a_local_rate_limit_wait_is_one_json_event(capsys):
    """A profile's requests-per-minute wait (29 s in the trial) had no event in JSON."""
    message = "Over the rate limit of profile ana (2 requests per minute); try again soon"
    ticks = [RateLimitWait(message, 29.2), RateLimitWait(message, 28.2),
             RateLimitWait(message, 0.4)]
    assert _render(argparse.Namespace(json=True), iter(ticks)) == 0
    out, err = capsys.readouterr()
    assert [json.loads(line) for line in out.splitlines()] == [
        {"event": "wait", "reason": message, "wait_s": 29.2}]
    assert "waiting 30 s" in err  # the countdown, as without --json


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


# -- flags not sent as given (defect 10) ----------------------------------------------------------
def test_a_flag_capped_or_not_sent_is_said_once(capsys, local, server):
    """`--temperature 1.8` went to Anthropic as 1.0 and `--top-k/--min-p/--repeat-penalty`
    were dropped for an OpenAI-compatible server, silently (exit 0, nothing on stderr)."""
    _, err = ask(capsys, "cap", "--provider", "ant", "--temperature", "1.8", "--seed", "4")
    assert err.splitlines() == [
        "outpost: --seed is not sent: Anthropic's Messages API does not take it.",
        "outpost: --temperature 1.8: Anthropic takes a temperature of at most 1: 1 is sent."]
    assert server.chat_requests()[-1].json["temperature"] == 1.0

    _, err = ask(capsys, "knobs", "--provider", "fake", "--top-k", "5", "--min-p", "0.2",
                 "--repeat-penalty", "1.3", "--temperature", "0.3", "--json")
    assert err == ("outpost: --top-k, --min-p, --repeat-penalty are not sent: "
                   "OpenAI-compatible servers do not take them.\n")
    sent = server.chat_requests()[-1].json
    assert sent["temperature"] == 0.3 and not {"top_k", "min_p", "repeat_penalty"} & set(sent)

    _, err = ask(capsys, "top-p", "--provider", "ant", "--top-p", "0.97")
    assert err == ("outpost: --top-p 0.97: Anthropic gets the temperature instead; Top-p is "
                   "sent only below 0.95 (newer Claude models refuse both).\n")

    local.script(reply("Local."))
    _, err = ask(capsys, "local knobs", "--top-k", "5", "--min-p", "0.2", "--temperature", "1.8")
    assert err == ""  # the local model takes every knob as given


def test_a_flag_the_server_refused_for_the_model_is_said_with_why(capsys, local, server):
    """A reasoning model's server refuses --presence-penalty: the request goes again without
    it (and it is learnt); the flag was given, so ask says it was not sent, and why."""
    server.script([reasoning_model()] * 2)
    _, err = ask(capsys, "x", "--provider", "fake", "--model", "o3-mini",
                 "--presence-penalty", "0.5")
    assert err == ("outpost: --presence-penalty 0.5: The server refused presence penalty for "
                   "o3-mini, so Outpost no longer sends it to that model (delete "
                   "provider_facts.json in the data folder to try again).\n")
    server.script([reasoning_model()])
    _, err = ask(capsys, "y", "--provider", "fake", "--model", "o3-mini")
    assert err == ""  # the settings' defaults are not sent to it, and were not asked for


@pytest.mark.parametrize("json_flag", [False, True])
def test_a_request_re_sent_without_a_refused_parameter_is_said(capsys, local, server,
                                                              json_flag):
    """The settings' temperature goes to a model whose server refuses it: the request goes
    again at once without it. That was said only in the request log; now a line on stderr
    and, with --json, a ``resend`` event (before the text)."""
    server.script([Status(400, message="Unsupported value: 'temperature' does not support "
                          "0.7 with this model. Only the default (1) value is supported.",
                          code="unsupported_value"), Normal()])
    events, err = ask(capsys, "x", "--provider", "fake", "--model", "house-model",
                      *(["--json"] if json_flag else []))
    line = "fake refused temperature for house-model: re-sent without temperature"
    assert f"outpost: {line}.\n" in err
    if json_flag:
        [resend] = [e for e in events if e["event"] == "resend"]
        assert resend == {"event": "resend", "engine": "fake", "model": "house-model",
                          "change": "without temperature", "reason": line}
        kinds = [e["event"] for e in events]
        assert kinds.index("resend") < kinds.index("delta")


# -- --send-when-online in Offline mode (defect 6) ------------------------------------------------
def test_send_when_online_in_offline_mode_queues_the_message_for_later(capsys, local, server):
    """It was ignored in silence: a local answer, and "Nothing waits in the outbox." Now the
    local model answers now, as with an unreachable provider under Auto, and the message
    waits in the outbox (items keep waiting while Offline mode is on) until it is off."""
    setting("offline_mode", True)
    local.script(reply("Local", " answer."))
    elsewhere(server, "fake")
    _, err = ask(capsys, "offline swo", "--provider", "fake", "--send-when-online",
                 "--max-tokens", "8")
    assert err.splitlines() == [
        "outpost: Offline mode is on, so the local model answers now and nothing is sent; the "
        "message also waits in the outbox for fake until Offline mode is off.",
        "outpost: queued in the outbox for fake as item 1; once Offline mode is off, `outpost "
        "outbox send` (or the window) sends it."]
    assert server.chat_requests() == []  # nothing was sent
    assert cli.main(["outbox", "send"]) == 2  # Offline mode: it keeps waiting
    assert server.chat_requests() == []

    setting("offline_mode", False)
    elsewhere(server, "fake", back=True)
    capsys.readouterr()
    assert cli.main(["outbox", "send"]) == 0
    assert "Sent item 1 to fake" in capsys.readouterr().out
    [sent] = server.chat_requests()
    assert sent.json["max_tokens"] == 8 and sent.json["messages"][-1]["content"] == "offline swo"


def elsewhere(server, name: str, back: bool = False) -> None:
    """Provider ``name`` beyond this computer (TEST-NET-1: Offline mode keeps it from being
    asked); ``back``: at the fault server again (on loopback, which Offline mode lets answer)."""
    url = server.url + "/v1" if back else "http://192.0.2.1:9/v1"
    ProviderRegistry().add(ProviderConfig(name, "openai", url, "test-model"), replace=True)


def test_offline_mode_asks_a_provider_on_this_computer(capsys, local, server):
    """`outpost offline on`, then `ask --provider fake` with fake at 127.0.0.1 (an Ollama or
    llama.cpp server of the user's): fake answers, as the README says ("can still be
    reached"); it answered locally and sent nothing. A provider elsewhere still gets nothing."""
    setting("offline_mode", True)
    server.script([Normal(chunks=("From", " here."))])
    events, err = ask(capsys, "who answers?", "--provider", "fake", "--json")
    assert err == "" and len(server.chat_requests()) == 1
    assert events[-1]["engine"] == "fake"
    assert "".join(e["text"] for e in events if e["event"] == "delta") == "From here."
    local.script(reply("Local."))
    elsewhere(server, "fake")
    events, err = ask(capsys, "and now?", "--provider", "fake", "--json")
    assert events[-1]["engine"] == "local" and "Offline mode is on" in err
    assert len(server.chat_requests()) == 1


def test_send_when_online_that_cannot_queue_says_why(capsys, local, server):
    setting("offline_mode", True)
    local.script(reply("Local."), reply("Local."))
    events, err = ask(capsys, "private", "--provider", "fake", "--route", "local",
                      "--send-when-online", "--json")
    assert "queued" not in [e["event"] for e in events]
    assert "outpost: The message is not queued for the cloud: this conversation is Local " \
        "only, so nothing of it leaves this computer." in err.splitlines()
    _, err = ask(capsys, "nobody", "--send-when-online")
    assert err == ("outpost: The message is not queued for the cloud: no provider is chosen "
                   "for it, so the local model answers.\n")
    store = Store()
    try:
        assert store.db.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0
    finally:
        store.close()


# -- a 429 on Auto with send-when-online (trial 8) ------------------------------------------------
def test_a_retry_after_met_on_auto_holds_the_item_and_is_named_as_the_cause(capsys, local,
                                                                            server):
    """Auto, send when online: the provider answers 429 with Retry-After 90 and the local model
    answers. The item was queued without the hold (`outbox send` 5 s later sent it) and `ask`
    said the provider was unreachable. Now it waits until then, in every process, and every
    word about it says the real cause."""
    import re

    setting("send_when_online", True)
    local.script(reply("Local", " answer."))
    server.script([rate_limited(retry_after=90)])
    _, err = ask(capsys, "x", "--provider", "fake", "--max-tokens", "8")
    assert len(server.chat_requests()) == 1
    assert "unreachable" not in err
    said = [line for line in err.splitlines() if "queued in the outbox" in line]
    assert len(said) == 1 and re.fullmatch(
        r"outpost: fake was rate limiting requests and asked to wait 90 s: queued in the outbox "
        r"as item 1; `outpost outbox send` \(or the window\) sends it from "
        r"(\d{4}-\d\d-\d\d )?\d\d:\d\d:\d\d on \(not before: fake asked to wait\)\.", said[0])
    capsys.readouterr()
    assert cli.main(["outbox", "list"]) == 0
    assert "waits until" in capsys.readouterr().out
    assert cli.main(["outbox", "send"]) == 4  # held: not sent before the time it gave
    assert len(server.chat_requests()) == 1
