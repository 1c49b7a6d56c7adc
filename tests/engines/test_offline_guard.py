"""Offline mode in the network layer (issue 17): ``engines.network_guard`` refuses before any
socket, for every HTTP client Outpost builds and for the TCP probes; loopback stays reachable.

Every socket connect and name lookup of this process is recorded (``connects``); a host that
is not this computer is refused by the recorder itself, so no test here can reach the network.
"""
from __future__ import annotations

import errno
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from app.chat.connectivity import Connectivity, LinkState
from app.config.providers import ProviderConfig
from app.config.settings import Settings
from app.domain.errors import ConnectionFailed, OfflineModeOn
from app.domain.messages import ChatMessage, ChatRequest, Role
from engines import network_guard
from engines.download_queue import DownloadQueue, QueueState
from engines.model_download import download
from engines.model_library import ModelLibrary
from engines.openai_compat import OpenAICompatEngine
from engines.sockets import SocketTracker

ELSEWHERE = "http://192.0.2.1:9"  # TEST-NET-1: never a real host; the recorder refuses it anyway


def _loopback(address) -> bool:
    return isinstance(address, tuple) and network_guard.is_loopback(str(address[0]))


@pytest.fixture
def connects(monkeypatch) -> list:
    """Every connect (not AF_UNIX) and non-numeric name lookup; any host that is not this
    computer is refused here, so a guard that fails shows up as a recorded attempt."""
    seen: list = []
    real_connect = socket.socket.connect
    real_getaddrinfo = socket.getaddrinfo

    def connect(sock, address):
        if sock.family != socket.AF_UNIX:
            seen.append(("connect", address))
            if not _loopback(address):
                raise ConnectionRefusedError(errno.ECONNREFUSED, "refused by the test")
        return real_connect(sock, address)

    def connect_ex(sock, address):
        try:
            connect(sock, address)
        except OSError as exc:
            return exc.errno or errno.ECONNREFUSED
        return 0

    def getaddrinfo(host, *args, **kwargs):
        text = host.decode() if isinstance(host, bytes) else str(host)
        try:
            socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)
        except OSError:
            if text != "localhost":
                seen.append(("lookup", text))
                raise socket.gaierror(socket.EAI_NONAME, "lookups refused by the test")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return seen


def _offline(on: bool = True) -> Settings:
    settings = Settings()
    settings.set("offline_mode", on)
    settings.save()
    return settings


def _engine(base_url: str = ELSEWHERE + "/v1") -> OpenAICompatEngine:
    return OpenAICompatEngine(ProviderConfig("remote", "openai", base_url, "m"), None)


def _request() -> ChatRequest:
    return ChatRequest(model="m", messages=(ChatMessage(Role.USER, "hello"),), max_tokens=8)


@pytest.fixture
def models_server():
    """A real OpenAI-compatible ``/models`` on loopback; ``redirect`` sends elsewhere."""
    state = {"redirect": None, "requests": 0}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):  # noqa: N802 (http.server naming)
            state["requests"] += 1
            if state["redirect"]:
                self.send_response(302)
                self.send_header("Location", state["redirect"])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = b'{"data": [{"id": "smollm2"}]}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    state["url"] = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield state
    httpd.shutdown()
    httpd.server_close()


# -- the cloud engines: model lists and chat -----------------------------------------------------
def test_offline_mode_refuses_a_model_list_before_any_socket(connects):
    _offline()
    engine = _engine()
    with pytest.raises(OfflineModeOn) as raised:
        engine.list_models()
    engine.close()
    assert connects == []
    assert str(raised.value).startswith("Offline mode is on: 192.0.2.1 was not contacted")
    assert isinstance(raised.value, ConnectionFailed) and raised.value.kind == "offline_mode"


def test_without_offline_mode_the_same_list_does_try(connects):
    """The recorder sees an attempt when the guard lets one through: the tests above can fail."""
    _offline(False)
    engine = _engine()
    with pytest.raises(ConnectionFailed) as raised:
        engine.list_models()
    engine.close()
    assert not isinstance(raised.value, OfflineModeOn)
    assert connects == [("connect", ("192.0.2.1", 9))]


def test_offline_mode_refuses_a_chat_stream_without_retrying(connects):
    _offline()
    engine = _engine()
    with pytest.raises(OfflineModeOn):
        list(engine.stream(_request(), threading.Event()))
    engine.close()
    assert connects == []
    # the refused send's first-token watchdog is stopped, not left waiting out its deadline
    for thread in threading.enumerate():
        if thread.name == "outpost-stream-watchdog":
            thread.join(timeout=5)
            assert not thread.is_alive()


