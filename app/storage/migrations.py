"""Database migrations: named functions, applied in order, each recorded in ``_migrations``.

Append new migrations at the end; never edit or reorder one that has shipped. The store backs up the
database file before it runs any pending migration.
"""
from __future__ import annotations

from typing import Callable

import sqlite_utils

from app.domain.errors import OutpostError

Migration = Callable[[sqlite_utils.Database], None]
MIGRATIONS: list[Migration] = []


def migration(fn: Migration) -> Migration:
    MIGRATIONS.append(fn)
    return fn


@migration
def m001_conversations_and_messages(db: sqlite_utils.Database) -> None:
    db["conversations"].create(
        {
            "id": str,
            "title": str,
            "system_prompt": str,
            "created_at": str,
            "updated_at": str,
        },
        pk="id",
    )
    db["messages"].create(
        {
            "id": str,
            "conversation_id": str,
            "parent_id": str,
            "role": str,
            "content": str,
            "status": str,
            "engine": str,
            "model": str,
            "params": str,  # JSON: the parameters actually sent
            "prompt_tokens": int,
            "completion_tokens": int,
            "cached_prompt_tokens": int,
            "tokens_estimated": int,
            "ttft_ms": float,
            "tokens_per_s": float,
            "finish_reason": str,
            "error": str,
            "writer": str,  # "pid:start-ms" of the process streaming into this row
            "created_at": str,
            "updated_at": str,
        },
        pk="id",
        foreign_keys=[("conversation_id", "conversations", "id")],
        not_null={"conversation_id", "role", "content", "status", "created_at", "updated_at"},
        defaults={"content": "", "tokens_estimated": 0},
    )
    db["messages"].create_index(["conversation_id", "created_at"])
    db["messages"].create_index(["status"])
    db["conversations"].create_index(["updated_at"])
    db["messages"].enable_fts(["content"], fts_version="FTS5", create_triggers=True)


@migration
def m002_request_log(db: sqlite_utils.Database) -> None:
    """One row per HTTP attempt of a cloud request (retries included)."""
    db["request_log"].create(
        {
            "id": int,
            "idempotency_key": str,  # the user turn; also in messages.params
            "provider": str,
            "model": str,
            "attempt": int,
            "status": int,  # HTTP status, NULL when no response
            "latency_ms": float,
            "error_kind": str,
            "rate_limits": str,  # JSON of the x-ratelimit-* / anthropic-ratelimit-* headers
            "created_at": str,
        },
        pk="id",
    )
    db["request_log"].create_index(["idempotency_key"])
    db["request_log"].create_index(["created_at"])


@migration
def m003_route_reason(db: sqlite_utils.Database) -> None:
    """Why this engine answered ("local-only conversation", "openai unreachable since 10:42")."""
    db["messages"].add_column("route_reason", str)


@migration
def m004_routing(db: sqlite_utils.Database) -> None:
    """Route policy per conversation, segments per reply, the offline outbox, and which engine
    made each logged attempt (local attempts are logged too once hedging races them)."""
    db["conversations"].add_column("route", str)  # NULL: the settings' default_route
    db["messages"].add_column("segments", str)  # JSON list, see app.domain.messages.Message.segments
    db["request_log"].add_column("outcome", str)  # e.g. "won", "hedge_lost", "cancelled"
    db["outbox"].create(
        {
            "id": int,  # also the order items are sent in
            "conversation_id": str,
            "user_message_id": str,  # the answer is stored as its child (a sibling reply)
            "provider": str,
            "model": str,
            "request": str,  # JSON of the ChatRequest, idempotency key included
            "idempotency_key": str,
            "state": str,  # queued / sending / sent / failed / cancelled
            "attempts": int,
            "last_error": str,
            "answer_message_id": str,
            # Cloud only: the empty "queued" reply shown until the answer comes (then removed)
            "placeholder_message_id": str,
            "writer": str,  # "pid:start-ms" of the process sending it (state 'sending')
            "created_at": str,
            "updated_at": str,
        },
        pk="id",
        not_null={"conversation_id", "user_message_id", "provider", "request", "state"},
        defaults={"attempts": 0},
    )
    db["outbox"].create_index(["state"])


