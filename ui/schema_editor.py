"""Edits a JSON Schema for structured output, checking the schema itself as you type: OK is
enabled only for a valid schema (or an empty box: JSON without a schema). "Load from file…"
takes a schema file, as ``ask --json-schema FILE`` does."""
from __future__ import annotations

import json

from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
)

from app.domain.errors import UsageError
from app.domain.structured import check_schema, load_schema
from ui import theme
from ui.window_state import documents_folder, remember_folder, start_folder

EXAMPLE = {"type": "object", "properties": {"answer": {"type": "string"},
                                            "confidence": {"type": "number"}},
           "required": ["answer"]}


class SchemaEditor(QDialog):
    def __init__(self, schema: dict | None, parent=None):
        super().__init__(parent)
        self.setWindowTitle("JSON Schema of the reply")
        self.resize(520, 420)
        layout = QVBoxLayout(self)
        hint = QLabel("The reply must be JSON matching this schema (JSON Schema, draft 2020-12). "
                      "Leave it empty for any JSON.")
        hint.setWordWrap(True)
        layout.addWidget(hint)
        self.edit = QPlainTextEdit(json.dumps(schema, indent=2) if schema else "")
        self.edit.setPlaceholderText(json.dumps(EXAMPLE, indent=2))
        self.edit.setAccessibleName("JSON Schema")
        hint.setBuddy(self.edit)
        layout.addWidget(self.edit, 1)
        self.status = QLabel()
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok |
                                        QDialogButtonBox.StandardButton.Cancel)
        self.load_button = QPushButton("Load from file…")  # at the left, apart from OK/Cancel
        self.load_button.clicked.connect(self._choose_file)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        row = QHBoxLayout()
        row.addWidget(self.load_button)
        row.addStretch(1)
        row.addWidget(self.buttons)
        layout.addLayout(row)
        self.schema: dict | None = schema
        self.edit.textChanged.connect(self._check)
        self._check()

    def _choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load a JSON Schema",
                                              str(start_folder("schema", documents_folder)),
                                              "JSON Schema (*.json);;All files (*)")
        if path:
            remember_folder("schema", path)
            self.load_file(path)

    def load_file(self, path: str) -> bool:
        """Put the schema in ``path`` in the box (checked as the CLI checks it); a file that
        cannot be used leaves the box as it was and says why."""
        try:
            schema = load_schema(path)
        except UsageError as exc:
            self.status.setText(str(exc))
            theme.set_colour(self.status, "error")
            return False
        self.edit.setPlainText(json.dumps(schema, indent=2))
        return True

    def _check(self) -> None:
        text = self.edit.toPlainText().strip()
        ok, message = True, "Any JSON (no schema)."
        self.schema = None
        if text:
            try:
                self.schema = check_schema(json.loads(text))
                message = "✓ A valid JSON Schema."
            except ValueError as exc:
                ok, message = False, f"Not JSON: {exc}."
            except UsageError as exc:
                ok, message = False, str(exc)
        self.status.setText(message)
        theme.set_colour(self.status, "ok" if ok else "error")
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(ok)
