"""Confirmations name their action and default to Cancel (ui.confirm), in every dialog that
deletes or hands something on."""
from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from app.config.providers import ProviderConfig
from tests.support import answer_confirmations
from ui.confirm import Confirmation

pytestmark = pytest.mark.gui


@pytest.mark.parametrize("key", [Qt.Key.Key_Return, Qt.Key.Key_Escape])
def test_enter_and_escape_on_a_confirmation_change_nothing(qtbot, key):
    box = Confirmation(None, "Delete conversation", "Delete \u201cNotes\u201d?", "Delete")
    qtbot.addWidget(box)
    assert [b.text() for b in box.buttons()] == ["Delete", "Cancel"]
    assert box.defaultButton() is box.cancel_button
    box.show()
    qtbot.waitExposed(box)
    with qtbot.waitSignal(box.finished):
        qtbot.keyClick(box, key)
    assert not box.confirmed()


def test_the_action_button_confirms(qtbot):
    box = Confirmation(None, "Remove provider", "Remove lab and forget its key?", "Remove")
    qtbot.addWidget(box)
    box.show()
    with qtbot.waitSignal(box.finished):
        box.action_button.click()
    assert box.confirmed()


def test_removing_a_provider_asks_with_remove_and_cancel(qtbot, scripted, monkeypatch):
    from ui.providers_dialog import ProvidersDialog

    scripted.registry.add(ProviderConfig("lab", "openai", "https://llm.example.org/v1", "m"))
    dialog = ProvidersDialog(scripted.registry, scripted.keys, scripted.settings,
                             scripted.tasks, scripted.window)
    qtbot.addWidget(dialog)
    dialog.list.setCurrentRow(0)
    asked = answer_confirmations(monkeypatch, "Cancel", "Remove")
    dialog._on_remove()
    assert [p.name for p in scripted.registry.list()] == ["lab"]  # Cancel keeps it
    dialog._on_remove()
    assert scripted.registry.list() == []
    assert [(a["buttons"], a["default"]) for a in asked] == [(["Remove", "Cancel"], "Cancel")] * 2
