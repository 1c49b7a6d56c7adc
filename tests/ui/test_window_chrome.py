"""The main window's chrome on a small screen and around the chat (trial 9): windows and dialogs
fit the screen, the Sampling panel makes room for the chat, the status bar's notes leave its
widgets in place, actions that cannot act are disabled, the route says the truth in Offline
mode, and file dialogs open where the user was last."""
from __future__ import annotations

import pytest
from PySide6.QtCore import QRect
from PySide6.QtWidgets import QDialogButtonBox

from ui import screen_fit

pytestmark = pytest.mark.gui


def fake_screen(monkeypatch, width: int, height: int) -> QRect:
    """A screen of ``width`` x ``height`` for ``ui.screen_fit`` (Qt's offscreen one is fixed)."""
    area = QRect(0, 0, width, height)
    monkeypatch.setattr(screen_fit, "available_geometry", lambda _widget: area)
    return area


def test_the_window_and_its_dialogs_fit_a_small_screen(qtbot, scripted, monkeypatch,
                                                       artifacts_dir):
    """On an 800x600 screen the window (1380x760) and Settings, Usage, Models and the Outbox
    (860x640, 1100x760, 980x720, 1000x380) opened at their full size and ran off it: each is
    fitted to the screen as it is shown, a dialog centred on the window."""
    area = fake_screen(monkeypatch, 800, 600)
    window = scripted.window
    window.hide()
    window.show()
    qtbot.waitUntil(window.isVisible)
    assert area.contains(window.frameGeometry()), window.frameGeometry()
    window.open_settings()
    window.open_usage()
    window.model_menu.open_models()
    window.outbox_button.open_panel()
    dialogs = [window.settings_dialog, window.usage_dialog, window.model_menu.models_dialog,
               window.outbox_button.panel]
    centre = window.frameGeometry().center()
    for dialog in dialogs:
        qtbot.waitUntil(dialog.isVisible)
        frame = dialog.frameGeometry()
        assert area.contains(frame), (type(dialog).__name__, frame)
        assert (frame.center() - centre).manhattanLength() <= 2, (type(dialog).__name__, frame)
    from tests.support import grab_in_palette

    for theme in ("light", "dark"):
        for dialog in dialogs:
            name = type(dialog).__name__
            grab_in_palette(qtbot, dialog, artifacts_dir / f"chrome-800x600-{name}-{theme}.png",
                            theme)
    for dialog in dialogs:
        dialog.close()


def test_a_restored_geometry_too_large_for_the_screen_is_fitted(qtbot, outpost_app,
                                                                scripted_engine, monkeypatch):
    """A window closed at 1380x760 on a large monitor comes back inside a 700x500 screen."""
    first = outpost_app(max_tokens=8, engine_factory=scripted_engine.factory)
    first.start()
    first.window.resize(1380, 760)
    first.window.close()
    area = fake_screen(monkeypatch, 700, 500)
    second = outpost_app(max_tokens=8, engine_factory=scripted_engine.factory)
    second.start()
    window = second.window
    qtbot.waitUntil(window.isVisible)
    assert area.contains(window.frameGeometry()), window.frameGeometry()


def test_the_sampling_panel_steps_aside_for_the_chat(qtbot, scripted, artifacts_dir):
    """With the Sampling panel open the window could not be made narrower than 820 px, and
    the chat kept ~330 px: now the window goes to 800 px, the panel hides while the chat would
    be narrower than READABLE_CHAT and comes back when the window is wide again. Opened by the
    user where there is no room, it floats, and docks again once there is."""
    from tests.support import grab_in_palette
    from ui.sampling_room import READABLE_CHAT

    window = scripted.window
    chat = window.splitter.widget(1)
    assert window.sampling.isVisible() and not window.sampling.isFloating()
    window.resize(800, 700)
    qtbot.waitUntil(lambda: window.width() == 800)
    qtbot.waitUntil(lambda: not window.sampling.isVisible())
    qtbot.waitUntil(lambda: chat.width() >= READABLE_CHAT)  # (laid out again)
    for theme in ("light", "dark"):
        grab_in_palette(qtbot, window, artifacts_dir / f"chrome-800-no-panel-{theme}.png",
                        theme)
    window.resize(1380, 760)
    qtbot.waitUntil(window.sampling.isVisible)
    assert not window.sampling.isFloating()
    qtbot.waitUntil(lambda: chat.width() >= READABLE_CHAT)

    window.resize(800, 700)
    qtbot.waitUntil(lambda: not window.sampling.isVisible())
    window.sampling_action.trigger()  # View ▸ Sampling panel
    qtbot.waitUntil(lambda: window.sampling.isVisible() and window.sampling.isFloating())
    assert window.width() == 800
    for theme in ("light", "dark"):
        grab_in_palette(qtbot, window.sampling,
                        artifacts_dir / f"chrome-floating-panel-{theme}.png", theme)
    qtbot.waitUntil(lambda: chat.width() >= READABLE_CHAT)
    window.resize(1380, 760)
    qtbot.waitUntil(lambda: not window.sampling.isFloating())
    assert window.sampling.isVisible()


