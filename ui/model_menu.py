"""The local model in the window: the Model menu (the Models manager, open a GGUF file, the
bundled model, the Providers dialog) and the status bar's model and state labels."""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Callable

from PySide6.QtCore import QObject, Signal, Slot
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QFileDialog, QMenu, QWidget

from app.config.settings import Settings
from app.domain.errors import OutpostError
from engines.base import EngineInfo
from engines.model_library import ModelLibrary
from ui.chat_controller import IDLE, PREPARING, STOPPING, WAITING
from ui.elided_label import ElidedLabel
from ui.model_loader import ModelLoader
from ui.setting_saver import save_setting
from ui.window_state import remember_folder, start_folder


class ModelMenu(QMenu):
    """Model ▸ Open model file… / Use the bundled model / Providers…. Switching the local model
    is handed to the loader, and remembered in the settings (``model_path``) once it loaded."""

    providers_changed = Signal()  # the Providers dialog added, changed or removed one
    model_chosen = Signal(str)  # the user chose a local model (what ``choose_model`` was given)
    failed = Signal(object)  # an OutpostError: the setting could not be saved

    def __init__(self, settings: Settings, loader: ModelLoader,
                 providers_dialog_factory: Callable[[QWidget], QWidget], parent: QWidget,
                 models_dialog_factory: Callable[[QWidget], QWidget] | None = None):
        """``providers_dialog_factory(parent)`` builds the ``ui.providers_dialog`` dialog,
        ``models_dialog_factory(parent)`` the ``ui.model_manager`` one."""
        super().__init__("&Model", parent)
        self.settings, self.loader = settings, loader
        self.providers_dialog_factory = providers_dialog_factory
        self.models_dialog_factory = models_dialog_factory
        self.models_dialog = None
        self.models_action = QAction("&Models…", self)
        self.models_action.setShortcut(QKeySequence("Ctrl+Shift+M"))
        self.models_action.setEnabled(models_dialog_factory is not None)
        self.addAction(self.models_action)
        self.models_action.triggered.connect(self.open_models)
        self.open_model_action = QAction("&Open model file…", self)
        self.open_model_action.setShortcut(QKeySequence("Ctrl+O"))
        self.addAction(self.open_model_action)
        self.bundled_model_action = QAction("Use the &bundled model (SmolLM2-135M)", self)
        self.addAction(self.bundled_model_action)
        self.addSeparator()
        self.providers_action = QAction("&Providers…", self)
        self.addAction(self.providers_action)
        self.open_model_action.triggered.connect(self._on_open_model)
        self.bundled_model_action.triggered.connect(self._on_use_bundled)
        self.providers_action.triggered.connect(self.open_providers)

    def choose_model(self, path: str) -> None:
        """Switch the local model (a library name or a GGUF file; empty: the bundled one). The
        choice becomes the setting only once that model is loaded: a file the header reader
        refuses, or one llama.cpp cannot load, leaves the model in use and the setting as they
        were (the window and ``outpost ask`` go on with the model that works)."""
        self.model_chosen.emit(path)
        self.loader.load(path, on_ready=partial(self._remember, path))

    def follow(self, path: str, on_failed: Callable[[OutpostError], None]) -> None:
        """Switch to the local model a conversation remembers, as ``choose_model`` does, but
        as no choice of the user's (no ``model_chosen``); ``on_failed(error)`` when it cannot
        be loaded (the model in use stays)."""
        self.loader.load(path, on_ready=partial(self._remember, path), on_failed=on_failed)

    def _remember(self, path: str) -> None:
        try:
            save_setting(self.settings, "model_path", path)
        except OutpostError as exc:
            self.failed.emit(exc)

    @Slot(str)
    def show_chat_state(self, state: str) -> None:
        """The model may be switched only between replies."""
        self.open_model_action.setEnabled(state == IDLE)
        self.bundled_model_action.setEnabled(state == IDLE)

    @Slot()
    def open_models(self):
        """The model manager (one, not modal: downloads go on while the user chats)."""
        if self.models_dialog is None and self.models_dialog_factory is not None:
            dialog = self.models_dialog_factory(self.parentWidget())
            dialog.use_requested.connect(self.choose_model)
            dialog.load_settings_changed.connect(self.reload_if_active)
            self.loader.model_ready.connect(lambda _info: dialog.refresh())
            self.models_dialog = dialog
        if self.models_dialog is not None:
            self.models_dialog.show()
            self.models_dialog.raise_()
        return self.models_dialog

    @Slot(str)
    def reload_if_active(self, path: str) -> None:
        """New load settings for the model at ``path``: when it is the one in use, load it again
        in the background; the loaded one answers until the new one is ready (``ModelLoader``).
        By file, not by name: a reference's name need not be its file's."""
        active = self.loader.active or self.loader.pending
        if active is not None and active.info.model == Path(path).name:
            self.loader.reload()

    @Slot()
    def open_providers(self) -> None:
        dialog = self.providers_dialog_factory(self.parentWidget())
        dialog.providers_changed.connect(self.providers_changed)
        dialog.exec()

    @Slot()
    def _on_open_model(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self.parentWidget(), "Open a GGUF model",
            str(start_folder("model", self.models_folder)), "GGUF models (*.gguf);;All files (*)")
        if path:
            remember_folder("model", path)
            self.choose_model(path)

    def models_folder(self) -> Path:
        """The model library's folder (setting ``models_dir``), where models are looked for."""
        return ModelLibrary.from_settings(self.settings).models_dir

    @Slot()
    def _on_use_bundled(self) -> None:
        self.choose_model("")


class ModelStatus(QObject):
    """The status bar's ``model_label`` (which local model) and ``state_label`` (loading, ready,
    waiting, generating), from the loader's signals and the chat's state."""

    def __init__(self, loader: ModelLoader, parent: QObject | None = None):
        super().__init__(parent)
        self.loader = loader
        self.model_label = ElidedLabel("Local model: —")  # a long file name may be cut
        self.state_label = ElidedLabel("")  # "Loading …", "Ready (…)": cut when narrow
        self._busy = False

    @Slot(str)
    def show_chat_state(self, state: str) -> None:
        self._busy = state != IDLE
        texts = {WAITING: "Waiting for the model to load…", STOPPING: "Stopping…",
                 PREPARING: "Counting tokens…"}
        if state in texts:
            self.state_label.setText(texts[state])
        elif state == IDLE:
            self.state_label.setText("Ready" if self.loader.active else self.state_label.text())
        else:
            self.state_label.setText("Generating…")

    @Slot(str)
    def show_loading(self, name: str) -> None:
        active = self.loader.active
        if active is not None:  # a switch or a reload: the loaded model answers meanwhile
            self.state_label.setText(f"Loading {name}… ({active.info.model} answers until "
                                     "it is ready)")
            return
        self.model_label.setText(f"Local model: {name}")
        self.state_label.setText("Loading model…")

    @Slot(object)
    def show_model(self, info: EngineInfo) -> None:
        self.model_label.setText(f"Local model: {info.model}" +
                                 (f" · {info.placement}" if info.placement else ""))
        self.model_label.setToolTip(f"{info.model}\n{info.detail}")
        if not self._busy:  # (where the layers are is said beside the model's name already)
            rest = info.detail.removeprefix(info.placement).lstrip(", ") if info.placement \
                else info.detail
            self.state_label.setText(f"Ready ({rest})" if rest else "Ready")

    @Slot(object)
    def show_load_failed(self, _error: object) -> None:
        active = self.loader.active
        self.state_label.setText("Model failed to load" if active is None
                                 else f"Still using {active.info.model}")
