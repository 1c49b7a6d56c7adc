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

    # Ctrl+F searches this conversation only (in the window, active again as the dialog
    # closed: the window manager's part; a shortcut pressed in no active window did nothing,
    # and the closed dialog was read instead)
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow)
    qtbot.keyClick(window, Qt.Key.Key_F, Qt.KeyboardModifier.ControlModifier)
    local = window.search_dialog
    assert local is not dialog and local.isVisible()
    qtbot.addWidget(local)
    assert local.windowTitle() == "Find in this chat"  # as the menu says: not everywhere
    qtbot.keyClicks(local.field, "tea")
    qtbot.waitUntil(lambda: "Nothing found" in local.status.text(), timeout=3000)
    assert local.status.text() == "Nothing found in this chat; Ctrl+K searches every chat."


def test_rows_are_as_tall_as_their_text_and_snippets_read_as_text(qtbot, scripted):
    """A chat's row is one line and a message's two, whatever their length (a wrapped
    label's own size hint made short rows two or three lines tall), at any dialog width; a
    reply's snippet shows its words, not its Markdown marks."""
    from ui.search_dialog import SearchDialog

    store, profile = scripted.store, scripted.window.profile_name
    for title in ("Say hi", "What is 2+2?", "Write a long essay on rivers and the towns "
                  "along them"):
        store.create_conversation(title, profile=profile)
    chat = store.create_conversation("Trails", profile=profile)
    store.add_message(chat.id, Role.ASSISTANT, "1. **Take** rescues from **dry** trails\n"
                      "2. Carry `water_bottles` and a [map](https://example.org/map)")
    dialog = SearchDialog(store, profile)
    qtbot.addWidget(dialog)
    dialog.show()
    line = dialog.fontMetrics().lineSpacing()

    def height(title: str) -> int:
        return next(dialog.results.item(i).sizeHint().height()
                    for i in range(dialog.results.count())
                    if title in dialog.results.itemWidget(dialog.results.item(i)).text())

    for width in (640, 420):
        dialog.resize(width, 460)
        qtbot.waitUntil(lambda: dialog.results.viewport().width() < width - 20)
        short = {height(title) for title in ("Say hi", "What is 2+2?", "Trails")}
        assert len(short) == 1 and short.pop() < 2 * line, (width, short)
    assert height("Write a long essay") > 2 * line  # wrapped at 420: as tall as its lines
    qtbot.keyClicks(dialog.field, "dry")
    qtbot.waitUntil(lambda: "result" in dialog.status.text(), timeout=3000)
    label = dialog.results.itemWidget(dialog.results.item(0)).text()
    assert "Take rescues from <b>dry</b> trails" in label and "**" not in label, label
    assert "water_bottles" in label and "map" in label and "https" not in label
    assert dialog.results.item(0).sizeHint().height() < 3 * line + 12  # snippet and where


def test_results_that_bring_a_scroll_bar_are_all_listed_without_an_error(qtbot, scripted):
    """More hits than fit: the scroll bar comes while the rows are added, and resizes the list
    as a row is added, before the row has its label (that raised, and the list stopped at
    the rows added so far plus a blank one)."""
    from ui.search_dialog import SearchDialog

    store, profile = scripted.store, scripted.window.profile_name
    chat = store.create_conversation("Rivers", profile=profile)
    for n in range(30):
        store.add_message(chat.id, Role.USER, f"Tell me about river number {n}.")
    dialog = SearchDialog(store, profile)
    qtbot.addWidget(dialog)
    dialog.resize(640, 300)
    dialog.show()
    qtbot.waitExposed(dialog)
    qtbot.keyClicks(dialog.field, "river")
    qtbot.waitUntil(lambda: "results" in dialog.status.text(), timeout=3000)
    rows = [dialog.results.item(i) for i in range(dialog.results.count())]
    assert len(rows) > 10 and dialog.results.verticalScrollBar().isVisible()
    assert all(dialog.results.itemWidget(r) is not None for r in rows)


