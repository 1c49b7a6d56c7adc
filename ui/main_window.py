"""The main window: it lays out widgets that own their state and connects them, in one place
(``MainWindow._connect_signals``). What each piece does lives in its own module:

    route_picker.py          the conversation's route, and the default route for new chats
    route_badge.py           the status bar's "who answers" badge
    route_state.py           the route as one value, handed to every widget that shows it
    target_picker.py         the cloud provider (or none) and its model
    offline_switch.py        Offline mode (menu entry and status bar button)
    outbox_button.py         the outbox count, its panel, news of queued messages sent
    profile_button.py        who is signed in, switching profile, the Profiles dialog
    model_menu.py            the Model menu and the status bar's model and state labels
    conversation_sampling.py the Sampling dock following the current conversation
    reply_metrics.py         the last reply's speed
    remembered_target.py     who answers each conversation, kept with it and shown again

The window itself keeps the conversation list (sidebar, title) and the one place that shows an
error (``_on_error``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QAbstractScrollArea,
    QDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QSizePolicy,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app.chat.connectivity import Connectivity
from app.config.providers import ProviderRegistry
from app.config.settings import Settings
from app.domain.errors import OutpostError, UsageError
from app.domain.messages import Role
from app.domain.routes import Route
from app.domain.wording import counted
from app.storage.backup_erasure import backups_hold, held_in_backups
from app.storage.outbox import Outbox
from app.storage.profiles import Profile, Profiles
from app.storage.store import Store
from ui.backup_eraser import BackupEraser
from ui.chat_controller import IDLE, ChatController
from ui.composer import Composer
from ui.confirm import confirm, confirm_with_option
from ui.connectivity_indicator import ConnectivityIndicator
from ui.conversation_sampling import ConversationSampling
from ui.conversation_view import ConversationView
from ui.conversation_watch import ConversationWatch
from ui.elided_label import ElidedLabel
from ui.errors import ErrorBanner, ErrorPresenter
from ui.header_pickers import HeaderPickers
from ui.help_menu import HelpMenu
from ui.message_details import MessageDetails
from ui.model_loader import ModelLoader
from ui.model_menu import ModelMenu, ModelStatus
from ui.offline_switch import OfflineSwitch
from ui.outbox_button import OutboxButton
from ui.outbox_monitor import OutboxMonitor
from ui.profile_button import ProfileButton
from ui.remembered_target import RememberedTarget
from ui.reply_metrics import ReplyMetrics
from ui.route_badge import RouteBadge
from ui.route_picker import DefaultRouteMenu, RoutePicker
from ui.route_state import RouteState
from ui.sampling_panel import SamplingPanel
from ui.sampling_room import SamplingRoom
from ui.search_dialog import SearchDialog
from ui.setting_saver import save_setting
from ui.settings_dialog import SettingsDialog
from ui.sidebar import Sidebar
from ui.status_note import StatusNote
from ui.target_picker import ModelPicker, TargetPicker
from ui.tasks import TaskRunner
from ui.token_meter import TokenMeter
from ui.transfer_menu import TransferMenu
from ui.usage_dialog import UsageDialog
from ui.window_keys import WindowKeys
from ui.window_state import Draft, GeometryKeeper, WindowState


@dataclass(frozen=True)
class WindowServices:
    """Everything the window uses, built once by the composition root (``ui.app.OutpostApp``)."""

    store: Store
    settings: Settings
    loader: ModelLoader
    registry: ProviderRegistry
    tasks: TaskRunner
    connectivity: Connectivity
    outbox: Outbox
    monitor: OutboxMonitor
    profiles: Profiles
    profile: Profile  # who is signed in when the window opens
    providers_dialog_factory: Callable[[QWidget], QDialog]  # (parent) -> ProvidersDialog
    # (parent, profile_of) -> OutboxPanel; profile_of() is the signed-in profile's name
    outbox_panel_factory: Callable[[QWidget, Callable[[], str | None]], QDialog]
    # (parent) -> ui.model_manager.ModelManager; None: no Models… item (tests without one)
    models_dialog_factory: Callable[[QWidget], QDialog] | None = None
    # per setting name, what holds for it on this machine (shown after its description)
    setting_notes: Callable[[], dict[str, str]] = lambda: {}




class MainWindow(QMainWindow):
    offline_mode_changed = Signal()  # after the setting changed (read it from settings)
    theme_changed = Signal(str)  # the theme setting changed (system / light / dark)
    # the current conversation's route as shown (a RouteState): every widget showing part of
    # it is connected in _connect_signals
    route_state_changed = Signal(object)

    def __init__(self, services: WindowServices,
                 controller_factory: Callable[[ConversationView], ChatController]):
        """``controller_factory(view)`` builds the chat controller that renders into ``view``."""
        super().__init__()
        self.store = services.store
        self.settings = services.settings
        self.registry = services.registry  # the configured providers (Regenerate with …)
        self.loader = services.loader
        self.monitor = services.monitor
        self.setting_notes = services.setting_notes
        self.usage_dialog = None
        self.details_dialog = None
        self.setWindowTitle("Outpost")
        self.resize(1380, 760)
        self.window_state = WindowState()

        # -- the conversation: header, view, composer ------------------------------------------
        self.sidebar = Sidebar()
        self.banner = ErrorBanner()
        self.errors = ErrorPresenter(self.banner)  # the one place errors become words
        self.backup_eraser = BackupEraser(self.store, services.tasks, self.errors)
        self.title_label = ElidedLabel("New chat")
        self.title_label.setStyleSheet("font-size:15px; font-weight:600; padding:8px 16px 4px;")
        # a long title must not push the pickers (and the sidebar) around
        self.title_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.view = ConversationView()
        self.keys = WindowKeys()  # the keys not to show or keep, whatever the route
        self.sidebar.mask = self.view.mask = self.keys.mask
        self.composer = Composer()
        # what is being typed survives a restart, per profile
        self.draft = Draft(self.composer.edit, self.window_state, services.profile.name, self,
                           mask=self.keys.mask)
        self.controller: ChatController = controller_factory(self.view)
        self.route_picker = RoutePicker()
        self.target_picker = TargetPicker(services.registry, self.settings, self.loader)
        self.model_picker = ModelPicker(services.registry, self.controller.cloud, services.tasks)
        # the title on its own line (never squeezed out by the pickers in a narrow window),
        # who answers on the next, or the next two when one is too narrow for their texts
        header = QVBoxLayout()
        header.setContentsMargins(0, 0, 12, 4)
        header.setSpacing(0)
        header.addWidget(self.title_label)
        route_label, provider_label = QLabel("Route"), QLabel("Cloud provider")
        route_label.setBuddy(self.route_picker)
        provider_label.setBuddy(self.target_picker)
        self.header_pickers = HeaderPickers(
            (route_label, self.route_picker),
            (provider_label, self.target_picker, self.model_picker))
        header.addWidget(self.header_pickers)
        chat = QWidget()
        chat_layout = QVBoxLayout(chat)
        chat_layout.setContentsMargins(0, 0, 0, 0)
        chat_layout.setSpacing(0)
        chat_layout.addWidget(self.banner)
        chat_layout.addLayout(header)
        chat_layout.addWidget(self.view, 1)
        chat_layout.addWidget(self.composer)
        self.splitter = splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(self.sidebar)
        splitter.addWidget(chat)
        splitter.setStretchFactor(1, 1)
        self.sidebar.setMinimumWidth(150)  # titles stay readable in a narrow window
        splitter.setSizes([260, 840])
        self.setCentralWidget(splitter)
        self.meter = TokenMeter(services.tasks, self.controller.prepare_measure)
        self.composer.set_meter(self.meter)

        # -- the status bar --------------------------------------------------------------------
        self.route_label = RouteBadge()
        self.model_status = ModelStatus(self.loader, self)
        self.model_label = self.model_status.model_label
        self.state_label = self.model_status.state_label
        self.metrics_label = ReplyMetrics()
        self.offline = OfflineSwitch(self.settings, self)
        self.offline_action = self.offline.action
        self.offline_button = self.offline.button
        self.outbox_button = OutboxButton(services.outbox, self.store,
                                          services.outbox_panel_factory)
        self.links = ConnectivityIndicator(services.connectivity)
        self._connectivity = services.connectivity
        self._meter_link: tuple | None = None  # (provider, its link state) the meter reckoned
        self.links.hide()
        self.profile_button = ProfileButton(services.profiles, services.profile, self.settings,
                                            self.controller.service.quotas)
        status = self.statusBar()
        # the window is no narrower than the status bar's least (Qt's status bar says its width
        # may be ignored: its buttons were cut at the narrowest window); its texts that vary end
        # in "…" instead, so a new text never widens the window
        policy = status.sizePolicy()
        policy.setHorizontalPolicy(QSizePolicy.Policy.Preferred)
        status.setSizePolicy(policy)
        status.addWidget(self.route_label)
        status.addWidget(self.model_label)
        status.addWidget(self.state_label, 1)
        # passing notes beside them (Qt's showMessage hid the route, model and state)
        self.status_note = StatusNote()
        status.addWidget(self.status_note)
        status.addPermanentWidget(self.profile_button)
        status.addPermanentWidget(self.links)
        status.addPermanentWidget(self.outbox_button)
        status.addPermanentWidget(self.offline_button)
        status.addPermanentWidget(self.metrics_label)

        # -- the Sampling dock -----------------------------------------------------------------
        self.sampling = SamplingPanel(self.controller.service.presets, self)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.sampling)
        # it steps aside (hides, or opens floating) rather than squeeze the chat
        self.sampling_room = SamplingRoom(self, self.sampling, chat, self.window_state)
        self.sampling_binding = ConversationSampling(self.sampling, self.controller, self.store,
                                                     self.settings, services.registry, self,
                                                     keys=self.keys.known)

        self.transfer = TransferMenu(self.store, services.tasks, lambda: self.profile_name,
                                     lambda: self.controller.conversation_id, self)
        self.conversation_watch = ConversationWatch(self.store, lambda: self.profile_name, self)
        self.conversation_watch.timer.start()
        self.model_menu = ModelMenu(self.settings, self.loader,
                                    services.providers_dialog_factory, self,
                                    services.models_dialog_factory)
        self.default_route_menu = DefaultRouteMenu(self.settings, self)
        self.remembered = RememberedTarget(self.store, self.settings, self.loader,
                                           self.target_picker, self.model_picker,
                                           self.model_menu, self.errors.inform,
                                           self._on_failure)
        self.sampling.lora.models_folder = self.model_menu.models_folder  # (Attach LoRA…)
        self.default_route_actions = self.default_route_menu.group
        self._build_menus()
        self._connect_signals()
        self._set_tab_order()
        self._apply_profile(services.profile)
        self.target_picker.refresh(self.settings["chat_target"])
        self.refresh_sidebar()
        self.composer.edit.setFocus()

    def _build_menus(self) -> None:
        # every item has an access letter no other item of its menu has (Alt+C, then the
        # letter): tests/ui/test_menus.py walks every menu
        chat_menu = self.menuBar().addMenu("&Chat")
        self.new_action = QAction("&New chat", self)
        self.new_action.setShortcut(QKeySequence("Ctrl+N"))
        chat_menu.addAction(self.new_action)
        self.stop_action = QAction("S&top reply", self)
        # Esc anywhere in the window (the menu shows it, and so does Help's list)
        self.stop_action.setShortcut(QKeySequence(Qt.Key.Key_Escape))
        self.stop_action.setEnabled(False)  # while a reply comes (_on_state_changed)
        chat_menu.addAction(self.stop_action)
        self.find_action = QAction("&Find in this chat…", self)
        self.find_action.setShortcut(QKeySequence.StandardKey.Find)
        chat_menu.addAction(self.find_action)
        self.focus_composer_action = QAction("Go to the &message box", self)
        self.focus_composer_action.setShortcut(QKeySequence("Ctrl+L"))
        chat_menu.addAction(self.focus_composer_action)
        self.find_all_action = QAction("Find a &chat or message…", self)
        self.find_all_action.setShortcuts([QKeySequence("Ctrl+K"), QKeySequence("Ctrl+Shift+F")])
        chat_menu.addAction(self.find_all_action)
        chat_menu.addSeparator()
        chat_menu.addAction(self.offline_action)
        self.outbox_action = QAction("Out&box…", self)
        chat_menu.addAction(self.outbox_action)
        self.usage_action = QAction("&Usage and quotas…", self)
        chat_menu.addAction(self.usage_action)
        self.profiles_action = QAction("&Profiles…", self)
        chat_menu.addAction(self.profiles_action)
        chat_menu.addMenu(self.default_route_menu)
        chat_menu.addSeparator()
        for action in self.transfer.actions():
            chat_menu.addAction(action)
        chat_menu.addSeparator()
        self.settings_action = QAction("&Settings…", self)
        self.settings_action.setShortcut(QKeySequence("Ctrl+,"))
        self.settings_action.setMenuRole(QAction.MenuRole.PreferencesRole)
        chat_menu.addAction(self.settings_action)
        chat_menu.addSeparator()
        self.quit_action = QAction("&Quit", self)
        # Ctrl+Q (Cmd+Q on macOS): StandardKey.Quit has no key on Windows, nor offscreen
        self.quit_action.setShortcut(QKeySequence("Ctrl+Q"))
        chat_menu.addAction(self.quit_action)
        view_menu = self.menuBar().addMenu("&View")
        self.sampling_action = self.sampling.toggleViewAction()
        self.sampling_action.setText("&Sampling panel")
        self.sampling_action.setShortcut(QKeySequence("Ctrl+Shift+S"))
        view_menu.addAction(self.sampling_action)
        self.menuBar().addMenu(self.model_menu)
        self.open_model_action = self.model_menu.open_model_action
        self.bundled_model_action = self.model_menu.bundled_model_action
        self.providers_action = self.model_menu.providers_action
        self.help_menu = HelpMenu(self, lambda: self.loader.active.info.model
                                  if self.loader.active is not None else None)
        self.menuBar().addMenu(self.help_menu)

    def _set_tab_order(self) -> None:
        """Tab goes the way the eye reads, and round: the list, the error banner's buttons,
        the header, the chat (its bubbles join after the view as they are built), the message
        box, the Sampling panel top to bottom, the status bar left to right, then the list
        again. Everything else of the window is no stop (the Sampling panel's scroll area
        was one, between the status bar and the list)."""
        banner = sorted(self.banner.findChildren(QPushButton), key=self.banner.layout().indexOf)
        chain = [self.sidebar.new_button, self.sidebar.list, *banner, self.route_picker,
                 self.target_picker, self.model_picker, self.view, self.composer.edit,
                 self.composer.when_online, self.composer.button]
        # the Sampling panel's fields top to bottom (as they were made), then the status bar
        chain += [w for w in self.sampling.findChildren(QWidget)
                  if w.focusPolicy() & Qt.FocusPolicy.TabFocus and
                  not isinstance(w, QAbstractScrollArea) or
                  isinstance(w, QPlainTextEdit)]
        chain += [self.profile_button, self.outbox_button, self.offline_button]
        for first, second in zip(chain, chain[1:]):
            QWidget.setTabOrder(first, second)

    def _connect_signals(self) -> None:
        """Every connection between the window's pieces, the controller and the services."""
        c = self.controller
        # the turn: composer, shortcuts and menu -> the controller
        self.composer.send_requested.connect(self._on_send_requested)
        self.composer.stop_requested.connect(c.stop)
        self.stop_action.triggered.connect(c.stop)
        self.new_action.triggered.connect(self._on_new_chat)
        self.quit_action.triggered.connect(self.close)
        self.find_action.triggered.connect(lambda: self.open_search(this_chat=True))
        self.focus_composer_action.triggered.connect(self.composer.edit.setFocus)
        self.settings_action.triggered.connect(self.open_settings)
        self.transfer.done.connect(lambda text: self.status_note.show_note(text, 10000))
        self.transfer.failed.connect(self._on_failure)
        self.transfer.imported.connect(self.refresh_sidebar)
        c.conversation_opened.connect(self.transfer.show_conversation)
        self.conversation_watch.changed.connect(self._on_conversations_changed_elsewhere)
        self.find_all_action.triggered.connect(lambda: self.open_search(this_chat=False))
        self.banner.retry_requested.connect(c.retry)
        self.view.details_requested.connect(self.open_details)
        # a bubble's actions (ui.message_actions): the tree changes in the controller
        self.view.version_requested.connect(c.switch_version)
        self.view.regenerate_requested.connect(c.regenerate)
        self.view.regenerate_with_requested.connect(c.regenerate)
        self.view.regenerate_choices = self._regenerate_choices
        self.view.edit_submitted.connect(c.edit_and_resend)
        self.view.delete_requested.connect(self._on_delete_message)
        self.view.fork_requested.connect(self._on_fork)
        self.view.copied.connect(self._on_copied)
        c.options_for_turn = self.sampling.options
        c.test_time_for_turn = self.sampling.test_time_plan
        c.state_changed.connect(self._on_state_changed)
        c.state_changed.connect(self.model_status.show_chat_state)
        c.state_changed.connect(self.model_menu.show_chat_state)
        c.reply_finished.connect(self.metrics_label.show_reply)
        c.reply_finished.connect(self._refresh_links)
        c.notice.connect(self.errors.inform)
        c.error_occurred.connect(self._on_error)

        # the conversation list
        self.sidebar.new_requested.connect(self._on_new_chat)
        self.sidebar.conversation_selected.connect(self._on_conversation_selected)
        self.sidebar.rename_requested.connect(self._on_rename)
        self.sidebar.delete_requested.connect(self._on_delete)
        self.sidebar.held_in_backups = self._held_in_backups
        self.sidebar.pin_requested.connect(self._on_pin)
        c.conversations_changed.connect(self.refresh_sidebar)

        # the route: picked, defaulted, forced local by Offline mode -> shown everywhere
        self.route_picker.route_picked.connect(c.set_route)
        c.route_changed.connect(self.update_route_display)
        self.default_route_menu.default_route_changed.connect(c.default_route_changed)
        self.default_route_menu.default_route_changed.connect(self.update_route_display)
        self.offline.offline_mode_changed.connect(self.update_route_display)
        self.offline.offline_mode_changed.connect(self.offline_mode_changed)
        self.composer.when_online.toggled.connect(self._on_when_online_toggled)
        self.route_state_changed.connect(self.route_picker.show_route)
        self.route_state_changed.connect(self.target_picker.show_route)
        self.route_state_changed.connect(self.model_picker.show_route)
        self.route_state_changed.connect(self.route_label.show_route)
        self.route_state_changed.connect(self.composer.show_route)
        self.route_state_changed.connect(self._on_route_state_changed)
        self.route_state_changed.connect(self.sampling_binding.show_route)

        # who answers: the provider and its model, the local model
        self.target_picker.target_changed.connect(c.set_target)
        self.target_picker.target_changed.connect(self.model_picker.show_target)
        self.target_picker.target_changed.connect(self.update_route_display)
        self.model_picker.model_changed.connect(c.set_target)
        self.model_picker.model_changed.connect(self.sampling_binding.model_changed)  # (after)
        self.model_picker.model_changed.connect(self.meter.refresh)  # its own tokenizer
        self.model_menu.providers_changed.connect(self.target_picker.refresh)
        self.model_menu.providers_changed.connect(self.keys.forget)
        self.model_menu.model_chosen.connect(self.remembered.local_model_chosen)
        self.loader.loading_started.connect(self.model_status.show_loading)
        self.loader.model_ready.connect(self.target_picker.show_local_model)
        self.loader.model_ready.connect(self.model_status.show_model)
        self.loader.model_ready.connect(self.meter.refresh)  # counted by the new model
        self.loader.load_failed.connect(self.model_status.show_load_failed)
        self.loader.load_failed.connect(self._on_failure)

        # the outbox and the links
        self.outbox_action.triggered.connect(self.outbox_button.open_panel)
        self.outbox_button.clicked.connect(self.outbox_button.open_panel)
        self.outbox_button.refreshed.connect(self._refresh_links)
        self.outbox_button.answered.connect(self._on_queued_message_answered)
        self.outbox_button.send_failed.connect(self._on_failure)
        self.outbox_button.conversations_changed.connect(self.refresh_sidebar)
        self.outbox_button.send_requested.connect(self._on_send_outbox_now)
        c.outbox_changed.connect(self.outbox_button.refresh)
        self.monitor.outbox_changed.connect(self.outbox_button.refresh)
        self.monitor.sent.connect(self.outbox_button.show_report)
        self.monitor.item_failed.connect(c.reload_if_shown)  # (the list: show_report)
        # an answer the disk refused is kept: written again with this window's own
        self.monitor.sent.connect(lambda _report: self.controller.service.unsaved
                                  and self.controller.save_later())
        self.monitor.links_changed.connect(self._refresh_links)
        self.monitor.links_changed.connect(self._on_links_changed)

        # profiles, usage, sampling
        self.profiles_action.triggered.connect(self.profile_button.open_dialog)
        self.profile_button.switch_requested.connect(self._on_switch_requested)
        self.profile_button.profile_changed.connect(self._on_profile_changed)
        self.usage_action.triggered.connect(self.open_usage)
        self.sampling.changed.connect(self.sampling_binding.save)
        self.sampling.changed.connect(self.meter.refresh)  # a new chat's knobs too (unsaved)
        self.sampling_binding.saved.connect(self.meter.refresh)

        for piece in (self.target_picker, self.default_route_menu, self.offline,
                      self.outbox_button, self.profile_button, self.model_menu,
                      self.sampling_binding):
            piece.failed.connect(self._on_failure)

    # -- the signed-in profile -----------------------------------------------------------------
    @property
    def profile(self) -> Profile:
        """Who is signed in (owned by ``profile_button``)."""
        return self.profile_button.profile

    @property
    def profile_name(self) -> str:
        return self.profile_button.profile.name

    def _apply_profile(self, profile: Profile) -> None:
        """Act as ``profile``: its conversations, its quotas, its ledger rows, its outbox."""
        self.controller.service.act_as(profile.name)
        self.outbox_button.set_profile(profile.name)
        self.setWindowTitle(f"Outpost — {profile.name}")

    @Slot(str)
    def _on_switch_requested(self, name: str) -> None:
        if name != self.profile_name and self.controller.busy:
            self._on_failure(UsageError("Stop the reply before switching profile."))
            return
        self.profile_button.sign_in_as(name)

    @Slot(object)
    def _on_profile_changed(self, profile: Profile) -> None:
        # nothing of the previous person stays on screen: their chat, draft, dialogs
        if self.usage_dialog is not None:
            self.usage_dialog.close()
        self.outbox_button.close_panel()
        self._apply_profile(profile)
        self.controller.new_conversation()
        self.draft.switch(profile.name)  # the previous person's text kept for them, not shown
        self.banner.hide()
        self.title_label.setText("New chat")
        self.update_route_display()
        self.sampling_binding.reload()
        self.refresh_sidebar()
        self.composer.edit.setFocus()

    # -- the route -----------------------------------------------------------------------------
    def update_route_display(self) -> None:
        """Show the current conversation's route, Offline mode and the chosen target on every
        widget connected to ``route_state_changed``."""
        self.route_state_changed.emit(RouteState.of(self.controller, self.settings))

    @Slot(object)
    def _on_route_state_changed(self, state: RouteState) -> None:
        self.view.set_empty_text(state.texts().empty)
        self.meter.refresh()
        self._refresh_links()

    @Slot(bool)
    def _on_when_online_toggled(self, on: bool) -> None:
        if Route(self.controller.effective_route()) is Route.CLOUD:
            return
        self.controller.send_when_online = on
        try:
            save_setting(self.settings, "send_when_online", on)
        except OutpostError as exc:
            self._on_failure(exc)

    @Slot()
    def _refresh_links(self) -> None:
        self.links.show_providers(self.monitor.providers())

    @Slot()
    def _on_links_changed(self) -> None:
        """The chosen provider found unreachable, or back: where the next message goes
        changes, so the meter counts again (only then: the links are looked at every tick)."""
        c = self.controller
        provider = c.provider if c.cloud is not None else None
        link = (provider, self._connectivity.state(provider) if provider else None)
        if link != self._meter_link:
            self._meter_link = link
            self.meter.refresh()

    # -- the outbox ----------------------------------------------------------------------------
    @Slot()
    def _on_send_outbox_now(self) -> None:
        self.monitor.send_now(only_online=False)

    @Slot(str, str)
    def _on_queued_message_answered(self, conversation_id: str, news: str) -> None:
        if conversation_id == self.controller.conversation_id and not self.controller.busy:
            self.controller.reload_conversation()
            news = news.rstrip(".") + self._answer_version(conversation_id)
        else:  # marked in the sidebar until opened
            self.sidebar.mark_news(conversation_id, news)
        self.errors.inform(news)

    def _answer_version(self, conversation_id: str) -> str:
        """Where the newest answer stands among the versions of its reply (" — the newest
        answer is version 2 of 2 of its reply."; nothing when it is the only one), and how to
        see it when it is not on screen. That answer is the conversation's newest reply."""
        try:
            replies = [m for m in self.store.messages(conversation_id)
                       if m.role is Role.ASSISTANT]
            if not replies:
                return "."
            answer = replies[-1]
            siblings = [m.id for m in self.store.siblings(answer)]
        except OutpostError:
            return "."
        if len(siblings) < 2:  # (a Cloud only answer takes the queued reply's place)
            return "."
        where = f" — the newest answer is version {siblings.index(answer.id) + 1} of " \
            f"{len(siblings)} of its reply"
        shown = self.view.shows(answer.id)  # on the path shown, built or not
        return where + ("." if shown else " (switch to it with ‹ › on the reply beside it).")

    # -- a message's actions -------------------------------------------------------------------
    @Slot(str)
    def _on_delete_message(self, message_id: str) -> None:
        if self.controller.busy:  # the controller says why
            self.controller.delete_message(message_id)
            return
        text = ("Delete this message and everything below it (its replies, their follow-ups "
                "and their other versions)? This cannot be undone.")
        if held_in_backups(self.store.path, messages=[message_id]):
            asked, from_backups = confirm_with_option(
                self, "Delete message", f"{text}\n\n{backups_hold('them')}", "Delete",
                "Delete them from the backups too")
        else:  # (no backup holds it: the question does not say one does)
            asked, from_backups = confirm(self, "Delete message", text, "Delete"), False
        if asked:
            deleted = self.controller.delete_message(message_id)
            if deleted and from_backups:
                self.backup_eraser.erase(messages=deleted)

    @Slot(str)
    def _on_fork(self, message_id: str) -> None:
        if self.controller.fork(message_id, self.profile_name) is None:
            return
        self._show_title()
        self.update_route_display()
        self.sampling_binding.reload()

    @Slot(str)
    def _on_copied(self, text: str) -> None:
        self.status_note.show_note("Copied to the clipboard.", 3000)

    # -- dialogs -------------------------------------------------------------------------------
    @Slot()
    def open_usage(self) -> None:
        service = self.controller.service
        if service.ledger is None or service.quotas is None:
            return

        try:
            self.usage_dialog = UsageDialog(service.ledger, service.quotas.book,
                                            service.profile, self)
        except OutpostError as exc:
            self._on_failure(exc)
            return
        self.usage_dialog.show()

    @Slot(str)
    def open_details(self, message_id: str) -> None:
        try:
            message = self.store.get_message(message_id)
        except OutpostError as exc:
            self._on_failure(exc)
            return
        self.details_dialog = MessageDetails(message, self)
        self.details_dialog.keep_requested.connect(self.controller.keep_candidate)
        self.details_dialog.show()

    def _regenerate_choices(self) -> list[tuple[str, str]]:
        """Who may answer a Regenerate instead: the local model, or a configured provider."""
        choices = [("the local model", "local")]
        if self.registry is not None:
            try:
                choices += [(p.name, f"provider:{p.name}") for p in self.registry.list()]
            except OutpostError:
                pass  # the provider list cannot be read: the banner said so elsewhere
        return choices

    # -- the conversation list -----------------------------------------------------------------
    @Slot(str)
    def _on_send_requested(self, text: str) -> None:
        self.banner.hide()  # before sending: what the send reports (turns left out…) stays
        if self.controller.send(text):
            self.composer.clear()
            self.remembered.keep(self.controller.conversation_id)

    @Slot(str, bool)
    def _on_pin(self, conversation_id: str, pinned: bool) -> None:
        try:
            self.store.set_pinned(conversation_id, pinned)
        except OutpostError as exc:
            self._on_failure(exc)
        self.refresh_sidebar()

    @Slot()
    def _on_new_chat(self) -> None:
        if self.controller.refused_while_busy("start a new chat (Esc stops it)"):
            return
        self.controller.new_conversation()
        self.remembered.local_model_picked = False
        self.title_label.setText("New chat")
        self.update_route_display()
        self.sampling_binding.reload()
        self.composer.edit.setFocus()

    @Slot(str)
    def _on_conversation_selected(self, conversation_id: str) -> None:
        if conversation_id == self.controller.conversation_id:
            return  # already open (a click on it in the list): its pickers stay as they are
        if self.controller.refused_while_busy("open another chat (Esc stops it)"):
            self.sidebar.set_conversations(self.store.list_conversations(self.profile_name),
                                           self.controller.conversation_id)
            return
        self.controller.open_conversation(conversation_id)
        self.remembered.show(conversation_id)
        self._show_title()
        self.update_route_display()
        self.sampling_binding.reload()

    def open_settings(self) -> SettingsDialog:
        """Chat ▸ Settings… (Ctrl+,): every option of the settings schema, by group."""
        dialog = SettingsDialog(self.settings, self, on_applied=self.apply_settings,
                                notes=self.setting_notes(), keys=self.keys.known)
        self.settings_dialog = dialog
        dialog.show()
        return dialog

    @Slot(list)
    def apply_settings(self, names: list[str]) -> None:
        """Make changed settings take effect now where they can; the model reloads in the
        background (the loaded one answers meanwhile) when a load setting changed."""
        if "offline_mode" in names:
            self.offline.action.setChecked(bool(self.settings["offline_mode"]))
        if "send_when_online" in names:
            self.controller.send_when_online = bool(self.settings["send_when_online"])
        if "default_route" in names:  # the chats that follow it: their queued items too
            self.controller.default_route_changed(self.settings["default_route"])
        if "theme" in names:
            self.theme_changed.emit(self.settings["theme"])
        if "model_path" in names:  # another model: the setting's
            self.loader.load(None)
        elif SettingsDialog.needs_reload(names):  # the one loading or in use, loaded again
            self.loader.reload()
        self.update_route_display()
        self.status_note.show_note(SettingsDialog.applied_note(names), 8000)

    def open_search(self, this_chat: bool) -> SearchDialog:
        """Ctrl+F: words in this conversation (all conversations when none is open);
        Ctrl+K / Ctrl+Shift+F: chats and messages everywhere."""
        scope = self.controller.conversation_id if this_chat else None
        dialog = SearchDialog(self.store, self.profile_name, scope, self)
        dialog.open_requested.connect(self.show_search_result)
        self.search_dialog = dialog
        dialog.show()
        return dialog

    @Slot(str, str)
    def show_search_result(self, conversation_id: str, message_id: str) -> None:
        """Open the conversation at the message, switching to its branch when needed."""
        if self.controller.busy:
            self._on_failure(UsageError("Stop the reply before opening another message."))
            return
        try:
            if message_id and message_id not in {
                    m.id for m in self.store.branch(conversation_id)}:
                self.store.set_active(conversation_id, message_id)
                if conversation_id == self.controller.conversation_id:
                    self.controller.reload_conversation()
        except OutpostError as exc:
            self._on_failure(exc)
            return
        if conversation_id != self.controller.conversation_id:
            self._on_conversation_selected(conversation_id)
            self.refresh_sidebar()
        if message_id:
            self.view.show_message(message_id)

    @Slot(str, str)
    def _on_rename(self, conversation_id: str, title: str) -> None:
        try:
            self.store.rename_conversation(conversation_id, title)
        except OutpostError as exc:
            self._on_failure(exc)
        self.refresh_sidebar()
        self._show_title()

    def _held_in_backups(self, conversation_id: str) -> bool:
        """Whether a backup may hold the conversation (the delete's question says so then)."""
        return held_in_backups(self.store.path, conversations=[conversation_id])

    @Slot(str, bool)
    def _on_delete(self, conversation_id: str, from_backups: bool = False) -> None:
        if self.controller.busy and conversation_id == self.controller.conversation_id:
            self._on_failure(UsageError("Stop the reply before deleting this conversation."))
            return
        try:
            self.store.delete_conversation(conversation_id)
        except OutpostError as exc:  # (a reply in it is being written elsewhere: a CLI ask)
            self._on_failure(exc)
            return
        self.controller.forget_conversation(conversation_id)
        self.refresh_sidebar()
        self._show_title()
        if from_backups:
            self.backup_eraser.erase(conversations=[conversation_id])

    @Slot()
    def refresh_sidebar(self) -> None:
        try:
            conversations = self.store.list_conversations(self.profile_name)
        except OutpostError as exc:
            self._on_failure(exc)
            return
        self.sidebar.set_conversations(conversations, self.controller.conversation_id)
        self.conversation_watch.seen()
        self._show_title()

    def _show_title(self) -> None:
        cid = self.controller.conversation_id
        if cid is None:
            self.title_label.setText("New chat")
            return
        try:
            self.title_label.setText(
                self.keys.mask().scrub(self.store.get_conversation(cid).title))
        except OutpostError:
            self.title_label.setText("")

    @Slot(str)
    def _on_state_changed(self, state: str) -> None:
        self.composer.set_busy(state != IDLE)
        self.stop_action.setEnabled(state != IDLE)  # (nothing to stop between replies)

    # -- errors --------------------------------------------------------------------------------
    @Slot(object)
    def _on_error(self, error: OutpostError) -> None:
        """The controller's error: presented with Retry when its failed turn can be answered
        again (``ErrorPresenter`` is the one place an error becomes words)."""
        self.errors.present(error, can_retry=self.controller.failed_turn is not None)

    @Slot(object)
    def _on_failure(self, exc: OutpostError) -> None:
        """An error object from a piece of the window, the store or the model loader (a model
        that could not be loaded: the current one stays)."""
        self.errors.present(exc)

    def restore_state(self) -> None:
        """Geometry, docks, the split and the last conversation, as the window was closed."""
        last = self.window_state.restore(self, self.splitter)
        self.sampling_room.restore()
        if last and any(c.id == last for c in self.store.list_conversations(self.profile_name)):
            self._on_conversation_selected(last)
            self.refresh_sidebar()
        self.draft.restore()
        # from now on kept as it changes, not only at a clean close (a kill, a power cut)
        self.controller.conversation_opened.connect(self.window_state.save_last_conversation)
        self.geometry_keeper = GeometryKeeper(self, self.splitter, self.window_state)

    @Slot()
    def _on_conversations_changed_elsewhere(self) -> None:
        """Another process (the CLI) wrote conversations: show them."""
        if not self.controller.busy:
            self.refresh_sidebar()

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        service = self.controller.service
        if service.unsaved and service.save_unsaved() and not confirm(
                self, "Quit without saving",
                f"{counted(len(service.unsaved), 'reply', 'replies')} could not be saved yet "
                "(the disk refused it). Quitting loses it; free some space and Outpost saves "
                "it by itself.", "Quit anyway", QMessageBox.Icon.Warning):
            event.ignore()
            return
        try:
            self.window_state.save(self, self.splitter, self.controller.conversation_id)
            self.draft.save()
        except Exception:  # noqa: BLE001 - never block closing on the state file
            pass
        self.conversation_watch.timer.stop()
        self.controller.shutdown()
        super().closeEvent(event)
