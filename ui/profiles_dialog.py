"""Profiles in the window: the PIN prompt, and Chat ▸ Profiles… where
the admin adds/removes profiles, resets PINs, hands on the admin role and edits quotas (a limit
the policy file sets is shown locked). Everyone else may only change their own PIN."""
from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractSpinBox,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QStyle,
    QVBoxLayout,
    QWidget,
)

from app.domain.errors import OutpostError
from app.storage.profiles import Profile, Profiles, WrongPin
from app.storage.quotas import MAX_COST_USD, MAX_COUNT, PER_MINUTE, QuotaBook
from ui import theme
from ui.confirm import ask_to_save, confirm
from ui.window_state import WindowState


class PinDialog(QDialog):
    """Asks for a profile's PIN and checks it; stays open (saying why) on a wrong PIN. With
    ``choose`` (at start-up) the user may pick another profile first; ``note`` says why they
    are asked (shown above the rest)."""

    def __init__(self, profiles: Profiles, name: str, parent=None, choose: bool = False,
                 note: str = ""):
        super().__init__(parent)
        self.profiles, self.name = profiles, name
        self.profile: Profile | None = None
        self.setWindowTitle("Outpost — sign in")
        self.setMinimumWidth(380)
        layout = QVBoxLayout(self)
        self.note = QLabel(note)
        self.note.setWordWrap(True)
        self.note.setVisible(bool(note))
        layout.addWidget(self.note)
        self.prompt = QLabel()
        self.picker = QComboBox()
        self.picker.setAccessibleName("Profile")
        if choose:
            layout.addWidget(QLabel("Who is using Outpost?"))
            for profile in profiles.list():
                self.picker.addItem(profile.name + (" (PIN)" if profile.has_pin else ""),
                                    profile.name)
            self.picker.setCurrentIndex(max(0, self.picker.findData(name)))
            self.picker.currentIndexChanged.connect(lambda _: self._picked())
            layout.addWidget(self.picker)
        else:
            self.picker.hide()
        layout.addWidget(self.prompt)
        self.edit = QLineEdit()
        self.edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.edit.setAccessibleName("PIN")
        layout.addWidget(self.edit)
        self.error = QLabel()
        theme.set_colour(self.error, "error")
        self.error.setWordWrap(True)
        self.error.hide()
        layout.addWidget(self.error)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok |
                                   QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.try_pin)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self._picked()

    def _picked(self) -> None:
        if self.picker.count():
            self.name = self.picker.currentData()
        has_pin = self.profiles.get(self.name).has_pin
        self.prompt.setText(f"Enter the PIN of <b>{self.name}</b>:" if has_pin else
                            f"<b>{self.name}</b> has no PIN.")
        self.edit.setVisible(has_pin)
        self.error.hide()
        self.edit.setFocus()

    def try_pin(self) -> None:
        try:
            self.profile = self.profiles.sign_in(
                self.name, self.edit.text() if self.edit.isVisible() else None)
        except WrongPin as exc:
            self.error.setText(str(exc))
            self.error.show()
            self.edit.selectAll()
            self.adjustSize()  # room for the whole sentence
            return
        self.accept()


def sign_in(profiles: Profiles, name: str, parent=None, choose: bool = False,
            note: str = "") -> Profile | None:
    """The profile, after its PIN when it has one; None when the user gave up. With a
    ``note`` the dialog is shown even for a profile without a PIN (the user is to choose)."""
    profile = profiles.get(name)
    if not profile.has_pin and not note:
        return profiles.sign_in(name, None)
    dialog = PinDialog(profiles, profile.name, parent, choose, note)
    return dialog.profile if dialog.exec() == QDialog.DialogCode.Accepted else None


# -- the Profiles dialog ---------------------------------------------------------------------
# what a limit starts at when ticked (a 0 would stop everything at once, unnoticed)
FIRST_VALUES = {"cloud_tokens_per_day": 200_000, "requests_per_minute": 20,
                "tokens_per_minute": 100_000, "cloud_cost_per_month": 10.0}
