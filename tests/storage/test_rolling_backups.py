"""Rolling backups: one a day on start once there is a conversation, the newest seven kept,
each checked before it counts, 0600 in a 0700 folder, never a half file with a final name."""
from __future__ import annotations

import datetime as dt
import shutil
import sqlite3
import stat
from pathlib import Path

from app.storage.backups import KEEP_DAILY, Backups, quick_check_file
from app.storage.store import Store


def daily(folder: Path) -> list[Path]:
    return sorted(folder.glob("*-daily.db")) if folder.exists() else []


def test_the_first_start_of_the_day_with_a_conversation_backs_it_up_once(tmp_path):
    path = tmp_path / "outpost.db"
    store = Store(path)
    store.create_conversation("kept")
    store.close()
    assert daily(tmp_path / "backups") == []  # a new, empty file: nothing to keep

    Store(path).close()
    Store(path).close()  # the same day: no second one

    [backup] = daily(tmp_path / "backups")
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert stat.S_IMODE(backup.parent.stat().st_mode) == 0o700
    assert quick_check_file(backup) is None
    conn = sqlite3.connect(str(backup))
    assert [r[0] for r in conn.execute("SELECT title FROM conversations")] == ["kept"]
    conn.close()


def test_only_the_newest_seven_daily_backups_are_kept(tmp_path):
    path = tmp_path / "outpost.db"
    store = Store(path)
    store.create_conversation("kept")
    store.close()
    Store(path).close()
    [today] = daily(tmp_path / "backups")
    other = shutil.copy(today, tmp_path / "backups" / "outpost-20200101T000000000000Z-"
                                                      "before-m999_x.db")
    for day in range(1, 10):  # nine older days
        stamp = (dt.datetime(2026, 1, 1) + dt.timedelta(days=day)).strftime("%Y%m%dT%H%M%S%fZ")
        shutil.copy(today, tmp_path / "backups" / f"outpost-{stamp}-daily.db")
    today.unlink()  # so that this start is the day's first

    Store(path).close()

    kept = daily(tmp_path / "backups")
    assert len(kept) == KEEP_DAILY
    assert "20260110" in kept[-2].name and "20260105" in kept[0].name  # the newest kept
    assert Path(other).exists()  # a migration's backup is never pruned


def test_a_kill_mid_backup_leaves_no_backup_that_looks_whole(tmp_path):
    path = tmp_path / "outpost.db"
    store = Store(path)
    store.create_conversation("kept")
    store.close()
    folder = tmp_path / "backups"
    folder.mkdir(mode=0o700)
    (folder / "outpost-20991231T000000000000Z-daily.db.part").write_bytes(b"SQLite format 3\0")

    backups = Backups(path)
    assert all(not b.path.name.endswith(".part") for b in backups.all())
    assert backups.daily_due()  # a half file does not count as today's backup


def test_the_window_takes_the_days_backup_later_from_another_thread(tmp_path):
    import threading

    path = tmp_path / "outpost.db"
    store = Store(path)
    store.create_conversation("kept")
    store.close()
    store = Store(path, daily_backup=False)  # as the window opens it
    assert store.daily_backup_pending and daily(tmp_path / "backups") == []
    made: list = []
    worker = threading.Thread(target=lambda: made.append(store.roll_backup()))
    worker.start()
    worker.join()
    store.close()
    assert made[0] is not None and daily(tmp_path / "backups") == [made[0]]


def backups_folder(home: Path) -> Path:
    return home / "data" / "backups"


def test_backup_list_says_which_backups_are_damaged(outpost_home, capsys, monkeypatch):
    """`backup list` said nothing of damage: a restore of a listed backup could then be
    refused. Each backup is good or damaged (why), in the text and in --json; the header is
    read every time, the quick_check kept until the file changes."""
    import json

    from app import cli
    from app.storage import backups as backups_module

    store = Store()  # (OUTPOST_HOME's database)
    store.create_conversation("kept")
    store.close()
    Store().close()  # the day's backup, checked as it was written
    store = Store()
    spoiled = store.backup("before-m998_x")
    cut = store.backup("before-m999_x")
    store.close()
    with open(spoiled, "r+b") as f:  # a page of garbage past the header, as a bad sector
        f.seek(4096)
        f.write(b"\xff" * 4096)
    with open(cut, "r+b") as f:
        f.truncate(4096 + 100)
    checks: list[Path] = []
    real_check = backups_module.quick_check_file

    def counted_check(path: Path):
        checks.append(path)
        return real_check(path)

    monkeypatch.setattr(backups_module, "quick_check_file", counted_check)

    assert cli.main(["backup", "list", "--json"]) == 0
    rows = {row["label"]: row for row in json.loads(capsys.readouterr().out)}
    assert cli.main(["backup", "list"]) == 0
    text = capsys.readouterr().out

    assert rows["daily"]["state"] == "good" and rows["daily"]["problem"] is None
    assert rows["before-m998_x"]["state"] == "damaged" and rows["before-m998_x"]["problem"]
    assert rows["before-m999_x"]["problem"] == "it is cut short (4,196 bytes)"
    assert checks == [spoiled]  # the others: the header, or the check kept from the write
    line = next(line for line in text.splitlines() if spoiled.name in line)
    assert "damaged: " in line
    assert next(line for line in text.splitlines() if "-daily.db" in line).endswith("good")


def test_a_restore_leaves_no_empty_log_in_the_backups_folder(outpost_home, capsys):
    """A restore kept the replaced file's empty write-ahead log (0 bytes) as
    `…-replaced.db-wal`, which the list does not show; one left by an earlier version goes."""
    from app import cli

    store = Store()
    store.create_conversation("kept")
    store.close()
    Store().close()  # the day's backup
    folder = backups_folder(outpost_home)
    leftover = folder / "outpost-20200101T000000000000Z-replaced.db"
    leftover.write_bytes(b"")
    leftover.with_name(leftover.name + "-wal").write_bytes(b"")

    assert cli.main(["backup", "restore", "--yes"]) == 0, capsys.readouterr().err

    assert sorted(p.name for p in folder.iterdir() if p.name.endswith(("-wal", "-shm"))) == []
    assert len(list(folder.glob("*-replaced.db"))) == 2
