"""Parts appended one after another give the document one ``setHtml`` of them all gives
(``ui.rich_append``): the streamed reply is laid out as the finished one, so it need not be set
again at its end (issue 16). Compared as ``toHtml()``: every block's format, list and table."""
from __future__ import annotations

import itertools

import pytest
from PySide6.QtGui import QTextDocument

from ui.markdown import render
from ui.rich_append import append_html

pytestmark = pytest.mark.gui

# every kind of block the Markdown renderer makes
PARTS = {
    "paragraph": "A paragraph with **bold**, *em*, `code` and a [link](https://example.com).",
    "heading": "## A heading",
    "bullets": "- one\n- two\n  - nested\n- three",
    "numbers": "1. first\n2. second",
    "loose list": "- loose one\n\n- loose two",
    "quote": "> a quote\n> on two lines",
    "rule": "---",
    "code": "```python\ndef f(x):\n    return x\n```",
    "plain code": "```\nplain\n```",
    "table": "| a | b |\n|:--|--:|\n| 1 | 2 |",
    "title": "# A title",
    "numbers from 3": "3. third\n4. fourth",
    "code in a list": "- an item\n\n  ```\n  code in it\n  ```\n- another",
    "list in a quote": "> - a\n> - b",
    "indented code": "    indented code",
    "long words": "x" * 300,
    "long code line": "```python\nx = '" + "a long line " * 40 + "'\n```",
    "list nested last": "1. first\n2. second\n   - nested under it",
}


def whole(html: str) -> str:
    document = QTextDocument()
    document.setHtml(html.strip())
    return document.toHtml()


def appended(*parts: str) -> str:
    document = QTextDocument()
    for part in parts:
        append_html(document, part)
    return document.toHtml()


def test_any_part_after_any_other_is_laid_out_as_one_document(qapp):
    differ = []
    for (first, a), (second, b) in itertools.product(PARTS.items(), repeat=2):
        html_a, html_b = render(a + "\n\n"), render(b + "\n\n")
        if appended(html_a, html_b) != whole(html_a + html_b):
            differ.append(f"{first} then {second}")
    assert differ == []


def test_a_run_of_parts_in_a_row(qapp):
    parts = [render(text + "\n\n") for text in PARTS.values()]
    parts += parts[::-1]
    assert appended(*parts) == whole("".join(parts))


def test_the_old_insert_html_lost_paragraph_margins_after_code(qapp):
    """What Qt's own insertion gives (why this module exists): the paragraph after a code block
    loses its margins, so the check above can tell."""
    from PySide6.QtGui import QTextCursor
    code, paragraph = render(PARTS["code"] + "\n\n"), render(PARTS["paragraph"] + "\n\n")
    document = QTextDocument()
    document.setHtml(code.strip())
    cursor = QTextCursor(document)
    cursor.movePosition(QTextCursor.MoveOperation.End)
    cursor.insertBlock()
    cursor.insertHtml(paragraph.strip())
    assert document.toHtml() != whole(code + paragraph)
    assert appended(code, paragraph) == whole(code + paragraph)


def test_nothing_to_append_changes_nothing(qapp):
    document = QTextDocument()
    append_html(document, render("Hello\n\n"))
    before = document.toHtml()
    append_html(document, "  \n")
    assert document.toHtml() == before


def ink_rows(document: QTextDocument) -> list[tuple[int, int]]:
    """The runs of rows (top, bottom) where ``document``, drawn on white, has any ink."""
    from PySide6.QtGui import QColor, QImage, QPainter

    document.setTextWidth(400)
    height = int(document.size().height()) + 2
    image = QImage(400, height, QImage.Format.Format_RGB32)
    image.fill(QColor("white"))
    painter = QPainter(image)
    document.drawContents(painter)
    painter.end()
    runs, start = [], None
    for y in range(height + 1):
        inked = y < height and any(image.pixelColor(x, y).lightness() < 250
                                   for x in range(400))
        if inked and start is None:
            start = y
        elif not inked and start is not None:
            runs.append((start, y))
            start = None
    return runs


def gap_after(first: str, second: str, streamed: bool) -> int:
    """Blank rows between ``first``'s last ink and ``second``'s first, one after the other."""
    html_a, html_b = render(PARTS[first] + "\n\n"), render(second + "\n\n")
    alone = QTextDocument()
    alone.setHtml(html_a.strip())
    end = ink_rows(alone)[-1][1]
    document = QTextDocument()
    if streamed:
        append_html(document, html_a)
        append_html(document, html_b)
    else:
        document.setHtml((html_a + html_b).strip())
    return next(top for top, _ in ink_rows(document) if top >= end) - end


@pytest.mark.parametrize("streamed", [False, True])
def test_a_quote_or_a_table_after_a_list_or_code_is_spaced_as_a_paragraph_is(qapp, streamed):
    """Qt drops a block's bottom margin before a table (a quote is drawn as one): a list or an
    indented code block ran into a table or a quote under it (8 and 5 px, against 17 and 28
    before a paragraph). They get the gap other blocks get, streamed or whole."""
    for first in ("bullets", "numbers", "list nested last", "indented code", "paragraph"):
        before_paragraph = gap_after(first, "Next.", streamed)
        for second in ("table", "quote"):
            gap = gap_after(first, PARTS[second], streamed)
            assert gap >= min(before_paragraph, 14) - 2, (first, second, gap, before_paragraph)
