"""Model ▸ Models…: the local model library in the window.

The models (the models folder, references, shared folders, the bundled one) with what their
GGUF headers say and the memory each needs; import (copy, hard link or reference), rename,
remove, use; each model's load settings (engines/model_load.py: changing those of the model
in use reloads it in the background while the old one keeps answering); and downloads with a
progress bar, speed and time left, queued while offline (ui/downloads.py).
"""
from __future__ import annotations

from PySide6.QtCore import QEvent, Qt, Signal, Slot
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.chat.model_changes import ModelChanges
from app.domain.errors import OutpostError
from engines.download_queue import QueueState
from engines.model_download import Progress
from engines.model_library import ModelEntry, ModelLibrary, size_text
from engines.model_load import KV_TYPES, NO_GPU_OFFLOAD, ModelLoadOptions, check_for_model
from ui import theme
from ui.confirm import confirm
from ui.downloads import RESUME_HERE, Downloads, failure_words
from ui.window_state import downloads_folder, remember_folder, start_folder

COLUMNS = ("Name", "Quant", "Parameters", "Context", "Size", "Memory", "Where")
_TRISTATE = (("auto", None), ("on", True), ("off", False))


def progress_text(p: Progress) -> str:
    """ "37 % · 48.2 of 130.0 MiB · 2.1 MiB/s · 40 s left" """
    parts = []
    if p.fraction is not None:
        parts.append(f"{p.fraction * 100:.0f} %")
    parts.append(f"{size_text(p.done)}" + (f" of {size_text(p.total)}" if p.total else ""))
    if p.speed_bps > 0:
        parts.append(f"{size_text(p.speed_bps)}/s")
    if p.eta_s is not None:
        eta = int(p.eta_s)
        parts.append(f"{eta // 60} min {eta % 60} s left" if eta >= 60 else
                     f"{eta} s left" if eta >= 1 else "under a second left")
    return " · ".join(parts)


class ContextBox(QSpinBox):
    """A context length: "auto", or any number of tokens typed; the arrows step through the
    usual sizes (512, 1,024, 2,048, … doubling) rather than by a fixed amount (which went
    auto, 1,279, 2,303, …)."""

    AUTO = 255  # the lowest value, shown as "auto"
    SIZES = tuple(2 ** n for n in range(9, 21))  # 512 … 1,048,576

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setRange(self.AUTO, self.SIZES[-1])
        self.setSpecialValueText("auto")
        self.setGroupSeparatorShown(True)
        self.trained: int | None = None  # the model's trained length: the arrows stop there

    def stepBy(self, steps: int) -> None:  # noqa: N802 (Qt naming)
        value = self.value()
        for _ in range(abs(steps)):
            if steps > 0:
                value = next((s for s in self.SIZES if s > value), self.SIZES[-1])
                value = min(value, self.trained or self.maximum())
            else:
                value = next((s for s in reversed(self.SIZES) if s < value), self.AUTO)
        self.setValue(value)


