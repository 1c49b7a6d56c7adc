"""A network that answers in place of the provider (hotel or captive Wi-Fi: a sign-in page with
200, a redirect, HTTP 511) is "this network does not reach the provider", not a provider's
error: the engines raise ``NetworkIntercepted``, a ConnectionFailed, so Auto answers with the
local model and Cloud only keeps the message in the outbox. It is not retried, the redirect is
not followed (the key stays home), and the message still asks about the base URL (a wrong one
looks the same). The fault server plays the portal; a scripted engine plays the local model."""
from __future__ import annotations

import threading

import pytest

from app.chat.connectivity import Connectivity, LinkState
from app.chat.pipeline import Queued, TurnEnded, TurnPipeline, TurnTarget
from app.chat.router import RoutedEngine
from app.chat.service import ChatService, TurnOptions
from app.config.settings import Settings
from app.domain.errors import ConnectionFailed, NetworkIntercepted, ProviderError
from app.domain.messages import MessageStatus
from app.domain.routes import FAILOVER_ERRORS
from app.storage.store import Store
from engines.http_policy import AttemptRecord, network_answer
from tests.engines.test_key_echo import KEY, engine_for, make_request
from tests.fault_server import (
    PORTAL_URL,
    fault_server,
    normal,
    redirect,
    sign_in_page,
)
from tests.support import FixedEngines, ScriptedEngine, fault_cloud, reply

pytestmark = pytest.mark.timeout(60)

PORTALS = {
    "page-200": lambda: sign_in_page(200),
    "redirect-302": lambda: redirect(302),
    "redirect-307": lambda: redirect(307),
    "redirect-301": lambda: redirect(301),
    "network-auth-511": lambda: sign_in_page(511),
}


def intercepted(wire: str, portal, records: list | None = None) -> tuple:
    """The error the engine raises against ``portal``, and the requests the server saw."""
    records = [] if records is None else records
    with fault_server() as server:
        server.script([portal(), portal(), portal()])
        engine = engine_for(wire, server.url, records)
        try:
            with pytest.raises(ConnectionFailed) as caught:
                list(engine.stream(make_request(), threading.Event()))
        finally:
            engine.close()
        return caught.value, list(server.requests)


# -- the engines ----------------------------------------------------------------------------------
@pytest.mark.parametrize("portal", list(PORTALS), ids=list(PORTALS))
@pytest.mark.parametrize("wire", ["openai", "anthropic"])
def test_a_sign_in_page_or_redirect_is_the_network_not_the_provider(wire, portal):
    records: list[AttemptRecord] = []
    error, requests = intercepted(wire, PORTALS[portal], records)
    assert isinstance(error, NetworkIntercepted) and isinstance(error, FAILOVER_ERRORS)
    assert not isinstance(error, ProviderError)
    assert error.kind == "connection_failed"  # the link counts as unreachable
    text = str(error)
    assert "in place of" in text and "sign-in page" in text and "Wi-Fi" in text
    assert "base URL" in text  # a wrong base URL looks the same
    assert KEY not in text
    # not retried: the network would answer the same
    assert len(requests) == 1 and len(records) == 1
    assert records[0].status == error.status == requests[0].status
    assert records[0].error_kind == "connection_failed"


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
def test_a_redirect_is_not_followed_and_names_only_the_host(wire):
    with fault_server() as portal:
        target = portal.url + "/login?session=c0ffee"
        error, requests = intercepted(wire, lambda: redirect(302, target))
        assert portal.requests == []  # the key never went to the portal
    assert len(requests) == 1
    assert isinstance(error, NetworkIntercepted) and error.location == target
    assert "HTTP 302 to 127.0.0.1" in str(error)
    assert "c0ffee" not in str(error)  # not the portal's session token


def test_a_normal_answer_is_not_taken_for_a_portal():
    assert network_answer(200, {"content-type": "text/event-stream"}) is None
    assert network_answer(200, {"content-type": "application/json"}) is None
    assert network_answer(401, {"content-type": "text/html"}) is None  # the provider's own no
    assert network_answer(200, {"content-type": "Text/HTML; charset=utf-8"}).startswith(
        "a web page")
    assert "login.example" in network_answer(303, {"location": "https://login.example/a?b=c"})
    assert network_answer(302, {}) == "a redirect (HTTP 302)"


@pytest.mark.parametrize("portal", ["page-200", "redirect-302"])
@pytest.mark.parametrize("wire", ["openai", "anthropic"])
def test_listing_models_behind_a_portal_says_so(wire, portal):
    with fault_server() as server:
        server.script([PORTALS[portal]()])
        engine = engine_for(wire, server.url, [])
        try:
            with pytest.raises(NetworkIntercepted) as caught:
                engine.list_models()
        finally:
            engine.close()
    assert "in place of" in str(caught.value) and "base URL" in str(caught.value)


# -- routing: Auto answers locally, Cloud only queues -------------------------------------------
@pytest.mark.parametrize("portal", ["page-200", "redirect-302"])
def test_auto_answers_locally_behind_a_portal(tmp_path, portal):
    store = Store(tmp_path / "outpost.db")
    links = Connectivity()
    local = ScriptedEngine(reply("Local", " answer."))
    with fault_server() as server:
        server.script([PORTALS[portal]()])
        routed = RoutedEngine(fault_cloud(server.url + "/v1", store), lambda: local, links,
                              hedge_after_s=None, on_attempt=store.log_attempt)
        turn = ChatService(store, Settings()).start_turn(
            "Say hello.", model=routed.info.model,
            options=TurnOptions(max_tokens=12, temperature=0.0))
        try:
            list(turn.run(routed, threading.Event()))
        finally:
            routed.close()
        assert len(server.chat_requests()) == 1
    message = store.get_message(turn.assistant_message_id)
    assert message.status is MessageStatus.COMPLETE and message.content == "Local answer."
    assert message.engine == "local"
    assert "fault failed before answering (could not connect): answered locally" in \
        message.route_reason
    assert links.state("fault") is LinkState.DEGRADED  # unreachable once, not "online"
    store.close()


def test_cloud_only_queues_the_message_behind_a_portal(tmp_path):
    store = Store(tmp_path / "outpost.db")
    with fault_server() as server:
        server.script([sign_in_page(200)])
        engines = FixedEngines(ScriptedEngine(), cloud=fault_cloud(server.url + "/v1", store))
        pipeline = TurnPipeline(ChatService(store, Settings()), engines)
        events = list(pipeline.send("Say hello.", target=TurnTarget(provider="fault",
                                                                      route="cloud"),
                                    options=TurnOptions(max_tokens=12)))
        engines.cloud_engine.close()
    [queued] = [e for e in events if isinstance(e, Queued)]
    [ended] = [e for e in events if isinstance(e, TurnEnded)]
    assert not queued.answered_locally and ended.outcome.queued is not None
    assert isinstance(ended.outcome.error, NetworkIntercepted)
    assert engines.engine.requests == []  # Cloud only: the local model was not asked
    assert "Queued in the outbox" in ended.outcome.message.error
    store.close()


def test_the_provider_answers_once_the_network_lets_it(tmp_path):
    """After signing in, the same engine reaches the provider: nothing was remembered."""
    with fault_server() as server:
        server.script([sign_in_page(200), normal()])
        engine = engine_for("openai", server.url, [])
        try:
            with pytest.raises(NetworkIntercepted):
                list(engine.stream(make_request(), threading.Event()))
            events = list(engine.stream(make_request(), threading.Event()))
        finally:
            engine.close()
    assert "".join(getattr(e, "text", "") for e in events) == "Hello from the fault server."
    assert PORTAL_URL not in str(events)
