"""The SQLite store: migrations and backups, WAL, restart survival, FTS, orphaned streams,
concurrent writers. Real files only."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time

import psutil
import pytest
import sqlite_utils

from app.config import paths
from app.domain.errors import UsageError
from app.domain.messages import MessageStatus, Role
from app.storage.migrations import MIGRATIONS
from app.storage.sqlite_errors import BUSY_TIMEOUT_MS
from app.storage.store import Store
from app.storage.writers import _process_identity, this_writer, writer_alive, writing


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "data" / "outpost.db"


@pytest.fixture
def store(db_path):
    store = Store(db_path)
    yield store
    store.close()


def m900_test_extra_table(db: sqlite_utils.Database) -> None:
    db["test_extra"].create({"id": int, "note": str}, pk="id")


def test_migrations_from_empty(db_path):
    store = Store(db_path)
    tables = set(store.db.table_names())
    assert {"conversations", "messages", "messages_fts", "_migrations"} <= tables
    assert store.applied_migrations() == [m.__name__ for m in MIGRATIONS]
    assert store.applied_migrations()[0] == "m001_conversations_and_messages"
    assert store.last_backup is None  # nothing to back up in a new file
    assert not (db_path.parent / "backups").exists()
    store.close()
    # opening again applies nothing and backs up nothing
    again = Store(db_path)
    assert again.applied_migrations() == [m.__name__ for m in MIGRATIONS]
    assert again.last_backup is None
    again.close()


def test_default_path_is_under_outpost_home(outpost_home):
    store = Store()
    assert store.path == outpost_home / "data" / "outpost.db"
    store.create_conversation("hi")
    assert paths.database_path().exists()
    store.close()


def test_backup_before_a_pending_migration(db_path):
    old = Store(db_path, MIGRATIONS)
    conversation = old.create_conversation("before the upgrade")
    old.add_message(conversation.id, Role.USER, "a message from the old version")
    old.close()

    new = Store(db_path, list(MIGRATIONS) + [m900_test_extra_table])
    try:
        assert new.last_backup is not None and new.last_backup.exists()
        assert new.last_backup.parent == db_path.parent / "backups"
        assert "m900_test_extra_table" in new.last_backup.name
        assert "test_extra" in new.db.table_names()
        assert new.applied_migrations()[-1] == "m900_test_extra_table"
    finally:
        new.close()

    backup = sqlite_utils.Database(sqlite3.connect(str(new.last_backup)))
    try:
        assert [r["content"] for r in backup["messages"].rows] == ["a message from the old version"]
        assert "test_extra" not in backup.table_names()
        names = [r["name"] for r in backup["_migrations"].rows]
        assert names == [m.__name__ for m in MIGRATIONS]
        assert backup.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        backup.conn.close()


def test_wal_busy_timeout_and_synchronous(store):
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.execute("PRAGMA busy_timeout").fetchone()[0] == BUSY_TIMEOUT_MS >= 1000
    assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert store.db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    # WAL is a property of the file: a plain connection sees it too
    conn = sqlite3.connect(str(store.path))
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_history_survives_a_restart(db_path):
    store = Store(db_path)
    conversation = store.create_conversation("Trip", system_prompt="Be brief.")
    user = store.add_message(conversation.id, Role.USER, "Where is Oslo?")
    reply = store.add_message(conversation.id, Role.ASSISTANT, "In Norway.", parent_id=user.id,
                              engine="local", model="m.gguf", params={"temperature": 0.0})
    store.update_message(reply.id, prompt_tokens=12, completion_tokens=3, ttft_ms=5.5,
                         tokens_per_s=99.0, finish_reason="stop", tokens_estimated=True)
    store.close()

    again = Store(db_path)
    try:
        [loaded] = again.list_conversations()
        assert loaded.id == conversation.id and loaded.title == "Trip"
        assert loaded.system_prompt == "Be brief."
        messages = again.messages(conversation.id)
        assert [(m.role, m.content) for m in messages] == [
            (Role.USER, "Where is Oslo?"), (Role.ASSISTANT, "In Norway.")]
        stored = messages[1]
        assert stored.parent_id == user.id
        assert stored.engine == "local" and stored.model == "m.gguf"
        assert stored.params == {"temperature": 0.0}
        assert (stored.prompt_tokens, stored.completion_tokens) == (12, 3)
        assert stored.ttft_ms == 5.5 and stored.tokens_per_s == 99.0
        assert stored.tokens_estimated is True and stored.finish_reason == "stop"
        assert stored.status is MessageStatus.COMPLETE
        assert again.get_message(reply.id) == stored
        assert again.integrity_check() == "ok"
    finally:
        again.close()


def test_conversations_are_listed_newest_first(store):
    first = store.create_conversation("first")
    second = store.create_conversation("second")
    third = store.create_conversation("third")
    assert [c.id for c in store.list_conversations()] == [third.id, second.id, first.id]
    time.sleep(0.005)  # updated_at has millisecond resolution
    store.add_message(first.id, Role.USER, "bump")  # a new message moves it to the top
    assert [c.id for c in store.list_conversations()][0] == first.id


def test_writes_inside_a_transaction_land_together_or_not_at_all(store):
    """The store's own writes made inside ``store.transaction()`` join it (a savepoint each):
    one that fails undoes the others, so a conversation never stays without the message it
    was made for; one that succeeds commits with them."""
    from app.domain.errors import StorageError

    with pytest.raises(StorageError):
        with store.transaction():
            store.create_conversation("half")
            store.add_message("no-such-conversation", Role.USER, "refused")  # a foreign key
    assert store.list_conversations() == []

    with store.transaction():
        conversation = store.create_conversation("whole")
        store.add_message(conversation.id, Role.USER, "kept")
    assert [c.title for c in store.list_conversations()] == ["whole"]
    assert [m.content for m in store.messages(conversation.id)] == ["kept"]
    with store.transaction():  # the thread's next transaction starts afresh
        store.rename_conversation(conversation.id, "renamed")
    assert store.get_conversation(conversation.id).title == "renamed"


def test_fts_search_finds_content_and_follows_updates_and_deletes(store):
    one = store.create_conversation("one")
    two = store.create_conversation("two")
    a = store.add_message(one.id, Role.USER, "How do penguins keep warm?")
    store.add_message(one.id, Role.ASSISTANT, "Penguins huddle together in colonies.")
    b = store.add_message(two.id, Role.USER, "Tell me about volcanoes")

    assert {m.id for m in store.search("penguins")} == {a.id, store.messages(one.id)[1].id}
    assert [m.id for m in store.search("volcanoes")] == [b.id]
    assert store.search("giraffe") == []

    # streamed content is updated in place; the index follows
    store.update_message(b.id, content="Tell me about glaciers")
    assert store.search("volcanoes") == []
    assert [m.id for m in store.search("glaciers")] == [b.id]

    store.delete_conversation(one.id)
    assert store.search("penguins") == []
    assert store.messages(one.id) == []
    assert [m.id for m in store.search("glaciers")] == [b.id]
    rows = store.db.execute("SELECT count(*) FROM messages_fts").fetchone()[0]
    assert rows == 1


def test_rename_and_delete_conversation(store):
    conversation = store.create_conversation("old title")
    store.add_message(conversation.id, Role.USER, "hello")
    store.rename_conversation(conversation.id, "  new title  ")
    assert store.get_conversation(conversation.id).title == "new title"
    with pytest.raises(UsageError, match="empty"):
        store.rename_conversation(conversation.id, "   ")
    with pytest.raises(UsageError, match="no conversation"):
        store.rename_conversation("nope", "x")

    store.delete_conversation(conversation.id)
    with pytest.raises(UsageError, match="no conversation"):
        store.get_conversation(conversation.id)
    assert store.list_conversations() == []
    assert store.db.execute("SELECT count(*) FROM messages").fetchone()[0] == 0
    with pytest.raises(UsageError):
        store.delete_conversation(conversation.id)


def test_unknown_ids_are_usage_errors(store):
    with pytest.raises(UsageError, match="'missing-id'"):
        store.get_conversation("missing-id")
    with pytest.raises(UsageError, match="no message"):
        store.get_message("missing-id")


def _dead_writer() -> str:
    """The writer identity of a process that has exited (pid + its real start time)."""
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    identity = _process_identity(child.pid)
    child.stdin.close()
    child.wait(timeout=30)
    return identity


def _live_writer_elsewhere() -> str:
    """The writer identity of a process that runs and is not this one (our parent)."""
    return _process_identity(os.getppid())


def test_a_writer_is_known_by_its_start_in_ticks_and_rows_from_before_still_read():
    """psutil's start time is computed from a boot time that drifts (now minus uptime): on a
    busy VM a live writer read as started more than a second away, so as dead (a flaky test
    here). Where /proc gives it, the start in clock ticks since boot is compared exactly."""
    identity = _process_identity(os.getpid())
    if sys.platform.startswith("linux"):
        assert identity.split(":")[1].startswith("t")
    assert writer_alive(identity)
    assert not writer_alive(f"{os.getpid()}:t1")  # our pid, another start: a reused pid
    legacy = f"{os.getpid()}:{int(psutil.Process().create_time() * 1000)}"
    assert writer_alive(legacy)  # a row written before ticks were used


def test_mark_orphaned_streaming(store):
    conversation = store.create_conversation("c")
    dead = store.add_message(conversation.id, Role.ASSISTANT, "half an ans",
                             status=MessageStatus.STREAMING)
    live = store.add_message(conversation.id, Role.ASSISTANT, "still going",
                             status=MessageStatus.STREAMING)
    reused_pid = store.add_message(conversation.id, Role.ASSISTANT, "pid reused",
                                   status=MessageStatus.STREAMING)
    # written by this process, whose turn is over (its final write failed: a full disk)
    left = store.add_message(conversation.id, Role.ASSISTANT, "final write failed",
                             status=MessageStatus.STREAMING)
    done = store.add_message(conversation.id, Role.ASSISTANT, "finished")

    dead_writer = _dead_writer()
    assert not writer_alive(dead_writer)
    assert writer_alive(this_writer())
    store.update_message(dead.id, writer=dead_writer)
    # same pid as this live process, different start time: another process that had our pid
    store.update_message(reused_pid.id, writer=f"{os.getpid()}:12345")
    row = store.db.execute("SELECT writer FROM messages WHERE id = ?", [live.id]).fetchone()
    assert row[0] == this_writer()

    with writing(live.id):  # a turn here is writing it
        assert store.mark_orphaned_streaming() == 3
    after = {m.id: m for m in store.messages(conversation.id)}
    assert after[left.id].status is MessageStatus.INTERRUPTED
    assert after[dead.id].status is MessageStatus.INTERRUPTED
    assert after[dead.id].content == "half an ans"
    assert after[dead.id].error and after[dead.id].finish_reason == "interrupted"
    assert after[reused_pid.id].status is MessageStatus.INTERRUPTED
    assert after[live.id].status is MessageStatus.STREAMING
    assert after[done.id].status is MessageStatus.COMPLETE
    # the writer is cleared once the row is no longer streaming; nothing left to recover
    row = store.db.execute("SELECT writer FROM messages WHERE id = ?", [dead.id]).fetchone()
    assert row[0] is None
    with writing(live.id):
        assert store.mark_orphaned_streaming() == 0


def test_mark_orphaned_streaming_in_a_second_process_leaves_our_row(store):
    """Another process (the CLI next to the window) must not touch a live writer's row."""
    conversation = store.create_conversation("c")
    live = store.add_message(conversation.id, Role.ASSISTANT, "", status=MessageStatus.STREAMING)
    code = ("import sys; from app.storage.store import Store; "
            "print(Store(sys.argv[1]).mark_orphaned_streaming())")
    out = subprocess.run([sys.executable, "-c", code, str(store.path)], capture_output=True,
                         text=True, timeout=60, env=os.environ.copy())
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0"
    assert store.get_message(live.id).status is MessageStatus.STREAMING


