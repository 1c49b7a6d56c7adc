"""Plain words (issue 15): what the window says is the same live and after reopening, and no
internal name (an error kind, a wire format, "(s)") reaches the user."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.support import reply, send

pytestmark = pytest.mark.gui

UI = Path(__file__).resolve().parents[2] / "ui"


def test_a_reply_without_text_reads_the_same_live_and_reopened(qtbot, scripted,
                                                               scripted_engine):
    from app.domain.errors import EngineError
    from ui.message_bubble import NO_REPLY

    window = scripted.window
    scripted_engine.script([EngineError("The model stopped working.")], reply("Hello."))
    send(qtbot, scripted, "Are you there?")
    failed = window.controller.conversation_id
    live = window.view.bubbles[1].body.toPlainText()
    window.new_action.trigger()
    send(qtbot, scripted, "Another chat")
    window._on_conversation_selected(failed)
    qtbot.waitUntil(lambda: len(window.view.bubbles) == 2)
    assert live == window.view.bubbles[1].body.toPlainText() == NO_REPLY


def test_the_providers_dialog_names_the_api_type_in_words(qtbot, scripted):
    dialog = scripted.window.model_menu.providers_dialog_factory(scripted.window)
    qtbot.addWidget(dialog)
    labels = [w.text() for w in dialog.findChildren(type(dialog.result)) if w.text()]
    assert "API type" in labels and "Wire format" not in labels
    assert [dialog.kind.itemText(i) for i in range(dialog.kind.count())] == [
        "OpenAI-compatible", "Anthropic"]
    dialog.preset.setCurrentIndex(dialog.preset.findData("anthropic"))
    assert dialog.kind.currentData() == "anthropic"  # what providers.json keeps


def test_no_plural_in_brackets_in_the_window():
    """ "4 conversation(s)": every count in ui/ picks its word, and so does what the core
    and the command line say (app/: the window shows its sentences too)."""
    found = []
    for path in sorted([*UI.glob("*.py"), *UI.parent.joinpath("app").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                    re.search(r"\w\(s\)", node.value):
                found.append(f"{path.name}:{node.lineno} {node.value!r}")
    assert found == []
