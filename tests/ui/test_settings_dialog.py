"""Settings… (issue 15): a dialog generated from the settings schema, on a real settings file in
the test's OUTPOST_HOME: a field per option on its group's page, validation as the user types,
Reset and Restore defaults, OK/Apply/Cancel, and what needs a model reload or a restart."""
from __future__ import annotations

import json

import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import (
    QAbstractButton,
    QAbstractSpinBox,
    QApplication,
    QCheckBox,
    QComboBox,
    QDialog,
    QDoubleSpinBox,
    QLabel,
    QLineEdit,
    QListWidget,
    QSpinBox,
    QWidget,
)

from app.config import settings as config
from app.config.settings import SCHEMA, Option, Settings
from tests.support import grab_in_palette
from ui.settings_dialog import SettingsDialog
from ui.settings_fields import FolderList

pytestmark = pytest.mark.gui


@pytest.fixture
def settings():
    return Settings()  # the real file: <OUTPOST_HOME>/config/settings.json


@pytest.fixture
def make_dialog(qtbot, settings):
    from PySide6.QtWidgets import QApplication

    from ui.input_guard import install_input_guard

    install_input_guard(QApplication.instance())  # as OutpostApp does: this file alone, too

    def make(**kwargs) -> SettingsDialog:
        dialog = SettingsDialog(settings, **kwargs)
        qtbot.addWidget(dialog)
        dialog.show()
        qtbot.waitExposed(dialog)
        return dialog

    return make


@pytest.fixture
def dialog(make_dialog):
    return make_dialog()


def saved_values(settings) -> dict:
    return json.loads(settings.path.read_text(encoding="utf-8"))["values"]


def retype(qtbot, field, text: str) -> None:
    """Select what the field shows and type ``text`` over it, as a user does."""
    field.setFocus()
    line = field.lineEdit() if isinstance(field, QAbstractSpinBox) else field
    line.selectAll()
    qtbot.keyClicks(line, text)


def expected_field(option: Option) -> type:
    if option.type is bool:
        return QCheckBox
    if option.choices is not None:
        return QComboBox
    if option.browse:
        from ui.settings_fields import FileField  # a path and Browse…

        return FileField
    if option.multiline:
        from ui.settings_fields import LongTextField  # several lines (the system prompt)

        return LongTextField
    return {int: QSpinBox, float: QDoubleSpinBox, str: QLineEdit, list: FolderList}[option.type]


def test_every_option_has_a_field_on_its_groups_page(dialog, settings):
    shown = [o for o in SCHEMA if o.group]
    assert dialog.page_names() == [g for g in config.GROUPS if any(o.group == g for o in shown)]
    assert dialog.page_names() == list(config.GROUPS)  # every group has options today
    for option in SCHEMA:
        if not option.group:  # state the window keeps (last profile, chat target)
            assert option.name not in dialog.rows
            continue
        row = dialog.rows[option.name]
        assert row in dialog.page(option.group).rows, option.name
        assert isinstance(row.field, expected_field(option)), option.name
        assert row.value() == settings[option.name] == option.default, option.name
        assert row.field.accessibleName() == option.title
        shown = option.description.replace("`", "\"")  # commands quoted (test below)
        assert row.field.accessibleDescription().replace("“", "\"").replace("”", "\"") \
            .startswith(shown)
        assert row.description.text().replace("“", "\"").replace("”", "\"").startswith(shown)
        assert not row.reset_button.isEnabled()  # already the default
    assert {"last_profile", "chat_target"}.isdisjoint(dialog.rows)


def test_a_command_in_a_description_is_quoted_not_marked_with_backticks(dialog):
    """The schema's descriptions are shared with the command line, which marks commands with
    Markdown's backticks; the dialog showed them literally ("(see `outpost profile`)")."""
    assert "(see “outpost profile”)" in dialog.rows["user_id"].description.text()
    assert "a name from “outpost models list”" in dialog.rows["model_path"].description.text()
    for row in dialog.rows.values():
        assert "`" not in row.description.text(), row.option.name
        assert "`" not in row.field.accessibleDescription(), row.option.name


