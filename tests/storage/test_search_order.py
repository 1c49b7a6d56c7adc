"""Search results are newest first by the messages' time (ties: in the order they were stored),
however the rows were stored: an older history imported after this year's messages, rows
salvaged out of order, a database made before the search key existed. Real database files."""
from __future__ import annotations

import datetime as dt
import json
import random
import re
import sqlite3
from pathlib import Path

import pytest

from app.domain.errors import BadSearch, StorageError
from app.domain.messages import Role
from app.storage.migrations import MIGRATIONS
from app.storage.salvage import salvage
from app.storage.search import command_line_query, fts_query, search_hits
from app.storage.store import Store
from app.storage.transfer import importer

BEFORE_KEYS = [m.__name__ for m in MIGRATIONS].index("m014_search_newest_first")


def old_history(count: int, word: str = "lighthouse") -> list:
    """A ChatGPT conversations.json of one conversation: ``count`` messages an hour apart from
    September 2020, each with ``word`` in it."""
    mapping: dict = {"root": {"id": "root", "message": None, "parent": None,
                              "children": ["m0"]}}
    for i in range(count):
        mapping[f"m{i}"] = {
            "id": f"m{i}", "parent": "root" if i == 0 else f"m{i - 1}",
            "children": [f"m{i + 1}"] if i + 1 < count else [],
            "message": {"id": f"m{i}", "author": {"role": "assistant" if i % 2 else "user"},
                        "create_time": 1600000000.0 + 3600 * i, "metadata": {},
                        "content": {"content_type": "text",
                                    "parts": [f"an old note on the {word}, number {i}"]}}}
    return [{"title": "Old notes", "create_time": 1600000000.0,
             "update_time": 1600000000.0 + 3600 * count, "mapping": mapping,
             "current_node": f"m{count - 1}", "id": "old-notes"}]


def index_agrees(store: Store) -> bool:
    """Whether the search index holds exactly the words of every message under its key (read
    from the index itself, not through the table)."""
    db = store.db
    db.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.indexed_terms USING "
               "fts5vocab(main, messages_fts, instance)")
    indexed = set(db.execute("SELECT doc, term FROM temp.indexed_terms").fetchall())
    stored = {(seq, word.lower()) for seq, content in
              db.execute("SELECT seq, content FROM messages").fetchall()
              for word in re.findall(r"\w+", content)}
    return indexed == stored


def newest_first(store: Store, ids: list[str]) -> list[str]:
    """``ids`` newest first by their time, ties by the order they were stored (rowid)."""
    rows = {r[0]: r[1:] for r in store.db.execute(
        f"SELECT id, created_at, rowid FROM messages WHERE id IN ({','.join('?' * len(ids))})",
        ids).fetchall()}
    return sorted(ids, key=lambda i: (dt.datetime.fromisoformat(rows[i][0]), rows[i][1]),
                  reverse=True)


def store_rows(store: Store, conversation_id: str, rows: list[tuple[str, str, str]]) -> None:
    """(id, content, created_at) stored as they are, in this order (as an import does)."""
    with store.transaction() as db:
        db.conn.executemany(
            "INSERT INTO messages (id, conversation_id, role, content, status, created_at, "
            "updated_at) VALUES (?, ?, 'user', ?, 'complete', ?, ?)",
            [(i, conversation_id, text, at, at) for i, text, at in rows])


def test_an_older_history_imported_later_comes_after_this_years_messages(tmp_path):
    """A ChatGPT history (2020) imported after this year's messages filled all 50 results,
    none of this year's (found by a trial)."""
    store = Store(tmp_path / "outpost.db")
    chat = store.create_conversation("This year", "", None, profile="ana")
    new = [store.add_message(chat.id, Role.USER, f"the lighthouse today, {i}").id
           for i in range(3)]
    path = tmp_path / "conversations.json"
    path.write_text(json.dumps(old_history(60)), encoding="utf-8")
    importer.write(store, importer.load(path), "ana")

    hits = search_hits(store, "lighthouse", profile="ana")
    assert [h.message_id for h in hits[:3]] == new[::-1]
    assert len(hits) == 50
    times = [dt.datetime.fromisoformat(h.created_at) for h in hits]
    assert times == sorted(times, reverse=True)
    assert hits[3].snippet.startswith("an old note") and hits[-1].created_at.startswith("2020")
    found = store.search(command_line_query("lighthouse"), profile="ana")
    assert [m.id for m in found] == [h.message_id for h in hits]
    assert index_agrees(store)
    store.close()


