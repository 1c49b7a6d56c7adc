"""Appending rendered HTML to a document so that it ends up as if the whole HTML had been set.

A streaming reply grows block by block (``ui.markdown.IncrementalMarkdown``); setting the whole
reply's HTML again at its end costs ~100 ms for 20,000 tokens (parse and layout), all on the GUI
thread. Appending each finished part instead keeps the work per flush small, but Qt's own
``QTextCursor.insertHtml`` / ``insertFragment`` do not give the document ``setHtml`` would: the
first inserted block takes the format of the block it lands in (paragraph margins lost after a
code block, a list continued by the next list), an empty paragraph is left before a table, and a
part's last paragraph keeps its trailing space. ``append_html`` parses the part on its own, inserts
it, then gives each inserted block the format the part's own parse gave it, so the document is the
same as one ``setHtml`` of the concatenated HTML (``tests/ui/test_rich_append.py`` compares
``toHtml()`` for every Markdown construct the renderer makes).
"""
from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtGui import (QTextBlock, QTextBlockFormat, QTextCharFormat, QTextCursor,
                           QTextDocument, QTextDocumentFragment, QTextFormat)


def append_html(document: QTextDocument, html: str) -> None:
    """Append ``html`` (whole blocks) at the end of ``document``."""
    html = html.strip()
    if not html:
        return
    part = QTextDocument()
    part.setDefaultFont(document.defaultFont())
    part.setDefaultStyleSheet(document.defaultStyleSheet())
    part.setHtml(html)
    # a lone horizontal rule is a block without text: the document is not empty
    empty = document.isEmpty() and not document.begin().blockFormat().hasProperty(
        QTextFormat.Property.BlockTrailingHorizontalRulerWidth)
    frames = part.rootFrame().childFrames()
    # a part that opens with a table: Qt gives it an empty block before the table, which in a
    # whole document is the block before (the previous part's last), not a block of its own
    leads_with_table = (part.begin().length() == 1 and bool(frames)
                        and frames[0].firstPosition() <= 2)
    cursor = QTextCursor(document)
    cursor.movePosition(QTextCursor.MoveOperation.End)
    if not empty and not leads_with_table:
        # a plain new block: the last block's format (a list's, a code line's) is not carried on
        cursor.insertBlock(QTextBlockFormat(), QTextCharFormat())
    first_number = document.blockCount() - 1
    cursor.insertFragment(QTextDocumentFragment(part))
    inserted = document.findBlockByNumber(first_number)
    if (not empty and not leads_with_table and inserted.length() == 1
            and document.blockCount() - first_number == part.blockCount() + 1):
        # the part opened with a list item, which Qt put in a block of its own after ours
        QTextCursor(inserted).deleteChar()  # (the item's block stays, with its list)
        inserted = document.findBlockByNumber(first_number)
    source = part.begin()
    if leads_with_table and not empty:
        source, inserted = source.next(), inserted.next()  # the previous part's block stays
    _copy_formats(source, inserted)


def _copy_formats(source: QTextBlock, target: QTextBlock) -> None:
    """Give each target block its source block's format, keeping the list it belongs to in the
    target document (a format's object index is the document's own)."""
    cursor = QTextCursor(target)
    while source.isValid() and target.isValid():
        block_format = QTextBlockFormat(source.blockFormat())
        block_format.setObjectIndex(target.blockFormat().objectIndex())
        cursor.setPosition(target.position())
        cursor.setBlockFormat(block_format)
        cursor.setBlockCharFormat(source.charFormat())
        source, target = source.next(), target.next()


@dataclass(frozen=True)
class End:
    """Where a document ended, to cut back to (``cut_back``): a streaming reply's finished
    blocks end there, the block still being written follows and is replaced at each flush."""
    position: int
    block_format: QTextBlockFormat
    char_format: QTextCharFormat


def end_of(document: QTextDocument) -> End:
    last = document.lastBlock()
    return End(document.characterCount() - 1, QTextBlockFormat(last.blockFormat()),
               QTextCharFormat(last.charFormat()))


def cut_back(cursor: QTextCursor, end: End) -> None:
    """Remove what follows ``end``. Removing a block separator can leave the removed block's
    format on the empty block before it (a rule's, a list's): the block gets its own back."""
    cursor.setPosition(end.position)
    cursor.movePosition(QTextCursor.MoveOperation.End, QTextCursor.MoveMode.KeepAnchor)
    cursor.removeSelectedText()
    cursor.setBlockFormat(end.block_format)
    cursor.setBlockCharFormat(end.char_format)
