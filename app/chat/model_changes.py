"""Renaming and removing a model of the library, and what names it elsewhere.

A local model is named in three more places than the library: the ``model_path`` setting (the
model every new turn loads), the conversations that remember it (``target_model``, see
``app.chat.targets``) and the usage ledger's rows (by file name). The library itself
(``engines.model_library``) knows none of them; ``outpost models`` and the window's Models
dialog go through here, so that

* a rename carries them all: the setting and the conversations get the new name (or the new
  path, where they held a path), and the ledger's rows of a renamed file move to its new file
  name (one row per model in ``outpost usage``), unless another listed model still has the
  old file name;
* the configured model (``model_path``) is not removed: choose another first, as the window
  refuses removing the model it has loaded; conversations that remembered a removed model are
  answered by the configured one from then on (``removed`` says how many).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from app.config.settings import Settings
from app.domain.errors import OutpostError, UsageError
from app.storage.store import Store
from engines.model_library import ModelEntry, ModelLibrary


@dataclass(frozen=True)
class Renamed:
    """A rename and what moved with it."""
    entry: ModelEntry  # the model under its new name
    setting: bool  # ``model_path`` named it and now names it anew
    conversations: int  # conversations that remembered it
    usage_rows: int  # ledger rows filed under its new file name


@dataclass(frozen=True)
class Removed:
    entry: ModelEntry
    conversations: int  # conversations that remembered it: the configured model answers them


class ModelChanges:
    """Renames and removes models of ``library`` with the ``settings`` and the ``store``."""

    def __init__(self, library: ModelLibrary, settings: Settings, store: Store):
        self.library, self.settings, self.store = library, settings, store

    def rename(self, name: str, new_name: str) -> Renamed:
        entry = self.library.find(name)
        setting = self.settings["model_path"]
        naming = [value for value in self.store.local_model_targets()
                  if self._names(value, entry)]
        setting_names = bool(setting.strip()) and self._names(setting, entry)
        renamed = self.library.rename(name, new_name)
        if setting_names and not self._names(setting, renamed):
            self.settings.set("model_path", _anew(setting, renamed))
            self.settings.save()
        moved = sum(self.store.retarget_local_model(value, _anew(value, renamed))
                    for value in naming if not self._names(value, renamed))
        rows = 0
        old_file, new_file = entry.path.name, renamed.path.name
        if old_file != new_file and \
                all(e.path.name != old_file for e in self.library.entries()):
            rows = self.store.relabel_local_model(old_file, new_file)
        return Renamed(renamed, setting_names, moved, rows)

    def remove(self, name: str) -> Removed:
        """Refused (``UsageError``) for the configured model, before anything is removed."""
        entry = self.removable(name)
        naming = [value for value in self.store.local_model_targets()
                  if self._names(value, entry)]
        removed = self.library.remove(entry.name)
        moved = sum(self.store.retarget_local_model(value, None) for value in naming)
        return Removed(removed, moved)

    def removable(self, name: str) -> ModelEntry:
        """``name``'s model, or ``UsageError`` when it is the configured one."""
        entry = self.library.find(name)
        setting = self.settings["model_path"]
        if setting.strip() and self._names(setting, entry):
            raise UsageError(f"{entry.name} is the configured local model (setting model_path: "
                             f"{setting}); choose another one first (Models… ▸ Use in the "
                             "window, or the Model setting), then remove it.")
        return entry

    def _names(self, value: str, entry: ModelEntry) -> bool:
        """Whether ``value`` (a name, a file name or a path) finds ``entry``'s file now."""
        try:
            found = self.library.find(value)
        except OutpostError:
            return False
        try:
            return os.path.samefile(found.path, entry.path)
        except OSError:
            return found.path == entry.path


def _anew(value: str, renamed: ModelEntry) -> str:
    """What names ``renamed`` where ``value`` named it: its path for a path, else its name."""
    return str(renamed.path) if os.sep in value else renamed.name
