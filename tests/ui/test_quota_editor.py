"""The Profiles dialog: its quota editor shows money as money; its list shows whole names; quota
changes not saved are asked about before they are dropped."""
from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QPushButton

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
    box, check = editor.values["cloud_tokens_per_day"], editor.enabled["cloud_tokens_per_day"]
    assert (box.text(), box.isEnabled()) == ("no limit", False)
    check.setChecked(True)
    assert (box.text(), box.isEnabled()) == ("0", True)  # a limit of 0: no cloud at all
    check.setChecked(False)
    assert box.text() == "no limit"


def test_a_per_minute_limit_cannot_be_0(qtbot):
    """A rate of 0 was saved and meant no limit at all; the boxes start at 1."""
    editor = QuotaEditor()
    qtbot.addWidget(editor)
    for name in ("requests_per_minute", "tokens_per_minute"):
        box = editor.values[name]
        assert box.text() == "no limit"
        editor.enabled[name].setChecked(True)
        box.lineEdit().setText("0")
        box.interpretText()
        assert box.minimum() == 1 and editor.wanted()[name] == 1


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
    editor.enabled["cloud_cost_per_month"].setChecked(True)  # (as load() ticks a stored 0)
    assert editor.values["cloud_cost_per_month"].value() == 0
    check = editor.enabled["requests_per_minute"]  # a rate starts at a usable one too
    qtbot.mouseClick(check, Qt.MouseButton.LeftButton)
    assert editor.values["requests_per_minute"].value() == FIRST_VALUES["requests_per_minute"]


def _dialog_on(qtbot, tmp_path, name: str):
    """The Profiles dialog of a real database and quota file, as the admin, showing ``name``."""
    from app.storage.profiles import Profiles
    from app.storage.quotas import QuotaBook
    from app.storage.store import Store
    from ui.profiles_dialog import ProfilesDialog

    store = Store(tmp_path / "outpost.db")
    profiles = Profiles(store)
    admin = profiles.ensure_default("ana")
    if profiles.find(name) is None:
        profiles.add(name, admin)
    book = QuotaBook(tmp_path / "policy.toml", tmp_path / "quotas.json")
    return store, book, admin, lambda: _open(qtbot, ProfilesDialog(profiles, book, admin), name)


def _open(qtbot, dialog, name: str):
    qtbot.addWidget(dialog)
    names = [dialog.list.item(i).data(0x0100) for i in range(dialog.list.count())]
    dialog.list.setCurrentRow(names.index(name))
    return dialog


def _digits(box) -> str:
    return box.text().replace(box.locale().groupSeparator(), "")


def test_limits_as_large_as_the_core_accepts_are_shown_and_kept_on_save(qtbot, tmp_path):
    """A 32-bit spin box could not hold `quota set cloud_tokens_per_day 5000000000`: showing
    the profile raised OverflowError, the editor showed 0, and Save quotas wrote that over the
    admin's limits (a 2e9 limit was clamped to the box's 1e9 and saved lower)."""
    from app.storage.quotas import MAX_COST_USD, MAX_COUNT

    store, book, admin, open_dialog = _dialog_on(qtbot, tmp_path, "alice")
    big = {"cloud_tokens_per_day": 5_000_000_000, "tokens_per_minute": 2_000_000_000,
           "requests_per_minute": MAX_COUNT, "cloud_cost_per_month": 5_000_000.0}
    for name, value in big.items():
        book.set("alice", name, value, by=admin)
    dialog = open_dialog()
    editor = dialog.quotas
    for name in ("cloud_tokens_per_day", "tokens_per_minute", "requests_per_minute"):
        box = editor.values[name]
        assert editor.enabled[name].isChecked() and _digits(box) == str(big[name])
    assert _digits(editor.values["cloud_cost_per_month"]) == "$ 5000000.00"
    assert editor.wanted()["cloud_tokens_per_day"] == 5_000_000_000  # a whole number
    editor.enabled["allowed_routes"].setChecked(True)  # another limit changed, then saved
    editor.route_boxes["cloud"].setChecked(False)
    dialog.save_button.click()
    assert "Saved" in dialog.error.text()
    limits = book.limits("alice")
    assert {name: getattr(limits, name) for name in big} == big
    assert limits.allowed_routes == ("auto", "local")
    # the largest values of all, typed into the boxes, are kept exactly
    editor.values["cloud_tokens_per_day"].setValue(MAX_COUNT)
    editor.values["cloud_cost_per_month"].setValue(MAX_COST_USD)
    dialog.save_button.click()
    limits = book.limits("alice")
    assert (limits.cloud_tokens_per_day, limits.cloud_cost_per_month) == (MAX_COUNT,
                                                                           MAX_COST_USD)
    store.close()


