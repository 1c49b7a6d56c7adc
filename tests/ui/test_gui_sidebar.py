"""The conversation list (issue 15): grouped by date with unselectable headers, pinned chats on
top, and each chat remembering who answers it (provider and model)."""
from __future__ import annotations

import datetime as dt
import sqlite3

import pytest
from PySide6.QtCore import Qt

from app.config.providers import ProviderConfig, ProviderRegistry
from app.domain.messages import Conversation, Role
from app.storage.store import Store
from tests.support import answer_confirmations, reply, send
from ui.sidebar import Sidebar, group_of

pytestmark = pytest.mark.gui
TODAY = dt.date(2026, 11, 30)


def conversation(cid: str, day: str, pinned: bool = False) -> Conversation:
    return Conversation(cid, f"chat {cid}", f"{day}T09:00:00+00:00",
                        f"{day}T09:00:00+00:00", pinned=pinned)


def test_groups_by_date_with_headers_the_keys_skip(qtbot):
    assert group_of("2026-11-30T09:00:00+00:00", TODAY) == "Today"
    assert group_of("2026-11-29T09:00:00+00:00", TODAY) == "Yesterday"
    assert group_of("2026-11-25T09:00:00+00:00", TODAY) == "Previous 7 days"
    assert group_of("2026-10-02T09:00:00+00:00", TODAY) == "October 2026"
    sidebar = Sidebar()
    qtbot.addWidget(sidebar)
    sidebar.set_conversations([conversation("a", "2026-11-30"), conversation("p", "2026-01-05",
                                                                          pinned=True),
                               conversation("b", "2026-11-29"),
                               conversation("c", "2026-10-02")], "a", today=TODAY)
    assert sidebar.titles() == ["Pinned", "chat p", "Today", "chat a", "Yesterday", "chat b",
                                "October 2026", "chat c"]
    sidebar.show()
    sidebar.list.setFocus()
    qtbot.keyClick(sidebar.list, Qt.Key.Key_Down)  # from "chat a" over the "Yesterday" header
    assert sidebar.current_id() == "b"
    qtbot.keyClick(sidebar.list, Qt.Key.Key_Up)
    qtbot.keyClick(sidebar.list, Qt.Key.Key_Up)  # over "Today" to the pinned one
    assert sidebar.current_id() == "p"


def test_pinning_and_the_remembered_provider(qtbot, scripted, scripted_engine):
    window = scripted.window
    scripted.registry.add(ProviderConfig("far", "openai", "http://127.0.0.1:9/v1", "m0"))
    window.target_picker.refresh()
    scripted_engine.script(reply("One."), reply("Two."))
    send(qtbot, scripted, "First chat")
    first = window.controller.conversation_id
    window._on_new_chat()
    send(qtbot, scripted, "Second chat")
    second = window.controller.conversation_id
    assert scripted.store.get_conversation(second).target == "local"  # kept when sent

    window._on_pin(first, True)
    assert window.sidebar.titles()[:2] == ["Pinned", "First chat"]
    window._on_pin(first, False)
    assert "Pinned" not in window.sidebar.titles()

    scripted.store.set_target(first, "provider:far", "m-special")
    window._on_conversation_selected(first)
    assert window.target_picker.target() == "provider:far"
    assert window.model_picker.currentText() == "m-special"
    window._on_conversation_selected(second)
    assert window.target_picker.target() == "local"
    window.refresh_sidebar()
    tip = next(i.toolTip() for i in window.sidebar.conversation_items()
               if i.data(Qt.ItemDataRole.UserRole) == first)
    assert "answered by far · m-special" in tip


def test_a_chat_started_by_ask_opens_with_its_provider(qtbot, scripted, monkeypatch):
    """`outpost ask "Hello there" --provider far` (in process, against a fault server), then
    the chat opened in the window: the pickers switch to far, so the next message goes there
    (they stayed on "None (local model only)": ask stored no target)."""
    from app import cli
    from tests.fault_server import fault_server

    window = scripted.window
    monkeypatch.setattr("signal.signal", lambda *args: None)  # (ask's Ctrl+C, not pytest's)
    with fault_server() as server:
        scripted.registry.add(ProviderConfig("far", "openai", server.url + "/v1", "test-model"))
        window.target_picker.refresh()
        assert window.target_picker.target() == "local"
        assert cli.main(["ask", "Hello there", "--provider", "far"]) == 0
        assert len(server.chat_requests()) == 1
        window.refresh_sidebar()
        [conversation] = scripted.store.list_conversations(window.profile_name)
        window._on_conversation_selected(conversation.id)
        assert window.target_picker.target() == "provider:far"
        assert window.controller.provider == "far"


def test_a_target_outpost_never_writes_opens_as_the_local_model(qtbot, outpost_app,
                                                                scripted_engine):
    """A conversation whose target is "openai" (imported before the import checked it): the
    window failed at every start (the list read the provider's name after a ':'). It starts,
    lists the chat as answered by the local model, and opens it on the local model, even
    with a provider called openai configured."""
    store = Store()
    try:
        chat = store.create_conversation("Imported")
        store.add_message(chat.id, Role.USER, "Say hi")
        path = store.path
    finally:
        store.close()
    with sqlite3.connect(path) as db:  # as a file imported before the check left it
        db.execute("UPDATE conversations SET target = 'openai' WHERE id = ?", (chat.id,))
    db.close()
    ProviderRegistry().add(ProviderConfig("openai", "openai", "http://127.0.0.1:9/v1", "m0"))
    app = outpost_app(max_tokens=48, engine_factory=scripted_engine.factory)
    with qtbot.waitSignal(app.loader.model_ready, timeout=10000):
        app.start()
    window = app.window
    [item] = [i for i in window.sidebar.conversation_items()
              if i.data(Qt.ItemDataRole.UserRole) == chat.id]
    assert item.toolTip().startswith("Imported\nanswered by the local model\n")
    window._on_conversation_selected(chat.id)
    assert window.target_picker.target() == "local"
    assert window.controller.provider is None