class LoadSettingsForm(QGroupBox):
    """One model's load settings; ``Apply`` checks them against the model and keeps them."""

    applied = Signal(str)  # model name

    def __init__(self, library: ModelLibrary, gpu_available: bool, parent=None):
        super().__init__("Load settings", parent)
        self.library, self.entry = library, None
        form = QFormLayout(self)
        self.context = ContextBox()
        self.context.setToolTip("Tokens the model sees. Auto: its trained length, capped by "
                                "the context cap setting. More context needs more memory.")
        self.gpu_layers = QSpinBox()
        self.gpu_layers.setSpecialValueText("auto")  # -1: auto
        self.gpu_layers.setToolTip("Layers on the GPU; auto: all of them when llama.cpp was "
                                   "built with GPU offload.")
        self.threads = QSpinBox()
        self.threads.setRange(0, 512)
        self.threads.setSpecialValueText("auto")
        self.threads.setToolTip("CPU threads; auto: the n_threads setting if set, else the "
                                "cores free now (at most one per physical core), looked at "
                                "again during each reply.")
        self.batch = QSpinBox()
        self.batch.setRange(32, 8192)
        self.batch.setSingleStep(32)
        self.batch.setToolTip("Prompt tokens evaluated per step")
        self.flash_attn = QComboBox()
        self.mmap = QComboBox()
        for combo in (self.flash_attn, self.mmap):
            for label, value in _TRISTATE:
                combo.addItem(label, value)
        self.flash_attn.setToolTip("Flash attention; auto: on when the KV cache is quantized")
        self.mmap.setToolTip("Map the file instead of reading it; auto: on, off for a model "
                             "in a shared folder (a USB stick may be pulled)")
        self.kv_type = QComboBox()
        for name in KV_TYPES:
            self.kv_type.addItem(name, name)
        self.kv_type.setToolTip("The KV cache's type: q8_0 halves its memory, q4_0 quarters it")
        self.mlock = QCheckBox("Keep the weights in RAM (mlock)")
        form.addRow("Context", self.context)
        form.addRow("GPU layers", self.gpu_layers)
        form.addRow("Threads", self.threads)
        form.addRow("Batch", self.batch)
        form.addRow("Flash attention", self.flash_attn)
        form.addRow("KV cache", self.kv_type)
        form.addRow("Memory map", self.mmap)
        form.addRow("", self.mlock)
        self.gpu_note = QLabel("" if gpu_available else NO_GPU_OFFLOAD)
        if not gpu_available:  # (stays so when the form is enabled: Qt keeps it explicit)
            self.gpu_layers.setEnabled(False)
            self.gpu_layers.setToolTip(NO_GPU_OFFLOAD)
        self.gpu_note.setWordWrap(True)
        form.addRow(self.gpu_note)
        row = QHBoxLayout()
        self.error = QLabel()  # on a row of its own: a sentence of two lines is not cut
        self.error.setWordWrap(True)
        self.apply_button = QPushButton("Apply")
        self.apply_button.clicked.connect(self.apply)
        row.addStretch(1)
        row.addWidget(self.apply_button)
        form.addRow(self.error)
        form.addRow(row)
        self.setEnabled(False)

    def _say(self, text: str, kind: str | None) -> None:
        """Under the form: what went wrong (``kind`` "error": in the error colour), or done."""
        theme.set_colour(self.error, kind)
        self.error.setText(text)

    def show_entry(self, entry: ModelEntry | None) -> None:
        self.entry = entry
        self.error.clear()
        self.setEnabled(entry is not None)
        if entry is None:
            self.setTitle("Load settings")
            return
        self.setTitle(f"Load settings of {entry.name}")
        layers = _layers(entry)
        self.gpu_layers.setRange(-1, layers or 1000)
        options = self.library.load_settings.get(entry.name)
        # the arrows stop at what it was trained on (a longer one typed: Apply says why not)
        self.context.trained = entry.info.context_length
        self.context.setValue(options.context or ContextBox.AUTO)
        self.gpu_layers.setValue(-1 if options.gpu_layers is None else options.gpu_layers)
        self.threads.setValue(options.threads or 0)
        self.batch.setValue(options.batch)
        self.flash_attn.setCurrentIndex(self.flash_attn.findData(options.flash_attn))
        self.mmap.setCurrentIndex(self.mmap.findData(options.mmap))
        self.kv_type.setCurrentIndex(self.kv_type.findData(options.kv_type))
        self.mlock.setChecked(options.mlock)

    def options(self) -> ModelLoadOptions:
        return ModelLoadOptions(
            context=None if self.context.value() == ContextBox.AUTO else self.context.value(),
            gpu_layers=None if self.gpu_layers.value() < 0 else self.gpu_layers.value(),
            threads=self.threads.value() or None, batch=self.batch.value(),
            flash_attn=self.flash_attn.currentData(), kv_type=self.kv_type.currentData(),
            mmap=self.mmap.currentData(), mlock=self.mlock.isChecked())

    @Slot()
    def apply(self) -> bool:
        entry = self.entry
        if entry is None:
            return False
        options = self.options()
        try:
            check_for_model(options, name=entry.name, trained_context=entry.info.context_length,
                            layers=_layers(entry))
            self.library.load_settings.put(entry.name, options)
        except OutpostError as exc:
            self._say(str(exc), "error")
            return False
        self._say("Saved: used from the model's next load.", None)
        self.applied.emit(entry.name)
        return True


def _layers(entry: ModelEntry) -> int:
    return int(entry.info.metadata.get(f"{entry.info.architecture}.block_count") or 0)


