"""The offline outbox (issue 4's acceptance list): cloud requests that wait, in order, until their
provider can be reached, and are then sent once each.

Real SQLite files under the per-test OUTPOST_HOME, the fault server as the cloud, the real CLI in
subprocesses for the end-to-end parts (a subprocess that exits is the "app restart"), and the
Python API (``Outbox``, ``OutboxSender``, ``ChatService.queue_for_later``) for the fine-grained
ones. Only the ``--send-when-online`` test loads the bundled local model.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
from collections import Counter

import pytest

from app.chat.outbox_sender import OutboxSender
from app.chat.service import ChatService, TurnOptions
from app.config.providers import ProviderConfig
from app.config.settings import Settings
from app.domain.errors import OutpostError, UsageError
from app.domain.messages import ChatMessage, ChatRequest, MessageStatus, Role
from app.storage.outbox import Outbox, OutboxItem, OutboxState
from app.storage.store import Store
from app.storage.writers import this_writer
from engines.http_policy import RetryPolicy, Timeouts
from engines.openai_compat import OpenAICompatEngine
from tests.fault_server import fault_server, normal, refused_url, unauthorized
from tests.support import refuse_final_writes

FAST = RetryPolicy(initial_backoff=0.01, max_backoff=0.02)
DEAD_WRITER = "999999:1"  # pid 999999 does not exist here (checked in the test that uses it)
ITEM_KEYS = {"id", "conversation_id", "user_message_id", "provider", "model", "state",
             "attempts", "last_error", "answer_message_id", "idempotency_key", "prompt",
             "created_at", "updated_at"}


# -- helpers --------------------------------------------------------------------------------------
def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True,
                          text=True, env=os.environ.copy(), timeout=timeout)


def add_provider(name: str, base_url: str, replace: bool = False) -> None:
    args = ["providers", "add", name, "--base-url", base_url, "--model", "test-model"]
    result = cli(*args, *(["--replace"] if replace else []))
    assert result.returncode == 0, result.stderr


def outbox_list(*flags: str) -> list[dict]:
    result = cli("outbox", "list", "--json", *flags)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def history(conversation_id: str, *, tree: bool = False) -> list[dict]:
    """The conversation's active path (``tree``: every branch)."""
    result = cli("history", "show", conversation_id, "--json", *(["--tree"] if tree else []))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def fast_cloud(url: str, store: Store, name: str = "fault") -> OpenAICompatEngine:
    return OpenAICompatEngine(ProviderConfig(name, "openai", url, "test-model"), "sk-test",
                              policy=FAST, timeouts=Timeouts(connect=1, first_token=5, idle=5),
                              on_attempt=store.log_attempt)


def queue_turn(store: Store, prompt: str, provider: str = "fault") -> OutboxItem:
    """What the window and the CLI do when the cloud is wanted but unreachable: the user's
    message is saved and its request goes into the outbox."""
    service = ChatService(store, Settings())
    turn = service.start_turn(prompt, model="test-model",
                              options=TurnOptions(max_tokens=8, temperature=0.0))
    return service.queue_for_later(turn, provider, None)


def assistant_children(store: Store, item: OutboxItem) -> list:
    return [m for m in store.messages(item.conversation_id)
            if m.role is Role.ASSISTANT and m.parent_id == item.user_message_id]


def posts_by_key(server) -> Counter:
    return Counter(r.idempotency_key for r in server.chat_requests())


# -- 1. queued while unreachable, survives a restart, sent exactly once ---------------------------
def test_cloud_only_message_waits_across_a_restart_and_is_sent_exactly_once(outpost_home):
    with refused_url() as down:
        add_provider("acme", down + "/v1")
        asked = cli("ask", "What is the capital of France?", "--provider", "acme",
                    "--route", "cloud", "--max-tokens", "8", "--json")
        assert asked.returncode == 4, asked.stderr  # the provider failed; the message waits
        queued = [e for e in events(asked.stdout) if e["event"] == "queued"]
        assert len(queued) == 1 and queued[0]["provider"] == "acme"
        key = queued[0]["idempotency_key"]
        assert "Queued in the outbox as item" in asked.stderr

        # "Restart": the process that queued it is gone; a new process and a new Store see it.
        listed = outbox_list()
        assert len(listed) == 1
        row = listed[0]
        assert ITEM_KEYS <= set(row)
        assert (row["id"], row["state"], row["provider"], row["idempotency_key"], row["prompt"]
                ) == (queued[0]["outbox_id"], "queued", "acme", key,
                      "What is the capital of France?")
        assert row["conversation_id"] == queued[0]["conversation_id"]
        store = Store()
        try:
            pending = Outbox(store).pending()
            assert [i.id for i in pending] == [row["id"]]
            item = pending[0]
            assert item.request.idempotency_key == key
            # the key is the user turn's own: the failed attempts of `ask` were logged under it
            attempts = store.request_log(key)
            assert attempts and {a["error_kind"] for a in attempts} == {"connection_failed"}
            user = store.get_message(item.user_message_id)
            assert user.role is Role.USER and user.content == "What is the capital of France?"
            failed_reply = assistant_children(store, item)
            assert len(failed_reply) == 1 and failed_reply[0].status is MessageStatus.ERROR
            assert f"item {item.id}" in failed_reply[0].error
        finally:
            store.close()

        # Still unreachable: exit 4, the item waits, no answer row is left behind.
        still_down = cli("outbox", "send")
        assert still_down.returncode == 4, still_down.stderr
        assert f"Item {item.id} waits" in still_down.stdout
        again = outbox_list()
        assert [(r["id"], r["state"]) for r in again] == [(item.id, "queued")]
        assert "Could not connect" in again[0]["last_error"]

    with fault_server() as server:
        add_provider("acme", server.url + "/v1", replace=True)
        sent = cli("outbox", "send")
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert f"Sent item {item.id} to acme" in sent.stdout
        posts = server.chat_requests()
        assert len(posts) == 1
        assert posts[0].idempotency_key == key
        assert posts[0].json["messages"][-1] == {"role": "user",
                                                 "content": "What is the capital of France?"}

        # A second pass sends nothing.
        second = cli("outbox", "send")
        assert second.returncode == 0, second.stderr
        assert "Nothing to send" in second.stdout
        assert len(server.chat_requests()) == 1

    [done] = outbox_list("--all")
    assert done["state"] == "sent" and done["answer_message_id"]
    assert outbox_list() == []  # the default list shows what still needs attention only
    messages = history(done["conversation_id"])
    answer = next(m for m in messages if m["id"] == done["answer_message_id"])
    assert answer["role"] == "assistant" and answer["parent_id"] == item.user_message_id
    assert answer["content"] == "Hello from the fault server."
    assert answer["status"] == "complete" and answer["engine"] == "acme"
    assert "queued in the outbox" in answer["route_reason"]
    replies = [m for m in messages if m["role"] == "assistant"]
    # the empty "queued" placeholder reply is gone once the answer is there; nothing else
    # was added: one user message, one answer
    assert [m["id"] for m in replies] == [done["answer_message_id"]]
    assert [m["role"] for m in messages] == ["user", "assistant"]


