"""Signing in when the window opens: the last profile, else the machine's default one, else
(the default profile was removed) the user is asked who they are."""
from __future__ import annotations

import pytest
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from app.config.settings import Settings
from app.storage.profiles import Profiles
from app.storage.store import Store

pytestmark = pytest.mark.gui


def test_with_the_default_profile_removed_the_window_asks_who_is_using_it(qtbot, tmp_path):
    """The window made the OS user's removed profile again (without its PIN) at every start;
    now it says that profile is gone and asks who is using Outpost."""
    from ui.app import _sign_in_at_start
    from ui.profiles_dialog import PinDialog

    settings = Settings()
    settings.set("user_id", "ana")
    store = Store(tmp_path / "outpost.db")
    profiles = Profiles(store)
    ana = profiles.ensure_default("ana")
    bo = profiles.make_admin(profiles.add("bo", ana).name, ana)
    profiles.add("cy", bo)
    profiles.remove("ana", bo)
    seen = {}

    def answer():
        dialog = QApplication.activeModalWidget()
        if not isinstance(dialog, PinDialog):
            QTimer.singleShot(20, answer)
            return
        seen["note"] = dialog.note.text()
        seen["choices"] = [dialog.picker.itemData(i) for i in range(dialog.picker.count())]
        dialog.picker.setCurrentIndex(dialog.picker.findData("cy"))
        dialog.try_pin()  # cy has no PIN: OK signs in

    QTimer.singleShot(0, answer)
    profile = _sign_in_at_start(settings, store)
    assert profile is not None and profile.name == "cy"
    assert "There is no profile named ana" in seen["note"]
    assert seen["choices"] == ["bo", "cy"]
    assert profiles.find("ana") is None  # not made again
    store.close()
