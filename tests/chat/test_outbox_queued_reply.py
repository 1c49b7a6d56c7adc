"""The one reply that stands for a Cloud only message waiting in the outbox says what is true
of its item now: queued, not sent because the chat is Local only, failed, and it is the one an
answer (or a failed send) takes the place of, also after a retry while still offline.

The turn pipeline driven directly (a scripted local engine, a real cloud engine against a
refused loopback port or the fault server), a real SQLite file, and the real CLI for the
outbox's own commands.
"""
from __future__ import annotations

import threading

import pytest

from app.chat.outbox_sender import OutboxSender
from app.chat.pipeline import Queued, TurnEnded, TurnPipeline, TurnTarget
from app.chat.service import ChatService, TurnOptions
from app.config.settings import Settings
from app.domain.messages import MessageStatus, Role
from app.domain.routes import KEPT_LOCAL
from app.storage.outbox import ANSWERED_IN_CHAT, Outbox, OutboxState
from app.storage.store import Store
from tests.chat.test_outbox import fast_cloud
from tests.fault_server import fault_server, normal, refused_url, unauthorized
from tests.support import FixedEngines, ScriptedEngine, reply

CLOUD = TurnTarget(provider="fault", route="cloud")
OPTIONS = TurnOptions(max_tokens=8, temperature=0.0)
ANSWER = "Hello from the fault server."


def replies(store: Store, item) -> list:
    """The replies to the item's question (every version)."""
    return [m for m in store.messages(item.conversation_id)
            if m.role is Role.ASSISTANT and m.parent_id == item.user_message_id]


def queued_cloud_only(store: Store, prompt: str = "The supplies, please"):
    """Cloud only, the provider refuses connections: the message waits in the outbox behind
    its "Queued in the outbox" reply. (the service, the pipeline's failed turn, the item)"""
    service = ChatService(store, Settings())
    with refused_url() as down:
        pipeline = TurnPipeline(service, FixedEngines(ScriptedEngine(reply("local")),
                                                      fast_cloud(down + "/v1", store)))
        events = list(pipeline.send(prompt, target=CLOUD, options=OPTIONS))
    [queued] = [e.item for e in events if isinstance(e, Queued)]
    [ended] = [e for e in events if isinstance(e, TurnEnded)]
    return service, pipeline, ended.outcome.turn, queued


def sender_for(store: Store, url: str, default_route: str = "auto") -> OutboxSender:
    return OutboxSender(Outbox(store), lambda name, model: fast_cloud(url + "/v1", store),
                        default_route=lambda: default_route)


# -- 3. a retry while still offline --------------------------------------------------------------
def test_a_retry_while_offline_leaves_one_queued_reply_which_the_answer_replaces(tmp_path):
    """Cloud only, the provider unreachable; the user retries (the window's Retry: same
    request, same key) while it still is: one item, and one reply saying it is queued (the
    retry's own); the answer that comes takes its place. (The first "queued" reply stayed,
    and the retry's was never replaced: it said "Queued…" beside the answer.)"""
    store = Store(tmp_path / "outpost.db")
    service, pipeline, failed, item = queued_cloud_only(store)
    [first] = replies(store, item)
    assert f"Queued in the outbox (item {item.id})" in first.error
    with refused_url() as down:
        pipeline.engines.cloud_engine = fast_cloud(down + "/v1", store)
        retried = list(pipeline.retry(failed, target=CLOUD).run(threading.Event()))
    [again] = [e.item for e in retried if isinstance(e, Queued)]
    assert again.id == item.id and len(service.outbox.items()) == 1
    [standing] = replies(store, item)  # one "queued" reply, not two
    assert standing.id != first.id and standing.status is MessageStatus.ERROR
    assert f"Queued in the outbox (item {item.id})" in standing.error
    assert store.get_conversation(item.conversation_id).active_leaf_id == standing.id
    with fault_server() as server:
        server.script([normal()])
        assert [i.id for i, _ in sender_for(store, server.url).send().sent] == [item.id]
    [answer] = replies(store, item)
    assert (answer.content, answer.status) == (ANSWER, MessageStatus.COMPLETE)
    assert [m.id for m in store.branch(item.conversation_id)][-1] == answer.id
    store.close()


