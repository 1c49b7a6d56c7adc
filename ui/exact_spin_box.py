"""A number box for a sampling knob that never changes the value it was given.

``QDoubleSpinBox`` rounds every value to its decimals, and the panel sent what the box held: a
min-p of 0.025 stored with a conversation went out as 0.03 after the chat was opened in the
window. This box shows up to ``DECIMALS`` decimals (without trailing zeros: 0.7, 0.025), so
anything a person types is kept as typed; a value set from code with more decimals than that
(0.30000000000000004 read from a file) is shown rounded but ``exact_value()`` still gives it
exactly, until the user changes the box."""
from __future__ import annotations

from PySide6.QtWidgets import QDoubleSpinBox, QWidget

# More than anyone types into a sampling knob (a min-p of 0.0025 still shows as such), and few
# enough that the box stays narrow and a step of 0.05 never shows a float's stray last digits.
DECIMALS = 6


class ExactSpinBox(QDoubleSpinBox):
    """A ``QDoubleSpinBox`` of ``DECIMALS`` decimals whose ``setValue`` (from code) is kept
    exactly: ``exact_value()`` is that value while the box still shows it, and the box's own
    value once the user typed or stepped another one."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setDecimals(DECIMALS)
        self._exact: float | None = None  # the value set from code, before the box rounded it
        self._setting = False
        self.valueChanged.connect(self._on_value_changed)

    def setValue(self, value: float) -> None:  # noqa: N802 (Qt naming)
        """(Python's callers only: the user's typing and steps go through Qt's own setter,
        which is not virtual, and so end the exact value in ``_on_value_changed``.)"""
        inside = self.minimum() <= value <= self.maximum()  # else the box keeps its bound
        self._exact = float(value) if inside else None  # before valueChanged: read in its slots
        self._setting = True
        try:
            super().setValue(value)
        finally:
            self._setting = False

    def exact_value(self) -> float:
        """The value to send: exactly the one set from code, unless the user changed it."""
        # (the box's own value: a subclass may make value() this one, as the Settings dialog's
        # fields do)
        return self._exact if self._exact is not None else super().value()

    def textFromValue(self, value: float) -> str:  # noqa: N802 (Qt naming)
        """The value without trailing zeros (0.7, not 0.700000), in the box's locale."""
        text = super().textFromValue(value)
        point = self.locale().decimalPoint()
        if point in text:
            text = text.rstrip("0").removesuffix(point)
        return text

    def _on_value_changed(self, _value: float) -> None:
        if not self._setting:  # typed, stepped or clamped by a new range: the box's own now
            self._exact = None
