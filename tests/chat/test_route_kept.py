"""A conversation keeps the route it started under: one begun Local only (by the default
route) stays Local only when the default changes, so its history is never sent to a provider
(a field trial found it sent whole once the default became Auto). Conversations from before
that, answered Local only, are given that route by migration m018. Real SQLite, the loopback
fault server as the provider, a scripted local engine."""
from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest

from app.chat.pipeline import TurnPipeline, TurnTarget
from app.chat.service import ChatService
from app.config.settings import Settings
from app.domain.messages import Role
from app.storage.migrations import MIGRATIONS
from app.storage.store import Store
from tests.fault_server import fault_server
from tests.support import FixedEngines, ScriptedEngine, fault_cloud, reply


def test_a_chat_begun_local_only_by_the_default_stays_local_when_the_default_changes(
        tmp_path):
    store = Store(tmp_path / "outpost.db")
    settings = Settings(tmp_path / "settings.json")
    settings.set("default_route", "local")
    service = ChatService(store, settings)
    local = ScriptedEngine(reply("Noted."), reply("Still here."))
    with fault_server() as server:
        cloud = fault_cloud(server.url + "/v1", store)
        pipeline = TurnPipeline(service, FixedEngines(local, cloud))
        target = TurnTarget(provider="fault")
        first = pipeline.prepare("PRIVATE: patient 4711", target=target)
        list(first.run(threading.Event()))
        conversation = first.turn.conversation_id
        assert store.get_conversation(conversation).route == "local"
        settings.set("default_route", "auto")  # later, for new chats
        again = pipeline.prepare("And again?", conversation, target=target)
        list(again.run(threading.Event()))
        cloud.close()
        assert server.connections == []  # nothing of it went anywhere
    assert again.started.route.value == "local"
    store.close()


def test_older_chats_answered_local_only_are_kept_local_by_the_migration(tmp_path):
    path = tmp_path / "outpost.db"
    old = Store(path, [m for m in MIGRATIONS if m.__name__ != "m018_local_chats_stay_local"])
    private = old.create_conversation("private")  # no route of its own: the default's
    answered = old.add_message(private.id, Role.USER, "secret")
    reply_row = old.add_message(private.id, Role.ASSISTANT, "ok", parent_id=answered.id)
    old.db["messages"].update(reply_row.id, {"route_reason": "local-only conversation"})
    other = old.create_conversation("answered by the cloud under Auto")
    hello = old.add_message(other.id, Role.USER, "hello")
    old.add_message(other.id, Role.ASSISTANT, "hi from the cloud", parent_id=hello.id)
    once = old.add_message(other.id, Role.USER, "this one locally (ask --route local)")
    local_once = old.add_message(other.id, Role.ASSISTANT, "ok", parent_id=once.id)
    old.db["messages"].update(local_once.id, {"route_reason": "local-only conversation"})
    unanswered = old.create_conversation("no reply yet")
    old.add_message(unanswered.id, Role.USER, "hello?")
    old.close()
    new = Store(path)
    try:
        assert new.get_conversation(private.id).route == "local"
        # a provider answered it: not made Local only by one turn sent --route local
        assert new.get_conversation(other.id).route is None  # still follows the default
        assert new.get_conversation(unanswered.id).route is None
    finally:
        new.close()


@pytest.mark.local_model
def test_ask_says_why_a_provider_asked_for_a_local_only_chat_is_not_used(outpost_home):
    """`--provider` on a Local only conversation was ignored without a word (Offline mode
    says when it overrides one)."""
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True,
                              text=True, timeout=300, stdin=subprocess.DEVNULL)

    with fault_server() as server:
        assert cli("providers", "add", "acme", "--base-url", server.url + "/v1",
                   "--model", "test-model").returncode == 0
        first = cli("ask", "Private notes.", "--route", "local", "--max-tokens", "2", "--json")
        assert first.returncode == 0, first.stderr
        conversation = json.loads(first.stdout.splitlines()[-1])["conversation_id"]
        again = cli("ask", "More.", "--conversation", conversation, "--provider", "acme",
                    "--max-tokens", "2")
        assert again.returncode == 0, again.stderr
        assert server.connections == []
    assert "outpost: this conversation is Local only, so the local model answers and nothing " \
           "is sent to acme (give `--route auto` or `--route cloud` to send this message)." \
           in again.stderr
    # and not, first, that acme answers it now (the chat remembered the local model)
    assert "answered by acme now" not in again.stderr, again.stderr