def test_a_message_opened_from_the_search_shows_the_focus_ring(qtbot, scripted,
                                                              scripted_engine):
    """Ctrl+K, words, Down to a message, Enter: the focus is on that message's bubble and the
    ring shows it, as Tab to a bubble does (it had the focus, unseen)."""
    from PySide6.QtWidgets import QApplication

    from ui.focus_ring import FOCUS_GIVEN, FocusRing

    window = scripted.window
    scripted_engine.script(reply("The lighthouse stands on the cliff."), reply("Tea is good."))
    send(qtbot, scripted, "Where is the lighthouse?")
    send(qtbot, scripted, "Tell me about tea.")
    window.show()
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow)
    qtbot.mouseClick(window.composer.edit.viewport(), Qt.MouseButton.LeftButton)  # no Tab yet
    qtbot.keyClick(window.composer.edit, Qt.Key.Key_K, Qt.KeyboardModifier.ControlModifier)
    dialog = window.search_dialog
    qtbot.addWidget(dialog)
    qtbot.waitUntil(dialog.isActiveWindow)
    qtbot.keyClicks(dialog.field, "cliff")
    qtbot.waitUntil(lambda: dialog.results.count() == 1 and "result" in dialog.status.text(),
                    timeout=3000)
    qtbot.keyClick(dialog.field, Qt.Key.Key_Return)
    bubble = window.view.bubbles[1]
    assert not dialog.isVisible() and window.focusWidget() is bubble
    window.activateWindow()  # what the window manager does as the dialog closes
    qtbot.waitUntil(lambda: QApplication.focusWidget() is bubble)

    def ringed():
        ring = window.findChild(FocusRing)
        return ring.target if ring is not None and ring.isVisible() else None

    qtbot.waitUntil(lambda: ringed() is bubble, timeout=3000)
    assert bubble.property(FOCUS_GIVEN) is None  # once: a later click shows none


@pytest.mark.parametrize("this_chat", [False, True], ids=["ctrl_k", "ctrl_f"])
def test_more_results_lists_the_next_page_and_no_total_is_claimed(qtbot, tmp_path,
                                                                   this_chat):
    """Ctrl+K said "51 results" (a title and the first 50 messages) for a word in 886
    messages, which read as the total, and listed no more; Ctrl+F the same (a trial). Now the
    dialog says "51+ results" while more match (it asks for one more than it lists, never
    counting them all), and More results, or Down on the last row, lists the next page."""
    from app.storage.store import Store
    from ui.search_dialog import SearchDialog

    page = 50  # messages listed at a time
    store = Store(tmp_path / "outpost.db")
    chat = store.create_conversation("Lighthouse notes", profile="ana")
    ids = [store.add_message(chat.id, Role.USER, f"The lighthouse, note {n}.").id
           for n in range(page + 3)]
    newest = [(chat.id, message) for message in ids[::-1]]
    titles = [] if this_chat else [(chat.id, "")]
    dialog = SearchDialog(store, "ana", chat.id if this_chat else None)
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.keyClicks(dialog.field, "lighthouse")

    def listed() -> list[tuple[str, str]]:
        return [dialog.results.item(i).data(Qt.ItemDataRole.UserRole)
                for i in range(dialog.results.count())]

    first = len(titles) + page
    qtbot.waitUntil(lambda: dialog.results.count() == first, timeout=3000)
    assert listed() == titles + newest[:page]
    assert dialog.status.text().startswith(f"{first}+ results, the newest first")
    assert f"{first} results" not in dialog.status.text()
    assert dialog.more_button.isVisible()
    if this_chat:  # Down on the last row: the next page, on to its first row
        dialog.results.setCurrentRow(first - 1)
        qtbot.keyClick(dialog.field, Qt.Key.Key_Down)
        assert dialog.results.currentRow() == first
    else:
        qtbot.mouseClick(dialog.more_button, Qt.MouseButton.LeftButton)
    assert listed() == titles + newest  # the rest, once each, in the same order
    assert dialog.status.text() == f"{first + 3} results: Enter opens, Up/Down choose."
    assert not dialog.more_button.isVisible()
    store.close()
