"""Route policies and failover before the first token (issue 4, second step)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest

from app.chat.connectivity import Connectivity, LinkState
from app.chat.router import RoutedEngine
from app.chat.service import ChatService, TurnOptions
from app.config.settings import Settings
from app.domain.errors import AuthError
from app.domain.messages import MessageStatus
from app.storage.store import Store
from tests.fault_server import fault_server, normal, unauthorized
from tests.support import Borrowed, fault_cloud

pytestmark = pytest.mark.local_model


def run_turn(store: Store, engine) -> tuple:
    turn = ChatService(store, Settings()).start_turn(
        "Say hello.", model=engine.info.model, options=TurnOptions(max_tokens=12,
                                                                   temperature=0.0))
    try:
        events = list(turn.run(engine, threading.Event()))
    finally:
        engine.close()
    return turn, events, store.get_message(turn.assistant_message_id)


def test_unreachable_provider_is_answered_locally_in_the_same_reply(tmp_path, local_engine):
    store = Store(tmp_path / "outpost.db")
    links = Connectivity()
    routed = RoutedEngine(fault_cloud("http://127.0.0.1:9/v1", store),
                          lambda: Borrowed(local_engine),
                          links)
    turn, _, message = run_turn(store, routed)
    assert message.status is MessageStatus.COMPLETE and message.content
    assert (message.engine, message.model) == ("local", local_engine.info.model)
    assert "fault failed before answering (could not connect)" in message.route_reason
    # nothing answers there: the local model at once, no retries after a backoff (Cloud only
    # retries: tests/engines/test_cloud_engines.py)
    assert len(store.request_log(turn.request.idempotency_key)) == 1
    assert links.state("fault") is LinkState.DEGRADED
    assert len(store.messages(turn.conversation_id)) == 2  # one user message, one reply


def test_known_offline_provider_is_not_even_tried(tmp_path, local_engine):
    store = Store(tmp_path / "outpost.db")
    links = Connectivity()
    links.record("fault", "connection_failed")
    links.record("fault", "connection_failed")
    routed = RoutedEngine(fault_cloud("http://127.0.0.1:9/v1", store),
                          lambda: Borrowed(local_engine),
                          links)
    turn, _, message = run_turn(store, routed)
    assert message.engine == "local" and "fault unreachable since" in message.route_reason
    assert store.request_log(turn.request.idempotency_key) == []


def test_auth_errors_are_shown_not_failed_over(tmp_path, local_engine):
    store = Store(tmp_path / "outpost.db")
    with fault_server() as server:
        server.script([unauthorized()])
        routed = RoutedEngine(fault_cloud(server.url + "/v1", store),
                              lambda: Borrowed(local_engine))
        with pytest.raises(AuthError):
            run_turn(store, routed)
    message = store.messages(store.list_conversations()[0].id)[-1]
    assert message.status is MessageStatus.ERROR and message.engine == "fault"


def test_reachable_provider_answers_and_says_so(tmp_path, local_engine):
    store = Store(tmp_path / "outpost.db")
    with fault_server() as server:
        server.script([normal()])
        routed = RoutedEngine(fault_cloud(server.url + "/v1", store),
                              lambda: Borrowed(local_engine))
        _, _, message = run_turn(store, routed)
    assert message.engine == "fault" and message.content == "Hello from the fault server."
    assert message.route_reason == "cloud first (fault)"


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True,
                          text=True, env=os.environ.copy(), timeout=120)


def test_cli_routes(outpost_home):
    assert cli("providers", "add", "down", "--base-url", "http://127.0.0.1:9/v1",
               "--model", "m").returncode == 0
    auto = cli("ask", "Say hi", "--provider", "down", "--json", "--max-tokens", "6")
    assert auto.returncode == 0, auto.stderr
    finished = json.loads(auto.stdout.splitlines()[-1])
    assert finished["engine"] == "local" and "answered locally" in finished["route_reason"]
    in_words = cli("ask", "Say hi", "--provider", "down", "--max-tokens", "6")
    assert in_words.returncode == 0, in_words.stderr
    assert "outpost: down failed before answering (could not connect): answered locally." in \
        in_words.stderr  # (said, not silent: the user asked for down)
    local_only = cli("ask", "Say hi", "--max-tokens", "6")
    assert "answered locally" not in local_only.stderr  # nobody else was asked
    only_cloud = cli("ask", "Say hi", "--provider", "down", "--route", "cloud")
    assert only_cloud.returncode == 4 and "Could not connect to down" in only_cloud.stderr
    local = cli("ask", "Say hi", "--provider", "down", "--route", "local", "--json",
                "--max-tokens", "6")
    finished = json.loads(local.stdout.splitlines()[-1])
    assert finished["engine"] == "local" and finished["route_reason"] == "local-only conversation"
    shown = json.loads(cli("history", "show", finished["conversation_id"], "--json").stdout)
    assert shown[-1]["engine"] == "local"
    assert cli("ask", "x", "--route", "cloud").returncode == 2


GUARD = """
import json, socket, sys
attempts = []
def guard(self, address, *rest):
    attempts.append(repr(address))
    raise OSError("blocked by the test's socket guard")
