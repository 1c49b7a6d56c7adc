"""Ctrl+F / Ctrl+K in the real window (issue 15): results as you type from the real database,
keyboard navigation, and opening a hit scrolls to it, switching to its branch."""
from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from app.domain.messages import Role
from tests.support import reply, send

pytestmark = pytest.mark.gui


def test_search_finds_opens_and_switches_branch(qtbot, scripted, scripted_engine,
                                                artifacts_dir):
    window = scripted.window
    store = scripted.store
    scripted_engine.script(reply("The lighthouse stands on the cliff."), reply("Tea is good."))
    send(qtbot, scripted, "Where is the lighthouse?")
    first = window.controller.conversation_id
    window._on_new_chat()
    send(qtbot, scripted, "Tell me about tea.")
    # a second version of the first question's answer: the lighthouse reply leaves the path
    question = [m for m in store.messages(first) if m.role is Role.USER][0]
    lighthouse_reply = [m for m in store.messages(first) if m.role is Role.ASSISTANT][0]
    store.add_message(first, Role.ASSISTANT, "Another answer.", parent_id=question.id)
    assert lighthouse_reply.id not in {m.id for m in store.branch(first)}

    qtbot.keyClick(window, Qt.Key.Key_K, Qt.KeyboardModifier.ControlModifier)
    dialog = window.search_dialog
    qtbot.addWidget(dialog)
    assert dialog.results.count() == 2  # empty field: the recent chats (a switcher)
    qtbot.keyClicks(dialog.field, "lighth")
    # the chat (its title) and both messages that say it
    qtbot.waitUntil(lambda: dialog.results.count() == 3 and "result" in dialog.status.text(),
                    timeout=3000)
    label = dialog.results.itemWidget(dialog.results.item(1)).text()
    assert "<b>lighthouse</b>" in label.lower() or "<b>Lighthouse</b>" in label
    dialog.resize(640, 300)
    dialog.grab().save(str(artifacts_dir / "search.png"))
    # Down then Enter: the second hit (the reply, on the other branch) opens
    hits = [dialog.results.item(i).data(Qt.ItemDataRole.UserRole)
            for i in range(dialog.results.count())]
    target = hits.index((first, lighthouse_reply.id))
    for _ in range(target):
        qtbot.keyClick(dialog.field, Qt.Key.Key_Down)
    qtbot.keyClick(dialog.field, Qt.Key.Key_Return)
    assert window.controller.conversation_id == first
    assert lighthouse_reply.id in {m.id for m in store.branch(first)}  # its branch is active
    assert window.view.bubble_of(lighthouse_reply.id) is not None

    # Ctrl+F searches this conversation only
    qtbot.keyClick(window, Qt.Key.Key_F, Qt.KeyboardModifier.ControlModifier)
    local = window.search_dialog
    qtbot.addWidget(local)
    qtbot.keyClicks(local.field, "tea")
    qtbot.waitUntil(lambda: "Nothing found" in local.status.text(), timeout=3000)
