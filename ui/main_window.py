"""The main window: layout and signal wiring, and the conversation list. Behaviour lives in the
controllers and in the window_* mixins (models, routes, profiles, sampling)."""
from __future__ import annotations

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QAction, QActionGroup, QKeySequence, QPainter, QShortcut
from PySide6.QtWidgets import (QComboBox, QHBoxLayout, QLabel, QMainWindow,
                               QPushButton, QSizePolicy, QSplitter, QVBoxLayout, QWidget)

from app.errors import OutpostError
from app.router import ROUTE_LABELS, Route
from app.settings import Settings
from app.store import Store
from ui.chat_controller import IDLE, STOPPING, WAITING, ChatController
from ui.composer import Composer
from ui.conversation_view import ConversationView
from ui.errors import ErrorBanner
from ui.model_loader import ModelLoader
from ui.sidebar import Sidebar
from ui.window_models import WindowModels
from ui.window_profiles import WindowProfiles
from ui.window_routes import WindowRoutes
from ui.window_sampling import WindowSampling


class ElidedLabel(QLabel):
    """A label that ends in "…" when it is too narrow (a long conversation title)."""

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        painter = QPainter(self)
        rect = self.contentsRect()
        text = self.fontMetrics().elidedText(self.text(), Qt.TextElideMode.ElideRight,
                                             rect.width())
        painter.drawText(rect, int(self.alignment()), text)

    def setText(self, text: str) -> None:  # noqa: N802 (Qt naming)
        super().setText(text)
        self.setToolTip(text)