def test_two_threads_writing_at_once_lose_nothing(store):
    conversation = store.create_conversation("busy")
    per_thread = 60
    barrier = threading.Barrier(3)
    errors: list[BaseException] = []

    def writer(name: str) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                message = store.add_message(conversation.id, Role.USER, f"{name} {i}",
                                            status=MessageStatus.STREAMING)
                store.update_message(message.id, content=f"{name} {i} done",
                                     status=MessageStatus.COMPLETE)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in ("left", "right")]
    for thread in threads:
        thread.start()
    barrier.wait()
    # and a third writer: a second Store on the same file
    other = Store(store.path)
    for i in range(per_thread):
        other.create_conversation(f"other {i}")
    for thread in threads:
        thread.join(60)
    other.close()
    assert errors == []
    contents = sorted(m.content for m in store.messages(conversation.id))
    expected = sorted(f"{n} {i} done" for n in ("left", "right") for i in range(per_thread))
    assert contents == expected
    assert all(m.status is MessageStatus.COMPLETE for m in store.messages(conversation.id))
    assert len(store.list_conversations()) == per_thread + 1
    assert store.integrity_check() == "ok"


def _raised_by(path, action) -> Exception:
    from app.storage.sqlite_errors import storage_errors

    with pytest.raises(Exception) as caught:
        with storage_errors(path):
            action()
    return caught.value


