"""Remembering one choice the user made in the window (a setting), with the failure as one of
Outpost's errors so the window can show it like any other."""
from __future__ import annotations

from app.config.settings import Settings
from app.domain.errors import StorageError


def save_setting(settings: Settings, name: str, value) -> None:
    """Set ``name`` and write the settings file. The value stays set for this session even when
    the file cannot be written (StorageError)."""
    settings.set(name, value)
    try:
        settings.save()
    except OSError as exc:
        raise StorageError(f"The settings could not be saved: {exc}.") from exc