@pytest.fixture
def shuffled(tmp_path):
    """1,200 messages of two profiles stored in an order unrelated to their times (an import,
    salvage), a few sharing one time."""
    store = Store(tmp_path / "outpost.db")
    chats = {p: store.create_conversation(p, "", None, profile=p).id for p in ("ana", "bob")}
    rng = random.Random(16)
    start = dt.datetime(2021, 3, 1, tzinfo=dt.timezone.utc)
    times = [start + dt.timedelta(seconds=rng.randrange(0, 5 * 365 * 86400)) for _ in range(1150)]
    times += [start + dt.timedelta(days=400)] * 50  # stored with one time
    rng.shuffle(times)
    common = ("the", "a", "to", "of", "water", "boil", "that", "this")
    rows = {p: [] for p in chats}
    for i, when in enumerate(times):
        words = [rng.choice(common) for _ in range(rng.randrange(3, 9))]
        if i % 37 == 0:
            words.append("lighthouse")
        rows["ana" if i % 3 else "bob"].append((f"m{i:04}", " ".join(words),
                                                when.isoformat(timespec="milliseconds")))
    for profile, chat in chats.items():  # in two runs, as two imports would
        half = len(rows[profile]) // 2
        store_rows(store, chat, rows[profile][:half])
    for profile, chat in chats.items():
        half = len(rows[profile]) // 2
        store_rows(store, chat, rows[profile][half:])
    yield store, chats
    store.close()


def expected(store: Store, query: str, profile: str | None = None,
             conversation_id: str | None = None, limit: int = 50) -> list[str]:
    """Every match of ``query`` (the index asked without bounds), in scope, newest first."""
    ids = [r[0] for r in store.db.execute(
        "SELECT m.id FROM messages_fts f JOIN messages m ON m.seq = f.rowid JOIN conversations "
        "c ON c.id = m.conversation_id WHERE messages_fts MATCH ? AND (? IS NULL OR c.profile "
        "= ?) AND (? IS NULL OR m.conversation_id = ?)",
        [query, profile, profile, conversation_id, conversation_id]).fetchall()]
    return newest_first(store, ids)[:limit] if ids else []


@pytest.mark.parametrize("windows", ["as shipped", "small"])
@pytest.mark.parametrize("text", ["the", "th", "lighthouse", "water boil", "boil wat",
                                  "nothing"])
def test_every_query_shape_is_newest_first(shuffled, monkeypatch, windows, text):
    store, chats = shuffled
    if windows == "small":  # many windows, growing, and the rest in one
        monkeypatch.setattr(Store, "SEARCH_TARGET", 3)
        monkeypatch.setattr(Store, "SEARCH_REST", 300)
    query = fts_query(text)
    for scope in ({"profile": "ana"}, {"conversation_id": chats["bob"]}, {}):
        hits = search_hits(store, text, **scope)
        assert [h.message_id for h in hits] == expected(store, query, **scope), scope
    for line in (text, f"{text} OR lighthouse", f'"{text}"'):
        query = command_line_query(line)
        assert [m.id for m in store.search(query, profile="bob")] == \
            expected(store, query, profile="bob")
    assert [m.id for m in store.search(command_line_query("the"), limit=500)] == \
        expected(store, command_line_query("the"), limit=500)


