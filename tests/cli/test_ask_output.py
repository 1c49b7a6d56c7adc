"""What ``outpost ask`` prints at the end of a reply, from the turn's outcome (the stream
itself is the pipeline's: tests/chat)."""
from __future__ import annotations

import argparse
import dataclasses
import json

import pytest

from app.chat.pipeline import TurnOutcome
from app.cli.commands.ask import _finish
from app.domain.messages import Finished, FinishReason, Message, MessageStatus, Role
from engines.base import EngineInfo
from tests.support import reply


def outcome(reason: FinishReason, max_tokens: int | None = 20) -> TurnOutcome:
    reply = Message("m1", "c1", Role.ASSISTANT, "Lighthouses guide ships past",
                    MessageStatus.COMPLETE, "2026-12-01T00:00:00", "2026-12-01T00:00:00",
                    params={"max_tokens": max_tokens} if max_tokens else None,
                    finish_reason=reason.value)
    return TurnOutcome(conversation_id="c1", user_message_id="u1", message_id="m1",
                       message=reply, finish=Finished(reason, ttft_ms=120.0, tokens_per_s=40.0),
                       answered=EngineInfo("local", "model.gguf"), route_reason=None)


@pytest.mark.parametrize("max_tokens", [20, None])
def test_a_reply_cut_at_its_token_limit_says_so_on_stderr(capsys, max_tokens):
    assert _finish(argparse.Namespace(json=False), outcome(FinishReason.LENGTH, max_tokens),
                   structured=False) == 0
    out, err = capsys.readouterr()
    assert out == "\n"  # the reply's text streamed before; nothing added to it
    assert "cut at its token limit" in err and "--max-tokens" in err
    assert ("(20 tokens)" in err) == (max_tokens == 20)


def test_a_reply_that_ended_adds_no_note(capsys):
    _finish(argparse.Namespace(json=False), outcome(FinishReason.STOP), structured=False)
    assert capsys.readouterr().err == ""


def test_with_json_the_finished_event_says_it_and_stderr_too(capsys):
    """stderr's lines are the same with and without --json (the note was left out with it)."""
    _finish(argparse.Namespace(json=True), outcome(FinishReason.LENGTH), structured=False)
    out, err = capsys.readouterr()
    assert '"reason": "length"' in out
    assert "cut at its token limit (20 tokens)" in err and "--max-tokens" in err


@pytest.mark.parametrize("as_json", [False, True])
def test_turns_left_out_to_fit_are_said_on_stderr_with_json_or_without(capsys, as_json):
    from app.cli.commands.ask import _report_fit
    from app.domain.messages import ChatMessage, Fit

    asked = ChatMessage(Role.USER, "What did the first lighthouse keeper eat?")
    fit = Fit(messages=(), dropped=(asked, ChatMessage(Role.ASSISTANT, "Fish.")),
              prompt_tokens=900, exact=True, window=1024, max_tokens=100)
    _report_fit(argparse.Namespace(json=as_json), fit)
    out, err = capsys.readouterr()
    assert err == f"outpost: {fit.describe_dropped()}\n"
    assert ('"dropped_messages": 2' in out) == as_json


def ask_json(capsys, *args: str) -> list[dict]:
    from app import cli

    capsys.readouterr()
    assert cli.main(["ask", *args, "--json"]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_json_events_carry_the_checked_json_when_it_is_not_the_deltas(capsys, local):
    """A reply repaired leniently (fenced, or prose around it) printed the checked JSON
    without --json, but with it no event carried that text: the deltas are the raw reply.
    Now an ``output`` event does, before ``finished``; valid as sent, there is none."""
    local.script(reply("Sure:\n```json\n", '{"name": "Ada"}', "\n```"),
                 reply('{"name": "Bo"}'))
    events = ask_json(capsys, "A person?", "--json-mode")
    kinds = [e["event"] for e in events]
    assert "".join(e["text"] for e in events if e["event"] == "delta") == \
        'Sure:\n```json\n{"name": "Ada"}\n```'
    [output] = [e for e in events if e["event"] == "output"]
    assert output == {"event": "output", "text": '{"name": "Ada"}'}
    assert kinds.index("output") == kinds.index("finished") - 1
    assert events[-1]["output_check"]["repair"] == "lenient"
    plain = ask_json(capsys, "Another?", "--json-mode")
    assert "output" not in [e["event"] for e in plain]


def test_json_output_still_invalid_after_its_repair_is_not_printed(capsys):
    """`--json-mode`: stdout carries the reply once it is valid JSON; text still invalid
    after the repair (exit 4, its raw text kept in history) is not handed to a script: stdout
    stays empty."""
    from app.domain.errors import InvalidJsonReply
    from app.domain.structured import OutputCheck

    done = outcome(FinishReason.STOP)
    invalid = dataclasses.replace(done, output_check=OutputCheck(
        "json", valid=False, error="not JSON", repair="reask", repair_failed=True),
        error=InvalidJsonReply("The reply is not valid JSON even after one repair."))
    with pytest.raises(InvalidJsonReply):
        _finish(argparse.Namespace(json=False), invalid, structured=True)
    assert capsys.readouterr().out == ""  # not even a line's end (it printed "\n")
    valid = dataclasses.replace(done, output_check=OutputCheck("json"))
    _finish(argparse.Namespace(json=False), valid, structured=True)
    assert capsys.readouterr().out == "Lighthouses guide ships past\n"
