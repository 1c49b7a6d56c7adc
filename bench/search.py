"""Benchmark: full-text search at a million messages, the bounded newest-first plan against
ranking every match, with an unranked FTS5 MATCH ... LIMIT 50 as the anchor, side by side.

    python -m bench.search [--messages 1000000] [--db PATH] [--trials 20]

Builds (once; ``--db`` keeps it for later runs) a real Outpost database: ``--messages`` messages
in conversations of two profiles, words drawn from a Zipf-like vocabulary so that "the" is in
most messages. Their times are a chat's: seconds to minutes apart within a conversation, and
the last fifth of the conversations is an older history (2020-2023) stored after the rest
(2026), as an import stores it, so stored order is not time order. Each trial, alternating the
plans, runs every query shape for profile "ana" (half the conversations): a very common word, a
2-letter prefix while typing, a rare word, two words; the window's query (``search_hits``) and
the command line's (``outpost history search``: every word as a prefix, the whole messages
read). Prints p50/p95 per shape and plan, whether each shape's hits came newest first, and the
machine's load; nothing here runs in the test suite. Target: p95 <= 50 ms for every shape with
the bounded plan.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Sequence

from app.storage.migrations import MIGRATIONS, Migration
from app.storage.search import command_line_query, fts_query, search_hits
from app.storage.store import Store

SHAPES = {"very common word": "the", "prefix while typing": "th", "rare word": "lighthouse",
          "two words": "water boil"}
COMMON = ("the", "a", "to", "and", "of", "is", "in", "it", "you", "that", "for", "on", "with")
WORDS = COMMON + tuple(f"w{i}" for i in range(5000)) + ("water", "boil", "night", "map")
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
IMPORTED = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)


def build(path: Path, messages: int, migrations: Sequence[Migration] = MIGRATIONS) -> None:
    store = Store(path, migrations)
    rng = random.Random(7)
    per = 100
    chats = max(1, messages // per)
    recent = chats - chats // 5  # the rest: an older history, stored after these
    with store._tx() as db:
        for c in range(chats):
            cid = f"c{c}"
            # a conversation every ~20 minutes (recent) or ~2 hours (the older history)
            at = (NOW + dt.timedelta(minutes=20 * c) if c < recent else
                  IMPORTED + dt.timedelta(minutes=120 * (c - recent)))
            stamp = at.isoformat(timespec="milliseconds")
            db.execute("INSERT INTO conversations (id, title, system_prompt, created_at, "
                       "updated_at, profile) VALUES (?, ?, '', ?, ?, ?)",
                       [cid, f"chat {c}", stamp, stamp, "ana" if c % 2 else "bob"])
            rows = []
            for m in range(per):
                words = [rng.choice(COMMON) if rng.random() < 0.35 else
                         WORDS[min(len(WORDS) - 1, int(rng.paretovariate(0.6)))]
                         for _ in range(rng.randrange(8, 40))]
                if rng.random() < 0.00005:
                    words.append("lighthouse")
                at += dt.timedelta(milliseconds=rng.randrange(2_000, 40_000))
                stamp = at.isoformat(timespec="milliseconds")
                rows.append((f"{cid}m{m}", cid, "user" if m % 2 == 0 else "assistant",
                             " ".join(words), "complete", stamp, stamp))
            db.conn.executemany("INSERT INTO messages (id, conversation_id, role, content, "
                                "status, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                                rows)
    store.close()


def ranked(store: Store, text: str) -> int:
    """The old plan: every match scored (bm25), sorted, the best 50 of the profile."""
    rows = store.db.execute(
        "SELECT m.id FROM messages_fts JOIN messages m ON m.seq = messages_fts.rowid "
        "JOIN conversations c ON c.id = m.conversation_id WHERE messages_fts MATCH ? "
        "AND c.profile = 'ana' ORDER BY messages_fts.rank LIMIT 50",
        [fts_query(text)]).fetchall()
    return len(rows)


def anchor(store: Store, text: str) -> int:
    return len(store.db.execute("SELECT rowid FROM messages_fts WHERE messages_fts MATCH ? "
                                "LIMIT 50", [fts_query(text)]).fetchall())


def bounded(store: Store, text: str) -> int:
    return len(search_hits(store, text, profile="ana"))


def command_line(store: Store, text: str) -> int:
    """``outpost history search``: the same plan, every word as a prefix."""
    return len(store.search(command_line_query(text), profile="ana"))


def chats_to_find_in(store: Store) -> dict[str, str]:
    """Ctrl+F's conversations: the one stored first, one stored halfway, the one stored last
    (a chat among a million messages, the words of everything stored after it in between),
    and one spread over the whole: every 5,000th message moved into it, made here once (a
    short chat continued now and then while thousands of others were written)."""
    low, high = store.db.execute("SELECT min(seq), max(seq) FROM messages").fetchone()
    chats = {}
    for name, key in (("stored first", low), ("stored halfway", (low + high) // 2),
                      ("stored last", high)):
        chats[name] = (store.db.execute(
            "SELECT conversation_id FROM messages WHERE seq >= ? AND conversation_id != "
            "'spread' ORDER BY seq LIMIT 1", [key]).fetchone() or store.db.execute(
            "SELECT conversation_id FROM messages WHERE seq <= ? AND conversation_id != "
            "'spread' ORDER BY seq DESC LIMIT 1", [key]).fetchone())[0]
    if store.db.execute("SELECT 1 FROM conversations WHERE id = 'spread'").fetchone() is None:
        with store._tx() as db:
            stamp = NOW.isoformat(timespec="milliseconds")
            db.execute("INSERT INTO conversations (id, title, system_prompt, created_at, "
                       "updated_at, profile) VALUES ('spread', 'spread', '', ?, ?, 'ana')",
                       [stamp, stamp])
            db.execute("UPDATE messages SET conversation_id = 'spread' WHERE rowid % 5000 = 0")
    chats["spread"] = "spread"
    return chats


def in_conversation(store: Store, text: str, conversation: str) -> int:
    """Ctrl+F: the window's search in one conversation."""
    return len(search_hits(store, text, conversation_id=conversation))