@pytest.mark.parametrize("text", ["the", "th", "lighthouse"])
def test_a_window_with_more_matches_than_sqlite_takes_parameters(shuffled, text):
    """Ctrl+F in a conversation (or a search in a profile) whose window held more matches than
    SQLite takes parameters failed as "not valid full-text search syntax (too many SQL
    variables)": at a million messages, every conversation but the newest, for "the". The
    limit is lowered here (32,766 as built) so that 1,200 messages reach it."""
    store, chats = shuffled
    query = fts_query(text)
    scopes = ({"conversation_id": chats["bob"]}, {"profile": "ana"},
              {"profile": "bob", "conversation_id": chats["bob"]},
              {"profile": "ana", "conversation_id": chats["bob"]})
    want = [expected(store, query, **scope) for scope in scopes]
    assert want[0] and want[1] and want[2] == want[0] and want[3] == []
    store.db.conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 60)
    for scope, ids in zip(scopes, want):
        assert [h.message_id for h in search_hits(store, text, **scope)] == ids, scope


def test_only_the_querys_own_errors_are_called_bad_syntax(shuffled):
    """The too-many-variables failure above was reported as the user's query being "not valid
    full-text search syntax"; an error that is not the query's is a storage error."""
    store, chats = shuffled
    with pytest.raises(BadSearch, match="unterminated string"):
        store.search('"lighthouse')
    store.db.conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 2)
    with pytest.raises(StorageError, match="too many SQL variables") as raised:
        search_hits(store, "lighthouse", conversation_id=chats["ana"])  # a window's 3rd
    assert not isinstance(raised.value, BadSearch)


def test_a_search_in_one_conversation_looks_only_at_its_span(tmp_path):
    """A conversation stored long ago, among many newer messages: the search walks only the
    keys from its first message to its last, so a word in every newer message costs nothing
    (counted: the rows the index hands back)."""
    store = Store(tmp_path / "outpost.db")
    old = store.create_conversation("Old", "", None, profile="ana").id
    store_rows(store, old, [(f"o{i}", f"the old lighthouse {i}",
                             f"2021-01-01T10:{i:02}:00.000+00:00") for i in range(6)])
    new = store.create_conversation("New", "", None, profile="ana").id
    store_rows(store, new, [(f"n{i:04}", "the new lighthouse",
                             f"2025-01-01T10:00:{i % 60:02}.{i // 60:03}+00:00")
                            for i in range(3000)])
    handed: list[int] = []
    window = Store._window

    def counted(self, query, low, high):
        page = window(self, query, low, high)
        handed.extend(page)
        return page

    try:
        Store._window = counted
        hits = search_hits(store, "the", conversation_id=old)
    finally:
        Store._window = window
    assert [h.message_id for h in hits] == [f"o{i}" for i in range(5, -1, -1)]
    assert len(handed) == 6
    store.close()


@pytest.mark.parametrize("text", ["the", "lighthouse", "the lighthouse", "nothing"])
def test_a_conversation_spread_among_many_others_is_searched_by_its_own_keys(
        tmp_path, monkeypatch, text):
    """A short chat continued now and then while thousands of others were written: its span
    holds every message of the others, so walking the span read each of their matches (~200
    ms for "the" at a million). Its own keys are looked up instead: the windows are never
    walked (counted), and the hits are still its newest matches first, in pieces."""
    store = Store(tmp_path / "outpost.db")
    spread = store.create_conversation("Spread", "", None, profile="ana").id
    others = store.create_conversation("Others", "", None, profile="ana").id
    for day in range(12):
        store_rows(store, spread, [(f"s{day:02}", f"the lighthouse on day {day}" if day % 3
                                    else f"the keeper on day {day}",
                                    f"2025-01-{day + 1:02}T09:00:00.000+00:00")])
        store_rows(store, others, [(f"o{day:02}{i:03}", "the other lighthouse",
                                    f"2025-01-{day + 1:02}T10:{i // 60:02}:{i % 60:02}.000+00:00")
                                   for i in range(200)])
    monkeypatch.setattr(Store, "KEYS_PER_ASK", 5)
    walked: list[tuple] = []
    monkeypatch.setattr(Store, "_window", lambda self, *args: walked.append(args) or [])
    query = fts_query(text)
    for limit in (50, 3):
        want = expected(store, query, conversation_id=spread, limit=limit)
        assert [m for m in want if not m.startswith("s")] == []
        got = store.search_seqs(query, limit=limit, conversation_id=spread)
        ids = [store.db.execute("SELECT id FROM messages WHERE seq = ?", [seq]).fetchone()[0]
               for seq in got]
        assert ids == want, limit
    assert bool(want) is (text != "nothing")
    assert walked == []
    store.close()


