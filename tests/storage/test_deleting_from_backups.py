"""Deleting from the backups too (``app.storage.backup_erasure``): every kept copy that holds a
deleted conversation or message loses it, as the database did (its words out of the file), and
stays whole and good; a copy that cannot be changed is named, never half changed."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from app.domain.messages import Role
from app.storage.backup_erasure import erase_from_backups
from app.storage.backups import Backups, quick_check_file
from app.storage.integrity import wal_has_frames
from app.storage.store import Store
from tests.support import files_holding


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "outpost.db")
    yield store
    store.close()


def chat(store: Store, title: str, *texts: str) -> list[str]:
    """A conversation of ``texts``, one path; its id, then its messages' ids."""
    conversation = store.create_conversation(title)
    ids = [conversation.id]
    for n, text in enumerate(texts):
        ids.append(store.add_message(conversation.id, Role.USER if n % 2 == 0 else
                                     Role.ASSISTANT, text + " and more words" * 40).id)
    return ids


def rows(path: Path, sql: str) -> list:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True)
    try:
        return [r[0] for r in conn.execute(sql)]
    finally:
        conn.close()


def test_a_deleted_conversation_leaves_every_backup_that_held_it(store):
    chat(store, "Kept", "lighthouse keeper", "a kept answer")
    doomed, *_ = chat(store, "Doomed", "tell me about zanzibarquokka", "zanzibarquokka is far")
    daily = store.backup("daily")
    migration = store.backup("before-m999_x")
    # a restore's kept copy: the database with a log whose frames hold the chat too
    replaced = store.backups.set_aside("replaced")
    assert wal_has_frames(replaced) and files_holding(replaced, "zanzibarquokka")
    store.delete_conversation(doomed)
    # taken after the delete: no row of it, but its tombstone (its index is merged too)
    later = store.backup("daily")

    result = erase_from_backups(store.path, conversations=[doomed])

    assert sorted(result.changed) == sorted([daily, migration, replaced, later])
    assert result.left == [] and result.describe() == "Deleted it from 4 backups."
    for backup in (daily, migration, replaced, later):
        assert files_holding(backup, "zanzibarquokka") == [], backup.name
        assert quick_check_file(backup) is None
        assert rows(backup, "SELECT title FROM conversations") == ["Kept"]
        assert rows(backup, "SELECT rowid FROM messages_fts WHERE messages_fts MATCH "
                            "'lighthouse'")  # its search index still answers
    assert not replaced.with_name(replaced.name + "-wal").exists()  # one file, log applied
    assert [b.path for b in Backups(store.path).all()].count(daily) == 1
    assert list(store.backups.where.glob("*erasing*")) == []


def test_a_deleted_message_leaves_the_backups_with_what_is_below_it_there(store):
    conversation, question, answer = chat(store, "Chat", "first question", "first answer")
    follow_up = store.add_message(conversation, Role.USER, "quetzalpangolin follow-up").id
    store.add_message(conversation, Role.ASSISTANT, "an answer the backup alone has")
    backup = store.backup("daily")

    deleted = store.delete_subtree(follow_up)
    result = erase_from_backups(store.path, messages=deleted)

    assert result.changed == [backup]
    assert files_holding(backup, "quetzalpangolin") == []
    assert files_holding(backup, "the backup alone has") == []  # below it, in the copy
    assert sorted(rows(backup, "SELECT id FROM messages")) == sorted([question, answer])
    assert rows(backup, "SELECT active_leaf_id FROM conversations") == [None]


def test_a_backup_that_cannot_be_changed_is_named_and_left_as_it_is(store):
    doomed, *_ = chat(store, "Doomed", "okapimarmalade recipe")
    good = store.backup("daily")
    spoiled = store.backup("before-m999_x")
    data = bytearray(spoiled.read_bytes())
    data[100:4096 * 3] = b"\xff" * (4096 * 3 - 100)  # the schema and the pages after it
    spoiled.write_bytes(bytes(data))
    store.delete_conversation(doomed)

    result = erase_from_backups(store.path, conversations=[doomed])

    assert result.changed == [good]
    assert [path for path, _ in result.left] == [spoiled]
    assert spoiled.read_bytes() == bytes(data)  # never half changed
    text = result.describe()
    assert text.startswith("Deleted it from 1 backup; 1 backup could not be changed and may "
                           f"still hold it: {spoiled.name} (")
    assert str(spoiled.parent) in text


