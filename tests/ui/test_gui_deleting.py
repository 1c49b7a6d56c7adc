"""Deleting in the window: the words leave the database file, erased off the GUI thread (the
search index is rewritten: ~1 s at 100k messages)."""
from __future__ import annotations

import threading

import pytest

from tests.support import files_holding, reply, send

pytestmark = pytest.mark.gui


def test_a_conversation_deleted_in_the_window_leaves_the_file_off_the_gui_thread(
        qtbot, scripted, scripted_engine):
    store, window = scripted.store, scripted.window
    scripted_engine.script(reply("Noted, okapimarmalade."), reply("Fine."))
    send(qtbot, scripted, "Remember okapimarmalade")
    doomed = window.controller.conversation_id
    window._on_new_chat()
    send(qtbot, scripted, "Another chat")
    erased_on: list[threading.Thread] = []
    erase = store.erase_deleted

    def recorded() -> None:
        erase()
        erased_on.append(threading.current_thread())

    store.erase_deleted = recorded  # type: ignore[method-assign]
    window.sidebar.delete_requested.emit(doomed)

    qtbot.waitUntil(lambda: bool(erased_on), timeout=10000)
    assert erased_on != [threading.main_thread()]
    assert files_holding(store.path, "okapimarmalade") == []
    assert [c.title for c in store.list_conversations()] == ["Another chat"]
