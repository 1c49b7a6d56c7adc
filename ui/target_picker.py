"""Choosing who answers in the cloud: the header's provider picker (or none: the local model
only) and, next to it, the chosen provider's model (listed from the provider, or typed)."""
from __future__ import annotations

from PySide6.QtCore import Qt, QTimer, Signal, Slot
from PySide6.QtWidgets import QComboBox, QWidget

from app.config.providers import ProviderRegistry
from app.config.settings import Settings
from app.domain.errors import OutpostError
from app.domain.routes import Route
from engines.base import EngineInfo
from ui.model_loader import ModelLoader
from ui.eliding_combo import ElidingComboBox
from ui.route_state import RouteState
from ui.setting_saver import save_setting
from ui.tasks import TaskRunner

LOCAL = "local"
_TOOLTIP = ("The cloud provider this chat may use (its route decides when), or none: the local "
            "model only")


def waiting_label(provider: str) -> str:
    """The closed box in Offline mode for a chosen provider elsewhere (the route picker
    says "Local model (offline mode)")."""
    return f"{provider} (after offline mode)"


class TargetPicker(ElidingComboBox):
    """"None (local model only)" and one entry per configured provider; the choice is
    remembered in the settings (``chat_target``). Every change of target, by the user or by
    ``refresh``, is announced with ``target_changed``."""

    target_changed = Signal(str)  # "local" or "provider:NAME"
    failed = Signal(object)  # an OutpostError (the registry could not be read, settings not saved)

    def __init__(self, registry: ProviderRegistry, settings: Settings, loader: ModelLoader,
                 parent: QWidget | None = None):
        super().__init__(parent)
        self.registry, self.settings, self.loader = registry, settings, loader
        self.setAccessibleName("Cloud provider")
        self.setToolTip(_TOOLTIP)
        self._labels: dict[str, str] = {}  # target -> its entry's words (Offline mode aside)
        self.setMinimumWidth(120)
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(14)
        self.currentIndexChanged.connect(self._on_index_changed)

    def target(self) -> str:
        return self.currentData() or LOCAL

    def refresh(self, select: str | None = None) -> None:
        """Fill the list again from the registry (keeping ``select``, else the current target)."""
        select = select or self.currentData() or LOCAL
        providers = []
        try:
            providers = self.registry.list()
        except OutpostError as exc:
            self.failed.emit(exc)
        self.blockSignals(True)  # one target_changed, at the end
        self.clear()
        local = self.loader.active.info.model if self.loader.active else "the bundled model"
        self._labels = {LOCAL: "None (local model only)"}
        for config in providers:
            self._labels[f"provider:{config.name}"] = \
                f"{config.name} · {config.default_model or 'choose a model'}"
        for target, label in self._labels.items():
            self.addItem(label, target)
        self.setItemData(0, f"The local model: {local}", Qt.ItemDataRole.ToolTipRole)
        self.setCurrentIndex(max(0, self.findData(select)))
        self.blockSignals(False)
        self.target_changed.emit(self.target())

    @Slot(object)
    def show_local_model(self, info: EngineInfo) -> None:
        self.setItemData(0, f"The local model: {info.model}", Qt.ItemDataRole.ToolTipRole)

    @Slot(object)
    def show_route(self, state: RouteState) -> None:
        # the chosen route's (Offline mode keeps only providers elsewhere from answering)
        self.setEnabled(Route(state.selected) is not Route.LOCAL)
        for index in range(self.count()):
            self.setItemText(index, self._labels.get(self.itemData(index), self.itemText(index)))
        # Offline mode with a provider elsewhere chosen: it stays chosen (another, on this
        # computer, may be picked), and the box says it waits rather than that it answers
        if state.offline and state.provider and not state.provider_here and \
                self.target() == f"provider:{state.provider}":
            self.setItemText(self.currentIndex(), waiting_label(state.provider))
            self.setToolTip(
                f"Offline mode is on: the local model answers now. {state.provider} is this "
                "chat's provider again once Offline mode is off (Ctrl+Shift+O); a provider on "
                "this computer answers at once.")
        else:
            self.setToolTip(_TOOLTIP)

    @Slot(int)
    def _on_index_changed(self, _index: int) -> None:
        target = self.target()
        self.target_changed.emit(target)
        try:
            save_setting(self.settings, "chat_target", target)
        except OutpostError as exc:
            self.failed.emit(exc)


