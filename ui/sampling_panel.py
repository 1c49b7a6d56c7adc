"""The Sampling dock: every knob of ``app.domain.sampling`` with its range and tooltip, presets
(built-in and the user's own: save, rename, delete), the system prompt, and the capability map of
the engine that will answer (a knob it ignores is disabled, saying why). The window saves the
values with the conversation and sends them with each turn."""
from __future__ import annotations

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import (
    QAbstractButton,
    QCheckBox,
    QComboBox,
    QDockWidget,
    QFormLayout,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.chat.service import TurnOptions
from app.config.presets import PresetBook
from app.domain.errors import OutpostError
from app.domain.sampling import (
    BY_NAME,
    KNOBS,
    LOCAL_DEFAULTS,
    sent_otherwise,
    stops_as_lines,
    stops_from_lines,
    supports,
    why_unsupported,
    why_withheld,
)
from app.domain.test_time import Plan, extractor
from ui import theme
from ui.confirm import confirm
from ui.exact_spin_box import DECIMALS, ExactSpinBox
from ui.lora_picker import LoraPicker
from ui.schema_editor import SchemaEditor

ALWAYS_SET = ("temperature", "top_p", "max_tokens")  # sent by every engine, never empty
_STEPS = {"temperature": 0.05, "top_p": 0.01, "min_p": 0.01, "presence_penalty": 0.1,
          "frequency_penalty": 0.1, "repeat_penalty": 0.05}
# the stop field is one stop per line, so line breaks (and tabs, backslashes) are typed escaped
# (two short lines, whole in the narrow panel; the tooltip names the other escapes)
STOP_ESCAPES = "one per line\n\\n: line break"
_MORE_TIP = {"stop": " One per line. Type \\n for a line break (a stop that holds one shows "
                     "as \\n), \\t for a tab, \\\\ for a backslash; \\uXXXX for any "
                     "other character by its code."}


def _tip(knob) -> str:
    """A knob's tooltip in the panel: its meaning, and how its field is typed."""
    return knob.tip + _MORE_TIP.get(knob.name, "")


def _value(field):
    """A number box's value as it is to be sent (a float knob's exactly as it was loaded)."""
    return field.exact_value() if isinstance(field, ExactSpinBox) else field.value()


class SamplingPanel(QDockWidget):
    changed = Signal()  # the user changed a knob, the preset or the system prompt

    def __init__(self, presets: PresetBook, parent=None):
        super().__init__("Sampling", parent)
        self.setObjectName("samplingDock")
        self.presets = presets
        self.kind = "local"
        self.model: str | None = None  # the model that will answer (a cloud one's name)
        self.refused: frozenset[str] = frozenset()  # knobs its server refused, learnt
        self._loading = False
        self._held: dict[str, float] = {}  # an unticked knob's own value, back once ticked
        body = QWidget()
        layout = QVBoxLayout(body)
        self.preset_picker = QComboBox()
        self.preset_picker.setToolTip("Apply a preset: its knobs replace the ones below")
        self.preset_picker.setAccessibleName("Preset")
        layout.addWidget(self.preset_picker)
        row = QHBoxLayout()  # under the picker: the panel stays narrow
        self.save_button = QPushButton("Save as…")
        self.save_button.setToolTip("Save the knobs below as a preset of yours")
        self.rename_button = QPushButton("Rename…")
        self.delete_button = QPushButton("Delete")
        for button in (self.save_button, self.rename_button, self.delete_button):
            row.addWidget(button)
        layout.addLayout(row)
        self.engine_label = QLabel()
        self.engine_label.setWordWrap(True)
        theme.set_colour(self.engine_label, "muted")
        layout.addWidget(self.engine_label)
        form = QFormLayout()
        # a label above its field when the panel is too narrow for both on one line
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        self.use: dict[str, QCheckBox] = {}  # optional knobs: ticked = sent
        self.fields: dict[str, QWidget] = {}
        self.labels: dict[str, QWidget] = {}
        for knob in KNOBS:
            if knob.name == "stop":
                field = QPlainTextEdit()
                field.setPlaceholderText(STOP_ESCAPES)
                # two lines: the placeholder's, in the font in use
                margin = 2 * (field.frameWidth() + field.document().documentMargin())
                field.setFixedHeight(2 * field.fontMetrics().lineSpacing() + int(margin) + 2)
                field.textChanged.connect(self._edited)
            elif knob.kind is int:
                field = QSpinBox()
                field.setRange(int(knob.low), int(knob.high))
                field.setGroupSeparatorShown(knob.name == "max_tokens")
                field.valueChanged.connect(self._edited)
            else:  # every value ``check`` accepts that has up to DECIMALS decimals
                field = ExactSpinBox()
                field.setRange(knob.low + (10 ** -DECIMALS if knob.low_open else 0.0),
                               knob.high)
                field.setSingleStep(_STEPS.get(knob.name, 0.1))
                field.valueChanged.connect(self._edited)
            field.setToolTip(_tip(knob))
            field.setAccessibleName(knob.label)
            field.setAccessibleDescription(_tip(knob))
            if knob.name in ALWAYS_SET or knob.name == "stop":
                label = QLabel(knob.label)
            else:
                label = QCheckBox(knob.label)
                # first: a knob ticked shows its value again before the change is saved
                label.toggled.connect(lambda _on, name=knob.name: self._show_use(name))
                label.toggled.connect(field.setEnabled)
                label.toggled.connect(self._edited)
                self.use[knob.name] = label
            label.setToolTip(_tip(knob))
            self.fields[knob.name] = field
            self.labels[knob.name] = label
            form.addRow(label, field)
        layout.addLayout(form)
        for name in self.use:  # unticked: what applies instead (the panel's width allows it)
            self._show_use(name)
        for name in ("temperature", "top_p"):  # which of them Anthropic gets depends on both
            self.fields[name].valueChanged.connect(lambda _: self._show_sent_otherwise())
        json_row = QHBoxLayout()
        self.json_mode = QCheckBox("JSON output")
        self.json_mode.setToolTip("The reply must be JSON: the local model is constrained by a "
                                  "grammar, OpenAI-compatible APIs get response_format, Anthropic "
                                  "a forced tool call. Every reply is validated; an invalid one "
                                  "is repaired once, else marked invalid with its raw text kept.")
        self.json_mode.toggled.connect(self._edited)
        self.schema_button = QPushButton("Schema…")
        self.schema_button.setToolTip("An optional JSON Schema the reply must match")
        self.schema_button.clicked.connect(self._edit_schema)
        json_row.addWidget(self.json_mode)
        json_row.addStretch(1)
        json_row.addWidget(self.schema_button)
        layout.addLayout(json_row)
        self.lora = LoraPicker()
        self.lora.changed.connect(self._edited)
        layout.addWidget(self.lora)
        self.schema: dict | None = None
        self._build_test_time(layout)
        layout.addWidget(QLabel("System prompt"))
        self.system_prompt = QPlainTextEdit()
        self.system_prompt.setAccessibleName("System prompt")
        self.system_prompt.setToolTip("Instructions the model gets before the conversation; "
                                      "saved with this conversation")
        self.system_prompt.setFixedHeight(80)
        self.system_prompt.textChanged.connect(self._edited)
        layout.addWidget(self.system_prompt)
        layout.addStretch(1)
        self.error = QLabel()
        self.error.setWordWrap(True)
        theme.set_colour(self.error, "error")
        self.error.hide()
        self._error_about: str | None = None  # which part the error shown is of
        layout.addWidget(self.error)
        scroll = QScrollArea()
        scroll.setAccessibleName("Sampling settings")
        # no Tab stop of its own (Tab went to it after the status bar): its fields are the
        # stops, and it scrolls to the one Tab reaches
        scroll.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)  # up/down only
        # never narrower than its widest row: nothing is cut off at the right
        scroll.setMinimumWidth(body.minimumSizeHint().width()
                               + scroll.verticalScrollBar().sizeHint().width() + 4)
        scroll.setWidget(body)
        self.setWidget(scroll)
        self.topLevelChanged.connect(self._tip_title_buttons)
        self._tip_title_buttons(False)
        self.preset_picker.activated.connect(self._on_preset_picked)
        self.save_button.clicked.connect(self._save_preset)
        self.rename_button.clicked.connect(self._rename_preset)
        self.delete_button.clicked.connect(self._delete_preset)
        self.refresh_presets()

    @Slot(bool)
    def _tip_title_buttons(self, floating: bool) -> None:
        """The title bar's two icon buttons say what they do (Qt gives them names only)."""
        tips = {"qt_dockwidget_floatbutton":
                "Dock the panel in the window again" if floating else
                "Float the panel in a window of its own (double-click its title to dock it)",
                "qt_dockwidget_closebutton": "Hide the panel (View ▸ Sampling panel, "
                                             "Ctrl+Shift+S, shows it again)"}
        for button in self.findChildren(QAbstractButton):
            if button.objectName() in tips:
                button.setToolTip(tips[button.objectName()])

    # -- values ------------------------------------------------------------------------------
    def load(self, knobs: dict, system_prompt: str, response_format: dict | None = None,
             lora=None) -> None:
        """Show a conversation's knobs (None: not sent), system prompt, JSON mode and LoRA
        adapter; emits nothing."""
        self._loading = True
        try:
            self.lora.load(lora)
            self.json_mode.setChecked(bool(response_format))
            self.schema = (response_format or {}).get("schema")
            self._show_schema()
            for knob in KNOBS:
                value = knobs.get(knob.name)
                field = self.fields[knob.name]
                if knob.name == "stop":  # escaped: a stop of "\n" is seen, and kept
                    field.setPlainText(stops_as_lines(value))
                    continue
                if knob.name in self.use:
                    self.use[knob.name].setChecked(value is not None)
                    if value is None:  # ticked later: from what applies, not another chat's
                        self._held.pop(knob.name, None)
                if value is not None:
                    field.setValue(value)
            self.system_prompt.setPlainText(system_prompt)
            self.preset_picker.setCurrentIndex(-1)
            self._apply_capabilities()
        finally:
            self._loading = False

    def values(self) -> dict:
        """Every knob: its value, or None when it is not to be sent."""
        out: dict = {}
        for knob in KNOBS:
            field = self.fields[knob.name]
            if knob.name == "stop":
                out["stop"] = stops_from_lines(field.toPlainText())
            elif knob.name in self.use and not self.use[knob.name].isChecked():
                out[knob.name] = None
            else:
                out[knob.name] = _value(field)
        return out

    def options(self):
        """This turn's options: every knob as shown (the empty ones explicitly unset)."""
        values = self.values()
        unset = tuple(k for k, v in values.items() if v is None)
        given = {k: v for k, v in values.items() if v is not None and k != "stop"}
        # chosen=(): every knob is shown, so none counts as given on purpose (a knob the model
        # refuses unless asked is greyed here: what is grey is not sent)
        return TurnOptions(**given, stop=tuple(values["stop"]), unset=unset, chosen=(),
                           system_prompt=self.system_prompt.toPlainText(),
                           json_mode=self.json_mode.isChecked(),
                           json_schema=self.schema if self.json_mode.isChecked() else None,
                           test_time=self.test_time(), lora=self.lora.adapters())

    # -- test-time compute ---------------------------------------------------------------------
    def _build_test_time(self, layout: QVBoxLayout) -> None:
        row = QHBoxLayout()
        self.tt_mode = QComboBox()
        self.tt_mode.setAccessibleName("Replies per message")
        self.tt_mode.addItem("One reply", None)
        self.tt_mode.addItem("Best of n", "best_of")
        self.tt_mode.addItem("Self-consistency", "self_consistency")
        self.tt_mode.setToolTip(
            "Best of n: sample n candidates and keep the one the scorer likes best. "
            "Self-consistency: sample up to n replies and keep the majority final answer "
            "(ties: the answer given first). Every candidate's tokens are metered.")
        self.tt_n = QSpinBox()
        self.tt_n.setAccessibleName("Number of candidates")
        self.tt_n.setRange(2, 8)
        self.tt_n.setValue(4)
        self.tt_n.setPrefix("n = ")
        row.addWidget(self.tt_mode, 1)
        row.addWidget(self.tt_n)
        layout.addLayout(row)
        row2 = QHBoxLayout()
        self.tt_scorer = QComboBox()
        self.tt_scorer.setAccessibleName("How the best reply is chosen")
        for value, label, tip in (
                ("logprob", "Mean log-probability", "the reply the model itself finds most "
                 "likely, per token (local model)"),
                ("length", "Length-normalised", "log-probability / tokens^0.6 (local model)"),
                ("json", "Valid JSON", "valid JSON first (with JSON output), then the most "
                 "likely"),
                ("judge", "Judge model", "the model is shown the candidates and picks one "
                 "(its tokens are metered)")):
            self.tt_scorer.addItem(label, value)
            self.tt_scorer.setItemData(self.tt_scorer.count() - 1, tip, 3)  # tooltip role
        self.tt_extract = QLineEdit("last-line")
        self.tt_extract.setAccessibleName("How each answer is found")
        self.tt_extract.setToolTip("How each reply's final answer is found: last-line, "
                                   "json:FIELD or regex:PATTERN (first group)")
        self.tt_extract.setPlaceholderText("last-line, json:FIELD or regex:PATTERN")
        self.tt_by = QLabel()  # "Chosen by" the scorer, or "Answer from" the rule
        row2.addWidget(self.tt_by)
        row2.addWidget(self.tt_scorer, 1)
        row2.addWidget(self.tt_extract, 1)
        layout.addLayout(row2)
        for signal in (self.tt_mode.currentIndexChanged, self.tt_n.valueChanged,
                       self.tt_scorer.currentIndexChanged, self.tt_extract.textChanged):
            signal.connect(self._edited)
        self.tt_mode.currentIndexChanged.connect(lambda _: self._show_test_time())
        self._show_test_time()

    def _show_test_time(self) -> None:
        mode = self.tt_mode.currentData()
        self.tt_n.setEnabled(mode is not None)
        self.tt_scorer.setVisible(mode == "best_of")
        self.tt_extract.setVisible(mode == "self_consistency")
        self.tt_by.setVisible(mode is not None)
        self.tt_by.setText("Answer from" if mode == "self_consistency" else "Chosen by")
        self.tt_by.setBuddy(self.tt_extract if mode == "self_consistency" else self.tt_scorer)

    def test_time(self) -> dict | None:
        mode = self.tt_mode.currentData()
        if mode != "self_consistency":
            self._clear_error("answer")  # (a bad answer rule is no concern of one reply)
        if mode is None:
            return None
        if mode == "self_consistency":
            try:
                extractor(self.tt_extract.text().strip() or "last-line")
                theme.set_colour(self.tt_extract, None)
                self._clear_error("answer")
            except OutpostError as exc:
                theme.set_colour(self.tt_extract, "error")
                self._show_error(str(exc), "answer")
        return {"mode": mode, "n": self.tt_n.value(), "scorer": self.tt_scorer.currentData(),
                "extract": self.tt_extract.text().strip() or "last-line"}

    def test_time_plan(self):
        """The Plan for the next turn, or None (a bad extractor raises UsageError)."""
        spec = self.test_time()
        return Plan(**spec) if spec else None

    def load_test_time(self, spec: dict | None) -> None:
        self._loading = True
        try:
            spec = spec or {}
            self.tt_mode.setCurrentIndex(max(0, self.tt_mode.findData(spec.get("mode"))))
            self.tt_n.setValue(spec.get("n", 4))
            self.tt_scorer.setCurrentIndex(max(0, self.tt_scorer.findData(
                spec.get("scorer", "logprob"))))
            self.tt_extract.setText(spec.get("extract", "last-line"))
            self._show_test_time()
        finally:
            self._loading = False

    def response_format(self) -> dict | None:
        if not self.json_mode.isChecked():
            return None
        return {"type": "json", "schema": self.schema}

    def _show_schema(self) -> None:
        self.schema_button.setText("Schema ✓" if self.schema else "Schema…")
        self.schema_button.setEnabled(self.json_mode.isChecked())

    def _edit_schema(self) -> None:
        editor = SchemaEditor(self.schema, self)
        if editor.exec() == SchemaEditor.DialogCode.Accepted:
            self.set_schema(editor.schema)

    def set_schema(self, schema: dict | None) -> None:
        self.schema = schema
        self._show_schema()
        self._edited()

    def _edited(self, *_args) -> None:
        self.schema_button.setEnabled(self.json_mode.isChecked())
        self._warn_stops_in_json()
        if not self._loading:
            self.preset_picker.setCurrentIndex(-1)  # no longer exactly a preset
            self._update_preset_buttons()
            self.changed.emit()

    def _warn_stops_in_json(self) -> None:
        """JSON output with a stop sequence of only white space (a line break): JSON is laid
        out over lines, so the reply stops half way and is asked for again every time."""
        blank = self.json_mode.isChecked() and any(
            not stop.strip() for stop in stops_from_lines(self.fields["stop"].toPlainText()))
        if blank:
            self._show_error("A stop sequence of only a line break (or spaces) cuts JSON replies "
                             "short: each is then asked for again. Remove it for JSON output.",
                             "stops in json")
        else:
            self._clear_error("stops in json")

    # -- the capability map ------------------------------------------------------------------
    def set_engine_kind(self, kind: str, label: str, model: str | None = None,
                        refused: frozenset[str] = frozenset()) -> None:
        """Who will answer ("local", "openai", "anthropic"), and which model (``refused``: the
        knobs its server refused, learnt): the knobs it is not sent go grey."""
        self.kind, self.model, self.refused = kind, model, frozenset(refused)
        self.engine_label.setText(f"These settings go to {label}; greyed-out ones are not "
                                  "sent to it.")
        self._apply_capabilities()

    def _apply_scorers(self) -> None:
        """Scorers that need token probabilities are offered for the local model only."""
        model = self.tt_scorer.model()
        for row in range(self.tt_scorer.count()):
            needs_local = self.tt_scorer.itemData(row) in ("logprob", "length")
            item = model.item(row)
            item.setEnabled(not needs_local or self.kind == "local")
        if self.kind != "local" and self.tt_scorer.currentData() in ("logprob", "length"):
            self.tt_scorer.setCurrentIndex(self.tt_scorer.findData("json"))

    def _apply_capabilities(self) -> None:
        self.lora.set_local(self.kind == "local")
        if hasattr(self, "tt_scorer"):
            self._apply_scorers()
        for knob in KNOBS:
            held = self._why_held(knob.name)
            ok = supports(self.kind, knob.name) and held is None
            label, field = self.labels[knob.name], self.fields[knob.name]
            tip = _tip(knob) if ok else held or why_unsupported(self.kind, knob.name)
            label.setEnabled(ok)
            label.setToolTip(tip)
            field.setToolTip(tip)
            ticked = knob.name not in self.use or self.use[knob.name].isChecked()
            field.setEnabled(ok and ticked)
            if knob.name in self.use:
                self._show_use(knob.name)
        self._show_sent_otherwise()

    def _show_sent_otherwise(self) -> None:
        """Knobs this engine gets otherwise than set (Anthropic: temperature capped at 1, one
        of temperature and Top-p; a model that is not sent them): the one not sent goes grey,
        each says why."""
        said = sent_otherwise(self.kind, _value(self.fields["temperature"]),
                              _value(self.fields["top_p"]))
        for name in ("temperature", "top_p"):
            held = self._why_held(name)
            why = held or said.get(name)
            not_sent = held is not None or why is not None and "instead" in why
            self.labels[name].setEnabled(not not_sent)
            tip = why or _tip(BY_NAME[name])
            self.labels[name].setToolTip(tip)
            self.fields[name].setToolTip(tip)

    def _why_held(self, name: str) -> str | None:
        """Why the model that will answer is not sent ``name`` though its API has it (an OpenAI
        reasoning model, a knob its server refused), else None."""
        return why_withheld(self.kind, self.model, name, self.refused)

    def unset_text(self, name: str) -> str:
        """What an unticked knob's box says applies instead: the local model's own default
        (llama.cpp's, as ``app.domain.sampling.LOCAL_DEFAULTS`` records and the engine
        applies: "default (40)"), a seed drawn for each reply, or, for a cloud engine, "not
        sent" (the provider's own default applies, which Outpost does not know)."""
        if self.kind != "local":
            return "not sent"
        if name in LOCAL_DEFAULTS:
            return f"default ({LOCAL_DEFAULTS[name]:g})"
        return "random" if name == "seed" else "not sent"

    def _show_use(self, name: str) -> None:
        """An unticked knob's box shows what applies instead (its special value text, at the
        box's minimum) rather than a greyed 0 that looks like a value in use; ticked again, it
        gets back the value it had, else the default that applied. Emits nothing."""
        field = self.fields[name]
        blocked = field.blockSignals(True)
        try:
            if self.use[name].isChecked():
                if field.specialValueText():
                    held = self._held.pop(name, None)
                    field.setSpecialValueText("")
                    if field.value() == field.minimum():  # (nobody set one meanwhile)
                        field.setValue(held if held is not None
                                       else LOCAL_DEFAULTS.get(name, field.minimum()))
                return
            if not field.specialValueText():
                self._held[name] = _value(field)
            field.setSpecialValueText(self.unset_text(name))
            field.setValue(field.minimum())
        finally:
            field.blockSignals(blocked)

    # -- presets -----------------------------------------------------------------------------
    def refresh_presets(self, select: str | None = None) -> None:
        self.preset_picker.blockSignals(True)
        self.preset_picker.clear()
        try:
            names = self.presets.names()
        except OutpostError as exc:
            self._show_error(str(exc))
            names = []
        for name in names:
            builtin = self.presets.is_builtin(name)
            self.preset_picker.addItem(name + ("" if builtin else "  (yours)"), name)
        self.preset_picker.setCurrentIndex(self.preset_picker.findData(select) if select
                                           else -1)
        self.preset_picker.setPlaceholderText("Preset…")
        self.preset_picker.blockSignals(False)
        self._update_preset_buttons()

    def _update_preset_buttons(self) -> None:
        name = self.preset_picker.currentData() if self.preset_picker.currentIndex() >= 0 \
            else None
        mine = bool(name) and not self.presets.is_builtin(name)
        self.rename_button.setEnabled(mine)
        self.delete_button.setEnabled(mine)
        tip = "" if mine else "Choose one of your presets (built-in ones cannot be changed)"
        self.rename_button.setToolTip(tip)
        self.delete_button.setToolTip(tip)

    def apply_preset(self, name: str) -> None:
        try:
            knobs = self.presets.get(name)
        except OutpostError as exc:
            self._show_error(str(exc))
            return
        merged = {**self.values(), **knobs}
        adapters = self.presets.adapters(name)
        # a preset sets knobs (and maybe adapters); JSON output and its schema stay as chosen
        self.load(merged, self.system_prompt.toPlainText(), self.response_format(),
                  self.lora.records() if adapters is None else [a.record() for a in adapters])
        self._clear_error("presets")
        self._warn_stops_in_json()
        self.preset_picker.setCurrentIndex(self.preset_picker.findData(name))
        self._update_preset_buttons()
        self.changed.emit()

    def _on_preset_picked(self, index: int) -> None:
        name = self.preset_picker.itemData(index)
        if name:
            self.apply_preset(name)

    def _show_error(self, text: str, about: str = "presets") -> None:
        """Under the panel, what is wrong (empty: nothing); ``about``: which part it is of, so
        that part being right again clears it and nothing else does."""
        self.error.setText(text)
        self.error.setVisible(bool(text))
        self._error_about = about if text else None

    def _clear_error(self, about: str) -> None:
        if self._error_about == about:
            self._show_error("")

    def save_preset(self, name: str) -> bool:
        try:
            self.presets.save(name, {**{k: v for k, v in self.values().items()
                                        if k != "stop" or v},
                                     **({"lora": self.lora.records()} if self.lora.path
                                        else {})})
        except OutpostError as exc:
            self._show_error(str(exc))
            return False
        self._clear_error("presets")
        self._warn_stops_in_json()
        self.refresh_presets(name.strip())
        return True

    def _save_preset(self) -> None:
        name, ok = QInputDialog.getText(self, "Save preset", "Name of the preset:")
        if not ok:
            return
        taken = [n for n in self.presets.names() if n.lower() == name.strip().lower()
                 and not self.presets.is_builtin(n)]
        if taken and not confirm(self, "Replace preset",
                                 f"Replace the preset {taken[0]} with these knobs? Its own "
                                 "are lost.", "Replace"):
            return
        self.save_preset(name)

    def _rename_preset(self) -> None:
        old = self.preset_picker.currentData()
        if not old:
            return
        new, ok = QInputDialog.getText(self, "Rename preset", f"New name for {old}:", text=old)
        if not ok:
            return
        try:
            self.presets.rename(old, new)
        except OutpostError as exc:
            self._show_error(str(exc))
            return
        self._clear_error("presets")
        self._warn_stops_in_json()
        self.refresh_presets(new.strip())

    def _delete_preset(self) -> None:
        name = self.preset_picker.currentData()
        if not name or not confirm(self, "Delete preset", f"Delete the preset {name}?",
                                   "Delete"):
            return
        try:
            self.presets.delete(name)
        except OutpostError as exc:
            self._show_error(str(exc))
            return
        self._clear_error("presets")
        self._warn_stops_in_json()
        self.refresh_presets()