def test_the_panel_opened_without_room_floats_beside_the_window(qtbot, scripted, monkeypatch,
                                                                artifacts_dir):
    """At 800x560, View ▸ Sampling panel left the panel hidden and visible at once, docked over
    the chat column, unpainted: its own show laid the chat out narrower, and the room hid it
    inside that show. It floats now, shown and not hidden, beside the window where the screen
    has room (it opened centred on the window, over the chat)."""
    from tests.support import grab_in_palette
    from ui.sampling_room import READABLE_CHAT

    area = fake_screen(monkeypatch, 1600, 900)
    window, dock = scripted.window, scripted.window.sampling
    window.resize(800, 560)
    chat = window.splitter.widget(1)
    qtbot.waitUntil(lambda: window.width() == 800 and dock.isHidden())
    qtbot.waitUntil(lambda: chat.width() >= READABLE_CHAT)  # (laid out without the panel)
    window.sampling_action.trigger()  # View ▸ Sampling panel
    qtbot.waitUntil(lambda: dock.isFloating() and dock.isVisible())
    qtbot.wait(50)  # (the checks that follow a show)
    assert dock.isFloating() and dock.isVisible() and not dock.isHidden()
    assert dock.isWindow() and window.sampling_action.isChecked()
    assert area.contains(dock.frameGeometry()), dock.frameGeometry()
    assert not dock.frameGeometry().intersects(window.frameGeometry()), \
        (dock.frameGeometry(), window.frameGeometry())
    for theme in ("light", "dark"):
        grab_in_palette(qtbot, window, artifacts_dir / f"chrome-800x560-beside-{theme}.png",
                        theme)
        grab_in_palette(qtbot, dock, artifacts_dir / f"chrome-800x560-floating-{theme}.png",
                        theme)


def test_a_panel_hidden_for_want_of_room_comes_back_at_the_next_start(qtbot, outpost_app,
                                                                     scripted_engine):
    """Closed while the panel stepped aside, the window brings it back once it is made wide
    enough at the next start (it stayed hidden: Qt keeps only that it was hidden)."""
    first = outpost_app(max_tokens=8, engine_factory=scripted_engine.factory)
    first.start()
    first.window.resize(800, 700)
    qtbot.waitUntil(lambda: not first.window.sampling.isVisible())
    first.window.close()
    second = outpost_app(max_tokens=8, engine_factory=scripted_engine.factory)
    second.start()
    window = second.window
    qtbot.waitUntil(window.isVisible)
    assert not window.sampling.isVisible()
    window.resize(1380, 760)
    qtbot.waitUntil(window.sampling.isVisible)


def test_a_status_note_leaves_the_route_model_and_state_in_place(qtbot, scripted,
                                                                 scripted_engine, tmp_path,
                                                                 artifacts_dir):
    """While a reply streamed, an export's note ("Exported 1 chat to …", 10 s) took the whole
    status bar (QStatusBar.showMessage hides its widgets): the route, the model and "Generating…"
    were gone. The note now has a label of its own beside them, which clears itself."""
    from tests.support import grab_in_palette, held_open

    window = scripted.window
    scripted_engine.script(held_open("Once", " upon", " a", " time"))
    window._on_send_requested("Tell me a story")
    qtbot.waitUntil(lambda: window.state_label.text() == "Generating…", timeout=10000)
    window.transfer.export(tmp_path / "all.md", all_chats=True)
    qtbot.waitUntil(lambda: window.status_note.text().startswith("Exported 1 chat"),
                    timeout=10000)
    for label in (window.route_label, window.model_label, window.state_label,
                  window.status_note):
        assert label.isVisible(), label.text()
    assert window.state_label.text() == "Generating…"
    for theme in ("light", "dark"):
        grab_in_palette(qtbot, window, artifacts_dir / f"chrome-note-streaming-{theme}.png",
                        theme)
    window.status_note.timer.timeout.emit()  # (its time is up)
    assert not window.status_note.isVisible() and window.route_label.isVisible()
    window.controller.stop()
    qtbot.waitUntil(lambda: window.controller.state == "idle", timeout=10000)