def anchor_in_conversation(store: Store, text: str, conversation: str) -> int:
    """The unranked MATCH LIMIT 50 on that conversation's keys (no order)."""
    return len(store.db.execute(
        "SELECT rowid FROM messages_fts WHERE messages_fts MATCH ? AND rowid IN (SELECT seq "
        "FROM messages WHERE conversation_id = ?) LIMIT 50",
        [fts_query(text), conversation]).fetchall())


def _newest_first(store: Store, text: str) -> str:
    """Whether the window's hits and the command line's are the newest 50 matches by their
    time, in that order (against every match of the profile sorted, read once, untimed), and
    how many the window's are."""
    def truth(query: str | None) -> list[str]:
        return [r[0] for r in store.db.execute(
            "SELECT m.id FROM messages_fts f JOIN messages m ON m.seq = f.rowid "
            "JOIN conversations c ON c.id = m.conversation_id WHERE messages_fts MATCH ? "
            "AND c.profile = 'ana' ORDER BY m.created_at DESC, m.rowid DESC LIMIT 50",
            [query]).fetchall()]

    hits = [h.message_id for h in search_hits(store, text, profile="ana")]
    lines = [m.id for m in store.search(command_line_query(text), profile="ana")]
    right = hits == truth(fts_query(text)) and lines == truth(command_line_query(text))
    return f"{'yes' if right else 'NO'} ({len(hits)} hits)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--db", metavar="PATH")
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args(argv)
    folder = None if args.db else tempfile.TemporaryDirectory(prefix="outpost-bench-")
    path = Path(args.db) if args.db else Path(folder.name) / "search.db"
    if not path.exists():
        started = time.perf_counter()
        build(path, args.messages)
        print(f"built {args.messages:,} messages in {time.perf_counter() - started:.0f} s")
    store = Store(path)
    in_order = {shape: _newest_first(store, text) for shape, text in SHAPES.items()}
    plans = {"anchor (unranked LIMIT 50)": anchor, "ranked (old)": ranked,
             "bounded (new)": bounded, "history search": command_line}
    times = {(shape, plan): [] for shape in SHAPES for plan in plans}
    for trial in range(args.trials):
        order = list(plans.items())
        if trial % 2:
            order.reverse()
        for shape, text in SHAPES.items():
            for plan, run in order:
                started = time.perf_counter()
                run(store, text)
                times[(shape, plan)].append((time.perf_counter() - started) * 1000)
    chats = chats_to_find_in(store)
    found = {(shape, name): [] for shape in SHAPES for name in chats}
    for trial in range(args.trials):
        for name, chat in chats.items():
            for shape, text in SHAPES.items():
                runs = [(anchor_in_conversation, "anchor"), (in_conversation, "Ctrl+F")]
                for run, label in runs[::-1] if trial % 2 else runs:
                    started = time.perf_counter()
                    run(store, text, chat)
                    found[(shape, name)].append((label, (time.perf_counter() - started) * 1000))
    store.close()
    print(f"load average {os.getloadavg()[0]:.2f}; {args.trials} alternating trials; "
          "profile 'ana' (half the chats)")
    for shape in SHAPES:
        cells = []
        for plan in plans:
            values = sorted(times[(shape, plan)])
            p95 = values[max(0, int(len(values) * 0.95) - 1)]
            cells.append(f"{plan}: p50 {statistics.median(values):7.1f} / p95 {p95:7.1f} ms")
        print(f"{shape:<20} " + " | ".join(cells)
              + f" | newest first: {in_order[shape]}")
    print("in one conversation (Ctrl+F), p50 / p95 ms, against the unranked MATCH LIMIT 50 on "
          "its keys:")
    for name in chats:
        for shape in SHAPES:
            cells = []
            for label in ("Ctrl+F", "anchor"):
                values = sorted(t for kind, t in found[(shape, name)] if kind == label)
                p95 = values[max(0, int(len(values) * 0.95) - 1)]
                cells.append(f"{label} {statistics.median(values):7.1f} / {p95:7.1f}")
            print(f"  {name:<15} {shape:<20} " + " | ".join(cells))
    if folder is not None:
        folder.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
