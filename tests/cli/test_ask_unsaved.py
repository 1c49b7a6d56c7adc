"""`outpost ask` when the reply's final write fails (a full disk): the process holds the only
whole copy, so it tries again a few times before it ends (``save_before_exit``)."""
from __future__ import annotations

import pytest

from app.cli.commands import ask
from app.domain.errors import ReplyNotSaved


class Disk:
    """The chat service's ``save_unsaved`` against a disk that takes writes again after
    ``full_for`` tries."""

    def __init__(self, full_for: int):
        self.full_for, self.tries = full_for, 0

    def save_unsaved(self) -> int:
        self.tries += 1
        return 1 if self.tries <= self.full_for else 0


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch):
    monkeypatch.setattr(ask.time, "sleep", lambda seconds: None)


def test_a_later_try_that_goes_through_ends_well(capsys):
    disk = Disk(full_for=2)
    ask.save_before_exit(disk.save_unsaved, ReplyNotSaved("The disk is full."))
    assert disk.tries == 3
    assert "saved now" in capsys.readouterr().err


def test_a_disk_that_stays_full_is_reported_after_the_last_try():
    disk = Disk(full_for=99)
    with pytest.raises(ReplyNotSaved, match="printed above"):
        ask.save_before_exit(disk.save_unsaved, ReplyNotSaved("The disk is full."))
    assert disk.tries == ask.SAVE_TRIES


def test_a_reply_saved_on_a_later_try_ends_as_the_turn_did(outpost_home, monkeypatch, capsys):
    """In process, the local model a scripted engine: its stream breaks after some text, and
    the first final write is refused (a full disk). `ask` tries again, says the reply is
    saved, and exits as the turn ended: 4 with --json's finished and error events (it exited
    0 with neither, the write's failure having taken the stream's place)."""
    import json

    from app import cli
    from app.domain.errors import EngineError, KnownStorageError
    from app.domain.messages import Finished, FinishReason, MessageStatus, TextDelta
    from app.storage.store import Store
    from tests.support import ScriptedEngine

    engine = ScriptedEngine([TextDelta("Half an"), TextDelta(" answer"),
                             Finished(FinishReason.ERROR, error=EngineError("It broke."))])
    monkeypatch.setattr("app.compose.create_local_engine", engine.factory)
    refusals = [KnownStorageError("The disk is full.")]
    real_update = Store.update_message

    def update(self, message_id, **fields):
        if fields.get("status") not in (None, MessageStatus.STREAMING) and refusals:
            raise refusals.pop()
        return real_update(self, message_id, **fields)

    monkeypatch.setattr(Store, "update_message", update)
    code = cli.main(["ask", "Hello", "--route", "local", "--json"])
    out, err = capsys.readouterr()
    assert code == 4 and "saved now" in err
    events = [json.loads(line)["event"] for line in out.splitlines() if line.strip()]
    assert events[-2:] == ["finished", "error"]
    store = Store()
    [reply] = [m for c in store.list_conversations() for m in store.messages(c.id)
               if m.role.value == "assistant"]
    assert (reply.content, reply.status) == ("Half an answer", MessageStatus.INTERRUPTED)
    store.close()
