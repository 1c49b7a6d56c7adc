"""A streaming reply costs the same per flush at its end as at its start (issue 16): only the
block still being written is parsed again; finished blocks are appended once. The streamed
document reads the same as the finished one, and the window shows a finished reply exactly as
it shows when reopened. Counted in HTML characters parsed per flush, never in time."""
from __future__ import annotations

import statistics

import pytest

from app.domain.messages import Role
from tests.support import reply, send
from ui.message_bubble import MessageBubble

pytestmark = pytest.mark.gui


def long_reply(paragraphs: int = 120) -> str:
    parts = []
    for n in range(paragraphs):
        if n % 10 == 5:
            parts.append(f"```python\nfor i in range({n}):\n    print(i)\n```")
        elif n % 10 == 7:
            parts.append("| a | b |\n|---|---|\n| 1 | 2 |")
        else:
            parts.append(f"Paragraph {n}: " + "the lighthouse keeper walks the stairs " * 4)
    return "\n\n".join(parts)


def test_a_flush_parses_the_open_block_only_however_long_the_reply(qtbot):
    bubble = MessageBubble(Role.ASSISTANT)
    qtbot.addWidget(bubble)
    text = long_reply()
    pieces = [text[i:i + 7] for i in range(0, len(text), 7)]  # ~7 characters a token
    parsed, whole_sets = [], []
    real_set_html = bubble.body.setHtml
    bubble.body.setHtml = lambda html: (whole_sets.append(len(html)), real_set_html(html))
    for piece in pieces:
        bubble.append_text(piece)
        parsed.append(bubble.flush_html)
    assert len(whole_sets) <= 1  # the document is laid out whole once, at the first flush
    early, late = parsed[50:250], parsed[-200:]
    # flat: the last flushes parse what the early ones did, not the whole reply
    assert statistics.median(late) <= 2 * statistics.median(early)
    assert max(late) < len(bubble.body.toHtml()) / 10
    whole = MessageBubble(Role.ASSISTANT)
    qtbot.addWidget(whole)
    whole.set_text(text)
    assert bubble.body.toPlainText().split() == whole.body.toPlainText().split()


def test_the_finished_reply_is_shown_as_it_is_reopened(qtbot, scripted, scripted_engine):
    text = long_reply(12)
    scripted_engine.script(reply(text))
    send(qtbot, scripted, "Tell me about the lighthouse")
    window = scripted.window
    streamed = window.view.last_bubble().body.toHtml()
    conversation = window.controller.conversation_id
    window._on_new_chat()
    window._on_conversation_selected(conversation)
    assert window.view.last_bubble().body.toHtml() == streamed


EVERY_BLOCK = "\n\n".join([
    "# A title", "Some **bold** words and `code`.", "- one\n- two\n  - nested\n- three",
    "1. a step\n\n2. a second step, loose\n\n3. a third", "> a quote\n> on two lines", "---",
    "```python\ndef f(x):\n    return x\n```", "| a | b |\n|:--|--:|\n| 1 | 2 |",
    "- loose one\n\n- loose two\n\n  a second paragraph in it", "Closing words.",
])


@pytest.mark.parametrize("piece", [1, 3, 7])
def test_the_streamed_reply_is_the_finished_one_so_it_is_not_set_again(qtbot, piece):
    """At the end of a stream the document already is the finished reply's (no ~100 ms
    setHtml of a long reply on the GUI thread): same toHtml() as the reply opened again."""
    from ui.markdown import render
    bubble = MessageBubble(Role.ASSISTANT)
    qtbot.addWidget(bubble)
    text = EVERY_BLOCK * 2
    for start in range(0, len(text), piece):
        bubble.append_text(text[start:start + piece])
    bubble.set_text(text, rendered=render(text))
    assert bubble.kept_streamed == 1
    reopened = MessageBubble(Role.ASSISTANT)
    qtbot.addWidget(reopened)
    reopened.set_text(text)
    assert reopened.kept_streamed == 0
    assert bubble.body.toHtml() == reopened.body.toHtml()


def test_a_reply_that_ends_otherwise_than_it_streamed_is_set_whole(qtbot):
    """The stored reply is not what streamed (a repaired JSON reply, say): shown as stored."""
    bubble = MessageBubble(Role.ASSISTANT)
    qtbot.addWidget(bubble)
    bubble.append_text("Paragraph one.\n\nParagraph two")
    bubble.set_text("Something else", rendered=None)
    assert bubble.kept_streamed == 0
    assert bubble.body.toPlainText() == "Something else"
