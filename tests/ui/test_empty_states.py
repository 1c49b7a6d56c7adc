"""Empty lists say what to do (a user trial: the chat list on the first start, the Providers
list before one is added and Find in this chat before a word is typed were blank boxes), as
the outbox's "The outbox is empty." and search's "Nothing found." do; and Search keeps a size
its results can be read at."""
from __future__ import annotations

from collections import Counter

import pytest
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QListWidget

from tests.support import reply, send

pytestmark = pytest.mark.gui


def ink(view: QListWidget) -> int:
    """How many pixels of the list's viewport differ from its background (the commonest)."""
    image = view.viewport().grab().toImage()
    pixels = Counter(image.pixel(x, y) for x in range(image.width())
                     for y in range(image.height()))
    background, count = pixels.most_common(1)[0]
    return sum(pixels.values()) - count


def legible(view: QListWidget) -> bool:
    """Whether something is drawn in the empty list, in a colour that reads on it (4.5:1)."""
    from ui import theme

    image = view.viewport().grab().toImage()
    pixels = Counter(image.pixel(x, y) for x in range(image.width())
                     for y in range(image.height()))
    background = QColor(pixels.most_common(1)[0][0])
    return any(theme.contrast_ratio(QColor(p), background) >= 4.5 for p in pixels)


def test_the_chat_list_on_the_first_start_says_how_to_begin(qtbot, scripted, scripted_engine):
    sidebar = scripted.window.sidebar
    scripted.window.show()
    qtbot.waitExposed(scripted.window)
    assert sidebar.conversation_count() == 0
    assert ink(sidebar.list) > 0 and legible(sidebar.list)
    assert sidebar.list.shown_hint().startswith("No chats yet.")
    assert "No chats yet." in sidebar.list.accessibleDescription()  # said to a screen reader
    scripted_engine.script(reply("Hello."))
    send(qtbot, scripted, "Hi")
    assert sidebar.conversation_count() == 1
    assert sidebar.list.shown_hint() == ""
    assert "No chats yet." not in sidebar.list.accessibleDescription()
    assert "F2 renames it" in sidebar.list.accessibleDescription()  # its own, kept


def test_the_providers_list_says_to_add_one_from_a_preset(qtbot, scripted):
    dialog = scripted.window.model_menu.providers_dialog_factory(scripted.window)
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitExposed(dialog)
    assert dialog.list.count() == 0
    assert ink(dialog.list) > 0 and legible(dialog.list)
    assert "preset" in dialog.list.shown_hint()


def test_find_in_this_chat_says_what_to_type_and_keeps_a_readable_size(qtbot, scripted,
                                                                       scripted_engine):
    window = scripted.window
    scripted_engine.script(reply("The lighthouse stands on the cliff."))
    send(qtbot, scripted, "Where is the lighthouse?")
    window.open_search(this_chat=True)
    dialog = window.search_dialog
    qtbot.addWidget(dialog)
    qtbot.waitExposed(dialog)
    assert dialog.results.count() == 0
    assert ink(dialog.results) > 0 and legible(dialog.results)
    assert dialog.results.shown_hint() == "Type words to find them in this chat."
    qtbot.keyClicks(dialog.field, "lighthouse")
    qtbot.waitUntil(lambda: dialog.results.count() > 0, timeout=3000)
    assert dialog.results.shown_hint() == ""
    dialog.close()
    # Ctrl+K at its smallest (it shrank to 92 x 140: "Chat titl…", a date cut to "2026-12-")
    everywhere = window.open_search(this_chat=False)
    qtbot.addWidget(everywhere)
    qtbot.waitExposed(everywhere)
    everywhere.resize(everywhere.minimumSizeHint())
    qtbot.waitUntil(lambda: everywhere.width() < 640)
    assert everywhere.width() >= 360 and everywhere.height() >= 240
    placeholder = everywhere.field.placeholderText()
    assert placeholder == "Chat title or words in any message"
    assert everywhere.field.width() > \
        everywhere.field.fontMetrics().horizontalAdvance(placeholder)
