"""Owns the local engine the window uses, and swaps it when the user picks another model.

The model loads on the engine's own thread; a background task waits for it and reports back by
signal, so the window is usable at once. A model that fails to load is reported and the previous
one (if any) stays in use: the app keeps running.

Engines come from ``engine_factory(settings, model_path, on_attempt)``: the real local model
(``engines.registry.create_local_engine``) unless the composition root was given another, e.g. a
scripted engine in the GUI tests. Besides the ``Engine`` contract the loader and the stream
worker use ``ready`` and ``wait_ready()``, as the local and cloud engines have them.
"""
from __future__ import annotations

from PySide6.QtCore import QObject, Signal

from app.config.settings import Settings
from app.domain.errors import InternalError, OutpostError
from engines.registry import create_local_engine
from ui.tasks import TaskRunner


class ModelLoader(QObject):
    loading_started = Signal(str)  # model file name
    model_ready = Signal(object)  # engines.base.EngineInfo
    load_failed = Signal(object)  # the OutpostError (ModelError, …) that stopped the load

    def __init__(self, settings: Settings, tasks: TaskRunner, parent: QObject | None = None,
                 on_attempt=None, engine_factory=create_local_engine):
        super().__init__(parent)
        self.settings = settings
        self.on_attempt = on_attempt  # the usage ledger's sink
        self.engine_factory = engine_factory
        self.tasks = tasks
        self.active = None  # a ready engine
        self.pending = None  # an engine still loading

    def engine_for_turn(self):
        """The engine a new turn should use: the ready one, else the one loading (wait for it)."""
        return self.active or self.pending

    @property
    def loading(self) -> bool:
        return self.pending is not None

    def load(self, model_path: str | None = None) -> None:
        try:
            engine = self.engine_factory(self.settings, model_path, self.on_attempt)
        except OutpostError as exc:
            self.load_failed.emit(exc)
            return
        if self.pending is not None:
            stale, self.pending = self.pending, None
            self.tasks.run_in_background(stale.close, lambda _: None, lambda _: None)
        self.pending = engine
        self.loading_started.emit(engine.info.model)
        self.tasks.run_in_background(lambda: engine.wait_ready(),
                                     lambda _: self._on_loaded(engine),
                                     lambda exc: self._on_failed(engine, exc))

    def _on_loaded(self, engine) -> None:
        if engine is not self.pending:
            return
        old, self.active, self.pending = self.active, engine, None
        if old is not None:
            self.tasks.run_in_background(old.close, lambda _: None, lambda _: None)
        self.model_ready.emit(engine.info)

    def _on_failed(self, engine, exc: Exception) -> None:
        if engine is self.pending:
            self.pending = None
        self.tasks.run_in_background(engine.close, lambda _: None, lambda _: None)
        self.load_failed.emit(exc if isinstance(exc, OutpostError) else
                              InternalError(f"The model could not be loaded: {exc!r}"))

    def shutdown(self) -> None:
        for engine in (self.pending, self.active):
            if engine is not None:
                engine.close()
        self.pending = self.active = None
