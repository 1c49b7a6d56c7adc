"""The main window: layout and signal wiring only. Behaviour lives in the controllers."""
from __future__ import annotations

from PySide6.QtCore import Qt, Slot
from PySide6.QtGui import QAction, QKeySequence, QShortcut
from PySide6.QtWidgets import (QComboBox, QFileDialog, QHBoxLayout, QLabel, QMainWindow,
                               QSplitter, QVBoxLayout, QWidget)

from app.errors import OutpostError
from app.settings import Settings
from app.store import Store
from engines.base import EngineInfo
from ui.chat_controller import IDLE, STOPPING, WAITING, ChatController
from ui.composer import Composer
from ui.conversation_view import ConversationView
from ui.errors import ErrorBanner
from ui.model_loader import ModelLoader
from ui.sidebar import Sidebar


class MainWindow(QMainWindow):
    def __init__(self, store: Store, settings: Settings, controller_factory,
                 loader: ModelLoader, providers_dialog_factory=None, registry=None,
                 tasks=None):
        super().__init__()
        self.store = store
        self.settings = settings
        self.loader = loader
        self.registry = registry
        self.tasks = tasks
        self._models_cache: dict[str, list[str]] = {}
        self.providers_dialog_factory = providers_dialog_factory
        self.setWindowTitle("Outpost")
        self.resize(1100, 720)

        self.sidebar = Sidebar()
        self.banner = ErrorBanner()
        self.title_label = QLabel("New chat")
        self.title_label.setStyleSheet("font-size:15px; font-weight:600; padding:10px 16px;")
        self.target_picker = QComboBox()
        self.target_picker.setToolTip("Who answers: the local model, or a cloud provider")
        self.target_picker.setMinimumWidth(300)
        self.target_picker.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        header = QHBoxLayout()
        header.setContentsMargins(0, 0, 12, 0)
        header.addWidget(self.title_label, 1)
        header.addWidget(QLabel("Answer with"))
        header.addWidget(self.target_picker)
        self.model_picker = QComboBox()
        self.model_picker.setEditable(True)
        self.model_picker.setMinimumWidth(200)
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
        status.addWidget(self.route_label)
        status.addWidget(self.model_label)
        status.addWidget(self.state_label, 1)
        status.addPermanentWidget(self.metrics_label)

        self.controller: ChatController = controller_factory(self.view)
        self._build_menu()
        self._wire()
        self.refresh_targets(self.settings["chat_target"])
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
        self.quit_action = QAction("&Quit", self)
        self.quit_action.setShortcut(QKeySequence.StandardKey.Quit)
        chat_menu.addAction(self.quit_action)
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
        if self.controller.send(text):
            self.banner.hide()
            self.composer.clear()

    @Slot()
    def _on_new_chat(self) -> None:
        if self.controller.busy:
            return
        self.controller.new_conversation()
        self.title_label.setText("New chat")
        self.composer.edit.setFocus()

    @Slot(str)
    def _on_conversation_selected(self, conversation_id: str) -> None:
        if self.controller.busy:
            self.sidebar.set_conversations(self.store.list_conversations(),
                                           self.controller.conversation_id)
            return
        self.controller.open_conversation(conversation_id)
        self._show_title()

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
            conversations = self.store.list_conversations()
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
        if message is None:
            return
        parts = []
        if message.ttft_ms is not None:
            parts.append(f"TTFT {message.ttft_ms:.0f} ms")
        if message.tokens_per_s is not None:
            parts.append(f"{message.tokens_per_s:.1f} tok/s")
        self.metrics_label.setText("Last reply: " + " · ".join(parts) if parts else "")

    @Slot(str, str)
    def _on_error(self, kind: str, message: str) -> None:
        if kind == "cancelled":
            return
        self.banner.show_error(message, can_retry=self.controller.failed_turn is not None)

    @Slot()
    def _on_retry(self) -> None:
        self.controller.retry()

    # -- who answers -----------------------------------------------------------------------------
    def refresh_targets(self, select: str | None = None) -> None:
        select = select or self.target_picker.currentData() or "local"
        self.target_picker.blockSignals(True)
        self.target_picker.clear()
        local = self.loader.active.info.model if self.loader.active else "bundled model"
        self.target_picker.addItem(f"Local · {local}", "local")
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
        if target == "local":
            self.route_label.setText("● Offline — local model")
            self.route_label.setToolTip("Every reply is generated on this computer; nothing is "
                                        "sent over the network.")
            self.route_label.setStyleSheet("color:#1a7f37; font-weight:600; padding:0 8px;")
            self.composer.edit.setPlaceholderText(
                "Message the local model…  (Enter sends, Shift+Enter: new line)")
        else:
            name = target.split(":", 1)[1]
            self.route_label.setText(f"☁ Cloud — {name}")
            self.route_label.setToolTip("Messages of this chat are sent to the provider over "
                                        "the network.")
            self.route_label.setStyleSheet("color:#0969da; font-weight:600; padding:0 8px;")
            self.composer.edit.setPlaceholderText(
                f"Message {name}…  (Enter sends, Shift+Enter: new line)")
        self.composer.edit.viewport().update()  # the placeholder is painted, not a widget

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
        self.target_picker.setItemText(0, f"Local · {info.model}")
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

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        self.controller.shutdown()
        super().closeEvent(event)
