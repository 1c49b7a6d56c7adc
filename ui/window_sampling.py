"""The main window's sampling behaviour (a mixin of ``ui.main_window.MainWindow``): the Sampling
dock shows the current conversation's knobs and system prompt, saves edits with it, and greys
out what the engine that will answer does not honour."""
from __future__ import annotations

from PySide6.QtCore import Slot

from app.errors import OutpostError

_UNLOADED = object()


class WindowSampling:
    """Needs ``self.sampling`` (a ``ui.sampling_panel.SamplingPanel``), the controller, the
    store, the registry and the settings."""

    _sampling_for = _UNLOADED

    def reload_sampling(self) -> None:
        """Another conversation (or a new chat) is shown: load its knobs."""
        self._sampling_for = _UNLOADED
        self.sync_sampling()

    def sync_sampling(self) -> None:
        """After the conversation, route or provider changed: the panel follows."""
        if getattr(self, "sampling", None) is None:
            return
        c = self.controller
        if self._sampling_for != c.conversation_id:
            conversation = None
            if c.conversation_id is not None:
                try:
                    conversation = self.store.get_conversation(c.conversation_id)
                except OutpostError:
                    conversation = None
            knobs = c.service.knobs(None, conversation)
            system = conversation.system_prompt if conversation is not None \
                else self.settings["system_prompt"]
            own = (conversation.sampling or {}) if conversation is not None else {}
            self.sampling.load(knobs, system, own.get("response_format"))
            self.sampling.load_test_time(own.get("test_time"))
            self._sampling_for = c.conversation_id
        kind, label = "local", "the local model"
        if c.effective_route() != "local" and c.provider is not None and \
                not self.settings["offline_mode"]:
            try:
                config = self.registry.get(c.provider)
                kind, label = config.kind, f"{c.provider} ({config.kind} API)"
            except (OutpostError, AttributeError):
                pass
        self.sampling.set_engine_kind(kind, label)

    @Slot(str)
    def open_details(self, message_id: str) -> None:
        from ui.message_details import MessageDetails

        try:
            message = self.store.get_message(message_id)
        except OutpostError as exc:
            self._on_error(exc.kind, str(exc))
            return
        self.details_dialog = MessageDetails(message, self)
        self.details_dialog.show()

    @Slot()
    def _on_sampling_changed(self) -> None:
        """Keep the knobs with the conversation (a new chat gets them when it is created)."""
        cid = self.controller.conversation_id
        if cid is None:
            return
        values = dict(self.sampling.values(), response_format=self.sampling.response_format(),
                      test_time=self.sampling.test_time())
        try:
            self.store.set_conversation_sampling(
                cid, values, system_prompt=self.sampling.system_prompt.toPlainText())
        except OutpostError as exc:
            self._on_error(exc.kind, str(exc))
        if getattr(self, "meter", None) is not None:
            self.meter.refresh()
