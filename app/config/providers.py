"""Cloud providers the user has configured: name, wire format, base URL, default model.

Stored as JSON in the config dir (``providers.json``). Never a key: keys live in the OS keychain
(``app.config.secrets``). One OpenAI-compatible engine serves every preset below except Anthropic.
"""
from __future__ import annotations

import builtins
import ipaddress
import json
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from urllib.parse import urlparse

from app.config import paths
from app.config.file_schema import ConfigFile, write_config
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
LOCAL_TARGET = "local"  # who answers a conversation (``conversations.target``): the local model
PROVIDER_TARGET = "provider:"  # + a provider's name: that provider


def target_provider(target: str | None) -> str | None:
    """The provider a conversation's target names ("provider:NAME", NAME a name a provider can
    have), else None: the local model, no target, or a value Outpost never writes (an imported
    or hand-edited row's "openai"), which whoever reads it treats as the local model."""
    if target is None or not target.startswith(PROVIDER_TARGET):
        return None
    name = target[len(PROVIDER_TARGET):]
    return name if _NAME.match(name) and name.lower() != LOCAL_TARGET else None


def is_target(target: str | None) -> bool:
    """``target`` is one Outpost writes: "local" or "provider:NAME" (None: none yet)."""
    return target is None or target == LOCAL_TARGET or target_provider(target) is not None


@dataclass(frozen=True)
class ProviderConfig:
    name: str
    kind: str
    base_url: str
    default_model: str = ""

    @property
    def on_this_computer(self) -> bool:
        """Its base URL names this computer (loopback: an Ollama or llama.cpp server the user
        runs here): Offline mode still lets it answer, since nothing sent to it leaves."""
        return is_loopback(urlparse(self.base_url).hostname or "")

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


_FIELDS = tuple(f.name for f in fields(ProviderConfig))


class ProviderRegistry:
    """The user's providers, in one JSON file written atomically.

    A file that cannot be read or has the wrong shape is refused (``ConfigFileInvalid``, one
    sentence naming the key) rather than read as "no providers": the next ``add`` would then
    write over the providers it holds."""

    def __init__(self, path: Path | None = None):
        self.path = path or paths.config_dir() / "providers.json"

    def list(self) -> list[ProviderConfig]:
        file = ConfigFile(self.path, "providers file")
        try:
            raw = file.table(file.read(), "")
        except FileNotFoundError:
            return []
        entries = raw.get("providers", [])
        if not isinstance(entries, builtins.list):
            raise file.wrong("providers", "a list of providers", entries)
        providers = []
        for index, item in enumerate(entries):
            key = f"providers[{index}]"
            file.table(item, key)
            unknown = sorted(set(item) - set(_FIELDS))
            if unknown:
                raise file.fail(f"{key} has an unknown key {unknown[0]!r} (known: "
                                f"{', '.join(_FIELDS)})")
            for name in _FIELDS:
                if name in item or name != "default_model":
                    file.text(item.get(name), f"{key}.{name}")
            try:
                providers.append(ProviderConfig(**item).validate())
            except UsageError as exc:
                raise file.fail(f"{key}: {str(exc).removesuffix('.')}") from None
        return providers

    def get(self, name: str) -> ProviderConfig:
        for provider in self.list():
            if provider.name == name:
                return provider
        known = ", ".join(p.name for p in self.list()) or "none yet"
        raise UsageError(f"There is no provider called {name!r} (configured: {known}). Add it "
                         "with `outpost providers add`.")

    def on_this_computer(self, name: str) -> bool:
        """Is the provider called ``name`` on this computer? (False for one not configured.)"""
        return any(p.name == name and p.on_this_computer for p in self.list())

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
        """Atomically (``write_atomic``); ``FileWriteFailed`` in one sentence when it cannot."""
        write_config(self.path, json.dumps(
            {"version": 1, "providers": [asdict(p) for p in providers]}, indent=2) + "\n")


def preset_of(config: ProviderConfig) -> str | None:
    """The key of the preset this provider was made from (its kind and base URL), or None."""
    base_url = config.base_url.rstrip("/")
    return next((key for key, preset in PRESETS.items()
                 if preset.kind == config.kind and preset.base_url.rstrip("/") == base_url),
                None)


def is_loopback(host: str) -> bool:
    """Is ``host`` (as written in a URL) this computer, without looking the name up?
    ``localhost``, or an address of 127.0.0.0/8 or ::1."""
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def needs_key(config: ProviderConfig) -> bool:
    """True for the hosted APIs of the presets, which always want a key (local servers don't)."""
    host = (urlparse(config.base_url).hostname or "").lower()
    return any(preset.needs_key and host == (urlparse(preset.base_url).hostname or "")
               for preset in PRESETS.values())
