"""Settings… (Ctrl+,): every option of the settings schema, in a dialog generated from it.

One page per group of ``app.config.settings.GROUPS`` (options whose group is "" are state the
window keeps by itself and are not shown). Each option gets a field chosen by its type
(``ui.settings_fields``), its description (with its range, "Between 0 and 2.", for a number),
and a Reset button; each page has Restore defaults.
Spin boxes and combo boxes ignore the mouse wheel until they have focus, so scrolling the page
never changes a value (for every window at once: ``ui.input_guard``).

Nothing changes until OK or Apply: every field is checked as it is typed (``Settings.check``,
the same rule as ``Settings.set``); a bad value shows why under the field and OK/Apply stay off
until it is fixed. OK/Apply set, save and emit ``applied(names)``; Cancel drops the edits.

Secrets are never here: API keys live in the OS keychain (``app.config.secrets``), and the
schema has no key option (``key_fallback`` only says where keys go without a keychain).

What the window does with ``applied(names)`` (``Option.takes_effect`` says which):
``needs_reload(names)``: load the local model again (``loader.reload()``; the setting's model,
``loader.load(None)``, when ``model_path`` changed); ``offline_mode``, ``send_when_online``,
``default_route``, ``hedge_after_s``: bring the switches and the route display in step with the
settings; ``theme``: apply the theme.
``needs_restart(names)``: nothing to do now; ``applied_note(names)`` says so in words.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from PySide6.QtCore import QEvent, Qt, Signal, Slot
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QStackedWidget,
    QStyle,
    QVBoxLayout,
    QWidget,
)

from app.config import settings as config  # the schema is read when a dialog is built
from app.config.settings import Option, Settings, option_named
from app.domain.errors import KeyInMessage, OutpostError, StorageError
from app.domain.secrets_mask import find_secret
from ui import theme
from ui.errors import window_words
from ui.settings_fields import FileField, FolderList, LongTextField, make_field

_EFFECT_NOTES = {"": "", "reload": " Changing it reloads the local model.",
                 "restart": " Takes effect when Outpost restarts."}


def shown_groups() -> list[str]:
    """The dialog's pages: GROUPS in their order, then any other group an option names."""
    groups = [g for g in config.GROUPS if any(o.group == g for o in config.SCHEMA)]
    return groups + list(dict.fromkeys(o.group for o in config.SCHEMA
                                       if o.group and o.group not in groups))


def _short(option: Option) -> str:
    """The option's title without its unit: "Context cap (tokens)" -> "Context cap"."""
    return option.title.split(" (")[0]


