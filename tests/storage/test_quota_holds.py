"""Requests in flight reserve their share of a budget (app/storage/quota_holds.py): two sent
at once no longer each get what is left (trial 10: alice, 1,000 cloud tokens left, two `ask`
runs 0.3 s apart, each allowed 509 + 491). Real SQLite files shared by separate stores, as
two processes share the database; a real second process for a writer that is killed."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

from app.accounting.pricing import PriceTable, estimate_before_sending
from app.chat.pipeline import TurnEnded, TurnPipeline, TurnTarget
from app.chat.service import ChatService, TurnOptions
from app.config.settings import Settings
from app.domain.context import ReplyCap
from app.domain.errors import KnownStorageError
from app.storage.ledger import UsageLedger
from app.storage.profiles import Profile
from app.storage.quotas import QuotaBook, QuotaExceeded, QuotaGuard
from app.storage.store import Store
from tests.support import FixedEngines, ScriptedEngine, reply

ADMIN = Profile("admin", is_admin=True)
PRICE = PriceTable.load().price_for("openai", "gpt-4o-mini")


def book_with(tmp_path, name: str, value) -> QuotaBook:
    book = QuotaBook(tmp_path / "none.toml", tmp_path / "quotas.json")
    book.set("ana", name, value, by=ADMIN)
    return book


def guard_on(path, book: QuotaBook) -> tuple[Store, QuotaGuard]:
    """A store of its own on the shared file, and its guard: what one process has."""
    store = Store(path, daily_backup=False)
    return store, QuotaGuard(book, UsageLedger(store, "ana"))


def test_two_requests_checked_at_once_share_what_is_left(tmp_path):
    """Two checks at the same moment, each from its own connection to the file: the first
    reserves the prompt and its (limited) reply, and the second finds nothing left, where
    before both were allowed all 1,000 tokens."""
    book = book_with(tmp_path, "cloud_tokens_per_day", 1000)
    path = tmp_path / "outpost.db"
    Store(path).close()
    start = threading.Barrier(2)
    outcomes: dict[int, object] = {}

    def ask(n: int) -> None:
        store, guard = guard_on(path, book)
        start.wait()
        try:
            outcomes[n] = guard.check("ana", "cloud", True, 509, 512, hold=f"turn-{n}")
        except QuotaExceeded as exc:
            outcomes[n] = exc
        finally:
            store.close()

    threads = [threading.Thread(target=ask, args=(n,)) for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    allowed = [o for o in outcomes.values() if isinstance(o, ReplyCap)]
    refused = [o for o in outcomes.values() if isinstance(o, QuotaExceeded)]
    assert allowed == [ReplyCap(491, 512, "daily token quota")] and len(refused) == 1
    assert "0 of 1,000 tokens used today and 1,000 reserved by requests still running" in \
        str(refused[0])


def test_the_hold_is_released_when_the_request_ends(outpost_home, tmp_path):
    """Through the pipeline: a turn prepared holds its prompt and max_tokens (another
    process's check sees it); once its reply ends the hold is gone, and only what the ledger
    counts limits the next request."""
    book = book_with(tmp_path, "cloud_tokens_per_day", 1000)
    path = tmp_path / "outpost.db"
    store = Store(path)
    ledger = UsageLedger(store, "ana")
    service = ChatService(store, Settings(), ledger=ledger, quotas=QuotaGuard(book, ledger),
                          profile="ana")
    cloud = ScriptedEngine(reply("Calm", " and", " blue."))
    pipeline = TurnPipeline(service, FixedEngines(ScriptedEngine(reply("no")), cloud))
    pending = pipeline.prepare("Tell me about the sea.",
                               target=TurnTarget(provider="fault", route="cloud"),
                               options=TurnOptions(max_tokens=500))
    held = pending.turn.fit.prompt_tokens + 500
    other_store, other = guard_on(path, book)  # (another process, the same file)
    assert other.check("ana", "cloud", True, 10, 900) == \
        ReplyCap(1000 - held - 10, 900, "daily token quota")
    events = list(pending.run(threading.Event()))
    assert [e for e in events if isinstance(e, TurnEnded)][0].outcome.error is None
    assert other.check("ana", "cloud", True, 10, 900) is None  # nothing held any more
    assert store.db.execute("select count(*) from quota_holds").fetchone()[0] == 0
    other_store.close()
    store.close()


def test_the_monthly_budget_counts_the_most_a_running_request_can_cost(tmp_path):
    book = book_with(tmp_path, "cloud_cost_per_month", 0.001)
    path = tmp_path / "outpost.db"
    first_store, first = guard_on(path, book)
    second_store, second = guard_on(path, book)
    alone = second.check("ana", "cloud", True, 19, 2000, model="gpt-4o-mini", price=PRICE)
    assert alone is not None  # what 0.1 cents buy alone
    first.check("ana", "cloud", True, 19, 1000, model="gpt-4o-mini", price=PRICE,
                hold="turn-1")
    cap = second.check("ana", "cloud", True, 19, 2000, model="gpt-4o-mini", price=PRICE)
    reserved = estimate_before_sending(19, 1000, PRICE).usd
    assert cap is not None and cap.max_tokens < alone.max_tokens
    assert estimate_before_sending(19, cap.max_tokens, PRICE).usd <= 0.001 - reserved
    first.release("turn-1")
    assert second.check("ana", "cloud", True, 19, 2000, model="gpt-4o-mini",
                        price=PRICE) == alone
    first_store.close()
    second_store.close()


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_a_killed_process_leaves_no_hold_behind(tmp_path):
    """A process that reserved 1,000 tokens and was killed before its request ended: its
    hold counts for nothing (its writer is gone), and is deleted by the next check."""
    book = book_with(tmp_path, "cloud_tokens_per_day", 1000)
    path = tmp_path / "outpost.db"
    Store(path).close()
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from app.storage.ledger import UsageLedger
        from app.storage.quotas import QuotaBook, QuotaGuard
        from app.storage.store import Store
        store = Store({str(path)!r}, daily_backup=False)
        book = QuotaBook(Path({str(tmp_path / "none.toml")!r}),
                         Path({str(tmp_path / "quotas.json")!r}))
        guard = QuotaGuard(book, UsageLedger(store, "ana"))
        print(guard.check("ana", "cloud", True, 488, 512, hold="turn-killed"), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # killed mid-request: nothing released
        """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.getcwd()}, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert done.stdout.strip() == "None"  # it was allowed the whole 1,000
    store, guard = guard_on(path, book)
    [(tokens,)] = store.db.execute("select tokens from quota_holds").fetchall()
    assert tokens == 1000  # still there, of a writer that is gone
    assert guard.check("ana", "cloud", True, 488, 512, hold="turn-mine") is None
    assert store.db.execute("select key from quota_holds").fetchall() == [("turn-mine",)]
    store.close()


