"""What requests in flight have reserved against their profile's budgets (``quota_holds``).

A request is in the ledger only once it ends, so the quotas, reading the ledger alone, gave
two requests sent at once (two `ask` runs, the window and a terminal) the same room: with
1,000 tokens left each was allowed 1,000. ``QuotaGuard.check`` therefore reserves what a
request it lets go can use (its prompts and max_tokens of reply, and the most that can cost)
in the database, inside the same write transaction as its reading of the ledger and of the
other holds, so every process sees it; the request's end releases it (its real usage is in
the ledger by then: ``app.chat.pipeline.PendingTurn``, ``app.chat.outbox_sender``).

A hold is never left behind for good: one whose writer (``app.storage.writers``) is no longer
running (killed, crashed) counts for nothing and is deleted, and any hold lapses after
``HOLD_EXPIRY_S`` (a turn this process prepared and never ran).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from app.storage.sqlite_errors import storage_errors
from app.storage.store import Store
from app.storage.writers import this_writer, writer_alive

# how long a hold counts at most: longer than a reply takes (a cloud reply of a few thousand
# tokens streams within minutes); a turn prepared and never run holds no longer than this
HOLD_EXPIRY_S = 15 * 60


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Held:
    """What the live holds of a profile reserve: tokens, and dollars."""

    tokens: int = 0
    cost_usd: float = 0.0


class QuotaHolds:
    """The ``quota_holds`` table. ``held`` and ``hold`` are meant to run inside one
    ``store.transaction()`` (``QuotaGuard.check``), so no other process reads the room
    between them."""

    def __init__(self, store: Store):
        self.store = store

    def held(self, profile: str, since: dt.datetime, now: dt.datetime) -> Held:
        """What ``profile``'s live holds made since ``since`` reserve; holds of a writer that
        is gone, or lapsed, are deleted (call inside a transaction)."""
        db = self.store.db
        with storage_errors(self.store.path):
            rows = db.execute("SELECT key, tokens, cost_usd, writer, created_at, expires_at "
                              "FROM quota_holds WHERE profile = ?", [profile]).fetchall()
            tokens, cost, gone = 0, 0.0, []
            for key, held_tokens, held_cost, writer, created, expires in rows:
                if expires <= _iso(now) or not writer_alive(writer):
                    gone.append(key)
                elif created >= _iso(since):
                    tokens += held_tokens or 0
                    cost += held_cost or 0.0
            for key in gone:
                db.execute("DELETE FROM quota_holds WHERE key = ?", [key])
        return Held(tokens, cost)

    def hold(self, key: str, profile: str, tokens: int, cost_usd: float,
             now: dt.datetime) -> None:
        """Reserve ``tokens`` and ``cost_usd`` for the request ``key`` (its turn's key)."""
        with storage_errors(self.store.path):
            self.store.db.execute(
                "INSERT OR REPLACE INTO quota_holds (key, profile, tokens, cost_usd, writer, "
                "created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [key, profile, tokens, cost_usd, this_writer(), _iso(now),
                 _iso(now + dt.timedelta(seconds=HOLD_EXPIRY_S))])

    def release(self, key: str) -> None:
        """The request ``key`` ended: its usage is in the ledger; its hold goes."""
        with self.store.transaction() as db:
            db.execute("DELETE FROM quota_holds WHERE key = ?", [key])
