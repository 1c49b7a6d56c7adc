"""A backup before an import that adds conversations (`outpost import`, the window's Import):
a bulk import is undone by restoring it; the newest three are kept. Real files."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from app.domain.messages import Role
from app.storage.backups import KEEP_BEFORE_IMPORT, Backups
from app.storage.store import Store
from app.storage.transfer import importer
from app.storage.transfer.export import export_conversations


def titles(path: Path) -> list[str]:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True)
    try:
        return sorted(r[0] for r in conn.execute("SELECT title FROM conversations"))
    finally:
        conn.close()


def export_of(tmp_path: Path, *chat_titles: str) -> Path:
    """An Outpost export of new conversations, made in a database of its own."""
    other = Store(tmp_path / f"other-{len(chat_titles)}-{chat_titles[0]}" / "outpost.db")
    ids = []
    for title in chat_titles:
        chat = other.create_conversation(title)
        other.add_message(chat.id, Role.USER, f"{title} words")
        ids.append(chat.id)
    path = tmp_path / f"{chat_titles[0]}.json"
    path.write_text(export_conversations(other, ids, "json"))
    other.close()
    return path


def before_import(store: Store) -> list[Path]:
    return [b.path for b in Backups(store.path).all() if b.label == "before-import"]


def test_an_import_that_adds_conversations_is_backed_up_first(tmp_path):
    store = Store(tmp_path / "outpost.db")
    store.create_conversation("Mine")
    export = export_of(tmp_path, "Imported one", "Imported two")

    summary = importer.write(store, importer.load(export), None)

    [backup] = before_import(store)
    assert summary.backup == str(backup) and summary.as_dict()["backup"] == str(backup)
    assert titles(backup) == ["Mine"]  # the database as it was before the import
    assert sorted(c.title for c in store.list_conversations()) == \
        ["Imported one", "Imported two", "Mine"]
    again = importer.write(store, importer.load(export), None)  # all skipped: nothing to undo
    assert again.backup is None and len(before_import(store)) == 1
    store.close()


def test_no_backup_for_an_empty_database_and_only_the_newest_are_kept(tmp_path):
    store = Store(tmp_path / "outpost.db")
    first = importer.write(store, importer.load(export_of(tmp_path, "First")), None)
    assert first.backup is None  # nothing to keep yet
    for n in range(KEEP_BEFORE_IMPORT + 1):
        importer.write(store, importer.load(export_of(tmp_path, f"More {n}")), None)
    kept = before_import(store)
    assert len(kept) == KEEP_BEFORE_IMPORT
    newest, oldest = titles(kept[0]), titles(kept[-1])
    assert f"More {KEEP_BEFORE_IMPORT - 1}" in newest  # taken before the last import
    assert f"More {KEEP_BEFORE_IMPORT}" not in newest
    assert "More 0" in oldest and "More 1" not in oldest  # before the second: the first went
    store.close()


def test_the_command_line_says_how_to_undo_the_import(outpost_home, tmp_path, capsys):
    from app import cli

    store = Store()
    store.create_conversation("Mine")
    store.close()
    export = export_of(tmp_path, "Imported")

    assert cli.main(["import", str(export)]) == 0

    [backup] = before_import(Store(daily_backup=False))
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"A backup was taken first: `outpost backup restore {backup.name}` undoes the import.")


def test_an_import_that_adds_nothing_takes_no_backup(tmp_path, outpost_home, capsys):
    """Every conversation of the file skipped (trial 12): its new messages deleted here, or
    its message held by another conversation here. A backup was taken all the same, and the
    command said it undoes the import, rotating away (3 kept) one that undoes a real import."""
    from app import cli

    store = Store()
    mine = store.create_conversation("Mine")
    store.add_message(mine.id, Role.USER, "Mine words")
    export = export_of(tmp_path, "Imported", "Other")
    data = json.loads(export.read_text())
    store.close()
    assert cli.main(["import", str(export)]) == 0  # a real import, its backup kept
    store = Store(daily_backup=False)
    [undoes_it] = before_import(store)
    imported, other = data["conversations"]
    store.delete_subtree(imported["messages"][0]["id"])  # deleted here: not brought back
    other.update(id="f" * 32)  # another conversation holding a message already here
    reimport = tmp_path / "again.json"
    reimport.write_text(json.dumps(data))
    store.close()

    capsys.readouterr()
    assert cli.main(["import", str(reimport)]) == 0
    out = capsys.readouterr().out
    assert "skipped 2" in out and "backup" not in out
    store = Store(daily_backup=False)
    assert before_import(store) == [undoes_it]
    store.close()
