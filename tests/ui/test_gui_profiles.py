"""Profiles in the window (issue 5): the switcher with its PIN prompt, conversations per profile,
and the Profiles dialog where only the admin edits quotas (policy-file limits locked)."""
from __future__ import annotations

import pytest
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from tests.support import send

pytestmark = [pytest.mark.gui, pytest.mark.local_model]


def answer_pin_prompt(qtbot, pins: list[str], seen: list[str]) -> None:
    """When the PIN prompt opens, type each PIN in turn (noting the error shown after each)."""
    import time

    from ui.profiles_dialog import PinDialog

    deadline = time.monotonic() + 10

    def fill():
        dialog = QApplication.activeModalWidget()
        if not isinstance(dialog, PinDialog):
            if time.monotonic() < deadline:
                QTimer.singleShot(50, fill)
            return
        for pin in pins:
            dialog.edit.setText(pin)
            dialog.try_pin()
            seen.append(dialog.error.text() if dialog.error.isVisibleTo(dialog) else "")
        if dialog.isVisible():
            dialog.reject()

    QTimer.singleShot(50, fill)


def test_switch_profile_with_pin_shows_only_that_profiles_chats(qtbot, outpost, artifacts_dir):
    window = outpost.window
    admin = window.profile
    assert admin.is_admin and window.profile_button.text() == f"Profile: {admin.name} (admin)"
    send(qtbot, outpost, "A note for the admin only")
    assert window.sidebar.conversation_count() == 1
    outpost.profiles.add("maria", admin, pin="8642")

    seen: list[str] = []
    answer_pin_prompt(qtbot, ["1111"], seen)  # wrong, then cancelled: nothing changes
    window.profile_button.switch_requested.emit("maria")
    assert seen == ["Wrong PIN for maria."] and window.profile.name == admin.name

    seen.clear()
    answer_pin_prompt(qtbot, ["8642"], seen)
    window.profile_button.switch_requested.emit("maria")
    assert window.profile.name == "maria" and window.windowTitle() == "Outpost — maria"
    assert window.sidebar.conversation_count() == 0 and window.view.bubbles == []
    assert outpost.settings["last_profile"] == "maria"
    send(qtbot, outpost, "Hello from Maria")
    [mine] = outpost.store.list_conversations("maria")
    assert mine.title == "Hello from Maria" and window.sidebar.conversation_count() == 1
    rows = outpost.store.request_log()
    assert rows[-1]["profile"] == "maria" and rows[-1]["conversation_id"] == mine.id
    window.grab().save(str(artifacts_dir / "main_window_profile.png"))
    from ui.profiles_dialog import PinDialog

    start = PinDialog(outpost.profiles, "maria", window, choose=True)  # the start-up prompt
    qtbot.addWidget(start)
    start.show()
    assert start.edit.isVisible() and start.picker.count() == 2
    start.picker.setCurrentIndex(start.picker.findData(admin.name))
    assert not start.edit.isVisible() and "has no PIN" in start.prompt.text()
    start.picker.setCurrentIndex(start.picker.findData("maria"))
    start.grab().save(str(artifacts_dir / "sign_in_dialog.png"))
    start.close()

    # maria is not the admin: the Profiles dialog lets her change her PIN, nothing else
    window.profile_button.open_dialog()
    dialog = window.profile_button.dialog
    qtbot.addWidget(dialog)
    assert not dialog.add_button.isEnabled() and not dialog.save_button.isEnabled()
    assert dialog.pin_button.isEnabled()
    assert not dialog.quotas.enabled["cloud_tokens_per_day"].isEnabled()
    assert "Only the admin" in dialog.quotas.note.text()

    # no PIN needed to go back to a profile without one (no prompt: this returns at once)
    window.profile_button.switch_requested.emit(admin.name)
    assert window.profile.name == admin.name and window.sidebar.conversation_count() == 1
    assert not dialog.isVisible()  # maria's dialog closed with her session


def test_admin_edits_quotas_in_the_window_and_policy_limits_are_locked(
        qtbot, outpost, tmp_path, monkeypatch, artifacts_dir):
    policy = tmp_path / "policy.toml"
    policy.write_text("[profiles.maria]\nrequests_per_minute = 3\n")
    book = outpost.service.quotas.book
    monkeypatch.setattr(book, "policy", policy)
    window = outpost.window
    outpost.profiles.add("maria", window.profile)
    window.profile_button.open_dialog()
    dialog = window.profile_button.dialog
    qtbot.addWidget(dialog)
    names = [dialog.list.item(i).data(0x0100) for i in range(dialog.list.count())]
    dialog.list.setCurrentRow(names.index("maria"))
    editor = dialog.quotas
    assert not editor.enabled["requests_per_minute"].isEnabled()
    assert "policy file" in editor.enabled["requests_per_minute"].toolTip()
    editor.enabled["cloud_tokens_per_day"].setChecked(True)
    editor.values["cloud_tokens_per_day"].setValue(2500)
    editor.enabled["allowed_routes"].setChecked(True)
    editor.route_boxes["cloud"].setChecked(False)
    dialog.save_button.click()
    limits = book.limits("maria")
    assert limits.cloud_tokens_per_day == 2500 and limits.allowed_routes == ("auto", "local")
    assert limits.requests_per_minute == 3  # still the policy's
    assert "Saved" in dialog.error.text()
    assert "policy" in editor.enabled["requests_per_minute"].text()
    qtbot.wait(100)  # let the layout settle, as it has by the time a person looks
    dialog.grab().save(str(artifacts_dir / "profiles_dialog.png"))
    editor.enabled["cloud_tokens_per_day"].setChecked(False)  # "no limit" again
    dialog.save_button.click()
    assert book.limits("maria").cloud_tokens_per_day is None