class MainWindow(WindowModels, WindowRoutes, WindowProfiles, WindowSampling, QMainWindow):
    offline_mode_changed = Signal()  # after the setting changed (read it from settings)

    def __init__(self, store: Store, settings: Settings, controller_factory,
                 loader: ModelLoader, providers_dialog_factory=None, registry=None,
                 tasks=None, connectivity=None, outbox=None, outbox_panel_factory=None,
                 profiles=None, profile=None):
        super().__init__()
        self.profiles = profiles  # app.profiles.Profiles
        self.profile = profile  # app.profiles.Profile: who is signed in
        self.connectivity = connectivity
        self.outbox = outbox
        self.outbox_panel_factory = outbox_panel_factory
        self.outbox_panel = None
        self.monitor = None  # ui.outbox_monitor.OutboxMonitor, attached by the app
        self.store = store
        self.settings = settings
        self.loader = loader
        self.registry = registry
        self.tasks = tasks
        self._models_cache: dict[str, list[str]] = {}
        self.providers_dialog_factory = providers_dialog_factory
        self.setWindowTitle("Outpost")
        self.resize(1380, 760)

        self.sidebar = Sidebar()
        self.banner = ErrorBanner()
        self.title_label = ElidedLabel("New chat")
        self.title_label.setStyleSheet("font-size:15px; font-weight:600; padding:10px 16px;")
        # a long title must not push the pickers (and the sidebar) around
        self.title_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.target_picker = QComboBox()
        self.target_picker.setToolTip("The cloud provider this chat may use (its route decides "
                                      "when), or none: the local model only")
        self.target_picker.setMinimumWidth(200)
        self.target_picker.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.target_picker.setMinimumContentsLength(22)
        self.route_picker = QComboBox()
        self.route_picker.setToolTip(
            "Route of this conversation. Auto: the chosen provider first; if it cannot be "
            "reached, is slow to start, or breaks off, the local model answers or continues. "
            "Local only: never leaves this computer. Cloud only: the provider or nothing (an "
            "unreachable provider's messages wait in the outbox).")
        for route in Route:
            self.route_picker.addItem(ROUTE_LABELS[route], route.value)
        header = QHBoxLayout()
        header.setContentsMargins(0, 0, 12, 0)
        header.addWidget(self.title_label, 1)
        header.addWidget(QLabel("Route"))
        header.addWidget(self.route_picker)
        header.addWidget(QLabel("Cloud provider"))
        header.addWidget(self.target_picker)
        self.model_picker = QComboBox()
        self.model_picker.setEditable(True)
        self.model_picker.setMinimumWidth(150)
        self.model_picker.setToolTip("The provider's model for this chat (type any model name)")
        self.model_picker.hide()
        header.addWidget(self.model_picker)
        self.view = ConversationView()
        self.composer = Composer()
        chat = QWidget()
        chat_layout = QVBoxLayout(chat)
        chat_layout.setContentsMargins(0, 0, 0, 0)
        chat_layout.setSpacing(0)
        chat_layout.addWidget(self.banner)
        chat_layout.addLayout(header)
        chat_layout.addWidget(self.view, 1)
        chat_layout.addWidget(self.composer)
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(self.sidebar)
        splitter.addWidget(chat)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([260, 840])
        self.setCentralWidget(splitter)

        self.route_label = QLabel("● Offline — local model")
        self.route_label.setToolTip("Every reply is generated on this computer; nothing is sent "
                                    "over the network.")
        self.route_label.setStyleSheet("color:#1a7f37; font-weight:600; padding:0 8px;")
        self.model_label = QLabel("Local model: —")
        self.state_label = QLabel("")
        self.metrics_label = QLabel("")
        status = self.statusBar()
        self.offline_button = QPushButton("Offline mode: off")
        self.offline_button.setCheckable(True)
        self.offline_button.setFlat(True)
        self.offline_button.setToolTip("Offline mode: every conversation is answered by the "
                                       "local model; nothing is sent, no connection is opened.")
        self.outbox_button = QPushButton("Outbox")
        self.outbox_button.setFlat(True)
        self.outbox_button.setToolTip("Messages waiting for a cloud provider")
        self.outbox_button.hide()
        self.links = None
        if connectivity is not None:
            from ui.connectivity_indicator import ConnectivityIndicator

            self.links = ConnectivityIndicator(connectivity)
            self.links.hide()
        status.addWidget(self.route_label)
        status.addWidget(self.model_label)
        status.addWidget(self.state_label, 1)
        self.profile_button = None
        if profiles is not None:
            from ui.profiles_dialog import ProfileButton

            self.profile_button = ProfileButton(profiles)
            status.addPermanentWidget(self.profile_button)
        if self.links is not None:
            status.addPermanentWidget(self.links)
        status.addPermanentWidget(self.outbox_button)
        status.addPermanentWidget(self.offline_button)
        status.addPermanentWidget(self.metrics_label)

        self.controller: ChatController = controller_factory(self.view)
        from ui.sampling_panel import SamplingPanel

        self.sampling = SamplingPanel(self.controller.service.presets, self)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.sampling)
        self.controller.options_for_turn = self.sampling.options
        self.controller.test_time_for_turn = self.sampling.test_time_plan
        if tasks is not None:
            from ui.token_meter import TokenMeter

            self.meter = TokenMeter(tasks, self._measure_draft)
            self.composer.set_meter(self.meter)
        self._build_menu()
        self._wire()
        self.refresh_targets(self.settings["chat_target"])
        if profile is not None:
            self.apply_profile(profile)
        self.refresh_sidebar()
        self.composer.edit.setFocus()

    def _build_menu(self) -> None:
        chat_menu = self.menuBar().addMenu("&Chat")
        self.new_action = QAction("&New chat", self)
        self.new_action.setShortcut(QKeySequence("Ctrl+N"))
        chat_menu.addAction(self.new_action)
        self.stop_action = QAction("&Stop reply", self)
        chat_menu.addAction(self.stop_action)
        chat_menu.addSeparator()
        self.offline_action = QAction("&Offline mode", self)
        self.offline_action.setCheckable(True)
        self.offline_action.setShortcut(QKeySequence("Ctrl+Shift+O"))
        self.offline_action.setChecked(bool(self.settings["offline_mode"]))
        chat_menu.addAction(self.offline_action)
        self.outbox_action = QAction("Out&box…", self)
        chat_menu.addAction(self.outbox_action)
        self.usage_action = QAction("&Usage and quotas…", self)
        chat_menu.addAction(self.usage_action)
        self.profiles_action = QAction("&Profiles…", self)
        self.profiles_action.setEnabled(self.profiles is not None)
        chat_menu.addAction(self.profiles_action)
        default_menu = chat_menu.addMenu("&Default route for new chats")
        self.default_route_actions = QActionGroup(self)
        for route in Route:
            action = QAction(ROUTE_LABELS[route], self, checkable=True)
            action.setData(route.value)
            action.setChecked(route.value == self.settings["default_route"])
            self.default_route_actions.addAction(action)
            default_menu.addAction(action)
        chat_menu.addSeparator()
        self.quit_action = QAction("&Quit", self)
        self.quit_action.setShortcut(QKeySequence.StandardKey.Quit)
        chat_menu.addAction(self.quit_action)
        view_menu = self.menuBar().addMenu("&View")
        self.sampling_action = self.sampling.toggleViewAction()
        self.sampling_action.setText("&Sampling panel")
        self.sampling_action.setShortcut(QKeySequence("Ctrl+Shift+S"))
        view_menu.addAction(self.sampling_action)
        model_menu = self.menuBar().addMenu("&Model")
        self.open_model_action = QAction("&Open model file…", self)
        self.open_model_action.setShortcut(QKeySequence("Ctrl+O"))
        model_menu.addAction(self.open_model_action)
        self.bundled_model_action = QAction("Use the &bundled model (SmolLM2-135M)", self)
        model_menu.addAction(self.bundled_model_action)
        model_menu.addSeparator()
        self.providers_action = QAction("&Providers…", self)
        model_menu.addAction(self.providers_action)
        self.escape_shortcut = QShortcut(QKeySequence(Qt.Key.Key_Escape), self)
        self.escape_shortcut.setContext(Qt.ShortcutContext.WindowShortcut)

    def _wire(self) -> None:
        c = self.controller
        self.composer.send_requested.connect(self._on_send_requested)
        self.composer.stop_requested.connect(c.stop)
        self.escape_shortcut.activated.connect(c.stop)
        self.stop_action.triggered.connect(c.stop)
        self.new_action.triggered.connect(self._on_new_chat)
        self.quit_action.triggered.connect(self.close)
        self.open_model_action.triggered.connect(self._on_open_model)
        self.bundled_model_action.triggered.connect(self._on_use_bundled)
        self.providers_action.triggered.connect(self.open_providers)
        self.target_picker.currentIndexChanged.connect(self._on_target_changed)
        self.route_picker.activated.connect(self._on_route_picked)
        self.offline_action.toggled.connect(self._on_offline_toggled)
        self.offline_button.toggled.connect(self.offline_action.setChecked)
        self.offline_button.setChecked(self.offline_action.isChecked())
        self.outbox_action.triggered.connect(self.open_outbox)
        self.usage_action.triggered.connect(self.open_usage)
        self.profiles_action.triggered.connect(self.open_profiles)
        self.sampling.changed.connect(self._on_sampling_changed)
        self.view.details_requested.connect(self.open_details)
        if self.profile_button is not None:
            self.profile_button.switch_requested.connect(self.switch_profile)
            self.profile_button.manage_requested.connect(self.open_profiles)
        self.default_route_actions.triggered.connect(self._on_default_route_picked)
        self.outbox_button.clicked.connect(self.open_outbox)
        self.composer.when_online.toggled.connect(self._on_when_online_toggled)
        self.composer.when_online.setChecked(c.send_when_online)
        c.route_changed.connect(self._on_route_changed)
        c.notice.connect(self.banner.show_info)
        c.outbox_changed.connect(self.refresh_outbox)
        self.model_picker.currentTextChanged.connect(self._on_model_changed)
        self.banner.retry_requested.connect(self._on_retry)
        self.sidebar.new_requested.connect(self._on_new_chat)
        self.sidebar.conversation_selected.connect(self._on_conversation_selected)
        self.sidebar.rename_requested.connect(self._on_rename)
        self.sidebar.delete_requested.connect(self._on_delete)
        c.state_changed.connect(self._on_state_changed)
        c.conversations_changed.connect(self.refresh_sidebar)
        c.reply_finished.connect(self._on_reply_finished)
        c.error_occurred.connect(self._on_error)
        self.loader.loading_started.connect(self._on_loading_started)
        self.loader.model_ready.connect(self._on_model_ready)
        self.loader.load_failed.connect(self._on_load_failed)

    # -- slots ---------------------------------------------------------------------------------
    @Slot(str)
    def _on_send_requested(self, text: str) -> None:
        self.banner.hide()  # before sending: what the send reports (turns left out…) stays
        if self.controller.send(text):
            self.composer.clear()

    @Slot()
    def _on_new_chat(self) -> None:
        if self.controller.busy:
            return
        self.controller.new_conversation()
        self.title_label.setText("New chat")
        self.update_route_display()
        self.reload_sampling()
        self.composer.edit.setFocus()

    @Slot(str)
    def _on_conversation_selected(self, conversation_id: str) -> None:
        if self.controller.busy:
            self.sidebar.set_conversations(self.store.list_conversations(self.profile_name),
                                           self.controller.conversation_id)
            return
        self.controller.open_conversation(conversation_id)
        self._show_title()
        self.update_route_display()
        self.reload_sampling()

    @Slot(str, str)
    def _on_rename(self, conversation_id: str, title: str) -> None:
        try:
            self.store.rename_conversation(conversation_id, title)
        except OutpostError as exc:
            self._on_error(exc.kind, str(exc))
        self.refresh_sidebar()
        self._show_title()

    @Slot(str)
    def _on_delete(self, conversation_id: str) -> None:
        if self.controller.busy and conversation_id == self.controller.conversation_id:
            self._on_error("usage", "Stop the reply before deleting this conversation.")
            return
        try:
            self.store.delete_conversation(conversation_id)
        except OutpostError as exc:
            self._on_error(exc.kind, str(exc))
        self.controller.forget_conversation(conversation_id)
        self.refresh_sidebar()
        self._show_title()

    @Slot()
    def refresh_sidebar(self) -> None:
        try:
            conversations = self.store.list_conversations(self.profile_name)
        except OutpostError as exc:
            self._on_error(exc.kind, str(exc))
            return
        self.sidebar.set_conversations(conversations, self.controller.conversation_id)
        self._show_title()

    def _show_title(self) -> None:
        cid = self.controller.conversation_id
        if cid is None:
            self.title_label.setText("New chat")
            return
        try:
            self.title_label.setText(self.store.get_conversation(cid).title)
        except OutpostError:
            self.title_label.setText("")

    @Slot(str)
    def _on_state_changed(self, state: str) -> None:
        self.composer.set_busy(state != IDLE)
        texts = {WAITING: "Waiting for the model to load…", STOPPING: "Stopping…"}
        if state in texts:
            self.state_label.setText(texts[state])
        elif state == IDLE:
            self.state_label.setText("Ready" if self.loader.active else self.state_label.text())
        else:
            self.state_label.setText("Generating…")
        self.open_model_action.setEnabled(state == IDLE)
        self.bundled_model_action.setEnabled(state == IDLE)

    @Slot(object)
    def _on_reply_finished(self, message) -> None:
        self.refresh_links()
        if message is None:
            return
        parts = []
        if message.ttft_ms is not None:
            parts.append(f"TTFT {message.ttft_ms:.0f} ms")
        if message.tokens_per_s is not None:
            parts.append(f"{message.tokens_per_s:.1f} tok/s")
        self.metrics_label.setText(" · ".join(parts) if parts else "")
        self.metrics_label.setToolTip("The last reply's time to first token and decode speed")

    @Slot(str, str)
    def _on_error(self, kind: str, message: str) -> None:
        if kind == "cancelled":
            return
        self.banner.show_error(message, can_retry=self.controller.failed_turn is not None)

    @Slot()
    def _on_retry(self) -> None:
        self.controller.retry()

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        self.controller.shutdown()
        super().closeEvent(event)