def test_save_quotas_writes_only_the_limits_the_user_changed(qtbot, tmp_path):
    """What the editor shows rounded (a budget of $12.345678 shows as $ 12.3457) is not
    written back rounded when another limit is saved."""
    store, book, admin, open_dialog = _dialog_on(qtbot, tmp_path, "alice")
    book.set("alice", "cloud_cost_per_month", 12.345678, by=admin)
    dialog = open_dialog()
    dialog.quotas.enabled["requests_per_minute"].setChecked(True)
    dialog.quotas.values["requests_per_minute"].setValue(9)
    dialog.save_button.click()
    limits = book.limits("alice")
    assert (limits.cloud_cost_per_month, limits.requests_per_minute) == (12.345678, 9)
    store.close()


def test_the_editor_shows_a_policy_table_named_in_another_case_and_warns_of_unknown_ones(
        qtbot, tmp_path):
    """[profiles.Alice] did nothing for alice, and a table naming no profile went unnoticed."""
    (tmp_path / "policy.toml").write_text("[profiles.Alice]\nrequests_per_minute = 4\n"
                                          "[profiles.nobody]\nrequests_per_minute = 2\n")
    store, book, admin, open_dialog = _dialog_on(qtbot, tmp_path, "alice")
    dialog = open_dialog()
    dialog.show()
    editor = dialog.quotas
    assert editor.enabled["requests_per_minute"].text() == "Requests per minute (policy)"
    assert editor.values["requests_per_minute"].text() == "4"
    assert not editor.values["requests_per_minute"].isEnabled()
    assert dialog.policy_warning.isVisible()
    assert "limits for 'nobody' ([profiles.nobody])" in dialog.policy_warning.text()
    store.close()


def test_the_admin_can_allow_unpriced_models_in_the_editor(qtbot, tmp_path):
    """allow_unpriced could be set only with `outpost quota set`."""
    store, book, admin, open_dialog = _dialog_on(qtbot, tmp_path, "alice")
    book.set("alice", "cloud_cost_per_month", 5.0, by=admin)
    dialog = open_dialog()
    box = dialog.quotas.values["allow_unpriced"]
    assert not box.isChecked() and box.isEnabled()
    box.setChecked(True)
    dialog.save_button.click()
    assert book.limits("alice").allow_unpriced is True
    assert dialog.quotas.values["allow_unpriced"].isChecked()  # shown again after the save
    (tmp_path / "policy.toml").write_text("[profiles.alice]\nallow_unpriced = false\n")
    dialog.refresh("alice")
    assert not box.isChecked() and not box.isEnabled()  # the policy file's, locked
    assert "(policy)" in box.text()
    store.close()


def test_the_profile_list_is_as_wide_as_its_names(qtbot, tmp_path, artifacts_dir):
    """The list took what the quota editor left (~110 px): "root (admin, you)" was cut, under
    a horizontal scroll bar, in an almost empty list. It is as wide as its entries now; a name
    near the 40-character limit ends in "…" (whole in its tooltip), the dialog keeping its
    size."""
    from app.storage.profiles import Profiles
    from tests.support import grab_in_palette

    store, book, admin, open_dialog = _dialog_on(qtbot, tmp_path, "maria.gonzalez")
    Profiles(store).set_pin("maria.gonzalez", "8642", admin)
    dialog = open_dialog()
    dialog.show()
    qtbot.waitExposed(dialog)
    texts = [dialog.list.item(i).text() for i in range(dialog.list.count())]
    assert texts == ["ana (admin, you)", "maria.gonzalez (PIN)"]
    assert not dialog.list.horizontalScrollBar().isVisible()
    assert dialog.list.sizeHintForColumn(0) <= dialog.list.viewport().width()
    for theme in ("light", "dark"):
        grab_in_palette(qtbot, dialog, artifacts_dir / f"profiles-list-{theme}.png", theme)

    Profiles(store).add("Wilhelmina Featherstonehaugh-Cholmondely", admin)  # 40: the most
    dialog.refresh()
    qtbot.wait(20)  # (a layout pass)
    long = dialog.list.findItems("Wilhelmina", Qt.MatchFlag.MatchStartsWith)[0]
    assert long.toolTip() == long.text()
    assert not dialog.list.horizontalScrollBar().isVisible()
    assert dialog.width() == 800 and dialog.minimumSizeHint().width() <= 800
    grab_in_palette(qtbot, dialog, artifacts_dir / "profiles-list-long-name-light.png", "light")


