"""Load settings per model, remembered: how llama.cpp loads one GGUF file.

``outpost models set MODEL KEY VALUE`` and the window's model manager edit them; they live in
``<models_dir>/load_settings.json``, keyed by the model's library name (a rename carries them,
a removal drops them). ``auto`` (stored as null) lets Outpost choose:

==========  ===================================================================================
context     tokens the model sees; auto: its trained length capped by the context_cap setting
gpu_layers  layers offloaded to the GPU, 0..all; auto: all when llama.cpp was built with GPU
            offload (``llama_supports_gpu_offload()``), else 0
threads     CPU threads, fixed; auto: the n_threads setting if set, else the cores free now,
            at most the physical cores, re-read during each reply (engines/cpu_budget.py)
batch       prompt tokens evaluated per step (also the reproducible-seed chunk, see
            engines/llama_local.py); default 128
flash_attn  on/off; auto: off, on when the KV cache is quantized (llama.cpp needs it then)
kv_type     the KV cache's type: f16 (default), q8_0 (half the memory), q4_0 (a quarter)
mmap        map the file instead of reading it; auto: on, off for a model in a shared folder
            (a USB stick or share that goes away must not take the app down)
mlock       keep the weights in RAM (no swapping); default off
==========  ===================================================================================
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from app.config.file_schema import ConfigFile, ConfigFileInvalid, write_config
from app.domain.errors import UsageError

LOAD_SETTINGS = "load_settings.json"
KV_TYPES = {"f16": 1, "q8_0": 8, "q4_0": 2}  # ggml type ids (llama_cpp.GGML_TYPE_*)
_TRUE = {"on", "true", "yes", "1"}
_FALSE = {"off", "false", "no", "0"}

# why the GPU settings are greyed out (Settings, Models) on a build without GPU offload
NO_GPU_OFFLOAD = ("This llama.cpp build has no GPU offload, so the model runs on the CPU "
                  "(to build it for a GPU, see the README's GPU note).")


@dataclass(frozen=True)
class ModelLoadOptions:
    """One model's load settings; None: auto (see the module)."""

    context: int | None = None
    gpu_layers: int | None = None
    threads: int | None = None
    batch: int = 128
    flash_attn: bool | None = None
    kv_type: str = "f16"
    mmap: bool | None = None
    mlock: bool = False

    def record(self) -> dict:
        return asdict(self)

    @classmethod
    def from_record(cls, data: dict) -> "ModelLoadOptions":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in known})

    def changed(self) -> dict:
        """The settings that differ from the defaults."""
        default = ModelLoadOptions()
        return {k: v for k, v in self.record().items() if getattr(default, k) != v}


KEYS = tuple(f.name for f in fields(ModelLoadOptions))
_RANGES = {"context": (256, 1_048_576), "gpu_layers": (0, 1_000), "threads": (1, 512),
           "batch": (32, 8192)}


def parse_value(key: str, text: str):
    """``VALUE`` of ``models set`` for ``key``, checked: an int, auto, on/off or a KV type."""
    if key not in KEYS:
        raise UsageError(f"{key!r} is not a load setting; the settings are: "
                         f"{', '.join(KEYS)}.")
    value = str(text).strip().lower()
    auto_ok = getattr(ModelLoadOptions(), key) is None
    if value in ("auto", "default"):
        return None if auto_ok else getattr(ModelLoadOptions(), key)
    if key == "kv_type":
        if value not in KV_TYPES:
            raise UsageError(f"kv_type must be one of {', '.join(KV_TYPES)}, not {text!r}.")
        return value
    if key in ("flash_attn", "mmap", "mlock"):
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        raise UsageError(f"{key} is on or off{' or auto' if auto_ok else ''}, not {text!r}.")
    low, high = _RANGES[key]
    try:
        number = int(value)
    except ValueError:
        raise UsageError(f"{key} is a whole number{' or auto' if auto_ok else ''}, "
                         f"not {text!r}.") from None
    if not low <= number <= high:
        raise UsageError(f"{key} must be between {low} and {high}, not {number}.")
    return number


def check_for_model(options: ModelLoadOptions, *, name: str, trained_context: int | None,
                    layers: int) -> None:
    """Refuse settings this model cannot take, in one sentence each."""
    if options.context is not None and trained_context and options.context > trained_context:
        raise UsageError(f"{name} was trained on {trained_context:,} tokens; a context of "
                         f"{options.context:,} would give garbage past that (set at most "
                         f"{trained_context}).")
    if options.gpu_layers is not None and layers and options.gpu_layers > layers:
        raise UsageError(f"{name} has {layers} layers; gpu_layers can be 0..{layers} "
                         "or auto.")
    if options.kv_type != "f16" and options.flash_attn is False:
        raise UsageError(f"A {options.kv_type} KV cache needs flash attention in llama.cpp; "
                         "turn flash attention (flash_attn) on or to auto, or set the KV cache "
                         "(kv_type) to f16.")


class LoadSettingsFile:
    """``<models_dir>/load_settings.json``: {model name: {key: value}} (written atomically)."""

    def __init__(self, models_dir: Path):
        self.path = Path(models_dir) / LOAD_SETTINGS

    def _read(self) -> dict:
        """The file, checked against the schema (unknown keys are a newer version's: kept);
        ``ConfigFileInvalid`` naming the model and the key when it cannot be used."""
        file = ConfigFile(self.path, "load settings file")
        defaults = ModelLoadOptions()
        try:
            data = file.table(file.read(), "", "model names and their load settings")
            for name, entry in data.items():
                for key, value in file.table(entry, name, "load settings").items():
                    where = f"{name}.{key}"
                    auto = value is None and getattr(defaults, key, 0) is None
                    if key == "kv_type" and (not isinstance(value, str) or value not in KV_TYPES):
                        raise file.wrong(where, "one of " + ", ".join(KV_TYPES), value)
                    if key in _RANGES and not auto:
                        file.whole_number(value, where, *_RANGES[key])
                    if key in ("flash_attn", "mmap", "mlock") and not auto:
                        file.flag(value, where)
        except FileNotFoundError:
            return {}
        except ConfigFileInvalid as exc:
            raise ConfigFileInvalid(f"{str(exc).removesuffix('.')}; fix or delete it.",
                                    self.path) from None
        return data

    def _write(self, data: dict) -> None:
        """Atomically (temp file, fsync, rename); ``FileWriteFailed`` when it cannot."""
        write_config(self.path, json.dumps(data, indent=2, sort_keys=True) + "\n")

    def get(self, name: str) -> ModelLoadOptions:
        try:
            return ModelLoadOptions.from_record(self._read().get(name) or {})
        except TypeError:
            raise UsageError(f"The load settings of {name} in {self.path} are damaged; fix "
                             "or delete that entry.") from None

    def put(self, name: str, options: ModelLoadOptions) -> None:
        data = self._read()
        changed = options.changed()
        if changed:
            data[name] = changed
        else:
            data.pop(name, None)
        self._write(data)

    def set(self, name: str, key: str, value) -> ModelLoadOptions:
        options = replace(self.get(name), **{key: value})
        self.put(name, options)
        return options

    def forget(self, name: str) -> None:
        data = self._read()
        if data.pop(name, None) is not None:
            self._write(data)

    def rename(self, old: str, new: str) -> None:
        data = self._read()
        if old in data:
            data[new] = data.pop(old)
            self._write(data)