def test_a_regenerate_whose_system_prompt_cannot_be_saved_holds_nothing(outpost_home, tmp_path,
                                                                        monkeypatch):
    """Regenerate with a new system prompt reserved its request in the check, then saving
    the prompt failed (a full disk): nothing was sent, but the hold stayed, counted against
    the budget until it lapsed (15 min). It is freed, as a new message's is."""
    book = book_with(tmp_path, "cloud_tokens_per_day", 1000)
    store = Store(tmp_path / "outpost.db")
    ledger = UsageLedger(store, "ana")
    service = ChatService(store, Settings(), ledger=ledger, quotas=QuotaGuard(book, ledger),
                          profile="ana")
    cloud = ScriptedEngine(reply("Calm", " and", " blue."), reply("Grey."))
    pipeline = TurnPipeline(service, FixedEngines(ScriptedEngine(reply("no")), cloud))
    target = TurnTarget(provider="fault", route="cloud")
    first = pipeline.prepare("Tell me about the sea.", target=target,
                             options=TurnOptions(max_tokens=100))
    list(first.run(threading.Event()))
    assert store.db.execute("select count(*) from quota_holds").fetchone()[0] == 0

    def full_disk(*args, **kwargs):
        raise KnownStorageError("The disk is full.")

    monkeypatch.setattr(store, "set_conversation_sampling", full_disk)
    with pytest.raises(KnownStorageError):
        pipeline.regenerate(first.turn.assistant_message_id, target=target,
                            options=TurnOptions(max_tokens=100, system_prompt="Be brief."))
    assert store.db.execute("select count(*) from quota_holds").fetchone()[0] == 0
    store.close()


def test_a_turn_stopped_at_its_notice_holds_nothing(outpost_home, tmp_path):
    """A caller that stops reading a prepared turn at its first notice (here: the reply
    limited to what is left) ends it before it runs: its hold is freed then, not 15 min
    later."""
    book = book_with(tmp_path, "cloud_tokens_per_day", 1000)
    store = Store(tmp_path / "outpost.db")
    ledger = UsageLedger(store, "ana")
    service = ChatService(store, Settings(), ledger=ledger, quotas=QuotaGuard(book, ledger),
                          profile="ana")
    cloud = ScriptedEngine(reply("Calm."))
    pipeline = TurnPipeline(service, FixedEngines(ScriptedEngine(reply("no")), cloud))
    pending = pipeline.prepare("Tell me about the sea.",
                               target=TurnTarget(provider="fault", route="cloud"),
                               options=TurnOptions(max_tokens=2000))
    assert pending.turn.reply_cap is not None
    events = pending.run(threading.Event())
    assert next(events).text.startswith("reply limited to ")
    assert store.db.execute("select count(*) from quota_holds").fetchone()[0] == 1
    events.close()
    assert store.db.execute("select count(*) from quota_holds").fetchone()[0] == 0
    assert cloud.requests == []
    store.close()