def _type_a_limit(qtbot, dialog, name: str, value: str) -> None:
    """Tick ``name`` with the space bar and type ``value`` into its box, as a keyboard user."""
    check, box = dialog.quotas.enabled[name], dialog.quotas.values[name]
    check.setFocus(Qt.FocusReason.TabFocusReason)
    qtbot.keyClick(check, Qt.Key.Key_Space)
    assert check.isChecked() and box.isEnabled()
    box.setFocus(Qt.FocusReason.TabFocusReason)
    box.selectAll()
    qtbot.keyClicks(box, value)


def test_closing_with_quota_changes_not_saved_asks_first(qtbot, tmp_path, monkeypatch):
    """Esc (or Close) threw the quota changes away silently. It asks "Save the quota changes
    for alice?": Cancel goes back to them, Discard closes without them, Save saves and
    closes."""
    from tests.support import answer_confirmations

    store, book, admin, open_dialog = _dialog_on(qtbot, tmp_path, "alice")
    dialog = open_dialog()
    dialog.show()
    qtbot.waitExposed(dialog)
    qtbot.keyClick(dialog, Qt.Key.Key_Escape)  # nothing changed: closes, nothing asked
    assert not dialog.isVisible()

    asked = answer_confirmations(monkeypatch, "Cancel", "Cancel", "Discard", "Save")
    dialog.show()
    qtbot.waitExposed(dialog)
    _type_a_limit(qtbot, dialog, "requests_per_minute", "5000")
    qtbot.keyClick(dialog, Qt.Key.Key_Escape)  # Cancel: still open, the change still there
    assert dialog.isVisible() and dialog.quotas.wanted()["requests_per_minute"] == 5000
    assert dialog.close() is False  # Cancel (a profile switch stays where it was)
    assert dialog.isVisible()
    qtbot.keyClick(dialog, Qt.Key.Key_Escape)  # Discard: closed, nothing saved
    assert not dialog.isVisible()
    assert book.limits("alice").requests_per_minute is None
    assert [(a["title"], a["text"]) for a in asked] == [
        ("Quota changes not saved", "Save the quota changes for alice?")] * 3
    assert sorted(asked[0]["buttons"]) == ["Cancel", "Discard", "Save"]
    assert asked[0]["default"] == "Cancel"  # Enter or Esc on it changes nothing

    dialog.refresh("alice")  # (opened again: as stored)
    dialog.show()
    qtbot.waitExposed(dialog)
    _type_a_limit(qtbot, dialog, "requests_per_minute", "5000")
    [close] = [b for b in dialog.findChildren(QPushButton) if b.text() == "Close"]
    close.click()  # Save: saved, closed
    assert not dialog.isVisible() and len(asked) == 4
    assert book.limits("alice").requests_per_minute == 5000
    store.close()


def test_a_profile_change_with_quota_changes_not_saved_asks_first(qtbot, tmp_path,
                                                                    monkeypatch):
    """Clear PIN (and Set PIN, Make admin, Add, Remove) reloaded the editor over the quota
    changes, dropping them silently. It asks first: Cancel does neither; Save saves them, then
    makes the change."""
    from app.storage.profiles import Profiles
    from tests.support import answer_confirmations

    store, book, admin, open_dialog = _dialog_on(qtbot, tmp_path, "alice")
    Profiles(store).set_pin("alice", "4321", admin)
    dialog = open_dialog()
    _type_a_limit(qtbot, dialog, "requests_per_minute", "5000")
    asked = answer_confirmations(monkeypatch, "Cancel", "Save")
    dialog._clear_pin()  # Cancel: the PIN stays, the change is still shown
    assert Profiles(store).find("alice").has_pin
    assert dialog.quotas.wanted()["requests_per_minute"] == 5000
    dialog._clear_pin()  # Save: saved, then the PIN cleared
    assert not Profiles(store).find("alice").has_pin
    assert book.limits("alice").requests_per_minute == 5000
    assert [a["text"] for a in asked] == ["Save the quota changes for alice?"] * 2
    store.close()


