"""The sampling panel's LoRA row: the conversation's GGUF LoRA adapters, with a scale. The
local model applies them without reloading (engines/llama_local.py); cloud engines cannot, so
the row is disabled for them. The window attaches one adapter, the common case; the CLI (``ask
--lora``, repeatable) can stack several, and the row keeps them all (the first shown with "+N
more", the whole list in the tooltip) and sends them all: the scale box edits the first,
Detach removes all, Change… replaces all with the one picked. Nothing is dropped unseen. A file
picked is checked to be a LoRA adapter at once (its GGUF header), not when the next message is
sent. Two lines, so the row is never wider than the panel: the adapter's name (ending in "…"
when long) and Attach/Change…, then, once one is attached, its scale and Detach."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QDoubleSpinBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.domain.adapters import SCALE_LIMIT, LoraAdapter, adapters_from_records
from app.domain.errors import OutpostError
from engines.gguf import read_lora
from engines.model_library import default_models_dir
from ui import theme
from ui.elided_label import ElidedLabel
from ui.window_state import remember_folder, start_folder


class LoraPicker(QWidget):
    changed = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.path: str | None = None  # the first adapter's file (its scale: the scale box)
        # where Attach… first opens (the window gives the library's folder, from the settings)
        self.models_folder: Callable[[], Path] = default_models_dir
        self._rest: tuple[LoraAdapter, ...] = ()  # the adapters after it, kept as they are
        lines = QVBoxLayout(self)
        lines.setContentsMargins(0, 0, 0, 0)
        row, second = QHBoxLayout(), QHBoxLayout()
        lines.addLayout(row)
        lines.addLayout(second)
        self.label = ElidedLabel()
        self.more = QLabel()  # "+N more": never cut off with a long name, unlike the label
        theme.set_colour(self.more, "muted")
        self.choose = QPushButton("Attach LoRA…")  # (its tooltip, and the others': _show)
        self.choose.clicked.connect(self._choose)
        self.scale = QDoubleSpinBox()
        self.scale.setRange(-SCALE_LIMIT, SCALE_LIMIT)
        self.scale.setSingleStep(0.1)
        self.scale.setValue(1.0)
        self.scale.setPrefix("× ")
        self.scale.setAccessibleName("LoRA scale")
        self.scale.valueChanged.connect(self._scale_changed)
        self.detach = QPushButton("Detach")
        self.detach.clicked.connect(lambda: self.set_adapter(None))
        self.error = QLabel()  # a file picked that is no LoRA adapter: why
        self.error.setWordWrap(True)
        theme.set_colour(self.error, "error")
        self.error.hide()
        row.addWidget(self.label)  # (it shrinks, elided, when the row is short of room)
        row.addWidget(self.more)  # right after the name
        row.addStretch(1)
        row.addWidget(self.choose)
        second.addWidget(QLabel("Scale"))
        second.addWidget(self.scale, 1)
        second.addWidget(self.detach)
        self._second = second
        lines.addWidget(self.error)
        self._loading = False
        self._show()

    def adapters(self) -> tuple[LoraAdapter, ...]:
        """Every adapter the conversation has, the first at the scale box's value."""
        if not self.path:
            return ()
        return (LoraAdapter(self.path, self.scale.value()), *self._rest)

    def records(self) -> list[dict]:
        return [a.record() for a in self.adapters()]

    def load(self, records) -> None:
        """Show a conversation's adapters, all of them kept; emits nothing."""
        self.error.hide()  # (about another conversation's pick)
        self._loading = True
        try:
            adapters = adapters_from_records(records)
            self.path = adapters[0].path if adapters else None
            self._rest = tuple(adapters[1:])
            self.scale.setValue(adapters[0].scale if adapters else 1.0)
            self._show()
        finally:
            self._loading = False

    def set_adapter(self, path: str | None, scale: float | None = None) -> None:
        """Attach only ``path`` (None: no adapter), replacing every adapter attached."""
        self.error.hide()  # (a refused pick is no longer the question)
        self.path = path
        self._rest = ()
        if scale is not None:
            self.scale.setValue(scale)
        self._show()
        self._changed()

    def set_local(self, local: bool) -> None:
        """Only the local model applies adapters."""
        self.setEnabled(local)
        self.setToolTip("" if local else "LoRA adapters apply to the local model only.")

    def _choose(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Attach a LoRA adapter",
                                              str(start_folder("lora", self.models_folder)),
                                              "GGUF LoRA adapters (*.gguf)")
        if path:
            remember_folder("lora", path)
            self.pick(path)

    def pick(self, path: str) -> bool:
        """Attach the file ``path`` when it is a LoRA adapter; else say why and keep what was
        attached."""
        try:
            read_lora(path)
        except OutpostError as exc:
            self.error.setText(str(exc))
            self.error.show()
            return False
        self.error.hide()
        self.set_adapter(path)
        return True

    def _show(self) -> None:
        self.label.setText(f"LoRA: {Path(self.path).name}" if self.path else "LoRA: none")
        self.more.setText(f"+{len(self._rest)} more")
        self.more.setVisible(bool(self._rest))
        for index in range(self._second.count()):
            self._second.itemAt(index).widget().setVisible(bool(self.path))
        self.choose.setText("Change…" if self.path else "Attach LoRA…")
        many = len(self._rest) + 1
        self.detach.setToolTip(f"Answer without any of the {many} adapters" if self._rest
                               else "Answer without the adapter")
        self.choose.setToolTip(
            f"Replace the {many} adapters with one LoRA file (GGUF)" if self._rest else
            "A LoRA adapter (GGUF) for the local model's architecture, applied on top of it "
            "without reloading the model; every reply records the adapter and scale it used "
            "(Details).")
        self.scale.setToolTip(
            f"How strongly {Path(self.path).name} applies: 0 no effect, 1 as trained (the "
            "other adapters keep their scales)" if self._rest and self.path else
            "How strongly the adapter applies: 0 no effect, 1 as trained")
        self._show_list()

    def _show_list(self) -> None:
        """The tooltip of the name (and "+N more"): every adapter attached, with its scale."""
        tip = "\n".join(f"{a.label()}  ({a.path})" for a in self.adapters())
        if self._rest:
            tip = f"{len(self._rest) + 1} LoRA adapters, all applied:\n{tip}"
        self.label.setToolTip(tip)
        self.more.setToolTip(tip)

    def _scale_changed(self, _value: float) -> None:
        self._show_list()
        self._changed()

    def _changed(self) -> None:
        if not self._loading:
            self.changed.emit()
