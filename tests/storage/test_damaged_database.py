"""A damaged, emptied or log-swapped database is noticed at start, on a real SQLite file: the
user's data is never silently replaced, nothing is written into a damaged file, and the newest
good backup is offered (``outpost backup restore``)."""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from app.cli.main import main
from app.config.settings import Settings, default_user_id
from app.domain.errors import DatabaseDamaged
from app.domain.messages import ChatMessage, ChatRequest, Role
from app.domain.wording import counted
from app.storage import integrity
from app.storage.outbox import Outbox
from app.storage.profiles import Profiles
from app.storage.restore import restore_backup
from app.storage.salvage import Salvage, _read, restore_and_salvage, salvage
from app.storage.store import Store


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], input=stdin,
                          capture_output=True, text=True, env=os.environ.copy(), timeout=120)


def one_sentence(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith("outpost: ")
    return lines[0]


def db_file(home: Path) -> Path:
    return home / "data" / "outpost.db"


def digest(path: Path) -> str:
    return "".join(hashlib.sha256(p.read_bytes()).hexdigest() if p.exists() else "-"
                   for p in (path, path.with_name(path.name + "-wal")))


def titles(path: Path) -> list[str]:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True)
    try:
        return [r[0] for r in conn.execute("SELECT title FROM conversations ORDER BY title")]
    finally:
        conn.close()


def seed(path: Path, title: str, messages: int = 0) -> None:
    store = Store(path)
    conversation = store.create_conversation(title)
    for i in range(messages):
        store.add_message(conversation.id, Role.USER, f"message {i} " + "words " * 200)
    store.close()


