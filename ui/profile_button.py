"""The status bar's profile button: who is signed in. Its menu switches profile (asking for the
PIN) or opens the Profiles dialog (Chat ▸ Profiles… opens the same)."""
from __future__ import annotations

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QAction, QActionGroup
from PySide6.QtWidgets import QMenu, QPushButton, QWidget

from app.config.settings import Settings
from app.domain.errors import OutpostError
from app.storage.profiles import Profile, Profiles
from ui.access_letters import with_access_letters
from ui.profiles_dialog import ProfilesDialog, sign_in
from ui.setting_saver import save_setting

ABOUT = ("The profile you are signed in as: its conversations, usage and quotas. Click to "
         "switch.")
NAME_WIDEST = 160  # px of the name on the button


class ProfileButton(QPushButton):
    """Owns the signed-in ``profile`` and the Profiles dialog. ``switch_requested`` comes from
    its menu; whoever connects it decides whether a switch may happen now and calls
    ``sign_in_as``; ``profile_changed`` says someone else signed in."""

    switch_requested = Signal(str)  # a profile name picked in the menu
    manage_requested = Signal()
    profile_changed = Signal(object)  # the app.storage.profiles.Profile now signed in (PIN checked)
    failed = Signal(object)  # an OutpostError

    def __init__(self, profiles: Profiles, profile: Profile, settings: Settings, quotas,
                 parent: QWidget | None = None):
        """``quotas``: the chat service's ``app.storage.quotas.QuotaGuard`` (None: no Profiles
        dialog)."""
        super().__init__(parent)
        self.profiles, self.settings, self.quotas = profiles, settings, quotas
        self.profile = profile
        self.dialog: ProfilesDialog | None = None
        self.setFlat(True)
        self.setToolTip(ABOUT)
        self.menu = QMenu(self)
        self.menu.aboutToShow.connect(self._fill)
        self.setMenu(self.menu)
        self.manage_requested.connect(self.open_dialog)
        self._show_profile()

    def sign_in_as(self, name: str) -> None:
        """Switch to ``name`` after its PIN (if it has one); the previous profile's dialog
        closes. Nothing changes when the prompt is cancelled."""
        if name == self.profile.name:
            return
        try:
            profile = sign_in(self.profiles, name, self.window())
        except OutpostError as exc:
            self.failed.emit(exc)
            return
        if profile is None:  # the PIN prompt was cancelled
            self._show_profile()
            return
        # the Profiles dialog asks about quota changes not saved: Cancel stays as it was
        if self.dialog is not None and not self.dialog.close():
            self._show_profile()
            return
        self.profile = profile
        self._show_profile()
        try:
            save_setting(self.settings, "last_profile", profile.name)
        except OutpostError:
            pass  # next start opens the previous profile: harmless
        self.profile_changed.emit(profile)

    @Slot()
    def open_dialog(self) -> None:
        if self.quotas is None:
            return
        try:
            self.dialog = ProfilesDialog(self.profiles, self.quotas.book, self.profile,
                                         self.window())
        except OutpostError as exc:
            self.failed.emit(exc)
            return
        self.dialog.changed.connect(self._on_profiles_changed)
        self.dialog.show()

    @Slot()
    def _on_profiles_changed(self) -> None:
        try:
            self.profile = self.profiles.get(self.profile.name)  # admin role or PIN changed
        except OutpostError:
            return
        self._show_profile()
        if self.dialog is not None:
            self.dialog.me = self.profile

    def _show_profile(self) -> None:
        # a long name ends in "…" (whole in the tooltip): the button is part of the status
        # bar's least width, the window's
        name = self.fontMetrics().elidedText(self.profile.name, Qt.TextElideMode.ElideRight,
                                             NAME_WIDEST)
        self.setText(f"Profile: {name}" + (" (admin)" if self.profile.is_admin else ""))
        self.setAccessibleName(f"Profile: {self.profile.name}")
        self.setToolTip((f"{self.profile.name}: " if name != self.profile.name else "")
                        + ABOUT)

    @Slot()
    def _fill(self) -> None:
        self.menu.clear()
        group = QActionGroup(self.menu)
        try:
            everyone = self.profiles.list()
        except OutpostError:
            everyone = []
        labels = with_access_letters(  # M is Manage profiles'
            (p.name + (" (PIN)" if p.has_pin else "") for p in everyone), taken="m")
        for profile, label in zip(everyone, labels):
            action = QAction(label, self.menu)
            action.setCheckable(True)
            action.setChecked(profile.name == self.profile.name)
            action.setData(profile.name)
            group.addAction(action)
            action.triggered.connect(
                lambda _=False, name=profile.name: self.switch_requested.emit(name))
            self.menu.addAction(action)
        self.menu.addSeparator()
        manage = self.menu.addAction("&Manage profiles…")
        manage.triggered.connect(self.manage_requested)