def test_loopback_stays_reachable_in_offline_mode(connects, models_server):
    """A llama.cpp server or Ollama on this computer is not the network."""
    _offline()
    engine = _engine(models_server["url"] + "/v1")
    assert engine.list_models() == ["smollm2"]
    engine.close()
    assert [kind for kind, _ in connects] == ["connect"] and _loopback(connects[0][1])


def test_a_redirect_from_loopback_to_elsewhere_is_refused(connects, models_server, tmp_path):
    _offline()
    models_server["redirect"] = ELSEWHERE + "/model.gguf"
    with pytest.raises(OfflineModeOn):
        download(models_server["url"] + "/model.gguf", ModelLibrary(tmp_path / "models"))
    assert models_server["requests"] == 1
    assert all(_loopback(address) for _, address in connects)
    assert list((tmp_path / "models").iterdir()) == []  # no part, no lock


def test_a_proxy_from_the_environment_is_guarded_too(connects, monkeypatch):
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # a proxy on loopback …
    _offline()
    engine = _engine()  # … still forwards elsewhere: refused
    with pytest.raises(OfflineModeOn, match="through a proxy"):
        engine.list_models()
    engine.close()
    assert connects == []
    _offline(False)
    client = network_guard.client()
    with pytest.raises(Exception):
        client.get(ELSEWHERE + "/v1/models")  # the proxy is still used when online
    client.close()
    assert connects == [("connect", ("127.0.0.1", 9))]


def test_the_socket_tracker_still_finds_the_pool_under_the_guard():
    client = network_guard.client()
    assert SocketTracker(client).installed  # cancel can still wake a blocked read
    client.close()


# -- downloads and the Hugging Face API ---------------------------------------------------------
def test_offline_mode_refuses_a_download_and_its_hub_lookup(connects, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_ENDPOINT", ELSEWHERE)
    _offline()
    url = ELSEWHERE + "/owner/repo/resolve/main/model.Q4_K_M.gguf"  # a Hub URL: API first
    with pytest.raises(OfflineModeOn, match="Offline mode is on: 192.0.2.1 was not contacted"):
        download(url, ModelLibrary(tmp_path / "models"))
    assert connects == []
    assert list((tmp_path / "models").iterdir()) == []


def test_a_queued_download_refused_by_offline_mode_waits_instead_of_failing(connects,
                                                                            tmp_path):
    queue = DownloadQueue(ModelLibrary(tmp_path / "models"))
    queue.add(ELSEWHERE + "/model.gguf")
    _offline()
    outcome = queue.run_next(online=True)  # a caller that did not know
    assert isinstance(outcome.error, OfflineModeOn)
    assert outcome.item.state is QueueState.WAITING_FOR_NETWORK and outcome.item.message is None
    assert [i.state for i in queue.items()] == [QueueState.WAITING_FOR_NETWORK]
    assert connects == []


# -- the TCP probes ------------------------------------------------------------------------------
def test_offline_mode_probes_open_nothing_and_learn_nothing(connects):
    _offline()
    links = Connectivity()
    assert links.probe("remote", ELSEWHERE + "/v1") is LinkState.UNKNOWN
    assert connects == []
    assert links.record("remote", "offline_mode") is LinkState.UNKNOWN  # not "online"
    _offline(False)
    assert links.probe("remote", ELSEWHERE + "/v1") is LinkState.DEGRADED
    assert connects == [("connect", ("192.0.2.1", 9))]


# -- where "Offline mode is on" comes from -------------------------------------------------------
def test_the_window_settings_object_wins_once_followed(connects, tmp_path):
    window_settings = Settings()
    network_guard.follow(window_settings)
    window_settings.set("offline_mode", True)  # not saved (a full disk): still refused
    assert network_guard.offline_mode() is True
    assert Settings()["offline_mode"] is False
    with pytest.raises(OfflineModeOn):
        network_guard.check_url(ELSEWHERE)
    network_guard.check_url("http://localhost:8080/v1")  # loopback: allowed
    # a settings object of another home (an earlier test's window) does not count
    network_guard.follow(Settings(tmp_path / "elsewhere" / "settings.json"))
    assert network_guard.offline_mode() is False
    network_guard.follow(window_settings)
    window_settings.set("offline_mode", False)
    assert network_guard.offline_mode() is False


def test_loopback_means_this_computer_as_written():
    assert all(network_guard.is_loopback(h) for h in ("localhost", "127.0.0.1", "127.8.9.10",
                                                      "::1", "[::1]", "LOCALHOST."))
    assert not any(network_guard.is_loopback(h) for h in ("192.168.1.2", "example.com",
                                                          "localhost.example.com", "", "10.0.0.1"))
