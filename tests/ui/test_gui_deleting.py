"""Deleting in the window: the words leave the database file, erased off the GUI thread (the
search index is rewritten: ~1 s at 100k messages); the question says the backups still hold
what is deleted, and offers to delete it there too."""
from __future__ import annotations

import threading

import pytest
from PySide6.QtCore import Qt

from tests.support import answer_confirmations, files_holding, reply, send

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
    window.sidebar.delete_requested.emit(doomed, False)

    qtbot.waitUntil(lambda: bool(erased_on), timeout=10000)
    assert erased_on != [threading.main_thread()]
    assert files_holding(store.path, "okapimarmalade") == []
    assert [c.title for c in store.list_conversations()] == ["Another chat"]


def test_deleting_a_conversation_says_the_backups_hold_it_and_deletes_it_there_if_asked(
        qtbot, scripted, scripted_engine, monkeypatch):
    store, window = scripted.store, scripted.window
    scripted_engine.script(reply("Noted, zanzibarquokka."), reply("Noted, okapimarmalade."))
    send(qtbot, scripted, "Remember zanzibarquokka")
    first = window.controller.conversation_id
    window._on_new_chat()
    send(qtbot, scripted, "Remember okapimarmalade")
    backup = store.backup("daily")
    asked = answer_confirmations(monkeypatch, ("Delete", False), "Delete")

    window.sidebar.list.setCurrentItem(next(i for i in window.sidebar.conversation_items()
                                            if i.data(Qt.ItemDataRole.UserRole) == first))
    window.sidebar.delete_action.trigger()  # the box unchecked: the backup keeps it
    scripted.tasks.wait()
    assert files_holding(backup, "zanzibarquokka") == [backup.name]
    window.sidebar.list.setCurrentItem(window.sidebar.conversation_items()[0])
    window.sidebar.delete_action.trigger()  # checked, as it is at first
    qtbot.waitUntil(lambda: "from 1 backup" in window.banner.label.text(), timeout=10000)

    assert files_holding(backup, "okapimarmalade") == []
    assert "Deleted the conversation from 1 backup." in window.banner.label.text()
    assert files_holding(backup, "zanzibarquokka") == [backup.name]
    question = asked[0]
    assert "This cannot be undone." in question["text"]
    assert "backups still hold it: a daily backup for up to 7 days" in question["text"]
    assert (question["option"], question["checked"]) == ("Delete it from the backups too", True)
    assert store.list_conversations() == []


def test_deleting_a_message_offers_the_backups_too(qtbot, scripted, scripted_engine,
                                                  monkeypatch):
    store, window = scripted.store, scripted.window
    scripted_engine.script(reply("Fine."), reply("Noted, quetzalpangolin."))
    send(qtbot, scripted, "Hello")
    send(qtbot, scripted, "Remember quetzalpangolin")
    backup = store.backup("daily")
    asked = answer_confirmations(monkeypatch, "Delete")
    [hello, fine, doomed, _] = store.branch(window.controller.conversation_id)

    window._on_delete_message(doomed.id)
    qtbot.waitUntil(lambda: "from 1 backup" in window.banner.label.text(), timeout=10000)

    assert files_holding(backup, "quetzalpangolin") == []
    assert "Deleted the messages from 1 backup." in window.banner.label.text()
    assert "backups still hold them" in asked[0]["text"]
    assert asked[0]["option"] == "Delete them from the backups too"
    assert [m.content for m in store.branch(window.controller.conversation_id)] == \
        ["Hello", "Fine."]


def test_the_questions_name_the_backups_only_when_one_holds_it(qtbot, scripted, scripted_engine,
                                                              monkeypatch):
    """A trial found the question said "Outpost's backups still hold it" of a conversation
    begun after the last backup (and the banner then said no backup held it)."""
    store, window = scripted.store, scripted.window
    scripted_engine.script(reply("Fine."), reply("Noted."))
    send(qtbot, scripted, "Hello")
    send(qtbot, scripted, "Remember this")  # no backup was taken of any of it
    asked = answer_confirmations(monkeypatch, "Delete", "Delete")
    [_, _, doomed, _] = store.branch(window.controller.conversation_id)

    window._on_delete_message(doomed.id)
    window.sidebar.list.setCurrentItem(window.sidebar.conversation_items()[0])
    window.sidebar.delete_action.trigger()
    scripted.tasks.wait()

    assert [(q["title"], q["option"]) for q in asked] == [("Delete message", None),
                                                          ("Delete conversation", None)]
    assert all("This cannot be undone." in q["text"] and "backup" not in q["text"]
               for q in asked)
    assert store.list_conversations() == []