@migration
def m005_usage_ledger(db: sqlite_utils.Database) -> None:
    """The request log becomes the usage ledger: what each attempt used and cost, and for whom.
    Daily and monthly totals are queries over it."""
    log = db["request_log"]
    for name, kind in (("kind", str), ("profile", str), ("conversation_id", str),
                       ("route", str), ("prompt_tokens", int), ("completion_tokens", int),
                       ("cached_prompt_tokens", int), ("tokens_estimated", int),
                       ("cost_usd", float), ("cost_estimated", int), ("ttft_ms", float)):
        log.add_column(name, kind)
    log.create_index(["profile", "created_at"])
    db["messages"].add_column("cost_usd", float)  # NULL: unknown price (never shown as zero)
    db["messages"].add_column("cost_estimated", int)


@migration
def m006_profiles(db: sqlite_utils.Database) -> None:
    """Profiles: the people who share this machine. Conversations belong to one (NULL: to the
    machine's default profile, which claims them on first use; see ``app.storage.profiles``)."""
    db["profiles"].create(
        {
            "name": str,
            "is_admin": int,
            "pin_hash": str,  # "scrypt$n$r$p$salt$hash" (base64), NULL: no PIN
            "failed_pins": int,  # wrong PINs in a row (throttling)
            "locked_until": str,  # ISO time (UTC) before which no PIN is checked
            "created_at": str,
        },
        pk="name",
        not_null={"name", "is_admin", "created_at"},
        defaults={"is_admin": 0, "failed_pins": 0},
    )
    # at most one admin
    db.execute("create unique index profiles_one_admin on profiles(is_admin) where is_admin = 1")
    db["conversations"].add_column("profile", str)
    db["conversations"].create_index(["profile", "updated_at"])


@migration
def m007_conversation_sampling(db: sqlite_utils.Database) -> None:
    """Each conversation keeps its sampling knobs (JSON, ``app.domain.sampling``); NULL:
    defaults."""
    db["conversations"].add_column("sampling", str)


@migration
def m008_output_check(db: sqlite_utils.Database) -> None:
    """Structured output: how a JSON reply was checked (valid, the error, the repair used, the
    raw text it replaced); NULL for free-text replies."""
    db["messages"].add_column("output_check", str)


@migration
def m009_candidates(db: sqlite_utils.Database) -> None:
    """Best-of-n / self-consistency: every candidate of a reply, its score or answer, and how
    the winner was chosen (JSON, ``app.chat.candidates``); NULL for a single reply."""
    db["messages"].add_column("candidates", str)


@migration
def m010_conversation_tree(db: sqlite_utils.Database) -> None:
    """Conversations are trees: every message has a parent (the message it answers or follows)
    and a conversation remembers its active leaf; a turn sees exactly the path from the root to
    the message it answers. Before this, every message of a conversation was shown and sent in
    time order, so an old conversation becomes one path in that order (every message kept)."""
    db["conversations"].add_column("active_leaf_id", str)
    conversations = [row["id"] for row in db.query("select id from conversations")]
    for conversation_id in conversations:
        previous = None
        for row in db.query("select id from messages where conversation_id = ? "
                            "order by created_at, rowid", [conversation_id]):
            db.execute("update messages set parent_id = ? where id = ?", [previous, row["id"]])
            previous = row["id"]
        db.execute("update conversations set active_leaf_id = ? where id = ?",
                   [previous, conversation_id])
    db["messages"].create_index(["parent_id"], if_not_exists=True)


@migration
def m011_conversation_place(db: sqlite_utils.Database) -> None:
    """A conversation can be pinned to the top of the list, and remembers who answers it: the
    target chosen when its last message was sent ("local" or "provider:NAME") and that
    provider's model, so reopening it sends the next message to the same place."""
    db["conversations"].add_column("pinned", int, not_null_default=0)
    db["conversations"].add_column("target", str)
    db["conversations"].add_column("target_model", str)