def test_stop_and_export_this_chat_are_enabled_only_when_they_can_act(qtbot, scripted,
                                                                      scripted_engine):
    """Chat ▸ Stop reply (Esc) was enabled between replies, and Export this chat… with no chat
    open (it only said "Open a chat to export it"): each is enabled while it can act."""
    from tests.support import held_open

    window = scripted.window
    stop, export_one = window.stop_action, window.transfer.export_one_action
    assert not stop.isEnabled() and not export_one.isEnabled()  # a new chat, nothing asked
    assert window.transfer.export_all_action.isEnabled()
    scripted_engine.script(held_open("Once", " upon"))
    window._on_send_requested("Tell me a story")
    qtbot.waitUntil(stop.isEnabled, timeout=10000)
    assert export_one.isEnabled()  # the chat is saved
    stop.trigger()
    qtbot.waitUntil(lambda: window.controller.state == "idle", timeout=10000)
    assert not stop.isEnabled() and export_one.isEnabled()
    opened = window.controller.conversation_id
    window._on_new_chat()
    assert not export_one.isEnabled()
    window._on_conversation_selected(opened)
    assert export_one.isEnabled()


def test_the_sampling_panels_title_buttons_have_tooltips(qtbot, scripted):
    """The panel's float and close icon buttons had accessible names only: a mouse user got no
    word on what they do. Float's tooltip follows the panel: docking it again once floating."""
    from PySide6.QtWidgets import QAbstractButton

    panel = scripted.window.sampling
    buttons = {b.objectName(): b for b in panel.findChildren(QAbstractButton)}
    close = buttons["qt_dockwidget_closebutton"]
    float_button = buttons["qt_dockwidget_floatbutton"]
    assert close.toolTip().startswith("Hide the panel")
    assert float_button.toolTip().startswith("Float the panel")
    panel.setFloating(True)
    assert float_button.toolTip().startswith("Dock the panel")
    panel.setFloating(False)
    assert float_button.toolTip().startswith("Float the panel")


def test_in_offline_mode_the_route_picker_says_the_local_model_answers(qtbot, scripted,
                                                                       artifacts_dir):
    """Greyed in Offline mode, the route picker read "Auto (local: no provider)" (or the
    conversation's cloud route): it says what answers, and its route comes back after."""
    from tests.support import grab_in_palette
    from ui.route_picker import AUTO_WITHOUT_PROVIDER, OFFLINE

    window = scripted.window
    picker = window.route_picker
    assert picker.currentText() == AUTO_WITHOUT_PROVIDER
    window.offline_action.setChecked(True)
    assert not picker.isEnabled()
    assert picker.currentText() == OFFLINE and picker.shown_text() == OFFLINE
    assert picker.currentData() == "auto"  # (the conversation's route, set aside)
    assert "Offline mode is on" in picker.toolTip()
    for theme in ("light", "dark"):
        grab_in_palette(qtbot, window, artifacts_dir / f"chrome-offline-route-{theme}.png",
                        theme)
    window.offline_action.setChecked(False)
    assert picker.isEnabled() and picker.currentText() == AUTO_WITHOUT_PROVIDER
    assert [picker.itemText(i) for i in range(picker.count())].count(OFFLINE) == 0


