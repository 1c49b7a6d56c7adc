"""``keys.json``, the explicit insecure-file opt-in: written whole or not at all (temporary file,
fsync, rename), so a full disk never costs a key already stored, and a damaged file is never
overwritten nor read as "no keys" in silence."""
from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import keyring
import keyring.backends.fail
import pytest

from app.config.secrets import KeyFileDamaged, KeyStore
from tests.support import in_mount_namespace

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-file-test-0123456789abcdefghijklmnopqrstuvwxyz-ABCDEFGHIJ"  # 60 characters
TMPFS_SIZE = "64k"

# In a 64 KiB tmpfs: about 3.9 KB of keys (one page), the rest of the disk filled, then one
# more key that makes the file need a second page, which the disk no longer has.
FULL_DISK_CHILD = r"""
import json, os, sys
from pathlib import Path
from app.config.secrets import KeyStore
from app.domain.errors import OutpostError
disk, key = Path(sys.argv[1]), sys.argv[2]
store = KeyStore(fallback="file", file_path=disk / "keys.json")
names = []
while not names or (disk / "keys.json").stat().st_size < 3950:
    names.append(f"provider-{len(names):02d}")
    store.set(names[-1], f"{key}-{names[-1][-2:]}")
before = (disk / "keys.json").stat().st_size
try:
    with open(disk / "filler", "wb") as filler:
        while True:
            filler.write(b"\0" * 4096)
            filler.flush()
except OSError:
    pass
try:
    store.set("one-more", key * 3)  # 180 more characters: a second page
    error = None
except OutpostError as exc:
    error = {"type": type(exc).__name__, "message": str(exc)}
except OSError as exc:
    error = {"type": type(exc).__name__, "message": str(exc)}
os.remove(disk / "filler")
fresh = KeyStore(fallback="file", file_path=disk / "keys.json")
print(json.dumps({"error": error, "before": before, "stored": len(names),
                  "found": [n for n in names if fresh.get(n) == f"{key}-{n[-2:]}"],
                  "files": sorted(os.listdir(disk))}))
"""


@pytest.fixture(autouse=True)
def no_keychain():
    """These tests are about the file: no keychain here, even where ``make test`` runs one."""
    previous = keyring.get_keyring()
    keyring.set_keyring(keyring.backends.fail.Keyring())
    yield
    keyring.set_keyring(previous)


def run_on_a_small_disk(disk: Path, *command: str) -> subprocess.CompletedProcess:
    """``command`` with a TMPFS_SIZE tmpfs mounted on ``disk`` in a private mount namespace
    (``unshare -rm``, else ``unshare -m`` as root); fails, never skips, when neither mounts
    (see tests/engines/test_model_download.py)."""
    script = 'mount -t tmpfs -o size=$0 tmpfs "$1" || exit 97; shift; exec "$@"'
    return in_mount_namespace(script, TMPFS_SIZE, str(disk), *command, timeout=120, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT),
                                   "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"})


def test_a_full_disk_keeps_every_stored_key_and_says_so(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    done = run_on_a_small_disk(disk, sys.executable, "-c", FULL_DISK_CHILD, str(disk), KEY)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["before"] < 4096  # the test's premise: one page before, two after
    assert result["error"] is not None
    assert result["error"]["type"] == "FileWriteFailed", result["error"]
    assert result["error"]["message"] == (f"{disk / 'keys.json'} could not be written: the "
                                          "disk is full; the previous version is kept.")
    assert len(result["found"]) == result["stored"]  # not one earlier key vanished
    assert result["files"] == ["keys.json"]  # no temporary file left behind
    assert os.listdir(disk) == []  # the tmpfs lived in its own mount namespace


def test_the_file_is_replaced_whole_with_mode_0600(tmp_path):
    path = tmp_path / "config" / "keys.json"
    store = KeyStore(fallback="file", file_path=path)
    store.set("a", KEY)
    first = path.stat().st_ino
    store.set("b", KEY + "-b")
    assert path.stat().st_ino != first  # a new file renamed over the old, never rewritten
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {"a": KEY, "b": KEY + "-b"}
    assert sorted(os.listdir(path.parent)) == ["keys.json"]
    store.delete("a")
    assert json.loads(path.read_text()) == {"b": KEY + "-b"}


@pytest.mark.parametrize("content", ['{"a": "sk-file-test-aaaaaaaa", "b": "sk-fi',
                                     '["not", "keys"]', '\x00\x00\x00'],
                         ids=["truncated", "not-a-mapping", "zeros"])
def test_a_damaged_key_file_is_never_overwritten_nor_read_in_silence(content, tmp_path,
                                                                     caplog):
    path = tmp_path / "keys.json"
    path.write_text(content)
    store = KeyStore(fallback="file", file_path=path)
    with pytest.raises(KeyFileDamaged) as refused:
        store.set("c", KEY)
    assert str(refused.value).startswith(f"The key file {path} is damaged (")
    assert str(refused.value).endswith("Outpost will not overwrite it: move it away and store "
                                       "the keys again.")
    with pytest.raises(KeyFileDamaged):
        store.delete("a")
    assert path.read_text() == content  # what was there is still there, for the user
    with caplog.at_level(logging.WARNING, logger="app.config.secrets"):
        assert store.get("a") is None
    assert f"The key file {path} is damaged" in caplog.text
