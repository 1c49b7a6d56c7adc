"""The streaming reply's row (app.chat.streaming_row): text shown just before a stall is
written while the stream is still stalled, and a write the database refuses for a moment does
not end the reply. Another connection to the real SQLite file reads what a crash would leave."""
from __future__ import annotations

import threading
import time

import pytest

from app.domain.errors import KnownStorageError
from app.domain.messages import Finished, FinishReason, MessageStatus, TextDelta, Usage
from app.storage.store import Store
from tests.chat.test_chat_service import ScriptedEngine
from tests.support import Clock

PATIENCE_S = 30  # how long a test waits for the helper thread (never a measure of speed)


class StallingEngine(ScriptedEngine):
    """Sends its text at once, then goes quiet until ``resume`` is set (a provider that
    stalls), then finishes."""

    def __init__(self, text: str):
        super().__init__([])
        self.text = text
        self.resume = threading.Event()

    def stream(self, request, cancel):
        for word in self.text.split(" "):
            yield TextDelta(word + " ")
        assert self.resume.wait(PATIENCE_S), "the test never resumed the stream"
        yield Usage(5, 5)
        yield Finished(FinishReason.STOP)


def stored(db_path, message_id):
    """The row as another process sees it (what is on disk)."""
    other = Store(db_path)
    try:
        return other.get_message(message_id)
    finally:
        other.close()


def wait_for(check, what: str):
    deadline = time.monotonic() + PATIENCE_S
    while not check():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.02)


def test_text_shown_before_a_stall_is_written_while_the_stream_is_stalled(service, db_path):
    engine = StallingEngine("Meet at the north gate at six")
    turn = service.start_turn("Where do we meet?", model="scripted")
    events: list = []
    reader = threading.Thread(target=lambda: events.extend(turn.run(engine, threading.Event())))
    reader.start()
    try:
        wait_for(lambda: turn.assistant_message_id is not None, "the reply row was made")
        wait_for(lambda: stored(db_path, turn.assistant_message_id).content.strip() ==
                 "Meet at the north gate at six", "the stalled text reached the database")
        # still streaming: written by the stall's helper, not by the end of the reply
        assert stored(db_path, turn.assistant_message_id).status is MessageStatus.STREAMING
        assert reader.is_alive()
    finally:
        engine.resume.set()
        reader.join(PATIENCE_S)
    final = stored(db_path, turn.assistant_message_id)
    assert final.status is MessageStatus.COMPLETE
    assert final.content == "Meet at the north gate at six "


def test_a_write_refused_while_another_process_holds_the_lock_does_not_end_the_reply(
        service, db_path, monkeypatch):
    """The row's writes fail for a while (SQLite's "database is locked" after the busy
    timeout, as when another process holds the write lock for longer): the reply streams on,
    the writes are tried again, and the final row is whole."""
    clock = Clock()
    locked = threading.Event()
    locked.set()
    real_update = service.store.update_message
    refused = []

    def update_message(message_id, **fields):
        if locked.is_set() and set(fields) == {"content"}:
            refused.append(fields["content"])
            raise KnownStorageError("The database could not be used: database is locked.")
        return real_update(message_id, **fields)

    monkeypatch.setattr(service.store, "update_message", update_message)

    class Drip(ScriptedEngine):
        def stream(self, request, cancel):
            for n in range(12):
                clock.now += 0.25
                if n == 8:
                    locked.clear()  # the other process let go
                yield TextDelta(f"w{n} ")
            yield Usage(3, 12)
            yield Finished(FinishReason.STOP)

    turn = service.start_turn("Count", model="scripted")
    turn.clock = clock
    events = list(turn.run(Drip([]), threading.Event()))
    assert sum(isinstance(e, TextDelta) for e in events) == 12
    assert refused, "no write was refused: the test did not test anything"
    final = stored(db_path, turn.assistant_message_id)
    assert final.status is MessageStatus.COMPLETE
    assert final.content == "".join(f"w{n} " for n in range(12))


def test_the_helper_thread_gives_its_connection_back(service, db_path):
    engine = StallingEngine("one two")
    turn = service.start_turn("Hi", model="scripted")
    reader = threading.Thread(target=lambda: list(turn.run(engine, threading.Event())))
    reader.start()
    wait_for(lambda: turn.assistant_message_id is not None and
             stored(db_path, turn.assistant_message_id).content, "the stalled text written")
    engine.resume.set()
    reader.join(PATIENCE_S)
    # the reading thread's and this test's own connections, not one left by the helper
    assert len(service.store._connections) <= 2


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_row_gone_under_the_helper_stops_it_quietly(service, db_path, monkeypatch):
    """The helper's write finds the row gone (an OutpostError): it stops, with no traceback
    from its thread; the reply's own final write is what reports it."""
    from app.domain.errors import UsageError

    tried = threading.Event()
    real_update = service.store.update_message

    def update_message(message_id, **fields):
        if set(fields) == {"content"}:
            tried.set()
            raise UsageError("The message is not there any more.")
        return real_update(message_id, **fields)

    monkeypatch.setattr(service.store, "update_message", update_message)
    engine = StallingEngine("one two")
    turn = service.start_turn("Hi", model="scripted")
    reader = threading.Thread(target=lambda: list(turn.run(engine, threading.Event())))
    reader.start()
    assert tried.wait(PATIENCE_S)
    engine.resume.set()
    reader.join(PATIENCE_S)
    assert stored(db_path, turn.assistant_message_id).content == "one two "