# -- 2. Auto + send when online: the local model answers now, the provider later ------------------
@pytest.mark.local_model
def test_send_when_online_answers_locally_now_and_the_cloud_answer_becomes_a_sibling(
        outpost_home):
    with refused_url() as down:
        add_provider("acme", down + "/v1")
        asked = cli("ask", "Say hello.", "--provider", "acme", "--route", "auto",
                    "--send-when-online", "--max-tokens", "8", "--temperature", "0", "--json")
    assert asked.returncode == 0, asked.stderr
    out = events(asked.stdout)
    finished = next(e for e in out if e["event"] == "finished")
    assert finished["engine"] == "local" and "answered locally" in finished["route_reason"]
    [queued] = [e for e in out if e["event"] == "queued"]
    assert queued["conversation_id"] == finished["conversation_id"]
    [row] = outbox_list()
    assert (row["id"], row["state"], row["idempotency_key"]) == (
        queued["outbox_id"], "queued", queued["idempotency_key"])

    with fault_server() as server:
        add_provider("acme", server.url + "/v1", replace=True)
        sent = cli("outbox", "send", "--json")
        assert sent.returncode == 0, sent.stderr
        assert [(r["id"], r["result"]) for r in json.loads(sent.stdout)] == [(row["id"], "sent")]
        assert [r.idempotency_key for r in server.chat_requests()] == [row["idempotency_key"]]

    messages = history(finished["conversation_id"], tree=True)  # both answers: every branch
    [user] = [m for m in messages if m["role"] == "user"]
    assert user["id"] == row["user_message_id"]
    replies = [m for m in messages if m["role"] == "assistant"]
    assert len(replies) == 2
    assert {m["parent_id"] for m in replies} == {user["id"]}  # siblings
    by_engine = {m["engine"]: m for m in replies}
    assert set(by_engine) == {"local", "acme"}
    assert by_engine["local"]["id"] == finished["message_id"] and by_engine["local"]["content"]
    assert by_engine["acme"]["content"] == "Hello from the fault server."
    [done] = outbox_list("--all")
    assert done["state"] == "sent" and done["answer_message_id"] == by_engine["acme"]["id"]


# -- 3. order ------------------------------------------------------------------------------------
def test_items_are_sent_in_queue_order_and_an_unreachable_provider_holds_them_all(tmp_path):
    store = Store(tmp_path / "outpost.db")
    outbox = Outbox(store)
    items = [queue_turn(store, f"Question number {n}") for n in (1, 2, 3)]
    assert [i.id for i in items] == sorted(i.id for i in items)
    keys = [i.request.idempotency_key for i in items]
    assert len(set(keys)) == 3

    with refused_url() as down:
        sender = OutboxSender(outbox, lambda name, model: fast_cloud(down + "/v1", store))
        report = sender.send()
    assert report.sent == [] and report.failed == []
    assert [i.id for i in report.waiting] == [i.id for i in items]
    after = outbox.items()
    assert [(i.id, i.state) for i in after] == [(i.id, OutboxState.QUEUED) for i in items]
    # only the first was tried; the rest waited behind it without an attempt of their own
    assert [i.attempts for i in after] == [1, 0, 0]
    assert all(assistant_children(store, i) == [] for i in items)  # no empty replies left

    with fault_server() as server:
        sender = OutboxSender(outbox, lambda name, model: fast_cloud(server.url + "/v1", store))
        report = sender.send()
        posts = server.chat_requests()
    assert [i.id for i, _ in report.sent] == [i.id for i in items]
    assert [r.idempotency_key for r in posts] == keys  # arrival order == queue order
    assert [r.json["messages"][-1]["content"] for r in posts] == [
        "Question number 1", "Question number 2", "Question number 3"]
    for item in outbox.items():
        assert item.state is OutboxState.SENT
        [answer] = assistant_children(store, item)
        assert answer.id == item.answer_message_id and answer.status is MessageStatus.COMPLETE
    store.close()


def test_an_answer_cut_off_mid_way_is_kept_and_its_question_asked_again(tmp_path):
    """The link comes back, then drops in the middle of the answer: the part is kept (a
    version marked interrupted), the item waits again instead of counting as sent, and the
    next pass gets the whole answer."""
    from tests.fault_server import Cut

    store = Store(tmp_path / "outpost.db")
    outbox = Outbox(store)
    item = queue_turn(store, "The supplies, please")
    with fault_server() as server:
        server.script([Cut(after=2, chunks=("Water ", "20 L, ", "rice 5 kg."))])
        sender = OutboxSender(outbox, lambda name, model: fast_cloud(server.url + "/v1", store))
        report = sender.send()
        assert report.sent == [] and [i.id for i in report.waiting] == [item.id]
        waiting = outbox.get(item.id)
        assert waiting.state is OutboxState.QUEUED and "cut off" in waiting.last_error
        [part] = [m for m in assistant_children(store, item) if m.content]
        assert part.content == "Water 20 L, " and part.status is MessageStatus.INTERRUPTED

        server.script([normal(chunks=("Water ", "20 L, ", "rice 5 kg."))])
        report = sender.send()
    assert [i.id for i, _ in report.sent] == [item.id]
    sent = outbox.get(item.id)
    assert sent.state is OutboxState.SENT
    answers = {m.content: m.status for m in assistant_children(store, item) if m.content}
    assert answers == {"Water 20 L, ": MessageStatus.INTERRUPTED,
                       "Water 20 L, rice 5 kg.": MessageStatus.COMPLETE}
    store.close()


def wait_for(condition, what: str, timeout: float = 20.0) -> None:
    """Until ``condition()`` holds (a bound, not a measure: the test never asserts on time)."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.02)


@pytest.mark.parametrize("why", ["closing", "user"])
def test_an_answer_cut_short_by_closing_is_sent_again_one_the_user_stopped_counts_as_sent(
        tmp_path, why):
    """The window closes while an item's answer streams (its monitor cancels the pass with the
    reason CLOSING): that is no stop of the user's, so the item goes back to the queue, the
    part is kept as a version saying why, and the next pass sends it again with the same key.
    The user's own stop (a plain cancel) still counts as sent, as far as it went."""
    from app.chat.outbox_sender import CLOSED_WHILE_SENDING
    from app.domain.messages import CLOSING, CancelWithReason

    store = Store(tmp_path / "outpost.db")
    outbox = Outbox(store)
    item = queue_turn(store, "The supplies, please")
    whole = ("Water ", "20 L, ", "rice 5 kg.")
    with fault_server() as server:
        # the first part, then a long pause (it ends when the client goes away)
        server.script([normal(chunks=whole, delay=25), normal(chunks=whole)])
        sender = OutboxSender(outbox, lambda name, model: fast_cloud(server.url + "/v1", store))
        cancel = CancelWithReason()
        reports: list = []
        pass_ = threading.Thread(target=lambda: reports.append(sender.send(cancel=cancel)))
        pass_.start()
        wait_for(lambda: any(m.content == "Water " for m in assistant_children(store, item)),
                 "the first part of the answer in its row")
        if why == "closing":
            cancel.set_because(CLOSING)  # what OutboxMonitor.stop does as the window closes
        else:
            cancel.set()  # the user's stop
        pass_.join(30)
        assert not pass_.is_alive()
        [report] = reports
        [part] = [m for m in assistant_children(store, item) if m.content]
        assert (part.content, part.status) == ("Water ", MessageStatus.INTERRUPTED)
        [attempt] = store.request_log(item.request.idempotency_key)
        if why == "user":
            assert [i.id for i, _ in report.sent] == [item.id]
            assert outbox.get(item.id).state is OutboxState.SENT
            assert part.error == "Stopped by the user." and attempt["outcome"] == "cancelled"
            assert sender.send().sent == [] and len(server.chat_requests()) == 1
            store.close()
            return
        assert report.sent == [] and [i.id for i in report.waiting] == [item.id]
        waiting = outbox.get(item.id)
        assert (waiting.state, waiting.last_error) == (OutboxState.QUEUED, CLOSED_WHILE_SENDING)
        assert part.error == CLOSED_WHILE_SENDING and part.finish_reason == "cancelled"
        assert attempt["outcome"] == "closing"
        # the next start (or `outpost outbox send`): sent again, the same key, answered whole
        again = OutboxSender(Outbox(store),
                             lambda name, model: fast_cloud(server.url + "/v1", store)).send()
    assert [i.id for i, _ in again.sent] == [item.id]
    assert posts_by_key(server) == Counter({item.request.idempotency_key: 2})
    answers = {m.content: m.status for m in assistant_children(store, item) if m.content}
    assert answers == {"Water ": MessageStatus.INTERRUPTED,
                       "Water 20 L, rice 5 kg.": MessageStatus.COMPLETE}
    assert outbox.get(item.id).state is OutboxState.SENT
    store.close()