class ModelPicker(QComboBox):
    """The chosen provider's model (editable: any model name may be typed). Hidden for the local
    model. Each provider's models are asked for once, and only when the conversation may use
    the cloud: Offline mode and Local only never open a connection. The asking waits for the
    event loop's next turn and looks at the route again then, so a route that changes at once
    (the window starts on a new chat, then opens the last one, Local only) asks nothing."""

    model_changed = Signal(str, object)  # the target, the model typed or picked (None: default)

    def __init__(self, registry: ProviderRegistry, cloud, tasks: TaskRunner,
                 parent: QWidget | None = None):
        """``cloud``: ``engines.registry.CloudTargets`` (its ``models(name)`` asks a provider)."""
        super().__init__(parent)
        self.registry, self.cloud, self.tasks = registry, cloud, tasks
        self.listed: dict[str, list[str]] = {}  # provider -> its models ([] while asking)
        self._target = LOCAL
        self._state: RouteState | None = None  # the latest route state shown
        self._asking_soon = False
        self._filling = False  # (``_fill``)
        self.setEditable(True)
        self.setAccessibleName("Cloud model")
        self.setMinimumWidth(120)
        self.setToolTip("The provider's model for this chat (type any model name)")
        self.hide()
        self.currentTextChanged.connect(self._on_text_changed)

    @Slot(str)
    def show_target(self, target: str) -> None:
        """Another target: its default model first, then those already listed."""
        self._target = target
        self.setVisible(target != LOCAL)
        if target == LOCAL:
            return
        name = target.split(":", 1)[1]
        try:
            default = self.registry.get(name).default_model
        except OutpostError:
            return
        self._fill(default, self.listed.get(name, []))

    @Slot(object)
    def show_route(self, state: RouteState) -> None:
        # the chosen route's (Offline mode keeps only providers elsewhere from answering)
        self.setEnabled(Route(state.selected) is not Route.LOCAL)
        self._state = state
        if state.cloud_possible and state.provider not in self.listed and \
                not self._asking_soon:
            self._asking_soon = True
            QTimer.singleShot(0, self._list_if_still_wanted)

    @Slot()
    def _list_if_still_wanted(self) -> None:
        self._asking_soon = False
        state = self._state
        if state is not None and state.cloud_possible and state.provider not in self.listed:
            self._list_models(state.provider)

    def _list_models(self, name: str) -> None:
        cloud = self.cloud
        self.listed[name] = []
        self.tasks.run_in_background(lambda: cloud.models(name),
                                     lambda models: self._on_models_listed(name, models),
                                     lambda exc: None)  # offline: typing a name still works

    def _on_models_listed(self, name: str, models: list[str]) -> None:
        self.listed[name] = list(models)
        if self._target == f"provider:{name}":
            self._fill(self.currentText(), models)

    def choose(self, model: str) -> None:
        """Show ``model`` as the chosen one (a conversation's remembered model)."""
        name = self._target.split(":", 1)[1] if self._target != LOCAL else ""
        self._fill(model, self.listed.get(name, []))
        self.model_changed.emit(self._target, model)

    def _fill(self, first: str, models: list[str]) -> None:
        # the text changes (the header makes room for it: ``ui.header_pickers``), but filling
        # is no choice of the user's: no ``model_changed``
        self._filling = True
        try:
            self.clear()
            self.addItems([first] + [m for m in models if m != first])
            self.setEditText(first)
        finally:
            self._filling = False

    @Slot(str)
    def _on_text_changed(self, model: str) -> None:
        if self._target != LOCAL and not self._filling:
            self.model_changed.emit(self._target, model.strip() or None)