def test_deleting_a_conversation_is_asked_with_cancel_as_the_default(qtbot, monkeypatch):
    """Del (or the context menu) asks first, with buttons that say what they do, and Enter on
    that question keeps the conversation: Cancel is the default; only Delete deletes."""
    asked = answer_confirmations(monkeypatch, "Cancel", "Delete")
    sidebar = Sidebar()
    qtbot.addWidget(sidebar)
    sidebar.set_conversations([conversation("a", "2026-11-30")], "a", today=TODAY)
    deleted: list[str] = []
    sidebar.delete_requested.connect(lambda cid, from_backups: deleted.append(cid))
    sidebar.delete_action.trigger()  # Del on the list, or the context menu's Delete
    assert [(a["title"], a["buttons"], a["default"]) for a in asked] == [
        ("Delete conversation", ["Delete", "Cancel"], "Cancel")]
    assert deleted == []
    sidebar.delete_action.trigger()
    assert deleted == ["a"]


def test_delete_says_it_asks_first(qtbot):
    """The chat list's Delete asks for a confirmation, so its menu item ends in "…" (it had
    none) as every item that asks or opens a dialog does."""
    sidebar = Sidebar()
    qtbot.addWidget(sidebar)
    sidebar.set_conversations([conversation("a", "2026-11-30")], "a", today=TODAY)
    menu = sidebar.menu_for(sidebar.conversation_items()[0])
    texts = {action.data(): action.text() for action in menu.actions()}
    assert texts == {"pin": "&Pin to the top", "rename": "&Rename", "delete": "&Delete…"}
    assert sidebar.delete_action.text() == "Delete…"


def test_f2_renames_and_del_deletes_the_selected_chat_and_help_lists_both(
        qtbot, scripted, scripted_engine, monkeypatch, artifacts_dir):
    """README: "double-click or F2 to rename, Del … to delete". Both keys work on the list,
    and Help ▸ Keyboard shortcuts lists them (it left them out), with the other keys the README
    gives that are no menu item (the reply editor's Ctrl+Enter and Escape)."""
    from PySide6.QtWidgets import QAbstractItemView, QApplication, QLineEdit

    from tests.support import grab_in_palette

    window, store = scripted.window, scripted.store
    scripted_engine.script(reply("Noted."))
    send(qtbot, scripted, "Notes on the lighthouse")
    sidebar = window.sidebar
    sidebar.list.setCurrentItem(sidebar.conversation_items()[0])
    sidebar.list.setFocus()
    qtbot.keyClick(sidebar.list, Qt.Key.Key_F2)
    assert sidebar.list.state() == QAbstractItemView.State.EditingState
    editor = QApplication.focusWidget()
    assert isinstance(editor, QLineEdit) and editor.text() == "Notes on the lighthouse"
    editor.selectAll()
    qtbot.keyClicks(editor, "Lighthouse log")
    qtbot.keyClick(editor, Qt.Key.Key_Return)  # (the view commits it queued)
    qtbot.waitUntil(lambda: [c.title for c in store.list_conversations()] == ["Lighthouse log"])

    asked = answer_confirmations(monkeypatch, "Delete")
    sidebar.list.setFocus()
    qtbot.keyClick(sidebar.list, Qt.Key.Key_Delete)
    assert asked and store.list_conversations() == []

    dialog = window.help_menu.show_shortcuts()
    qtbot.addWidget(dialog)
    rows = dialog.rows
    assert ("F2", "Rename the selected chat (in the chat list)") in rows
    assert ("Del", "Delete the selected chat (in the chat list; asks first)") in rows
    assert ("Del", "Delete the focused message and what follows") in rows  # (a reply's)
    assert ("Ctrl+Enter", "Send an edited message (in its editor)") in rows
    assert ("Esc", "Cancel editing a message") in rows
    for theme in ("light", "dark"):
        grab_in_palette(qtbot, dialog, artifacts_dir / f"shortcuts-{theme}.png", theme)


def test_f2_opens_a_named_editor_with_the_whole_title_selected(qtbot, scripted,
                                                               scripted_engine):
    """The inline editor had no accessible name, and the old title was not selected (the user
    pressed Ctrl+A before typing). It is "Chat title", the title selected: typing replaces
    it."""
    from PySide6.QtWidgets import QApplication, QLineEdit

    window, store = scripted.window, scripted.store
    scripted_engine.script(reply("Noted."))
    send(qtbot, scripted, "Notes on the lighthouse")
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow)
    sidebar = window.sidebar
    sidebar.list.setCurrentItem(sidebar.conversation_items()[0])
    sidebar.list.setFocus()
    qtbot.keyClick(sidebar.list, Qt.Key.Key_F2)
    editor = QApplication.focusWidget()
    assert isinstance(editor, QLineEdit)
    assert editor.accessibleName() == "Chat title"
    assert editor.selectedText() == "Notes on the lighthouse"
    qtbot.keyClicks(editor, "Keeper's log")
    qtbot.keyClick(editor, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: [c.title for c in store.list_conversations()] == ["Keeper's log"])
