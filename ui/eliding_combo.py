"""A combo box whose closed face ends its text with "…" when it is narrower than the text.

Qt's combo box cuts the text at the edge, mid-letter ("Auto (cloud, local fallbacl"), which
reads as a bug; the open list shows every entry whole either way."""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QComboBox, QStyle, QStyleOptionComboBox, QStylePainter

# what an editable box's line edit keeps around its text: QLineEdit's own margin (2 px a
# side) and the cursor
_LINE_EDIT_ROOM = 5


def whole_width(combo: QComboBox) -> int:
    """The width that shows ``combo``'s current text whole, in its line edit when it is
    editable (``ui.header_pickers`` wraps for it). Measured each time: a box's size hint is
    its items' as first shown, not the text it holds now."""
    option = QStyleOptionComboBox()
    combo.initStyleOption(option)
    field = combo.style().subControlRect(QStyle.ComplexControl.CC_ComboBox, option,
                                         QStyle.SubControl.SC_ComboBoxEditField, combo).width()
    text = combo.fontMetrics().horizontalAdvance(combo.currentText()) + 1
    edit = combo.lineEdit()
    if edit is not None:
        margins = edit.textMargins()
        text += _LINE_EDIT_ROOM + margins.left() + margins.right()
    return combo.width() - field + text


class ElidingComboBox(QComboBox):
    """A non-editable ``QComboBox`` that elides its current text to fit."""

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        painter = QStylePainter(self)
        option = self._option()
        painter.drawComplexControl(QStyle.ComplexControl.CC_ComboBox, option)
        option.currentText = self.shown_text()
        painter.drawControl(QStyle.ControlElement.CE_ComboBoxLabel, option)

    def text_width(self) -> int:
        """The pixels the closed box has for its text."""
        return self.style().subControlRect(QStyle.ComplexControl.CC_ComboBox, self._option(),
                                           QStyle.SubControl.SC_ComboBoxEditField, self).width()

    def whole_width(self) -> int:
        """The width that shows the current text whole (``ui.header_pickers`` wraps for it)."""
        return whole_width(self)

    def shown_text(self) -> str:
        """The current text as the closed box shows it."""
        return self.fontMetrics().elidedText(self.currentText(), Qt.TextElideMode.ElideRight,
                                             self.text_width())

    def _option(self) -> QStyleOptionComboBox:
        option = QStyleOptionComboBox()
        self.initStyleOption(option)
        return option
