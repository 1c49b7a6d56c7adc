"""The composition root: builds the core once for a front end, and the engines its turns use.

The CLI (``app.cli.commands.common.open_core``) and the window (``ui.app.OutpostApp``) both call
``build_service``; a third front end does too. Each gets an ``EngineSource`` for the turn
pipeline (``app.chat.pipeline``): ``CommandEngines`` builds engines for one command and closes them
after it; ``LoadedEngines`` hands out the window's loaded model and its pooled cloud engines.
"""
from __future__ import annotations

from typing import Callable

from app.chat.connectivity import Connectivity
from app.chat.pipeline import TurnPipeline
from app.chat.service import ChatService
from app.config.providers import ProviderRegistry, needs_key
from app.config.secrets import KeyStore, how_to_add_a_key
from app.config.settings import Settings
from app.domain.errors import ModelError, UsageError
from app.storage.ledger import make_ledger
from app.storage.quotas import QuotaBook, QuotaGuard
from app.storage.store import Store
from engines.base import Engine
from engines.kv_store import forget_all
from engines.registry import (
    CloudTargets,
    cloud_timeouts,
    create_cloud_engine,
    create_local_engine,
    kv_cache_dir,
)


def build_service(store: Store, settings: Settings, profile: str) -> ChatService:
    """The chat service signed in as ``profile``, with its usage ledger and quotas."""
    ledger = make_ledger(store, settings)
    ledger.profile = profile
    # a deleted message's words are in no saved KV state either (they can be read back)
    store.on_forget.append(lambda: forget_all(kv_cache_dir()))
    return ChatService(store, settings, ledger=ledger, quotas=QuotaGuard(QuotaBook(), ledger),
                       profile=profile)


class CommandEngines:
    """Engines for one command (``outpost ask``): built when the turn needs them, every attempt
    to the usage ledger, all closed by ``close``. Keys: the keychain, else the file the user
    opted into, else the environment."""

    def __init__(self, settings: Settings, on_attempt: Callable[[object], None] | None):
        self.settings = settings
        self._on_attempt = on_attempt
        self.connectivity = Connectivity()
        self._built: list[Engine] = []

    def on_attempt(self, record) -> None:
        if self._on_attempt is not None:
            self._on_attempt(record)

    def local(self, model: str | None = None) -> Engine:
        # an empty --model means the setting, as no --model does
        engine = create_local_engine(self.settings, model or None, self.on_attempt)
        self._built.append(engine)
        return engine

    def cloud(self, provider: str, model: str | None = None) -> Engine:
        config = ProviderRegistry().get(provider)
        key = KeyStore(fallback="file").resolve(config.name, config.base_url)
        if key is None and needs_key(config):
            raise UsageError(f"There is no API key for {config.name}: "
                             f"{how_to_add_a_key(config.name, config.base_url)}.")
        engine = create_cloud_engine(config, key, model, on_attempt=self.on_attempt,
                                     timeouts=cloud_timeouts(self.settings))
        self._built.append(engine)
        return engine

    def on_this_computer(self, provider: str) -> bool:
        return ProviderRegistry().on_this_computer(provider)

    def close(self) -> None:
        for engine in self._built:
            engine.close()
        self._built.clear()


class LoadedEngines:
    """The window's engines: the model the loader holds (ready, or still loading: the turn waits
    for it) and the pooled engine of each provider; the window owns and closes them."""

    def __init__(self, local: Callable[[], Engine | None], targets: CloudTargets | None):
        self._local = local
        self.targets = targets

    @property
    def connectivity(self) -> Connectivity | None:
        return self.targets.connectivity if self.targets is not None else None

    def on_attempt(self, record) -> None:
        if self.targets is not None and self.targets.pool.on_attempt is not None:
            self.targets.pool.on_attempt(record)

    def local(self, model: str | None = None) -> Engine:
        engine = self._local()
        if engine is None:
            raise ModelError("No model is loaded. Choose a GGUF file with Model ▸ Open model "
                             "file…, or use the bundled model.")
        return engine

    def cloud(self, provider: str, model: str | None = None) -> Engine:
        if self.targets is None:
            raise UsageError("No cloud providers are set up in this window.")
        return self.targets.engine(provider, model)

    def on_this_computer(self, provider: str) -> bool:
        return self.targets is not None and self.targets.registry.on_this_computer(provider)


def window_pipeline(service: ChatService, local: Callable[[], Engine | None],
                    targets: CloudTargets | None) -> TurnPipeline:
    return TurnPipeline(service, LoadedEngines(local, targets))
