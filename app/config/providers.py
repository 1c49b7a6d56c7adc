"""Cloud providers the user has configured: name, wire format, base URL, default model.

Stored as JSON in the config dir (``providers.json``). Never a key: keys live in the OS keychain
(``app.config.secrets``). One OpenAI-compatible engine serves every preset below except Anthropic.
"""
from __future__ import annotations

import builtins
import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlparse

from app.config import paths
from app.domain.errors import UsageError

KINDS = ("openai", "anthropic")
# How the window names each kind (the kinds stay the names in providers.json and the CLI)
KIND_LABELS = {"openai": "OpenAI-compatible", "anthropic": "Anthropic"}


@dataclass(frozen=True)
class Preset:
    label: str
    kind: str
    base_url: str
    default_model: str
    needs_key: bool = True


PRESETS: dict[str, Preset] = {
    "openai": Preset("OpenAI", "openai", "https://api.openai.com/v1", "gpt-4o-mini"),
    "anthropic": Preset("Anthropic", "anthropic", "https://api.anthropic.com",
                        "claude-3-5-haiku-latest"),
    "openrouter": Preset("OpenRouter", "openai", "https://openrouter.ai/api/v1",
                         "openai/gpt-4o-mini"),
    "groq": Preset("Groq", "openai", "https://api.groq.com/openai/v1", "llama-3.1-8b-instant"),
    "together": Preset("Together", "openai", "https://api.together.xyz/v1",
                       "meta-llama/Llama-3.3-70B-Instruct-Turbo"),
    "ollama": Preset("Ollama", "openai", "http://localhost:11434/v1", "llama3.2", False),
    "vllm": Preset("vLLM", "openai", "http://localhost:8000/v1", "", False),
    "llama-server": Preset("llama.cpp server", "openai", "http://localhost:8080/v1", "", False),
    "lmstudio": Preset("LM Studio", "openai", "http://localhost:1234/v1", "", False),
}

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class ProviderConfig:
    name: str
    kind: str
    base_url: str
    default_model: str = ""

    def validate(self) -> "ProviderConfig":
        if not _NAME.match(self.name):
            raise UsageError(f"Provider name {self.name!r} must be 1-64 letters, digits, '-', '_' "
                             "or '.', starting with a letter or digit.")
        if self.name.lower() == "local":
            raise UsageError("'local' is the local model's name; choose another provider name.")
        if self.kind not in KINDS:
            raise UsageError(f"Provider kind must be one of {', '.join(KINDS)}; got {self.kind!r}.")
        url = urlparse(self.base_url)
        if url.scheme not in ("http", "https") or not url.netloc:
            raise UsageError(f"Base URL {self.base_url!r} must be an http:// or https:// URL.")
        return ProviderConfig(self.name, self.kind, self.base_url.rstrip("/"), self.default_model)


class ProviderRegistry:
    """The user's providers, in one JSON file written atomically."""

    def __init__(self, path: Path | None = None):
        self.path = path or paths.config_dir() / "providers.json"

    def list(self) -> list[ProviderConfig]:
        if not self.path.exists():
            return []
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            return [ProviderConfig(**item) for item in raw.get("providers", [])]
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            raise UsageError(f"The providers file {self.path} could not be read ({exc}).") from exc

    def get(self, name: str) -> ProviderConfig:
        for provider in self.list():
            if provider.name == name:
                return provider
        known = ", ".join(p.name for p in self.list()) or "none yet"
        raise UsageError(f"There is no provider called {name!r} (configured: {known}). Add it "
                         "with `outpost providers add`.")

    def add(self, config: ProviderConfig, replace: bool = False) -> ProviderConfig:
        config = config.validate()
        providers = self.list()
        if any(p.name == config.name for p in providers) and not replace:
            raise UsageError(f"A provider called {config.name!r} already exists.")
        providers = [p for p in providers if p.name != config.name] + [config]
        self._write(providers)
        return config

    def remove(self, name: str) -> None:
        self.get(name)
        self._write([p for p in self.list() if p.name != name])

    def _write(self, providers: "builtins.list[ProviderConfig]") -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".providers-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"version": 1, "providers": [asdict(p) for p in providers]}, handle,
                      indent=2)
        os.replace(tmp, self.path)


def needs_key(config: ProviderConfig) -> bool:
    """True for the hosted APIs of the presets, which always want a key (local servers don't)."""
    host = (urlparse(config.base_url).hostname or "").lower()
    return any(preset.needs_key and host == (urlparse(preset.base_url).hostname or "")
               for preset in PRESETS.values())
