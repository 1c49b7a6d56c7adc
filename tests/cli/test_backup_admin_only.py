"""A restore or a salvage changes every profile's data (it rolls back conversations, brings
back removed profiles and old PINs): only the admin may, as for removing profiles (a privacy
trial found a profile with no PIN could roll the whole machine back). A damaged database
cannot say who its admin is: then anyone may restore, as the window offers at start."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from app import cli
from app.storage.backups import Backups
from app.storage.store import Store

pytestmark = pytest.mark.usefixtures("outpost_home")


def _database(home: Path) -> Path:
    return home / "data" / "outpost.db"


def _with_carl(capsys) -> str:
    """A conversation, the day's backup of it, and the profile carl (no PIN); the admin's
    name."""
    store = Store()
    store.create_conversation("before the backup")
    store.close()
    Store().close()  # the day's backup
    assert cli.main(["profile", "add", "carl"]) == 0
    capsys.readouterr()
    assert cli.main(["profile", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    return next(row["name"] for row in rows if row["admin"])


def test_restore_and_salvage_are_refused_to_a_profile_not_the_admin(outpost_home, capsys,
                                                                   monkeypatch):
    admin = _with_carl(capsys)
    [backup] = Backups(_database(outpost_home)).all()
    monkeypatch.setenv("OUTPOST_PROFILE", "carl")

    assert cli.main(["backup", "restore"]) == 2
    err = capsys.readouterr().err
    assert f"Only the admin ({admin}) can restore a backup" in err
    assert "you are signed in as carl" in err
    assert cli.main(["backup", "salvage", str(backup.path)]) == 2
    assert f"Only the admin ({admin}) can bring back" in capsys.readouterr().err
    # nothing was replaced, and no backup was taken by the check either
    assert [b.path for b in Backups(_database(outpost_home)).all()] == [backup.path]

    monkeypatch.setenv("OUTPOST_PROFILE", admin)
    assert cli.main(["backup", "restore", "--yes"]) == 0, capsys.readouterr().err
    assert "Restored" in capsys.readouterr().out


def test_anyone_may_restore_over_a_damaged_database(outpost_home, capsys, monkeypatch):
    _with_carl(capsys)
    _database(outpost_home).write_bytes(b"")  # emptied, with backups: damaged
    monkeypatch.setenv("OUTPOST_PROFILE", "carl")

    assert cli.main(["backup", "restore"]) == 0, capsys.readouterr().err
    assert "Restored" in capsys.readouterr().out