_COUNTS = (("cloud_tokens_per_day", "Cloud tokens per day"),
           ("requests_per_minute", "Requests per minute"),
           ("tokens_per_minute", "Tokens per minute"))

_FLAGS = (("count_local", "Local model tokens count toward the token limits"),
          ("allow_unpriced", "Models with no known price may be used under a cost budget"))


class CountBox(QDoubleSpinBox):
    """A whole number up to the core's largest limit (``MAX_COUNT``, a million million): a
    QSpinBox is 32-bit and could neither show nor keep a limit above 2,147,483,647, while a
    double holds every whole number up to 2^53 exactly."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setDecimals(0)
        self.setRange(0, MAX_COUNT)
        self.setGroupSeparatorShown(True)

    def count(self) -> int:
        return int(round(self.value()))


class DollarBox(QDoubleSpinBox):
    """An amount of dollars shown as money: cents, more digits only when the amount has them
    ("$ 20.00", "$ 0.005"; budgets below a cent exist for tight fleets), never "$ 0.0000"."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setDecimals(4)

    def textFromValue(self, value: float) -> str:  # noqa: N802 (Qt naming)
        text = self.locale().toString(value, "f", self.decimals())
        point = self.locale().decimalPoint()
        whole, _, cents = text.partition(point)
        return whole + point + (cents.rstrip("0").ljust(2, "0"))


class QuotaEditor(QGroupBox):
    """One profile's limits: a box per limit ("no limit" when unticked); locked when the policy
    file sets it or the signed-in profile is not the admin."""

    def __init__(self, parent=None):
        super().__init__("Quotas and rate limits", parent)
        form = QFormLayout(self)
        self.enabled: dict[str, QCheckBox] = {}
        self.values: dict[str, QWidget] = {}
        for name, title in _COUNTS:
            box = CountBox()
            if name in PER_MINUTE:
                box.setMinimum(1)  # a rate of 0 refills nothing; unticked is no limit
            self._row(form, name, title, box)
        cost = DollarBox()
        cost.setRange(0, MAX_COST_USD)  # what the core accepts, no less
        cost.setSingleStep(0.5)
        cost.setPrefix("$ ")
        self._row(form, "cloud_cost_per_month", "Cloud cost per month", cost)
        routes = QWidget()
        line = QHBoxLayout(routes)
        line.setContentsMargins(0, 0, 0, 0)
        self.route_boxes = {r: QCheckBox(label) for r, label in (
            ("auto", "Auto"), ("local", "Local only"), ("cloud", "Cloud only"))}
        for box in self.route_boxes.values():
            line.addWidget(box)
        self._row(form, "allowed_routes", "Routes allowed", routes)
        self.flags: dict[str, QCheckBox] = {}  # the yes/no limits: a box each, no "no limit"
        for name, title in _FLAGS:
            flag = QCheckBox(title)
            flag.setProperty("title", title)
            form.addRow("", flag)
            self.flags[name] = self.values[name] = flag
        self.shown: dict = {}  # what load() put in the boxes, as wanted() reads it back
        self.note = QLabel()  # placed under the box by the dialog (it wraps there)
        self.note.setWordWrap(True)
        theme.set_colour(self.note, "muted")

    def _row(self, form: QFormLayout, name: str, title: str, widget: QWidget) -> None:
        check = QCheckBox(title)
        check.setProperty("title", title)
        check.setToolTip("Unticked: no limit")
        check.toggled.connect(widget.setEnabled)
        if isinstance(widget, QAbstractSpinBox):  # unticked, the box says so instead of a 0
            check.toggled.connect(
                lambda on, box=widget: box.setSpecialValueText("" if on else "no limit"))
            widget.setSpecialValueText("no limit")
            check.clicked.connect(  # ticked by the user: a value to start from, not 0 (or 1)
                lambda on, box=widget, first=FIRST_VALUES.get(name): on and first and
                box.value() == box.minimum() and box.setValue(first))
        widget.setEnabled(False)  # unticked until load() says otherwise
        widget.setAccessibleName(title)  # its check box is its label
        self.enabled[name], self.values[name] = check, widget
        form.addRow(check, widget)

    policy_path = ""

    def load(self, limits, locked: set[str], editable: bool, why: str) -> None:
        for name, check in self.enabled.items():
            value = getattr(limits, name)
            check.setChecked(value is not None)
            widget = self.values[name]
            if name == "allowed_routes":
                for route, box in self.route_boxes.items():
                    box.setChecked(value is None or route in value)
            elif value is not None:
                widget.setValue(value)
            else:
                widget.setValue(0)
            widget.setEnabled(value is not None)
        for name, flag in self.flags.items():
            flag.setChecked(getattr(limits, name))
        for name, check in {**self.enabled, **self.flags}.items():
            check.setText(check.property("title") + (" (policy)" if name in locked else ""))
        for name in list(self.enabled) + list(self.flags):
            free = editable and name not in locked
            for widget in ([self.enabled[name]] if name in self.enabled else []) + \
                    [self.values[name]]:
                widget.setEnabled(free and (widget is self.enabled.get(name) or
                                            name in self.flags or
                                            self.enabled[name].isChecked()))
                widget.setToolTip("" if free else (
                    "Set by the policy file; change it there." if name in locked else why))
        self.shown = self.wanted()
        self.note.setText(why if not editable else (
            f"Limits marked (policy) are set by the policy file {self.policy_path}; change "
            "them there." if locked else
            "Unticked: no limit. Saved when you press Save quotas."))

    def wanted(self) -> dict:
        """Every limit as the boxes show it (None: no limit)."""
        out: dict = {}
        for name, check in self.enabled.items():
            if not check.isChecked():
                out[name] = None
            elif name == "allowed_routes":
                out[name] = [r for r, box in self.route_boxes.items() if box.isChecked()]
            elif isinstance(self.values[name], CountBox):
                out[name] = self.values[name].count()
            else:
                out[name] = self.values[name].value()
        out.update({name: flag.isChecked() for name, flag in self.flags.items()})
        return out


