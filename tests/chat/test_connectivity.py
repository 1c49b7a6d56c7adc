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


def test_one_failed_send_counts_once_however_many_attempts_it_made():
    """Cloud only, provider down: two messages, each sent 3 times (the retries). Counting each
    attempt made the link 6 failures deep, its next probe 160 s away, so a provider back
    within seconds waited minutes for its queue. Each send counts once: the next probe is
    10 s away (5 s, 10 s, … as the probes back off). The outbox sending the same item again
    later (same idempotency key, a new first attempt) is a new send, and counts."""
    import threading

    from app.config.providers import ProviderConfig
    from app.domain.errors import ConnectionFailed
    from app.domain.messages import ChatMessage, ChatRequest, Role
    from engines.http_policy import RetryPolicy, Timeouts
    from engines.openai_compat import OpenAICompatEngine
    from tests.fault_server import refused_url

    clock = Clock()
    links = Connectivity(clock, wall)
    attempts: list[AttemptRecord] = []

    def on_attempt(record) -> None:
        attempts.append(record)
        links.record_attempt(record)

    def send(engine, request) -> None:
        try:
            for _ in engine.stream(request, threading.Event()):
                pass
        except ConnectionFailed:
            return
        raise AssertionError("the provider is down: the send should have failed")

    with refused_url() as down:
        engine = OpenAICompatEngine(
            ProviderConfig("fault", "openai", down + "/v1", "test-model"), "sk-test",
            policy=RetryPolicy(initial_backoff=0.01, max_backoff=0.02),
            timeouts=Timeouts(connect=1, first_token=3, idle=2), on_attempt=on_attempt)
        requests = [ChatRequest(model="test-model", messages=(ChatMessage(Role.USER, q),))
                    for q in ("Q1", "Q2")]
        try:
            for request in requests:
                send(engine, request)
            assert len(attempts) == 6  # (3 attempts each: Cloud only retries)
            link = links.link("fault")
            assert (link.state, link.failures) == (LinkState.OFFLINE, 2)
            assert link.next_probe_at - clock.now == 10.0
            assert links.next_probe_time("fault") == wall() + dt.timedelta(seconds=10)
            # the router's word on the same send (Auto) is no new failure either
            links.record("fault", "connection_failed", send=requests[1].idempotency_key,
                         again=True)
            assert link.failures == 2
            send(engine, requests[1])  # the outbox sends Q2 again: a send of its own
            assert link.failures == 3 and link.next_probe_at - clock.now == 20.0
        finally:
            engine.close()


def test_a_provider_slow_to_answer_is_tried_again_later_each_time():
    """A provider that is there (the probe's TCP connect works) but sends no text before the
    first-token deadline: each send of the outbox's item timed out, the next probe found it
    online at once, and the item went again: every 5 s after the timeout (~35 s apart with
    the default 30 s deadline), for ever. A probe proves the host is there, not that it
    answers: the timed-out sends keep counting until one is answered, so the next try backs
    off as for a provider that cannot be reached (5 s, 10 s, 20 s …)."""
    import threading

    from app.config.providers import ProviderConfig
    from app.domain.errors import TimeoutError_
    from app.domain.messages import ChatMessage, ChatRequest, Role
    from engines.http_policy import RetryPolicy, Timeouts
    from engines.openai_compat import OpenAICompatEngine
    from tests.fault_server import Stall, fault_server, normal

    clock = Clock()
    links = Connectivity(clock, wall)
    request = ChatRequest(model="test-model", messages=(ChatMessage(Role.USER, "Q"),))
    with fault_server() as server:
        engine = OpenAICompatEngine(
            ProviderConfig("slow", "openai", server.url + "/v1", "test-model"), "sk-test",
            policy=RetryPolicy(max_retries=0),
            timeouts=Timeouts(connect=1, first_token=0.3, idle=2),
            on_attempt=links.record_attempt)
        waits = []
        try:
            for _ in range(3):
                server.script([Stall(seconds=1.0)])
                try:  # the outbox sends the item again: same key, a send of its own
                    for _ in engine.stream(request, threading.Event()):
                        pass
                except TimeoutError_:
                    pass
                else:
                    raise AssertionError("the provider sent nothing: the send should time out")
                waits.append(links.link("slow").next_probe_at - clock.now)
                clock.now += waits[-1]
                assert links.due_for_probe("slow")
                # the host is there: the item may go again (the window sends when online)
                assert links.probe("slow", server.url + "/v1") is LinkState.ONLINE
            assert waits == [5.0, 10.0, 20.0]
            server.script([normal()])  # it answers at last: the count starts again
            for _ in engine.stream(request, threading.Event()):
                pass
            assert links.link("slow").failures == 0
        finally:
            engine.close()
