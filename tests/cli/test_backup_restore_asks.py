"""`outpost backup restore` over a healthy database is a rollback: it says what it sets aside
(the conversations, messages and profiles written since the backup, kept with the file it
replaces, which `backup salvage` brings back) and asks first, as `history delete` does: on a
terminal unless --yes, refused without either. Over a damaged database (Outpost cannot open
it) it restores without a question, as the window's dialog offers. Real files, in process."""
from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import pytest

from app import cli
from app.domain.messages import Role
from app.storage.backups import Backups
from app.storage.store import Store

pytestmark = pytest.mark.usefixtures("outpost_home")


def _database(home: Path) -> Path:
    return home / "data" / "outpost.db"


def _titles(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return sorted(row[0] for row in conn.execute("SELECT title FROM conversations"))
    finally:
        conn.close()


def _backup_then_more(capsys) -> None:
    """A conversation and its backup, then a conversation of two messages written since."""
    assert cli.main(["history", "list"]) == 0  # (the profile, before the backup)
    store = Store(daily_backup=False)
    kept = store.create_conversation("In the backup")
    store.add_message(kept.id, Role.USER, "old words")
    store.backup("daily")
    later = store.create_conversation("Written since")
    store.add_message(later.id, Role.USER, "new words")
    store.add_message(later.id, Role.USER, "more new words")
    store.close()
    capsys.readouterr()


def _replaced(home: Path) -> list[Path]:
    return sorted((home / "data" / "backups").glob("*-replaced.db"))


def _a_terminal(monkeypatch, answer: str) -> list[str]:
    asked: list[str] = []
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)

    def reply(question: str) -> str:
        asked.append(question)
        return answer

    monkeypatch.setattr("builtins.input", reply)
    return asked


def test_without_a_terminal_a_rollback_needs_yes_and_says_what_it_sets_aside(
        outpost_home, capsys, monkeypatch):
    _backup_then_more(capsys)
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False, raising=False)

    assert cli.main(["backup", "restore"]) == 2
    err = capsys.readouterr().err
    assert "rolls the database back: the 1 conversation, 2 messages and 0 profiles written " \
           "since it was taken are set aside with the file it replaces, kept in " \
           f"{outpost_home / 'data' / 'backups'} (`outpost backup salvage FILE` brings them " \
           "back)." in err
    assert "add --yes to restore without the question. Nothing was changed." in err
    assert len(err.strip().splitlines()) == 1
    assert _titles(_database(outpost_home)) == ["In the backup", "Written since"]
    assert _replaced(outpost_home) == []

    assert cli.main(["backup", "restore", "--yes"]) == 0, capsys.readouterr().err
    assert _titles(_database(outpost_home)) == ["In the backup"]


def test_on_a_terminal_no_keeps_everything_and_yes_rolls_back(outpost_home, capsys,
                                                              monkeypatch):
    _backup_then_more(capsys)
    asked = _a_terminal(monkeypatch, "n")
    assert cli.main(["backup", "restore"]) == 0
    [question] = asked
    assert "the 1 conversation, 2 messages and 0 profiles written since it was taken are " \
           "set aside" in question and question.endswith("\nRestore it? [y/N] ")
    assert "Nothing was changed." in capsys.readouterr().err
    assert _titles(_database(outpost_home)) == ["In the backup", "Written since"]

    _a_terminal(monkeypatch, "y")
    assert cli.main(["backup", "restore"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    [replaced] = _replaced(outpost_home)
    assert f"the file it replaced is kept as {replaced}." in out
    assert f"`outpost backup salvage {replaced}` brings back what was written since the " \
           "backup." in out
    assert _titles(_database(outpost_home)) == ["In the backup"]
    assert cli.main(["backup", "salvage", str(replaced)]) == 0, capsys.readouterr().err
    assert _titles(_database(outpost_home)) == ["In the backup", "Written since"]


def test_over_a_damaged_database_it_restores_without_a_question(outpost_home, capsys,
                                                               monkeypatch):
    _backup_then_more(capsys)
    _database(outpost_home).write_bytes(b"")  # emptied, with a good backup: damaged
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False, raising=False)

    assert cli.main(["backup", "restore"]) == 0, capsys.readouterr().err
    assert "Restored" in capsys.readouterr().out
    assert _titles(_database(outpost_home)) == ["In the backup"]
    assert len(Backups(_database(outpost_home)).all()) >= 1
