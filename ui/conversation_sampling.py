"""The Sampling dock follows the current conversation: it shows that conversation's knobs and
system prompt, saves edits with it, and greys out what the engine that will answer does not
honour."""
from __future__ import annotations

from typing import Callable, Mapping

from PySide6.QtCore import QObject, Signal, Slot

from app.config.provider_facts import refused_params
from app.config.providers import KIND_LABELS, ProviderRegistry
from app.config.settings import Settings
from app.domain.errors import KeyInMessage, OutpostError
from app.domain.secrets_mask import find_secret
from app.storage.store import Store
from ui.route_state import RouteState
from ui.sampling_panel import SamplingPanel

_UNLOADED = object()


class ConversationSampling(QObject):
    """Binds ``panel`` to the controller's current conversation. ``show_route`` after the
    conversation, route or provider changed; ``reload`` when another conversation (or a new
    chat) is shown; ``save`` when the user changed the panel."""

    saved = Signal()  # the conversation's knobs were stored
    failed = Signal(object)  # an OutpostError from the store

    def __init__(self, panel: SamplingPanel, controller, store: Store, settings: Settings,
                 registry: ProviderRegistry, parent: QObject | None = None,
                 keys: Callable[[], Mapping[str, str]] = dict):
        """``controller``: the ``ui.chat_controller.ChatController`` (its current conversation
        and the chat service's knobs); ``keys``: the API keys known now -> whose they are (a
        system prompt holding one is not stored)."""
        super().__init__(parent)
        self.keys = keys
        self.panel, self.controller = panel, controller
        self.store, self.settings, self.registry = store, settings, registry
        self._loaded_for = _UNLOADED  # the conversation id whose knobs the panel shows
        self._state: RouteState | None = None

    def reload(self) -> None:
        """Another conversation (or a new chat) is shown: load its knobs."""
        self._loaded_for = _UNLOADED
        if self._state is not None:
            self.show_route(self._state)

    @Slot(object)
    def show_route(self, state: RouteState) -> None:
        self._state = state
        cid = self.controller.conversation_id
        if self._loaded_for != cid:
            self._load(cid)
        kind, label, model, refused = "local", "the local model", None, frozenset()
        if state.uses_cloud:
            try:
                config = self.registry.get(state.provider)
                kind = config.kind
                label = f"{state.provider} ({KIND_LABELS.get(kind, kind)} API)"
                model = self.controller.cloud_model or config.default_model
                refused = refused_params(config.base_url, model)
            except OutpostError:
                pass
        self.panel.set_engine_kind(kind, label, model, refused)

    @Slot(str, object)
    def model_changed(self, _target: str, _model) -> None:
        """Another cloud model was picked: what it is not sent goes grey."""
        if self._state is not None:
            self.show_route(self._state)

    def _load(self, cid: str | None) -> None:
        conversation = None
        if cid is not None:
            try:
                conversation = self.store.get_conversation(cid)
            except OutpostError:
                conversation = None
        knobs = self.controller.service.knobs(None, conversation)
        system = conversation.system_prompt if conversation is not None \
            else self.settings["system_prompt"]
        own = (conversation.sampling or {}) if conversation is not None else {}
        self.panel.load(knobs, system, own.get("response_format"), own.get("lora"))
        self.panel.load_test_time(own.get("test_time"))
        self._loaded_for = cid

    @Slot()
    def save(self) -> None:
        """Keep the knobs with the conversation (a new chat gets them when it is created). A
        system prompt holding a known API key is not stored (the knobs are) and the user is
        told at once, as ``outpost ask --system`` refuses it: it would be kept on disk and sent
        with every message."""
        cid = self.controller.conversation_id
        if cid is None:
            return
        panel = self.panel
        values = dict(panel.values(), response_format=panel.response_format(),
                      test_time=panel.test_time(), lora=panel.lora.records())
        system: str | None = panel.system_prompt.toPlainText()
        found = find_secret(system, self.keys()) if system else None
        if found is not None:
            system = None  # the one stored before stays
            self.failed.emit(KeyInMessage(
                f"The system prompt contains {found[1]}; remove the key from it (the system "
                "prompt was not saved).", found[1]))
        try:
            self.store.set_conversation_sampling(cid, values, system_prompt=system)
        except OutpostError as exc:
            self.failed.emit(exc)
        self.saved.emit()
