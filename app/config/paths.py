"""Where Outpost keeps its data and config.

By default the per-user data and config dirs of the OS (platformdirs). The environment variable
``OUTPOST_HOME`` moves both under one folder: tests, portable installs on a USB stick.

The folders are Outpost's own and hold conversations, settings and (with the file fallback) keys,
so each is its owner's only (0700): created so, and tightened to 0700 when found wider (a folder
an older Outpost made with the umask's 0755). Only Outpost's own folders are tightened: the data,
config and backups folders, and the ``OUTPOST_HOME`` folder when Outpost creates it; never a
parent such as ``~/.local/share``, nor an ``OUTPOST_HOME`` that was already there.
"""
from __future__ import annotations

import errno
import os
import stat
import tempfile
from importlib.resources import files
from pathlib import Path

import platformdirs

from app.domain.errors import KnownStorageError

APP_NAME = "Outpost"
HOME_ENV = "OUTPOST_HOME"
RESOURCES_PACKAGE = "outpost_resources"  # the repository's resources/ folder, once installed
FOLDER_MODE = 0o700  # every folder Outpost owns: its owner's only


def resource(*parts: str) -> Path:
    """A file Outpost ships (``resources/`` in the checkout), found through the installed
    package ``outpost_resources`` so it works the same from an editable install, a wheel and
    the PyInstaller bundle. Outpost is always installed as files on disk (never a zip), so the
    result is a real path that can be handed to code that wants one."""
    return Path(str(files(RESOURCES_PACKAGE).joinpath(*parts)))


def own_folder(path: Path) -> Path:
    """``path``, a folder Outpost owns, made (with its missing parents) and kept 0700. A folder
    that cannot be tightened (not ours, a file system without modes) is left as it is. One
    that cannot be made is KnownStorageError, saying why (``write_problem``)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir(mode=FOLDER_MODE)
        except FileExistsError:
            pass
    except OSError as exc:
        why = write_problem(_nearest(path.parent)) or f"{exc.strerror or exc}"
        raise KnownStorageError(f"Outpost could not make its folder {path}: {why}.") from exc
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode != FOLDER_MODE:  # the umask can clear bits of mkdir's mode; wider: tighten
            os.chmod(path, FOLDER_MODE)
    except OSError:
        pass
    return path


def write_problem(folder: Path) -> str | None:
    """Why Outpost cannot write in ``folder``, as the OS says it, in words that name the folder
    (None: a file can be made and written there). Asked when SQLite says only "unable to open
    database file": a file is made (and removed) to read the error number (EROFS, EACCES,
    ENOSPC), so nothing is guessed."""
    if folder.exists() and not folder.is_dir():
        return f"{folder} is a file, not a folder"
    there = _nearest(folder)
    if not there.is_dir():
        return f"{folder} cannot be made: {there} is a file, not a folder"
    missing = "" if there == folder else f"{folder} does not exist and "
    try:
        if os.statvfs(there).f_flag & os.ST_RDONLY:
            return f"{missing}{there} is on a file system mounted read-only"
    except (OSError, AttributeError):  # (no statvfs on Windows: the probe below says it)
        pass
    try:
        fd, probe = tempfile.mkstemp(prefix=".outpost-write-check-", dir=there)
        try:
            os.write(fd, b"\0")  # a full disk still makes an empty file
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        return missing + write_refusal(there, exc)
    return f"{folder} does not exist" if missing else None


def _nearest(path: Path) -> Path:
    """``path``, or the nearest path above it that exists: where a missing folder is made."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def write_refusal(folder: Path, exc: OSError) -> str:
    """What ``exc``, raised writing in ``folder`` (or the file ``folder``), means, naming
    it."""
    if exc.errno == errno.EROFS:
        return f"{folder} is on a read-only file system"
    if exc.errno in (errno.EACCES, errno.EPERM):
        try:
            st, owner = folder.stat(), folder.owner()
        except (OSError, KeyError, NotImplementedError):
            return f"you may not write in {folder} (permission denied)"
        return (f"you may not write in {folder} (permission denied: it belongs to {owner}, "
                f"mode {stat.S_IMODE(st.st_mode):04o})")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"the disk holding {folder} is full"
    return f"{folder} cannot be written ({exc.strerror or exc})"


def _override() -> Path | None:
    value = os.environ.get(HOME_ENV, "").strip()
    if not value:
        return None
    home = Path(value).expanduser().resolve()
    if not home.exists():
        own_folder(home)  # Outpost creates it, so it is Outpost's own
    return home


def data_dir() -> Path:
    base = _override()
    path = base / "data" if base else Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))
    return own_folder(path)


def config_dir() -> Path:
    base = _override()
    path = base / "config" if base else Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))
    return own_folder(path)


def database_path() -> Path:
    return data_dir() / "outpost.db"


def settings_path() -> Path:
    return config_dir() / "settings.json"


def backups_dir() -> Path:
    return own_folder(data_dir() / "backups")
