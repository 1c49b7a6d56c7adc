"""The day's backup on a nearly full disk (found by a trial: every command, `history list`
included, exited 5 because the backup could not be written, and the copy's `-wal` / `-shm` were
left on the full disk). A real small tmpfs, mounted in a private mount namespace (``unshare``):
the backup is skipped with one warning line saying how much is free and about how much it
needs, and reading, searching, exporting and asking go on."""
from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest

from app.domain.errors import BackupSkipped
from app.storage.store import Store
from tests.support import in_mount_namespace

ROOT = Path(__file__).resolve().parents[2]

# $0: the tmpfs size; $1: where it is mounted (nothing stays mounted: the namespace goes)
MOUNT_AND_RUN = 'mount -t tmpfs -o size=$0 tmpfs "$1" || exit 97; shift; exec "$@"'

CHILD = r"""
import json, os, shutil, subprocess, sys
from pathlib import Path

disk, elsewhere, model, leave = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
home = disk / "home"
env = dict(os.environ, OUTPOST_HOME=str(home))
os.environ["OUTPOST_HOME"] = str(home)
from app.domain.messages import Role
from app.storage.store import Store

store = Store()
conversation = store.create_conversation("Lighthouse notes")
for i in range(100):  # a database of some size (about 1.3 MB)
    store.add_message(conversation.id, Role.USER, f"the lighthouse keeper, note {i} " * 60)
store.close()
with open(disk / "fill", "wb") as fill:  # the disk nearly full: ``leave`` bytes free
    fill.write(b"\0" * (shutil.disk_usage(disk).free - leave))

def outpost(*args):
    done = subprocess.run([sys.executable, "-m", "app.cli", *args], env=env, text=True,
                          capture_output=True, timeout=120)
    return {"rc": done.returncode, "out": done.stdout, "err": done.stderr}

runs = {
    "list": outpost("history", "list"),
    "search": outpost("history", "search", "lighthouse"),
    "usage": outpost("usage"),
    "export": outpost("export", "--all", "-o", str(elsewhere / "all.json")),
    "ask": outpost("ask", "Say hi", "--route", "local", "--model", model, "--max-tokens", "16"),
}
backups = home / "data" / "backups"
store = Store(daily_backup=False)
asked = len(store.list_conversations())  # `ask` started a conversation
store.close()
print(json.dumps({"runs": runs, "conversations": asked, "free": shutil.disk_usage(disk).free,
                  "backups": sorted(os.listdir(backups)) if backups.exists() else []}))
"""


