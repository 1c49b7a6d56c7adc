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
