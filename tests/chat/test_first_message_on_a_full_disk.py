"""A new chat on a full disk (found by a trial: Send in the window left an empty chat in the
sidebar, its conversation row committed without the message the disk had no room for). A real
small tmpfs in a private mount namespace (``unshare``): room for the conversation's row, not
for its first message. Nothing is kept, for the window and `outpost ask` alike (the core)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from tests.support import in_mount_namespace

ROOT = Path(__file__).resolve().parents[2]
MOUNT_AND_RUN = 'mount -t tmpfs -o size=$0 tmpfs "$1" || exit 97; shift; exec "$@"'

CHILD = r"""
import json, os, shutil, sys
from pathlib import Path

disk = Path(sys.argv[1])
os.environ["OUTPOST_HOME"] = str(disk / "home")
from app.compose import build_service
from app.config.settings import Settings
from app.domain.errors import KnownStorageError
from app.storage.store import Store

store = Store()
service = build_service(store, Settings(), "ann")
service.start_turn("a first chat, on a roomy disk", model="m")  # (tables and log made)
with open(disk / "fill", "wb") as fill:  # 40 KB free: a conversation's row, not a long message
    fill.write(b"\0" * (shutil.disk_usage(disk).free - 40_000))
try:
    service.start_turn("the field notes, word for word " * 450, model="m")
    error = None
except KnownStorageError as exc:
    error = str(exc)
titles = [c.title for c in store.list_conversations()]
(disk / "fill").unlink()  # room again: the same message goes through
turn = service.start_turn("the field notes, word for word " * 450, model="m")
print(json.dumps({"error": error, "titles": titles,
                  "after": [c.title for c in store.list_conversations()],
                  "messages": len(store.messages(turn.conversation_id))}))
store.close()
"""


def test_a_full_disk_at_send_leaves_no_chat_without_its_first_message(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    done = in_mount_namespace(MOUNT_AND_RUN, "8m", str(disk), sys.executable, "-c", CHILD,
                              str(disk), cwd=ROOT, timeout=120,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["error"] is not None and "disk is full" in result["error"]
    assert result["titles"] == ["a first chat, on a roomy disk"]  # no empty chat beside it
    assert len(result["after"]) == 2 and result["messages"] == 1
