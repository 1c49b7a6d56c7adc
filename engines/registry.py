"""Builds engines from settings. The heavy backend is imported lazily: ``llama_cpp`` loads only
when a local model is actually used."""
from __future__ import annotations

from pathlib import Path

from app.config import paths
from app.config.settings import Settings
from engines.anthropic import AnthropicEngine
from engines.base import Engine
from engines.http_policy import Timeouts
from engines.llama_local import LoadSettings, LocalEngine
from engines.model_files import resolve_model_path
from engines.model_library import ModelLibrary
from engines.openai_compat import OpenAICompatEngine


def create_local_engine(settings: Settings, model_path: str | Path | None = None,
                        on_attempt=None):
    """A LocalEngine for ``model_path`` (None: the ``model_path`` setting; empty, there or
    here: the bundled model); starts loading. ``on_attempt``: the usage ledger's sink, one
    record per reply."""
    wanted = settings["model_path"] if model_path is None else str(model_path)
    library = ModelLibrary.from_settings(settings)
    # a name from `outpost models list`, or a path
    entry = library.find(wanted) if wanted and wanted.strip() else \
        library.find(str(resolve_model_path(None)))
    return LocalEngine(entry.path, local_load_settings(settings, library, entry),
                       on_attempt=on_attempt)


def kv_cache_dir() -> Path:
    """Where the local engine saves KV states (``engines/kv_store.py``)."""
    return paths.data_dir() / "kv_cache"


def local_load_settings(settings: Settings, library: ModelLibrary, entry) -> LoadSettings:
    """How ``entry`` loads: the settings, then its own remembered load settings."""
    return LoadSettings(context_cap=settings["context_cap"], n_threads=settings["n_threads"],
                        gpu_offload=settings["gpu_offload"],
                        reproducible_seeds=settings["reproducible_seeds"],
                        options=library.load_settings.get(entry.name),
                        removable=entry.source == "shared",
                        # conversations resume after a restart (engines/kv_store.py)
                        kv_cache_dir=kv_cache_dir() if settings["kv_cache_max_mb"] else None,
                        kv_cache_max_bytes=settings["kv_cache_max_mb"] * 2 ** 20)


def cloud_timeouts(settings: Settings):
    return Timeouts(first_token=settings["first_token_timeout_s"],
                    idle=settings["idle_timeout_s"])


def create_cloud_engine(config, api_key: str | None, model: str | None = None, on_attempt=None,
                        **kwargs):
    """An engine for a configured cloud provider."""
    cls = AnthropicEngine if config.kind == "anthropic" else OpenAICompatEngine
    return cls(config, api_key, model, on_attempt=on_attempt, **kwargs)


class CloudEnginePool:
    """One engine (and its HTTP connection pool) per provider, model and key; rebuilt when any
    of them changes. Thread-safe enough for the GUI thread that owns it."""

    def __init__(self, on_attempt=None, timeouts=None):
        self.on_attempt = on_attempt
        self.timeouts = timeouts
        self._engines: dict[str, tuple[tuple, Engine]] = {}

    def get(self, config, api_key: str | None, model: str | None = None):
        identity = (config, api_key, model or config.default_model)
        current = self._engines.get(config.name)
        if current is not None and current[0] == identity:
            return current[1]
        if current is not None:
            current[1].close()
        extra = {"timeouts": self.timeouts} if self.timeouts is not None else {}
        engine = create_cloud_engine(config, api_key, model, on_attempt=self.on_attempt, **extra)
        self._engines[config.name] = (identity, engine)
        return engine

    def close(self) -> None:
        for _, engine in self._engines.values():
            engine.close()
        self._engines.clear()


class CloudTargets:
    """Turns a provider name into a ready cloud engine: config, key (keychain, session memory or
    the user's opted-in file, else the environment) and a pooled engine. Also carries what the
    router needs: the connectivity tracker and the request log's ``on_attempt``."""

    def __init__(self, registry, keys, pool, connectivity=None):
        self.registry, self.keys, self.pool = registry, keys, pool
        self.connectivity = connectivity

    def engine(self, name: str, model: str | None = None):
        config = self.registry.get(name)
        return self.pool.get(config, self.keys.resolve(config.name, config.base_url), model or None)

    def fresh_engine(self, name: str, model: str | None = None):
        """A new engine of its own (the outbox sends from a background thread while the
        pooled engine may be streaming a chat reply); attempts go to the request log too."""
        config = self.registry.get(name)
        extra = {"timeouts": self.pool.timeouts} if self.pool.timeouts is not None else {}
        return create_cloud_engine(config, self.keys.resolve(config.name, config.base_url),
                                   model or None, on_attempt=self.pool.on_attempt, **extra)

    def models(self, name: str) -> list[str]:
        """The provider's models (blocking: run it in the background)."""
        config = self.registry.get(name)
        # A throwaway engine: the pooled one may be streaming a reply right now.
        engine = create_cloud_engine(config, self.keys.resolve(config.name, config.base_url),
                                     config.default_model or "-")
        try:
            return engine.list_models()
        finally:
            engine.close()
