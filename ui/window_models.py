"""The main window's "who answers" behaviour (a mixin of ``ui.main_window.MainWindow``): the
cloud provider picker and its models, the Providers dialog, and the local model file (loading,
switching, the bundled one)."""
from __future__ import annotations

from PySide6.QtCore import Qt, Slot
from PySide6.QtWidgets import QFileDialog

from app.errors import OutpostError
from app.router import Route
from engines.base import EngineInfo

class WindowModels:
    """Needs the window's pickers, labels, banner, loader, registry, tasks and settings."""

    def refresh_targets(self, select: str | None = None) -> None:
        select = select or self.target_picker.currentData() or "local"
        self.target_picker.blockSignals(True)
        self.target_picker.clear()
        local = self.loader.active.info.model if self.loader.active else "the bundled model"
        self.target_picker.addItem("None (local model only)", "local")
        self.target_picker.setItemData(0, f"The local model: {local}",
                                       Qt.ItemDataRole.ToolTipRole)
        providers = []
        if self.registry is not None:
            try:
                providers = self.registry.list()
            except OutpostError as exc:
                self._on_error(exc.kind, str(exc))
        for config in providers:
            self.target_picker.addItem(f"{config.name} · {config.default_model or 'choose a model'}",
                                       f"provider:{config.name}")
        index = max(0, self.target_picker.findData(select))
        self.target_picker.setCurrentIndex(index)
        self.target_picker.blockSignals(False)
        self._apply_target(self.target_picker.currentData())

    @Slot(int)
    def _on_target_changed(self, _index: int) -> None:
        target = self.target_picker.currentData() or "local"
        self._apply_target(target)
        self.settings.set("chat_target", target)
        try:
            self.settings.save()
        except OSError as exc:
            self._on_error("storage", f"The settings could not be saved: {exc}.")

    def _apply_target(self, target: str) -> None:
        self.controller.set_target(target)
        self._fill_model_picker(target)
        self.update_route_display()

    def _fill_model_picker(self, target: str) -> None:
        self.model_picker.setVisible(target != "local")
        if target == "local" or self.registry is None:
            return
        name = target.split(":", 1)[1]
        try:
            default = self.registry.get(name).default_model
        except OutpostError:
            return
        self.model_picker.blockSignals(True)
        self.model_picker.clear()
        models = self._models_cache.get(name, [])
        self.model_picker.addItems([default] + [m for m in models if m != default])
        self.model_picker.setEditText(default)
        self.model_picker.blockSignals(False)
        self._list_models_if_allowed()

    def _list_models_if_allowed(self) -> None:
        """Ask the chosen provider for its models, once, and only when this conversation may
        use the cloud: Offline mode and Local only never open a connection."""
        c = self.controller
        name = c.provider
        if name is None or Route(c.effective_route()) is Route.LOCAL:
            return
        if name not in self._models_cache and self.tasks is not None:
            cloud = self.controller.cloud
            self._models_cache[name] = []
            self.tasks.run_in_background(lambda: cloud.models(name),
                                         lambda models: self._on_models_listed(name, models),
                                         lambda exc: None)  # offline: typing a name still works

    def _on_models_listed(self, name: str, models: list[str]) -> None:
        self._models_cache[name] = list(models)
        if self.controller.target == f"provider:{name}":
            current = self.model_picker.currentText()
            self.model_picker.blockSignals(True)
            self.model_picker.clear()
            self.model_picker.addItems([current] + [m for m in models if m != current])
            self.model_picker.setEditText(current)
            self.model_picker.blockSignals(False)

    @Slot(str)
    def _on_model_changed(self, model: str) -> None:
        if self.controller.target != "local":
            self.controller.set_target(self.controller.target, model.strip() or None)

    @Slot()
    def open_providers(self) -> None:
        if self.providers_dialog_factory is None:
            return
        dialog = self.providers_dialog_factory(self)
        dialog.providers_changed.connect(self._on_providers_changed)
        dialog.exec()

    @Slot()
    def _on_providers_changed(self) -> None:
        self.refresh_targets()

    @Slot(str)
    def _on_loading_started(self, name: str) -> None:
        self.model_label.setText(f"Local model: {name}")
        self.state_label.setText("Loading model…")

    @Slot(object)
    def _on_model_ready(self, info: EngineInfo) -> None:
        self.target_picker.setItemData(0, f"The local model: {info.model}",
                                       Qt.ItemDataRole.ToolTipRole)
        self.model_label.setText(f"Local model: {info.model}")
        self.model_label.setToolTip(info.detail)
        if not self.controller.busy:
            self.state_label.setText(f"Ready ({info.detail})")

    @Slot(str)
    def _on_load_failed(self, message: str) -> None:
        active = self.loader.active
        self.state_label.setText("Model failed to load" if active is None
                                 else f"Still using {active.info.model}")
        self.banner.show_error(message)

    @Slot()
    def _on_open_model(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a GGUF model", "",
                                              "GGUF models (*.gguf);;All files (*)")
        if path:
            self.choose_model(path)

    @Slot()
    def _on_use_bundled(self) -> None:
        self.choose_model("")

    def choose_model(self, path: str) -> None:
        """Switch the local model (empty: the bundled one) and remember the choice."""
        self.settings.set("model_path", path)
        try:
            self.settings.save()
        except OSError as exc:
            self._on_error("storage", f"The settings could not be saved: {exc}.")
        self.loader.load(path or None)

