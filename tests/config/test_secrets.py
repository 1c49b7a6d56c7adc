"""API keys: the real OS keychain, refusal of insecure backends, and keys never written anywhere
else (database incl. -wal, settings, logs, error messages)."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import keyring
import pytest

from app.config.secrets import InsecureKeyring, KeyStore, mask

KEY = "sk-outpost-test-9f8e7d6c5b4a3210ZZZZ"


def run_cli(*args: str, stdin: str | None = None, env: dict | None = None):
    return subprocess.run([sys.executable, "-m", "app.cli", *args], input=stdin, text=True,
                          capture_output=True, env=env or os.environ.copy(), timeout=180)


def secure_keychain_available() -> bool:
    return keyring.get_keyring().priority >= 1


@pytest.fixture
def real_keychain():
    """The real SecretService keychain. CI installs and unlocks gnome-keyring (see .ci/run), so
    there this must be present: the test fails rather than skips."""
    if not secure_keychain_available():
        if os.environ.get("CI"):
            pytest.fail("CI must provide a real keychain (gnome-keyring under dbus-run-session)")
        pytest.skip("no secure keychain on this machine (run the suite with `make test`)")
    yield
    for name in ("outpost-test-provider", "llama"):
        try:
            keyring.delete_password("Outpost", name)
        except keyring.errors.PasswordDeleteError:
            pass


def test_mask_shows_only_prefix_and_last_four():
    assert mask(KEY) == "sk-…ZZZZ"
    assert KEY[5:-4] not in mask(KEY)
    assert mask("") == ""


def test_real_keychain_round_trip(real_keychain):
    assert "SecretService" in type(keyring.get_keyring()).__name__ or \
        keyring.get_keyring().priority >= 1
    store = KeyStore()
    assert store.set("outpost-test-provider", KEY) == "keychain"
    assert KeyStore().get("outpost-test-provider") == KEY  # a new store reads it back
    assert keyring.get_password("Outpost", "outpost-test-provider") == KEY
    store.delete("outpost-test-provider")
    assert KeyStore().get("outpost-test-provider") is None


def test_a_key_moved_to_the_keychain_leaves_no_plain_file_copy(real_keychain, outpost_home):
    """Stored in keys.json (--insecure-file, no keychain then), then set again with the
    keychain there: the plain copy goes (it stayed, and was read whenever the keychain had
    nothing); other providers' keys in the file stay."""
    path = outpost_home / "config" / "keys.json"
    in_file = KeyStore(fallback="file", file_path=path)
    in_file._write_file({"outpost-test-provider": "sk-old-plain-copy-0000", "other": KEY})
    assert KeyStore().set("outpost-test-provider", KEY) == "keychain"
    assert json.loads(path.read_text()) == {"other": KEY}
    assert KeyStore().get("outpost-test-provider") == KEY


@pytest.mark.parametrize("backend", ["keyrings.alt.file.PlaintextKeyring",
                                     "keyring.backends.null.Keyring"])
def test_insecure_backend_is_refused_with_two_choices(backend, outpost_home):
    env = {**os.environ, "PYTHON_KEYRING_BACKEND": backend}
    assert run_cli("providers", "add", "local-llm", "--base-url", "http://127.0.0.1:9/v1",
                   "--model", "m", env=env).returncode == 0
    refused = run_cli("keys", "set", "local-llm", stdin=KEY + "\n", env=env)
    assert refused.returncode == 2
    assert "No secure keychain" in refused.stderr
    assert "this session only" in refused.stderr and "--insecure-file" in refused.stderr
    assert KEY not in refused.stderr + refused.stdout
    assert not (outpost_home / "config" / "keys.json").exists()
    # keyring's plaintext file must not have received it either
    for root, _, files in os.walk(outpost_home):
        for name in files:
            assert KEY.encode() not in open(os.path.join(root, name), "rb").read()

    opted_in = run_cli("keys", "set", "local-llm", "--insecure-file", stdin=KEY + "\n", env=env)
    assert opted_in.returncode == 0, opted_in.stderr
    path = outpost_home / "config" / "keys.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["local-llm"] == KEY
    assert "sk-…ZZZZ" in opted_in.stdout and KEY not in opted_in.stdout


def test_session_only_fallback_keeps_the_key_in_memory(monkeypatch, outpost_home):
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyrings.alt.file.PlaintextKeyring")
    keyring.core.init_backend()
    try:
        with pytest.raises(InsecureKeyring):
            KeyStore().set("p", KEY)
        session = KeyStore(fallback="memory")
        assert session.set("p", KEY) == "memory"
        assert session.get("p") == KEY
        assert KeyStore().get("p") is None  # gone with the session
        assert not (outpost_home / "config" / "keys.json").exists()
    finally:
        monkeypatch.delenv("PYTHON_KEYRING_BACKEND")
        keyring.core.init_backend()