class DownloadRow(QWidget):
    """One queued download: its name, a progress bar (or its state), cancel / retry."""

    def __init__(self, item, downloads: Downloads, parent=None):
        super().__init__(parent)
        self.url = item.url
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 2, 0, 2)
        top = QHBoxLayout()
        self.name = QLabel(f"<b>{item.model_name}</b>")
        self.name.setToolTip(item.url)
        top.addWidget(self.name, 1)
        if item.state == QueueState.FAILED:
            retry = QPushButton("Retry")
            retry.setAccessibleName(f"Retry the download of {item.model_name}")
            retry.clicked.connect(lambda: downloads.retry(self.url))
            top.addWidget(retry)
        self.cancel = QPushButton("Cancel")
        self.cancel.setAccessibleName(f"Cancel the download of {item.model_name}")
        self.cancel.setToolTip("Take it off the queue; what was downloaded is kept, so "
                               "downloading the same URL again resumes it")
        self.cancel.clicked.connect(lambda: downloads.remove(self.url))
        top.addWidget(self.cancel)
        layout.addLayout(top)
        self.bar = QProgressBar()
        self.bar.setAccessibleName(f"Download of {item.model_name}")
        self.bar.setRange(0, 1000)
        self.bar.setTextVisible(True)
        self.state = QLabel({
            QueueState.QUEUED: "Queued",
            QueueState.WAITING_FOR_NETWORK: "Waiting for the network: starts when "
                                            "the host can be reached",
            QueueState.FAILED: f"Failed: {item.failure_words(RESUME_HERE)}",
        }[item.state] if downloads.running != item.url else "Starting…")
        self.state.setWordWrap(True)
        layout.addWidget(self.bar)
        layout.addWidget(self.state)
        self.bar.setVisible(downloads.running == item.url)

    def show_progress(self, p: Progress) -> None:
        self.bar.setVisible(True)
        if p.fraction is None:
            self.bar.setRange(0, 0)  # busy: the size is unknown
        else:
            self.bar.setRange(0, 1000)
            self.bar.setValue(int(p.fraction * 1000))
        self.bar.setFormat(progress_text(p))
        self.state.setText("Downloading" + (f" (resumed at {size_text(p.resumed_from)})"
                                            if p.resumed_from else ""))


