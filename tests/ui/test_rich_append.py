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
