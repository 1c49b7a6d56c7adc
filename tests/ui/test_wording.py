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


def test_a_preset_fills_in_the_command_line_name_and_says_so(qtbot, scripted):
    """The OpenRouter preset fills Name as "openrouter" under a box saying "OpenRouter": it is
    the name the command line's presets give (``outpost providers add openrouter``) and that
    --provider takes, as "openai" and "groq" are; the field says so."""
    dialog = scripted.window.model_menu.providers_dialog_factory(scripted.window)
    qtbot.addWidget(dialog)
    dialog.preset.setCurrentIndex(dialog.preset.findData("openrouter"))
    assert (dialog.preset.currentText(), dialog.name.text()) == ("OpenRouter", "openrouter")
    assert "command line" in dialog.name.toolTip() and "openrouter" in dialog.name.toolTip()


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


def test_a_knob_has_one_name_in_settings_and_in_the_sampling_panel():
    """Settings said "Max tokens per reply" for the Sampling panel's "Max tokens"."""
    from app.config.settings import SCHEMA
    from app.domain.sampling import BY_NAME as KNOBS

    knobs = [option for option in SCHEMA if option.name in KNOBS]
    assert {option.name for option in knobs} >= {"temperature", "top_p", "max_tokens"}
    assert [option.title for option in knobs] == [KNOBS[o.name].label for o in knobs]


def test_a_choice_is_described_in_the_words_the_dialog_shows():
    """The theme's description said "system (…), light or dark" above a box offering "Follow
    the system", "Light" and "Dark"; the default route and key storage named theirs by the
    values settings.json keeps too."""
    from app.config.settings import SCHEMA

    for option in SCHEMA:
        for value, label in (option.choice_labels or {}).items():
            head = label.split(" (")[0]  # "Auto (cloud, local fallback)": Auto
            assert head in option.description, (option.name, head)