@migration
def m012_usage_index(db: sqlite_utils.Database) -> None:
    """A covering index for the usage dashboard (app.storage.usage_series): a year of
    attempts is summed from the index alone, without reading the rows (bench/usage_dashboard:
    the cost chart over 100,000 attempts went from ~215 ms to ~50 ms)."""
    db["request_log"].create_index(
        ["profile", "created_at", "provider", "cost_usd", "prompt_tokens", "completion_tokens"],
        index_name="idx_request_log_usage", if_not_exists=True)


@migration
def m013_search_prefix_index(db: sqlite_utils.Database) -> None:
    """The search index gains prefix indexes of 2 and 3 characters: the window searches as
    you type, and "th*" had to merge the doclists of every word starting with "th" (~95 ms a
    query at a million messages; ~1 ms with the index, bench/search.py). The index is rebuilt
    from the messages (~8 s per million messages, once)."""
    db.executescript("""
        DROP TABLE IF EXISTS messages_fts;
        CREATE VIRTUAL TABLE messages_fts USING FTS5 (content, content=messages,
                                                      prefix='2 3');
        INSERT INTO messages_fts(messages_fts) VALUES('rebuild');
    """)


# A message's search key (``messages.seq``) as SQL, from its ``created_at`` (``{at}``): the
# time in milliseconds × 16, plus the number of messages stored before it with the same
# millisecond (ties: by insertion). More than 16 at one millisecond (an import whose messages
# have no time of their own) go after the messages of the next second stored so far, and past
# 16,384 after every message: keys stay unique however many share a time. A time SQLite cannot
# read counts as the time the row is stored. No key ever has to move; the price is sparse keys
# (a message a minute apart is ~10⁶ apart): bench/search.py's million short messages take a
# search index of 164 MB against 106 MB with consecutive rowids (the file: 507 MB, 417 MB).
_SEQ_OF = """(SELECT CASE
        WHEN coalesce(same + 1, b) < b + 16 THEN coalesce(same + 1, b)
        WHEN near + 1 < b + 16384 THEN near + 1
        ELSE (SELECT max(seq) + 1 FROM messages) END
    FROM (SELECT b,
                 (SELECT seq FROM messages WHERE seq >= b AND seq < b + 16
                  ORDER BY seq DESC LIMIT 1) AS same,
                 (SELECT seq FROM messages WHERE seq >= b AND seq < b + 16384
                  ORDER BY seq DESC LIMIT 1) AS near
          FROM (SELECT 16 * CAST(round((coalesce(julianday({at}), julianday('now'))
                                        - 2440587.5) * 86400000) AS INTEGER) AS b)))"""


@migration
def m014_search_newest_first(db: sqlite_utils.Database) -> None:
    """Search results are newest first by the messages' time, not by the order rows were
    stored: a ChatGPT history imported after this year's messages (2020–2023, stored later) came
    first and hid them (found by a trial). Every message gets ``seq``, a unique key in time
    order (``_SEQ_OF``), which is the search index's rowid: the search walks the index back from
    the newest key in windows (``app.storage.fulltext``). Triggers give every new row its key
    (a new message, an import, a fork, salvage: whoever inserts) and keep the index in step
    with the content and the key. Existing messages get theirs from their times (ties: in the
    order they were stored), and the index is rebuilt in key order (once: 21 s for bench/search.py's million messages
    on two busy cores)."""
    for trigger in ("messages_ai", "messages_ad", "messages_au"):
        db.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    db.execute("DROP TABLE IF EXISTS messages_fts")
    db.execute("ALTER TABLE messages ADD COLUMN seq INTEGER")
    db.execute("CREATE UNIQUE INDEX idx_messages_seq ON messages (seq)")
    fill = f"UPDATE messages SET seq = {_SEQ_OF.format(at='?')} WHERE rowid = ?"
    done = -(1 << 63)  # (below every rowid SQLite gives)
    while stored := db.execute("SELECT rowid, created_at FROM messages WHERE rowid > ? "
                               "ORDER BY rowid LIMIT 10000", [done]).fetchall():
        db.conn.executemany(fill, [(created_at, rowid) for rowid, created_at in stored])
        done = stored[-1][0]
    db.execute("CREATE VIRTUAL TABLE messages_fts USING FTS5 (content, content=messages, "
               "content_rowid=seq, prefix='2 3')")
    # in key order: FTS5 writes a segment each time a rowid goes down
    db.execute("INSERT INTO messages_fts (rowid, content) SELECT seq, content FROM messages "
               "ORDER BY seq")
    db.execute(f"""CREATE TRIGGER messages_seq AFTER INSERT ON messages WHEN new.seq IS NULL
        BEGIN UPDATE messages SET seq = {_SEQ_OF.format(at='new.created_at')}
              WHERE rowid = new.rowid; END""")
    db.execute("""CREATE TRIGGER messages_ai AFTER INSERT ON messages WHEN new.seq IS NOT NULL
        BEGIN INSERT INTO messages_fts (rowid, content) VALUES (new.seq, new.content); END""")
    db.execute("""CREATE TRIGGER messages_ad AFTER DELETE ON messages WHEN old.seq IS NOT NULL
        BEGIN INSERT INTO messages_fts (messages_fts, rowid, content)
              VALUES ('delete', old.seq, old.content); END""")
    db.execute("""CREATE TRIGGER messages_au AFTER UPDATE OF content, seq ON messages BEGIN
        INSERT INTO messages_fts (messages_fts, rowid, content)
            SELECT 'delete', old.seq, old.content WHERE old.seq IS NOT NULL;
        INSERT INTO messages_fts (rowid, content)
            SELECT new.seq, new.content WHERE new.seq IS NOT NULL; END""")
    # a time changed (salvage brings a row back as the damaged file had it): a new key
    db.execute(f"""CREATE TRIGGER messages_time AFTER UPDATE OF created_at ON messages
        WHEN new.created_at IS NOT old.created_at
        BEGIN UPDATE messages SET seq = {_SEQ_OF.format(at='new.created_at')}
              WHERE rowid = new.rowid; END""")


