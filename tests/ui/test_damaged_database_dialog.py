"""The window's start on a damaged database: it says so, names the newest good backup, and
restoring it opens the store; quitting leaves everything as it is."""
from __future__ import annotations

import pytest

from app.config import paths
from app.domain.errors import DatabaseDamaged
from app.storage.store import Store
from ui.damaged_database import DamagedDatabaseDialog, open_store_or_restore

pytestmark = pytest.mark.gui


def _damaged_with_a_backup() -> None:
    store = Store()
    store.create_conversation("mine")
    store.close()
    Store().close()  # today's backup
    paths.database_path().write_bytes(b"")  # emptied


def test_the_dialog_names_the_problem_and_offers_the_backup(qtbot):
    _damaged_with_a_backup()
    with pytest.raises(DatabaseDamaged) as caught:
        Store()
    dialog = DamagedDatabaseDialog(caught.value)
    qtbot.addWidget(dialog)
    assert "is damaged (it is empty (0 bytes))" in dialog.text()
    assert "wrote nothing to it" in dialog.text()
    assert "-daily.db" in dialog.informativeText()
    assert dialog.restore_button is not None and dialog.defaultButton() is dialog.restore_button



def _damaged_without_a_backup() -> None:
    """Forty chats, no backup, one page of the file hit."""
    import shutil

    from app.domain.messages import Role
    from tests.storage.test_damaged_database import spoil_pages_holding

    store = Store(daily_backup=False)
    for n in range(40):
        chat = store.create_conversation(f"chat {n}")
        store.add_message(chat.id, Role.USER, f"chat {n} question " + "words " * 100)
    store.close()
    shutil.rmtree(paths.database_path().parent / "backups", ignore_errors=True)
    spoil_pages_holding(paths.database_path(), "chat 20 question")
    paths.database_path().touch()  # changed behind Outpost's back: checked at the next start


def test_with_no_backup_the_dialog_offers_a_new_database_and_it_starts(qtbot, artifacts_dir):
    """No good backup: the window offered only Quit, so Outpost could not start at all. Now
    it starts a new database (the default) with what the damaged file still holds; the
    damaged file is kept; quitting still leaves everything as it is."""
    from tests.support import grab_in_palette

    _damaged_without_a_backup()
    with pytest.raises(DatabaseDamaged) as caught:
        Store()
    dialog = DamagedDatabaseDialog(caught.value)
    qtbot.addWidget(dialog)
    assert dialog.restore_button.text() == "Start a new database"
    assert dialog.defaultButton() is dialog.restore_button
    assert "bring into it the conversations" in dialog.informativeText()
    dialog.show()
    qtbot.waitExposed(dialog)
    for theme in ("light", "dark"):
        grab_in_palette(qtbot, dialog, artifacts_dir / f"damaged-database-new-{theme}.png", theme)
    damaged = paths.database_path().read_bytes()
    assert open_store_or_restore(wants_restore=lambda error: False) is None
    assert paths.database_path().read_bytes() == damaged  # quitting: left as it is
    store = open_store_or_restore(wants_restore=lambda error: True)
    assert store is not None
    assert len(store.list_conversations()) == 40
    assert "this is a new one" in store.notes[0] and "could not be read" in store.notes[0]
    store.close()
    kept = list((paths.database_path().parent / "backups").glob("*-damaged.db"))
    assert len(kept) == 1 and kept[0].read_bytes() == damaged


def test_screenshots_of_the_dialog(qtbot, artifacts_dir):
    from tests.support import grab_in_palette

    _damaged_with_a_backup()
    with pytest.raises(DatabaseDamaged) as caught:
        Store()
    dialog = DamagedDatabaseDialog(caught.value)
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitExposed(dialog)
    for theme in ("light", "dark"):
        path = artifacts_dir / f"damaged-database-{theme}.png"
        grab_in_palette(qtbot, dialog, path, theme)
        assert path.stat().st_size > 0


def test_restoring_opens_the_store_and_quitting_leaves_the_file(qtbot):
    _damaged_with_a_backup()
    assert open_store_or_restore(wants_restore=lambda error: False) is None
    assert paths.database_path().stat().st_size == 0  # quitting: left as it is

    store = open_store_or_restore(wants_restore=lambda error: True)
    assert store is not None
    assert [c.title for c in store.list_conversations()] == ["mine"]
    # told at start with the window's other notes (the damaged file was emptied: nothing)
    assert store.notes == ["Nothing newer than the backup could be read from the damaged "
                           "file."]
    store.close()


def _window(qtbot, store: Store):
    from app.config.settings import Settings
    from tests.support import ScriptedEngine
    from ui.app import OutpostApp

    app = OutpostApp(Settings(), store, engine_factory=ScriptedEngine().factory)
    qtbot.addWidget(app.window)
    return app


def test_the_window_takes_the_days_backup_in_the_background(qtbot):
    store = Store()
    store.create_conversation("mine")
    store.close()
    app = _window(qtbot, Store(daily_backup=False))  # as run_gui opens it
    try:
        app.start()
        qtbot.waitUntil(lambda: bool(list(paths.backups_dir().glob("*-daily.db"))),
                        timeout=20000)
    finally:
        app.shutdown()


def test_the_window_tells_what_the_start_up_check_did(qtbot):
    paths.database_path().write_bytes(b"")  # empty, and no backup: started over, said so
    app = _window(qtbot, Store(daily_backup=False))
    try:
        assert "empty file (0 bytes)" in app.window.errors.banner.label.text()
    finally:
        app.shutdown()
