"""The window as a place to live in (issue 15): Help ▸ Keyboard shortcuts and About, Ctrl+L,
chats written by the CLI showing up without a restart, and the window coming back as it was
closed (size, split, the open conversation)."""
from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from app.domain.messages import Role
from app.storage.store import Store
from tests.support import reply, send

pytestmark = pytest.mark.gui


def test_shortcuts_and_about_say_what_is_there(qtbot, scripted, artifacts_dir):
    window = scripted.window
    dialog = window.help_menu.show_shortcuts()
    qtbot.addWidget(dialog)
    keys = dict(dialog.rows)
    for key, what in (("Ctrl+K or Ctrl+Shift+F", "Find a chat or message…"),
                      ("Ctrl+L", "Go to the message box"), ("Ctrl+N", "New chat"),
                      ("Ctrl+Shift+M", "Models…"),
                      ("Alt+Right", "Next version of the focused message")):
        assert keys.get(key) == what, (key, keys)
    dialog.grab().save(str(artifacts_dir / "shortcuts.png"))
    box = window.help_menu.show_about()
    qtbot.addWidget(box)
    text = box.text()
    assert "Qt 6." in text and "llama-cpp-python 0." in text and "scripted-model.gguf" in text
    box.close()
    dialog.close()
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=3000)
    window.sidebar.list.setFocus()
    qtbot.keyClick(window, Qt.Key.Key_L, Qt.KeyboardModifier.ControlModifier)
    assert window.focusWidget() is window.composer.edit


def test_a_chat_written_by_another_process_appears(qtbot, scripted):
    window = scripted.window
    other = Store(scripted.store.path)  # what `outpost ask` in a terminal does
    conversation = other.create_conversation("From the terminal", "", None,
                                             profile=window.profile_name)
    other.add_message(conversation.id, Role.USER, "hello from the CLI")
    other.close()
    assert window.conversation_watch.check()  # the timer's tick, without waiting for it
    titles = [item.text() for item in window.sidebar.conversation_items()]
    assert any("From the terminal" in t for t in titles), titles
    assert not window.conversation_watch.check()  # nothing new since


def test_the_window_comes_back_as_it_was_closed(qtbot, outpost_app, scripted_engine):
    scripted_engine.script(reply("First answer."))
    first = outpost_app(max_tokens=16, engine_factory=scripted_engine.factory)
    with qtbot.waitSignal(first.loader.model_ready, timeout=10000):
        first.start()
    send(qtbot, first, "Remember me")
    opened = first.window.controller.conversation_id
    first.window._on_new_chat()  # the last one open is the new chat: nothing to reopen
    first.window._on_conversation_selected(opened)
    first.window.resize(900, 600)  # the smallest size the window is made for
    # (the Sampling panel steps aside at that width: the split has the whole width, once laid
    # out)
    qtbot.waitUntil(lambda: first.window.splitter.width() == first.window.width())
    first.window.splitter.setSizes([233, 400])
    first_split = first.window.splitter.sizes()[0]
    assert first_split != 260  # not the default
    first.window.close()

    second = outpost_app(max_tokens=16, engine_factory=scripted_engine.factory)
    with qtbot.waitSignal(second.loader.model_ready, timeout=10000):
        second.start()
    window = second.window
    # Qt keeps a restored window on its screen (800 px wide offscreen; its frame's few pixels
    # come off the width); the window goes narrower than 820 px, the Sampling panel stepping
    # aside (ui.sampling_room)
    screen = window.screen().availableGeometry()
    assert window.height() == min(600, screen.height())
    assert min(900, screen.width()) - 4 <= window.width() <= min(900, screen.width())
    assert window.splitter.sizes()[0] == first_split
    assert window.controller.conversation_id == opened
    assert window.view.last_bubble() is not None


def test_a_message_being_typed_survives_closing_and_a_crash(qtbot, outpost_app,
                                                            scripted_engine):
    """The composer's text is kept a second after typing stops (a crash loses at most that)
    and on closing, in a file only the user can read, and is back in the box at the next
    start, for the same profile only: another profile signed in finds its own box, and the
    first one's text comes back when it signs in again. Sending clears it."""
    import os
    import stat

    from ui.window_state import WindowState

    first = outpost_app(max_tokens=8, engine_factory=scripted_engine.factory)
    first.start()
    window = first.window
    me = window.profile
    window.draft.timer.setInterval(20)
    qtbot.keyClicks(window.composer.edit, "Report: pump 3 is leaking")
    qtbot.waitUntil(lambda: WindowState().draft(me.name) == "Report: pump 3 is leaking",
                    timeout=3000)
    assert stat.S_IMODE(os.stat(WindowState().qsettings.fileName()).st_mode) == 0o600
    # (no close: as if the app had died here)
    second = outpost_app(max_tokens=8, engine_factory=scripted_engine.factory)
    second.start()
    again = second.window
    assert again.composer.edit.toPlainText() == "Report: pump 3 is leaking"
    bo = second.profiles.add("bo", me)
    again.profile_button.profile_changed.emit(bo)  # bo signs in: not the admin's text
    assert again.composer.edit.toPlainText() == ""
    again.profile_button.profile_changed.emit(me)
    assert again.composer.edit.toPlainText() == "Report: pump 3 is leaking"
    again.composer.clear()
    again.draft.save()
    assert WindowState().draft(me.name) == ""