def test_an_answer_that_keeps_breaking_off_is_asked_at_most_three_times(tmp_path):
    """Each try keeps its part; after the third cut the item fails, shown, instead of being
    sent (and billed) on every pass while the provider is up."""
    from app.chat.outbox_sender import CUT_OFF_TRIES
    from tests.fault_server import Cut

    store = Store(tmp_path / "outpost.db")
    outbox = Outbox(store)
    item = queue_turn(store, "The supplies, please")
    with fault_server() as server:
        server.script([Cut(after=1, chunks=("Water ", "20 L.")) for _ in range(5)])
        sender = OutboxSender(outbox, lambda name, model: fast_cloud(server.url + "/v1", store))
        reports = [sender.send() for _ in range(CUT_OFF_TRIES + 1)]
        tries = len(server.chat_requests())
    assert CUT_OFF_TRIES == 3 and tries == 3
    assert [len(r.waiting) for r in reports] == [1, 1, 0, 0]
    [(failed, why)] = reports[2].failed
    assert failed.state is OutboxState.FAILED and "cut off 3 times" in why
    parts = [m for m in assistant_children(store, item) if m.content]
    assert [m.status for m in parts] == [MessageStatus.INTERRUPTED] * 3
    store.close()


def test_an_answer_a_content_filter_stops_fails_at_once(tmp_path):
    """Not the link: a provider's own stop after some text (a content filter) is shown as
    failed, the part kept, and never sent again by itself."""
    store = Store(tmp_path / "outpost.db")
    outbox = Outbox(store)
    item = queue_turn(store, "The supplies, please")
    with fault_server() as server:
        server.script([normal(chunks=("Part ", "one "), finish="content_filter")] * 3)
        sender = OutboxSender(outbox, lambda name, model: fast_cloud(server.url + "/v1", store))
        first, second = sender.send(), sender.send()
        tries = len(server.chat_requests())
    assert tries == 1 and first.waiting == [] and len(first.failed) == 1
    assert second.failed == [] and second.sent == []
    assert outbox.get(item.id).state is OutboxState.FAILED
    [part] = [m for m in assistant_children(store, item) if m.content]
    assert part.content == "Part one " and part.status is MessageStatus.INTERRUPTED
    store.close()


def test_a_structured_answer_kept_after_a_failed_repair_counts_as_sent(tmp_path):
    """JSON mode: the first answer is whole but not JSON, and the re-ask for valid JSON is
    cut off: the first answer is the reply (complete), so the item is sent, once."""
    from tests.fault_server import Cut

    store = Store(tmp_path / "outpost.db")
    outbox = Outbox(store)
    service = ChatService(store, Settings())
    turn = service.start_turn("The supplies as JSON", model="test-model",
                              options=TurnOptions(max_tokens=8, temperature=0.0,
                                                  json_mode=True))
    item = service.queue_for_later(turn, "fault", None)
    with fault_server() as server:
        server.script([normal(chunks=("Water ", "20 L.")),
                       Cut(after=1, chunks=('{"water": ', '"20 L"}'))] * 2)
        sender = OutboxSender(outbox, lambda name, model: fast_cloud(server.url + "/v1", store))
        first, second = sender.send(), sender.send()
        tries = len(server.chat_requests())
    assert tries == 2  # the answer and its repair, then nothing more
    assert len(first.sent) == 1 and second.sent == second.waiting == []
    [answer] = [m for m in assistant_children(store, item) if m.content]
    assert answer.content == "Water 20 L." and answer.status is MessageStatus.COMPLETE
    assert answer.output_check["repair_failed"] is True
    store.close()


def test_cli_send_keeps_the_order_and_holds_everything_while_unreachable(outpost_home):
    store = Store()
    items = [queue_turn(store, f"Question number {n}", provider="acme") for n in (1, 2, 3)]
    store.close()
    with refused_url() as down:
        add_provider("acme", down + "/v1")
        waiting = cli("outbox", "send", "--json")
        told = cli("outbox", "send")  # in words: each item, its last error as a sentence
    assert waiting.returncode == 4
    assert told.returncode == 4
    lines = told.stdout.splitlines()
    first, *rest = items  # the one tried; the others waited behind it, untried
    assert lines[0].startswith(f"Item {first.id} waits to be sent to acme again: ")
    assert "connection refused" in lines[0]
    assert lines[1:] == [f"Item {i.id} waits behind item {first.id} for acme: items go out in "
                         "the order they were queued." for i in rest]
    assert not any(line.endswith((").", "..", "?).")) for line in lines), lines
    rows = json.loads(waiting.stdout)
    assert [(r["id"], r["result"], r["state"]) for r in rows] == [
        (i.id, "waiting", "queued") for i in items]
    assert [r["id"] for r in outbox_list()] == [i.id for i in items]

    with fault_server() as server:
        add_provider("acme", server.url + "/v1", replace=True)
        sent = cli("outbox", "send")
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert [r.idempotency_key for r in server.chat_requests()] == [
            i.request.idempotency_key for i in items]
    assert [r["state"] for r in outbox_list("--all")] == ["sent"] * 3


# -- 4. never in flight twice --------------------------------------------------------------------
def test_only_one_store_wins_a_claim(tmp_path):
    path = tmp_path / "outpost.db"
    first, second = Store(path), Store(path)
    item = queue_turn(first, "Claim me")
    won = Outbox(first).claim(item.id)
    assert won is not None and won.state is OutboxState.SENDING and won.attempts == 1
    assert Outbox(second).claim(item.id) is None  # a second connection loses
    assert Outbox(first).claim(item.id) is None  # and so does a second claim of the winner
    row = first.db.execute("select writer from outbox where id = ?", [item.id]).fetchone()
    assert row[0] == this_writer()
    first.close()
    second.close()


