"""What was used and spent stays counted through a restore and a salvage, on a real SQLite
file: a trial restored a backup taken before 7 cloud requests ($0.0011) and `usage` said $0;
`backup salvage` on the replaced file brought 773 messages back but no usage record, so the
usage report, the Usage dialog and the monthly budget still said $0."""
from __future__ import annotations

import datetime as dt
import shutil
import sqlite3
from pathlib import Path

from app.domain.messages import Role
from app.storage.ledger import UsageLedger
from app.storage.restore import restore_backup
from app.storage.salvage import restore_and_salvage, salvage
from app.storage.store import Store
from engines.http_policy import AttemptRecord

EVER = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)


def spend(store: Store, turn: str, cost: float, provider: str = "fakeai") -> None:
    """One cloud attempt in the ledger, as a finished request leaves it."""
    store.log_attempt(AttemptRecord(attempt=1, status=200, latency_ms=120.0, error_kind=None,
                                    idempotency_key=turn, provider=provider, model="fake-1",
                                    prompt_tokens=20, completion_tokens=10, kind="openai"),
                      profile="root", route="cloud", cost_usd=cost)


def ledger(path: Path) -> tuple[int, float, list[str]]:
    """(requests, cost, the turns) as `usage` and the budget read them."""
    store = Store(path, daily_backup=False)
    try:
        totals = UsageLedger(store, "root").totals(EVER)
        turns = [r["idempotency_key"] for r in store.request_log()]
        return totals.requests, round(totals.cost_usd, 6), turns
    finally:
        store.close()


def backed_up_then_spent(path: Path, costs: list[float]) -> None:
    """A home whose day's backup holds one local request, then cloud requests made since."""
    store = Store(path)
    store.create_conversation("before the backup")
    spend(store, "turn-local", 0.0, provider="local")
    store.close()
    store = Store(path)  # a second start: today's backup is taken here
    conversation = store.create_conversation("after the backup")
    store.add_message(conversation.id, Role.USER, "Where is the lighthouse keeper?")
    for i, cost in enumerate(costs):
        spend(store, f"turn-{i}", cost)
    store.close()


def test_a_rollback_keeps_the_usage_records_made_since_the_backup(outpost_home):
    path = outpost_home / "data" / "outpost.db"
    backed_up_then_spent(path, [0.0002, 0.0003, 0.0006])

    backup, kept, carried = restore_and_salvage(path)

    assert kept is not None and carried is not None
    assert carried.describe() == ("3 usage records (what requests used and cost) made since "
                                  "the backup stay in the usage ledger.")
    requests, cost, _ = ledger(path)
    assert (requests, cost) == (4, 0.0011)
    store = Store(path, daily_backup=False)  # the rollback itself: the chat made since goes
    assert [c.title for c in store.list_conversations()] == ["before the backup"]
    spend(store, "turn-after-the-restore", 0.0001)
    again = salvage(kept, store, named=True)  # the kept file again: nothing counted twice
    store.close()
    assert again.rows["request_log"] == 0
    assert "usage record" not in again.describe(kept.name, "the database")
    requests, cost, _ = ledger(path)
    assert (requests, cost) == (5, 0.0012)


def test_salvage_brings_back_the_usage_records_the_database_lacks_once(outpost_home):
    """The trial's order: a restore that left the ledger behind, a request made since (its
    record takes the id the replaced file gave its own second record), then `backup salvage`
    of the replaced file. Its records come back beside the new one, once however often it is
    salvaged; what a running request had reserved (quota_holds) does not."""
    path = outpost_home / "data" / "outpost.db"
    backed_up_then_spent(path, [0.0002, 0.0003, 0.0006])
    copy = outpost_home / "replaced.db"
    shutil.copy(path, copy)
    conn = sqlite3.connect(copy)
    with conn:
        conn.execute("INSERT INTO quota_holds (key, profile, tokens, cost_usd) "
                     "VALUES ('turn-running', 'root', 500, 0.01)")
    conn.close()
    restore_backup(path)  # the database as a rollback without the ledger left it
    store = Store(path, daily_backup=False)
    spend(store, "turn-after-the-restore", 0.0001)
    assert [r["id"] for r in store.request_log()] == [1, 2]

    brought = salvage(copy, store, named=True)
    twice = salvage(copy, store, named=True)
    holds = store.db.execute("SELECT count(*) FROM quota_holds").fetchone()[0]
    store.close()

    assert brought.describe(copy.name, "the database") == (
        "From replaced.db, 1 conversation and 1 message newer than the database were brought "
        "back, and 3 usage records (what requests used and cost) that the database lacked.")
    assert twice.rows["request_log"] == 0
    assert twice.describe(copy.name, "the database") == \
        "Nothing newer than the database could be read from replaced.db."
    requests, cost, turns = ledger(path)
    assert (requests, cost) == (5, 0.0012)
    assert sorted(turns) == ["turn-0", "turn-1", "turn-2", "turn-after-the-restore",
                             "turn-local"]
    assert holds == 0


def spoil_page_holding(path: Path, text: str) -> None:
    """Garbage over the page that holds ``text``, as a bad sector would leave it."""
    conn = sqlite3.connect(path)
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    data = path.read_bytes()
    assert data.count(text.encode()) == 1
    page = data.index(text.encode()) // page_size
    with open(path, "r+b") as f:
        f.seek(page * page_size)
        f.write(b"\xa5" * page_size)


def test_a_restore_over_a_damaged_file_brings_its_usage_records_back(outpost_home):
    path = outpost_home / "data" / "outpost.db"
    backed_up_then_spent(path, [0.0002, 0.0003, 0.0006])
    spoil_page_holding(path, "Where is the lighthouse keeper?")

    _, kept, salvaged = restore_and_salvage(path)

    assert kept is not None and salvaged is not None and not salvaged.rollback
    assert salvaged.rows["request_log"] == 3
    assert "and 3 usage records (what requests used and cost) that the backup lacked" in \
        salvaged.describe()
    requests, cost, _ = ledger(path)
    assert (requests, cost) == (4, 0.0011)
