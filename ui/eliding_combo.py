"""A combo box whose closed face ends its text with "…" when it is narrower than the text.

Qt's combo box cuts the text at the edge, mid-letter ("Auto (cloud, local fallbacl"), which
reads as a bug; the open list shows every entry whole either way."""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QComboBox, QStyle, QStyleOptionComboBox, QStylePainter


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
        chrome = self.width() - self.text_width()
        return chrome + self.fontMetrics().horizontalAdvance(self.currentText()) + 1

    def shown_text(self) -> str:
        """The current text as the closed box shows it."""
        return self.fontMetrics().elidedText(self.currentText(), Qt.TextElideMode.ElideRight,
                                             self.text_width())

    def _option(self) -> QStyleOptionComboBox:
        option = QStyleOptionComboBox()
        self.initStyleOption(option)
        return option
