"""Offline mode opens no socket from the command line (issue 17): each command that can touch the
network runs in a real subprocess whose ``sitecustomize`` records every connect that is not
AF_UNIX (and every name lookup), refusing it; with Offline mode on nothing is recorded and the
command says so in one sentence; with it off the same command does try (so the recorder works).
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from app.config.providers import ProviderConfig, ProviderRegistry
from app.config.settings import Settings
from engines.model_library import ModelLibrary

ELSEWHERE = "http://192.0.2.1:9"  # TEST-NET-1, refused by the recorder before any packet

SITECUSTOMIZE = textwrap.dedent('''
    """Installed by tests/cli/test_offline_no_socket.py: record and refuse every connect."""
    import errno
    import os
    import socket

    _LOG = os.environ["OUTPOST_TEST_CONNECT_LOG"]


    def _note(what):
        with open(_LOG, "a", encoding="utf-8") as handle:
            handle.write(what + "\\n")


    def _refuse(what):
        _note(what)
        raise ConnectionRefusedError(errno.ECONNREFUSED, "refused by the test's sitecustomize")


    def connect(sock, address):
        if sock.family != socket.AF_UNIX:
            _refuse(f"connect {address!r}")
        return _real_connect(sock, address)


    def connect_ex(sock, address):
        if sock.family != socket.AF_UNIX:
            _note(f"connect_ex {address!r}")
            return errno.ECONNREFUSED
        return _real_connect_ex(sock, address)


    def create_connection(address, *args, **kwargs):
        _refuse(f"create_connection {address!r}")


    def getaddrinfo(host, *args, **kwargs):
        text = host.decode() if isinstance(host, bytes) else str(host)
        try:
            socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)
        except OSError:
            _note(f"lookup {text!r}")
            raise socket.gaierror(socket.EAI_NONAME, "lookups refused by the test")
        return _real_getaddrinfo(host, *args, **kwargs)


    _real_connect, _real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    _real_getaddrinfo = socket.getaddrinfo
    socket.socket.connect, socket.socket.connect_ex = connect, connect_ex
    socket.create_connection, socket.getaddrinfo = create_connection, getaddrinfo
''')


@pytest.fixture
def guarded(tmp_path):
    """Runs ``outpost ARGS`` under the recorder; returns (result, attempts)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
    log = tmp_path / "connects.log"

    def run(*args: str, timeout: float = 240) -> tuple[subprocess.CompletedProcess, list[str]]:
        log.write_text("")
        env = dict(os.environ, OUTPOST_TEST_CONNECT_LOG=str(log),
                   PYTHONPATH=os.pathsep.join(filter(None, [str(site),
                                                            os.environ.get("PYTHONPATH")])))
        result = subprocess.run([sys.executable, "-m", "app.cli", *args], env=env,
                                capture_output=True, text=True, timeout=timeout,
                                stdin=subprocess.DEVNULL)
        return result, log.read_text().splitlines()

    return run


def _offline(on: bool) -> None:
    settings = Settings()
    settings.set("offline_mode", on)
    settings.save()


@pytest.fixture
def remote():
    """A provider that is not this computer (no key needed: not a hosted preset)."""
    ProviderRegistry().add(ProviderConfig("remote", "openai", ELSEWHERE + "/v1", "m"))
    return "remote"


def _said_offline(result: subprocess.CompletedProcess) -> None:
    assert "Offline mode is on" in result.stderr and "not contacted" in result.stderr, \
        result.stderr
    assert "Traceback" not in result.stderr


def test_providers_models_opens_no_socket_in_offline_mode(guarded, remote):
    _offline(True)
    result, attempts = guarded("providers", "models", remote)
    assert attempts == []
    assert result.returncode == 4
    _said_offline(result)
    assert "remote" in result.stderr

    _offline(False)
    result, attempts = guarded("providers", "models", remote)
    assert result.returncode == 4 and "Offline mode" not in result.stderr
    assert any("192.0.2.1" in line for line in attempts), attempts


def test_models_download_opens_no_socket_in_offline_mode(guarded, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", ELSEWHERE)  # a Hub URL: the API lookup is guarded too
    url = ELSEWHERE + "/owner/repo/resolve/main/notes.Q4_K_M.gguf"
    _offline(True)
    result, attempts = guarded("models", "download", url)
    assert attempts == []
    assert result.returncode == 4
    _said_offline(result)
    models = ModelLibrary.from_settings(Settings()).models_dir
    assert not list(models.glob("*.part*")) if models.exists() else True  # no part, no lock

    _offline(False)
    result, attempts = guarded("models", "download", url)
    assert result.returncode == 4 and "Offline mode" not in result.stderr
    assert any("192.0.2.1" in line for line in attempts), attempts


@pytest.mark.local_model
def test_ask_and_outbox_send_open_no_socket_in_offline_mode(guarded, remote):
    """``ask`` with a cloud route is answered locally; ``outbox send`` sends nothing. Online,
    the same ``ask`` tries the provider and queues the message, and ``outbox send`` tries it."""
    _offline(False)
    result, attempts = guarded("ask", "Queue this.", "--provider", remote, "--route", "cloud",
                               "--max-tokens", "4")
    assert result.returncode == 4, result.stderr  # unreachable: waits in the outbox
    assert any("192.0.2.1" in line for line in attempts), attempts
    result, attempts = guarded("outbox", "send")
    assert result.returncode == 4 and any("192.0.2.1" in line for line in attempts), attempts

    _offline(True)
    result, attempts = guarded("ask", "Hello?", "--provider", remote, "--route", "cloud",
                               "--max-tokens", "4")
    assert attempts == []
    assert result.returncode == 0, result.stderr
    assert "Offline mode is on" in result.stderr  # it says it overrode the cloud route
    result, attempts = guarded("outbox", "send")
    assert attempts == []
    assert result.returncode == 2 and "Offline mode is on" in result.stderr


@pytest.mark.local_model
def test_a_local_only_conversation_opens_no_socket(guarded, remote):
    """Local only, with a provider named and Offline mode off: nothing but the local model."""
    _offline(False)
    result, attempts = guarded("ask", "Hello?", "--provider", remote, "--route", "local",
                               "--max-tokens", "4")
    assert result.returncode == 0, result.stderr
    assert attempts == []