def _listed(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _span_note(option: Option) -> str:
    """The range after a number's description (" Between 0 and 2."), so it is known before a
    value out of it is typed; "" for an option without one."""
    span = option.span
    return f" {span[0].upper()}{span[1:]}." if span else ""


def _value_text(option: Option, value: Any) -> str:
    if option.type is bool:
        return "on" if value else "off"
    if isinstance(value, list):
        return ", ".join(value) or "none"
    return str(value) if value != "" else "empty"


class Unavailable(str):
    """A note (``SettingsDialog``'s ``notes``) saying the option has no effect on this machine
    (no GPU offload in this build, for "Use the GPU"): its row is shown disabled, the note
    saying why, and its value is left as it is."""


class OptionRow(QWidget):
    """One option in the dialog: its field, checked on every edit, and what is wrong with it."""

    edited = Signal(str)  # the option's name

    def __init__(self, option: Option, parent: QWidget | None = None, note: str = "",
                 refuse: Callable[[Any], None] | None = None):
        """``note``: what holds for this option on this machine (see ``SettingsDialog``);
        ``refuse``: a check of its own beyond the schema's (an ``OutpostError`` says why)."""
        super().__init__(parent)
        self.option = option
        self.refuse = refuse
        self.error: str | None = None
        self.about = window_words(option.description) + _span_note(option) + \
            _EFFECT_NOTES[option.takes_effect] + (f" {note}" if note else "")
        self.field = make_field(option)
        self.field.setAccessibleName(option.title)
        self.field.setAccessibleDescription(self.about)
        self.unavailable = isinstance(note, Unavailable)
        grid = QGridLayout(self)
        grid.setContentsMargins(0, 4, 0, 4)
        grid.setHorizontalSpacing(12)
        grid.setVerticalSpacing(2)
        self.title: QLabel | None = None  # a check box carries its own title
        if isinstance(self.field, QCheckBox):
            grid.addWidget(self.field, 0, 0, 1, 2)
        else:
            self.title = QLabel(option.title)
            self.title.setBuddy(self.field)
            grid.addWidget(self.title, 0, 0, Qt.AlignmentFlag.AlignLeft | (
                Qt.AlignmentFlag.AlignTop if isinstance(self.field, (FolderList, LongTextField))
                else Qt.AlignmentFlag.AlignVCenter))
            stretch = isinstance(self.field, (QLineEdit, FolderList, FileField,
                                              LongTextField))
            grid.addWidget(self.field, 0, 1, Qt.AlignmentFlag(0) if stretch
                           else Qt.AlignmentFlag.AlignLeft)
        self.reset_button = QPushButton("Reset")
        self.reset_button.setAccessibleName(f"Reset {option.title}")
        self.reset_button.setToolTip(f"Back to the default: "
                                     f"{_value_text(option, option.default)}")
        grid.addWidget(self.reset_button, 0, 2, Qt.AlignmentFlag.AlignTop)
        self.description = QLabel(self.about)
        self.description.setWordWrap(True)
        self.description.setTextFormat(Qt.TextFormat.PlainText)
        grid.addWidget(self.description, 1, 0, 1, 3)
        self.error_label = QLabel()
        self.error_label.setWordWrap(True)
        self.error_label.setTextFormat(Qt.TextFormat.PlainText)
        self.error_label.hide()
        grid.addWidget(self.error_label, 2, 0, 1, 3)
        grid.setColumnStretch(1, 1)
        if self.unavailable:
            self.field.setEnabled(False)
            self.field.setToolTip(note)
            if self.title is not None:
                self.title.setEnabled(False)
        self.restyle()
        self.field.edited.connect(self._on_field_edited)
        self.reset_button.clicked.connect(self.reset)

    def restyle(self) -> None:
        theme.restyle(self.description, lambda: f"color:{theme.muted_text(0.35)};")
        theme.set_colour(self.error_label, "error", "font-weight:600;")

    def value(self) -> Any:
        return self.field.value()

    def set_value(self, value: Any) -> None:
        self.field.set_value(value)
        self._check()

    @Slot()
    def reset(self) -> None:
        self.set_value(self.option.default)
        self.edited.emit(self.option.name)

    @Slot()
    def _on_field_edited(self) -> None:
        self._check()
        self.edited.emit(self.option.name)

    def _check(self) -> None:
        try:
            Settings.check(self.option.name, self.value())
            if self.refuse is not None:
                self.refuse(self.value())
            self.error = None
        except OutpostError as exc:
            self.error = str(exc)
        self.error_label.setText(self.error or "")
        self.error_label.setVisible(self.error is not None)
        self.field.setAccessibleDescription(
            f"{self.error} {self.about}" if self.error else self.about)
        self.reset_button.setEnabled(self.value() != self.option.default and
                                     not self.unavailable)


class SettingsPage(QWidget):
    """One group's options, scrolling, under a title and Restore defaults."""

    def __init__(self, group: str, parent: QWidget | None = None,
                 notes: dict[str, str] | None = None,
                 refusals: Mapping[str, Callable[[Any], None]] | None = None):
        super().__init__(parent)
        self.group = group
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        header = QHBoxLayout()
        self.title = QLabel(group)
        font = self.title.font()
        font.setPointSizeF(font.pointSizeF() * 1.25)
        font.setBold(True)
        self.title.setFont(font)
        header.addWidget(self.title)
        header.addStretch(1)
        self.restore_button = QPushButton("Restore defaults")
        self.restore_button.setAccessibleName(f"Restore the defaults of {group}")
        header.addWidget(self.restore_button)
        layout.addLayout(header)
        self.scroll = QScrollArea()
        self.scroll.setAccessibleName(f"{group} settings")
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        body = QWidget()
        self.rows_layout = QVBoxLayout(body)
        self.rows_layout.setContentsMargins(0, 0, 8, 0)
        self.rows_layout.setSpacing(10)
        self.rows: list[OptionRow] = []
        for option in config.SCHEMA:
            if option.group == group:
                row = OptionRow(option, note=(notes or {}).get(option.name, ""),
                                refuse=(refusals or {}).get(option.name))
                self.rows.append(row)
                self.rows_layout.addWidget(row)
        self.rows_layout.addStretch(1)
        # one title column for the page: fields line up under each other
        width = max((row.title.sizeHint().width() for row in self.rows if row.title),
                    default=0)
        for row in self.rows:
            row.layout().setColumnMinimumWidth(0, width)  # type: ignore[union-attr]
        self.scroll.setWidget(body)
        # it scrolls up and down only: never narrower than its rows, so nothing is cut
        self.scroll.setMinimumWidth(body.minimumSizeHint().width() + self.scroll.style()
                                    .pixelMetric(QStyle.PixelMetric.PM_ScrollBarExtent) + 4)
        layout.addWidget(self.scroll, 1)
        self.restore_button.clicked.connect(self.restore_defaults)

    @Slot()
    def restore_defaults(self) -> None:
        for row in self.rows:
            if row.value() != row.option.default and not row.unavailable:
                row.reset()


# -- the dialog --------------------------------------------------------------------------------------
class SettingsDialog(QDialog):
    """Every shown option of ``settings``, one page per group; OK/Apply save and emit
    ``applied`` with the names that changed (also passed to ``on_applied``, if given)."""

    applied = Signal(list)  # names of the settings that changed, in schema order

    def __init__(self, settings: Settings, parent: QWidget | None = None,
                 on_applied: Callable[[list[str]], None] | None = None,
                 notes: dict[str, str] | None = None,
                 keys: Callable[[], Mapping[str, str]] = dict):
        """``notes``: per option name, what holds for it on this machine, after its
        description (no GPU offload in this build, for "Use the GPU"); ``keys``: the API
        keys known now -> whose they are (a system prompt holding one is not saved)."""
        super().__init__(parent)
        self.settings = settings
        self.keys = keys
        self.setWindowTitle("Settings")
        self.resize(860, 640)
        self.setMinimumHeight(440)  # and as wide as the widest page's rows
        self.pages = QListWidget()
        self.pages.setAccessibleName("Settings pages")
        self.pages.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Expanding)
        self.stack = QStackedWidget()
        self.rows: dict[str, OptionRow] = {}
        for group in shown_groups():
            page = SettingsPage(group, notes=notes,
                                refusals={"system_prompt": self._refuse_key})
            self.pages.addItem(group)
            self.stack.addWidget(page)
            for row in page.rows:
                self.rows[row.option.name] = row
        self.pages.setFixedWidth(self.pages.sizeHintForColumn(0) + 36)
        self.note = QLabel()
        self.note.setWordWrap(True)
        self.note.setTextFormat(Qt.TextFormat.PlainText)
        self.note.setAccessibleName("Settings status")
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok
                                        | QDialogButtonBox.StandardButton.Cancel
                                        | QDialogButtonBox.StandardButton.Apply)
        self.ok_button = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.apply_button = self.buttons.button(QDialogButtonBox.StandardButton.Apply)
        body = QHBoxLayout()
        body.addWidget(self.pages)
        body.addWidget(self.stack, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(body, 1)
        layout.addWidget(self.note)
        layout.addWidget(self.buttons)
        self.load()
        self.pages.currentRowChanged.connect(self.stack.setCurrentIndex)
        self.pages.setCurrentRow(0)
        for row in self.rows.values():
            row.edited.connect(self._on_row_edited)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        self.apply_button.clicked.connect(self.apply)
        if on_applied is not None:
            self.applied.connect(on_applied)
        self._update_buttons()

    # -- what is shown ----------------------------------------------------------------------------
    def load(self) -> None:
        """Show the settings' current values (dropping unapplied edits)."""
        for name, row in self.rows.items():
            row.set_value(self.settings[name])
        self.note.clear()

    def page_names(self) -> list[str]:
        return [self.pages.item(i).text() for i in range(self.pages.count())]

    def page(self, group: str) -> SettingsPage:
        return self.stack.widget(self.page_names().index(group))  # type: ignore[return-value]

    def show_page(self, group: str) -> None:
        self.pages.setCurrentRow(self.page_names().index(group))

    def changed_names(self) -> list[str]:
        """The options whose field differs from the setting, in schema order."""
        return [name for name, row in self.rows.items() if row.value() != self.settings[name]]

    def invalid_names(self) -> list[str]:
        return [name for name, row in self.rows.items() if row.error is not None]

    def _refuse_key(self, text: str) -> None:
        """``KeyInMessage`` when the default system prompt holds a known API key: every new
        chat would start with it (and a turn refuses to send it)."""
        found = find_secret(text, self.keys()) if text else None
        if found is not None:
            raise KeyInMessage(f"The system prompt contains {found[1]}; remove the key from it "
                               "(a new chat would keep it and send it with every message).",
                               found[1])

    # -- OK, Apply, Cancel ------------------------------------------------------------------------
    @Slot()
    def apply(self) -> bool:
        """Set and save the changed options; emit ``applied``. False (and the reason shown)
        when a field is invalid or the file could not be written."""
        if self.invalid_names():
            self._update_buttons()
            return False
        names = self.changed_names()
        if not names:
            return True
        for name in names:
            self.settings.set(name, self.rows[name].value())
        saved = True
        try:
            try:
                self.settings.save()
            except OSError as exc:
                raise StorageError(f"The settings could not be saved: {exc}.") from exc
        except StorageError as exc:
            saved = False
            self.note.setText(f"{exc} The new values hold until Outpost closes.")
        else:
            self.note.setText(self.applied_note(names))
        self._update_buttons()
        self.applied.emit(names)
        return saved

    def accept(self) -> None:
        if self.apply():
            super().accept()

    @staticmethod
    def needs_reload(names: list[str]) -> bool:
        """Whether changing ``names`` means loading the local model again."""
        return any(option_named(name).takes_effect == "reload" for name in names)

    @staticmethod
    def needs_restart(names: list[str]) -> bool:
        return any(option_named(name).takes_effect == "restart" for name in names)

    @staticmethod
    def applied_note(names: list[str]) -> str:
        """What applying ``names`` did, in words (the window may show it after OK)."""
        options = [option_named(name) for name in names]
        reload = [_short(o) for o in options if o.takes_effect == "reload"]
        restart = [_short(o) for o in options if o.takes_effect == "restart"]
        note = "Applied."
        if reload:
            note += (f" The local model reloads with the new "
                     f"{'setting' if len(reload) == 1 else 'settings'}: {_listed(reload)}.")
        if restart:
            note += (f" {_listed(restart)} {'takes' if len(restart) == 1 else 'take'} effect "
                     "when Outpost restarts.")
        return note

    # -- keeping the buttons honest ---------------------------------------------------------------
    @Slot(str)
    def _on_row_edited(self, _name: str) -> None:
        self._update_buttons()

    def _update_buttons(self) -> None:
        invalid = self.invalid_names()
        self.ok_button.setEnabled(not invalid)
        self.apply_button.setEnabled(not invalid and bool(self.changed_names()))
        if invalid:
            groups = list(dict.fromkeys(self.rows[name].option.group for name in invalid))
            self.note.setText(f"Fix the value marked on the {_listed(groups)} "
                              f"{'page' if len(groups) == 1 else 'pages'} to save.")
        elif self.note.text().startswith("Fix the value"):
            self.note.clear()

    def changeEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        if event.type() == QEvent.Type.PaletteChange:
            for row in self.rows.values():
                row.restyle()
        super().changeEvent(event)