def test_an_option_added_to_the_schema_shows_up_without_touching_the_dialog(
        qtbot, monkeypatch):
    added = (Option("beta_wrap", bool, False, "Wrap long lines.", group="Appearance",
                    label="Wrap lines"),
             Option("beta_budget", int, 3, "Tries per day.", 1, 9, group="Experiments"),
             Option("beta_speed", float, 1.0, "How fast.", 0.5, 2.0, group="Experiments"),
             Option("beta_voice", str, "calm", "Voice.", choices=("calm", "bright"),
                    group="Experiments"))
    schema = SCHEMA + added
    monkeypatch.setattr(config, "SCHEMA", schema)
    monkeypatch.setattr(config, "_BY_NAME", {o.name: o for o in schema})
    settings = Settings()
    dialog = SettingsDialog(settings)
    qtbot.addWidget(dialog)
    assert dialog.page_names() == [*config.GROUPS, "Experiments"]
    assert dialog.rows["beta_wrap"] in dialog.page("Appearance").rows
    assert dialog.rows["beta_wrap"].field.text() == "Wrap lines"
    assert [r.option.name for r in dialog.page("Experiments").rows] == [
        "beta_budget", "beta_speed", "beta_voice"]
    assert dialog.rows["beta_budget"].option.title == "Beta budget"  # no label: from the name
    dialog.rows["beta_budget"].field.setValue(12)
    assert "from 1 to 9" in dialog.rows["beta_budget"].error