class ModelManager(QDialog):
    use_requested = Signal(str)  # a model's path
    load_settings_changed = Signal(str)  # a model's path (a reference's name is not its file's)

    def __init__(self, library: ModelLibrary, downloads: Downloads, context_cap: int,
                 gpu_available: bool, in_use=lambda: None, parent=None,
                 changes: ModelChanges | None = None):
        """``in_use()`` -> the file name of the model the window uses now (or None).
        ``changes``: renames and removes that keep the setting, the conversations and the usage
        rows in step (``app.chat.model_changes``; None: the library alone, in tests)."""
        super().__init__(parent)
        self.setWindowTitle("Models")
        self.resize(980, 720)
        self.library, self.downloads, self.context_cap = library, downloads, context_cap
        self.changes = changes
        self.in_use = in_use
        self.entries: list[ModelEntry] = []
        layout = QVBoxLayout(self)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setAccessibleName("Models")
        self.table.setAccessibleDescription("Your local models; Enter or a double click uses "
                                            "the selected one.")
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for column in range(1, len(COLUMNS)):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        self.table.itemSelectionChanged.connect(self._selected)
        self.table.doubleClicked.connect(lambda _: self._use())
        layout.addWidget(self.table, 1)
        self.problems = QLabel()
        self.problems.setWordWrap(True)
        layout.addWidget(self.problems)
        buttons = QHBoxLayout()
        self.use_button = QPushButton("Use")
        self.import_button = QPushButton("Import…")
        self.rename_button = QPushButton("Rename…")
        self.remove_button = QPushButton("Remove…")
        for button, slot in ((self.use_button, self._use), (self.import_button, self._import),
                             (self.rename_button, self._rename),
                             (self.remove_button, self._remove)):
            button.clicked.connect(slot)
            buttons.addWidget(button)
        buttons.addStretch(1)
        layout.addLayout(buttons)
        # the load settings and the downloads scroll on a screen too small for them (800x600)
        lower_box = QWidget()
        lower = QHBoxLayout(lower_box)
        lower.setContentsMargins(0, 0, 0, 0)
        self.settings_form = LoadSettingsForm(library, gpu_available)
        self.settings_form.applied.connect(
            lambda _name: self.load_settings_changed.emit(str(self.settings_form.entry.path)))
        self.settings_form.applied.connect(lambda _: self.refresh())
        lower.addWidget(self.settings_form, 1)
        lower.addWidget(self._build_downloads(), 1)
        lower_scroll = QScrollArea()
        lower_scroll.setAccessibleName("Load settings and download")
        lower_scroll.setWidgetResizable(True)
        lower_scroll.setFrameShape(QFrame.Shape.NoFrame)
        lower_scroll.setWidget(lower_box)
        layout.addWidget(lower_scroll, 3)
        close = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)  # as every dialog
        close.rejected.connect(self.reject)
        layout.addWidget(close)
        downloads.changed.connect(self.show_downloads)
        downloads.progress.connect(self.show_progress)
        downloads.finished.connect(lambda _: self.refresh())
        downloads.notice.connect(self.download_note.setText)
        downloads.failed.connect(self._on_download_failed)
        self.refresh()
        self._select_in_use()
        self.show_downloads()

    def event(self, event: QEvent) -> bool:
        """Tall enough for its wrapped sentences at its width (the GPU note, an error under
        the load settings, a download's state): Qt's minimum size gives each one line, so at
        the smallest size a note of two lines was drawn over the mlock check box."""
        handled = super().event(event)
        if event.type() in (QEvent.Type.LayoutRequest, QEvent.Type.Resize):
            layout = self.layout()
            self.setMinimumHeight(max(layout.totalMinimumSize().height(),
                                      layout.totalHeightForWidth(self.width())))
        return handled

    def _select_in_use(self) -> None:
        in_use = self.in_use()
        row = next((i for i, e in enumerate(self.entries) if e.path.name == in_use), 0)
        if self.entries:
            self.table.selectRow(row)

    # -- the models ---------------------------------------------------------------------------
    def refresh(self) -> None:
        selected = self.selected()
        self.entries = self.library.entries()
        in_use = self.in_use()
        self.table.setRowCount(len(self.entries))
        for row, entry in enumerate(self.entries):
            data = self.library.describe(entry, self.context_cap)
            name = entry.name + ("  (in use)" if entry.path.name == in_use else "")
            cells = (name, data["quantization"], f"{data['parameters'] / 1e6:,.0f} M",
                     f"{data['context']:,} / {data['trained_context'] or 0:,}",
                     size_text(data["size_bytes"]),
                     size_text(data["memory_estimate_bytes"]), data["source"])
            for column, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(f"{entry.path}\n{data['architecture']}, "
                                f"chat template: {'yes' if data['chat_template'] else 'no'}, "
                                f"license: {data['license'] or 'not given'}")
                if column >= 2:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight |
                                          Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(row, column, item)
        self.problems.setText("\n".join(self.library.problems))
        self.problems.setVisible(bool(self.library.problems))
        names = [e.name for e in self.entries]
        if selected is not None and selected.name in names:
            self.table.selectRow(names.index(selected.name))
        self._selected()

    def selected(self) -> ModelEntry | None:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() \
            else []
        if not rows or rows[0].row() >= len(self.entries):
            return None
        return self.entries[rows[0].row()]

    def select(self, name: str) -> None:
        for row, entry in enumerate(self.entries):
            if entry.name == name:
                self.table.selectRow(row)

    @Slot()
    def _selected(self) -> None:
        entry = self.selected()
        for button in (self.use_button, self.rename_button, self.remove_button):
            button.setEnabled(entry is not None)
        in_use = entry is not None and entry.path.name == self.in_use()
        self.use_button.setEnabled(entry is not None and not in_use)
        self.use_button.setToolTip(f"{entry.name} is the model in use." if in_use and entry
                                   else "Answer with the selected model.")
        if entry is not None:
            self.rename_button.setEnabled(entry.source in ("library", "reference"))
            self.remove_button.setEnabled(not entry.read_only)
        self.settings_form.show_entry(entry)

    def _use(self) -> None:
        entry = self.selected()
        if entry is not None and entry.path.name != self.in_use():
            self.use_requested.emit(str(entry.path))
            self.refresh()

    def _import(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Import a GGUF model",
            str(start_folder("import-model", downloads_folder)), "GGUF models (*.gguf)")
        if not path:
            return
        remember_folder("import-model", path)
        modes = ["Copy it into the models folder", "Hard-link it (same disk, no second copy)",
                 "Leave it where it is (a reference)"]
        choice, ok = QInputDialog.getItem(self, "Import", "How:", modes, 0, False)
        if ok:
            self.import_file(path, ("copy", "link", "reference")[modes.index(choice)])

    def import_file(self, path: str, mode: str = "copy") -> ModelEntry | None:
        try:
            entry = self.library.import_file(path, mode)
        except OutpostError as exc:
            QMessageBox.warning(self, "Import", str(exc))
            return None
        self.refresh()
        self.select(entry.name)
        return entry

    def _rename(self) -> None:
        entry = self.selected()
        if entry is None:
            return
        name, ok = QInputDialog.getText(self, "Rename", f"New name for {entry.name}:",
                                        text=entry.name)
        if ok and name.strip():
            try:
                renamed = self.changes.rename(entry.name, name).entry if self.changes \
                    else self.library.rename(entry.name, name)
            except OutpostError as exc:
                QMessageBox.warning(self, "Rename", str(exc))
                return
            self.refresh()
            self.select(renamed.name)

    def _remove(self) -> None:
        entry = self.selected()
        if entry is None:
            return
        what = "Forget the reference to" if entry.source == "reference" else "Delete"
        if confirm(self, "Remove", f"{what} {entry.name} ({entry.path})?",
                   "Forget" if entry.source == "reference" else "Delete"):
            self.remove(entry.name)

    def remove(self, name: str) -> bool:
        entry = self.library.find(name)
        if entry.path.name == self.in_use():
            QMessageBox.warning(self, "Remove", f"{name} is the model in use; use another "
                                "one first.")
            return False
        try:
            if self.changes is not None:
                self.changes.remove(name)  # the configured model is refused
            else:
                self.library.remove(name)
        except OutpostError as exc:
            QMessageBox.warning(self, "Remove", str(exc))
            return False
        self.refresh()
        return True

    # -- downloads ----------------------------------------------------------------------------
    def _build_downloads(self) -> QWidget:
        box = QGroupBox("Download")
        layout = QVBoxLayout(box)
        self.url = QLineEdit()
        self.url.setAccessibleName("Model URL")
        self.url.setPlaceholderText("https://huggingface.co/…/resolve/main/model.gguf")
        self.sha256 = QLineEdit()
        self.sha256.setAccessibleName("SHA-256 checksum")
        self.sha256.setPlaceholderText("sha256 (optional: Hugging Face files are checked "
                                       "against the Hub)")
        # at the dialog's smallest they shrank to "https://hugging…" and "s…": the host, and
        # what the second field is for, stay readable
        metrics = self.url.fontMetrics()
        self.url.setMinimumWidth(metrics.horizontalAdvance("https://huggingface.co/…/model") + 16)
        self.sha256.setMinimumWidth(metrics.horizontalAdvance("sha256 (optional: …") + 16)
        row = QHBoxLayout()
        self.download_button = QPushButton("Download")
        self.download_button.clicked.connect(self._download)
        row.addWidget(self.sha256, 1)
        row.addWidget(self.download_button)
        layout.addWidget(self.url)
        layout.addLayout(row)
        self.rows_box = QVBoxLayout()
        layout.addLayout(self.rows_box)
        layout.addStretch(1)
        self.download_note = QLabel()
        self.download_note.setWordWrap(True)
        layout.addWidget(self.download_note)
        self.rows: dict[str, DownloadRow] = {}
        return box

    @Slot()
    def _download(self) -> None:
        try:
            self.downloads.add(self.url.text(), self.sha256.text().strip() or None)
        except OutpostError as exc:
            self.download_note.setText(str(exc))
            return
        self.url.clear()
        self.sha256.clear()
        self.download_note.clear()

    @Slot()
    def show_downloads(self) -> None:
        for row in self.rows.values():
            row.setParent(None)
            row.deleteLater()
        self.rows = {}
        try:
            items = self.downloads.items()
        except OutpostError as exc:
            self.download_note.setText(str(exc))
            items = []
        for item in items:
            row = DownloadRow(item, self.downloads)
            self.rows[item.url] = row
            self.rows_box.addWidget(row)

    @Slot(str, object)
    def _on_download_failed(self, url: str, error: OutpostError) -> None:
        if url in self.rows:  # its row says it ("Failed: …", Retry beside it): not twice
            self.download_note.clear()
            return
        self.download_note.setText(failure_words(error))

    @Slot(str, object)
    def show_progress(self, url: str, progress: Progress) -> None:
        row = self.rows.get(url)
        if row is not None:
            row.show_progress(progress)
