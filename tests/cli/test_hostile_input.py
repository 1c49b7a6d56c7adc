"""Input that is not what the CLI expects ends in one sentence, never a traceback: undecodable
bytes in argv or stdin, a core warning with an exception attached (a failed ledger write), and
a prompt far too big for any window, refused by its size before it is tokenized."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from app.domain.context import MAX_CHARS_PER_TOKEN, MessageTooLong, fit_messages
from app.domain.messages import ChatMessage, Role


def cli(*args, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], input=stdin,
                          capture_output=True, env=os.environ.copy(), timeout=180)


def one_sentence(stderr: bytes) -> str:
    text = stderr.decode("utf-8", "replace")
    lines = text.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in text, text
    assert lines[0].startswith("outpost: ")
    return lines[0]


def stored_messages(home: Path) -> int:
    path = home / "data" / "outpost.db"
    if not path.exists():
        return 0
    conn = sqlite3.connect(str(path))
    try:
        return conn.execute("SELECT count(*) FROM messages").fetchone()[0]
    finally:
        conn.close()


@pytest.mark.parametrize("args", [
    [b"ask", b"caf\xe9 au lait"],  # Latin-1, not UTF-8
    [b"ask", b"hello", b"--system", b"\xff\xfe"],
    [b"history", b"search", b"\xc3("],
])
def test_invalid_utf8_in_argv_is_one_sentence(outpost_home, args):
    proc = cli(*args)
    assert proc.returncode == 2
    assert "not valid UTF-8" in one_sentence(proc.stderr)
    assert stored_messages(outpost_home) == 0


def test_invalid_utf8_on_stdin_is_one_sentence(outpost_home):
    proc = cli("ask", "-", stdin=b"tell me about caf\xe9s\n")
    assert proc.returncode == 2
    sentence = one_sentence(proc.stderr)
    assert "stdin is not valid UTF-8" in sentence and "0xe9 at offset 17" in sentence
    assert stored_messages(outpost_home) == 0


@pytest.mark.local_model
def test_a_failed_ledger_write_is_one_line_not_a_traceback(outpost_home):
    assert cli("history", "list").returncode == 0  # the database, made
    conn = sqlite3.connect(str(outpost_home / "data" / "outpost.db"))
    conn.execute("CREATE TRIGGER no_ledger BEFORE INSERT ON request_log "
                 "BEGIN SELECT RAISE(ABORT, 'the ledger cannot be written'); END")
    conn.commit()
    conn.close()

    proc = cli("ask", "Say hi.", "--max-tokens", "2", "--temperature", "0")

    text = proc.stderr.decode()
    assert "Traceback" not in text, text
    assert all(line.startswith("outpost: ") for line in text.strip().splitlines()), text
    assert "could not record the local attempt" in text
    assert "the ledger cannot be written" in text  # the cause, in words


class CountingCounter:
    """A TokenCounter that counts (chars / 4) and remembers how often it was asked."""

    def __init__(self, window: int):
        self.context_window = window
        self.calls = 0

    def count_prompt(self, messages) -> tuple[int, bool]:
        self.calls += 1
        return sum(len(m.content) for m in messages) // 4, False


def test_a_huge_prompt_is_refused_by_its_size_before_it_is_tokenized():
    counter = CountingCounter(window=128_000)
    huge = "x" * 20_000_000  # 20 MB
    messages = [ChatMessage(Role.SYSTEM, "be brief"), ChatMessage(Role.USER, "earlier"),
                ChatMessage(Role.ASSISTANT, "ok"), ChatMessage(Role.USER, huge)]
    with pytest.raises(MessageTooLong, match="does not fit the model's context window of "
                                             "128,000 tokens: it is 20,000,000 characters"):
        fit_messages(messages, counter, max_tokens=512)
    assert counter.calls == 0  # not one tokenizer pass


def test_a_prompt_under_the_size_bound_is_still_counted():
    counter = CountingCounter(window=1_000)
    text = "x" * (MAX_CHARS_PER_TOKEN * 1_000)  # could be 1,000 tokens of 128 bytes: counted
    with pytest.raises(MessageTooLong, match="takes about"):
        fit_messages([ChatMessage(Role.USER, text)], counter, max_tokens=10)
    assert counter.calls >= 1


@pytest.mark.parametrize("value", ["[" * 100_000, "[1, 2"])
def test_a_limit_that_is_not_a_list_of_routes_is_one_sentence(value):
    done = cli("quota", "set", "allowed_routes", value)
    assert done.returncode == 2
    assert "allowed_routes must be a comma list" in one_sentence(done.stderr)
