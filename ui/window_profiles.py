"""The main window's profile behaviour (a mixin of ``ui.main_window.MainWindow``): who is signed
in, switching profile (with its PIN), and the Profiles dialog."""
from __future__ import annotations

from PySide6.QtCore import Slot

from app.errors import OutpostError


class WindowProfiles:
    """Needs ``self.profiles``, ``self.profile``, ``self.profile_button``, ``self.controller``,
    ``self.settings`` and the window's banner/sidebar helpers."""

    @property
    def profile_name(self) -> str | None:
        return self.profile.name if self.profile is not None else None

    def apply_profile(self, profile) -> None:
        """Act as ``profile``: its conversations, its quotas, its ledger rows."""
        self.profile = profile
        service = self.controller.service
        service.profile = profile.name
        if service.ledger is not None:
            service.ledger.profile = profile.name
        if self.profile_button is not None:
            self.profile_button.show_profile(profile)
        self.setWindowTitle(f"Outpost — {profile.name}")

    @Slot(str)
    def switch_profile(self, name: str) -> None:
        from ui.profiles_dialog import sign_in

        if self.profiles is None or name == self.profile_name:
            return
        if self.controller.busy:
            self._on_error("usage", "Stop the reply before switching profile.")
            return
        try:
            profile = sign_in(self.profiles, name, self)
        except OutpostError as exc:
            self._on_error(exc.kind, str(exc))
            return
        if profile is None:  # the PIN prompt was cancelled
            if self.profile_button is not None:
                self.profile_button.show_profile(self.profile)
            return
        # nothing of the previous person stays on screen: their chat, draft, dialogs
        for dialog in (getattr(self, "usage_dialog", None), getattr(self, "profiles_dialog", None),
                       getattr(self, "outbox_panel", None)):
            if dialog is not None:
                dialog.close()
        self.apply_profile(profile)
        try:
            self.settings.set("last_profile", profile.name)
            self.settings.save()
        except (OutpostError, OSError):
            pass  # next start opens the previous profile: harmless
        self.controller.new_conversation()
        self.composer.clear()
        self.banner.hide()
        self.title_label.setText("New chat")
        self.update_route_display()
        self.reload_sampling()
        self.refresh_sidebar()
        self.composer.edit.setFocus()

    @Slot()
    def open_profiles(self) -> None:
        from ui.profiles_dialog import ProfilesDialog

        if self.profiles is None or self.controller.service.quotas is None:
            return
        try:
            self.profiles_dialog = ProfilesDialog(self.profiles,
                                                  self.controller.service.quotas.book,
                                                  self.profile, self)
        except OutpostError as exc:
            self._on_error(exc.kind, str(exc))
            return
        self.profiles_dialog.changed.connect(self._on_profiles_changed)
        self.profiles_dialog.show()

    @Slot()
    def _on_profiles_changed(self) -> None:
        try:
            self.profile = self.profiles.get(self.profile.name)  # admin role or PIN changed
        except OutpostError:
            return
        if self.profile_button is not None:
            self.profile_button.show_profile(self.profile)
        if getattr(self, "profiles_dialog", None) is not None:
            self.profiles_dialog.me = self.profile
