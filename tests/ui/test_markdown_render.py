"""What ``ui.markdown.render`` makes of inline Markdown, as the message's QTextDocument shows
it (the formats Qt gives the characters, not the HTML's spelling)."""
from __future__ import annotations

from PySide6.QtGui import QFontInfo, QTextCursor, QTextDocument


def char_format(document: QTextDocument, word: str):
    """The character format of ``word``'s first character in ``document``."""
    found = document.find(word)
    assert not found.isNull(), word
    cursor = QTextCursor(document)
    cursor.setPosition(found.selectionStart() + 1)  # the format of the character before
    return cursor.charFormat()


def test_inline_code_is_monospace_on_the_code_tint(qapp):
    from ui import theme
    from ui.markdown import render

    document = QTextDocument()
    document.setHtml(render("Run `outpost ask` in a terminal, or **the window**."))
    code, prose = char_format(document, "outpost"), char_format(document, "terminal")
    assert code.background().color().name() == theme.code_background()
    assert prose.background().style().name == "NoBrush"
    assert QFontInfo(code.font()).fixedPitch()
    assert not QFontInfo(prose.font()).fixedPitch()


def test_a_bare_web_address_is_a_link_and_a_file_name_is_not(qapp):
    """A reply's https:// address is a link (clicked, it opens in the browser); names that
    only look like domains (settings.py, foo.com) and addresses in code stay text."""
    from ui.markdown import render

    document = QTextDocument()
    document.setHtml(render("Docs: https://example.org/guide?x=1 — edit settings.py or "
                            "foo.com, not `https://in.code`, nor //cdn.net/x, "
                            "mailto:a@b.org or ftp://old.org/f."))
    link = char_format(document, "example.org")
    assert link.isAnchor() and link.anchorHref() == "https://example.org/guide?x=1"
    for text in ("settings.py", "foo.com", "in.code", "cdn.net", "a@b.org", "old.org"):
        assert not char_format(document, text).isAnchor(), text


def test_a_single_line_break_in_a_reply_is_kept(qapp):
    """Lines written one under the other (an address, a poem) stay so, as in the user's own
    messages; a blank line still starts a paragraph."""
    from ui.markdown import render

    document = QTextDocument()
    document.setHtml(render("Line one\nLine two\nLine three\n\nA new paragraph."))
    text = document.toPlainText()
    assert text.splitlines()[:3] == ["Line one", "Line two", "Line three"], text
    assert document.blockCount() >= 2 and "A new paragraph." in text


def test_an_indented_code_block_is_drawn_as_a_fenced_one(qapp):
    """Code written by indenting it gets what a fenced block without a language gets: the box,
    the monospace font, a "Copy" link that copies it as written, and no blank line at its end
    (the paragraph under it was 27 px below, against 15 after a fenced block)."""
    from tests.ui.test_rich_append import gap_after
    from ui.markdown import code_of_link, render

    indented = render("Try this:\n\n    make run\n    make test\n\nThen look.")
    fenced = render("Try this:\n\n```\nmake run\nmake test\n```\n\nThen look.")
    assert indented == fenced
    document = QTextDocument()
    document.setHtml(indented)
    assert QFontInfo(char_format(document, "make run").font()).fixedPitch()
    assert code_of_link(char_format(document, "Copy").anchorHref()) == "make run\nmake test"
    assert gap_after("indented code", "Next.", False) == gap_after("plain code", "Next.", False)