class ProfilesDialog(QDialog):
    changed = Signal()  # profiles were added/removed/changed (refresh the switcher)

    def __init__(self, profiles: Profiles, book: QuotaBook, me: Profile, parent=None):
        super().__init__(parent)
        self.profiles, self.book, self.me = profiles, book, me
        self.setWindowTitle("Profiles")
        self.resize(800, 480)  # the list of names (up to ~190 px) and the quota editor
        outer = QHBoxLayout(self)
        left = QVBoxLayout()
        self.list = QListWidget()
        self.list.setAccessibleName("Profiles")
        # as wide as its entries (``_fit_list``); a name too long for that ends in "…"
        self.list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.list.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.list.currentItemChanged.connect(self._on_picked)
        left.addWidget(self.list, 1)
        self.add_button = QPushButton("Add profile…")
        self.add_button.clicked.connect(self._add)
        left.addWidget(self.add_button)
        outer.addLayout(left)
        right = QVBoxLayout()
        self.heading = QLabel()
        self.heading.setStyleSheet("font-size:15px; font-weight:600;")
        right.addWidget(self.heading)
        self.status = QLabel()
        self.status.setWordWrap(True)
        right.addWidget(self.status)
        self.admin_warning = QLabel()
        self.admin_warning.setWordWrap(True)
        theme.set_colour(self.admin_warning, "warning")
        self.admin_warning.hide()
        right.addWidget(self.admin_warning)
        buttons = QHBoxLayout()
        self.pin_button = QPushButton("Set PIN…")
        self.pin_button.clicked.connect(self._set_pin)
        self.clear_pin_button = QPushButton("Clear PIN")
        self.clear_pin_button.clicked.connect(self._clear_pin)
        self.admin_button = QPushButton("Make admin")
        self.admin_button.clicked.connect(self._make_admin)
        self.remove_button = QPushButton("Remove…")
        self.remove_button.clicked.connect(self._remove)
        for button in (self.pin_button, self.clear_pin_button, self.admin_button,
                       self.remove_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        right.addLayout(buttons)
        self.quotas = QuotaEditor()
        right.addWidget(self.quotas)
        right.addWidget(self.quotas.note)
        self.policy_warning = QLabel()  # policy tables that name no profile here
        self.policy_warning.setWordWrap(True)
        theme.set_colour(self.policy_warning, "warning")
        self.policy_warning.hide()
        right.addWidget(self.policy_warning)
        self.save_button = QPushButton("Save quotas")
        self.save_button.clicked.connect(self._save_quotas)
        self.error = QLabel()
        self.error.setWordWrap(True)
        theme.set_colour(self.error, "error")
        right.addWidget(self.error)
        bottom = QHBoxLayout()
        bottom.addWidget(self.save_button)
        bottom.addStretch(1)
        close = QPushButton("Close")
        close.clicked.connect(self.accept)
        bottom.addWidget(close)
        right.addStretch(1)
        right.addLayout(bottom)
        outer.addLayout(right, 1)
        self.editing: str | None = None  # whose limits the quota editor shows
        self.saved_name = ""  # whose quotas were saved last
        self.refresh(me.name)

    # -- state -------------------------------------------------------------------------------
    def _admin(self) -> bool:
        try:
            return self.profiles.get(self.me.name).is_admin
        except OutpostError:
            return False

    def selected(self) -> Profile | None:
        item = self.list.currentItem()
        return self.profiles.find(item.data(Qt.ItemDataRole.UserRole)) if item else None

    def refresh(self, select: str | None = None) -> None:
        select = select or (self.selected().name if self.selected() else self.me.name)
        self.list.blockSignals(True)
        self.list.clear()
        for profile in self.profiles.list():
            marks = [m for m, on in (("admin", profile.is_admin), ("PIN", profile.has_pin),
                                     ("you", profile.name == self.me.name)) if on]
            item = QListWidgetItem(profile.name + (f" ({', '.join(marks)})" if marks else ""))
            item.setToolTip(item.text())  # whole, should the list cut it
            item.setData(Qt.ItemDataRole.UserRole, profile.name)
            self.list.addItem(item)
            if profile.name == select:
                self.list.setCurrentItem(item)
        self.list.blockSignals(False)
        self._fit_list()
        self._show_selected()

    def _fit_list(self) -> None:
        """The list as wide as its widest entry, between 12 and 26 average characters: it took
        what the quota editor left (~110 px), cutting "root (admin, you)" under a horizontal
        scroll bar; longer entries (names go up to 40 characters) end in "…"."""
        chars = self.list.fontMetrics().averageCharWidth()
        chrome = 2 * self.list.frameWidth() + 12 + \
            self.list.style().pixelMetric(QStyle.PixelMetric.PM_ScrollBarExtent)
        widest = self.list.sizeHintForColumn(0) if self.list.count() else 0
        self.list.setFixedWidth(min(max(widest, 12 * chars), 26 * chars) + chrome)

    def _show_selected(self) -> None:
        profile = self.selected()
        admin = self._admin()
        self.editing = None
        self.save_button.setEnabled(False)  # until the editor shows this profile's limits
        self.add_button.setEnabled(admin)
        self.add_button.setToolTip("" if admin else "Only the admin adds profiles.")
        if profile is None:
            return
        mine = profile.name == self.me.name
        # another profile, to anyone but the admin: its name (and marks) only, as the CLI
        # shows it (``quota show --profile`` refuses; ``profile list`` leaves its count out)
        by_name = not (mine or admin)
        self.heading.setText(profile.name)
        count = None if by_name else self.profiles.conversation_count(profile.name)
        self.status.setText(
            f"{'The admin' if profile.is_admin else 'Not admin'} · "
            f"{'has a PIN' if profile.has_pin else 'no PIN'}"
            + (f" · {count} conversation{'s' if count != 1 else ''}" if count is not None
               else "") + (" · signed in" if mine else ""))
        self.pin_button.setText("Change PIN…" if profile.has_pin else "Set PIN…")
        self.pin_button.setEnabled(mine or admin)
        self.clear_pin_button.setEnabled(profile.has_pin and (mine or admin))
        self.admin_button.setEnabled(admin and not profile.is_admin)
        self.remove_button.setEnabled(admin and not profile.is_admin)
        for button in (self.admin_button, self.remove_button):
            button.setToolTip("" if admin else "Only the admin can do this.")
        admin_name = next((p.name for p in self.profiles.list() if p.is_admin), "the admin")
        why = f"Only the admin ({admin_name}) changes quotas."
        self.quotas.setVisible(not by_name)
        if by_name:  # no limits of theirs read, none shown (nor left from the last shown)
            self.quotas.note.setText(f"Only the admin ({admin_name}) can see {profile.name}'s "
                                     "limits and conversations.")
            self.error.clear()
            return
        try:
            limits = self.book.limits(profile.name)
            locked = self.book.policy_names(profile.name)
            warnings = self.book.policy_warnings(p.name for p in self.profiles.list())
        except OutpostError as exc:
            self.error.setText(str(exc))
            return
        admin_profile = next((p for p in self.profiles.list() if p.is_admin), None)
        exposed = admin_profile is not None and not admin_profile.has_pin and \
            len(self.profiles.list()) > 1
        self.admin_warning.setText(
            f"The admin ({admin_profile.name}) has no PIN: anyone at this computer can switch "
            "to it and change quotas or reset PINs. Give it a PIN." if exposed else "")
        self.admin_warning.setVisible(exposed)
        self.policy_warning.setText(" ".join(warnings))
        self.policy_warning.setVisible(bool(warnings))
        self.quotas.policy_path = str(self.book.policy)
        self.quotas.load(limits, locked, admin, why)
        self.editing = profile.name
        self.save_button.setEnabled(admin)
        self.error.clear()

    # -- actions -----------------------------------------------------------------------------
    def _do(self, fn, select: str | None = None) -> bool:
        """``fn`` (a profile change: add, PIN, admin, remove), then the list and the editor
        shown again; quota changes not saved are settled first (the reload dropped them)."""
        if self.settle_quotas() == "cancelled":
            return False
        try:
            fn()
        except OutpostError as exc:
            theme.set_colour(self.error, "error")
            self.error.setText(str(exc))
            return False
        self.refresh(select)
        self.changed.emit()
        return True

    def _add(self) -> None:
        name, ok = QInputDialog.getText(self, "Add profile", "Name of the new profile:")
        if ok and name.strip():
            self._do(lambda: self.profiles.add(name, self.me), name.strip())

    def _ask_new_pin(self, name: str) -> str | None:
        pin, ok = QInputDialog.getText(self, "PIN", f"New PIN for {name} (4 to 64 characters):",
                                       QLineEdit.EchoMode.Password)
        if not ok:
            return None
        again, ok = QInputDialog.getText(self, "PIN", "The same PIN again:",
                                         QLineEdit.EchoMode.Password)
        if not ok:
            return None
        if again != pin:
            self.error.setText("The two PINs differ; nothing was changed.")
            return None
        return pin

    def _set_pin(self) -> None:
        profile = self.selected()
        pin = self._ask_new_pin(profile.name) if profile else None
        if pin is not None:
            self._do(lambda: self.profiles.set_pin(profile.name, pin, self.me))

    def _clear_pin(self) -> None:
        profile = self.selected()
        if profile is not None:
            self._do(lambda: self.profiles.set_pin(profile.name, None, self.me))

    def _make_admin(self) -> None:
        profile = self.selected()
        if profile is None:
            return
        if confirm(self, "Hand on the admin role",
                   f"Make {profile.name} the admin? You will no longer be able to add profiles "
                   "or change quotas.", "Make admin"):
            self._do(lambda: self.profiles.make_admin(profile.name, self.me))

    def _remove(self) -> None:
        profile = self.selected()
        if profile is None:
            return
        count = self.profiles.conversation_count(profile.name)
        text = f"Remove the profile {profile.name} and its quotas?"
        if count:
            text += (f" Its {count} conversation{'s' if count != 1 else ''} will be deleted "
                     "too.")
        text += (" Its usage stays in this computer's totals, as "
                 f"“{profile.name} (removed …)”.")
        if confirm(self, "Remove profile", text, "Remove", QMessageBox.Icon.Warning) and \
                self._do(lambda: self.profiles.remove(profile.name, self.me, True),
                         self.me.name):
            WindowState().forget_draft(profile.name)  # (a later profile of that name: not it)

    def _save_quotas(self) -> None:
        """Save quotas (the button)."""
        if self._write_quotas():
            self.refresh()
            self._say_saved()

    def _write_quotas(self) -> bool:
        """Write the limits the user changed, of the profile the editor shows; False when
        refused (the error is shown)."""
        name = self.editing
        if name is None:
            return False
        shown = self.quotas.shown
        try:
            locked = self.book.policy_names(name)
            # only what the user changed: a limit shown rounded (a budget of $12.345678 as
            # $ 12.3457) keeps its exact stored value, and nothing is written that was not shown
            for option, value in self.quotas.wanted().items():
                if option in locked or value == shown.get(option):
                    continue
                self.book.set(name, option, value, by=self.me)
        except OutpostError as exc:
            theme.set_colour(self.error, "error")
            self.error.setText(str(exc))
            return False
        self.saved_name = name
        self.changed.emit()
        return True

    def _say_saved(self) -> None:
        theme.set_colour(self.error, "ok")
        self.error.setText(f"Saved the quotas of {self.saved_name}.")

    # -- quota changes not saved ---------------------------------------------------------------
    def unsaved_quotas(self) -> bool:
        """Whether the quota editor shows changes not saved yet (only the admin makes any)."""
        return self.editing is not None and self.save_button.isEnabled() and \
            self.quotas.wanted() != self.quotas.shown

    def settle_quotas(self) -> str:
        """Before the editor shows another profile or closes: "clean" (nothing to save),
        "saved", "discarded", or "cancelled" (the user goes back to the changes, or saving
        them was refused: the error says why)."""
        if not self.unsaved_quotas():
            return "clean"
        answer = ask_to_save(self, "Quota changes not saved",
                             f"Save the quota changes for {self.editing}?")
        if answer == "save":
            return "saved" if self._write_quotas() else "cancelled"
        return "discarded" if answer == "discard" else "cancelled"

    def _on_picked(self, current, previous) -> None:
        """Another profile chosen in the list: the changes to the one shown first (Cancel
        keeps it chosen)."""
        settled = self.settle_quotas() if previous is not None else "clean"
        if settled == "cancelled":
            self.list.blockSignals(True)
            self.list.setCurrentItem(previous)
            self.list.blockSignals(False)
            return
        self._show_selected()
        if settled == "saved":
            self._say_saved()

    def done(self, result: int) -> None:
        """Close, Esc and the window's close button: quota changes are saved or dropped only
        when the user says so (they were dropped silently)."""
        if self.settle_quotas() == "cancelled":
            return  # still open (a close() returns False)
        super().done(result)
