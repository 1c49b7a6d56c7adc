"""The model library: the GGUF files Outpost can load, and what their headers say.

Where models are (``ModelLibrary``):

* the **models directory** (setting ``models_dir``; default ``<data dir>/models``): files Outpost
  imported (copied or hard-linked) and, in ``references.json``, files left where they are, each
  with the name it was given (a damaged ``references.json`` is reported in ``problems`` and never
  written over);
* any number of **shared read-only folders** (setting ``shared_model_folders``: a network share,
  a USB stick), scanned for ``*.gguf``; Outpost never writes there and never deletes from there;
* the **bundled** SmolLM2-135M-Instruct.

One file is listed once, whatever way it is reached (the same device and inode: a hard link, a
reference to a file already in a shared folder), and one model is imported once: a file with the
content of a model already there (the models directory, a reference, a shared folder: the same
size, then the same sha256) is refused, naming that model, whether it would be copied, linked or
referenced. The bundled model does not count (it lives in the installed package, which an update
replaces): one copy of it may be kept in the models directory, copied from its own file or from
a copy of it (a link or a reference to the bundled file itself is no copy: refused). A model's
**name** is its file name without ``.gguf``, except a reference's: the name it was imported or
renamed with, kept in ``references.json``; ``outpost ask --model`` and ``models info`` take a
name or a path (the path of a referenced file finds it under its name). A name given to an
import or a rename may not differ only in case from another model's. A half-written file
(``*.part``) is never listed.

LoRA adapter files (``general.type = adapter``) found in these folders are not models: they are
listed apart (``adapters``) and attached with ``ask --lora`` or the sampling panel.

Each model shows what its GGUF header says (architecture, parameters, quantization, trained
context, chat template, license) and an estimate of the memory it needs at a context length:
the weights (the file size) + the KV cache (f16: 2 × layers × context × KV width × 2 bytes)
+ 64 MiB for llama.cpp's compute buffers.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from app.config import paths
from app.config.file_schema import ConfigFile, ConfigFileInvalid, write_config
from app.domain.errors import ModelInvalid, ModelNotFound, UsageError
from engines.gguf import GGUFInfo, read_gguf
from engines.model_files import bundled_model_path, file_sha256
from engines.model_load import LoadSettingsFile, ModelLoadOptions

KV_BYTES = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}  # bytes per cached element

# llama.cpp's LLAMA_FTYPE (general.file_type): how the weights are quantized
FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1",
              10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S",
              15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS",
              20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S",
              25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS",
              31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0"}
COMPUTE_OVERHEAD_BYTES = 64 * 1024 * 1024
REFERENCES = "references.json"
IMPORT_MODES = ("copy", "link", "reference")


@dataclass(frozen=True)
class ModelEntry:
    """One model of the library, as its header describes it."""

    name: str
    path: Path
    source: str  # "library", "reference", "shared" or "bundled"
    info: GGUFInfo

    @property
    def size(self) -> int:
        return self.info.file_size

    @property
    def quantization(self) -> str:
        kind = self.info.metadata.get("general.file_type")
        return FILE_TYPES.get(kind, f"type {kind}") if kind is not None else "unknown"

    @property
    def read_only(self) -> bool:
        """Shared and bundled models are never renamed or deleted by Outpost."""
        return self.source in ("shared", "bundled")

    def memory_estimate(self, context: int, kv_type: str = "f16") -> int:
        """Bytes to hold the weights, a KV cache of ``context`` tokens (f16: 2 bytes an
        element; q8_0 1.0625; q4_0 0.5625) and the compute buffers (an estimate; llama.cpp's
        exact needs vary by backend)."""
        meta, arch = self.info.metadata, self.info.architecture
        layers = int(meta.get(f"{arch}.block_count") or 0)
        width = int(meta.get(f"{arch}.embedding_length") or 0)
        heads = int(meta.get(f"{arch}.attention.head_count") or 0) or 1
        kv_heads = int(meta.get(f"{arch}.attention.head_count_kv") or heads)
        head_dim = int(meta.get(f"{arch}.attention.key_length") or width // heads)
        kv_cache = int(2 * layers * context * kv_heads * head_dim * KV_BYTES[kv_type])
        return self.size + kv_cache + COMPUTE_OVERHEAD_BYTES

    def describe(self, context: int, options: ModelLoadOptions | None = None) -> dict:
        """What ``models list/info`` show (JSON-ready). ``context``: the context_cap setting;
        ``options``: the model's load settings (its own context and KV type count)."""
        info = self.info
        options = options or ModelLoadOptions()
        context = options.context or context
        return {"name": self.name, "path": str(self.path), "source": self.source,
                "architecture": info.architecture, "parameters": info.parameter_count,
                "quantization": self.quantization, "trained_context": info.context_length,
                "chat_template": info.chat_template is not None,
                "license": info.metadata.get("general.license"), "size_bytes": self.size,
                "memory_estimate_bytes": self.memory_estimate(
                    min(context, info.context_length or context), options.kv_type),
                "context": min(context, info.context_length or context),
                "kind": "adapter" if info.metadata.get("general.type") == "adapter"
                else "model",
                "load_settings": options.record()}


