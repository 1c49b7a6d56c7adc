"""`outpost ask` when the reply's final write fails (a full disk): the process holds the only
whole copy, so it tries again a few times before it ends (``_save_before_exit``)."""
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
    assert ask._save_before_exit(disk, ReplyNotSaved("The disk is full.")) == 0
    assert disk.tries == 3
    assert "saved now" in capsys.readouterr().err


def test_a_disk_that_stays_full_is_reported_after_the_last_try():
    disk = Disk(full_for=99)
    with pytest.raises(ReplyNotSaved, match="printed above"):
        ask._save_before_exit(disk, ReplyNotSaved("The disk is full."))
    assert disk.tries == ask.SAVE_TRIES