def spoil_the_middle(path: Path) -> None:
    """Garbage over a page in the middle of the file; the mtime is put back as it was, as
    the disk (not a program) would leave it."""
    before = os.stat(path)
    with open(path, "r+b") as f:
        f.seek((before.st_size // 4096 // 2) * 4096)
        f.write(os.urandom(4096))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


# -- a leftover write-ahead log --------------------------------------------------------------
def _leave_wal(path: Path, title: str) -> None:
    """A process that writes ``title`` into ``path`` and dies with its log not applied."""
    code = ("import os, sqlite3, sys; c = sqlite3.connect(sys.argv[1], isolation_level=None); "
            "c.execute('PRAGMA journal_mode=WAL'); c.execute('PRAGMA wal_autocheckpoint=0'); "
            "c.execute(\"UPDATE conversations SET title = ?\", [sys.argv[2]]); os._exit(0)")
    subprocess.run([sys.executable, "-c", code, str(path), title], check=True)


def test_another_copys_log_is_copied_aside_with_the_database_and_said(outpost_home):
    mine = db_file(outpost_home)
    seed(mine, "my conversation")
    other = outpost_home / "elsewhere" / "outpost.db"
    other.parent.mkdir()
    shutil.copy(mine, other)
    _leave_wal(other, "another copy's conversation")
    for suffix in ("-wal", "-shm"):  # a backup restored over a crashed copy's leftovers
        shutil.copy(other.with_name(other.name + suffix), mine.with_name(mine.name + suffix))

    proc = cli("history", "list", "--json")

    assert proc.returncode == 0, proc.stderr
    note = one_sentence(proc.stderr)
    assert "write-ahead log" in note and "outpost backup restore" in note
    kept = [p for p in (outpost_home / "data" / "backups").iterdir()
            if p.name.endswith("-leftover-wal.db")]
    assert len(kept) == 1
    assert titles(kept[0]) == ["my conversation"]  # the user's data, as it was
    assert kept[0].with_name(kept[0].name + "-wal").exists()  # and the log, as it was
    # the named copy brings the user's conversation back
    restored = cli("backup", "restore", kept[0].name, "--yes")
    assert restored.returncode == 0, restored.stderr
    assert titles(mine) == ["my conversation"]


def test_a_log_a_running_process_owns_is_left_to_it(tmp_path):
    path = tmp_path / "outpost.db"
    seed(path, "mine")
    live = sqlite3.connect(str(path), isolation_level=None)  # another writer, still running
    live.execute("PRAGMA wal_autocheckpoint=0")
    live.execute("UPDATE conversations SET title = 'renamed by the live writer'")
    integrity.forget_seal(path)
    try:
        store = Store(path)
        assert store.notes == []
        assert [c.title for c in store.list_conversations()] == ["renamed by the live writer"]
        store.close()
    finally:
        live.close()
    assert not (tmp_path / "backups").exists() or not list(
        (tmp_path / "backups").glob("*leftover-wal*"))


def test_a_crash_of_outpost_itself_is_not_mistaken_for_another_copy(tmp_path):
    path = tmp_path / "outpost.db"
    seed(path, "mine")
    code = ("import os, sys; from app.storage.store import Store; s = Store(sys.argv[1]); "
            "c = s.list_conversations()[0]; s.rename_conversation(c.id, 'renamed'); "
            "os._exit(0)")
    subprocess.run([sys.executable, "-c", code, str(path)], check=True)
    assert integrity.wal_has_frames(path)  # killed: its log is left, sealed after the commit
    store = Store(path)
    assert store.notes == []
    assert [c.title for c in store.list_conversations()] == ["renamed"]
    store.close()


# -- damage ----------------------------------------------------------------------------------
def test_garbage_in_the_middle_is_refused_and_nothing_is_written(outpost_home):
    path = db_file(outpost_home)
    seed(path, "first", messages=120)
    seed(path, "second")  # a second start: today's rolling backup holds "first"
    backups = sorted((outpost_home / "data" / "backups").glob("*-daily.db"))
    assert backups
    path.touch()  # a program wrote to it: the seal no longer vouches for it
    spoil_the_middle(path)
    os.utime(path)
    before = digest(path)

    listed = cli("history", "list")
    asked = cli("ask", "hello", "--max-tokens", "1")

    for proc in (listed, asked):
        assert proc.returncode == 5, proc.stderr
        sentence = one_sentence(proc.stderr)
        assert f"The database {path} is damaged" in sentence
        assert "nothing was written to it" in sentence
        assert "outpost backup restore" in sentence and backups[-1].name in sentence
    assert digest(path) == before  # not one byte written into the damaged file
    assert path.exists()

    restored = cli("backup", "restore")
    assert restored.returncode == 0, restored.stderr
    assert "kept as" in restored.stdout
    replaced = list((outpost_home / "data" / "backups").glob("*-replaced.db"))
    assert len(replaced) == 1 and hashlib.sha256(replaced[0].read_bytes()).hexdigest() == \
        before[:64]  # the damaged file is kept, byte for byte
    again = cli("history", "list", "--json")
    assert again.returncode == 0, again.stderr
    assert '"first"' in again.stdout  # the backup's
    # "second" came after the backup: brought back from the damaged file when the page the
    # garbage hit is not its own (random bytes: the restore says which happened)
    assert ('"second"' in again.stdout) == ("1 conversation and" in restored.stdout), \
        restored.stdout


def test_a_restore_brings_back_what_the_damaged_file_still_holds(outpost_home):
    """Damage in a page that holds no conversation (the empty request log's): the start is
    refused; the restore puts the day's backup in place and brings back, from the damaged
    file, the conversation made since, with its messages, and a reply finished since."""
    path = db_file(outpost_home)
    seed(path, "before the backup", messages=1)
    store = Store(path)  # a second start: today's rolling backup is taken here, then:
    early = store.list_conversations()[0]
    [question] = store.messages(early.id)
    store.update_message(question.id, content="Where do we meet?")  # changed since
    reply = store.add_message(early.id, Role.ASSISTANT, "", parent_id=question.id)
    store.update_message(reply.id, content="The north gate, at six.")
    later = store.create_conversation("after the backup")
    for text in ("Where is the lighthouse keeper?", "At the top, with the lamp."):
        store.add_message(later.id, Role.USER, text)
    garbled = store.add_message(later.id, Role.USER, "placeholder")
    store.add_message(later.id, Role.USER, "And the foghorn?")
    store.close()
    conn = sqlite3.connect(path)
    with conn:  # bytes that are not UTF-8 in one message (garbage on a page), then more
        conn.execute("UPDATE messages SET content = CAST(x'ff41' AS TEXT) WHERE id = ?",
                     [garbled.id])
        conn.execute("INSERT INTO profiles (name, is_admin, created_at) VALUES "
                     "('carol', 0, '2026-12-01T06:00:00.000+00:00')")  # made admin since
        conn.execute("UPDATE profiles SET is_admin = (name = 'carol')")
        conn.execute("UPDATE conversations SET profile = 'carol' WHERE id = ?", [later.id])
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'request_log'"
                        ).fetchone()[0]
    conn.close()
    with open(path, "r+b") as f:  # the request log's first page: nothing of any chat
        f.seek((root - 1) * page_size)
        f.write(b"\xff" * 8)
    os.utime(path)  # (written by something else than Outpost: the seal does not vouch)

    refused = cli("history", "list")
    assert refused.returncode == 5, refused.stderr
    assert "brings back what the damaged file still holds" in one_sentence(refused.stderr)
    restored = cli("backup", "restore")
    assert restored.returncode == 0, restored.stderr
    # the new conversation and the one changed since; its question changed, its reply new
    assert "2 conversations and 6 messages newer than the backup were brought back" in \
        restored.stdout
    assert "could not be read whole: request_log" not in restored.stdout  # (never read)
    listed = cli("--as", "carol", "history", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert '"after the backup"' in listed.stdout  # carol's, and carol is back
    assert '"before the backup"' in cli("history", "list", "--json").stdout
    found = cli("--as", "carol", "history", "search", "lighthouse", "--json")
    assert "Where is the lighthouse keeper?" in found.stdout  # in the search index too
    store = Store(path)
    try:
        assert store.get_message(reply.id).content == "The north gate, at six."
        assert store.get_message(question.id).content == "Where do we meet?"
        assert [m.content for m in store.messages(later.id)] == [
            "Where is the lighthouse keeper?", "At the top, with the lamp.", "\ufffdA",
            "And the foghorn?"]  # read on past the bytes that were not UTF-8
        admins = store.db.execute("SELECT name FROM profiles WHERE is_admin").fetchall()
        assert admins == [("root",)]  # the backup's admin stays the one admin
        assert store.db.execute("SELECT count(*) FROM profiles WHERE name = 'carol'"
                                ).fetchone()[0] == 1
    finally:
        store.close()


def spoil_pages_holding(path: Path, *texts: str) -> list[int]:
    """Garbage (the same each run) over the page that holds each of ``texts``, as bad
    sectors would leave it; the page numbers (from 1)."""
    conn = sqlite3.connect(path)
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    data = path.read_bytes()
    pages = []
    for text in texts:
        assert data.count(text.encode()) == 1, text  # on one page, in the table's tree
        pages.append(data.index(text.encode()) // page_size + 1)
    garbage = random.Random(1)
    with open(path, "r+b") as f:
        for page in pages:
            f.seek((page - 1) * page_size)
            f.write(garbage.randbytes(page_size))
    return pages


def rows_by_rowid(path: Path, table: str, upto: int) -> dict[int, str]:
    """What ``table`` of a damaged file gives, looked up one rowid at a time: rowid: id."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True)
    conn.text_factory = lambda data: data.decode("utf-8", "replace")
    found = {}
    try:
        for rowid in range(1, upto + 1):
            try:
                row = conn.execute(f"SELECT id FROM {table} WHERE rowid = ?", [rowid]
                                   ).fetchone()
            except sqlite3.DatabaseError:
                continue
            if row is not None:
                found[rowid] = row[0]
        return found
    finally:
        conn.close()


def test_a_restore_reads_on_past_damaged_pages_row_by_row(outpost_home):
    """Two pages of the messages table overwritten with garbage (the tester's case): a scan of
    the table stops at the first, but the rows after it can still be read by rowid; the
    restore brings every row that can be read back, and says how many could not be."""
    path = db_file(outpost_home)
    seed(path, "before the backup", messages=1)
    store = Store(path)  # a second start: today's backup holds "before the backup"
    chats = []
    for i in range(40):
        chat = store.create_conversation(f"chat {i}")
        for role in (Role.USER, Role.ASSISTANT):
            store.add_message(chat.id, role, f"chat {i} {role.value}: " + "words " * 200)
        chats.append(chat.id)
    store.close()
    assert not Path(f"{path}-wal").exists() or not Path(f"{path}-wal").stat().st_size
    spoil_pages_holding(path, "chat 10 user: ", "chat 25 assistant: ")
    os.utime(path)  # (written by something else than Outpost: the seal does not vouch)
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True)
    with pytest.raises(sqlite3.DatabaseError):  # a scan stops at the first damaged page
        conn.execute("SELECT * FROM messages ORDER BY rowid").fetchall()
    conn.close()
    readable = rows_by_rowid(path, "messages", 81)  # 1 + 40 × 2 rows, none deleted
    lost = 81 - len(readable)
    assert 2 <= lost < 20  # both pages held messages; the rest can be read

    restored = cli("backup", "restore")

    assert restored.returncode == 0, restored.stderr
    # every message readable, less the one the backup has already
    assert (f"40 conversations and {len(readable) - 1} messages newer than the backup were "
            f"brought back; {counted(lost, 'message')} could not be read (") in restored.stdout
    store = Store(path)
    try:
        have = {r[0] for r in store.db.execute("SELECT id FROM messages")}
        assert set(readable.values()) <= have and len(have) == len(readable) + \
            (1 not in readable)
        # the chats after the second damaged page (never reached by a scan) are whole
        assert [len(store.messages(chat)) for chat in chats[27:]] == [2] * 13
        assert store.messages(chats[39])[1].content.startswith("chat 39 assistant: words")
    finally:
        store.close()


def notes_without_an_index(path: Path) -> Path:
    """A database of one table, ``notes``, no index: 100 rows of ~600 bytes (a few a page)."""
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("CREATE TABLE notes (id TEXT, body TEXT)")
        conn.executemany("INSERT INTO notes VALUES (?, ?)",
                         [(f"n{i}", f"note {i}: " + "x" * 600) for i in range(1, 101)])
    conn.close()
    return path


def read_notes(path) -> tuple[list, list, Salvage]:
    """Salvage's reading of the ``notes`` table of ``path``: (columns, rows, what it said)."""
    source = sqlite3.connect(path)
    result = Salvage()
    try:
        columns, rows = _read(source, "notes", result)
    finally:
        source.close()
    return columns, rows, result


def test_a_table_without_an_index_is_read_on_to_its_end_by_rowid(tmp_path):
    """With no index to list its rows, the rowids after the damaged page are looked up up to
    ``max(rowid)``: the rows after it come back; how many could not be read is an upper
    bound (a rowid hidden by the damage may have been a row deleted before)."""
    path = notes_without_an_index(tmp_path / "plain.db")
    spoil_pages_holding(path, "note 30: ")
    readable = rows_by_rowid(path, "notes", 100)
    assert 50 in readable and 100 in readable and len(readable) < 100

    columns, rows, result = read_notes(path)

    assert columns == ["id", "body"]
    assert [row[0] for row in rows] == list(readable.values())  # all of them, in order
    [unread] = result.unreadable
    assert unread.rows == 100 - len(readable) and not unread.exact and not unread.more
    assert unread.describe().startswith(f"up to {100 - len(readable):,} notes rows could not "
                                        "be read (")


def test_rows_past_a_damaged_end_of_a_table_are_said_lost_not_counted(tmp_path):
    """The last page damaged (``max(rowid)`` does not answer) and no index: rowids are looked
    up until many in a row give nothing; failures past the last row read cannot be told
    from no rows at all: they are said, not counted."""
    path = notes_without_an_index(tmp_path / "plain.db")
    spoil_pages_holding(path, "note 30: ", "note 100: ")
    readable = rows_by_rowid(path, "notes", 100)
    assert 50 in readable and 100 not in readable

    _, rows, result = read_notes(path)

    assert [row[0] for row in rows] == list(readable.values())
    [unread] = result.unreadable
    assert unread.more and not unread.exact
    assert unread.rows == max(readable) - len(readable)  # those between rows read
    assert "and any after the last one read, could not be read (" in unread.describe()


def test_rows_that_read_as_garbage_are_left_out_not_brought(tmp_path):
    """A damaged page the tree does not notice (the end of a long message: a page of its
    overflow chain, holding its status and times too) reads without an error, as garbage: that
    row is left out and counted, not brought into the database (where the conversation
    would no longer open); the rows around it are brought."""
    path = tmp_path / "outpost.db"
    seed(path, "before the backup")
    store = Store(path)
    chat = store.create_conversation("after the backup")
    for i in range(3):
        store.add_message(chat.id, Role.USER, f"long {i}: " + "words " * 1500 + f"end {i}.")
    store.close()
    damaged = tmp_path / "damaged.db"
    shutil.copy(path, damaged)
    conn = sqlite3.connect(damaged)
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    at = damaged.read_bytes().index(b"end 1.")  # on the last page of message 1's chain
    with open(damaged, "r+b") as f:  # its body, not the link to the next page: no error
        f.seek(at // page_size * page_size + 4)
        f.write(b"\xff" * (page_size - 4))
    backup = sorted((tmp_path / "backups").glob("*-daily.db"))[-1]
    shutil.copy(backup, path)  # the day's backup in place, as a restore leaves it
    integrity.forget_seal(path)

    from app.storage import salvage

    store = Store(path, daily_backup=False)
    try:
        result = salvage.salvage(damaged, store)
        [restored] = [c for c in store.list_conversations() if c.title == "after the backup"]
        assert [m.content[-6:] for m in store.messages(restored.id)] == ["end 0.", "end 2."]
        assert result.left_out == 1
        assert result.describe().startswith("From the damaged file, 1 conversation and 2 "
                                            "messages newer than the backup were brought back "
                                            "(1 row could not be)")
    finally:
        store.close()


def test_a_salvage_that_fails_leaves_the_restore_done_and_says_so(tmp_path, monkeypatch):
    from app.storage import salvage

    path = tmp_path / "outpost.db"
    seed(path, "first")
    store = Store(path)  # today's backup
    store.close()
    path.write_bytes(b"not a database at all " * 512)
    monkeypatch.setattr(salvage, "salvage", lambda damaged, store: (_ for _ in ()).throw(
        OSError(28, "No space left on device")))
    backup, kept, salvaged = salvage.restore_and_salvage(path)
    assert kept is not None and kept.exists()
    assert salvaged is not None and salvaged.describe().startswith(
        "What the damaged file held could not be brought over ([Errno 28] No space left on "
        "device); it is kept as ")
    assert titles(path) == ["first"]  # the backup is in place


def test_damage_the_seal_cannot_see_is_found_by_the_days_backup(tmp_path):
    path = tmp_path / "outpost.db"
    seed(path, "mine", messages=120)
    assert integrity.sealed(path)
    spoil_the_middle(path)  # same size, same mtime: the disk, not a program
    assert integrity.sealed(path)  # so the start-up check is skipped ...
    with pytest.raises(DatabaseDamaged) as caught:
        Store(path)  # ... and the day's backup, checked before it counts, finds it
    assert caught.value.backup is None
    assert not list((tmp_path / "backups").glob("*-daily.db*"))  # no half or bad backup


def test_an_emptied_database_with_backups_is_damaged_not_new(outpost_home):
    path = db_file(outpost_home)
    seed(path, "mine")
    seed(path, "mine too")  # today's backup (taken at this start: "mine")
    path.write_bytes(b"")

    proc = cli("history", "list")

    assert proc.returncode == 5
    sentence = one_sentence(proc.stderr)
    assert "empty (0 bytes)" in sentence and "outpost backup restore" in sentence
    assert path.stat().st_size == 0  # left as it is
    assert cli("backup", "restore").returncode == 0
    assert titles(path) == ["mine"]


def test_an_empty_file_without_backups_starts_over_and_says_so(tmp_path):
    path = tmp_path / "outpost.db"
    path.write_bytes(b"")
    store = Store(path)
    assert "empty file (0 bytes)" in store.notes[0]
    assert store.list_conversations() == []
    store.close()


def test_a_restore_is_refused_while_another_process_has_the_database_open(tmp_path):
    path = tmp_path / "outpost.db"
    seed(path, "mine")
    seed(path, "again")
    store = Store(path)
    try:
        with pytest.raises(Exception, match="open in another Outpost"):
            restore_backup(path)
    finally:
        store.close()


def test_a_rollback_can_be_undone_by_salvaging_the_file_it_kept(outpost_home):
    """A restore over a healthy file is a rollback (nothing brought over); `backup salvage`
    on the file it kept brings what came after the backup back; the database itself is no
    copy to salvage from."""
    path = db_file(outpost_home)
    seed(path, "first")
    seed(path, "second")  # a second start: today's rolling backup holds "first"
    restored = cli("backup", "restore", "--yes")
    assert restored.returncode == 0, restored.stderr
    assert "brought back" not in restored.stdout and "nothing newer" not in restored.stdout
    assert titles(path) == ["first"]
    [kept] = (outpost_home / "data" / "backups").glob("*-replaced.db")
    salvaged = cli("backup", "salvage", str(kept))
    assert salvaged.returncode == 0, salvaged.stderr
    assert f"From {kept.name}, 1 conversation and 0 messages newer than the database " \
           "were brought back." in salvaged.stdout
    assert titles(path) == ["first", "second"]
    again = cli("backup", "salvage", str(kept))
    assert f"Nothing newer than the database could be read from {kept.name}." in again.stdout
    itself = cli("backup", "salvage", str(path))
    assert itself.returncode == 2 and "is the database itself" in itself.stderr
    missing = cli("backup", "salvage", str(kept) + ".nope")
    assert missing.returncode == 2 and "There is no file" in missing.stderr


def test_salvage_refuses_a_file_that_is_not_an_outpost_database(outpost_home, tmp_path,
                                                                 capsys):
    """`backup salvage all.json` (an export), an empty file or another program's SQLite file
    said "Nothing newer … could be read" (or every table "could not be read (file is not a
    database)") and exited 0: now one sentence, exit 2, as `import` refuses a wrong file, and
    the database is left as it was."""
    path = db_file(outpost_home)
    seed(path, "mine")
    # its admin profile, as any command makes it (salvage is the admin's: the check signs in)
    assert main(["profile", "whoami"]) == 0
    capsys.readouterr()
    before = digest(path)
    export = tmp_path / "all.json"
    export.write_text('{"format": "outpost-conversations", "version": 1, "conversations": []}')
    empty = tmp_path / "empty.db"
    empty.touch()
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.commit()
    conn.close()
    for copy, why in ((export, "it is JSON; an export is read back with `outpost import`"),
                      (empty, "it is empty: 0 bytes"),
                      (other, "it is an SQLite database without Outpost's tables")):
        code = main(["backup", "salvage", str(copy)])
        out = capsys.readouterr()
        assert code == 2 and out.out == "", out
        assert one_sentence(out.err) == f"outpost: {copy} is not an Outpost database ({why}); " \
            "nothing was brought over."
    assert digest(path) == before and titles(path) == ["mine"]


def test_with_no_good_backup_start_over_keeps_the_damaged_file_and_brings_back_its_chats(
        outpost_home):
    """Field staff with a damaged database and no backup could not start Outpost at all (every
    command exit 5, the window only Quit): `backup start-over` keeps the damaged file in the
    backups folder and starts a new database with what it still holds; then it answers."""
    path = db_file(outpost_home)
    store = Store(path, daily_backup=False)
    # the machine's default profile (the CLI below acts as it)
    admin = Profiles(store).ensure_default(default_user_id(Settings())).name
    asked = {}
    for n in range(40):
        chat = store.create_conversation(f"chat {n}")
        asked[n] = store.add_message(chat.id, Role.USER,
                                     f"chat {n} question " + "words " * 100)
    for n, provider in ((39, "acme"), (20, "lost")):  # waiting to be sent; chat 20's question
        request = ChatRequest("m", (ChatMessage(Role.USER, f"queued {n}"),))
        Outbox(store).enqueue(asked[n].conversation_id, asked[n].id, provider, None,
                              request)  # is on the page spoiled below
    store.close()
    shutil.rmtree(outpost_home / "data" / "backups", ignore_errors=True)
    spoil_pages_holding(path, "chat 20 question")
    path.touch()  # a program wrote to it: the seal no longer vouches for it
    before = digest(path)

    refused = cli("history", "list")
    assert refused.returncode == 5
    assert "there is no good backup" in one_sentence(refused.stderr)
    assert "`outpost backup start-over`" in refused.stderr

    started = cli("backup", "start-over")
    assert started.returncode == 0, started.stderr
    kept = list((outpost_home / "data" / "backups").glob("*-damaged.db"))
    assert len(kept) == 1 and digest(kept[0])[:64] == before[:64]  # kept, byte for byte
    assert "40 conversations" in started.stdout and "could not be read" in started.stdout
    assert "(and 1 outbox item)" in started.stdout
    waiting = cli("outbox", "list", "--json")
    # not dropped; the one whose question could not be read is left out (it broke sending)
    assert [r["provider"] for r in json.loads(waiting.stdout)] == ["acme"]
    listed = cli("history", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.count('"title"') == 40
    store = Store(path)
    assert len([m for c in store.list_conversations() for m in store.messages(c.id)]) < 40
    store.close()
    # the admin is the damaged file's admin, as before (there is always exactly one)
    profiles = cli("profile", "list", "--json")
    assert profiles.returncode == 0, profiles.stderr
    assert [p["name"] for p in json.loads(profiles.stdout) if p["admin"]] == [admin]
    # the database is healthy now: starting over again is refused, nothing changed
    again = cli("backup", "start-over")
    assert again.returncode == 2 and "is not damaged" in one_sentence(again.stderr)


def test_start_over_is_refused_where_a_good_backup_exists(outpost_home):
    """A restore keeps more (the backup's messages): start-over points to it."""
    path = db_file(outpost_home)
    seed(path, "first", messages=120)
    seed(path, "second")  # today's backup holds "first"
    path.touch()
    spoil_the_middle(path)
    os.utime(path)
    refused = cli("backup", "start-over")
    assert refused.returncode == 2
    assert "`outpost backup restore`" in one_sentence(refused.stderr)
    assert not list((outpost_home / "data" / "backups").glob("*-damaged.db"))


def _varint(data: bytes, at: int) -> tuple[int, int]:
    """SQLite's varint at ``at``: (value, where the next field starts)."""
    value = 0
    for i in range(9):
        byte = data[at + i]
        if i == 8:
            return (value << 8) | byte, at + 9
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, at + i + 1
    raise AssertionError("unreachable")


def renumber_row(path: Path, rowid: int, new_rowid: int) -> None:
    """Damage that reads without an error: the cell of ``rowid`` in its table's leaf page
    says ``new_rowid`` (one byte each), so a lookup of ``rowid`` gives no row."""
    conn = sqlite3.connect(path)
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    data = bytearray(path.read_bytes())
    for page in range(1, len(data) // page_size):  # (page 1 holds the schema)
        base = page * page_size
        if data[base] != 0x0D:  # a table's leaf page
            continue
        for cell in range(int.from_bytes(data[base + 3:base + 5], "big")):
            at = base + int.from_bytes(data[base + 8 + 2 * cell:base + 10 + 2 * cell], "big")
            _, rowid_at = _varint(data, at)
            found, _ = _varint(data, rowid_at)
            if found == rowid and data.count(b"words ", at, at + 600):  # a message's
                assert rowid < 0x80 and new_rowid < 0x80
                data[rowid_at] = new_rowid
                path.write_bytes(bytes(data))
                return
    raise AssertionError(f"no cell of rowid {rowid}")


@pytest.mark.parametrize("scan_fails", [True, False])
def test_a_row_its_index_lists_that_gives_no_row_is_counted_lost(tmp_path, scan_fails):
    """A salvage counted only lookups that failed as rows not read: a row the index lists
    whose lookup gives nothing (a damaged cell that reads as another rowid) was lost without
    a word, after a scan that stopped at a damaged page, or after one that went through."""
    path = tmp_path / "outpost.db"
    store = Store(path, daily_backup=False)
    for i in range(40):
        chat = store.create_conversation(f"chat {i}")
        for role in (Role.USER, Role.ASSISTANT):
            store.add_message(chat.id, role, f"chat {i} {role.value}: " + "words " * 200)
    [[doomed]] = store.db.execute("SELECT rowid FROM messages WHERE content LIKE "
                                  "'chat 30 user: %'").fetchall()
    store.close()
    if scan_fails:
        spoil_pages_holding(path, "chat 10 user: ")
    renumber_row(path, doomed, doomed - 1)
    readable = rows_by_rowid(path, "messages", 80)
    assert doomed not in readable
    lost = 80 - len(readable)
    assert lost == (3 if scan_fails else 1)  # (a page holds two or three messages)

    into = Store(tmp_path / "new" / "outpost.db", daily_backup=False)
    result = salvage(path, into, new_database=True)
    into.close()

    [unread] = [u for u in result.unreadable if u.table == "messages"]
    assert unread.rows == lost and unread.exact
    assert f"{counted(lost, 'message')} could not be read (" in result.describe()


def test_rows_that_cannot_be_read_but_the_backup_holds_are_not_counted_lost(outpost_home):
    """A trial's salvage said "1 message could not be read" of a row the backup already held:
    nothing was lost. Only rows the database still lacks after the salvage are counted."""
    path = db_file(outpost_home)
    seed(path, "early", messages=6)
    store = Store(path)  # a second start: today's backup is taken here, then:
    [early] = store.list_conversations()
    early_ids = [m.id for m in store.messages(early.id)]
    late = store.create_conversation("late")
    late_ids = [store.add_message(late.id, Role.USER, f"late {i}: " + "words " * 200).id
                for i in range(6)]
    store.close()
    spoil_pages_holding(path, "message 2 ", "late 3: ")
    readable = set(rows_by_rowid(path, "messages", 20).values())
    lost_early = [i for i in early_ids if i not in readable]
    lost_late = [i for i in late_ids if i not in readable]
    assert lost_early and lost_late

    _, _, salvaged = restore_and_salvage(path)

    assert salvaged is not None and not salvaged.rollback
    [unread] = [u for u in salvaged.unreadable if u.table == "messages"]
    assert unread.rows == len(lost_late)  # the early ones are in the backup
    assert f"; {counted(len(lost_late), 'message')} could not be read (" in \
        salvaged.describe()