def test_concurrent_claims_from_many_connections_have_exactly_one_winner(tmp_path):
    path = tmp_path / "outpost.db"
    setup = Store(path)
    items = [queue_turn(setup, f"Item {n}") for n in range(5)]
    setup.close()
    contenders = 6
    stores = [Store(path) for _ in range(contenders)]
    barrier = threading.Barrier(contenders)
    wins: list[tuple[int, int]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def contend(index: int) -> None:
        outbox = Outbox(stores[index])
        try:
            for item in items:
                barrier.wait(timeout=30)
                if outbox.claim(item.id) is not None:
                    with lock:
                        wins.append((item.id, index))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert sorted(item_id for item_id, _ in wins) == [i.id for i in items]  # one winner each
    check = Outbox(stores[0])
    assert all(check.get(i.id).attempts == 1 for i in items)
    for store in stores:
        store.close()


def test_recover_requeues_items_of_dead_writers_only(tmp_path):
    import psutil

    assert not psutil.pid_exists(int(DEAD_WRITER.split(":")[0]))
    store = Store(tmp_path / "outpost.db")
    outbox = Outbox(store)
    dead, reused, live = (queue_turn(store, f"Item {n}") for n in range(3))
    for item in (dead, reused, live):
        assert outbox.claim(item.id) is not None
    with store.transaction() as db:
        db.execute("update outbox set writer = ? where id = ?", [DEAD_WRITER, dead.id])
        # our own pid, but another start time: a reused pid is not the writer
        db.execute("update outbox set writer = ? where id = ?", [f"{os.getpid()}:1", reused.id])

    assert Outbox(Store(tmp_path / "outpost.db")).recover() == 2
    assert outbox.get(dead.id).state is OutboxState.QUEUED
    assert outbox.get(reused.id).state is OutboxState.QUEUED
    assert outbox.get(live.id).state is OutboxState.SENDING  # this process is alive: untouched
    assert outbox.recover() == 0

    # A sender recovers on its own (a restart straight into `outbox send`), and it does not
    # touch the live writer's item either.
    with store.transaction() as db:
        db.execute("update outbox set state = 'sending', writer = ? where id = ?",
                   [DEAD_WRITER, dead.id])
    with fault_server() as server:
        sender = OutboxSender(outbox, lambda name, model: fast_cloud(server.url + "/v1", store))
        report = sender.send()
        keys = [r.idempotency_key for r in server.chat_requests()]
    assert [i.id for i, _ in report.sent] == [dead.id, reused.id]
    assert keys == [dead.request.idempotency_key, reused.request.idempotency_key]
    assert outbox.get(live.id).state is OutboxState.SENDING
    store.close()


def test_a_later_item_does_not_overtake_one_in_flight_in_another_sender(tmp_path):
    path = tmp_path / "outpost.db"
    store = Store(path)
    outbox = Outbox(store)
    first, second = queue_turn(store, "First"), queue_turn(store, "Second")
    window = Store(path)  # another sender (the window) has the first item in flight
    assert Outbox(window).claim(first.id) is not None
    with fault_server() as server:
        sender = OutboxSender(outbox, lambda name, model: fast_cloud(server.url + "/v1", store))
        sender.send()  # `outpost outbox send` while the window is sending the first item
        # the window dies before its request got out; the first item is recovered and resent
        with window.transaction() as db:
            db.execute("update outbox set writer = ? where id = ?", [DEAD_WRITER, first.id])
        sender.send()
        keys = [r.idempotency_key for r in server.chat_requests()]
    window.close()
    store.close()
    assert keys == [first.request.idempotency_key, second.request.idempotency_key]


def test_two_cli_senders_at_once_send_each_item_once(outpost_home):
    store = Store()
    items = [queue_turn(store, f"Question number {n}", provider="acme") for n in (1, 2, 3)]
    store.close()
    with fault_server() as server:
        server.script([normal(first_delay=1.0) for _ in range(6)])  # slow: the senders overlap
        add_provider("acme", server.url + "/v1")
        procs = [subprocess.Popen([sys.executable, "-m", "app.cli", "outbox", "send", "--json"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=os.environ.copy()) for _ in range(2)]
        outputs = [p.communicate(timeout=120) for p in procs]
        for proc, (out, err) in zip(procs, outputs):
            assert proc.returncode == 0, out + err
        per_key = posts_by_key(server)
    assert per_key == Counter({i.request.idempotency_key: 1 for i in items})
    reported = [r["id"] for out, _ in outputs for r in json.loads(out) if r["result"] == "sent"]
    assert sorted(reported) == [i.id for i in items]  # each item reported sent by one process
    store = Store()
    outbox = Outbox(store)
    for item in items:
        done = outbox.get(item.id)
        assert done.state is OutboxState.SENT and done.attempts == 1
        [answer] = assistant_children(store, item)
        assert answer.id == done.answer_message_id
    store.close()


# -- 5. cancel -----------------------------------------------------------------------------------
def test_cancel_a_queued_item_and_refuse_the_rest(outpost_home):
    store = Store()
    keep, drop = queue_turn(store, "Keep me", "acme"), queue_turn(store, "Drop me", "acme")
    store.close()

    cancelled = cli("outbox", "cancel", str(drop.id))
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"Cancelled outbox item {drop.id}" in cancelled.stdout
    assert [r["id"] for r in outbox_list()] == [keep.id]

    unknown = cli("outbox", "cancel", "999")
    assert unknown.returncode == 2 and "There is no outbox item 999" in unknown.stderr
    assert cli("outbox", "send", str(drop.id)).returncode == 2  # a cancelled item is not sent

    with fault_server() as server:
        add_provider("acme", server.url + "/v1")
        sent = cli("outbox", "send")
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert [r.idempotency_key for r in server.chat_requests()] == [
            keep.request.idempotency_key]  # never the cancelled one

        again = cli("outbox", "cancel", str(keep.id))
        assert again.returncode == 2
        assert f"Outbox item {keep.id} is sent; only a queued item can be cancelled" in \
            again.stderr
        assert len(server.chat_requests()) == 1

    states = {r["id"]: r["state"] for r in outbox_list("--all")}
    assert states == {keep.id: "sent", drop.id: "cancelled"}
    store = Store()
    assert store.get_message(drop.user_message_id).content == "Drop me"  # the message stays
    assert assistant_children(store, drop) == []
    store.close()


# -- 6. a provider that refuses ------------------------------------------------------------------
def test_unauthorized_item_fails_visibly_and_is_not_retried(outpost_home):
    store = Store()
    item = queue_turn(store, "Will be refused", "acme")
    store.close()
    with fault_server() as server:
        server.script([unauthorized()])
        add_provider("acme", server.url + "/v1")
        first = cli("outbox", "send")
        assert first.returncode == 4
        assert f"Item {item.id} failed" in first.stdout
        assert len(server.chat_requests()) == 1  # a 401 is not retried

        second = cli("outbox", "send")
        assert second.returncode == 0 and "Nothing to send" in second.stdout
        assert len(server.chat_requests()) == 1  # and not sent again on the next pass

        [row] = outbox_list()  # still listed: not silently dropped
        assert row["id"] == item.id and row["state"] == "failed" and row["attempts"] == 1
        assert "Incorrect API key" in row["last_error"]
        store = Store()
        [reply] = assistant_children(store, item)
        assert reply.id == row["answer_message_id"] and reply.status is MessageStatus.ERROR

        # once the key is fixed, the user can put it back in the queue; it goes with its key
        Outbox(store).requeue_failed(item.id)
        store.close()
        third = cli("outbox", "send")
        assert third.returncode == 0, third.stdout + third.stderr
        assert [r.idempotency_key for r in server.chat_requests()] == [
            item.request.idempotency_key] * 2
    assert outbox_list("--all")[0]["state"] == "sent"


def test_cancel_and_requeue_of_items_in_the_wrong_state_are_usage_errors(tmp_path):
    store = Store(tmp_path / "outpost.db")
    outbox = Outbox(store)
    item = queue_turn(store, "Only queued items can be cancelled")
    with pytest.raises(UsageError, match="not failed or cancelled"):
        outbox.requeue_failed(item.id)
    outbox.claim(item.id)
    with pytest.raises(UsageError, match="is sending"):
        outbox.cancel(item.id)
    with pytest.raises(UsageError, match="no outbox item"):
        outbox.get(12345)
    store.close()


# -- 7. Offline mode -----------------------------------------------------------------------------
ELSEWHERE = "http://192.0.2.1:9/v1"  # TEST-NET-1: a provider beyond this computer


def test_offline_mode_sends_nothing(outpost_home):
    """Items for a provider beyond this computer wait; `outbox send` says why (exit 2)."""
    store = Store()
    item = queue_turn(store, "Not while offline", "acme")
    store.close()
    settings = Settings()
    settings.set("offline_mode", True)
    settings.save()
    saved = json.loads((outpost_home / "config" / "settings.json").read_text())
    assert saved["values"]["offline_mode"] is True
    add_provider("acme", ELSEWHERE)
    result = cli("outbox", "send")
    assert result.returncode == 2
    assert "Offline mode is on" in result.stderr
    assert cli("outbox", "send", str(item.id)).returncode == 2
    [row] = outbox_list()
    assert row["state"] == "queued" and row["attempts"] == 0
    with fault_server() as server:  # the same provider, at localhost now: it is sent
        add_provider("acme", server.url + "/v1", replace=True)
        server.script([normal()])
        assert cli("outbox", "send").returncode == 0
        assert len(server.chat_requests()) == 1


def test_offline_mode_sends_to_a_provider_on_this_computer(outpost_home):
    """Offline mode opens no connection beyond this computer, and a provider at 127.0.0.1 (an
    Ollama or llama.cpp server of the user's) is on it: `outbox send` sends its items and
    leaves those for a provider elsewhere waiting, saying why (it refused all: "Offline mode
    is on: nothing is sent", exit 2)."""
    store = Store()
    here = queue_turn(store, "For the server here", "here")
    away = queue_turn(store, "For the cloud", "away")
    store.close()
    settings = Settings()
    settings.set("offline_mode", True)
    settings.save()
    add_provider("away", ELSEWHERE)
    with fault_server() as server:
        add_provider("here", server.url + "/v1")
        server.script([normal()])
        result = cli("outbox", "send")
        assert len(server.chat_requests()) == 1
    assert result.returncode == 4, result.stderr  # one still waits
    assert f"Sent item {here.id} to here" in result.stdout
    assert f"Item {away.id} waits for Offline mode to be off: away is not on this " \
        "computer." in result.stdout
    states = {row["id"]: (row["state"], row["attempts"]) for row in outbox_list("--all")}
    assert states == {here.id: ("sent", 1), away.id: ("queued", 0)}


# -- 8. a conversation made Local only after its message was queued -----------------------------
def test_an_item_whose_conversation_went_local_only_is_never_sent(outpost_home):
    """Switching the conversation to Local only stops its queued items at once (failed, with
    why): `outbox send` sends nothing, not even a connection; they go back in the queue only
    once the conversation is Auto or Cloud only again."""
    store = Store()
    item = queue_turn(store, "PRIVATE field notes", "acme")
    store.set_conversation_route(item.conversation_id, "local")
    store.close()
    [row] = outbox_list()
    assert row["state"] == "failed" and "Local only now" in row["last_error"]
    with fault_server() as server:
        add_provider("acme", server.url + "/v1")
        result = cli("outbox", "send")
        assert result.returncode == 0 and "Nothing to send" in result.stdout
        refused = cli("outbox", "retry", str(item.id))
        assert refused.returncode == 2 and "Local only" in refused.stderr
        assert server.connections == []
        store = Store()
        store.set_conversation_route(item.conversation_id, "auto")
        store.close()
        retried = cli("outbox", "retry", str(item.id))
        assert retried.returncode == 0, retried.stderr
        sent = cli("outbox", "send")
        assert sent.returncode == 0 and f"Sent item {item.id}" in sent.stdout
        assert [r.json["messages"][-1]["content"] for r in server.chat_requests()] == [
            "PRIVATE field notes"]


def test_an_item_in_a_conversation_local_by_default_is_never_sent(outpost_home):
    """A conversation with no route of its own (one from before new conversations kept the
    route they started under) follows the default: made Local only there, its queued item is
    not sent either (the sender checks each item before it goes)."""
    store = Store()
    item = queue_turn(store, "Private by default", "acme")
    store.set_conversation_route(item.conversation_id, None)
    store.close()
    settings = Settings()
    settings.set("default_route", "local")
    settings.save()
    with fault_server() as server:
        add_provider("acme", server.url + "/v1")
        result = cli("outbox", "send")
        assert result.returncode == 4
        assert f"Item {item.id}: Not sent: its conversation is Local only now" in result.stdout
        assert server.connections == []
    [row] = outbox_list()
    assert row["state"] == "failed" and row["attempts"] == 0
    refused = cli("outbox", "retry", str(item.id))  # still Local only, by the default
    assert refused.returncode == 2 and "Local only" in refused.stderr


def test_enqueueing_the_same_turn_twice_keeps_one_item(tmp_path):
    """A retry while still offline queues the same request (same idempotency key) again: one
    item, so the provider sees it once."""
    store = Store(tmp_path / "outpost.db")
    service = ChatService(store, Settings())
    turn = service.start_turn("Once", model="test-model", options=TurnOptions(max_tokens=8))
    first = service.queue_for_later(turn, "fault", None)
    again = service.queue_for_later(service.retry_turn(turn), "fault", None)
    assert again.id == first.id and len(service.outbox.items()) == 1
    store.close()


def test_a_provider_that_asked_to_wait_is_left_alone_until_then(tmp_path):
    """A 429 with Retry-After 120 s: the window's next passes (every few seconds once the
    provider answers a probe) do not send before then (they did, earning a 429 each time);
    after it, the item goes. An explicit send of that one item is not held back."""
    from tests.fault_server import rate_limited

    store = Store(tmp_path / "outpost.db")
    outbox = Outbox(store)
    item = queue_turn(store, "Later, please")
    now = [dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.timezone.utc)]
    with fault_server() as server:
        server.script([rate_limited(retry_after=120), normal()])
        sender = OutboxSender(outbox, lambda name, model: fast_cloud(server.url + "/v1", store))
        sender.now = lambda: now[0]
        first = sender.send()
        assert [i.id for i in first.waiting] == [item.id]
        now[0] += dt.timedelta(seconds=30)
        assert [i.id for i in sender.send().waiting] == [item.id]
        assert len(server.chat_requests()) == 1  # not asked again within the 120 s
        now[0] += dt.timedelta(seconds=91)
        assert [i.id for i, _ in sender.send().sent] == [item.id]
        assert len(server.chat_requests()) == 2
    store.close()


def test_a_cancelled_item_says_so_on_its_reply_and_can_be_queued_again(outpost_home):
    """Cloud only, provider down: the reply says "Queued in the outbox"; cancelled, it says
    so (it went on saying queued), and `outbox retry` queues it again (only failed items
    could be), which the reply says too."""
    with refused_url() as down:
        add_provider("acme", down + "/v1")
        asked = cli("ask", "Report for today", "--provider", "acme", "--route", "cloud")
    assert asked.returncode == 4
    [row] = outbox_list()
    store = Store()
    [placeholder] = [m for m in store.messages(row["conversation_id"])
                     if m.role is Role.ASSISTANT]
    assert "Queued in the outbox" in placeholder.error
    store.close()
    assert cli("outbox", "cancel", str(row["id"])).returncode == 0
    store = Store()
    assert store.get_message(placeholder.id).error.startswith(
        f"Cancelled in the outbox (item {row['id']}): not sent")
    store.close()
    retried = cli("outbox", "retry", str(row["id"]))
    assert retried.returncode == 0, retried.stderr
    assert [r["state"] for r in outbox_list()] == ["queued"]
    store = Store()
    assert "Queued in the outbox again" in store.get_message(placeholder.id).error
    store.close()


def test_an_answer_the_disk_refused_is_kept_and_its_item_counts_as_sent(tmp_path,
                                                                        monkeypatch):
    """The provider answered, the final write failed (a full disk): the answer is kept with
    the chat service's other unsaved replies (it was dropped, its item failed and its row left
    'being written' until a restart), the item is sent, and the answer lands once the disk
    takes it."""
    store = Store(tmp_path / "outpost.db")
    service = ChatService(store, Settings())
    outbox = Outbox(store)
    queue_turn(store, "Keep my answer")
    refuse_final_writes(monkeypatch, store)
    with fault_server() as server:
        sender = OutboxSender(outbox, lambda name, model: fast_cloud(server.url + "/v1", store),
                              keep_unsaved=service.keep_unsaved)
        report = sender.send()
    [(sent, message)] = report.sent
    assert sent.state is OutboxState.SENT and message.content == "Hello from the fault server."
    assert service.save_unsaved() == 1  # the disk is still full
    monkeypatch.undo()
    assert service.save_unsaved() == 0
    stored = store.get_message(sent.answer_message_id)
    assert (stored.status, stored.content) == (MessageStatus.COMPLETE,
                                               "Hello from the fault server.")
    store.close()


def test_an_item_queued_with_the_profile_name_is_sent_with_its_pseudonym(tmp_path):
    """Items queued before providers were told a pseudonym kept the profile's name in their
    request; it is replaced as the item goes (the same idempotency key)."""
    import dataclasses

    from app.config.pseudonym import provider_user

    store = Store(tmp_path / "outpost.db")
    outbox = Outbox(store)
    item = queue_turn(store, "An old item")
    conversation = store.get_conversation(item.conversation_id)
    with store.transaction() as db:  # as an older Outpost stored it: the name itself
        old = dataclasses.replace(item.request, user="maria.gonzalez")
        db["outbox"].update(item.id, {"request": json.dumps(old.as_record())})
    with fault_server() as server:
        sender = OutboxSender(outbox, lambda name, model: fast_cloud(server.url + "/v1", store))
        sender.send()
        [sent] = server.chat_requests()
    assert conversation.profile  # (the machine's default profile asked)
    assert sent.json["user"] == provider_user(conversation.profile)
    assert "maria" not in json.dumps(sent.json)
    assert sent.idempotency_key == item.request.idempotency_key
    store.close()


def test_an_unanswered_item_whose_write_failed_too_still_waits(tmp_path, monkeypatch):
    """The provider is still down and the reply row's final write fails as well: the item
    waits to be sent again (it was counted as sent, and never tried again)."""
    store = Store(tmp_path / "outpost.db")
    service = ChatService(store, Settings())
    item = queue_turn(store, "Still waiting")
    refuse_final_writes(monkeypatch, store)
    with refused_url() as down:
        sender = OutboxSender(Outbox(store), lambda name, model: fast_cloud(down + "/v1", store),
                              keep_unsaved=service.keep_unsaved)
        report = sender.send()
    assert report.sent == [] and [i.id for i in report.waiting] == [item.id]
    assert Outbox(store).get(item.id).state is OutboxState.QUEUED
    store.close()


def test_an_item_whose_question_was_deleted_is_not_retried_nor_sent(tmp_path):
    """Deleting a question cancels its items; Retry would have sent the deleted words and
    stored an answer under nothing. An item whose question is gone (salvaged without it) is
    set aside, and the pass goes on to the next."""
    store = Store(tmp_path / "outpost.db")
    outbox = Outbox(store)
    gone, kept = queue_turn(store, "Forget this"), queue_turn(store, "Keep this")
    store.delete_subtree(gone.user_message_id)
    with pytest.raises(UsageError, match="message was deleted"):
        outbox.requeue_failed(gone.id)
    with store.transaction() as db:  # as a salvage could leave one: queued, question gone
        db["outbox"].update(gone.id, {"state": "queued"})
    with fault_server() as server:
        sender = OutboxSender(outbox, lambda name, model: fast_cloud(server.url + "/v1", store))
        report = sender.send()
        asked = [r.json["messages"][-1]["content"] for r in server.chat_requests()]
    assert asked == ["Keep this"] and [i.id for i, _ in report.sent] == [kept.id]
    assert outbox.get(gone.id).state is OutboxState.CANCELLED
    store.close()


def test_an_item_goes_out_only_within_its_profiles_quota_now(tmp_path):
    """The quotas are checked again when an item goes out: the day may have been used up
    since it was queued. Without room it waits, saying why (not counted as an attempt), and so
    does that profile's next item for the provider; another profile's item still goes. With
    room for a shorter reply, it is sent with max_tokens lowered."""
    from app.storage.ledger import UsageLedger  # (only this test meters)
    from app.storage.profiles import Profile
    from app.storage.quotas import QuotaBook, QuotaGuard
    from engines.http_policy import AttemptRecord

    store = Store(tmp_path / "outpost.db")
    book = QuotaBook(tmp_path / "none.toml", tmp_path / "quotas.json")
    book.set("ana", "cloud_tokens_per_day", 1000, by=Profile("admin", is_admin=True))
    ledger = UsageLedger(store, "ana")
    guard = QuotaGuard(book, ledger)

    def queue_as(profile: str, prompt: str) -> OutboxItem:
        service = ChatService(store, Settings(), ledger=ledger, quotas=guard, profile=profile)
        turn = service.start_turn(prompt, model="test-model", effective_route="cloud",
                                  options=TurnOptions(max_tokens=400, temperature=0.0))
        return service.queue_for_later(turn, "fault", None)

    first, second = queue_as("ana", "First question?"), queue_as("ana", "Second question?")
    other = queue_as("bob", "Bob's question?")
    ledger.record(AttemptRecord(attempt=1, status=200, latency_ms=1.0, error_kind=None,
                                idempotency_key="elsewhere", provider="fault",
                                model="test-model", kind="openai", prompt_tokens=500,
                                completion_tokens=490))  # ana used 990 of 1,000 since
    with fault_server() as server:
        sender = OutboxSender(Outbox(store), lambda name, model: fast_cloud(
            server.url + "/v1", store), ledger=ledger, quotas=guard)
        report = sender.send()
        assert [i.id for i, _ in report.sent] == [other.id]
        assert [r.json["messages"][-1]["content"] for r in server.chat_requests()] == \
            ["Bob's question?"]
        assert [i.id for i in report.waiting] == [first.id, second.id]
        assert report.behind == {second.id: first.id}
        waiting = Outbox(store).get(first.id)
        assert waiting.state is OutboxState.QUEUED and waiting.attempts == 0
        assert waiting.last_error.startswith("Daily token quota reached for ana: 990 of 1,000")

        book.set("ana", "cloud_tokens_per_day", 1100, by=Profile("admin", is_admin=True))
        report = sender.send(only=first.id)  # room for the prompt and a shorter reply
        [sent] = server.chat_requests()[1:]
        assert [i.id for i, _ in report.sent] == [first.id]
        assert 16 <= sent.json["max_tokens"] < 400
        answer = report.sent[0][1]
        assert answer.params["reply_cap"]["limit"] == "daily token quota"
        assert answer.params["max_tokens"] == sent.json["max_tokens"]
    store.close()


def test_an_item_a_quota_holds_is_looked_at_again_a_minute_later_not_every_pass(tmp_path):
    """The window's pass comes every 2 s; an item its profile's quota holds back was claimed,
    given an engine and written back each time. It waits untried for a minute (Send now
    looks at once)."""
    from app.storage.ledger import UsageLedger  # (only this test meters)
    from app.storage.profiles import Profile
    from app.storage.quotas import QuotaBook, QuotaGuard

    store = Store(tmp_path / "outpost.db")
    book = QuotaBook(tmp_path / "none.toml", tmp_path / "quotas.json")
    admin = Profile("admin", is_admin=True)
    book.set("ana", "cloud_tokens_per_day", 1000, by=admin)
    ledger = UsageLedger(store, "ana")
    guard = QuotaGuard(book, ledger)
    service = ChatService(store, Settings(), ledger=ledger, quotas=guard, profile="ana")
    turn = service.start_turn("A question?", model="test-model", effective_route="cloud",
                              options=TurnOptions(max_tokens=400, temperature=0.0))
    item = service.queue_for_later(turn, "fault", None)
    book.set("ana", "cloud_tokens_per_day", 10, by=admin)  # no room now
    now = [100.0]
    built = []
    with fault_server() as server:
        def engine_for(name, model):
            built.append(name)
            return fast_cloud(server.url + "/v1", store)

        sender = OutboxSender(Outbox(store), engine_for, ledger=ledger, quotas=guard)
        sender.clock = lambda: now[0]
        assert [i.id for i in sender.send().waiting] == [item.id]
        first = Outbox(store).get(item.id)
        assert first.last_error.startswith("Daily token quota reached for ana") and built
        now[0] += 2.0  # the next passes of the window
        for _ in range(3):
            assert [i.id for i in sender.send().waiting] == [item.id]
        assert len(built) == 1 and Outbox(store).get(item.id).updated_at == first.updated_at
        now[0] += 60.0  # a minute on: looked at again (still no room)
        assert [i.id for i in sender.send().waiting] == [item.id] and len(built) == 2
        book.set("ana", "cloud_tokens_per_day", 100_000, by=admin)
        assert sender.send(only=item.id).sent  # Send now looks at once
        assert len(server.chat_requests()) == 1
    store.close()


def test_a_queued_item_keeps_the_max_tokens_asked_and_is_capped_afresh_when_sent(tmp_path):
    """A quota that capped the reply when the message was queued (room for 495 of the 800
    tokens asked) does not follow the item: once the day has room again it is sent with the
    800 asked, no cap said on the answer."""
    from app.storage.ledger import UsageLedger  # (only this test meters)
    from app.storage.profiles import Profile
    from app.storage.quotas import QuotaBook, QuotaGuard
    from engines.http_policy import AttemptRecord

    store = Store(tmp_path / "outpost.db")
    book = QuotaBook(tmp_path / "none.toml", tmp_path / "quotas.json")
    admin = Profile("admin", is_admin=True)
    book.set("ana", "cloud_tokens_per_day", 1000, by=admin)
    ledger = UsageLedger(store, "ana")
    guard = QuotaGuard(book, ledger)
    ledger.record(AttemptRecord(attempt=1, status=200, latency_ms=1.0, error_kind=None,
                                idempotency_key="earlier", provider="fault",
                                model="test-model", kind="openai", prompt_tokens=250,
                                completion_tokens=250))  # ana used 500 of 1,000 today
    service = ChatService(store, Settings(), ledger=ledger, quotas=guard, profile="ana")
    turn = service.start_turn("A question?", model="test-model", effective_route="cloud",
                              options=TurnOptions(max_tokens=800, temperature=0.0))
    assert turn.reply_cap is not None and turn.request.max_tokens < 500  # capped now
    item = service.queue_for_later(turn, "fault", None)
    assert item.request.max_tokens == 800  # what was asked, not the cap
    book.set("ana", "cloud_tokens_per_day", 100_000, by=admin)  # room again
    with fault_server() as server:
        sender = OutboxSender(Outbox(store), lambda name, model: fast_cloud(
            server.url + "/v1", store), ledger=ledger, quotas=guard)
        report = sender.send()
        [sent] = server.chat_requests()
    assert [i.id for i, _ in report.sent] == [item.id]
    assert sent.json["max_tokens"] == 800
    answer = report.sent[0][1]
    assert "reply_cap" not in answer.params and answer.params["max_tokens"] == 800
    store.close()


def _queued_for_ana(tmp_path):
    """ana's Cloud only question, queued while its provider was unreachable, under quotas (no
    limit yet): (store, quota book, its turn, the item, a sender to a fault server)."""
    from app.storage.ledger import UsageLedger  # (only these tests meter)
    from app.storage.quotas import QuotaBook, QuotaGuard

    store = Store(tmp_path / "outpost.db")
    book = QuotaBook(tmp_path / "none.toml", tmp_path / "quotas.json")
    ledger = UsageLedger(store, "ana")
    guard = QuotaGuard(book, ledger)
    service = ChatService(store, Settings(), ledger=ledger, quotas=guard, profile="ana")
    turn = service.start_turn("A question?", model="test-model", route="cloud",
                              effective_route="cloud", options=TurnOptions(max_tokens=8))
    with refused_url() as url:  # Cloud only, unreachable: a reply says it waits
        with pytest.raises(OutpostError) as unreachable:
            list(turn.run(fast_cloud(url + "/v1", store), threading.Event()))
    item = service.queue_for_later(turn, "fault", None, unreachable.value)

    def sender_for(server) -> OutboxSender:
        return OutboxSender(Outbox(store), lambda name, model: fast_cloud(
            server.url + "/v1", store), ledger=ledger, quotas=guard)

    return store, book, turn, item, sender_for


def _failed_at_once(server, sender: OutboxSender, item) -> str:
    """Send: ``item`` fails without a request or an attempt; why it says."""
    report = sender.send()
    assert server.chat_requests() == [] and report.waiting == []
    [(failed, why)] = report.failed
    assert failed.id == item.id and failed.state is OutboxState.FAILED
    assert failed.attempts == 0 and failed.last_error == why
    return why


def test_an_item_whose_profile_may_no_longer_use_its_route_fails_saying_how_to_send_it(
        tmp_path):
    """The admin kept ana to Local only after her Cloud only message was queued: no wait
    makes room, so the item fails at once (not held and looked at every minute), saying
    which route is no longer allowed and how to send it; it is no attempt, and the question
    stays. Allowed again, Retry queues it and it goes."""
    from app.storage.profiles import Profile

    store, book, turn, item, sender_for = _queued_for_ana(tmp_path)
    admin = Profile("admin", is_admin=True)
    book.set("ana", "allowed_routes", ["local"], by=admin)
    with fault_server() as server:
        sender = sender_for(server)
        why = _failed_at_once(server, sender, item)
        assert why.startswith("Not sent: the profile ana may no longer use Cloud only, the "
                              "route this message was queued under (its quota allows Local "
                              "only; quota set).")
        assert "the message stays in its conversation" in why
        assert "`outpost quota set allowed_routes local,cloud --profile ana`" in why
        assert f"`outpost outbox retry {item.id}`" in why
        assert store.get_message(item.user_message_id).content == "A question?"
        assert store.get_message(turn.assistant_message_id).error == why  # said on its reply
        assert sender.send().failed == []  # failed: not looked at again

        book.set("ana", "allowed_routes", None, by=admin)
        Outbox(store).requeue_failed(item.id)
        assert [i.id for i, _ in sender.send().sent] == [item.id]
    store.close()


@pytest.mark.parametrize("limit, value, says", [
    ("tokens_per_minute", 5, "is larger than ana's limit of 5 tokens per minute."),
    ("cloud_cost_per_month", 1.0, "has no known price (it is not in resources/prices.json)"),
])
def test_an_item_no_wait_makes_room_for_fails_saying_why(tmp_path, limit, value, says):
    """Like a route no longer allowed: a request larger than a per-minute limit, or a model
    with no price under a cost budget (allow_unpriced off), never fits however long it
    waits; it was held and looked at every minute, forever. It fails at once, saying why and
    how to send it; no attempt, the question kept."""
    from app.storage.profiles import Profile

    store, book, _turn, item, sender_for = _queued_for_ana(tmp_path)
    book.set("ana", limit, value, by=Profile("admin", is_admin=True))
    with fault_server() as server:
        sender = sender_for(server)
        why = _failed_at_once(server, sender, item)
        assert why.startswith("Not sent: ") and says in why
        assert why.endswith("Nothing is lost: the message stays in its conversation. Once "
                            "that changes, retry it (Retry in the Outbox, or `outpost outbox "
                            f"retry {item.id}`).")
        assert store.get_message(item.user_message_id).content == "A question?"
        assert sender.send().failed == []  # failed: not looked at again
    store.close()


def test_an_item_of_a_conversation_from_before_profiles_is_checked_as_the_default_profiles(
        tmp_path):
    """A conversation with no profile (from before profiles) is the default profile's, as
    the window and `ask` treat it: its item is held by that profile's spent quota, not sent
    unchecked, and its usage is filed under that profile."""
    from app.storage.ledger import UsageLedger  # (only this test meters)
    from app.storage.profiles import Profile
    from app.storage.quotas import QuotaBook, QuotaGuard

    store = Store(tmp_path / "outpost.db")
    book = QuotaBook(tmp_path / "none.toml", tmp_path / "quotas.json")
    admin = Profile("admin", is_admin=True)
    book.set("ana", "cloud_tokens_per_day", 10, by=admin)  # ana: the default profile
    ledger = UsageLedger(store, "bob")  # someone else is signed in
    guard = QuotaGuard(book, ledger)
    old = store.create_conversation("From before profiles", route="cloud", profile=None)
    question = store.add_message(old.id, Role.USER, "An old question?")
    request = ChatRequest(model="test-model", max_tokens=8,
                          messages=(ChatMessage(Role.USER, "An old question?"),))
    item = Outbox(store).enqueue(old.id, question.id, "fault", None, request)
    with fault_server() as server:
        def metered(name, model):  # its attempts in the usage ledger, as the app wires it
            engine = fast_cloud(server.url + "/v1", store)
            engine.on_attempt = ledger.record
            return engine

        sender = OutboxSender(Outbox(store), metered, ledger=ledger, quotas=guard,
                              default_profile=lambda: "ana")
        report = sender.send()
        assert server.chat_requests() == [] and [i.id for i in report.waiting] == [item.id]
        assert Outbox(store).get(item.id).last_error.startswith(
            "Daily token quota reached for ana")
        book.set("ana", "cloud_tokens_per_day", 100_000, by=admin)
        assert [i.id for i, _ in sender.send(only=item.id).sent] == [item.id]
    assert [r["profile"] for r in store.request_log()] == ["ana"]
    store.close()


# -- what an item says once the user overrode what held it ----------------------------------------
def test_an_item_back_in_a_conversation_that_is_not_local_only_no_longer_says_it_is(
        outpost_home):
    """Local only failed the item ("its conversation is Local only now"); the conversation is
    Auto again: the item stays failed (a retry sends it) but no longer says it is Local only."""
    from app.domain.routes import no_longer_local

    store = Store()
    item = queue_turn(store, "Field notes", "acme")
    store.set_conversation_route(item.conversation_id, "local")
    assert "Local only now" in Outbox(store).get(item.id).last_error
    store.set_conversation_route(item.conversation_id, "auto")
    store.close()
    [row] = outbox_list()
    assert (row["state"], row["last_error"]) == ("failed", no_longer_local(item.id))
    listed = cli("outbox", "list")
    assert "Local only now" not in listed.stdout and "it is not any more" in listed.stdout
    assert cli("outbox", "retry", str(item.id)).returncode == 0
    assert outbox_list()[0]["last_error"] is None


def test_an_item_sent_anyway_no_longer_says_why_it_waited(outpost_home):
    """The provider asked to wait (429, Retry-After); the user sends the item anyway
    (`outbox send ID`): while it is sent it no longer shows the 429 (`outbox list` did)."""
    from tests.fault_server import rate_limited

    store = Store()
    outbox = Outbox(store)
    item = queue_turn(store, "Later, please")
    with fault_server() as server:
        # the answer's first part, then a pause that lasts until the client goes away
        server.script([rate_limited(retry_after=120),
                       normal(chunks=("Water ", "20 L."), delay=25)])
        sender = OutboxSender(outbox, lambda name, model: fast_cloud(server.url + "/v1", store))
        sender.send()
        held = outbox.get(item.id)
        assert held.held() and held.last_error
        cancel = threading.Event()
        reports: list = []
        pass_ = threading.Thread(target=lambda: reports.append(
            sender.send(only=item.id, cancel=cancel)))
        pass_.start()
        try:
            wait_for(lambda: any(m.content == "Water " for m in assistant_children(store, item)),
                     "the first part of the answer in its row")
            sending = outbox.get(item.id)
            assert (sending.state, sending.last_error) == (OutboxState.SENDING, None)
            listed = cli("outbox", "list")
            assert held.last_error.split(" (")[0] not in listed.stdout, listed.stdout
        finally:
            cancel.set()  # the user's stop: sent, as far as it went
            pass_.join(30)
    assert (outbox.get(item.id).state, outbox.get(item.id).last_error) == (OutboxState.SENT,
                                                                           None)
    store.close()


def test_a_cancelled_item_no_longer_says_why_it_waited(outpost_home):
    """An item waits because its provider is unreachable; the user cancels it: `outbox list
    --all` says cancelled, not the connection error it had (it printed both)."""
    store = Store()
    item = queue_turn(store, "Report for today", "acme")
    store.close()
    with refused_url() as down:
        add_provider("acme", down + "/v1")
        assert cli("outbox", "send").returncode == 4
    assert "Could not connect" in outbox_list()[0]["last_error"]
    assert cli("outbox", "cancel", str(item.id)).returncode == 0
    [row] = outbox_list("--all")
    assert (row["state"], row["last_error"]) == ("cancelled", None)
    assert "Could not connect" not in cli("outbox", "list", "--all").stdout


# -- what a reply from the outbox says about its send ---------------------------------------------
@pytest.mark.parametrize("scenario, how", [
    ("unauthorized", "failed"),  # no text: a failed reply
    ("content_filter", "failed"),  # a part, stopped by the provider: failed
    ("cut", "cut off"),  # a part, the link dropped: it waits to be sent again
])
def test_a_reply_whose_send_did_not_succeed_does_not_say_it_was_sent(outpost_home, scenario,
                                                                      how):
    """The note "sent when it was back" is for an answer that came; a reply that failed (or
    broke off) says it was tried then, and how that went. `history show` prints the note."""
    from tests.fault_server import Cut

    store = Store()
    outbox = Outbox(store)
    item = queue_turn(store, "The supplies, please")
    chunks = ("Water ", "20 L, ", "rice 5 kg.")
    with fault_server() as server:
        server.script([{"unauthorized": unauthorized(),
                        "content_filter": normal(chunks=chunks, finish="content_filter"),
                        "cut": Cut(after=1, chunks=chunks)}[scenario], normal(chunks=chunks)])
        sender = OutboxSender(outbox, lambda name, model: fast_cloud(server.url + "/v1", store))
        sender.send()
        [reply] = assistant_children(store, item)
        assert reply.status is not MessageStatus.COMPLETE
        assert "sent when it was back" not in reply.route_reason
        assert reply.route_reason.endswith(f"was unreachable; tried when it was back: {how}")
        shown = cli("history", "show", item.conversation_id)
        assert f"tried when it was back: {how}]" in shown.stdout
        assert "sent when it was back" not in shown.stdout
        if how == "cut off":  # asked again, answered whole: that answer says it was sent
            assert [i.id for i, _ in sender.send().sent] == [item.id]
            [answer] = [m for m in assistant_children(store, item)
                        if m.status is MessageStatus.COMPLETE]
            assert answer.route_reason.endswith("; sent when it was back")
            assert store.get_message(reply.id).route_reason == reply.route_reason
    store.close()
