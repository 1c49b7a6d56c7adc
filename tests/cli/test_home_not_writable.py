"""A home Outpost cannot write (found by a trial: on a read-only home every command said "is that
folder read-only, full or gone?" though the OS says which, and the window, started from the
applications menu, showed nothing at all). Real refusals: a tmpfs remounted read-only in a
private mount namespace (EROFS), and a folder that is not the user's (EACCES). The message
names the folder and what the OS said; the window says it in a dialog, then exits 5."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support import in_mount_namespace

ROOT = Path(__file__).resolve().parents[2]

# $0: the folder to mount a tmpfs on; the child makes a home there, the tmpfs is remounted
# read-only, and the child runs again (nothing stays mounted: the namespace goes)
MOUNT_MAKE_FREEZE_RUN = ('mount -t tmpfs -o size=8m tmpfs "$0" || exit 97; "$@" make || exit; '
                         'mount -o remount,ro "$0" || exit 97; exec "$@" run')

CHILD = r"""
import json, os, subprocess, sys
from pathlib import Path

disk, step = Path(sys.argv[1]), sys.argv[2]
home = disk / "home"
if step == "make":
    os.environ["OUTPOST_HOME"] = str(home)
    from app.config import paths
    from app.storage.store import Store
    paths.config_dir()
    store = Store()
    store.create_conversation("Field notes")
    store.close()
    sys.exit(0)

def outpost(home, *args):
    done = subprocess.run([sys.executable, "-m", "app.cli", *args], text=True,
                          capture_output=True, timeout=60,
                          env=dict(os.environ, OUTPOST_HOME=str(home)))
    return {"rc": done.returncode, "err": done.stderr}

window = r'''
import json, sys
from ui import damaged_database
shown = []
def exec_(box):
    shown.append({"title": box.windowTitle(), "text": box.text(),
                  "icon": box.icon().name, "more": box.informativeText()})
    return 0
damaged_database.CannotStartDialog.exec = exec_
from app.domain.errors import OutpostError
from ui.app import run_gui
try:
    run_gui()
    raised = None
except OutpostError as exc:
    raised = {"type": type(exc).__name__, "message": str(exc), "exit": exc.exit_code}
print(json.dumps({"shown": shown, "raised": raised}))
'''
gui = subprocess.run([sys.executable, "-c", window], text=True, capture_output=True,
                     timeout=60, env=dict(os.environ, OUTPOST_HOME=str(home),
                                          QT_QPA_PLATFORM="offscreen"))
print(json.dumps({"list": outpost(home, "history", "list"),
                  "new_home": outpost(disk / "elsewhere" / "home", "history", "list"),
                  "window": json.loads(gui.stdout) if gui.returncode == 0 else gui.stderr}))
"""


def test_a_home_on_a_read_only_file_system_says_so_in_the_terminal_and_a_dialog(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    done = in_mount_namespace(MOUNT_MAKE_FREEZE_RUN, str(disk), sys.executable, "-c", CHILD,
                              str(disk), cwd=ROOT, timeout=180,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    data = disk / "home" / "data"
    said = (f"The database {data / 'outpost.db'} could not be used: unable to open database "
            f"file. Outpost needs to write beside it (its -wal and -shm), but {data} is on a "
            "file system mounted read-only.")
    assert result["list"] == {"rc": 5, "err": f"outpost: {said}\n"}
    assert result["new_home"] == {"rc": 5, "err": (
        f"outpost: Outpost could not make its folder {disk / 'elsewhere' / 'home'}: {disk} is on "
        "a file system mounted read-only.\n")}
    window = result["window"]
    assert isinstance(window, dict), window
    assert window["shown"] == [{"title": "Outpost cannot start", "text": said,
                                "icon": "Critical", "more": (
                                    "Outpost closes now and changed nothing; start it again "
                                    "once this is put right.")}]
    assert window["raised"] == {"type": "KnownStorageError", "message": said, "exit": 5}


def test_a_home_that_is_not_yours_says_permission_denied_and_whose_it_is(tmp_path):
    """Root in CI: the home belongs to a user id this test's user namespace does not map
    (``unshare -r``), so even its root may not write there; as another user, a folder made
    read-only for them does the same."""
    from app.config import paths
    from app.storage.store import Store

    home = tmp_path / "home"
    os.environ["OUTPOST_HOME"] = str(home)  # (restored by the autouse fixture's monkeypatch)
    paths.config_dir()
    store = Store()
    store.create_conversation("Field notes")
    store.close()
    data = home / "data"
    for name in os.listdir(data):
        if name != "outpost.db":
            shutil.rmtree(data / name) if (data / name).is_dir() else (data / name).unlink()
    command = [sys.executable, "-m", "app.cli", "history", "list"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if os.geteuid() == 0:
        for path in (home, *home.rglob("*")):
            os.chown(path, 12345, 12345)
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        os.chmod(tmp_path, 0o755)
        command = ["unshare", "-r", *command]
        owner = "nobody"  # (an id the namespace does not map)
    else:
        data.chmod(0o555)
        owner = data.owner()
    try:
        done = subprocess.run(command, text=True, capture_output=True, timeout=60, env=env,
                              cwd=ROOT)
    finally:
        data.chmod(0o755)
    assert done.returncode == 5, done.stderr
    assert done.stderr.startswith(f"outpost: The database {data / 'outpost.db'} could not be "
                                  "used: ")
    mode = "0755" if os.geteuid() == 0 else "0555"
    assert done.stderr.endswith(f" Outpost needs to write beside it (its -wal and -shm), but "
                                f"you may not write in {data} (permission denied: it belongs "
                                f"to {owner}, mode {mode}).\n")