def test_storage_errors_are_classified_by_sqlite_result_code_not_wording(tmp_path, store,
                                                                        db_path):
    from app.domain.errors import KnownStorageError, StorageError

    # locked by another connection (SQLITE_BUSY): the user can act on it
    holder = sqlite3.connect(db_path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    waiter = sqlite3.connect(db_path, timeout=0)
    try:
        busy = _raised_by(db_path, lambda: waiter.execute("UPDATE conversations SET title = 1"))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        waiter.close()
    assert type(busy) is KnownStorageError and str(db_path) in str(busy)
    # read-only (SQLITE_READONLY)
    store.db.execute("PRAGMA query_only = 1")
    try:
        readonly = _raised_by(db_path, lambda: store.db.execute(
            "UPDATE conversations SET title = 'x'"))
    finally:
        store.db.execute("PRAGMA query_only = 0")
    assert type(readonly) is KnownStorageError
    assert "read-only for you: check its permissions" in str(readonly)  # what to do
    # a file that cannot be opened (SQLITE_CANTOPEN): the OS says why, and so does the message
    # (here its folder is gone; read-only and not yours: tests/cli/test_home_not_writable.py)
    gone = tmp_path / "gone" / "outpost.db"
    cantopen = _raised_by(gone, lambda: sqlite3.connect(gone))
    assert type(cantopen) is KnownStorageError
    assert str(cantopen).endswith(" Outpost needs to write beside it (its -wal and -shm), but "
                                  f"{gone.parent} does not exist.")
    # not a database at all (SQLITE_NOTADB)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    notadb = _raised_by(junk, lambda: sqlite3.connect(junk).execute("SELECT 1 FROM x"))
    assert type(notadb) is KnownStorageError
    # a bug in our SQL whose message happens to contain "locked", "full", "read-only"...:
    # SQLITE_ERROR, so a bug (the old text match called it a known problem)
    bug = _raised_by(db_path, lambda: store.db.execute(
        "SELECT * FROM locked_disk_full_readonly_table"))
    assert type(bug) is StorageError and "locked_disk_full" in str(bug)


def test_a_conversation_whose_reply_is_being_written_cannot_be_deleted(store):
    """A turn still writing a reply (here, or in another process: the window, a CLI `ask`)
    would otherwise crash on its next write; once that writer is gone (killed), or its turn
    here is over (its final write failed), the conversation can go."""
    conversation = store.create_conversation("Field notes")
    question = store.add_message(conversation.id, Role.USER, "Where do we meet?")
    reply = store.add_message(conversation.id, Role.ASSISTANT, "At the", parent_id=question.id,
                              status=MessageStatus.STREAMING)
    with writing(reply.id), pytest.raises(UsageError, match="still being written"):
        store.delete_conversation(conversation.id)
    assert store.get_conversation(conversation.id).title == "Field notes"
    assert [m.id for m in store.messages(conversation.id)] == [question.id, reply.id]
    with store.transaction() as db:  # written by a live process: never this one's to judge
        db["messages"].update(reply.id, {"writer": _live_writer_elsewhere()})
    with pytest.raises(UsageError, match="still being written"):
        store.delete_conversation(conversation.id)
    with store.transaction() as db:  # its writer is gone (pid 1 never started at time 0)
        db["messages"].update(reply.id, {"writer": "1:0"})
    store.delete_conversation(conversation.id)
    assert store.list_conversations() == []


def test_a_reply_left_streaming_by_a_turn_here_that_ended_can_be_deleted(store):
    """The turn's final write failed (a full disk): the row says 'streaming', by this very
    process, but nothing writes it any more; deleting it is not refused until a restart."""
    conversation = store.create_conversation("Stuck")
    question = store.add_message(conversation.id, Role.USER, "Q")
    store.add_message(conversation.id, Role.ASSISTANT, "half", parent_id=question.id,
                      status=MessageStatus.STREAMING)
    store.delete_subtree(question.id)
    assert store.messages(conversation.id) == []
    store.delete_conversation(conversation.id)
    assert store.list_conversations() == []


def test_writing_a_message_that_was_deleted_says_so(store):
    conversation = store.create_conversation("Gone")
    message = store.add_message(conversation.id, Role.USER, "hello")
    store.delete_conversation(conversation.id)
    with pytest.raises(UsageError, match="not there any more"):
        store.update_message(message.id, content="hello again")


def test_a_fork_is_named_after_the_branch_it_copies(store):
    """A fork of the branch where the first message was edited takes its title from that
    message (it was named after the other one); a fork of the original path, or of a chat the
    user renamed, keeps the conversation's title."""
    from app.domain.wording import title_from

    chat = store.create_conversation(title_from("Give me a color"))
    color = store.add_message(chat.id, Role.USER, "Give me a color")
    store.add_message(chat.id, Role.ASSISTANT, "Blue.", parent_id=color.id)
    fruit = store.add_message(chat.id, Role.USER, "Give me a fruit", parent_id=None)
    answer = store.add_message(chat.id, Role.ASSISTANT, "A pear.", parent_id=fruit.id)
    assert store.fork(answer.id, None).title == "Give me a fruit (fork)"
    assert store.fork(color.id, None).title == "Give me a color (fork)"
    store.rename_conversation(chat.id, "Colours and fruit")
    assert store.fork(answer.id, None).title == "Colours and fruit (fork)"


def test_deleting_a_message_with_more_below_it_than_sqlite_takes_parameters(store):
    """Deleting the first message of a long chat deletes its whole subtree; it failed ("too
    many SQL variables") when the subtree held more messages than SQLite takes parameters
    (32,766 as built; lowered here so that 700 messages reach it)."""
    conversation = store.create_conversation("Long")
    parent, first = None, None
    for i in range(700):
        parent = store.add_message(conversation.id, Role.ASSISTANT if i % 2 else Role.USER,
                                   f"message {i}", parent_id=parent and parent.id)
        first = first or parent
    keep = store.create_conversation("Other")
    kept = store.add_message(keep.id, Role.USER, "stays")
    store.db.conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 600)
    store.delete_subtree(first.id)
    assert store.messages(conversation.id) == []
    assert [m.id for m in store.messages(keep.id)] == [kept.id]
    assert store.search('"message"') == []
