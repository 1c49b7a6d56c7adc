"""The window refuses a message holding one of the user's own API keys as it refuses any send:
the error in the banner (whose key, never the key), the draft left in the composer (or the
edit in its editor), nothing stored and nothing sent. Real window, ScriptedEngine as the local
model, the key stored as the user stores it (``keep_key``)."""
from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from app.config.providers import ProviderConfig
from tests.support import reply, send

pytestmark = pytest.mark.gui

KEY = "sk-pasted-in-the-window-31415926535897"
EDIT_KEY = "sk-pasted-in-an-edit-27182818284590ab"


def test_a_key_in_the_composer_is_refused_and_the_draft_stays(qtbot, scripted,
                                                               scripted_engine, keep_key):
    scripted.registry.add(ProviderConfig("acme", "openai", "http://127.0.0.1:9/v1", "m"))
    keep_key("acme", KEY)
    window = scripted.window
    draft = f"Why is {KEY} refused?"
    window.composer.edit.setPlainText(draft)
    qtbot.keyClick(window.composer.edit, Qt.Key.Key_Return)
    assert window.controller.state == "idle"
    assert window.banner.isVisible()
    assert window.banner.label.text() == (
        "The message contains your API key for acme; remove the key and send the message "
        "again (nothing was saved or sent).")
    assert window.composer.edit.toPlainText() == draft
    assert scripted.store.list_conversations() == [] and scripted_engine.requests == []
    assert window.view.bubbles == []


def test_an_edit_with_a_key_is_refused_and_stays_in_its_editor(qtbot, scripted,
                                                                scripted_engine, keep_key):
    scripted.registry.add(ProviderConfig("acme", "openai", "http://127.0.0.1:9/v1", "m"))
    window = scripted.window
    scripted_engine.script(reply("First answer."))
    send(qtbot, scripted, "Q1")
    conversation_id = window.controller.conversation_id
    before = [m.id for m in scripted.store.messages(conversation_id)]
    keep_key("acme", EDIT_KEY)
    question = window.view.bubbles[0]
    question.start_editing()
    question.editor.edit.setPlainText(f"Q1 with {EDIT_KEY}")
    question.editor.submit()
    assert "contains your API key for acme" in window.banner.label.text()
    assert EDIT_KEY not in window.banner.label.text()
    assert question.editing() and question.editor.edit.toPlainText() == f"Q1 with {EDIT_KEY}"
    assert [m.id for m in scripted.store.messages(conversation_id)] == before
    assert len(scripted_engine.requests) == 1  # only Q1's turn
