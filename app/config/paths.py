"""Where Outpost keeps its data and config.

By default the per-user data and config dirs of the OS (platformdirs). The environment variable
``OUTPOST_HOME`` moves both under one folder: tests, portable installs on a USB stick.
"""
from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

import platformdirs

APP_NAME = "Outpost"
HOME_ENV = "OUTPOST_HOME"
RESOURCES_PACKAGE = "outpost_resources"  # the repository's resources/ folder, once installed


def resource(*parts: str) -> Path:
    """A file Outpost ships (``resources/`` in the checkout), found through the installed
    package ``outpost_resources`` so it works the same from an editable install, a wheel and
    the PyInstaller bundle. Outpost is always installed as files on disk (never a zip), so the
    result is a real path that can be handed to code that wants one."""
    return Path(str(files(RESOURCES_PACKAGE).joinpath(*parts)))


def _override() -> Path | None:
    value = os.environ.get(HOME_ENV, "").strip()
    return Path(value).expanduser().resolve() if value else None


def data_dir() -> Path:
    base = _override()
    path = base / "data" if base else Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))
    path.mkdir(parents=True, exist_ok=True)
    return path


def config_dir() -> Path:
    base = _override()
    path = base / "config" if base else Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))
    path.mkdir(parents=True, exist_ok=True)
    return path


def database_path() -> Path:
    return data_dir() / "outpost.db"


def settings_path() -> Path:
    return config_dir() / "settings.json"


def backups_dir() -> Path:
    path = data_dir() / "backups"
    path.mkdir(parents=True, exist_ok=True)
    return path