# -- 1. the chat made Local only ------------------------------------------------------------------
@pytest.mark.parametrize("how", ["its own route", "the default route"])
def test_the_queued_reply_of_a_chat_made_local_only_says_it_is_not_sent(tmp_path, how):
    """Cloud only, queued; the chat is made Local only (its own route, or the default it
    follows, which the sender checks): its reply no longer says the message "is sent once
    fault can be reached" (false now) but that it is not sent, why, and how to send it. Auto
    again: it says the item can be retried; retried: queued again."""
    store = Store(tmp_path / "outpost.db")
    _, _, _, item = queued_cloud_only(store)
    [standing] = replies(store, item)
    if how == "its own route":
        store.set_conversation_route(item.conversation_id, "local")
    else:
        store.set_conversation_route(item.conversation_id, None)
        with refused_url() as down:
            report = sender_for(store, down, default_route="local").send()
        assert [i.id for i, _ in report.failed] == [item.id]
    assert Outbox(store).get(item.id).state is OutboxState.FAILED
    said = store.get_message(standing.id).error
    assert "Queued" not in said and "can be reached" not in said
    assert said.startswith(f"Outbox item {item.id} was not sent: this conversation is Local "
                           "only now, so nothing of it leaves this computer.")
    assert "choose Auto or Cloud only" in said and f"outpost outbox retry {item.id}" in said
    if how == "its own route":
        store.set_conversation_route(item.conversation_id, "auto")
        said = store.get_message(standing.id).error
        assert "Local only now" not in said
        assert said.startswith(f"Outbox item {item.id} was not sent while this conversation "
                               "was Local only; it is not any more.")
        Outbox(store).requeue_failed(item.id)
        assert "Queued in the outbox again" in store.get_message(standing.id).error
    assert [m.id for m in replies(store, item)] == [standing.id]
    store.close()


# -- 2. a send that fails ------------------------------------------------------------------------
@pytest.mark.parametrize("scenario", ["unauthorized", "content_filter"])
def test_a_failed_send_leaves_one_reply_saying_it_failed(tmp_path, scenario):
    """Cloud only, queued; the provider is back and refuses the key (no text), or a content
    filter stops the answer (a part): one reply stands for the item, shown, saying it failed
    and how to ask once more (the "queued" reply, saying the same, stayed beside the failed
    attempt). Retried and answered: the answer takes its place."""
    store = Store(tmp_path / "outpost.db")
    _, _, _, item = queued_cloud_only(store)
    [queued_reply] = replies(store, item)
    chunks = ("Water ", "20 L, ", "rice 5 kg.")
    with fault_server() as server:
        server.script([unauthorized() if scenario == "unauthorized" else
                       normal(chunks=chunks, finish="content_filter")])
        sender = sender_for(store, server.url)
        assert [i.id for i, _ in sender.send().failed] == [item.id]
        [failed] = replies(store, item)
        assert failed.id != queued_reply.id  # the attempt, with its engine and route note
        assert failed.id == Outbox(store).get(item.id).answer_message_id
        part = "" if scenario == "unauthorized" else "".join(chunks)
        assert failed.content == part
        assert failed.error.startswith(f"Outbox item {item.id} failed: ")
        assert f"`outpost outbox retry {item.id}`) asks once more." in failed.error
        if scenario == "unauthorized":
            assert "API key" in failed.error
        assert store.branch(item.conversation_id)[-1].id == failed.id
        Outbox(store).requeue_failed(item.id)
        if scenario == "unauthorized":  # (it stands for the item: it says where it is now)
            assert "Queued in the outbox again" in store.get_message(failed.id).error
        server.script([normal()])
        assert [i.id for i, _ in sender.send().sent] == [item.id]
    answer = store.branch(item.conversation_id)[-1]
    assert (answer.content, answer.status) == (ANSWER, MessageStatus.COMPLETE)
    left = [m.content for m in replies(store, item)]
    assert left == ([ANSWER] if scenario == "unauthorized" else [part, ANSWER])
    store.close()