def test_file_dialogs_open_where_that_kind_of_file_was_last_chosen(qtbot, scripted,
                                                                   monkeypatch, tmp_path):
    """Open model, Attach LoRA, Export and Import opened in the process's current folder (the
    source checkout): each opens in the folder last used for its kind, at first in the models
    folder (models, LoRA adapters) or the documents folder (export, import)."""
    from PySide6.QtWidgets import QFileDialog

    from ui.window_state import documents_folder

    window = scripted.window
    models = tmp_path / "my-models"
    models.mkdir()
    window.settings.set("models_dir", str(models))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    asked: list[tuple[str, str]] = []
    answers: list[str] = []

    def dialog(_parent, title, where, _filters):
        asked.append((title, where))
        return (answers.pop(0) if answers else "", "")

    monkeypatch.setattr(QFileDialog, "getOpenFileName", dialog)
    monkeypatch.setattr(QFileDialog, "getSaveFileName", dialog)

    def opened(trigger, answer: str = "") -> str:
        answers[:] = [answer] if answer else []
        trigger()
        return asked[-1][1]

    open_model, attach = window.open_model_action.trigger, window.sampling.lora.choose.click
    assert opened(open_model, str(elsewhere / "other.gguf")) == str(models)
    assert opened(open_model) == str(elsewhere)
    assert opened(attach, str(tmp_path / "adapter.gguf")) == str(models)
    assert opened(attach) == str(tmp_path)
    export_all = window.transfer.export_all_action.trigger
    assert opened(export_all) == str(documents_folder() / "chat.md")
    with qtbot.waitSignal(window.transfer.done, timeout=10000):
        opened(export_all, str(elsewhere / "all.md"))
    assert opened(export_all) == str(elsewhere / "chat.md")
    assert opened(window.transfer.import_action.trigger) == str(documents_folder())


def test_the_other_file_dialogs_open_where_their_kind_of_file_was_last_chosen(
        qtbot, scripted, monkeypatch, tmp_path):
    """The Models dialog's Import…, the schema editor's Load, the Usage dialog's Export CSV… and
    the Settings fields' Browse… and Add folder… still opened in the process's current folder
    (the source checkout): each opens in the folder last used for its kind, at first the
    downloads folder (a model), the documents folder, the models folder (the model setting) or
    the home folder (shared model folders)."""
    from pathlib import Path

    from PySide6.QtWidgets import QFileDialog, QInputDialog

    from app.config.settings import option_named
    from engines.model_library import default_models_dir
    from ui.settings_fields import make_field
    from ui.window_state import documents_folder, downloads_folder

    window = scripted.window
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    asked: list[str] = []
    answers: list[str] = []

    def dialog(_parent, _title, where, _filters=""):
        asked.append(where)
        return (answers.pop(0) if answers else "", "")

    def folder_dialog(_parent, _title, where):
        asked.append(where)
        return answers.pop(0) if answers else ""

    monkeypatch.setattr(QFileDialog, "getOpenFileName", dialog)
    monkeypatch.setattr(QFileDialog, "getSaveFileName", dialog)
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", folder_dialog)
    monkeypatch.setattr(QInputDialog, "getItem", lambda *_args: ("", False))  # import: no

    def opened(trigger, answer: str = "") -> str:
        answers[:] = [answer] if answer else []
        trigger()
        return asked[-1]

    models = window.model_menu.open_models()
    import_model = models.import_button.click
    default_models_dir().mkdir(parents=True, exist_ok=True)
    assert opened(import_model, str(elsewhere / "new.gguf")) == str(downloads_folder())
    assert opened(import_model) == str(elsewhere)
    from ui.schema_editor import SchemaEditor

    editor = SchemaEditor(None, window)
    qtbot.addWidget(editor)
    load = editor.load_button.click
    assert opened(load, str(tmp_path / "missing.json")) == str(documents_folder())
    assert opened(load) == str(tmp_path)  # its own folder, not the model import's
    window.open_usage()
    export = window.usage_dialog.export_button.click
    first = Path(opened(export, str(elsewhere / "usage.csv")))
    assert first.parent == documents_folder() and first.suffix == ".csv"
    assert Path(opened(export)).parent == elsewhere
    model_path = make_field(option_named("model_path"))
    qtbot.addWidget(model_path)
    browse = model_path.browse_button.click
    assert opened(browse, str(tmp_path / "a.gguf")) == str(default_models_dir())
    model_path.edit.clear()
    assert opened(browse) == str(tmp_path)
    shared = make_field(option_named("shared_model_folders"))
    qtbot.addWidget(shared)
    add = shared.add_button.click
    assert opened(add, str(elsewhere)) == str(Path.home())
    assert opened(add) == str(tmp_path)  # beside the folder last added
    assert shared.value() == [str(elsewhere)]



