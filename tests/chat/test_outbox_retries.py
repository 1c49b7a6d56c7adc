"""Retries of what the outbox already tried: one item per turn, the parts of a failed send
say so no longer once a retry is answered, and a queued reply's words outlast a final write
the disk refused (real SQLite store, loopback fault server)."""
from __future__ import annotations

import threading

import pytest

from app.chat.outbox_sender import CUT_OFF_TRIES, OutboxSender
from app.chat.service import ChatService, TurnOptions
from app.config.settings import Settings
from app.domain.errors import OutpostError
from app.domain.messages import Role
from app.storage.outbox import Outbox, OutboxState
from app.storage.store import Store
from tests.chat.test_outbox import fast_cloud
from tests.fault_server import Cut, fault_server, normal, refused_url, unauthorized
from tests.support import refuse_final_writes


def _turn(store: Store, prompt: str = "The supplies, please"):
    service = ChatService(store, Settings())
    turn = service.start_turn(prompt, model="test-model",
                              options=TurnOptions(max_tokens=8, temperature=0.0))
    return service, turn


def _queued_cloud_only(service: ChatService, turn):
    """Cloud only: the provider cannot be reached, so the reply says the message is queued
    (it stands for the item)."""
    with refused_url() as down:
        engine = fast_cloud(down + "/v1", service.store)
        with pytest.raises(OutpostError) as failed:
            for _ in turn.run(engine, threading.Event()):
                pass
        engine.close()
    service.keep_unsaved(turn)
    return service.queue_for_later(turn, "fault", None, failed.value), failed.value


def _replies(store: Store, conversation_id: str, user_message_id: str) -> list:
    return [m for m in store.messages(conversation_id)
            if m.role is Role.ASSISTANT and m.parent_id == user_message_id]


@pytest.mark.parametrize("how", ["failed", "cancelled"])
def test_a_retry_of_a_turn_whose_item_failed_queues_that_item_again(tmp_path, how):
    """Cloud only, the provider refused the key: the item failed. The user retries the reply
    while the provider is down: the same item is queued again (one item per turn), not a
    second one beside the failed one."""
    store = Store(tmp_path / "outpost.db")
    service, turn = _turn(store)
    first, _ = _queued_cloud_only(service, turn)
    if how == "failed":
        with fault_server() as server:
            server.script([unauthorized()])
            sender = OutboxSender(service.outbox,
                                  lambda name, model: fast_cloud(server.url + "/v1", store))
            sender.send()
    else:
        service.outbox.cancel(first.id)
    assert service.outbox.get(first.id).state.value == how
    item, _ = _queued_cloud_only(service, service.retry_turn(turn))
    assert item.id == first.id and item.state is OutboxState.QUEUED
    assert item.last_error is None and item.answer_message_id is None
    assert [i.id for i in service.outbox.items()] == [first.id]
    store.close()


@pytest.mark.parametrize("scripted", ["content_filter", "three_cuts"])
def test_a_failed_part_no_longer_says_its_item_failed_once_a_retry_is_answered(tmp_path,
                                                                             scripted):
    """A content filter (or three cuts) failed the item, its part saying "Outbox item N
    failed…"; Retry sends it again and the answer comes as a version beside the part: the
    part now says the item was retried and answered."""
    store = Store(tmp_path / "outpost.db")
    service, turn = _turn(store)
    item, _ = _queued_cloud_only(service, turn)
    if scripted == "content_filter":
        failing = [normal(chunks=("Part ", "one "), finish="content_filter")]
    else:
        failing = [Cut(after=1, chunks=("Water ", "20 L.")) for _ in range(CUT_OFF_TRIES)]
    with fault_server() as server:
        server.script(failing + [normal(chunks=("Water 20 L, ", "rice 5 kg."))])
        sender = OutboxSender(service.outbox,
                              lambda name, model: fast_cloud(server.url + "/v1", store))
        for _ in failing:
            sender.send()
        assert service.outbox.get(item.id).state is OutboxState.FAILED
        said = [m for m in _replies(store, item.conversation_id, item.user_message_id)
                if m.error and f"Outbox item {item.id} failed" in m.error]
        assert len(said) == 1
        service.outbox.requeue_failed(item.id)
        report = sender.send()
    [(sent, answer)] = report.sent
    assert sent.state is OutboxState.SENT and answer.content == "Water 20 L, rice 5 kg."
    part = store.get_message(said[0].id)
    assert f"Outbox item {item.id} failed:" not in part.error
    assert "asks once more" not in part.error
    assert "retried and answered" in part.error
    store.close()


def test_the_queued_words_outlast_a_final_write_the_disk_refused(tmp_path, monkeypatch):
    """Cloud only, the provider unreachable and the reply's final write refused (a full
    disk): the reply is queued, and once the disk takes the postponed write the reply still
    says it is queued in the outbox (the write put the bare connection error back)."""
    store = Store(tmp_path / "outpost.db")
    service, turn = _turn(store)
    refuse_final_writes(monkeypatch, store)
    item, _ = _queued_cloud_only(service, turn)
    assert turn.unsaved is not None
    monkeypatch.undo()
    assert service.save_unsaved() == 0
    reply = store.get_message(turn.assistant_message_id)
    assert f"Queued in the outbox (item {item.id})" in reply.error
    store.close()
