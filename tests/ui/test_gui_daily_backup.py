"""The day's backup while the window stays open (found by a trial: a window open for days took
none, it was taken only when a process started): a timer checks whether today has its backup
and takes it on the task pool. The check is called by hand here; no test waits for the timer."""
from __future__ import annotations

import shutil
import threading

import pytest

from app.storage.backups import Backups
from tests.support import reply, send
from ui.daily_backup import CHECK_EVERY_MS

pytestmark = pytest.mark.gui


def test_a_new_day_in_an_open_window_takes_its_backup_off_the_gui_thread(
        qtbot, scripted, scripted_engine, monkeypatch):
    store = scripted.store
    scripted_engine.script(reply("Noted."))
    send(qtbot, scripted, "Remember the lighthouse")
    backups = Backups(store.path)
    scripted.tasks.wait()
    for old in backups.all():  # the start's check found no conversation yet: none today
        old.path.unlink()
    yesterday = backups.folder / "outpost-20200101T000000000000Z-daily.db"
    shutil.copyfile(store.path, yesterday)  # the window has been open since then
    assert scripted.daily_backup.timer.isActive()
    assert scripted.daily_backup.timer.interval() == CHECK_EVERY_MS
    taken_on: list[threading.Thread] = []
    roll = store.roll_backup

    def recorded():
        taken_on.append(threading.current_thread())
        return roll()

    monkeypatch.setattr(store, "roll_backup", recorded)

    scripted.daily_backup.check()  # the timer's tick
    qtbot.waitUntil(lambda: not scripted.daily_backup.running, timeout=10000)
    scripted.daily_backup.check()  # the next tick: today has its backup

    today = [b for b in backups.all() if b.label == "daily" and b.path != yesterday]
    assert len(today) == 1 and not backups.daily_due()
    assert len(taken_on) == 1 and taken_on[0] is not threading.main_thread()


def test_a_day_without_room_for_its_backup_is_said_once_and_taken_once_there_is(
        qtbot, scripted, scripted_engine, monkeypatch):
    """A nearly full disk (a trial: the window's backup failed as an error, and the command
    line refused everything): said once, as news in the banner, with how much is free and
    about how much the copy needs; tried again at each tick, quietly; taken once there is
    room. (The real full disk is in tests/storage/test_backup_on_a_full_disk.py; here the disk
    reports 40 KB free.)"""
    from app.storage import backups as backups_module
    from ui import theme

    store = scripted.store
    scripted_engine.script(reply("Noted."))
    send(qtbot, scripted, "Remember the lighthouse")
    scripted.tasks.wait()
    backups = Backups(store.path)
    for old in backups.all():
        old.path.unlink()
    real_usage = shutil.disk_usage
    monkeypatch.setattr(backups_module.shutil, "disk_usage",
                        lambda path: real_usage(path)._replace(free=40_000))
    banner = scripted.window.banner

    scripted.daily_backup.check()
    qtbot.waitUntil(lambda: not scripted.daily_backup.running, timeout=10000)

    assert banner.isVisible() and banner.styleSheet() == theme.banner_style("info")
    text = banner.label.text()
    assert text.startswith(f"Today's backup of the database was skipped: the disk holding "
                           f"{backups.where} has 40 KB free and the copy needs about ")
    assert scripted.daily_backup.timer.isActive()  # tried again at the next tick
    banner.hide()
    scripted.daily_backup.check()
    qtbot.waitUntil(lambda: not scripted.daily_backup.running, timeout=10000)
    assert not banner.isVisible() and backups.all() == []  # not said again

    monkeypatch.setattr(backups_module.shutil, "disk_usage", real_usage)  # room again
    scripted.daily_backup.check()
    qtbot.waitUntil(lambda: not scripted.daily_backup.running, timeout=10000)
    assert not backups.daily_due()