@pytest.mark.local_model  # (`ask` answers on the bundled model)
def test_a_nearly_full_disk_skips_the_days_backup_and_every_command_goes_on(
        tmp_path, bundled_model):
    disk, elsewhere = tmp_path / "disk", tmp_path / "elsewhere"
    disk.mkdir()
    elsewhere.mkdir()
    # 400 KB free: room for a question and its short reply, not for a copy of the database
    done = in_mount_namespace(MOUNT_AND_RUN, "16m", str(disk), sys.executable, "-c", CHILD,
                              str(disk), str(elsewhere), str(bundled_model), "400000",
                              cwd=ROOT, timeout=300,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    for name, run in result["runs"].items():
        # (`ask` may exit 4 on an empty reply: what a sampled model says is not the point)
        assert run["rc"] == 0 or name == "ask" and run["rc"] != 5, (name, run["err"])
        assert "could not be used" not in run["err"], (name, run["err"])
        [warning] = [line for line in run["err"].splitlines() if "backup" in line]
        said = re.fullmatch(
            r"outpost: warning: Today's backup of the database was skipped: the disk holding "
            r"(\S+) has (\d+) KB free and the copy needs about (\d+) KB\. Your conversations "
            r"are read and saved as usual; free some space and Outpost takes it at its next "
            r"try \(the next command; in the window, within 10 minutes\)\.", warning)
        assert said is not None, warning
        assert said[1] == str(disk / "home" / "data" / "backups")
        assert int(said[2]) < int(said[3])
    assert "Lighthouse notes" in result["runs"]["list"]["out"]
    assert result["conversations"] == 2
    assert "lighthouse" in result["runs"]["search"]["out"].lower()
    assert json.loads((elsewhere / "all.json").read_text())  # the export, on another disk
    assert result["backups"] == []  # nothing half-written left on the full disk
    assert os.listdir(disk) == []  # the tmpfs lived in its own mount namespace, now gone


COPY_CHILD = r"""
import json, os, shutil, sys
from pathlib import Path

disk, slack = Path(sys.argv[1]), int(sys.argv[2])
from app.domain.messages import Role
from app.storage.backups import Backups
from app.storage.store import Store

store = Store(disk / "outpost.db", daily_backup=False)
conversation = store.create_conversation("kept")
for i in range(10):
    store.add_message(conversation.id, Role.USER, "x" * 2000)
backups = Backups(store.path)
backups.folder  # (made)
pages = store.db.execute("PRAGMA page_count").fetchone()[0] * \
    store.db.execute("PRAGMA page_size").fetchone()[0]
with open(disk / "fill", "wb") as fill:  # room for the pages, not for the check's -shm
    fill.write(b"\0" * (shutil.disk_usage(disk).free - pages - slack))
try:
    backups.write(store.db.conn, "daily")
    error = None
except Exception as exc:
    error = f"{type(exc).__name__}: {exc}"
print(json.dumps({"error": error, "left": sorted(os.listdir(backups.where))}))
"""


def test_a_copy_the_disk_cuts_short_leaves_no_log_beside_it(tmp_path):
    """The copy is checked opened as the database is (WAL): on a disk with room for its pages
    but not for its `-shm`, SQLite fails ("disk I/O error") and left `…daily.db.part-wal` and
    `-shm` behind, taking what little room there was."""
    disk = tmp_path / "disk"
    disk.mkdir()
    done = in_mount_namespace(MOUNT_AND_RUN, "8m", str(disk), sys.executable, "-c",
                              COPY_CHILD, str(disk), "8192", cwd=ROOT, timeout=120,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["error"] is not None  # the disk refused the copy's check
    assert result["left"] == []


def test_a_backups_folder_that_cannot_be_made_skips_the_backup_with_a_note(tmp_path):
    """Not the disk: the backups folder cannot be made (a file has its name). The database is
    fine, so the store opens and says why there is no backup today."""
    path = tmp_path / "outpost.db"
    store = Store(path)
    store.create_conversation("kept")
    store.close()
    (tmp_path / "backups").write_text("not a folder")

    store = Store(path)
    store.close()

    [note] = store.notes
    assert note.startswith(f"Today's backup of the database was skipped: {tmp_path / 'backups'}"
                           " could not be written (")
    assert note.endswith("; make that folder writable and Outpost takes it at its next try (the "
                         "next command; in the window, within 10 minutes).")
    try:
        Store(path, daily_backup=False).roll_backup()
    except BackupSkipped as exc:
        assert exc.kind == "backup_skipped" and str(exc) == note
    else:
        raise AssertionError("the backup was not skipped")


FULL_CHILD = r"""
import json, os, subprocess, sys
from pathlib import Path

disk = Path(sys.argv[1])
home = disk / "home"
os.environ["OUTPOST_HOME"] = str(home)
from app.storage.store import Store

store = Store(daily_backup=False)
store.create_conversation("Lighthouse notes")
store.close()  # closed cleanly: no -shm is left beside the database
fill = os.open(disk / "fill", os.O_WRONLY | os.O_CREAT)  # the disk full to the last byte
try:
    while True:
        os.write(fill, b"\0" * 4096)
except OSError:
    os.close(fill)
done = subprocess.run([sys.executable, "-m", "app.cli", "history", "list"], text=True,
                      capture_output=True, timeout=120, env=os.environ)
print(json.dumps({"rc": done.returncode, "err": done.stderr}))
"""


def test_a_full_disk_that_refuses_the_shared_memory_file_says_it_is_full(tmp_path):
    """With the disk full to the last byte and no `-shm` beside the database, SQLite cannot
    make it (SQLITE_IOERR_SHMSIZE) and every command said only "…could not be used: disk I/O
    error." (found by a verifier): it says the disk is full, and where."""
    disk = tmp_path / "disk"
    disk.mkdir()
    done = in_mount_namespace(MOUNT_AND_RUN, "4m", str(disk), sys.executable, "-c",
                              FULL_CHILD, str(disk), cwd=ROOT, timeout=180,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["rc"] == 5
    assert "disk I/O error" in result["err"]  # SQLite's words, then what they mean
    assert re.search(r"could not be used: disk I/O error\. Outpost needs to write beside it "
                     r"\(its -wal and -shm\), but the disk holding \S+ is full\.", result["err"]), \
        result["err"]


def test_a_busy_database_skips_the_backup_without_blaming_the_folder(tmp_path, monkeypatch):
    """The copy met SQLite's "database is locked" (another process held the file longer than
    the busy timeout): the backups folder is fine, so the note says the database was busy and
    that it is tried again, with no advice to make the folder writable. The error is a real
    one, from a connection that found the file locked by another."""
    import sqlite3

    from app.storage.backups import Backups

    path = tmp_path / "outpost.db"
    store = Store(path, daily_backup=False)
    store.create_conversation("kept")
    holder = sqlite3.connect(str(tmp_path / "other.db"), isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        sqlite3.connect(str(tmp_path / "other.db"), timeout=0).execute("SELECT 1 FROM "
                                                                       "sqlite_master")
    except sqlite3.OperationalError as exc:
        locked = exc
    holder.execute("ROLLBACK")
    holder.close()
    assert locked.sqlite_errorcode & 0xFF == 5  # SQLITE_BUSY

    def busy(self, source, label):
        raise locked

    monkeypatch.setattr(Backups, "write", busy)
    with pytest.raises(BackupSkipped) as skipped:
        store.roll_backup()
    store.close()
    assert str(skipped.value) == (
        "Today's backup of the database was skipped: the database was busy (database is "
        "locked: another program was using it). Your conversations are read and saved as "
        "usual; Outpost takes the backup at its next try (the next command; in the window, "
        "within 10 minutes).")
    assert skipped.value.kind == "backup_skipped"
