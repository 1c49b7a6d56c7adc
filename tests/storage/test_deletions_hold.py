"""What was deleted stays deleted through a restore and a salvage (``app.storage.deletions``):
a copy taken before the delete still holds it, and "missing or newer" rows were merged back
(found by a trial: `backup salvage` to undo a rollback brought deleted chats back). Tombstones
hold ids and times only. Real files, the real command line (in process)."""
from __future__ import annotations

from pathlib import Path

from app import cli
from app.domain.messages import Role
from app.storage.backups import Backups
from app.storage.salvage import salvage
from app.storage.store import Store
from app.storage.transfer import importer
from app.storage.transfer.export import export_conversations
from tests.storage.test_damaged_database import titles


def run(capsys, *args: str) -> tuple[int, str]:
    code = cli.main(list(args))
    out = capsys.readouterr()
    return code, out.out + out.err


def chat(store: Store, title: str, *texts: str) -> str:
    conversation = store.create_conversation(title)
    for text in texts:
        store.add_message(conversation.id, Role.USER, text)
    return conversation.id


def test_salvaging_an_older_copy_does_not_bring_back_what_was_deleted_since(outpost_home,
                                                                           capsys):
    store = Store()
    doomed = chat(store, "Doomed", "private words")
    kept = chat(store, "Kept", "first")
    thread = chat(store, "Thread", "a question")
    backup = store.backup("daily")
    store.delete_conversation(doomed)
    [question] = store.messages(thread)
    store.delete_subtree(question.id)
    store.add_message(kept, Role.USER, "second")
    store.close()

    code, said = run(capsys, "backup", "salvage", str(backup))

    assert code == 0, said
    assert titles(store.path) == ["Kept", "Thread"]
    store = Store()
    assert [m.content for m in store.messages(thread)] == []
    assert [m.content for m in store.messages(kept)] == ["first", "second"]
    store.close()
    assert "1 conversation and 1 message deleted here stay deleted" in said


def test_a_rollback_leaves_deleted_what_was_deleted_since_the_backup_and_undoing_it_too(
        outpost_home, capsys):
    """The README's rollback: restore a backup over a healthy file, then `backup salvage` the
    file it kept to undo it. Neither brings back a conversation deleted after the backup."""
    store = Store()
    doomed = chat(store, "Doomed", "private words")
    chat(store, "Kept", "first")
    store.backup("daily")
    store.delete_conversation(doomed)
    chat(store, "Later", "after the backup")
    store.close()

    code, said = run(capsys, "backup", "restore", "--yes")
    assert code == 0, said
    store = Store()  # (closed: left open, it kept the salvage below from writing its log
    store.close()    # into the file that titles() reads, until the garbage collector came)
    assert titles(store.path) == ["Kept"]  # the rollback: "Later" went, "Doomed" stays gone
    assert "1 conversation deleted since the backup stays deleted." in said
    [replaced] = (outpost_home / "data" / "backups").glob("*-replaced.db")

    code, said = run(capsys, "backup", "salvage", str(replaced))

    assert code == 0, said
    assert titles(replaced.parent.parent / "outpost.db") == ["Kept", "Later"]


def test_a_restore_over_a_damaged_file_keeps_its_deletions(outpost_home):
    """The damaged file's tombstones come with what it still holds: the restored backup's
    copy of a conversation deleted since is deleted again."""
    store = Store()
    doomed = chat(store, "Doomed", "private words")
    chat(store, "Kept", "first")
    backup = store.backup("daily")
    store.delete_conversation(doomed)
    store.close()
    restored = Store(Path(str(store.path) + ".restored"), daily_backup=False)
    restored.close()
    Path(restored.path).write_bytes(backup.read_bytes())
    restored = Store(restored.path, daily_backup=False)

    result = salvage(store.path, restored)

    assert [c.title for c in restored.list_conversations()] == ["Kept"]
    assert result.deleted["conversations"] == {doomed}
    assert "1 conversation deleted since the backup stays deleted" in result.describe()
    restored.close()


def test_a_conversation_imported_again_after_its_delete_is_kept(outpost_home, tmp_path):
    """An export imported after the conversation was deleted brings it back for good: a copy
    taken between the delete and the import (its tombstone older than the import) does not
    delete it again."""
    store = Store()
    doomed = chat(store, "Doomed", "private words")
    export = tmp_path / "doomed.json"
    export.write_text(export_conversations(store, [doomed], "json"))
    store.delete_conversation(doomed)
    between = store.backup("daily")
    importer.write(store, importer.load(export), None)

    salvage(between, store)

    assert [c.title for c in store.list_conversations()] == ["Doomed"]
    store.close()


def test_deleted_again_after_it_came_back_it_stays_deleted(outpost_home, tmp_path):
    """Deleted, imported again, deleted again: the second delete's tombstone kept the mark
    "rewritten" of the import, which counts for nothing, so a restore of a backup brought the
    conversation back (found by a review)."""
    store = Store()
    doomed = chat(store, "Doomed", "private words")
    before = store.backup("daily")
    export = tmp_path / "doomed.json"
    export.write_text(export_conversations(store, [doomed], "json"))
    store.delete_conversation(doomed)
    importer.write(store, importer.load(export), None)
    store.delete_conversation(doomed)

    salvage(before, store)

    assert store.list_conversations() == []
    store.close()


def test_tombstones_hold_ids_and_times_only(tmp_path):
    store = Store(tmp_path / "outpost.db")
    doomed = chat(store, "Private title", "private words")
    store.delete_conversation(doomed)
    columns = [c.name for c in store.db["deletions"].columns]
    [row] = store.db.execute("SELECT * FROM deletions").fetchall()
    assert columns == ["id", "kind", "deleted_at"]
    assert row[:2] == (doomed, "conversation")
    assert Backups(store.path).all() == []
    store.close()