def test_messages_of_one_time_are_in_the_order_they_were_stored(tmp_path):
    """Ties: the later stored is the newer, past the 16 keys of one millisecond too (an import
    whose messages have no time of their own), and a message a moment later stays newer."""
    store = Store(tmp_path / "outpost.db")
    chat = store.create_conversation("Ties", "", None, profile="ana").id
    at = "2024-05-01T10:00:00.000+00:00"
    store_rows(store, chat, [("later", "a tie", "2024-05-01T10:00:05.000+00:00")])
    store_rows(store, chat, [(f"t{i:02}", "a tie", at) for i in range(40)])
    store_rows(store, chat, [("same-ms", "a tie", "2024-05-01T12:00:00+02:00")])  # (10:00 UTC)
    want = ["later", "same-ms"] + [f"t{i:02}" for i in range(39, -1, -1)]
    assert [m.id for m in store.search('"tie"', limit=100)] == want
    seqs = [r[0] for r in store.db.execute("SELECT seq FROM messages").fetchall()]
    assert None not in seqs and len(set(seqs)) == len(seqs)
    store.close()


def test_thousands_of_messages_of_one_time_keep_unique_keys(tmp_path):
    """Past the 16,384 keys after one millisecond: after every message, still unique."""
    store = Store(tmp_path / "outpost.db")
    chat = store.create_conversation("Ties", "", None, profile="ana").id
    at = "2024-05-01T10:00:00.000+00:00"
    store_rows(store, chat, [(f"t{i:05}", "same time", at) for i in range(16_500)])
    store_rows(store, chat, [("odd", "same time", "not a time")])  # counts as when stored
    want = ["odd"] + [f"t{i:05}" for i in range(16_499, 16_450, -1)]
    assert [m.id for m in store.search('"time"')] == want
    assert store.db.execute("SELECT count(DISTINCT seq), count(seq) FROM messages"
                            ).fetchone() == (16_501, 16_501)
    store.close()


def test_deleting_editing_and_forking_keep_the_index_right(tmp_path):
    store = Store(tmp_path / "outpost.db")
    chat = store.create_conversation("Edits", "", None, profile="ana")
    first = store.add_message(chat.id, Role.USER, "the lighthouse keeper")
    reply = store.add_message(chat.id, Role.ASSISTANT, "")
    store.update_message(reply.id, content="keeps the lamp lit")  # as a reply streams
    store.update_message(reply.id, content="keeps the lighthouse lamp lit", status="complete")
    other = store.create_conversation("Other", "", None, profile="ana")
    doomed = store.add_message(other.id, Role.USER, "a lighthouse to delete")
    assert [m.id for m in store.search('"lighthouse"')] == [doomed.id, reply.id, first.id]
    store.delete_conversation(other.id)
    fork = store.fork(reply.id, "ana")
    copies = [m.id for m in store.messages(fork.id)]
    # a copy keeps its original's time: stored later, it is the newer of the two
    assert [m.id for m in store.search('"lighthouse"')] == \
        newest_first(store, [first.id, reply.id] + copies)
    assert [m.id for m in store.search('"keeper"')] == [copies[0], first.id]
    assert store.search('"lamp"') and not store.search('"delete"')
    assert index_agrees(store)
    # a row's time changed (salvage brings one back as the damaged file had it): a new key
    store.db.execute("UPDATE messages SET created_at = '2019-01-01T00:00:00.000+00:00' "
                     "WHERE id = ?", [first.id])
    assert [m.id for m in store.search('"lighthouse"')][-1] == first.id
    assert index_agrees(store)
    # its text and time changed in one statement (found by a review: the re-keying ran first
    # and the index was left "malformed"): the index holds the new text, no old entry
    store.db.execute("UPDATE messages SET content = 'a beacon keeper', created_at = "
                     "'2018-01-01T00:00:00.000+00:00' WHERE id = ?", [first.id])
    store.db.execute("INSERT INTO messages_fts (messages_fts, rank) VALUES "
                     "('integrity-check', 1)")  # raises on a malformed index
    assert index_agrees(store)
    assert [m.id for m in store.search('"beacon"')] == [first.id]
    assert first.id not in [m.id for m in store.search('"lighthouse"')]
    store.close()