socket.socket.connect = guard
socket.socket.connect_ex = guard
from app.cli import main
code = main(sys.argv[1:])
sys.stderr.write("ATTEMPTS=" + json.dumps(attempts) + "\\n")
sys.exit(code)
"""


def test_local_route_opens_no_socket_even_with_a_provider_named(outpost_home):
    assert cli("providers", "add", "openai").returncode == 0
    result = subprocess.run(
        [sys.executable, "-c", GUARD, "ask", "Say hi", "--provider", "openai", "--route",
         "local", "--max-tokens", "6", "--json"],
        capture_output=True, text=True, env=os.environ.copy(), timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1])["engine"] == "local"
    assert "ATTEMPTS=[]" in result.stderr  # zero connection attempts, of any kind


def test_the_socket_guard_does_see_a_cloud_route(outpost_home):
    """The guard above is not blind: the same command on the cloud route is caught trying."""
    assert cli("providers", "add", "down", "--base-url", "http://127.0.0.1:9/v1",
               "--model", "m").returncode == 0
    result = subprocess.run(
        [sys.executable, "-c", GUARD, "ask", "Say hi", "--provider", "down", "--route",
         "cloud"], capture_output=True, text=True, env=os.environ.copy(), timeout=120)
    assert result.returncode == 4
    assert "ATTEMPTS=[]" not in result.stderr and "127.0.0.1" in result.stderr


def test_cli_offline_switch_overrides_routes_and_says_so(outpost_home):
    """Offline mode keeps a provider beyond this computer from being asked, and says so; one
    on this computer (127.0.0.1) it leaves to the route (asked: refused here, so queued)."""
    assert cli("providers", "add", "down", "--base-url", "http://192.0.2.1:9/v1",
               "--model", "m").returncode == 0
    assert "off" in cli("offline").stdout
    assert "is on" in cli("offline", "on").stdout
    answered = cli("ask", "Say hi", "--provider", "down", "--route", "cloud", "--json",
                   "--max-tokens", "6")
    assert answered.returncode == 0, answered.stderr
    assert "Offline mode is on" in answered.stderr  # an explicit cloud route is not ignored
    finished = json.loads(answered.stdout.splitlines()[-1])           # silently
    assert finished["engine"] == "local" and finished["route_reason"] == "offline mode"
    assert cli("outbox", "send").returncode == 2
    assert cli("providers", "add", "down", "--base-url", "http://127.0.0.1:9/v1",
               "--model", "m", "--replace").returncode == 0
    here = cli("ask", "Say hi", "--provider", "down", "--route", "cloud")
    assert here.returncode == 4 and "Queued in the outbox as item 1" in here.stderr
    assert "Offline mode is on" not in here.stderr
    assert "is off" in cli("offline", "off").stdout
    only_cloud = cli("ask", "Say hi", "--provider", "down", "--route", "cloud")
    assert only_cloud.returncode == 4 and "Queued in the outbox as item 2" in only_cloud.stderr
    conversation = json.loads(cli("history", "list", "--json").stdout)[0]["id"]
    again = cli("ask", "And now?", "--conversation", conversation)  # Cloud only: the provider
    assert again.returncode == 4 and "Queued in the outbox as item 3" in again.stderr  # it kept
    nobody = cli("ask", "Say hi", "--route", "cloud")  # Cloud only, no provider given or kept
    assert nobody.returncode == 2 and "--provider NAME" in nobody.stderr
