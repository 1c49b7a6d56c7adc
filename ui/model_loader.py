"""Owns the local engine the window uses, and swaps it when the user picks another model.

The model loads on the engine's own thread; a background task waits for it and reports back by
signal, so the window is usable at once. A model that fails to load is reported and the previous
one (if any) stays in use: the app keeps running. The loader remembers what each load was asked
for, so a reload (new load settings) loads that model again, not whatever the setting says, and
a caller learns through ``on_ready`` that its very load won (the Model menu then remembers the
choice: a file that fails never becomes the setting), and through ``on_failed`` that it failed
(the window then says which model answers instead).

Engines come from ``engine_factory(settings, model_path, on_attempt)``: the real local model
(``engines.registry.create_local_engine``) unless the composition root was given another, e.g. a
scripted engine in the GUI tests. Besides the ``Engine`` contract the loader and the stream
worker use ``ready`` and ``wait_ready()``, as the local and cloud engines have them.
"""
from __future__ import annotations

from typing import Callable

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
        # what load() was given for each (None: the model_path setting, "": the bundled model)
        self.active_path: str | None = None
        self.pending_path: str | None = None
        self._on_ready: Callable[[], None] | None = None  # the pending load's
        self._on_failed: Callable[[OutpostError], None] | None = None  # the pending load's

    def engine_for_turn(self):
        """The engine a new turn should use: the ready one, else the one loading (wait for it)."""
        return self.active or self.pending

    @property
    def loading(self) -> bool:
        return self.pending is not None

    def load(self, model_path: str | None = None,
             on_ready: Callable[[], None] | None = None,
             on_failed: Callable[[OutpostError], None] | None = None) -> None:
        """Start loading ``model_path`` (a library name or a GGUF file; "": the bundled model;
        None: the ``model_path`` setting); the ready model answers meanwhile. ``on_ready()``
        runs (GUI thread, before ``model_ready``) once this load is the model in use; never
        when the file is refused, fails to load, or a later load replaced it first.
        ``on_failed(error)`` runs (GUI thread, after ``load_failed``) when this load is refused
        or fails while it is still the one loading."""
        try:
            engine = self.engine_factory(self.settings, model_path, self.on_attempt)
        except OutpostError as exc:  # the header refused it: nothing changes
            self.load_failed.emit(exc)
            if on_failed is not None:
                on_failed(exc)
            return
        if self.pending is not None:
            stale, self.pending = self.pending, None
            self.tasks.run_in_background(stale.close, lambda _: None, lambda _: None)
        self.pending, self.pending_path, self._on_ready = engine, model_path, on_ready
        self._on_failed = on_failed
        self.loading_started.emit(engine.info.model)
        self.tasks.run_in_background(lambda: engine.wait_ready(),
                                     lambda _: self._on_loaded(engine),
                                     lambda exc: self._on_load_failed(engine, exc))

    def reload(self) -> None:
        """Load the model loading (else the one in use) again, e.g. with new load settings;
        the loaded one answers until it is ready, and a load's ``on_ready`` still runs."""
        if self.pending is not None:
            self.load(self.pending_path, self._on_ready, self._on_failed)
        else:
            self.load(self.active_path)

    def _on_loaded(self, engine) -> None:
        if engine is not self.pending:
            return
        old, self.active, self.pending = self.active, engine, None
        self.active_path, on_ready = self.pending_path, self._on_ready
        self.pending_path = self._on_ready = self._on_failed = None
        if old is not None:
            self.tasks.run_in_background(old.close, lambda _: None, lambda _: None)
        if on_ready is not None:
            on_ready()
        self.model_ready.emit(engine.info)

    def _on_load_failed(self, engine, exc: Exception) -> None:
        on_failed = None
        if engine is self.pending:
            on_failed = self._on_failed
            self.pending = self.pending_path = self._on_ready = self._on_failed = None
        self.tasks.run_in_background(engine.close, lambda _: None, lambda _: None)
        error = exc if isinstance(exc, OutpostError) else \
            InternalError(f"The model could not be loaded: {exc!r}")
        self.load_failed.emit(error)
        if on_failed is not None:
            on_failed(error)

    def shutdown(self) -> None:
        for engine in (self.pending, self.active):
            if engine is not None:
                engine.close()
        self.pending = self.active = None