def old_database(path: Path) -> list[str]:
    """A database as Outpost made it before the search key (migrations up to m013): this
    year's messages, then an older history stored after them, one message edited and one
    deleted. Returns the ids that say "lighthouse", newest first."""
    old = Store(path, MIGRATIONS[:BEFORE_KEYS])
    chat = old.create_conversation("This year", "", None, profile="ana")
    new = [old.add_message(chat.id, Role.USER, f"the lighthouse today {i}").id for i in range(3)]
    edited = old.add_message(chat.id, Role.USER, "a draft")
    old.update_message(edited.id, content="the lighthouse, edited")
    gone = old.add_message(chat.id, Role.USER, "a lighthouse deleted")
    old.db.execute("DELETE FROM messages WHERE id = ?", [gone.id])
    history = old.create_conversation("Old notes", "", None, profile="ana")
    store_rows(old, history.id, [(f"old{i}", f"an old lighthouse {i}",
                                  f"2021-06-{i + 1:02}T08:00:00.000+00:00") for i in range(20)])
    old.close()
    return [edited.id] + new[::-1] + [f"old{i}" for i in range(19, -1, -1)]


def test_a_database_from_before_the_key_is_migrated(tmp_path):
    path = tmp_path / "outpost.db"
    want = old_database(path)
    store = Store(path)
    assert "m014_search_newest_first" in store.last_backup.name
    assert [m.id for m in store.search('"lighthouse"')] == want
    assert [h.message_id for h in search_hits(store, "lighth", profile="ana")] == want
    assert index_agrees(store)
    # after it: a new message has the newest key, an edit and a delete follow
    chat = store.search('"today"')[0].conversation_id
    latest = store.add_message(chat, Role.USER, "one more lighthouse")
    store.update_message(want[1], content="no longer about that")
    store.db.execute("DELETE FROM messages WHERE id = ?", [want[2]])
    assert [m.id for m in store.search('"lighthouse"')] == [latest.id, want[0]] + want[3:]
    assert index_agrees(store)
    store.close()


def test_salvaged_rows_get_keys_in_time_order(tmp_path):
    """Salvage brings rows over in the order the damaged file stored them, from a file made
    before the key too: each gets its key as it goes in."""
    damaged = tmp_path / "kept.db"
    want = old_database(damaged)
    store = Store(tmp_path / "new.db")
    result = salvage(damaged, store, new_database=True)
    assert result.rows["messages"] == 24
    assert [m.id for m in store.search('"lighthouse"')] == want
    assert index_agrees(store)
    store.close()
    # and from a file that has keys: its own are not brought (they could clash)
    again = Store(tmp_path / "again.db")
    salvage(tmp_path / "new.db", again, new_database=True)
    assert [m.id for m in again.search('"lighthouse"')] == want
    assert index_agrees(again)
    again.close()
    with sqlite3.connect(tmp_path / "again.db") as db:
        assert db.execute("SELECT count(*) FROM messages WHERE seq IS NULL").fetchone()[0] == 0
