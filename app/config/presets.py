"""Sampling presets: the built-in Precise, Balanced and Creative, plus the user's own (saved,
renamed and deleted; kept in ``<config dir>/presets.json``). A preset holds knob values
(``app.domain.sampling``); a knob it leaves out keeps its current value.

A presets file that cannot be read or holds a wrong value is refused with one sentence naming the
preset and the knob (``ConfigFileInvalid``) rather than read as "no presets of yours": saving one
would then write over the others."""
from __future__ import annotations

import json
import math
from pathlib import Path

from app.domain.adapters import LoraAdapter, adapters_from_records
from app.config import paths
from app.config.file_schema import MAX_WHOLE, ConfigFile, write_config
from app.domain.errors import UsageError
from app.domain.sampling import BUILTIN_PRESETS, BY_NAME, KNOB_NAMES, check


class PresetBook:
    def __init__(self, path: Path | None = None):
        self.path = path or paths.config_dir() / "presets.json"

    def _user(self) -> dict[str, dict]:
        file = ConfigFile(self.path, "presets file")
        try:
            data = file.table(file.read(), "")
        except FileNotFoundError:
            return {}
        presets = file.table(data.get("presets", {}), "presets", "preset names and knobs")
        for name, knobs in presets.items():
            _check_preset(file, f"presets.{name}", knobs)
        return presets

    def _write(self, presets: dict[str, dict]) -> None:
        write_config(self.path, json.dumps({"presets": presets}, indent=2) + "\n")

    def names(self) -> list[str]:
        return list(BUILTIN_PRESETS) + sorted(self._user(), key=str.lower)

    def is_builtin(self, name: str) -> bool:
        return any(name.lower() == b.lower() for b in BUILTIN_PRESETS)

    def _find(self, name: str, table: dict) -> str | None:
        return next((n for n in table if n.lower() == name.strip().lower()), None)

    def get(self, name: str) -> dict:
        for table in (BUILTIN_PRESETS, self._user()):
            found = self._find(name, table)
            if found is not None:
                return {k: check(k, v) if k != "stop" else list(v or [])
                        for k, v in table[found].items() if k in KNOB_NAMES}
        raise UsageError(f"There is no preset named {name!r} (presets: "
                         f"{', '.join(self.names())}).")

    def adapters(self, name: str) -> tuple[LoraAdapter, ...] | None:
        """The LoRA adapters a preset attaches; None when it says nothing about adapters."""
        for table in (BUILTIN_PRESETS, self._user()):
            found = self._find(name, table)
            if found is not None:
                records = table[found].get("lora")
                return None if records is None else adapters_from_records(records)
        self.get(name)  # raises: no such preset
        return None

    def save(self, name: str, values: dict) -> None:
        name = name.strip()
        if not name:
            raise UsageError("A preset needs a name.")
        if self.is_builtin(name):
            raise UsageError(f"{name} is a built-in preset; save yours under another name.")
        clean = {}
        for knob, value in values.items():
            if knob == "lora":  # LoRA adapters the preset attaches (app.domain.adapters)
                clean["lora"] = [a.record() for a in adapters_from_records(value)]
                continue
            value = check(knob, value)  # raises for an unknown knob or a bad value
            clean[knob] = list(value) if isinstance(value, tuple) else value
        presets = self._user()
        existing = self._find(name, presets)
        if existing is not None:
            presets.pop(existing)
        presets[name] = clean
        self._write(presets)

    def rename(self, old: str, new: str) -> None:
        new = new.strip()
        presets = self._user()
        found = self._find(old, presets)
        if found is None:
            raise UsageError(f"{old} is built in and cannot be renamed." if self.is_builtin(old)
                             else f"There is no preset of yours named {old!r}.")
        if not new or self.is_builtin(new) or (self._find(new, presets) not in (None, found)):
            raise UsageError(f"The name {new!r} is empty or already taken.")
        presets[new] = presets.pop(found)
        self._write(presets)

    def delete(self, name: str) -> None:
        presets = self._user()
        found = self._find(name, presets)
        if found is None:
            raise UsageError(f"{name} is built in and cannot be deleted." if self.is_builtin(name)
                             else f"There is no preset of yours named {name!r}.")
        presets.pop(found)
        self._write(presets)


def _check_preset(file: ConfigFile, key: str, knobs) -> None:
    """A preset as the file holds it: known knobs, each valid (``ConfigFileInvalid`` naming
    the first that is not)."""
    file.table(knobs, key, "knobs and values")
    for knob, value in knobs.items():
        where = f"{key}.{knob}"
        if knob == "lora":
            if not isinstance(value, list):
                raise file.wrong(where, "a list of adapters", value)
            for index, record in enumerate(value):
                file.table(record, f"{where}[{index}]")
                file.text(record.get("path"), f"{where}[{index}].path", empty=False)
                _number(file, record.get("scale", 1.0), f"{where}[{index}].scale")
        elif knob not in BY_NAME:
            raise file.fail(f"{where} is not a sampling knob (knobs: {', '.join(KNOB_NAMES)})")
        elif value is None:
            continue
        elif BY_NAME[knob].kind is list:
            if not isinstance(value, str):
                file.text_list(value, where)
        else:
            _number(file, value, where)  # a number; ``check`` then says the knob's range
        try:
            if knob == "lora":
                adapters_from_records(value)
            else:
                check(knob, value)
        except UsageError as exc:
            raise file.fail(f"{where}: {str(exc).removesuffix('.')}") from None


def _number(file: ConfigFile, value, key: str) -> None:
    finite = isinstance(value, int) and abs(value) <= MAX_WHOLE or \
        isinstance(value, float) and math.isfinite(value)
    if isinstance(value, bool) or not finite:
        raise file.wrong(key, "a number", value)
