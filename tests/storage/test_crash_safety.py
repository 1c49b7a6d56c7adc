"""A reply survives the process dying under it: SIGKILL mid-stream, SIGTERM, SIGINT, SIGHUP."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from app.domain.messages import MessageStatus, Role
from app.storage.store import Store

pytestmark = [pytest.mark.slow, pytest.mark.local_model]

STORY = "Write a long story about a dragon who learns to fly, with many chapters."


def start_ask(*extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", "ask", STORY, "--max-tokens", "2000", "--json",
         "--temperature", "0", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())


def read_deltas(proc: subprocess.Popen, min_deltas: int, min_seconds_after_first: float) -> list:
    """Read JSON lines until enough deltas arrived and enough time passed since the first."""
    events, first_at = [], None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        assert line, f"the process ended early: {proc.wait()} {proc.stderr.read()}"
        event = json.loads(line)
        if event["event"] == "context" and not events:
            continue  # how the prompt fits the window, before the reply
        assert event["event"] == "delta", event  # the story must still be going
        events.append(event)
        first_at = first_at or time.monotonic()
        if len(events) >= min_deltas and time.monotonic() - first_at >= min_seconds_after_first:
            return events
    raise AssertionError("no deltas in time")


def test_sigkill_mid_stream_keeps_the_partial_reply(outpost_home):
    proc = start_ask()
    try:
        events = read_deltas(proc, min_deltas=5, min_seconds_after_first=0.8)  # >= one flush
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
        rest = proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    events += [json.loads(line) for line in rest.splitlines() if line.strip()]
    assert {e["event"] for e in events} == {"delta"}  # killed before the end
    printed = "".join(e["text"] for e in events)

    db = outpost_home / "data" / "outpost.db"
    store = Store(db)
    try:
        assert store.integrity_check() == "ok"
        [conversation] = store.list_conversations()
        user, assistant = store.messages(conversation.id)
        assert (user.role, user.content) == (Role.USER, STORY)
        assert assistant.role is Role.ASSISTANT
        assert assistant.status is MessageStatus.STREAMING  # nobody has recovered it yet
        assert assistant.content.strip()  # flushed while streaming
        # what was saved is what was streamed, up to the last flush (or one delta beyond)
        assert printed.startswith(assistant.content) or assistant.content.startswith(printed)
        assert assistant.parent_id == user.id
    finally:
        store.close()

    # the next start of Outpost (here: another command) marks the orphan as interrupted
    listed = subprocess.run([sys.executable, "-m", "app.cli", "history", "list", "--json"],
                            capture_output=True, text=True, env=os.environ.copy(), timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert [c["id"] for c in json.loads(listed.stdout)] == [conversation.id]

    store = Store(db)
    try:
        recovered = store.get_message(assistant.id)
        assert recovered.status is MessageStatus.INTERRUPTED
        assert recovered.finish_reason == "interrupted" and recovered.error
        assert recovered.content == assistant.content  # the partial text is kept
        assert store.mark_orphaned_streaming() == 0
        assert store.integrity_check() == "ok"
    finally:
        store.close()


def test_mark_orphaned_streaming_recovers_after_sigkill(outpost_home):
    proc = start_ask()
    try:
        read_deltas(proc, min_deltas=3, min_seconds_after_first=0.7)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    store = Store(outpost_home / "data" / "outpost.db")
    try:
        [conversation] = store.list_conversations()
        assistant = store.messages(conversation.id)[-1]
        assert assistant.status is MessageStatus.STREAMING and assistant.content
        assert store.mark_orphaned_streaming() == 1
        assert store.get_message(assistant.id).status is MessageStatus.INTERRUPTED
        assert store.integrity_check() == "ok"
    finally:
        store.close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP],
                         ids=["SIGTERM", "SIGINT", "SIGHUP (the terminal closed)"])
def test_signal_stops_the_reply_with_exit_130_and_saves_it(outpost_home, signum):
    proc = start_ask()
    try:
        events = read_deltas(proc, min_deltas=2, min_seconds_after_first=0.0)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    events += [json.loads(line) for line in out.splitlines() if line.strip()]
    kinds = [e["event"] for e in events]
    # a stop is not an error: `finished` (reason cancelled) is the last event
    assert kinds[-2:] == ["usage", "finished"], kinds
    finished = events[-1]
    assert finished["reason"] == "cancelled"
    assert events[-2]["completion_tokens"] < 2000
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "stopped" in lines[0] and "Traceback" not in err
    text = "".join(e["text"] for e in events if e["event"] == "delta")

    store = Store(outpost_home / "data" / "outpost.db")
    try:
        message = store.get_message(finished["message_id"])
        assert message.status is MessageStatus.INTERRUPTED
        assert message.finish_reason == "cancelled"
        assert message.content == text and text
        assert store.integrity_check() == "ok"
    finally:
        store.close()


def test_a_backup_is_readable_by_its_owner_only(tmp_path):
    import os
    import stat

    from app.storage.store import Store

    store = Store(tmp_path / "outpost.db")
    store.create_conversation("private")
    backup = store.backup("by-hand")
    store.close()
    assert stat.S_IMODE(os.stat(backup).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(backup.parent).st_mode) == 0o700
    assert not list(backup.parent.glob("*.part"))  # written whole, then renamed
    copy = Store(backup)
    assert [c.title for c in copy.list_conversations()] == ["private"]
    copy.close()
