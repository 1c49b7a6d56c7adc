"""Keys are checked when stored, and every keyring backend keyring can return is handled: a
secure keychain is used, anything else is refused with one sentence (or the user's explicit
opt-in is used), never an unexpected error."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import keyring
import keyring.backend
import keyring.backends.fail
import keyring.backends.null
import pytest
from keyring.backends.chainer import ChainerBackend
from keyring.compat import properties
from keyrings.alt.file import PlaintextKeyring

from app.config.secrets import (
    InsecureKeyring,
    InvalidKey,
    KeyStore,
    keychain,
    validate_key,
)

KEY = "sk-keys-test-5b4a39f8e7d6c1200QQQ"
# each bad key: (the key, what the refusal says is wrong); a part of the key that must never be
# printed is its middle
BAD_KEYS = [
    ("sk-abc\r\nX-Injected: 1" + KEY, "a line break"),
    ("sk-abc\n" + KEY, "a line break"),
    ("sk-abc\t" + KEY, "a tab"),
    ("sk-abc " + KEY, "a space"),
    ("sk-abc\x00" + KEY, "a control character"),
    ("sk-abc\x7f" + KEY, "a control character"),
    ("sk-abcé" + KEY, "a character outside plain ASCII"),
    ("sk-abc🔑" + KEY, "a character outside plain ASCII"),
]


def run_cli(*args: str, stdin: str | None = None, env: dict | None = None):
    return subprocess.run([sys.executable, "-m", "app.cli", *args], input=stdin, text=True,
                          capture_output=True, env=env or os.environ.copy(), timeout=180)


@pytest.fixture
def backend():
    """Put a keyring backend in place for the test; the detected one comes back after."""
    previous = keyring.get_keyring()

    def use(instance) -> None:
        keyring.set_keyring(instance)

    yield use
    keyring.set_keyring(previous)
    keyring.backend._limit = None


# -- what a key may be ---------------------------------------------------------------------------
@pytest.mark.parametrize("key,problem", BAD_KEYS)
def test_a_key_no_http_header_can_carry_is_refused_without_printing_it(key, problem, tmp_path):
    store = KeyStore(fallback="file", file_path=tmp_path / "keys.json")
    with pytest.raises(InvalidKey) as refused:
        store.set("p", key)
    message = str(refused.value)
    assert problem in message and "printable ASCII" in message
    assert KEY not in message and "sk-abc" not in message
    assert not (tmp_path / "keys.json").exists()


def test_a_good_key_is_kept_as_given_without_surrounding_whitespace(tmp_path, backend):
    backend(keyring.backends.fail.Keyring())  # the file: no keychain, even under `make test`
    assert validate_key(f"  {KEY}\n") == KEY
    store = KeyStore(fallback="file", file_path=tmp_path / "keys.json")
    assert store.set("p", f"{KEY}\r\n") == "file"  # what a terminal or a paste adds at the end
    assert store.get("p") == KEY
    with pytest.raises(InvalidKey, match="empty"):
        store.set("p", " \n")


def test_cli_refuses_a_key_with_a_line_break_in_one_sentence(outpost_home):
    assert run_cli("providers", "add", "p", "--base-url", "http://127.0.0.1:9/v1",
                   "--model", "m").returncode == 0
    refused = run_cli("keys", "set", "p", "--insecure-file",
                      stdin=f"sk-abc\r{KEY}X-Injected: 1\n")
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.startswith("outpost: The key contains a line break at character 7")
    assert "Traceback" not in refused.stderr
    assert KEY not in refused.stderr + refused.stdout and "sk-abc" not in refused.stderr
    assert not (outpost_home / "config" / "keys.json").exists()


def test_a_non_ascii_environment_key_is_one_sentence_not_a_traceback(outpost_home):
    """A key the store never checked (the environment's) is checked when the engine is built,
    before anything is sent: httpx would raise UnicodeEncodeError on it."""
    env = {**os.environ, "OPENAI_API_KEY": "sk-é" + KEY}
    assert run_cli("providers", "add", "openai", env=env).returncode == 0
    result = run_cli("ask", "hi", "--provider", "openai", env=env)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "UnicodeEncodeError" not in result.stderr
    assert result.stderr.startswith("outpost: The API key for openai contains a character "
                                    "outside plain ASCII at character 4")
    assert KEY not in result.stderr + result.stdout


# -- every backend keyring can return ----------------------------------------------------------
def _deny_all(_backend) -> bool:
    return False


@pytest.mark.parametrize("make", [
    keyring.backends.fail.Keyring,
    keyring.backends.null.Keyring,
    PlaintextKeyring,
    ChainerBackend,  # with nothing to chain (every backend filtered out)
], ids=["fail", "null", "plaintext", "chainer-with-none"])
def test_an_insecure_backend_is_refused_or_the_opt_in_is_used(make, backend, tmp_path,
                                                              monkeypatch):
    keyring.backend._limit = _deny_all  # what the chainer chains
    monkeypatch.setattr(PlaintextKeyring, "file_path", str(tmp_path / "plaintext.cfg"))
    backend(make())
    assert not keychain().secure
    with pytest.raises(InsecureKeyring) as refused:
        KeyStore(file_path=tmp_path / "keys.json").set("p", KEY)
    assert "No secure keychain" in str(refused.value) and "--insecure-file" in str(refused.value)
    assert KEY not in str(refused.value)
    opted = KeyStore(fallback="file", file_path=tmp_path / "keys.json")
    assert opted.set("p", KEY) == "file"
    assert KeyStore(file_path=tmp_path / "keys.json").get("p") == KEY
    session = KeyStore(fallback="memory", file_path=tmp_path / "other.json")
    assert session.set("q", KEY) == "memory" and session.get("q") == KEY
    assert not (tmp_path / "plaintext.cfg").exists()  # the insecure backend never got it


def test_a_chainer_writes_where_its_first_backend_does(backend):
    """A chainer is as secure as the backend it writes to (its first): keyring gives one a
    priority of 10 whenever it chains two backends, plaintext ones included."""
    keyring.backend._limit = lambda b: isinstance(b, (PlaintextKeyring,
                                                      keyring.backends.null.Keyring))
    backend(ChainerBackend())
    chain = keychain()
    assert not chain.secure and "PlaintextKeyring" in chain.name


def test_the_encrypted_file_keyring_is_refused_clearly_not_an_unexpected_error(outpost_home):
    """keyrings.alt's EncryptedKeyring (a password typed on stdin; without pycryptodome it
    cannot even load): refused with the two choices, or the explicit opt-in is used."""
    env = {**os.environ, "PYTHON_KEYRING_BACKEND": "keyrings.alt.file.EncryptedKeyring"}
    assert run_cli("providers", "add", "p", "--base-url", "http://127.0.0.1:9/v1",
                   "--model", "m", env=env).returncode == 0
    refused = run_cli("keys", "set", "p", stdin=KEY + "\n", env=env)
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.startswith("outpost: No secure keychain is available (keyring backend "
                                     "keyrings.alt.file.EncryptedKeyring")
    assert "--insecure-file" in refused.stderr and KEY not in refused.stderr
    opted = run_cli("keys", "set", "p", "--insecure-file", stdin=KEY + "\n", env=env)
    assert opted.returncode == 0, opted.stderr
    assert json.loads((outpost_home / "config" / "keys.json").read_text()) == {"p": KEY}
    listed = run_cli("providers", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)[0]["key"] == "sk-…0QQQ"
    deleted = run_cli("keys", "delete", "p", env=env)
    assert deleted.returncode == 0, deleted.stderr


class _BrokenKeychain(keyring.backend.KeyringBackend):
    """A secure-looking backend whose store fails with its own error type, as a SecretService
    without a D-Bus session does. Viable only while a test uses it."""

    active = False

    @properties.classproperty
    def priority(cls) -> float:
        if not cls.active:
            raise RuntimeError("only for tests")
        return 5.0

    def get_password(self, service, username):
        raise RuntimeError("org.freedesktop.DBus.Error.ServiceUnknown")

    def set_password(self, service, username, password):
        raise RuntimeError("org.freedesktop.DBus.Error.ServiceUnknown")

    def delete_password(self, service, username):
        raise RuntimeError("org.freedesktop.DBus.Error.ServiceUnknown")


def test_a_keychain_that_fails_is_refused_clearly_or_the_opt_in_is_used(backend, tmp_path,
                                                                         monkeypatch):
    monkeypatch.setattr(_BrokenKeychain, "active", True)
    backend(_BrokenKeychain())
    assert keychain().secure
    with pytest.raises(InsecureKeyring) as refused:
        KeyStore(file_path=tmp_path / "keys.json").set("p", KEY)
    assert str(refused.value).startswith("The OS keychain could not store the key "
                                         "(org.freedesktop.DBus.Error.ServiceUnknown)")
    opted = KeyStore(fallback="file", file_path=tmp_path / "keys.json")
    assert opted.set("p", KEY) == "file"
    assert opted.get("p") == KEY  # the failing keychain read is "nothing there"
    opted.delete("p")
    assert opted.get("p") is None