def test_environment_key_goes_only_to_the_api_that_issued_it(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-other-key-0000")
    assert KeyStore().resolve("nothing-stored", "https://api.openai.com/v1") == KEY
    assert KeyStore().resolve("nothing-stored", "https://api.anthropic.com") == \
        "sk-ant-other-key-0000"
    # another server speaking the OpenAI wire format never receives the OpenAI key
    for url in ("https://openrouter.ai/api/v1", "http://127.0.0.1:8080/v1",
                "https://api.openai.com.evil.example/v1"):
        assert KeyStore().resolve("nothing-stored", url) is None
    assert KeyStore().resolve("x", "https://x.example/v1", explicit="sk-explicit") == \
        "sk-explicit"


def test_cli_does_not_send_the_environment_key_to_a_custom_server(outpost_home):
    import socket
    import threading

    received = []
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]

    def accept() -> None:
        conn, _ = listener.accept()
        conn.settimeout(5)
        received.append(conn.recv(65536))
        conn.sendall(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 2\r\n\r\n{}")
        conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    env = {**os.environ, "OPENAI_API_KEY": KEY}
    assert run_cli("providers", "add", "thirdparty", "--base-url",
                   f"http://127.0.0.1:{port}/v1", "--model", "m", env=env).returncode == 0
    result = run_cli("ask", "hi", "--provider", "thirdparty", env=env)
    thread.join(10)
    listener.close()
    assert result.returncode == 4
    assert received and b"POST /v1/chat/completions" in received[0]
    assert KEY.encode() not in received[0]
    assert b"authorization" not in received[0].lower()


def test_a_hosted_preset_without_a_key_says_how_to_add_one(outpost_home):
    """Every way the README gives: the keychain, the file when there is no secure keychain
    (where `keys set` alone is refused), and the official API's environment variable; a
    server other than that API gets no variable named (none would be used for it)."""
    assert run_cli("providers", "add", "openai").returncode == 0
    result = run_cli("ask", "hi", "--provider", "openai")
    assert result.returncode == 2
    assert result.stderr == ("outpost: There is no API key for openai: store one with `outpost "
                             "keys set openai` (without a secure keychain: `outpost keys set "
                             "openai --insecure-file`, a file only you can read), or set "
                             "OPENAI_API_KEY.\n")
    assert run_cli("providers", "add", "groq").returncode == 0
    other = run_cli("ask", "hi", "--provider", "groq")
    assert other.returncode == 2 and other.stderr.endswith(
        "`outpost keys set groq --insecure-file`, a file only you can read).\n")


@pytest.mark.local_model
def test_key_is_found_nowhere_under_the_data_directory(real_keychain, llama_server,
                                                       outpost_home):
    assert run_cli("providers", "add", "llama", "--base-url", llama_server,
                   "--model", "smollm2").returncode == 0
    stored = run_cli("keys", "set", "llama", stdin=KEY + "\n")
    assert stored.returncode == 0, stored.stderr
    assert "OS keychain" in stored.stdout
    answered = run_cli("ask", "Say hello.", "--provider", "llama", "--max-tokens", "12",
                       "--json")
    assert answered.returncode == 0, answered.stderr
    events = [json.loads(line) for line in answered.stdout.splitlines()]
    assert events[-1]["event"] == "finished"
    listed = run_cli("providers", "list", "--json")
    assert json.loads(listed.stdout)[0]["key"] == "sk-…ZZZZ"
    for text in (answered.stdout, answered.stderr, listed.stdout, listed.stderr):
        assert KEY not in text
    files = [os.path.join(root, name) for root, _, names in os.walk(outpost_home)
             for name in names]
    assert any(f.endswith("outpost.db") for f in files)
    for path in files:  # the database, its -wal and -shm, settings, providers.json, backups
        assert KEY.encode() not in open(path, "rb").read(), path


def test_adding_a_provider_says_whether_it_needs_a_key(outpost_home):
    hosted = run_cli("providers", "add", "openai")
    assert "Store its key with: outpost keys set openai" in hosted.stdout
    local = run_cli("providers", "add", "box", "--preset", "ollama")
    assert "A local server needs no key (if yours wants one: outpost keys set box)." in \
        local.stdout
    other = run_cli("providers", "add", "lab", "--base-url", "https://llm.example.org/v1")
    assert "If it needs a key: outpost keys set lab" in other.stdout


def test_providers_add_and_remove_say_what_happened(outpost_home):
    """A second `add` of a name says how to change it (--replace); `add --replace` said "Added"
    for a provider it changed; `remove` said "and its stored key" when no key was stored. The
    null keyring: a stored key goes to keys.json (--insecure-file) on every machine."""
    env = {**os.environ, "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring"}
    first = ("providers", "add", "work", "--base-url", "https://llm.example.com/v1")
    assert run_cli(*first, env=env).stdout.startswith("Added provider work (openai, ")
    again = run_cli(*first, "--model", "other", env=env)
    assert again.returncode == 2
    assert "A provider called 'work' already exists; add --replace to change it" in \
        again.stderr
    changed = run_cli(*first, "--model", "other", "--replace", env=env)
    assert changed.returncode == 0
    assert changed.stdout.startswith("Replaced provider work (openai, ")
    gone = run_cli("providers", "remove", "work", env=env)
    assert gone.returncode == 0 and gone.stdout == "Removed provider work.\n"

    assert run_cli(*first, env=env).returncode == 0
    stored = run_cli("keys", "set", "work", "--insecure-file", stdin=KEY + "\n", env=env)
    assert stored.returncode == 0, stored.stderr
    kept = run_cli(*first, "--model", "third", "--replace", env=env)
    assert kept.stdout.startswith("Replaced provider work ") and \
        kept.stdout.endswith("Its stored key is kept.\n")
    gone = run_cli("providers", "remove", "work", env=env)
    assert gone.stdout == "Removed provider work and its stored key.\n"
    assert json.loads((outpost_home / "config" / "keys.json").read_text()) == {}


def test_a_key_typed_on_the_command_line_is_refused_without_being_echoed(outpost_home):
    refused = run_cli("keys", "set", "openai", KEY)
    assert refused.returncode == 2
    assert "never taken on the command line" in refused.stderr
    assert KEY not in refused.stderr + refused.stdout
    assert not (outpost_home / "config" / "keys.json").exists()
