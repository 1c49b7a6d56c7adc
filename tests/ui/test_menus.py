"""Every item of every menu has an access letter that no other item of its menu has, so a
keyboard user reaches each one with Alt and letters (issue: "&Stop reply" and "&Settings…"
shared S, "Go to the message &box" and "Out&box…" shared B, and Alt+C, B only highlighted one;
"Find a chat or message…" had none)."""
from __future__ import annotations

import pytest
from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import QMenu

from app.config.providers import ProviderConfig
from tests.support import reply, send
from ui.access_letters import with_access_letters

pytestmark = pytest.mark.gui


def letter_faults(title: str, actions) -> list[str]:
    """What is wrong with the access letters of ``actions`` (one menu's, or the menu bar's):
    an item with none, or a letter two items share."""
    faults, seen = [], {}
    for action in actions:
        if action.isSeparator() or not action.text():
            continue
        letter = QKeySequence.mnemonic(action.text()).toString()
        if not letter:
            faults.append(f"{title}: {action.text()!r} has no access letter")
        elif letter in seen:
            faults.append(f"{title}: {action.text()!r} and {seen[letter]!r} share {letter}")
        else:
            seen[letter] = action.text()
    return faults


def menu_faults(title: str, menu: QMenu) -> list[str]:
    """``menu``'s faults and those of its submenus."""
    faults = letter_faults(title, menu.actions())
    for action in menu.actions():
        if action.menu() is not None:
            faults += menu_faults(f"{title} ▸ {action.text()}", action.menu())
    return faults


def test_every_menu_item_has_its_own_access_letter(qtbot, scripted, scripted_engine):
    window = scripted.window
    scripted.profiles.add("anna", scripted.profiles.get(window.profile_name))
    scripted.profiles.add("ann", scripted.profiles.get(window.profile_name))
    scripted.registry.add(ProviderConfig("lab", "openai", "http://127.0.0.1:9/v1", "m"))
    scripted_engine.script(reply("First answer."), reply("Second answer."))
    send(qtbot, scripted, "A question")
    window.view.bubbles[-1].request_regenerate()  # two versions: Previous and Next items
    qtbot.waitUntil(lambda: window.controller.state == "idle", timeout=10000)

    faults = letter_faults("menu bar", window.menuBar().actions())
    for action in window.menuBar().actions():
        faults += menu_faults(action.text(), action.menu())
    profile_menu = window.profile_button.menu
    profile_menu.aboutToShow.emit()  # (filled as it opens)
    assert len(profile_menu.actions()) >= 4  # three profiles, a separator, Manage profiles…
    faults += menu_faults("profile button", profile_menu)
    # the menus made as they open: a conversation's, a question's and an answer's (with a
    # selection in its text, and versions, and Regenerate with ▸ the local model and lab)
    item = window.sidebar.conversation_items()[0]
    faults += menu_faults("chat list", window.sidebar.menu_for(item))
    question, answer = window.view.bubbles[-2], window.view.bubbles[-1]
    faults += menu_faults("your message", question.menu())
    answer.body.selectAll()
    menu = answer.menu()
    assert {"Copy &selected text", "&Previous version", "Regenerate &with"} <= {
        a.text() for a in menu.actions()}
    faults += menu_faults("reply", menu)
    # every menu of the window was seen (one found later is checked too)
    for found in window.findChildren(QMenu):
        faults += menu_faults(found.title() or type(found).__name__, found)
    assert faults == []
    chat = window.menuBar().actions()[0].menu()
    assert [a.text() for a in chat.actions() if a.text()][:5] == [
        "&New chat", "S&top reply", "&Find in this chat…", "Go to the &message box",
        "Find a &chat or message…"]


def test_names_get_letters_no_fixed_item_has():
    """A word's first letter when free, else its next free one; none when all are used; an
    "&" of a name shows as one."""
    assert with_access_letters(["ann", "anna", "Anton", "tan", "M&Ms"], taken="m") == [
        "&ann", "a&nna", "An&ton", "tan", "M&&M&s"]
