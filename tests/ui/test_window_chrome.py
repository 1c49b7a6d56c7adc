"""The main window's chrome on a small screen and around the chat (trial 9): windows and dialogs
fit the screen, the Sampling panel makes room for the chat, the status bar's notes leave its
widgets in place, actions that cannot act are disabled, the route says the truth in Offline
mode, and file dialogs open where the user was last."""
from __future__ import annotations

import pytest
from PySide6.QtCore import QRect

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
    window.sampling.hide()  # (the window's own minimum with the panel is another matter)
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
    for dialog in dialogs:
        dialog.close()


def test_a_restored_geometry_too_large_for_the_screen_is_fitted(qtbot, outpost_app,
                                                                scripted_engine, monkeypatch):
    """A window closed at 1380x760 on a large monitor comes back inside a 700x500 screen."""
    first = outpost_app(max_tokens=8, engine_factory=scripted_engine.factory)
    first.start()
    first.window.sampling.hide()
    first.window.resize(1380, 760)
    first.window.close()
    area = fake_screen(monkeypatch, 700, 500)
    second = outpost_app(max_tokens=8, engine_factory=scripted_engine.factory)
    second.start()
    window = second.window
    qtbot.waitUntil(window.isVisible)
    assert area.contains(window.frameGeometry()), window.frameGeometry()