def test_a_command_in_an_error_is_quoted_not_marked_with_backticks(qtbot, scripted, tmp_path):
    """The core's messages mark commands Markdown's way for the command line ("`outpost backup
    list` lists them", "store one with `outpost keys set openai`"); the banner and a reply's
    footer showed the backticks. The window quotes them, as Settings' descriptions; the CLI
    keeps them (the error's own words are unchanged)."""
    from app.domain.errors import OutpostError
    from app.domain.messages import Message, MessageStatus, Role
    from app.config.secrets import how_to_add_a_key
    from app.storage.restore import restore_backup
    from ui.message_text import status_note

    with pytest.raises(OutpostError) as raised:
        restore_backup(tmp_path / "outpost.db", "nope")
    assert "`outpost backup list`" in str(raised.value)
    window = scripted.window
    window.errors.present(raised.value)
    shown = window.banner.label.text()
    assert "“outpost backup list” lists them" in shown and "`" not in shown, shown
    window.errors.inform("Restored; `outpost backup list` lists the others.")
    assert window.banner.label.text() == "Restored; “outpost backup list” lists the others."
    failed = Message("m1", "c1", Role.ASSISTANT, "", MessageStatus.ERROR, "", "",
                     error="openai has no API key: "
                     + how_to_add_a_key("openai", "https://api.openai.com"))
    note, _warning = status_note(failed)
    assert "“outpost keys set openai”" in note and "`" not in note, note


def test_in_offline_mode_the_provider_picker_says_the_provider_waits(qtbot, scripted,
                                                                     artifacts_dir):
    """In Offline mode with a provider elsewhere chosen, the Cloud provider picker read as if
    it answered (or "None (local model only)"): it names the provider and says it waits for
    Offline mode to be off, as the route picker says "Local model (offline mode)"."""
    from tests.support import grab_in_palette
    from tests.ui.test_gui_outbox import use_provider
    from ui.target_picker import waiting_label

    app, window = scripted, scripted.window
    picker = window.target_picker
    use_provider(app, "remote", "http://192.0.2.1:9/v1", route="auto")
    normal = picker.currentText()
    assert normal == "remote · test-model"
    window.offline_action.setChecked(True)
    assert picker.currentText() == waiting_label("remote") == "remote (after offline mode)"
    assert picker.target() == "provider:remote"
    assert "Offline mode is on" in picker.toolTip() and "remote" in picker.toolTip()
    for theme in ("light", "dark"):
        grab_in_palette(qtbot, window, artifacts_dir / f"chrome-offline-provider-{theme}.png",
                        theme)
    window.offline_action.setChecked(False)
    assert picker.currentText() == normal and "Offline mode" not in picker.toolTip()


@pytest.mark.parametrize("screen", [(800, 600), (1600, 1000)])
def test_the_keyboard_shortcuts_fit_the_screen_and_scroll(qtbot, scripted, monkeypatch, screen,
                                                          artifacts_dir):
    """On an 800x600 screen Keyboard shortcuts alone did not fit: its least size was 687x632,
    its Close button below the screen. Its table scrolls up and down now: the dialog fits, its
    Close button on the screen, each row whole across; on a tall screen it shows every row
    without a scroll bar."""
    from PySide6.QtCore import QPoint

    from tests.support import grab_in_palette

    area = fake_screen(monkeypatch, *screen)
    dialog = scripted.window.help_menu.show_shortcuts()
    qtbot.addWidget(dialog)
    qtbot.waitUntil(dialog.isVisible)
    minimum = dialog.minimumSizeHint().expandedTo(dialog.minimumSize())
    assert minimum.width() <= 800 and minimum.height() <= 600, minimum
    assert area.contains(dialog.frameGeometry()), dialog.frameGeometry()
    close = dialog.findChild(QDialogButtonBox)
    corner = close.mapToGlobal(QPoint(close.width() - 1, close.height() - 1))
    assert close.isVisible() and area.contains(corner), corner
    table = dialog.scroll.widget()
    assert table.width() >= table.sizeHint().width()  # whole across: up and down only
    bar = dialog.scroll.verticalScrollBar()
    qtbot.waitUntil(lambda: bar.isVisible() == (screen == (800, 600)))  # (once laid out)
    qtbot.wait(50)  # (and it stays so)
    assert bar.isVisible() == (screen == (800, 600))
    for theme in ("light", "dark"):
        grab_in_palette(qtbot, dialog, artifacts_dir /
                        f"chrome-{screen[0]}x{screen[1]}-shortcuts-{theme}.png", theme)