def test_the_shortcuts_list_names_every_key_of_a_keyboard_user(qtbot, scripted):
    """Help ▸ Keyboard shortcuts shows Esc on Stop reply (as the Chat menu does: it showed no
    key though Esc worked), Quit's key, Tab and Shift+Tab, the menus' access letters, and says
    "message" where a key works on your messages too (it said "reply")."""
    window = scripted.window
    assert window.stop_action.shortcut().toString() == "Esc"  # shown in the Chat menu
    dialog = window.help_menu.show_shortcuts()
    qtbot.addWidget(dialog)
    keys = dict(dialog.rows)
    assert ("Esc", "Stop reply") in dialog.rows and ("Esc", "Cancel editing a message") in \
        dialog.rows
    assert keys["Ctrl+Q"] == "Quit"
    assert "Tab / Shift+Tab" in keys and "Alt+letter" in keys
    assert keys["Ctrl+C"].startswith("Copy the focused message")
    assert keys["Alt+Left"] == "Previous version of the focused message"
    assert not [what for what in keys.values() if "focused reply" in what]
    assert len([k for k, what in dialog.rows if "Stop" in what]) == 1  # said once
    dialog.close()


def test_esc_stops_a_reply_through_the_menus_stop_item(qtbot, scripted, scripted_engine):
    """Esc is Chat ▸ Stop reply's key now (it was a shortcut of its own): pressed in the
    message box while a reply streams, it stops it, and the partial answer is kept."""
    from tests.support import held_open

    window = scripted.window
    scripted_engine.script(held_open("Once", " upon", " a", " time"))
    edit = window.composer.edit
    qtbot.keyClicks(edit, "Tell me a story")
    qtbot.keyClick(edit, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: window.view.bubbles[-1].text == "Once upon a time", timeout=10000)
    with qtbot.waitSignal(window.stop_action.triggered):
        qtbot.keyClick(edit, Qt.Key.Key_Escape)
    qtbot.waitUntil(lambda: window.controller.state == "idle", timeout=10000)
    # kept, and said as a stop the user asked for (not a warning)
    assert window.view.bubbles[-1].footer.text().splitlines()[0] == "Stopped"
    assert window.view.bubbles[-1].text == "Once upon a time"


# the real window in a process of its own, killed (SIGKILL) while a reply streams
KILLED_WINDOW = r"""
import sys
from PySide6.QtCore import QEventLoop, QTimer
from PySide6.QtWidgets import QApplication

qt_app = QApplication(sys.argv[:1])
from app.config.settings import Settings
from tests.support import ScriptedEngine, held_open
from ui.app import OutpostApp
from ui.window_state import WindowState

def until(done, ms=30000):
    loop, tick = QEventLoop(), QTimer()
    tick.timeout.connect(lambda: done() and loop.quit())
    tick.start(20)
    QTimer.singleShot(ms, loop.quit)
    loop.exec()
    tick.stop()
    return done()

engine = ScriptedEngine(held_open("Pump 3 leaks ", "at the flange; "))
outpost = OutpostApp(Settings(), engine_factory=engine.factory)
outpost.start()
window = outpost.window
assert until(lambda: outpost.loader.active is not None)
window.resize(900, 600)
window._on_send_requested("Write the field report")
store = outpost.store
def streaming():
    cid = window.controller.conversation_id
    return cid is not None and any(m.content.startswith("Pump 3 leaks at the flange")
                                   for m in store.messages(cid))
def kept():
    state = WindowState()
    return state.qsettings.value("last_conversation") == window.controller.conversation_id \
        and not state.qsettings.value("geometry", b"").isEmpty()
assert until(streaming)
until(kept, 5000)  # (the parent checks what the next start finds)
print(window.controller.conversation_id, flush=True)
until(lambda: False, 120000)  # streaming, until killed
"""


def test_after_a_kill_mid_reply_the_window_comes_back_on_that_chat_and_says_so(
        qtbot, outpost_app, scripted_engine):
    """A trial killed the window (as a power cut would) mid-reply: the next start came back
    on "New chat" at the default size, since the open chat and the geometry were written only
    on a clean close, and said nothing of the reply it marked interrupted. Now both are kept
    as they change, and the start says how many replies the stop cut short."""
    import os
    import signal
    import subprocess
    import sys

    from ui import theme
    from ui.window_state import GeometryKeeper

    ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]
    child = subprocess.Popen([sys.executable, "-c", KILLED_WINDOW], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=ROOT,
                             env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        opened = child.stdout.readline().strip()
        assert opened, child.stderr.read() if child.poll() is not None else "no line"
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert GeometryKeeper.SAVE_AFTER_MS <= 1000  # (debounced, not at every step of a drag)

    again = outpost_app(max_tokens=16, engine_factory=scripted_engine.factory)
    with qtbot.waitSignal(again.loader.model_ready, timeout=10000):
        again.start()
    window = again.window
    assert window.controller.conversation_id == opened
    bubble = window.view.last_bubble()
    assert bubble is not None and bubble.text.startswith("Pump 3 leaks at the flange")
    assert window.banner.isVisible() and window.banner.styleSheet() == theme.banner_style("info")
    assert window.banner.label.text() == (
        "1 reply was interrupted when Outpost stopped; the text that had arrived is kept, "
        "marked interrupted.")
    screen = window.screen().availableGeometry()  # (offscreen: 800x600, as above)
    assert window.height() == min(600, screen.height())
    assert min(900, screen.width()) - 4 <= window.width() <= min(900, screen.width())
