"""Per-provider connectivity: outcomes and probes, on a virtual clock."""
from __future__ import annotations

import datetime as dt
import socket
from urllib.parse import urlparse

from app.chat.connectivity import MAX_BACKOFF_S, Connectivity, LinkState, probe_address
from engines.http_policy import AttemptRecord
from tests.support import Clock


def wall():
    return dt.datetime(2026, 11, 24, 10, 42)


def test_outcomes_move_between_online_degraded_offline():
    links = Connectivity(Clock(), wall)
    assert links.state("p") is LinkState.UNKNOWN
    assert links.record("p", None) is LinkState.ONLINE
    assert links.record("p", "connection_failed") is LinkState.DEGRADED  # one miss
    assert links.record("p", "timeout") is LinkState.OFFLINE  # twice in a row
    assert links.reason("p") == "p unreachable since 10:42"
    assert links.record("p", "auth") is LinkState.ONLINE  # a 401 proves it is reachable
    assert links.record("p", "provider_unavailable") is LinkState.DEGRADED
    assert links.reason("p") == "p degraded since 10:42 (the provider is overloaded or down)"
    links.record_attempt(AttemptRecord(1, 200, 12.0, None, provider="p"))
    assert links.state("p") is LinkState.ONLINE


def test_probes_back_off_while_offline_and_reset_on_network_change():
    clock = Clock()
    links = Connectivity(clock, wall)
    delays = []
    for _ in range(10):
        links.record("p", "connection_failed")
        delays.append(links.link("p").next_probe_at - clock.now)
    assert delays[:4] == [5.0, 10.0, 20.0, 40.0]
    assert max(delays) == MAX_BACKOFF_S
    assert not links.due_for_probe("p")
    links.network_changed()
    assert links.due_for_probe("p")


def test_probe_is_a_plain_tcp_connect():
    links = Connectivity(Clock(), wall)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    try:
        assert links.probe("up", f"http://127.0.0.1:{port}/v1") is LinkState.ONLINE
        conn, _ = listener.accept()
        assert conn.recv(16) == b""  # nothing was sent: no request, no key
        conn.close()
    finally:
        listener.close()
    assert links.probe("down", f"http://127.0.0.1:{port}/v1") is LinkState.DEGRADED
    assert links.probe("down", f"http://127.0.0.1:{port}/v1") is LinkState.OFFLINE
    assert links.link("down").last_probe_at == wall()


def test_behind_a_proxy_the_probe_connects_to_the_proxy_not_the_provider(monkeypatch):
    """The requests go through HTTPS_PROXY (httpx reads it); so does the probe: it never
    connects to (or looks up) the provider from here, which would show where the user is."""
    links = Connectivity(Clock(), wall)
    proxy = socket.socket()
    proxy.bind(("127.0.0.1", 0))
    proxy.listen(1)
    port = proxy.getsockname()[1]
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("NO_PROXY", "")
    try:  # 192.0.2.1 (TEST-NET-1) answers nothing: reachable only by way of the proxy
        assert links.probe("behind", "https://192.0.2.1/v1") is LinkState.ONLINE
        conn, _ = proxy.accept()
        conn.close()
    finally:
        proxy.close()
    monkeypatch.setenv("NO_PROXY", "192.0.2.1")  # a host the proxy is not for: direct
    assert probe_address(urlparse("https://192.0.2.1:8443/v1")) == ("192.0.2.1", 8443)
