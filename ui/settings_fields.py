"""The Settings dialog's fields, one kind per option type (bool: a check box, choices: a combo
box, int/float: a spin box, str: a line edit or, for a file, a line edit with Browse…, list: a
folder list). Each has ``value()``, ``set_value()`` and an ``edited`` signal; ``make_field``
chooses one for an option of the schema (``app.config.settings``)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import Signal, Slot
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QHBoxLayout,
    QLineEdit,
    QListWidget,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.config.settings import Option
from engines.model_library import default_models_dir
from ui.exact_spin_box import DECIMALS, ExactSpinBox
from ui.window_state import documents_folder, remember_folder, start_folder

# where a Settings field's Browse… first opens, by option (else Documents)
_FIRST_FOLDERS: dict[str, Callable[[], Path]] = {"model_path": default_models_dir}
_WIDE_INT = 999_999_999  # spin boxes accept any number, so an out-of-range one can be explained
_WIDE_FLOAT = 1e9


# -- fields: one per type, each with value(), set_value() and an ``edited`` signal -----------------
class _BoolField(QCheckBox):
    edited = Signal()

    def __init__(self, option: Option):
        super().__init__(option.title)
        self.toggled.connect(self.edited)

    def value(self) -> bool:
        return self.isChecked()

    def set_value(self, value: bool) -> None:
        self.setChecked(bool(value))


class _ChoiceField(QComboBox):
    edited = Signal()

    def __init__(self, option: Option):
        super().__init__()
        labels = option.choice_labels or {}
        for choice in option.choices or ():
            self.addItem(labels.get(choice, str(choice).capitalize()), choice)
        self.currentIndexChanged.connect(self.edited)

    def value(self) -> Any:
        return self.currentData()

    def set_value(self, value: Any) -> None:
        self.setCurrentIndex(max(0, self.findData(value)))


def _step_bounds(option: Option, smallest: float) -> tuple[float | None, float | None]:
    """The lowest and highest values the arrows reach. An open minimum (top_p is greater than 0)
    is not reached itself: the lowest is the next value the field can hold (``smallest``: one
    in its last decimal), as on the Sampling panel."""
    low = option.minimum
    if low is not None and option.minimum_open:
        low += smallest
    return low, option.maximum


class _StepWithinBounds:
    """Arrows and Page Up/Down stay within the option's range; typing may go past it, so the
    dialog can say what the range is instead of silently refusing the keystroke."""

    bounds: tuple[float | None, float | None]

    def stepBy(self, steps: int) -> None:  # noqa: N802 (Qt naming)
        super().stepBy(steps)  # type: ignore[misc]
        low, high = self.bounds
        value = self.value()  # type: ignore[attr-defined]
        if low is not None and value < low:
            self.setValue(low)  # type: ignore[attr-defined]
        elif high is not None and value > high:
            self.setValue(high)  # type: ignore[attr-defined]


class _IntField(_StepWithinBounds, QSpinBox):
    edited = Signal()

    def __init__(self, option: Option):
        super().__init__()
        self.bounds = _step_bounds(option, 1)
        self.setRange(-_WIDE_INT, _WIDE_INT)
        self.setStepType(QSpinBox.StepType.AdaptiveDecimalStepType)
        self.setGroupSeparatorShown((option.maximum or 0) >= 10_000)
        self.setMinimumWidth(130)
        self.valueChanged.connect(self.edited)

    def value(self) -> int:  # type: ignore[override]
        return super().value()

    def set_value(self, value: int) -> None:
        self.setValue(int(value))


class _FloatField(_StepWithinBounds, ExactSpinBox):
    """A number as typed (up to six decimals: a temperature of 0.025 stays 0.025), and a stored
    one shown and saved exactly, as the Sampling panel's knobs (``ui.exact_spin_box``)."""

    edited = Signal()

    def __init__(self, option: Option):
        super().__init__()
        self.bounds = _step_bounds(option, 10 ** -DECIMALS)
        self.setRange(-_WIDE_FLOAT, _WIDE_FLOAT)
        self.setStepType(QDoubleSpinBox.StepType.AdaptiveDecimalStepType)
        self.setMinimumWidth(130)
        self.valueChanged.connect(self.edited)

    def value(self) -> float:  # type: ignore[override]
        return self.exact_value()

    def set_value(self, value: float) -> None:
        self.setValue(float(value))


class _TextField(QLineEdit):
    edited = Signal()

    def __init__(self, option: Option):
        super().__init__()
        self.setClearButtonEnabled(True)
        self.setMinimumWidth(180)
        self.textChanged.connect(self.edited)

    def value(self) -> str:
        return self.text()

    def set_value(self, value: str) -> None:
        self.setText(str(value))


class LongTextField(QPlainTextEdit):
    """A text on several lines (a system prompt): four lines high, Tab moves on."""

    edited = Signal()

    def __init__(self, option: Option):
        super().__init__()
        self.setTabChangesFocus(True)
        self.setMinimumWidth(180)
        lines = self.fontMetrics().lineSpacing() * 4
        self.setFixedHeight(lines + 2 * self.frameWidth() + 8)
        self.textChanged.connect(self.edited)

    def value(self) -> str:
        return self.toPlainText()

    def set_value(self, value: str) -> None:
        if self.toPlainText() != str(value):  # (setting it moves the cursor to the start)
            self.setPlainText(str(value))


