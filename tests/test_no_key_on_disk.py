"""No key, anywhere Outpost writes: the real CLI against providers that echo keys back (the fault
server on loopback), then every file under the data directory (the database, its -wal and -shm,
backups, settings, logs), the exports and everything printed is searched for each key used.

Keys go to the real OS keychain when there is one (``make test`` runs a gnome-keyring); without
one, to the explicit insecure-file opt-in, ``keys.json``, the one file allowed to hold them.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keyring
import pytest

from app.config.secrets import keychain
from app.domain.secrets_mask import REDACTED
from tests.fault_server import (
    Custom,
    ErrorEvent,
    Exchange,
    Normal,
    fault_server,
    unauthorized,
)

pytestmark = pytest.mark.timeout(300)

KEY_OPENAI = "sk-disk-test-openai-3f2e1d0c9b8a7766AAAA"
KEY_ANTHROPIC = "sk-ant-disk-test-5a4b3c2d1e0f9988BBBB"
KEY_UNUSED = "sk-disk-test-unused-c0ffee00112233CCCC"  # stored, never sent: only the service knows
KEYS = (KEY_OPENAI, KEY_ANTHROPIC, KEY_UNUSED)
PROVIDERS = ("echo-o", "echo-a", "idle")


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], input=stdin, text=True,
                          capture_output=True, env=os.environ.copy(), timeout=240)


def key_of(ex: Exchange) -> str:
    headers = ex.request.headers
    return headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ")


def echo_everything(ex: Exchange) -> None:
    """The request's key split across two deltas, another stored key in the text, the key in
    rate-limit headers."""
    key = key_of(ex)
    Normal(chunks=("Echo ", key[:11], key[11:], " and ", KEY_UNUSED, "."),
           headers={"x-ratelimit-remaining-tokens": key,
                    "anthropic-ratelimit-tokens-remaining": f"1000 {key}"}).stream(ex)


def echo_in_error_event(ex: Exchange) -> None:
    ErrorEvent(after=2, chunks=("Half ", "an answer"), error_type="invalid_request_error",
               message=f"The key {key_of(ex)} is not allowed here.").stream(ex)


def echo_without_message_stop(ex: Exchange) -> None:
    key = key_of(ex)
    ex.send_head(200, {"x-ratelimit-limit-requests": key})
    for event in ex.wire.opening((12, 4)):
        ex.send_event(event)
    for chunk in ("Done: ", key[:5], key[5:], "."):
        ex.send_event(ex.wire.text(chunk))
    for event in ex.wire.closing("stop", (12, 4))[:-1]:  # no message_stop
        ex.send_event(event)
    ex.end()


@pytest.fixture
def stored_keys(outpost_home):
    """Store the three keys the way this machine allows; yield the files allowed to hold them."""
    secure = keychain().secure
    allowed: set[Path] = set()
    if not secure:
        allowed.add(outpost_home / "config" / "keys.json")
    for provider, key in zip(PROVIDERS, KEYS):
        flags = [] if secure else ["--insecure-file"]
        done = run_cli("keys", "set", provider, *flags, stdin=key + "\n")
        assert done.returncode == 0, done.stderr
        assert key not in done.stdout + done.stderr
    yield allowed
    if secure:
        for provider in PROVIDERS:
            try:
                keyring.delete_password("Outpost", provider)
            except keyring.errors.PasswordDeleteError:
                pass


@pytest.fixture
def providers(outpost_home):
    with fault_server() as server:
        for args in (("echo-o", "--kind", "openai", "--base-url", server.url + "/v1",
                      "--model", "test-model"),
                     ("echo-a", "--kind", "anthropic", "--base-url", server.url,
                      "--model", "claude-test"),
                     ("idle", "--kind", "openai", "--base-url", "http://127.0.0.1:9/v1",
                      "--model", "m")):
            done = run_cli("providers", "add", *args)
            assert done.returncode == 0, done.stderr
        yield server


def test_no_key_is_shown_stored_logged_or_exported(providers, stored_keys, outpost_home,
                                                   tmp_path):
    server = providers
    server.script([Custom(echo_everything), Custom(echo_everything),
                   Custom(echo_in_error_event), unauthorized(echo_key=True),
                   Custom(echo_without_message_stop)])
    outputs: list[subprocess.CompletedProcess] = []

    def ask(*args: str) -> subprocess.CompletedProcess:
        outputs.append(run_cli("ask", "Say hello.", *args))
        return outputs[-1]

    openai = ask("--provider", "echo-o", "--route", "cloud")
    assert openai.returncode == 0, openai.stderr
    assert openai.stdout.strip() == f"Echo {REDACTED} and {REDACTED}."
    anthropic = ask("--provider", "echo-a", "--route", "cloud", "--json")
    assert anthropic.returncode == 0, anthropic.stderr
    cut = ask("--provider", "echo-a", "--route", "cloud")
    assert cut.returncode == 4 and f"The key {REDACTED} is not allowed here." in cut.stderr
    refused = ask("--provider", "echo-o", "--route", "cloud")
    assert refused.returncode != 0 and "refused the API key" in refused.stderr
    auto = ask("--provider", "echo-a", "--route", "auto")  # complete: no local continuation
    assert auto.returncode == 0, auto.stderr
    assert auto.stdout.strip() == f"Done: {REDACTED}."
    # the providers really had the keys to echo
    sent = [r.headers.get("x-api-key") or r.headers.get("authorization")
            for r in server.chat_requests()]
    assert sum(KEY_OPENAI in s for s in sent) == 2 and sum(KEY_ANTHROPIC in s for s in sent) == 3

    history = run_cli("history", "list", "--json")
    assert history.returncode == 0, history.stderr
    exports = [tmp_path / "all.json", tmp_path / "all.md", tmp_path / "all.html"]
    for path in exports:
        done = run_cli("export", "--all", "-o", str(path))
        assert done.returncode == 0, done.stderr
    exported = json.loads(exports[0].read_text())
    assert REDACTED in exports[0].read_text()  # the replies are there, masked
    assert exported
    usage = run_cli("usage", "--json")
    outputs += [history, usage]

    printed = "".join(o.stdout + o.stderr for o in outputs)
    files = [Path(root) / name for root, _, names in os.walk(outpost_home) for name in names]
    assert any(f.name == "outpost.db" for f in files)
    for key in KEYS:
        assert key not in printed
        for path in files + exports:
            if path in stored_keys:
                continue
            assert key.encode() not in path.read_bytes(), (key, path)
    for allowed in stored_keys:  # the opt-in file holds exactly the keys, nothing else does
        assert json.loads(allowed.read_text()) == dict(zip(PROVIDERS, KEYS))