@migration
def m015_deletions(db: sqlite_utils.Database) -> None:
    """Tombstones of deleted conversations and messages: their ids, what they were and when
    they were deleted, never their text (``app.storage.deletions``): a salvage or a restore of
    an older copy leaves deleted what was deleted since."""
    db["deletions"].create({"id": str, "kind": str, "deleted_at": str}, pk="id",
                           not_null={"kind", "deleted_at"})


@migration
def m016_search_key_on_time_alone(db: sqlite_utils.Database) -> None:
    """A message's search key follows a changed time only when its text is unchanged in the
    same statement: SQLite does not promise the order of two triggers on one UPDATE, and with
    the re-keying first the index's entry was deleted with the new text and the new text
    filed under the old key ("database disk image is malformed" on the index's integrity
    check; found by a review). A row whose text and time change together keeps its key (its
    place in time order is then off by the change; nothing does this but a hand-made
    update)."""
    db.execute("DROP TRIGGER IF EXISTS messages_time")
    db.execute(f"""CREATE TRIGGER messages_time AFTER UPDATE OF created_at ON messages
        WHEN new.created_at IS NOT old.created_at AND new.content IS old.content
        BEGIN UPDATE messages SET seq = {_SEQ_OF.format(at='new.created_at')}
              WHERE rowid = new.rowid; END""")


@migration
def m017_unpriced_attempts_cost_unknown(db: sqlite_utils.Database) -> None:
    """A cloud attempt with no tokens (it never reached the provider: connection refused, an
    error status; and, before it was counted, a hedge that lost) was written with cost $0
    even when its model has no known price, and `outpost usage` then showed such a model as
    "$0". Those rows become unknown (NULL), as the ledger writes them now
    (``app.storage.ledger``): a model with no known price is never $0. Priced as the ledger
    prices (the wire kind, then the provider's name); with no price table to read, nothing
    changes (the rows keep the $0 they had)."""
    # imported here: only this one repair needs the price table, and the store imports
    # these migrations on every open
    from app.accounting.metering import price_table

    try:
        table = price_table()
    except OutpostError:
        return
    found = db.execute(
        "select distinct kind, provider, model from request_log where provider != 'local' "
        "and cost_usd = 0 and coalesce(prompt_tokens, 0) + coalesce(completion_tokens, 0) = 0"
    ).fetchall()
    for kind, provider, model in found:
        if table.price_for(kind or "", model or "") or table.price_for(provider or "",
                                                                      model or ""):
            continue
        db.execute(
            "update request_log set cost_usd = null where provider = ? and model is ? "
            "and kind is ? and cost_usd = 0 "
            "and coalesce(prompt_tokens, 0) + coalesce(completion_tokens, 0) = 0",
            [provider, model, kind])