def test_nothing_to_delete_and_no_backup_holding_it_change_nothing(store):
    chat(store, "Kept", "kept words")
    backup = store.backup("daily")
    before = backup.stat().st_mtime_ns
    assert erase_from_backups(store.path).describe() == "No backup held it."
    assert erase_from_backups(store.path, conversations=["nope"]).changed == []
    assert backup.stat().st_mtime_ns == before


def test_removing_a_profile_from_the_command_line_offers_the_backups_too(outpost_home, capsys):
    from app import cli
    from app.config.settings import Settings, default_user_id
    from app.storage.profiles import Profiles

    store = Store()
    admin = Profiles(store).ensure_default(default_user_id(Settings()))  # as the CLI signs in
    Profiles(store).add("bo", admin)
    Profiles(store).add("cy", admin)
    for profile, word in (("bo", "okapimarmalade"), ("cy", "narwhalsaffron")):
        conversation = store.create_conversation("Theirs", profile=profile)
        store.add_message(conversation.id, Role.USER, f"{word} notes")
    backup = store.backup("daily")
    store.close()

    assert cli.main(["profile", "remove", "bo", "--delete-conversations"]) == 0
    kept = capsys.readouterr().out
    # the name as typed in another case (it found none of cy's conversations: a review)
    assert cli.main(["profile", "remove", "Cy", "--delete-conversations",
                     "--from-backups"]) == 0
    erased = capsys.readouterr().out

    assert "Outpost's backups still hold them: a daily backup for up to 7 days" in kept
    assert "--from-backups deletes them there too" in kept
    assert files_holding(backup, "okapimarmalade") == [backup.name]
    assert erased.splitlines()[-1] == "Deleted them from 1 backup."
    assert files_holding(backup, "narwhalsaffron") == []
    assert cli.main(["profile", "remove", "bo", "--from-backups"]) == 2
    assert "goes with --delete-conversations" in capsys.readouterr().err


def test_a_backup_taken_before_the_index_was_merged_loses_the_words_too(store):
    """A backup taken between a delete and the merge of the search index that runs after it
    (the window merges in the background) held the deleted words in its index, and was
    skipped ("No backup held it": no row of it is there; found by a review). It holds the
    tombstone: it is merged too."""
    chat(store, "Kept", "lighthouse keeper")
    doomed, *_ = chat(store, "Doomed", "tell me about zebraquartz", "zebraquartz is rare")
    with store.transaction() as db:  # the delete as the window does it, the merge not yet
        from app.storage import deletions
        from app.storage.rows import now_iso

        deletions.drop_conversations(db.conn, [doomed], now_iso())
    between = store.backup("daily")
    assert files_holding(between, "zebraquartz") == [between.name]
    store.erase_deleted()

    result = erase_from_backups(store.path, conversations=[doomed])

    assert result.changed == [between] and result.left == []
    assert files_holding(between, "zebraquartz") == []
    assert rows(between, "SELECT rowid FROM messages_fts WHERE messages_fts MATCH "
                         "'lighthouse'")


def test_two_erasings_at_once_both_finish(store):
    """Two deletes a moment apart (the window's pool has a thread per core, and the CLI may
    run beside it) worked on one ``.erasing`` copy and removed each other's: both failed and
    the words stayed (found by a review). They take turns."""
    import threading

    first, *_ = chat(store, "First", "okapimarmalade notes")
    second, *_ = chat(store, "Second", "narwhalsaffron notes")
    backup = store.backup("daily")
    store.delete_conversation(first)
    store.delete_conversation(second)
    results = {}
    threads = [threading.Thread(target=lambda c=c: results.__setitem__(
        c, erase_from_backups(store.path, conversations=[c]))) for c in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [results[c].left for c in (first, second)] == [[], []]
    assert files_holding(backup, "okapimarmalade") == []
    assert files_holding(backup, "narwhalsaffron") == []
    assert quick_check_file(backup) is None


def test_the_erasers_lock_file_is_the_users_only(store):
    """It was made 0644 (a trial); every file Outpost writes is 0600."""
    import stat

    doomed, *_ = chat(store, "Doomed", "tell me about zanzibarquokka")
    store.backup("daily")
    lock = store.backups.where / ".eraser.lock"
    lock.touch(mode=0o644)
    lock.chmod(0o644)  # (as an older version left it)
    erase_from_backups(store.path, conversations=[doomed])
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600
    lock.unlink()
    erase_from_backups(store.path, conversations=[doomed])
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600
