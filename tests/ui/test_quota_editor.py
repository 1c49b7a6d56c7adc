"""The Profiles dialog's quota editor shows money as money."""
from __future__ import annotations

import pytest

from ui.profiles_dialog import QuotaEditor

pytestmark = pytest.mark.gui


def test_the_monthly_cost_box_shows_cents_and_more_digits_only_when_needed(qtbot):
    editor = QuotaEditor()
    qtbot.addWidget(editor)
    box = editor.values["cloud_cost_per_month"]
    assert box.text() == "no limit"  # unticked: not "$ 0.0000"
    editor.enabled["cloud_cost_per_month"].setChecked(True)
    shown = []
    for amount in (0, 20, 12.3, 0.005):
        box.setValue(amount)
        shown.append(box.text())
    assert shown == ["$ 0.00", "$ 20.00", "$ 12.30", "$ 0.005"]
    box.lineEdit().setText("$ 0.0075")  # typed: a budget below a cent stays possible
    box.interpretText()
    assert box.value() == pytest.approx(0.0075)


def test_an_unticked_limit_says_no_limit_and_a_ticked_zero_is_a_zero(qtbot):
    editor = QuotaEditor()
    qtbot.addWidget(editor)
    box, check = editor.values["requests_per_minute"], editor.enabled["requests_per_minute"]
    assert (box.text(), box.isEnabled()) == ("no limit", False)
    check.setChecked(True)
    assert (box.text(), box.isEnabled()) == ("0", True)  # a limit of 0: nothing at all
    check.setChecked(False)
    assert box.text() == "no limit"


def test_a_limit_ticked_by_the_user_starts_at_a_usable_value(qtbot):
    """Ticking "Cloud tokens per day" started it at 0, which refuses every cloud message until
    someone notices; it starts at a usable value (a limit loaded as 0 stays 0)."""
    from PySide6.QtCore import Qt

    from ui.profiles_dialog import FIRST_VALUES

    editor = QuotaEditor()
    qtbot.addWidget(editor)
    editor.show()
    check = editor.enabled["cloud_tokens_per_day"]
    qtbot.mouseClick(check, Qt.MouseButton.LeftButton)
    assert check.isChecked()
    assert editor.values["cloud_tokens_per_day"].value() == FIRST_VALUES["cloud_tokens_per_day"]
    editor.enabled["requests_per_minute"].setChecked(True)  # (as load() ticks a stored 0)
    assert editor.values["requests_per_minute"].value() == 0