@migration
def m018_local_chats_stay_local(db: sqlite_utils.Database) -> None:
    """A conversation with no route of its own followed the default route, so one answered
    Local only (the default was local) sent its whole history to a provider once the default
    became Auto. New conversations keep the route they start under; the ones before that
    whose every reply was answered Local only are given that route now (one answered by a
    provider too was not kept private, and a single turn sent `--route local` does not make
    a conversation Local only)."""
    db.execute("""UPDATE conversations SET route = 'local'
        WHERE route IS NULL
          AND EXISTS (SELECT 1 FROM messages m WHERE m.conversation_id = conversations.id
                        AND m.role = 'assistant')
          AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.conversation_id = conversations.id
                            AND m.role = 'assistant'
                            AND m.route_reason IS NOT 'local-only conversation')""")


@migration
def m019_outbox_not_before(db: sqlite_utils.Database) -> None:
    """A provider that answered 429 with Retry-After asked to be left alone until then; that
    was kept in the memory of the process that heard it, so `outpost outbox send` (another
    process) sent the item again at once. Each item keeps the time now (``not_before``, UTC
    ISO) and what the provider asked (``retry_after``, seconds)."""
    db["outbox"].add_column("not_before", str)
    db["outbox"].add_column("retry_after", float)


@migration
def m020_outbox_follow_ups_reattached(db: sqlite_utils.Database) -> None:
    """A Cloud only answer from the outbox deleted the empty "queued" reply it stood beside
    even when the user had asked a follow-up under that reply meanwhile: the follow-up named a
    parent that was gone, so its conversation broke in two (half of it off the active path and
    out of the next turn's context). Such follow-ups move under the answer, as they do now
    (``MessageTree.answer_in_place_of``)."""
    db.execute("""UPDATE messages SET parent_id = (
            SELECT o.answer_message_id FROM outbox o
             WHERE o.placeholder_message_id = messages.parent_id AND o.state = 'sent'
               AND o.answer_message_id IN (SELECT id FROM messages)
             ORDER BY o.id LIMIT 1)
        WHERE parent_id IN (
            SELECT o.placeholder_message_id FROM outbox o
             WHERE o.state = 'sent' AND o.answer_message_id IN (SELECT id FROM messages))
          AND parent_id NOT IN (SELECT id FROM messages)""")


@migration
def m021_request_log_note(db: sqlite_utils.Database) -> None:
    """Why an attempt was sent again when it was no retry: "re-sent without temperature" (the
    attempt before it was refused for a parameter the request can go without). The attempts of
    a turn are numbered in order across retries and such re-sends; a re-send was logged as a
    second "attempt 1"."""
    db["request_log"].add_column("note", str)


@migration
def m022_outbox_queued_because(db: sqlite_utils.Database) -> None:
    """Why each item was queued ("fault was rate limiting requests and asked to wait 120 s",
    "fault sent no text within 30 s"): every message and note said the provider was
    unreachable, whatever kept it from answering. Items from before say nothing (null)."""
    db["outbox"].add_column("queued_because", str)


@migration
def m023_quota_holds(db: sqlite_utils.Database) -> None:
    """What requests still running have reserved against their profile's budgets (the prompt
    and max_tokens, the most they can cost), so two sent at once do not each get what is left
    (``app.storage.quota_holds``)."""
    db["quota_holds"].create({"key": str, "profile": str, "tokens": int, "cost_usd": float,
                              "writer": str, "created_at": str, "expires_at": str}, pk="key")
    db["quota_holds"].create_index(["profile"])


@migration
def m024_untold_interruptions(db: sqlite_utils.Database) -> None:
    """The replies a stop cut short that their profile has not been told of yet: the start
    that marks them tells only the signed-in profile, so another profile's wait here until it
    signs in (``MessageRows.take_untold_interruptions``). Replies marked before: not told."""
    db["untold_interruptions"].create({"message_id": str}, pk="message_id")