def size_text(n: float) -> str:
    """A byte count as people read it: "812 bytes", "93.8 MiB", "4.1 GiB"."""
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def default_models_dir() -> Path:
    return paths.data_dir() / "models"


class ModelLibrary:
    """The models directory, the shared folders and the bundled model (see the module)."""

    def __init__(self, models_dir: Path | None = None, shared: list[Path] | None = None,
                 include_bundled: bool = True):
        self.models_dir = Path(models_dir) if models_dir else default_models_dir()
        self.shared = [Path(p).expanduser() for p in shared or []]
        self.include_bundled = include_bundled
        self.load_settings = LoadSettingsFile(self.models_dir)
        self.adapters: list[ModelEntry] = []  # LoRA files met by the last entries()
        self.problems: list[str] = []  # why something was left out by the last entries()

    @classmethod
    def from_settings(cls, settings) -> "ModelLibrary":
        return cls(Path(settings["models_dir"]).expanduser() if settings["models_dir"] else None,
                   [Path(p) for p in settings["shared_model_folders"]])

    # -- what there is ------------------------------------------------------------------------
    def entries(self) -> list[ModelEntry]:
        """Every loadable model once, sorted by name. A file whose header is broken is left
        out (``problems`` says why)."""
        found: list[ModelEntry] = []
        seen: set[tuple[int, int]] = set()
        self.problems = []
        self.adapters = []
        for path, source, name in self._candidates():
            try:
                stat = path.stat()
            except OSError:
                continue  # a share that went away, a dangling reference
            if (stat.st_dev, stat.st_ino) in seen:
                continue
            try:
                info = read_gguf(path)
            except (ModelInvalid, ModelNotFound) as exc:
                self.problems.append(str(exc))
                continue
            seen.add((stat.st_dev, stat.st_ino))
            entry = ModelEntry(name, path, source, info)
            if info.metadata.get("general.type") == "adapter":
                self.adapters.append(entry)
                continue
            found.append(entry)
        return sorted(found, key=lambda e: (e.name.lower(), e.source))

    def _candidates(self):
        """(path, source, name) of every file that may be a model, in order of precedence."""
        if self.models_dir.is_dir():
            for path in sorted(self.models_dir.glob("*.gguf")):
                yield path, "library", _stem(path)
        for path, name in self._references().items():
            yield path, "reference", name
        for folder in self.shared:
            if folder.is_dir():
                for path in sorted(folder.rglob("*.gguf")):
                    yield path, "shared", _stem(path)
            else:
                self.problems.append(f"The shared model folder {folder} cannot be reached "
                                     "(unplugged, or the share is offline); its models are "
                                     "not listed.")
        if self.include_bundled:
            try:
                bundled = bundled_model_path()
            except ModelNotFound:
                return
            yield bundled, "bundled", _stem(bundled)

    def describe(self, entry: ModelEntry, context: int) -> dict:
        """``entry.describe`` with its remembered load settings."""
        return entry.describe(context, self.load_settings.get(entry.name))

    def in_shared_folder(self, path: Path) -> bool:
        path = Path(path).resolve()
        return any(path.is_relative_to(folder.resolve()) for folder in self.shared)

    def _references(self) -> dict[Path, str]:
        """The files kept by reference and their names; none when the list is damaged
        (``problems`` says so, and its models are not listed until it is fixed)."""
        try:
            return self._read_references()
        except ConfigFileInvalid as exc:
            self.problems.append(f"{str(exc).removesuffix('.')}; the models it lists are not "
                                 "shown until it is fixed or deleted.")
            return {}

    def _read_references(self) -> dict[Path, str]:
        """``references.json``: ``{"paths": [path, …], "names": {path: name, …}}``. The names
        sit beside the paths, not in them, so that a file written before references kept their
        names still loads (a path without a name is listed by its file name) and an Outpost
        that knows no names still reads the paths of a newer file."""
        file = ConfigFile(self.models_dir / REFERENCES, "model references file")
        try:
            data = file.table(file.read(), "")
        except FileNotFoundError:
            return {}
        paths = file.text_list(data.get("paths", []), "paths")
        names = file.table(data.get("names", {}), "names", "model names")
        references: dict[Path, str] = {}
        for path in paths:
            name = names.get(path)
            if name is None:
                name = _stem(Path(path))
            elif _name_problem(file.text(name, f"names[{path!r}]")):
                raise file.fail(f"names[{path!r}] is {name!r}, not a usable model name")
            references[Path(path)] = name
        return references

    def _write_references(self, references: dict[Path, str]) -> None:
        """Atomically; refused (``ConfigFileInvalid``) while the file on disk is damaged, so the
        references it holds are never written over."""
        self._read_references()
        write_config(self.models_dir / REFERENCES,
                     json.dumps({"paths": [str(p) for p in references],
                                 "names": {str(p): n for p, n in references.items()}},
                                indent=2) + "\n")

    def _name_in_use(self, name: str, entries: list[ModelEntry],
                     but: Path | None = None) -> str | None:
        """The model name that ``name`` clashes with, or None: the same name or one that differs
        only in case (``find`` takes either, and a case-blind disk one file for the other), of
        a listed model or of a reference whose file cannot be reached now. ``but``: the file
        of the model being renamed, which may change the case of its own name."""
        names = [e.name for e in entries if but is None or e.path != but]
        names += [n for p, n in self._references().items() if but is None or p != but]
        return next((n for n in names if n.lower() == name.lower()), None)

    def find(self, name_or_path: str) -> ModelEntry:
        """A model by the name ``models list`` shows, its file's name (what a reply says
        answered it: ``….gguf``), or by path (a referenced file: under the name it was given,
        so that its load settings are the ones used)."""
        candidate = Path(name_or_path).expanduser()
        if candidate.suffix == ".gguf" and os.sep not in name_or_path and \
                not candidate.exists():  # a model's file name, as replies and Details show it
            for entry in self.entries():
                if entry.path.name == name_or_path:
                    return entry
        if candidate.suffix == ".gguf" or os.sep in name_or_path or candidate.exists():
            info = read_gguf(candidate)  # names the problem with the file
            for path, name in self._references().items():
                if _same_file(path, info.path):
                    return ModelEntry(name, path, "reference", info)
            return ModelEntry(_stem(candidate), info.path,
                              "shared" if self.in_shared_folder(info.path) else "path", info)
        entries = self.entries()
        matches = [e for e in entries if e.name == name_or_path] or \
            [e for e in entries if e.name.lower() == name_or_path.lower()]
        if not matches:
            names = ", ".join(e.name for e in entries) or "none"
            raise ModelNotFound(f"There is no model called {name_or_path!r} (models: {names}). "
                                "Give a path to a GGUF file, or import it with `outpost models "
                                "import FILE`.")
        return matches[0]

    # -- changes ------------------------------------------------------------------------------
    def import_file(self, source: str | Path, mode: str = "copy",
                    name: str | None = None) -> ModelEntry:
        """Add a GGUF file: ``copy`` it into the models directory, hard-``link`` it there (same
        disk, no second copy), or keep a ``reference`` to it where it is. The header is checked
        first; a file already in the library, or with the content of a model there, is refused
        (``UsageError`` naming that model: a second copy would only take disk space and a second
        name), except the bundled model: one copy of it may be made, from its own file too (not
        a link or a reference to that file); a copy is written to ``.part`` and renamed only
        once complete."""
        if mode not in IMPORT_MODES:
            raise UsageError(f"Import mode must be one of {', '.join(IMPORT_MODES)}; got "
                             f"{mode!r}.")
        info = read_gguf(source)  # refuses a missing, non-GGUF or truncated file at once
        stem = _checked_name(name) if name else info.path.name.removesuffix(".gguf")
        entries = self.entries()
        bundled = None  # the bundled model's own file: its one copy may be made from it
        for entry in entries + self.adapters:
            if os.path.samefile(entry.path, info.path):
                if entry.source != "bundled":
                    raise UsageError(f"{info.path} is already in the library, as {entry.name}.")
                bundled = entry
        twin = self._same_content(info, entries + self.adapters)
        if twin is not None:
            raise UsageError(f"{info.path} is already in the library, as {twin.name}: "
                             f"{twin.path} has the same content (size and sha256), so nothing "
                             "was imported.")
        if bundled is not None and mode != "copy":
            raise UsageError(f"{info.path} is the bundled model {bundled.name}; one copy of it "
                             "may be kept in the models folder: import it without --link or "
                             "--reference (a link or a reference would be the bundled file "
                             "itself, not a copy).")
        taken = self._name_in_use(stem, entries)
        if taken is not None:
            raise UsageError(f"A model called {taken} is already in the library; choose "
                             "another name (--name).")
        if mode == "reference":
            references = self._read_references()  # a damaged file is refused, never replaced
            references[info.path] = stem
            self._write_references(references)
            return ModelEntry(stem, info.path, "reference", info)
        self.models_dir.mkdir(parents=True, exist_ok=True)
        target = self.models_dir / f"{stem}.gguf"
        if mode == "link":
            try:
                os.link(info.path, target)
            except OSError as exc:
                raise UsageError(f"{info.path} cannot be hard-linked into {self.models_dir} "
                                 f"({exc.strerror}); copy it, or keep a reference to it.") \
                    from None
        else:
            free = shutil.disk_usage(self.models_dir).free
            if free < info.file_size:
                raise UsageError(f"There is not enough free space in {self.models_dir} to copy "
                                 f"{info.path.name}: it needs {info.file_size:,} bytes, "
                                 f"{free:,} are free.")
            part = target.with_name(target.name + ".part")
            try:
                shutil.copyfile(info.path, part)
                os.replace(part, target)
            except OSError as exc:
                part.unlink(missing_ok=True)
                raise UsageError(f"{info.path.name} could not be copied into "
                                 f"{self.models_dir}: {exc.strerror}.") from None
        return ModelEntry(stem, target, "library", read_gguf(target))

    def holding(self, info: GGUFInfo) -> ModelEntry | None:
        """The model or adapter of the library already holding ``info``'s bytes (the bundled
        model aside), or None: what an import refuses, and a finished download too."""
        entries = self.entries()
        return self._same_content(info, entries + self.adapters)

    @staticmethod
    def _same_content(info: GGUFInfo, entries: list[ModelEntry]) -> ModelEntry | None:
        """The entry whose file holds the bytes of ``info``'s file, or None: sizes first, so a
        sha256 is computed only when a size matches (nothing records hashes: ``models verify``
        computes its own). Bundled entries do not count (see the module)."""
        sized = [e for e in entries if e.source != "bundled" and e.size == info.file_size]
        if not sized:
            return None
        digest = file_sha256(info.path)
        for entry in sized:
            try:
                if file_sha256(entry.path) == digest:
                    return entry
            except OSError:
                continue  # a share that went away since it was listed
        return None

    def remove(self, name: str) -> ModelEntry:
        """Delete a model of the library (a reference: forget it; the file stays where it
        is). Shared and bundled models are refused."""
        entry = self.find(name)
        if entry.read_only or entry.source == "path":
            raise UsageError(f"{entry.name} is a {entry.source} model ({entry.path}); Outpost "
                             "does not delete it.")
        if entry.source == "reference":
            self._write_references({p: n for p, n in self._read_references().items()
                                    if not _same_file(p, entry.path)})
        else:
            entry.path.unlink()
        self.load_settings.forget(entry.name)
        return entry

    def rename(self, name: str, new_name: str) -> ModelEntry:
        """Rename a model of the models directory (its file) or a reference (its name in
        ``references.json``; the file stays as it is); its load settings follow."""
        entry = self.find(name)
        new_name = _checked_name(new_name)
        if entry.source not in ("library", "reference"):
            raise UsageError(f"{entry.name} is a {entry.source} model; only models in the "
                             "models directory and references can be renamed.")
        taken = self._name_in_use(new_name, self.entries(), but=entry.path)
        if taken is not None:
            raise UsageError(f"A model called {taken} is already in the library.")
        if entry.source == "reference":
            references = self._read_references()
            for path in references:
                if _same_file(path, entry.path):
                    references[path] = new_name
            self._write_references(references)
            renamed = ModelEntry(new_name, entry.path, "reference", entry.info)
        else:
            target = entry.path.with_name(f"{new_name}.gguf")
            os.replace(entry.path, target)
            renamed = ModelEntry(new_name, target, "library", read_gguf(target))
        self.load_settings.rename(entry.name, new_name)
        return renamed


def _stem(path: Path) -> str:
    return path.name.removesuffix(".gguf")


def _name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a model's name (None: it can): ``find`` and ``--model`` would take
    it for a path (a slash, a ``.gguf`` or ``~`` that survives, a leading dot), it could not
    name a file, or it would not show on one line."""
    if not name:
        return "it is empty"
    if "/" in name or "\\" in name:
        return "it has a slash"
    if name.startswith((".", "~")):
        return "it starts with a dot or ~"
    if name.endswith(".gguf"):
        return "it still ends in .gguf"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "it has a control character"
    return None


def _checked_name(name: str) -> str:
    """``name`` as given (spaces around it and one ``.gguf`` dropped), or ``UsageError`` before
    anything is written when it could not be used to find the model again."""
    given = name.strip()
    name = given.removesuffix(".gguf")
    problem = _name_problem(name)
    if problem:
        raise UsageError(f"{given!r} is not a usable model name: {problem}.")
    return name


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a == b
