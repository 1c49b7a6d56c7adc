"""Every file Outpost owns is written whole or not at all, owner-only, into owner-only folders
(issue 17): on a real full disk (a small tmpfs in a private mount namespace) each writer says
"the disk is full" in one sentence, the previous file is kept byte for byte and no temporary
file is left behind; the data, config and backups folders are 0700, the files 0600."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from app.config import paths
from app.config.presets import PresetBook
from app.config.providers import ProviderConfig, ProviderRegistry
from app.config.settings import Settings
from app.storage.quotas import QuotaBook
from engines.model_library import ModelLibrary
from engines.model_load import LoadSettingsFile
from tests.support import in_mount_namespace

ROOT = Path(__file__).resolve().parents[2]
TMPFS_SIZE = "1m"
ADMIN = SimpleNamespace(is_admin=True, name="admin")


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def write_everything(home: Path, round_: int) -> dict[str, str | None]:
    """Change and write each file Outpost owns once; what each writer raised (None: nothing)."""
    outcomes: dict[str, str | None] = {}
    models = home / "data" / "models"

    def attempt(name, write):
        try:
            write()
            outcomes[name] = None
        except Exception as exc:  # noqa: BLE001 - the test reports whatever came out
            outcomes[name] = f"{type(exc).__name__}: {exc}"

    def settings():
        s = Settings()
        s.set("temperature", 0.1 * round_)
        s.save()

    def provider_facts():
        from app.config.provider_facts import note_refuses_json_schema

        note_refuses_json_schema("http://x", f"m{round_}")

    attempt("settings", settings)
    attempt("providers", lambda: ProviderRegistry().add(
        ProviderConfig(f"p{round_}", "openai", "http://localhost:1/v1")))
    attempt("quotas", lambda: QuotaBook().set("ana", "requests_per_minute", round_, by=ADMIN))
    attempt("presets", lambda: PresetBook().save(f"mine{round_}", {"temperature": 0.5}))
    attempt("load_settings", lambda: LoadSettingsFile(models).set("m", "batch", 64 * round_))
    attempt("references", lambda: ModelLibrary(models, include_bundled=False)
            ._write_references({Path(f"/models/{round_}.gguf"): f"m{round_}"}))
    attempt("provider_facts", provider_facts)
    return outcomes


def files_under(home: Path) -> dict[str, bytes]:
    return {str(p.relative_to(home)): p.read_bytes() for p in sorted(home.rglob("*"))
            if p.is_file()}


# -- modes --------------------------------------------------------------------------------
def test_outposts_folders_are_its_owners_only(tmp_path, monkeypatch):
    home = tmp_path / "fresh" / "home"
    monkeypatch.setenv("OUTPOST_HOME", str(home))
    for folder in (paths.data_dir(), paths.config_dir(), paths.backups_dir()):
        assert mode_of(folder) == 0o700, folder
    assert mode_of(home) == 0o700  # Outpost made it


def test_a_wider_data_folder_from_before_is_tightened(tmp_path, monkeypatch):
    home = tmp_path / "home"
    for name in ("data", "config", "data/backups"):
        (home / name).mkdir(parents=True)
        os.chmod(home / name, 0o755)
    os.chmod(home, 0o755)
    monkeypatch.setenv("OUTPOST_HOME", str(home))
    assert mode_of(paths.backups_dir()) == 0o700
    assert mode_of(paths.data_dir()) == mode_of(paths.config_dir()) == 0o700
    assert mode_of(home) == 0o755  # the user's own folder: left as it is


def test_every_file_outpost_writes_is_its_owners_only(outpost_home):
    old = os.umask(0o022)
    try:
        assert set(write_everything(outpost_home, 1).values()) == {None}
    finally:
        os.umask(old)
    written = [p for p in outpost_home.rglob("*") if p.is_file()]
    assert {p.name for p in written} == {
        "settings.json", "providers.json", "quotas.json", "presets.json", "load_settings.json",
        "references.json", "provider_facts.json"}  # and no temporary file
    for path in written:
        assert mode_of(path) == 0o600, path


# -- a full disk --------------------------------------------------------------------------
FULL_DISK_CHILD = """
import json, os, sys
from pathlib import Path
home = Path(sys.argv[1])
os.environ["OUTPOST_HOME"] = str(home)
sys.path.insert(0, sys.argv[2])
from tests.config.test_atomic_writes import files_under, write_everything

first = write_everything(home, 1)
before = files_under(home)
with open(home.parent / "filler", "wb", buffering=0) as filler:  # fill it to the last byte
    for size in (65536, 4096, 1):
        try:
            while True:
                filler.write(b"x" * size)
        except OSError:
            pass
second = write_everything(home, 2)
after = files_under(home)
print(json.dumps({"first": first, "second": second,
                  "changed": sorted(k for k in before.keys() | after.keys()
                                    if before.get(k) != after.get(k))}))
"""
# mount a tmpfs over $1 in a private mount namespace (nothing is left mounted), then run Python
MOUNT_AND_RUN = 'mount -t tmpfs -o size=$0 tmpfs "$1" || exit 97; shift; shift; exec "$@"'


def run_on_a_small_disk(disk: Path, *command: str) -> subprocess.CompletedProcess:
    """``command`` with a TMPFS_SIZE tmpfs on ``disk``: ``unshare -rm`` (a user and mount
    namespace), else ``unshare -m`` (root). Fails, never skips, when neither can mount."""
    return in_mount_namespace(MOUNT_AND_RUN, TMPFS_SIZE, str(disk), str(ROOT), *command,
                              timeout=300, cwd=ROOT)


def test_a_full_disk_says_so_in_one_sentence_and_keeps_every_file(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    done = run_on_a_small_disk(disk, sys.executable, "-c", FULL_DISK_CHILD,
                               str(disk / "home"), str(ROOT))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert set(result["first"].values()) == {None}
    assert result["changed"] == []  # every file byte for byte, and no temporary file left
    second = result["second"]
    assert second.pop("provider_facts") is None  # a cache: learnt again next time, silently
    for name, outcome in second.items():
        assert outcome is not None and outcome.startswith("FileWriteFailed: "), (name, outcome)
        message = outcome.removeprefix("FileWriteFailed: ")
        assert message.endswith("could not be written: the disk is full; the previous version "
                                "is kept."), (name, message)
        assert message.count(". ") == 0 and "\n" not in message
    assert os.listdir(disk) == []  # the tmpfs lived in its own mount namespace, now gone
