"""Who answers each conversation, remembered with it: the cloud provider and model picked, or
the local model by what it was loaded as (a library name or a file). Kept when a message is
sent, and shown again when the conversation is opened: the header's pickers switched to it, the
local model it remembers loaded (the model in use answers until it is ready, and says so when
the remembered one cannot be loaded). ``outpost ask --conversation`` reads the same columns."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from app.config.settings import Settings
from app.domain.errors import OutpostError
from app.storage.store import Store
from ui.model_loader import ModelLoader
from ui.model_menu import ModelMenu
from ui.target_picker import ModelPicker, TargetPicker


class RememberedTarget:
    """The window's pickers and local model, kept with and taken from the open conversation."""

    def __init__(self, store: Store, settings: Settings, loader: ModelLoader,
                 target_picker: TargetPicker, model_picker: ModelPicker, model_menu: ModelMenu,
                 inform: Callable[[str], None], failed: Callable[[OutpostError], None]):
        """``inform``: a sentence for the banner; ``failed``: an error for it."""
        self.store, self.settings, self.loader = store, settings, loader
        self.target_picker, self.model_picker = target_picker, model_picker
        self.model_menu = model_menu
        self._inform, self._failed = inform, failed
        # the user chose a local model (Model menu) since the open chat was opened: it
        # remembers that one with its next message (``keep``)
        self.local_model_picked = False

    def local_model_chosen(self, _path: str) -> None:
        self.local_model_picked = True  # the open chat remembers it with its next message

    def keep(self, conversation_id: str | None) -> None:
        """The conversation keeps who answers it, so reopening it (or `outpost ask
        --conversation`) sends there again. A chat that remembers a local model keeps it
        until the user picks another (Model menu) while it is open: a remembered model that
        could not be loaded, with another answering meanwhile, is not forgotten."""
        if conversation_id is None:
            return
        target = self.target_picker.target()
        model = self.model_picker.currentText().strip() if target != "local" else None
        try:
            if target == "local":
                was = self.store.get_conversation(conversation_id)
                model = was.target_model if was.target == "local" and \
                    not self.local_model_picked else self.local_model()
            self.store.set_target(conversation_id, target, model)
        except OutpostError as exc:
            self._failed(exc)

    def local_model(self) -> str | None:
        """The local model the window uses (loading, else loaded) as a conversation remembers
        it: what the load was given (a library name or a GGUF file; the ``model_path`` setting
        when it was given none), the bundled model by its file's name; None: none."""
        loader = self.loader
        engine, path = (loader.pending, loader.pending_path) if loader.pending is not None \
            else (loader.active, loader.active_path)
        if path is None:
            path = self.settings["model_path"]
        if not path and engine is not None:
            path = engine.info.model  # (the library finds a model by its file's name too)
        return path or None

    def is_local_model(self, model: str) -> bool:
        """Whether ``model`` (a conversation's) is the local model loading or in use: given
        so, or the same file name (``gem``, ``gem.gguf``, ``/models/gem.gguf``: one model, as
        the library holds one model per file name)."""
        if model == self.local_model():
            return True
        engine = self.loader.pending or self.loader.active
        if engine is None:
            return False
        loaded, wanted = engine.info.model, Path(model).name
        return wanted in (loaded, Path(loaded).stem)

    def follow_local_model(self, model: str) -> None:
        """A chat that remembers the local model ``model``: load it, as choosing it does (the
        model in use answers until it is ready); one that cannot be loaded (its file gone)
        leaves the model in use, and the window says which answers instead."""
        if self.is_local_model(model):
            return

        def failed(error: OutpostError) -> None:
            engine = self.loader.pending or self.loader.active
            instead = f"{engine.info.model} answers it instead" if engine is not None else \
                "no local model is loaded to answer it"
            self._inform(f"This chat remembers the local model {model}, which cannot be "
                         f"loaded ({str(error).rstrip('.')}): {instead}.")

        self.model_menu.follow(model, failed)

    def show(self, conversation_id: str) -> None:
        """Switch the pickers to the conversation's remembered provider and model, and the
        local model to the one it remembers."""
        self.local_model_picked = False
        try:
            conversation = self.store.get_conversation(conversation_id)
        except OutpostError:
            return
        target = conversation.target
        if not target or self.target_picker.findData(target) < 0:
            return  # never sent, or its provider was removed: keep the current choice
        if target != self.target_picker.target():
            self.target_picker.setCurrentIndex(self.target_picker.findData(target))
        if conversation.target_model and target != "local":
            self.model_picker.choose(conversation.target_model)
        elif conversation.target_model:
            self.follow_local_model(conversation.target_model)
