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
