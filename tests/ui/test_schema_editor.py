"""The JSON Schema editor takes a schema file too, checked as `ask --json-schema FILE` does."""
from __future__ import annotations

import json

import pytest

from ui.schema_editor import SchemaEditor

pytestmark = pytest.mark.gui


def test_a_schema_file_is_loaded_and_a_bad_one_says_why(qtbot, tmp_path):
    editor = SchemaEditor(None)
    qtbot.addWidget(editor)
    good = tmp_path / "person.json"
    good.write_text(json.dumps({"type": "object", "properties": {"name": {"type": "string"}}}))
    assert editor.load_file(str(good))
    assert editor.schema == {"type": "object", "properties": {"name": {"type": "string"}}}
    assert "valid JSON Schema" in editor.status.text()
    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    assert not editor.load_file(str(bad))
    assert "is not JSON" in editor.status.text()
    assert editor.schema is not None and "name" in editor.edit.toPlainText()  # kept