def test_changed_values_and_ok_write_the_settings_file(
        qtbot, dialog, settings, tmp_path, monkeypatch):
    retype(qtbot, dialog.rows["system_prompt"].field, "Answer in French.")
    retype(qtbot, dialog.rows["temperature"].field, "1.25")
    dialog.show_page("Local model")
    box = dialog.rows["gpu_offload"].field
    qtbot.mouseClick(box, Qt.MouseButton.LeftButton, pos=QPoint(8, box.height() // 2))
    folder = tmp_path / "usb stick"
    monkeypatch.setattr("ui.settings_fields.QFileDialog.getExistingDirectory",
                        lambda *args, **kwargs: str(folder))
    qtbot.mouseClick(dialog.rows["shared_model_folders"].field.add_button,
                     Qt.MouseButton.LeftButton)
    dialog.show_page("Network and failover")
    dialog.rows["default_route"].field.setCurrentIndex(
        dialog.rows["default_route"].field.findData("local"))
    assert dialog.apply_button.isEnabled()
    assert not settings.path.exists()  # nothing is saved before OK or Apply

    with qtbot.waitSignal(dialog.applied) as applied:
        qtbot.mouseClick(dialog.ok_button, Qt.MouseButton.LeftButton)
    changed = ["system_prompt", "temperature", "shared_model_folders", "gpu_offload",
               "default_route"]
    assert applied.args == [changed]  # in schema order
    assert dialog.result() == QDialog.DialogCode.Accepted
    values = saved_values(settings)
    assert values["system_prompt"] == "Answer in French."
    assert values["temperature"] == 1.25
    assert values["gpu_offload"] is False
    assert values["shared_model_folders"] == [str(folder)]
    assert values["default_route"] == "local"
    assert values["context_cap"] == 4096  # untouched ones keep their value
    assert Settings().as_dict() == settings.as_dict()


def test_an_out_of_range_value_is_refused_with_a_message_and_not_saved(
        qtbot, dialog, settings, artifacts_dir):
    dialog.show_page("Local model")
    row = dialog.rows["context_cap"]
    retype(qtbot, row.field, "99")
    assert row.field.value() == 99  # the field shows what was typed ...
    assert row.error_label.isVisible()  # ... and says why it cannot be kept
    assert row.error == ("Setting context_cap must be a whole number from 256 to 1,048,576; "
                         "got 99.")
    assert row.error_label.text() == row.error
    assert row.field.accessibleDescription().startswith(row.error)
    assert not dialog.ok_button.isEnabled()
    assert not dialog.apply_button.isEnabled()
    assert "Local model page" in dialog.note.text()
    qtbot.wait(20)  # the error's line made the page scroll: let it lay out again
    assert dialog.grab().save(str(artifacts_dir / "settings-invalid-value.png"))

    dialog.accept()  # Enter in a field, say: still refused
    assert dialog.isVisible()
    assert not settings.path.exists()
    assert settings["context_cap"] == 4096

    retype(qtbot, row.field, "8192")
    assert row.error is None and not row.error_label.isVisible()
    assert dialog.ok_button.isEnabled() and dialog.note.text() == ""
    qtbot.mouseClick(dialog.ok_button, Qt.MouseButton.LeftButton)
    assert saved_values(settings)["context_cap"] == 8192


def test_the_arrows_stay_within_the_range(dialog):
    field = dialog.rows["n_threads"].field
    assert field.value() == 0
    field.stepBy(-1)
    assert field.value() == 0 and dialog.rows["n_threads"].error is None
    top = dialog.rows["top_p"].field
    top.stepBy(10)
    assert top.value() == 1.0 and dialog.rows["top_p"].error is None


def test_top_p_takes_what_the_sampling_panel_and_the_command_line_take(
        qtbot, dialog, settings, artifacts_dir):
    """It stopped at 0.01 ("Between 0.01 and 1."): 0.005 was refused here and taken by the
    Sampling panel and --top-p. Now: greater than 0 and at most 1, as the knob."""
    row = dialog.rows["top_p"]
    retype(qtbot, row.field, "0")
    assert row.error == "Setting top_p must be a number greater than 0 and at most 1; got 0.0."
    assert not dialog.ok_button.isEnabled()
    row.field.stepBy(-5)  # the arrows stop at the lowest value it takes, not at 0
    assert 0 < row.field.value() < 0.01 and row.error is None
    retype(qtbot, row.field, "0.005")
    assert row.error is None and dialog.ok_button.isEnabled()
    dialog.show()
    qtbot.waitExposed(dialog)
    for theme_name in ("light", "dark"):
        grab_in_palette(qtbot, dialog, artifacts_dir / f"settings-top-p-{theme_name}.png",
                        theme_name)
    qtbot.mouseClick(dialog.ok_button, Qt.MouseButton.LeftButton)
    assert saved_values(settings)["top_p"] == 0.005


def test_reset_and_restore_defaults(qtbot, dialog, settings):
    row = dialog.rows["max_tokens"]
    retype(qtbot, row.field, "100")
    assert row.reset_button.isEnabled()
    qtbot.mouseClick(row.reset_button, Qt.MouseButton.LeftButton)
    assert row.value() == 512 and not row.reset_button.isEnabled()
    assert dialog.changed_names() == []

    retype(qtbot, dialog.rows["temperature"].field, "0.2")
    retype(qtbot, dialog.rows["system_prompt"].field, "Short answers.")
    retype(qtbot, dialog.rows["context_cap"].field, "99")  # another page: left alone
    page = dialog.page("General")
    qtbot.mouseClick(page.restore_button, Qt.MouseButton.LeftButton)
    assert dialog.rows["temperature"].value() == 0.7
    assert dialog.rows["system_prompt"].value() == "You are a helpful assistant."
    assert dialog.rows["context_cap"].value() == 99


def test_reset_of_a_saved_value_goes_back_to_the_default(qtbot, settings, make_dialog):
    settings.set("context_cap", 8192)
    settings.save()
    dialog = make_dialog()
    row = dialog.rows["context_cap"]
    assert row.value() == 8192 and row.reset_button.isEnabled()
    row.reset()
    with qtbot.waitSignal(dialog.applied) as applied:
        assert dialog.apply()
    assert applied.args == [["context_cap"]]
    assert saved_values(settings)["context_cap"] == 4096


def test_apply_says_what_needs_a_reload_or_a_restart(qtbot, make_dialog, settings):
    seen = []
    dialog = make_dialog(on_applied=seen.append)
    retype(qtbot, dialog.rows["context_cap"].field, "8192")
    retype(qtbot, dialog.rows["idle_timeout_s"].field, "90")
    with qtbot.waitSignal(dialog.applied) as applied:
        qtbot.mouseClick(dialog.apply_button, Qt.MouseButton.LeftButton)
    assert applied.args == [["context_cap", "idle_timeout_s"]] and seen == applied.args
    assert dialog.isVisible()  # Apply keeps the dialog open
    assert dialog.note.text() == ("Applied. The local model reloads with the new setting: "
                                  "Context cap. Idle timeout takes effect when Outpost restarts.")
    assert not dialog.apply_button.isEnabled()  # nothing left to apply
    assert saved_values(settings)["idle_timeout_s"] == 90.0

    assert SettingsDialog.needs_reload(["context_cap"])
    assert dialog.needs_reload(["temperature", "n_threads"])
    assert not SettingsDialog.needs_reload(["temperature", "idle_timeout_s"])
    assert SettingsDialog.needs_restart(["idle_timeout_s"])
    assert not SettingsDialog.needs_restart(["context_cap"])
    assert SettingsDialog.applied_note(["temperature"]) == "Applied."


def test_cancel_discards_the_edits(qtbot, dialog, settings):
    retype(qtbot, dialog.rows["temperature"].field, "1.5")
    dialog.rows["offline_mode"].set_value(True)
    with qtbot.assertNotEmitted(dialog.applied):
        qtbot.mouseClick(dialog.buttons.button(dialog.buttons.StandardButton.Cancel),
                         Qt.MouseButton.LeftButton)
    assert dialog.result() == QDialog.DialogCode.Rejected
    assert settings["temperature"] == 0.7 and settings["offline_mode"] is False
    assert not settings.path.exists()


def test_the_wheel_scrolls_past_a_field_that_has_no_focus(dialog):
    def wheel(widget, up=True):
        centre = QPointF(widget.rect().center())
        event = QWheelEvent(centre, QPointF(widget.mapToGlobal(centre.toPoint())), QPoint(),
                            QPoint(0, 120 if up else -120), Qt.MouseButton.NoButton,
                            Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
        QApplication.sendEvent(widget, event)
        return event.isAccepted()

    spin, combo = dialog.rows["temperature"].field, dialog.rows["default_route"].field
    dialog.ok_button.setFocus()
    assert not wheel(spin) and spin.value() == 0.7
    assert not wheel(combo, up=False) and combo.currentData() == "auto"
    assert dialog.changed_names() == []
    for field in (spin, combo):
        assert field.focusPolicy() == Qt.FocusPolicy.StrongFocus  # the wheel gives no focus


def test_no_secret_and_every_input_is_named(dialog):
    lines = [w for w in dialog.findChildren(QLineEdit)
             if not isinstance(w.parent(), (QAbstractSpinBox, QComboBox))]
    assert lines and all(w.echoMode() == QLineEdit.EchoMode.Normal for w in lines)
    inputs = [w for w in dialog.findChildren(QWidget)
              if (isinstance(w, (QAbstractSpinBox, QComboBox, QListWidget, QAbstractButton))
                  and not isinstance(w.parent(), QLineEdit))  # Qt's own clear button
              or w in lines]
    unnamed = [w for w in inputs
               if not (w.accessibleName() or isinstance(w, QAbstractButton) and w.text())]
    assert unnamed == []
    for row in dialog.rows.values():
        assert row.reset_button.accessibleName() == f"Reset {row.option.title}"
        assert row.field.accessibleDescription()


def clipped(page) -> list[str]:
    """What does not fit on ``page`` (after layout): text cut by its own widget, or a widget
    reaching past the right edge of the page's scroll area (it scrolls up and down only)."""
    cut = []
    viewport = page.scroll.viewport()
    for widget in page.findChildren(QWidget):
        if not widget.isVisibleTo(page):
            continue
        if isinstance(widget, QLabel) and widget.wordWrap():
            if widget.height() < widget.heightForWidth(widget.width()):
                cut.append(widget.text())
        elif isinstance(widget, (QLabel, QAbstractButton)) and widget.text():
            if widget.width() < widget.sizeHint().width():
                cut.append(widget.text())
        if viewport.isAncestorOf(widget) and \
                widget.mapTo(viewport, widget.rect().topRight()).x() >= viewport.width():
            cut.append(f"{type(widget).__name__} past the right edge")
    return cut


SIZES = {"default": None, "900x600": (900, 600), "smallest": (1, 1)}


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_screenshots_of_every_page_nothing_clipped(qtbot, dialog, artifacts_dir, theme):
    from tools.take_screenshots import palette

    app = QApplication.instance()
    old = app.palette()
    app.setPalette(palette(theme))
    try:
        for name, size in SIZES.items():
            if size is not None:
                dialog.resize(*size)  # the smallest: the dialog's minimum size
            for group in dialog.page_names():
                dialog.show_page(group)
                qtbot.wait(20)
                slug = group.lower().replace(" ", "-")
                if name != "smallest":
                    path = artifacts_dir / f"settings-{slug}-{theme}-{name}.png"
                    assert dialog.grab().save(str(path))
                assert clipped(dialog.page(group)) == [], (group, dialog.size())
    finally:
        app.setPalette(old)


def test_the_window_opens_it_with_ctrl_comma_and_applies_what_changed(qtbot, scripted):
    from PySide6.QtCore import Qt

    window = scripted.window
    window.activateWindow()
    qtbot.keyClick(window, Qt.Key.Key_Comma, Qt.KeyboardModifier.ControlModifier)
    dialog = window.settings_dialog
    qtbot.addWidget(dialog)
    scripted.settings.set("offline_mode", True)
    scripted.settings.set("context_cap", 2048)
    with qtbot.waitSignal(scripted.loader.loading_started, timeout=5000):
        window.apply_settings(["context_cap", "offline_mode"])  # what OK does
    assert window.offline.action.isChecked()  # the switch follows the setting
    assert "reloads" in window.status_note.text()


def test_use_the_gpu_says_when_this_build_has_no_gpu_offload(qtbot, scripted):
    """The option is a wish ("when llama.cpp was built with GPU support"); on a build without
    offload the dialog says the model runs on the CPU (it looked ticked and working)."""
    from engines.llama_local import gpu_offload_supported

    dialog = scripted.window.open_settings()
    qtbot.addWidget(dialog)
    about = dialog.rows["gpu_offload"].description.text()
    assert about.startswith(config.option_named("gpu_offload").description)
    assert ("has no GPU offload, so the model runs on the CPU" in about) == \
        (not gpu_offload_supported())
    assert "has no GPU offload" not in dialog.rows["n_threads"].description.text()


def test_the_model_can_be_chosen_with_browse(qtbot, dialog, settings, monkeypatch, tmp_path):
    """Settings ▸ Local model ▸ Model: a path typed, or a GGUF file chosen with Browse…
    (starting in the folder of the path already there); OK saves it."""
    from PySide6.QtWidgets import QFileDialog

    row = dialog.rows["model_path"]
    assert row.field.browse_button.text() == "Browse…"
    assert row.title.buddy() is row.field and row.field.focusProxy() is row.field.edit
    chosen = tmp_path / "other.gguf"
    asked = []

    def pick(parent, caption, folder, files):
        asked.append((caption, folder, files))
        return str(chosen), files

    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(pick))
    row.field.set_value(str(tmp_path / "old.gguf"))
    qtbot.mouseClick(row.field.browse_button, Qt.MouseButton.LeftButton)
    assert asked == [("Choose the model", str(tmp_path), "GGUF models (*.gguf)")]
    assert row.value() == str(chosen)
    monkeypatch.setattr(QFileDialog, "getOpenFileName",
                        staticmethod(lambda *args: ("", "")))  # cancelled: nothing changes
    qtbot.mouseClick(row.field.browse_button, Qt.MouseButton.LeftButton)
    assert row.value() == str(chosen)
    dialog.accept()
    assert settings["model_path"] == str(chosen)


def test_the_system_prompt_is_edited_on_several_lines(qtbot, dialog, settings):
    """Enter starts a new line of the system prompt (it does not press OK); Tab moves on;
    OK saves the lines as typed."""
    from ui.settings_fields import LongTextField

    field = dialog.rows["system_prompt"].field
    assert isinstance(field, LongTextField)
    assert field.height() >= 3 * field.fontMetrics().lineSpacing()  # lines, not one
    field.setFocus()
    field.selectAll()
    qtbot.keyClicks(field, "You help field staff.")
    qtbot.keyClick(field, Qt.Key.Key_Return)
    qtbot.keyClicks(field, "Answer briefly.")
    assert dialog.isVisible()  # Enter was a new line, not OK
    qtbot.mouseClick(dialog.ok_button, Qt.MouseButton.LeftButton)
    assert saved_values(settings)["system_prompt"] == "You help field staff.\nAnswer briefly."



def test_a_number_is_kept_as_typed_and_a_stored_one_exactly(qtbot, settings, make_dialog):
    """A newcomer's 0.025 Temperature became 0.02 and 0.925 Top-p 0.92, silently: the fields
    kept only as many decimals as the default had. Typed values are kept (up to six decimals,
    shown without trailing zeros), and a value stored with more is shown and saved untouched."""
    settings.set("hedge_after_s", 0.30000000000000004)  # (0.1 + 0.2, written by a script)
    settings.save()
    dialog = make_dialog()
    temperature, top_p = dialog.rows["temperature"].field, dialog.rows["top_p"].field
    retype(qtbot, temperature, "0.025")
    retype(qtbot, top_p, "0.925")
    assert (temperature.value(), top_p.value()) == (0.025, 0.925)
    assert (temperature.text(), top_p.text()) == ("0.025", "0.925")
    assert dialog.rows["idle_timeout_s"].field.text() == "60"  # (no trailing zeros)
    hedge = dialog.rows["hedge_after_s"]
    assert hedge.field.text() == "0.3" and hedge.value() == 0.30000000000000004
    with qtbot.waitSignal(dialog.applied) as applied:
        qtbot.mouseClick(dialog.ok_button, Qt.MouseButton.LeftButton)
    assert applied.args == [["temperature", "top_p"]]  # the stored one was not changed
    values = saved_values(settings)
    assert (values["temperature"], values["top_p"]) == (0.025, 0.925)
    assert values["hedge_after_s"] == 0.30000000000000004


def test_every_number_says_its_range_before_a_value_is_out_of_it(dialog):
    """README: each option is shown "with its range"; it showed only after a value out of it.
    Every numeric option's description (and what a screen reader reads) says it, in the words
    of the command line's help ("Between 0 and 2.")."""
    assert dialog.rows["temperature"].description.text() == \
        "Sampling temperature. Between 0 and 2."
    assert "Greater than 0 and at most 1." in dialog.rows["top_p"].description.text()
    assert "Between 256 and 1,048,576." in dialog.rows["context_cap"].description.text()
    for row in dialog.rows.values():
        option = row.option
        if option.minimum is None:
            assert "Between" not in row.about, option.name
            continue
        span = f"{option.span[0].upper()}{option.span[1:]}."
        assert span.startswith("Greater than " if option.minimum_open else "Between "), span
        assert row.description.text().startswith(f"{option.description} {span}"), option.name
        assert span in row.field.accessibleDescription(), option.name