class _CompositeField(QWidget):
    """A field made of several widgets: its accessible name and description are also those
    of ``main``, the part a screen reader should announce (set by the subclass)."""

    edited = Signal()
    main: QWidget

    def setAccessibleName(self, name: str) -> None:  # noqa: N802 (Qt naming)
        super().setAccessibleName(name)
        self.main.setAccessibleName(name)

    def setAccessibleDescription(self, text: str) -> None:  # noqa: N802 (Qt naming)
        super().setAccessibleDescription(text)
        self.main.setAccessibleDescription(text)


class FileField(_CompositeField):
    """A file's path, typed or chosen with Browse… (``Option.browse``: which files)."""

    def __init__(self, option: Option):
        super().__init__()
        self.name, self.title, self.files = option.name, option.title, option.browse
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.edit = self.main = QLineEdit()
        self.edit.setClearButtonEnabled(True)
        self.edit.setMinimumWidth(180)
        self.browse_button = QPushButton("Browse…")
        self.browse_button.setAccessibleName(f"Choose a file for {option.title}")
        layout.addWidget(self.edit, 1)
        layout.addWidget(self.browse_button)
        self.setFocusProxy(self.edit)  # the title's buddy, Tab: the path first
        self.edit.textChanged.connect(self.edited)
        self.browse_button.clicked.connect(self._on_browse_clicked)

    def value(self) -> str:
        return self.edit.text()

    def set_value(self, value: str) -> None:
        self.edit.setText(str(value))

    @Slot()
    def _on_browse_clicked(self) -> None:
        # the typed file's folder, else the one last chosen for this option (at first: the
        # models folder for a model, else Documents), never the process's current folder
        folder = os.path.dirname(os.path.expanduser(self.edit.text()))
        kind = f"setting-{self.name}"
        path, _ = QFileDialog.getOpenFileName(
            self, f"Choose the {self.title.lower()}",
            folder if os.path.isdir(folder) else
            str(start_folder(kind, _FIRST_FOLDERS.get(self.name, documents_folder))),
            self.files)
        if path:
            remember_folder(kind, path)
            self.edit.setText(path)


class FolderList(_CompositeField):
    """A list of folders with Add folder… and Remove (``shared_model_folders``)."""

    def __init__(self, option: Option):
        super().__init__()
        self.name, self.title = option.name, option.title
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.list = self.main = QListWidget()
        self.list.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.list.setMinimumWidth(180)
        self.list.setMaximumHeight(90)
        layout.addWidget(self.list, 1)
        buttons = QVBoxLayout()
        self.add_button = QPushButton("Add folder…")
        self.add_button.setAccessibleName(f"Add a folder to {option.title}")
        self.remove_button = QPushButton("Remove")
        self.remove_button.setAccessibleName(f"Remove the selected folder from {option.title}")
        buttons.addWidget(self.add_button)
        buttons.addWidget(self.remove_button)
        buttons.addStretch(1)
        layout.addLayout(buttons)
        self.add_button.clicked.connect(self._on_add_clicked)
        self.remove_button.clicked.connect(self._on_remove_clicked)
        self.list.currentRowChanged.connect(self._update_buttons)
        self._update_buttons()

    def value(self) -> list[str]:
        return [self.list.item(i).text() for i in range(self.list.count())]

    def set_value(self, folders: list[str]) -> None:
        self.list.clear()
        self.list.addItems([str(folder) for folder in folders])
        self._update_buttons()

    def add_folder(self, folder: str) -> None:
        if folder and folder not in self.value():
            self.list.addItem(folder)
            self.list.setCurrentRow(self.list.count() - 1)
            self.edited.emit()

    @Slot()
    def _on_add_clicked(self) -> None:
        # beside the folder last added (at first the home folder: a share or a stick is
        # mounted below it or beside it), never the process's current folder
        kind = f"setting-{self.name}"
        folder = QFileDialog.getExistingDirectory(self, f"Add to {self.title}",
                                                  str(start_folder(kind, Path.home)))
        if folder:
            remember_folder(kind, folder)
        self.add_folder(folder)

    @Slot()
    def _on_remove_clicked(self) -> None:
        row = self.list.currentRow()
        if row >= 0:
            self.list.takeItem(row)
            self._update_buttons()
            self.edited.emit()

    @Slot()
    def _update_buttons(self) -> None:
        self.remove_button.setEnabled(self.list.currentRow() >= 0)


def make_field(option: Option) -> QWidget:
    """The field for ``option``, chosen by its type."""
    if option.type is bool:
        return _BoolField(option)
    if option.choices is not None:
        return _ChoiceField(option)
    if option.type is int:
        return _IntField(option)
    if option.type is float:
        return _FloatField(option)
    if option.type is str:
        return FileField(option) if option.browse else LongTextField(option) \
            if option.multiline else _TextField(option)
    if option.type is list:
        return FolderList(option)
    raise TypeError(f"The Settings dialog has no field for {option.name} "
                    f"({option.type.__name__}): add one to ui/settings_fields.make_field.")


# -- one option: title, field, Reset, description, error ------------------------------------------