def test_an_item_that_fails_before_it_is_sent_says_so_on_its_queued_reply(tmp_path):
    """No engine for the item (its provider was removed): nothing is sent, so no attempt
    stands beside the queued reply, which says the item failed (as before)."""
    from app.domain.errors import UsageError

    store = Store(tmp_path / "outpost.db")
    _, _, _, item = queued_cloud_only(store)
    [standing] = replies(store, item)

    def no_engine(name, model):
        raise UsageError(f"There is no provider named {name}.")

    report = OutboxSender(Outbox(store), no_engine).send()
    assert [i.id for i, _ in report.failed] == [item.id]
    [still] = replies(store, item)
    assert still.id == standing.id
    assert still.error.startswith(f"Outbox item {item.id} failed: There is no provider named "
                                  "fault.")
    store.close()


@pytest.mark.parametrize("how", ["retry", "regenerate"])
def test_a_failed_item_answered_from_the_chat_no_longer_shows_as_failed(tmp_path, how):
    """Cloud only, queued; the send fails (the key refused); the user fixes the key and
    retries (or regenerates) the reply from the chat, and the provider answers at once. The
    item stayed *failed* in the Outbox, and its reply went on saying "Retry in the Outbox
    asks once more": it is answered now, by the chat's send, and says so."""
    store = Store(tmp_path / "outpost.db")
    _, pipeline, first_turn, item = queued_cloud_only(store)
    with fault_server() as server:
        server.script([unauthorized()])
        assert [i.id for i, _ in sender_for(store, server.url).send().failed] == [item.id]
        [failed] = replies(store, item)
        server.script([normal()])
        pipeline.engines.cloud_engine = fast_cloud(server.url + "/v1", store)
        pending = pipeline.retry(first_turn, target=CLOUD) if how == "retry" else \
            pipeline.regenerate(failed.id, target=CLOUD)
        events = list(pending.run(threading.Event()))
    assert not [e for e in events if isinstance(e, Queued)]
    answer = store.branch(item.conversation_id)[-1]
    assert (answer.content, answer.status) == (ANSWER, MessageStatus.COMPLETE)
    settled = Outbox(store).get(item.id)
    assert settled.state is OutboxState.SENT and settled.answer_message_id == answer.id
    assert settled.last_error == ANSWERED_IN_CHAT
    assert Outbox(store).pending() == []
    said = store.get_message(failed.id).error
    assert said.startswith(f"Outbox item {item.id} failed at first: ")
    assert "It was answered since, from the chat: the answer is another version" in said
    assert "asks once more" not in said
    store.close()


def test_queued_items_follow_the_default_route_their_chat_is_reset_to_or_follows(tmp_path):
    """Cloud only, queued; the chat's route is reset to the default, which is Local only:
    the item stayed queued and its reply went on saying it is sent once fault can be reached
    (the sender failed it only at its next pass). Reset, it follows the default at once, as a
    chat made Local only does; and when the default itself changes (Chat ▸ Default route,
    Settings), the items of every chat that follows it go with it, both ways."""
    store = Store(tmp_path / "outpost.db")
    _, _, _, item = queued_cloud_only(store)
    [standing] = replies(store, item)
    chat = item.conversation_id
    outbox = Outbox(store)
    assert store.set_conversation_route(chat, None, default_route="local") == 1
    assert (outbox.get(item.id).state, outbox.get(item.id).last_error) == (
        OutboxState.FAILED, KEPT_LOCAL)
    assert store.get_message(standing.id).error.startswith(
        f"Outbox item {item.id} was not sent: this conversation is Local only now")
    assert store.set_conversation_route(chat, None, default_route="auto") == 1
    assert store.get_message(standing.id).error.startswith(
        f"Outbox item {item.id} was not sent while this conversation was Local only; it is "
        "not any more.")
    outbox.requeue_failed(item.id, "auto")
    assert store.follow_default_route("local") == [chat]  # the chat follows the default
    assert outbox.get(item.id).state is OutboxState.FAILED
    assert "Local only now" in store.get_message(standing.id).error
    assert store.follow_default_route("cloud") == [chat]
    assert "it is not any more" in store.get_message(standing.id).error
    store.set_conversation_route(chat, "cloud")  # a route of its own: the default is not its
    outbox.requeue_failed(item.id, "auto")
    assert store.follow_default_route("local") == []
    assert outbox.get(item.id).state is OutboxState.QUEUED
    store.close()
