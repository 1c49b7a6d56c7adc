"""The main window's routing behaviour (a mixin of ``ui.main_window.MainWindow``): the route
picker and default route, Offline mode, the links indicator, the outbox button and panel, the
usage view, and the composer's meter."""
from __future__ import annotations

from PySide6.QtCore import Slot
from PySide6.QtGui import QAction

from app.errors import OutpostError
from app.router import Route


class WindowRoutes:
    """Needs the window's pickers, labels, banner, composer, controller and settings."""

    def _measure_draft(self, draft: str):
        return self.controller.prepare_measure(draft)

    def update_route_display(self) -> None:
        """The route picker, the status bar's route and links, and the composer, from the
        current conversation's route, Offline mode and the chosen target."""
        c = self.controller
        offline = bool(self.settings["offline_mode"])
        own = c.conversation_route()
        route = Route(c.effective_route())
        self.route_picker.blockSignals(True)
        self.route_picker.setCurrentIndex(self.route_picker.findData(
            own or self.settings["default_route"]))
        self.route_picker.blockSignals(False)
        self.route_picker.setEnabled(not offline)
        provider = c.provider
        cloud_possible = route is not Route.LOCAL and provider is not None
        self.target_picker.setEnabled(route is not Route.LOCAL)
        self.model_picker.setEnabled(route is not Route.LOCAL)
        local_style = "color:#1a7f37; font-weight:600; padding:0 8px;"
        cloud_style = "color:#0969da; font-weight:600; padding:0 8px;"
        if route is Route.CLOUD and provider is None:
            self.route_label.setText("⚠ Cloud only: choose a provider")
            self.route_label.setToolTip("This conversation is Cloud only but no cloud provider "
                                        "is chosen: pick one next to the Route, or switch the "
                                        "route to Auto or Local only.")
            self.route_label.setStyleSheet("color:#b35900; font-weight:600; padding:0 8px;")
            placeholder = "Choose a cloud provider first…"
            empty = "This conversation is Cloud only: choose a cloud provider above."
        elif offline or not cloud_possible:
            why = ("Offline mode" if offline else "Local only" if route is Route.LOCAL
                   else "Local model")
            self.route_label.setText(f"● {why}")
            self.route_label.setToolTip("Every reply is generated on this computer; nothing is "
                                        "sent over the network.")
            self.route_label.setStyleSheet(local_style)
            placeholder = "Message the local model…"
            empty = ("Start a conversation: type below and press Enter.\n"
                     "Everything stays on this computer with the local model.")
        elif route is Route.CLOUD:
            self.route_label.setText(f"☁ Cloud only · {provider}")
            self.route_label.setToolTip("Messages of this chat are sent to the provider only; "
                                        "when it cannot be reached they wait in the outbox.")
            self.route_label.setStyleSheet(cloud_style)
            placeholder = f"Message {provider}…"
            empty = (f"Start a conversation: type below and press Enter.\nMessages go to "
                     f"{provider} only; while it cannot be reached they wait in the outbox.")
        else:
            self.route_label.setText(f"☁ Auto · {provider}")
            self.route_label.setToolTip(
                f"Auto: messages go to {provider}; when it cannot be reached, is slower than "
                f"{self.settings['hedge_after_s']:g} s to start, or breaks off, the local model "
                "answers or continues (the reply says so).")
            self.route_label.setStyleSheet(cloud_style)
            placeholder = f"Message {provider}…"
            empty = (f"Start a conversation: type below and press Enter.\nMessages go to "
                     f"{provider}; the local model steps in when it cannot answer.")
        self.view.set_empty_text(empty)
        if getattr(self, "meter", None) is not None:
            self.meter.refresh()
        self.composer.edit.setPlaceholderText(
            f"{placeholder}  (Enter sends, Shift+Enter: new line)")
        self.composer.edit.viewport().update()  # the placeholder is painted, not a widget
        self.composer.when_online.setVisible(cloud_possible and not offline)
        self.composer.when_online.setEnabled(route is Route.AUTO)
        self.composer.when_online.blockSignals(True)
        self.composer.when_online.setChecked(route is Route.CLOUD or c.send_when_online)
        self.composer.when_online.blockSignals(False)
        self._list_models_if_allowed()
        self.refresh_links()
        self.sync_sampling()

    def refresh_links(self) -> None:
        if self.links is not None:
            self.links.show_providers(self.monitor.providers() if self.monitor is not None
                                      else [])

    @Slot(int)
    def _on_route_picked(self, _index: int) -> None:
        self.controller.set_route(self.route_picker.currentData())

    @Slot(str)
    def _on_route_changed(self, _route: str) -> None:
        self.update_route_display()

    @Slot(QAction)
    def _on_default_route_picked(self, action: QAction) -> None:
        self.settings.set("default_route", action.data())
        try:
            self.settings.save()
        except OSError as exc:
            self._on_error("storage", f"The settings could not be saved: {exc}.")
        self.update_route_display()

    @Slot(bool)
    def _on_offline_toggled(self, on: bool) -> None:
        self.offline_button.blockSignals(True)
        self.offline_button.setChecked(on)
        self.offline_button.blockSignals(False)
        self.offline_button.setText("● Offline mode: on" if on else "Offline mode: off")
        self.offline_button.setStyleSheet("color:#1a7f37; font-weight:600;" if on else "")
        if bool(self.settings["offline_mode"]) != on:
            self.settings.set("offline_mode", on)
            try:
                self.settings.save()
            except OSError as exc:
                self._on_error("storage", f"The settings could not be saved: {exc}.")
        self.update_route_display()
        self.offline_mode_changed.emit()

    @Slot(bool)
    def _on_when_online_toggled(self, on: bool) -> None:
        if Route(self.controller.effective_route()) is Route.CLOUD:
            return
        self.controller.send_when_online = on
        self.settings.set("send_when_online", on)
        try:
            self.settings.save()
        except OSError as exc:
            self._on_error("storage", f"The settings could not be saved: {exc}.")

    @Slot()
    def refresh_outbox(self) -> None:
        if self.outbox is None:
            return
        try:
            pending = self.outbox.pending(self.profile_name)
        except OutpostError as exc:
            self._on_error(exc.kind, str(exc))
            return
        sending = any(item.state.value == "sending" for item in pending)
        self.outbox_button.setText(f"Outbox: {len(pending)} {'sending…' if sending else 'waiting'}")
        self.outbox_button.setVisible(bool(pending))
        if self.outbox_panel is not None:
            self.outbox_panel.refresh()
        self.refresh_links()

    @Slot()
    def open_usage(self) -> None:
        service = self.controller.service
        if service.ledger is None or service.quotas is None:
            return
        from ui.usage_dialog import UsageDialog

        try:
            self.usage_dialog = UsageDialog(service.ledger, service.quotas.book,
                                            service.profile, self)
        except OutpostError as exc:
            self._on_error(exc.kind, str(exc))
            return
        self.usage_dialog.show()

    @Slot()
    def open_outbox(self) -> None:
        if self.outbox_panel_factory is None:
            return
        if self.outbox_panel is None:
            self.outbox_panel = self.outbox_panel_factory(self)
            if self.monitor is not None:
                self.outbox_panel.send_requested.connect(
                    lambda: self.monitor.send_now(only_online=False))
        self.outbox_panel.refresh()
        self.outbox_panel.show()
        self.outbox_panel.raise_()

    def outbox_sent(self, report) -> None:
        """The monitor sent queued messages: tell the user, show the answers."""
        for item, message in report.sent:
            try:
                conversation = self.store.get_conversation(item.conversation_id)
            except OutpostError:
                conversation = None
            if conversation is not None and conversation.profile not in (None,
                                                                         self.profile_name):
                continue  # another profile's message went out: theirs to see
            title = conversation.title if conversation else "a deleted conversation"
            self.banner.show_info(f"{item.provider} answered your queued message in “{title}”.")
            if item.conversation_id == self.controller.conversation_id and \
                    not self.controller.busy:
                self.controller.reload_conversation()
        for item, error in report.failed:
            self.banner.show_error(f"The queued message (outbox item {item.id}) could not be "
                                   f"sent to {item.provider}: {error}")
        self.refresh_sidebar()
        self.refresh_outbox()

