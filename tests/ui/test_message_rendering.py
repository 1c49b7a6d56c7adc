"""How a reply reads in its bubble (user trial 9): a long code line wraps instead of scrolling
the whole message sideways, a stop the user asked for is no warning, the bubble's actions look
alike, and a nested list sits under its item as in a browser. Checked on the bubble's own
document and widgets, never on time."""
from __future__ import annotations

import pytest
from PySide6.QtCore import QUrl
from PySide6.QtGui import QFontInfo, QGuiApplication, QPalette, QTextCursor, QTextDocument

from app.domain.messages import FinishReason, Message, MessageStatus, Role
from ui import theme
from ui.markdown import code_of_link
from ui.message_bubble import MessageBubble

pytestmark = pytest.mark.gui

CODE = ("x = 'a very long line ' + 'that goes on" + " and on" * 30 + "'\n"
        "token = '" + "z" * 200 + "'\n    indented()")
REPLY = (f"Intro with a [link](https://example.org).\n\n```python\n{CODE}\n```\n\n"
         "After the code, a plain paragraph.\n\n    an indented block " + "y" * 150)


def shown(qtbot, text: str, width: int = 420, streamed: bool = False) -> MessageBubble:
    bubble = MessageBubble(Role.ASSISTANT)
    qtbot.addWidget(bubble)
    if streamed:
        for start in range(0, len(text), 5):
            bubble.append_text(text[start:start + 5])
    else:
        bubble.set_text(text, None)
    bubble.resize(width, 300)
    bubble.show()
    qtbot.waitExposed(bubble)
    return bubble


def block_of(document: QTextDocument, words: str):
    found = document.find(words)
    assert not found.isNull(), words
    return found.block()


# -- 1. a long code line wraps; nothing scrolls the message sideways ---------------------------
@pytest.mark.parametrize("streamed", [False, True], ids=["opened", "streamed"])
def test_a_long_code_line_wraps_and_the_message_never_scrolls_sideways(qtbot, streamed):
    bubble = shown(qtbot, REPLY, streamed=streamed)
    body = bubble.body
    bar = body.horizontalScrollBar()
    qtbot.waitUntil(lambda: body.document().size().width() <= body.viewport().width())
    assert bar.maximum() == 0 and not bar.isVisible()
    document = body.document()
    for words in ("x = 'a very long line", "token = 'zzz", "an indented block"):
        block = block_of(document, words)
        assert block.layout().lineCount() > 1, words  # wrapped, inside the width
        assert block.blockFormat().nonBreakableLines() is False, words


def test_copy_gives_the_code_as_written_however_it_wraps(qtbot):
    bubble = shown(qtbot, REPLY)
    document = bubble.body.document()
    copy = QTextCursor(document.find("Copy")).charFormat()
    assert code_of_link(copy.anchorHref()) == CODE
    with qtbot.waitSignal(bubble.copied) as copied:
        bubble.body.anchorClicked.emit(QUrl(copy.anchorHref()))
    assert copied.args == [CODE] and QGuiApplication.clipboard().text() == CODE


# -- 2. a stop the user asked for is no warning -------------------------------------------------
def reply_that(status: MessageStatus, finish: str, error: str | None) -> Message:
    return Message("m1", "c1", Role.ASSISTANT, "Once upon a time", status, "", "",
                   engine="local", model="scripted-model.gguf", finish_reason=finish,
                   error=error, prompt_tokens=30, completion_tokens=4, cost_usd=0.0)


@pytest.mark.parametrize("finish, error, note, warning", [
    (FinishReason.CANCELLED.value, "Stopped by the user.", "Stopped", False),
    (FinishReason.ERROR.value, "the connection broke after 16 characters",
     "⚠ interrupted — the connection broke after 16 characters", True),
    (FinishReason.CANCELLED.value, "Outpost was closed before the reply was finished.",
     "⚠ interrupted — Outpost was closed before the reply was finished.", True),
])
def test_a_stopped_reply_says_stopped_and_a_broken_one_warns(qtbot, finish, error, note,
                                                             warning):
    bubble = shown(qtbot, "Once upon a time")
    bubble.show_message_state(reply_that(MessageStatus.INTERRUPTED, finish, error))
    first_line = bubble.footer.text().splitlines()[0]
    assert first_line == note
    assert bool(bubble.footer.property("warning")) is warning
    # in the footer's own colour, as its figures are, or the warning colour
    assert bubble.footer.palette().color(QPalette.ColorRole.WindowText).name() == \
        theme.colour("warning" if warning else "muted")


# -- 3. one style for the bubble's actions -----------------------------------------------------
def test_the_bubbles_actions_and_a_code_blocks_copy_look_alike(qtbot):
    bubble = shown(qtbot, REPLY, width=700)
    bubble.show_message_state(reply_that(MessageStatus.COMPLETE, "stop", None))
    bubble.set_actions_visible(True)
    qtbot.waitUntil(bubble.actions_bar.isVisible)
    actions = [bubble.details_button, *bubble.actions_bar.buttons]
    colours = {b.palette().color(QPalette.ColorRole.ButtonText).name() for b in actions}
    sizes = {QFontInfo(b.font()).pixelSize() for b in actions}
    assert len(colours) == 1 and len(sizes) == 1, (colours, sizes)
    [colour], [size] = colours, sizes
    # a code block's Copy: the same colour, not underlined, not smaller than the actions
    copy = QTextCursor(bubble.body.document().find("Copy")).charFormat()
    assert copy.isAnchor()
    assert copy.foreground().color().name() == colour
    assert not copy.fontUnderline()
    assert QFontInfo(copy.font()).pixelSize() >= size


# -- 4. a nested list sits under its item ------------------------------------------------------
NESTED = "1. First item\n2. Second item with **bold**\n   - nested bullet\n   - another\n\nAfter."


@pytest.mark.parametrize("streamed", [False, True], ids=["opened", "streamed"])
def test_a_nested_list_sits_right_under_its_item_one_indent_in(qtbot, streamed):
    """As in a browser: the nested list begins on the line under its item, its text one
    indent (40 px) past the item's, and the space after the list comes after all of it (Qt
    put the list's bottom margin between the item and the nested list)."""
    bubble = shown(qtbot, NESTED, streamed=streamed)
    document = bubble.body.document()
    layout = document.documentLayout()
    item, nested, last = (block_of(document, w) for w in ("Second item", "nested", "another"))
    after = block_of(document, "After.")
    item_box, nested_box = layout.blockBoundingRect(item), layout.blockBoundingRect(nested)
    assert nested_box.top() == item_box.bottom()  # no gap between them

    def text_x(block) -> float:
        return layout.blockBoundingRect(block).x() + block.layout().lineAt(0).x()

    assert text_x(nested) - text_x(item) == document.indentWidth() == 40
    assert layout.blockBoundingRect(after).top() - layout.blockBoundingRect(last).bottom() >= 12

