"""A provider's Retry-After holds its outbox item, in every process: the time is stored with the
item, so `outpost outbox send` (a new process) leaves it alone until then and says why.

The real CLI in subprocesses and the Python API, a real SQLite file, the fault server as the
cloud; time is injected (``OutboxSender.now``) where the hold must end.
"""
from __future__ import annotations

import datetime as dt
import re

import pytest

from app.chat.outbox_sender import OutboxSender
from app.chat.pipeline import Queued, TurnEnded, TurnPipeline, TurnTarget
from app.chat.service import ChatService, TurnOptions
from app.config.settings import Settings
from app.domain.test_time import Plan
from app.storage.outbox import Outbox, OutboxState
from app.storage.store import Store
from tests.chat.test_outbox import add_provider, cli, events, fast_cloud, outbox_list, queue_turn
from tests.fault_server import fault_server, normal, rate_limited
from tests.support import FixedEngines, ScriptedEngine, reply


def local_hms(iso: str) -> str:
    return dt.datetime.fromisoformat(iso).astimezone().strftime("%H:%M:%S")


def test_outbox_send_in_a_new_process_waits_out_the_providers_retry_after(outpost_home):
    with fault_server() as server:
        add_provider("acme", server.url + "/v1")
        server.script([rate_limited(retry_after=120)])
        asked = cli("ask", "429 120", "--provider", "acme", "--route", "cloud",
                    "--max-tokens", "8", "--json")
        assert asked.returncode == 4, asked.stderr
        [queued] = [e for e in events(asked.stdout) if e["event"] == "queued"]
        posts = len(server.chat_requests())
        [item] = outbox_list()
        assert item["retry_after"] == 120 and item["not_before"]
        until = local_hms(item["not_before"])

        held = cli("outbox", "send")
        assert held.returncode == 4, held.stderr
        assert len(server.chat_requests()) == posts  # not asked before the time it gave
        # (the date too, should the wait cross midnight)
        said = rf"waits until (\d{{4}}-\d\d-\d\d )?{until} \(the provider asked: " \
            r"Retry-After 120 s\)"
        assert re.search(rf"Item {queued['outbox_id']} {said}\.", held.stdout), held.stdout
        assert re.search(said, cli("outbox", "list").stdout)

        forced = cli("outbox", "send", str(queued["outbox_id"]))  # the user's own call
        assert forced.returncode == 0, forced.stdout + forced.stderr
        assert len(server.chat_requests()) == posts + 1
    [done] = outbox_list("--all")
    assert done["state"] == "sent" and done["not_before"] is None


def test_a_retry_after_met_while_sending_holds_the_item_in_the_next_process_too(tmp_path):
    """The 429 comes when the outbox sends (not when the message was asked): the hold is
    stored, a new sender (another process) honours it, and after it the item goes."""
    store = Store(tmp_path / "outpost.db")
    item = queue_turn(store, "Later, please")
    later = queue_turn(store, "And this one")  # same provider: it waits behind
    start = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.timezone.utc)
    with fault_server() as server:
        server.script([rate_limited(retry_after=120), normal(), normal()])

        def sender(at: dt.datetime) -> OutboxSender:
            made = OutboxSender(Outbox(store), lambda name, model: fast_cloud(
                server.url + "/v1", store))
            made.now = lambda: at
            return made

        first = sender(start).send()
        assert [i.id for i in first.waiting] == [item.id, later.id]
        stored = Outbox(store).get(item.id)
        assert (stored.not_before, stored.retry_after) == (
            (start + dt.timedelta(seconds=120)).isoformat(timespec="milliseconds"), 120)
        again = sender(start + dt.timedelta(seconds=30)).send()
        assert len(server.chat_requests()) == 1
        assert [i.id for i in again.waiting] == [item.id, later.id]
        assert again.held == {item.id: f"waits until {local_hms(stored.not_before)} (the "
                                        "provider asked: Retry-After 120 s)"}
        assert again.behind == {later.id: item.id}
        done = sender(start + dt.timedelta(seconds=121)).send()
        assert [i.id for i, _ in done.sent] == [item.id, later.id]
        assert len(server.chat_requests()) == 3
    assert Outbox(store).get(item.id).state is OutboxState.SENT
    store.close()