def test_choosing_another_profile_with_quota_changes_not_saved_asks_first(
        qtbot, tmp_path, monkeypatch):
    """The editor showed the next profile's limits over the changes, silently. Cancel keeps the
    profile chosen with its changes; Save saves them before showing the other one."""
    from app.storage.profiles import Profiles
    from tests.support import answer_confirmations

    store, book, admin, open_dialog = _dialog_on(qtbot, tmp_path, "alice")
    Profiles(store).add("bob", admin)
    dialog = open_dialog()
    dialog.show()
    qtbot.waitExposed(dialog)
    rows = {dialog.list.item(i).data(0x0100): i for i in range(dialog.list.count())}
    _type_a_limit(qtbot, dialog, "tokens_per_minute", "7000")
    asked = answer_confirmations(monkeypatch, "Cancel", "Save")
    dialog.list.setCurrentRow(rows["bob"])
    assert dialog.selected().name == "alice" and dialog.heading.text() == "alice"
    assert dialog.quotas.wanted()["tokens_per_minute"] == 7000
    dialog.list.setCurrentRow(rows["bob"])
    assert dialog.selected().name == "bob" and dialog.heading.text() == "bob"
    assert book.limits("alice").tokens_per_minute == 7000
    assert book.limits("bob").tokens_per_minute is None
    assert dialog.error.text() == "Saved the quotas of alice."
    assert [a["text"] for a in asked] == ["Save the quota changes for alice?"] * 2
    store.close()


def test_switching_profile_asks_about_quota_changes_and_cancel_stays(qtbot, scripted,
                                                                    monkeypatch):
    """Switching profile closes the Profiles dialog: with quota changes not saved it asks,
    and Cancel keeps the profile signed in (and the changes); Discard switches."""
    from tests.support import answer_confirmations

    window = scripted.window
    admin = window.profile
    scripted.profiles.add("maria", admin)
    window.profile_button.open_dialog()
    dialog = window.profile_button.dialog
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitExposed(dialog)
    _type_a_limit(qtbot, dialog, "cloud_tokens_per_day", "90000")
    asked = answer_confirmations(monkeypatch, "Cancel", "Discard")
    window.profile_button.switch_requested.emit("maria")
    assert window.profile.name == admin.name and dialog.isVisible()
    assert dialog.quotas.wanted()["cloud_tokens_per_day"] == 90000
    window.profile_button.switch_requested.emit("maria")
    assert window.profile.name == "maria" and not dialog.isVisible()
    assert len(asked) == 2


def test_a_profile_not_the_admin_sees_others_by_name_only(qtbot, tmp_path, artifacts_dir):
    """Trial 10: signed in as alice (not the admin), choosing bob showed his limits and his
    conversation count, which the CLI refuses her (``quota show --profile bob``). She sees her
    own limits and count; bob's name and marks only, and why."""
    from app.storage.profiles import Profiles
    from app.storage.quotas import QuotaBook
    from app.storage.store import Store
    from tests.support import grab_in_palette
    from ui.profiles_dialog import ProfilesDialog

    store = Store(tmp_path / "outpost.db")
    profiles = Profiles(store)
    admin = profiles.ensure_default("ana")
    alice, bob = profiles.add("alice", admin), profiles.add("bob", admin)
    store.create_conversation("Bob's plans", profile="bob")
    store.create_conversation("Alice's", profile="alice")
    book = QuotaBook(tmp_path / "policy.toml", tmp_path / "quotas.json")
    book.set("bob", "cloud_tokens_per_day", 1_234_567, by=admin)
    book.set("alice", "cloud_tokens_per_day", 7_654, by=admin)
    dialog = _open(qtbot, ProfilesDialog(profiles, book, alice), "alice")
    dialog.show()
    assert dialog.quotas.isVisible()
    assert dialog.quotas.values["cloud_tokens_per_day"].value() == 7_654
    assert dialog.status.text().endswith("1 conversation · signed in")

    dialog.list.setCurrentRow([dialog.list.item(i).data(0x0100)
                               for i in range(dialog.list.count())].index(bob.name))
    assert dialog.heading.text() == "bob"
    assert not dialog.quotas.isVisible() and dialog.editing is None
    assert not dialog.save_button.isEnabled()
    assert "conversation" not in dialog.status.text()
    assert dialog.quotas.note.text() == ("Only the admin (ana) can see bob's limits and "
                                         "conversations.")
    assert dialog.quotas.values["cloud_tokens_per_day"].value() != 1_234_567
    for theme in ("light", "dark"):
        grab_in_palette(qtbot, dialog, artifacts_dir / f"profiles-by-name-{theme}.png", theme)

    as_admin = _open(qtbot, ProfilesDialog(profiles, book, admin), "bob")  # the admin sees all
    assert as_admin.quotas.values["cloud_tokens_per_day"].value() == 1_234_567
    assert as_admin.status.text().endswith("1 conversation")
    store.close()
