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
