"""Providers: add, edit, remove; presets; base URL; default model; the API key (masked, kept in
the OS keychain); and "Test connection", which lists the provider's models in the background."""
from __future__ import annotations

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.config.providers import (KIND_LABELS, KINDS, PRESETS, ProviderConfig,
                                  ProviderRegistry, preset_of)
from app.config.secrets import KeyStore, mask
from app.config.settings import Settings, option_named
from app.domain.errors import OutpostError
from engines import network_guard
from engines.registry import create_cloud_engine
from ui import theme
from ui.confirm import ask_to_save, confirm
from ui.errors import window_words
from ui.hinted_list import HintedList
from ui.tasks import TaskRunner

# Key storage is the setting key_fallback (Settings ▸ Privacy), with its choices and their names:
# it had a default of its own, so the two dialogs gave two answers ("Do not keep them" there,
# "Only this session" here).
_KEY_FALLBACK = "key_fallback"
_KEPT_IN = {"keychain": "the OS keychain", "memory": "memory, for this session only",
            "file": "a file only you can read"}  # (KeyStore.set says where)
# what the list says while there is no provider
EMPTY_HINT = ("No providers yet. Choose a preset on the right (OpenAI, OpenRouter, Ollama…), "
              "add its key and press Save.")


class ProvidersDialog(QDialog):
    providers_changed = Signal()

    def __init__(self, registry: ProviderRegistry, keys: KeyStore, settings: Settings,
                 tasks: TaskRunner, parent: QWidget | None = None,
                 refusal: str | None = None):
        """``refusal``: why the profile signed in may not change providers or keys (only the
        admin may: every profile on this machine uses them); None: it may. Refused, the
        dialog shows them, and Test connection, and nothing else."""
        super().__init__(parent)
        self.refusal = refusal
        self.setWindowTitle("Providers")
        self.resize(760, 420)
        self.registry, self.keys, self.settings, self.tasks = registry, keys, settings, tasks
        self.list = HintedList(EMPTY_HINT)
        self.list.setAccessibleName("Providers")
        self.list.setMaximumWidth(200)
        add_button = QPushButton("Add provider")
        self.remove_button = QPushButton("Remove")
        left = QVBoxLayout()
        left.addWidget(self.list, 1)
        left.addWidget(add_button)
        left.addWidget(self.remove_button)

        self.preset = QComboBox()
        self.preset.addItem("Custom", "")
        for key, preset in PRESETS.items():
            self.preset.addItem(preset.label, key)
        self.name = QLineEdit()
        # lower case from a preset, as on the command line ("outpost providers add openrouter"),
        # where the name is what --provider and "outpost keys set" take
        self.name.setToolTip("The provider's name here and on the command line (outpost ask "
                             "--provider NAME). A preset fills in its command-line name "
                             "(openai, openrouter…) until you type one of your own.")
        # the name a preset filled in: it follows the next preset chosen, a typed one stays
        self._preset_name = ""
        self.kind = QComboBox()
        for kind in KINDS:
            self.kind.addItem(KIND_LABELS[kind], kind)
        self.kind.setToolTip("How Outpost talks to the provider: the OpenAI-compatible API "
                             "(OpenAI, OpenRouter, Groq, Together, a local llama.cpp or Ollama "
                             "server…) or Anthropic's own API.")
        self.base_url = QLineEdit()
        self.model = QComboBox()
        self.model.setEditable(True)
        self.key = QLineEdit()
        self.key.setEchoMode(QLineEdit.EchoMode.Password)
        self.key_storage = QComboBox()
        fallback = option_named(_KEY_FALLBACK)
        for value in fallback.choices or ():
            self.key_storage.addItem((fallback.choice_labels or {}).get(value, value), value)
        self.key_storage.setCurrentIndex(
            max(0, self.key_storage.findData(self.settings[_KEY_FALLBACK])))
        self.key_storage.setToolTip(f"Where a key goes without a secure OS keychain: the "
                                    f"setting Settings ▸ {fallback.group} ▸ {fallback.title}.")
        self.key_note = QLabel()
        self.key_note.setWordWrap(True)
        theme.set_colour(self.key_note, "warning")
        self.result = QLabel()
        self.result.setWordWrap(True)
        self.result.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.test_button = QPushButton("Test connection")
        self.save_button = QPushButton("Save")
        form = QFormLayout()
        form.addRow("Preset", self.preset)
        form.addRow("Name", self.name)
        form.addRow("API type", self.kind)
        form.addRow("Base URL", self.base_url)
        form.addRow("Default model", self.model)
        form.addRow("API key", self.key)
        form.addRow("", self.key_note)
        form.addRow("Key storage", self.key_storage)
        buttons = QHBoxLayout()
        buttons.addWidget(self.test_button)
        buttons.addStretch(1)
        buttons.addWidget(self.save_button)
        right = QVBoxLayout()
        right.addLayout(form)
        right.addLayout(buttons)
        right.addWidget(self.result)
        right.addStretch(1)
        close = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        body = QHBoxLayout()
        body.addLayout(left)
        body.addLayout(right, 1)
        layout = QVBoxLayout(self)
        if refusal is not None:
            note = QLabel(refusal)
            note.setObjectName("adminOnlyNote")
            note.setWordWrap(True)
            theme.set_colour(note, "warning")
            layout.addWidget(note)
            for field in (self.name, self.base_url, self.key):
                field.setReadOnly(True)
            for control in (add_button, self.save_button, self.preset, self.kind,
                            self.key_storage):
                control.setEnabled(False)
            self.model.lineEdit().setReadOnly(True)
            self.key.setToolTip(refusal)
            self.list.set_hint("No providers yet.")  # (not theirs to add)
        layout.addLayout(body, 1)
        layout.addWidget(close)

        secure = self.keys.secure
        self.key_storage.setVisible(not secure)
        form.labelForField(self.key_storage).setVisible(not secure)
        self.key_note.setVisible(not secure)
        if not secure:
            self._show_key_fallback()
        if refusal is not None:  # where keys go is not theirs to choose either
            self.key_note.setVisible(False)

        self._saved_form: tuple = ()
        self._settling = self._reloading = False
        self.list.currentItemChanged.connect(self._on_selected)
        add_button.clicked.connect(self._on_add)
        self.remove_button.clicked.connect(self._on_remove)
        self.preset.currentIndexChanged.connect(self._on_preset)
        self.name.textEdited.connect(self._on_name_typed)
        self.save_button.clicked.connect(self._on_save)
        self.test_button.clicked.connect(self._on_test)
        close.rejected.connect(self.reject)
        self.reload()

    def _show_key_fallback(self) -> None:
        """Say what applies without a keychain: the setting, as Settings ▸ Privacy names it."""
        fallback = option_named(_KEY_FALLBACK)
        labels = fallback.choice_labels or {}
        value = self.settings[_KEY_FALLBACK]
        then = (f"so a key is not kept: choose \u201c{labels['memory']}\u201d or "
                f"\u201c{labels['file']}\u201d in Key storage to keep one (the setting follows)"
                if value == "refuse" else "Key storage below changes it")
        self.key_note.setText(
            f"No secure OS keychain was found. Settings ▸ {fallback.group} ▸ {fallback.title} "
            f"says \u201c{labels.get(value, value)}\u201d, {then}.")

    def reload(self, select: str | None = None) -> None:
        self._reloading = True  # (the list rebuilt: no choice of the user's to settle)
        try:
            self._reload(select)
        finally:
            self._reloading = False

    def _reload(self, select: str | None) -> None:
        self.list.clear()
        try:
            providers = self.registry.list()
        except OutpostError as exc:
            self.result.setText(window_words(str(exc)))
            providers = []
        for config in providers:
            item = QListWidgetItem(config.name)
            item.setData(Qt.ItemDataRole.UserRole, config.name)
            self.list.addItem(item)
            if config.name == select:
                self.list.setCurrentItem(item)
        if self.list.currentItem() is None:
            self._clear_form()
        self.remove_button.setEnabled(self.list.currentItem() is not None and
                                      self.refusal is None)

    def _clear_form(self) -> None:
        self.preset.setCurrentIndex(0)
        for field in (self.name, self.base_url, self.key):
            field.clear()
        self._preset_name = ""
        self.model.setEditText("")
        self.key.setPlaceholderText("paste the key (stored in the OS keychain)" if self.keys.secure
                                    else "paste the key (see Key storage below)")
        self.result.clear()
        self._saved_form = self._form_state()

    @Slot(QListWidgetItem, QListWidgetItem)
    def _on_selected(self, current, previous) -> None:
        if self._settling:
            return
        if current is not None and not self._reloading and self.unsaved_form():  # the
            # form's changes first (the user picked another provider)
            wanted = current.data(Qt.ItemDataRole.UserRole)
            self._settling = True
            try:
                settled = self.settle_form()  # (a save reloads the list: new items)
                if settled == "cancelled":
                    self.list.setCurrentItem(previous)
                    return
                if settled == "saved":
                    self.list.setCurrentItem(next(
                        self.list.item(i) for i in range(self.list.count())
                        if self.list.item(i).data(Qt.ItemDataRole.UserRole) == wanted))
                    current = self.list.currentItem()
            finally:
                self._settling = False
        self.remove_button.setEnabled(current is not None and self.refusal is None)
        if current is None:
            return
        config = self.registry.get(current.data(Qt.ItemDataRole.UserRole))
        self.preset.blockSignals(True)  # the preset it was made from, its fields as they are
        self.preset.setCurrentIndex(max(0, self.preset.findData(preset_of(config) or "")))
        self.preset.blockSignals(False)
        self.name.setText(config.name)
        self._preset_name = ""  # a provider's own name: another preset does not rename it
        self.kind.setCurrentIndex(self.kind.findData(config.kind))
        self.base_url.setText(config.base_url)
        self.model.setEditText(config.default_model)
        self.key.clear()
        stored = self.keys.get(config.name)
        self.key.setPlaceholderText(f"stored: {mask(stored)}" if stored
                                    else "no key stored (not needed for local servers)")
        self.result.clear()
        self._saved_form = self._form_state()

    @Slot()
    def _on_add(self) -> None:
        if self.settle_form() == "cancelled":
            return
        self.list.setCurrentItem(None)
        self._clear_form()
        self.name.setFocus()

    # -- a provider not saved ------------------------------------------------------------------
    def _form_state(self) -> tuple:
        return (self.name.text().strip(), self.kind.currentData(), self.base_url.text().strip(),
                self.model.currentText().strip(), self.key.text().strip())

    def unsaved_form(self) -> bool:
        """Whether the form shows a provider (new, or changed) not saved yet."""
        return self.refusal is None and self._form_state() != self._saved_form and \
            any(self._form_state()[::2])  # (a form left empty is nothing to save)

    def settle_form(self) -> str:
        """Before the form shows another provider or the dialog closes: "clean", "saved",
        "discarded", or "cancelled" (the user goes back to it, or saving was refused: the
        result line says why). Esc dropped a provider being added, silently."""
        if not self.unsaved_form():
            return "clean"
        name = self.name.text().strip()
        answer = ask_to_save(self, "Provider not saved",
                             f"Save the provider {name}?" if name else
                             "Save the provider being edited?")
        if answer == "save":
            return "saved" if self._on_save() else "cancelled"
        return "discarded" if answer == "discard" else "cancelled"

    def done(self, result: int) -> None:
        """Close, Esc and the window's close button ask about a provider not saved."""
        settled = self.settle_form()
        if settled == "cancelled":
            return
        if settled == "discarded":  # opened again, it shows what is saved
            self.reload()
        super().done(result)

    @Slot(int)
    def _on_preset(self, _index: int) -> None:
        preset = PRESETS.get(self.preset.currentData() or "")
        if preset is None:
            return
        # the name follows the preset (Down through the list, or a change of mind) until the
        # user types one of their own; it used to be filled only when empty, so the first
        # preset passed through stuck ("openai" for Anthropic)
        if self.name.text() in ("", self._preset_name):
            self._preset_name = self.preset.currentData()
            self.name.setText(self._preset_name)
        self.kind.setCurrentIndex(self.kind.findData(preset.kind))
        self.base_url.setText(preset.base_url)
        self.model.setEditText(preset.default_model)

    @Slot(str)
    def _on_name_typed(self, _text: str) -> None:
        self._preset_name = ""  # the user's own name now: the next preset leaves it

    def _form_config(self) -> ProviderConfig:
        return ProviderConfig(self.name.text().strip(), self.kind.currentData(),
                              self.base_url.text().strip(),
                              self.model.currentText().strip()).validate()

    @Slot()
    def _on_save(self) -> bool:
        if self.refusal is not None:
            self.result.setText(self.refusal)
            return False
        try:
            config = self._form_config()
            self.registry.add(config, replace=True)
            key = self.key.text().strip()
            if key:
                if not self.keys.secure:
                    self.keys.fallback = self.key_storage.currentData()
                    if self.keys.fallback != self.settings[_KEY_FALLBACK]:
                        self.settings.set(_KEY_FALLBACK, self.keys.fallback)
                        self.settings.save()
                        self._show_key_fallback()
                where = self.keys.set(config.name, key)
                self.key.clear()
                saved = f"Saved. Key {mask(key)} kept in {_KEPT_IN.get(where, where)}."
            else:
                saved = "Saved."
        except OutpostError as exc:
            self.result.setText(window_words(str(exc)))
            return False
        self.reload(select=config.name)  # (selecting it again clears the result line)
        self.result.setText(saved)
        self.providers_changed.emit()
        return True

    @Slot()
    def _on_test(self) -> None:
        try:
            config = self._form_config()
        except OutpostError as exc:
            self.result.setText(window_words(str(exc)))
            return
        try:  # Offline mode: said at once; the engine's client would refuse it anyway
            network_guard.check_url(config.base_url, f"{config.name} ({config.base_url})")
        except OutpostError as exc:
            self.result.setText(f"✘ {window_words(str(exc))}")
            return
        key = self.key.text().strip() or self.keys.resolve(config.name, config.base_url)
        self.result.setText(f"Connecting to {config.base_url}…")
        self.test_button.setEnabled(False)

        def check() -> list[str]:
            engine = create_cloud_engine(config, key, config.default_model or "-")
            try:
                return engine.list_models()
            finally:
                engine.close()

        self.tasks.run_in_background(check, self._on_test_ok, self._on_test_failed)

    def _on_test_ok(self, models: list[str]) -> None:
        self.test_button.setEnabled(True)
        current = self.model.currentText()
        self.model.clear()
        self.model.addItems(models)
        self.model.setEditText(current or (models[0] if models else ""))
        shown = ", ".join(models[:5]) + (" …" if len(models) > 5 else "")
        count = f"{len(models)} model{'s' if len(models) != 1 else ''}"
        self.result.setText(f"✔ Connected: {count} available"
                            f"{': ' + shown if shown else ''}.")

    def _on_test_failed(self, exc: Exception) -> None:
        self.test_button.setEnabled(True)
        self.result.setText(f"✘ {window_words(str(exc))}")

    @Slot()
    def _on_remove(self) -> None:
        item = self.list.currentItem()
        if item is None:
            return
        name = item.data(Qt.ItemDataRole.UserRole)
        if not confirm(self, "Remove provider", f"Remove {name} and forget its key?",
                       "Remove"):
            return
        self.remove(name)

    def remove(self, name: str) -> None:
        if self.refusal is not None:
            self.result.setText(self.refusal)
            return
        self.registry.remove(name)
        self.keys.delete(name)
        self.reload()
        self.providers_changed.emit()