def test_the_reply_of_an_item_queued_for_a_429_says_so_not_that_the_provider_was_down(
        tmp_path):
    """Its route note said "queued in the outbox at 18:48 while fault was unreachable" after a
    429: it names the real cause now. An item queued because nothing answered says as before."""
    from app.chat.service import ChatService, TurnOptions
    from app.config.settings import Settings
    from app.domain.errors import RateLimited

    store = Store(tmp_path / "outpost.db")
    service = ChatService(store, Settings())
    turn = service.start_turn("Later, please", model="test-model",
                              options=TurnOptions(max_tokens=8, temperature=0.0))
    error = RateLimited("fault is rate limiting requests (HTTP 429).", provider="fault",
                        retry_after=120)
    item = service.queue_for_later(turn, "fault", None, error)
    assert item.queued_because == "fault was rate limiting requests and asked to wait 120 s"
    down = queue_turn(store, "And this one")
    assert down.queued_because == "fault could not be reached"
    with fault_server() as server:
        server.script([normal(), normal()])
        sender = OutboxSender(Outbox(store), lambda name, model: fast_cloud(
            server.url + "/v1", store))
        later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=121)
        sender.now = lambda: later
        report = sender.send()
    notes = {i.id: m.route_reason for i, m in report.sent}
    assert re.fullmatch(r"queued in the outbox at \d\d:\d\d because fault was rate limiting "
                        r"requests and asked to wait 120 s; sent at \d\d:\d\d", notes[item.id])
    assert notes[down.id].endswith("while fault was unreachable; sent when it was back")
    store.close()


def test_a_queued_replys_note_says_it_is_tried_again_not_that_the_provider_was_down(
        tmp_path):
    """Cloud only, the provider reachable but sending no text within the first-token deadline:
    the failed reply's note ended "it is sent once fault can be reached" (it could be). Only a
    connection that failed says so; a timeout or a 503 says it is tried again."""
    from app.chat.service import ChatService, TurnOptions
    from app.config.settings import Settings
    from app.domain.errors import ConnectionFailed, ProviderUnavailable, TimeoutError_
    from app.domain.messages import Role

    store = Store(tmp_path / "outpost.db")
    service = ChatService(store, Settings())
    errors = {"timeout": TimeoutError_("fault sent no text within 30 s."),
              "503": ProviderUnavailable("fault is unavailable (HTTP 503).", provider="fault"),
              "down": ConnectionFailed("fault could not be reached.")}
    said = {}
    for name, error in errors.items():
        turn = service.start_turn(f"Later, {name}", model="test-model",
                                  options=TurnOptions(max_tokens=8, temperature=0.0))
        turn.assistant_message_id = store.add_message(  # (the failed attempt's reply)
            turn.conversation_id, Role.ASSISTANT, "", parent_id=turn.user_message_id).id
        service.queue_for_later(turn, "fault", None, error)
        said[name] = store.get_message(turn.assistant_message_id).error
    assert said["timeout"].endswith("it is sent again when fault is next tried.")
    assert said["503"].endswith("it is sent again when fault is next tried.")
    assert said["down"].endswith("it is sent once fault can be reached.")
    store.close()


@pytest.mark.parametrize("plan", [Plan("best_of", 2, scorer="judge"),
                                  Plan("self_consistency", 3)])
def test_a_429_on_auto_holds_the_item_of_a_best_of_or_self_consistency_turn(tmp_path, plan):
    """Best-of-n and self-consistency wrap the Auto router (app/chat/candidates.py); its
    candidates, answered locally after the provider's 429, queue the request with the cloud's
    error as the plain Auto path does: held until the Retry-After, saying why (not "could not
    be reached")."""
    store = Store(tmp_path / "outpost.db")
    service = ChatService(store, Settings())
    with fault_server() as server:
        server.script([rate_limited(retry_after=120)] * 10)
        local = ScriptedEngine(*[reply("42") for _ in range(4)])
        pipeline = TurnPipeline(service, FixedEngines(local,
                                                      fast_cloud(server.url + "/v1", store)))
        events = list(pipeline.send("What is 6*7?", target=TurnTarget(
            provider="fault", route="auto", send_when_online=True, test_time=plan),
            options=TurnOptions(max_tokens=8, temperature=0.7)))
    [ended] = [e for e in events if isinstance(e, TurnEnded)]
    assert ended.outcome.error is None and ended.outcome.answered.engine == "local"
    [item] = [e.item for e in events if isinstance(e, Queued)]
    assert item.retry_after == 120.0 and item.held_until() is not None
    assert item.queued_because == "fault was rate limiting requests and asked to wait 120 s"
    store.close()
