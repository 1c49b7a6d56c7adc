"""The local database: conversations and messages in one SQLite file (via sqlite-utils).

* WAL journal, a busy timeout and ``synchronous=FULL``: the window and the CLI may write at the
  same time, and a committed message survives a crash or power loss.
* One connection per thread (sqlite3 connections belong to the thread that opened them).
* Before pending migrations run, the file is copied to ``backups/`` with SQLite's backup API;
  the first start of each day copies it too (``app.storage.backups``: rolling, each checked).
* At start, before anything is written, the file is checked (``app.storage.integrity``): a
  damaged or emptied file is refused with ``DatabaseDamaged`` (left as it is, the newest good
  backup named), and a leftover write-ahead log no running process owns is copied aside with
  the database before SQLite applies it (``Store.notes`` says so).
* Rows left in ``streaming`` by a process that is gone are marked ``interrupted`` at start-up;
  each streaming row records its writer (pid + process start time) so a live writer's row is
  never touched.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import sqlite3
import threading
from pathlib import Path
from typing import Callable, Iterator, Literal, Sequence

import sqlite_utils

from app.config import paths
from app.domain.errors import DatabaseDamaged, StorageError, UsageError
from app.domain.messages import Conversation, Message, MessageStatus, Role, new_id
from app.domain.routes import KEPT_LOCAL
from app.domain.wording import title_from
from app.storage import integrity
from app.storage.backups import DAILY, Backups, CopyDamaged
from app.storage.migrations import MIGRATIONS, Migration
from app.storage.restore import damaged_message
from app.storage.sqlite_errors import BUSY_TIMEOUT_MS, SQLITE_CORRUPT, SQLITE_NOTADB, \
    retry_when_locked, sqlite_primary_code, storage_error_class, storage_errors
from app.storage.writers import this_writer, writer_alive

log = logging.getLogger(__name__)

# whether a new message becomes its conversation's active leaf (``Store.add_message``)
Activate = Literal["always", "beside", "never"]


class _AtLeaf:
    """``Store.add_message``'s default parent: the end of the conversation's active path."""

    def __repr__(self) -> str:
        return "AT_LEAF"


AT_LEAF = _AtLeaf()


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def _make_private(path: Path) -> None:
    """Conversations are private: the database is readable by its owner only (SQLite gives the
    -wal and -shm files the same permissions)."""
    try:
        if path.exists() and path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
    except OSError:
        pass


def _row_to_message(row: dict) -> Message:
    return Message(
        id=row["id"],
        conversation_id=row["conversation_id"],
        parent_id=row["parent_id"],
        role=Role(row["role"]),
        content=row["content"] or "",
        status=MessageStatus(row["status"]),
        engine=row["engine"],
        model=row["model"],
        params=json.loads(row["params"]) if row["params"] else None,
        prompt_tokens=row["prompt_tokens"],
        completion_tokens=row["completion_tokens"],
        cached_prompt_tokens=row["cached_prompt_tokens"],
        tokens_estimated=bool(row["tokens_estimated"]),
        ttft_ms=row["ttft_ms"],
        tokens_per_s=row["tokens_per_s"],
        finish_reason=row["finish_reason"],
        error=row["error"],
        route_reason=row.get("route_reason"),
        segments=json.loads(row["segments"]) if row.get("segments") else None,
        cost_usd=row.get("cost_usd"),
        cost_estimated=bool(row.get("cost_estimated")),
        output_check=json.loads(row["output_check"]) if row.get("output_check") else None,
        candidates=json.loads(row["candidates"]) if row.get("candidates") else None,
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _row_to_conversation(row: dict) -> Conversation:
    return Conversation(id=row["id"], title=row["title"] or "", created_at=row["created_at"],
                        updated_at=row["updated_at"], system_prompt=row["system_prompt"] or "",
                        route=row.get("route"), profile=row.get("profile"),
                        sampling=json.loads(row["sampling"]) if row.get("sampling") else None,
                        active_leaf_id=row.get("active_leaf_id"),
                        pinned=bool(row.get("pinned")), target=row.get("target"),
                        target_model=row.get("target_model"))


class Store:
    """All reads and writes of Outpost's database. Safe to share between threads."""

    def __init__(self, path: Path | None = None, migrations: Sequence[Migration] = MIGRATIONS,
                 *, daily_backup: bool = True):
        """``daily_backup``: take the day's rolling backup now (False: the caller runs
        ``roll_backup`` later, e.g. the window in the background: ~1.1 s at 100k messages)."""
        self.path = Path(path) if path else paths.database_path()
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self.last_backup: Path | None = None
        self.backups = Backups(self.path)
        self.daily_backup_pending = not daily_backup  # for the caller to run roll_backup
        # what the user is told at start, one sentence each (a leftover log copied aside, …)
        self.notes: list[str] = []
        # called after messages are deleted (``forgot``): what else holds their words forgets
        # them too (the saved KV states: ``app.compose``)
        self.on_forget: list[Callable[[], None]] = []
        # True once the file passed its start-up check: only then are its states sealed
        self._healthy = False
        try:
            with storage_errors(self.path):
                self._check_at_start()
                self._healthy = True
                self._migrate(list(migrations))
                if daily_backup:
                    self.roll_backup()
        except BaseException:
            self.close()
            raise

    # -- connections -------------------------------------------------------------------------
    @property
    def db(self) -> sqlite_utils.Database:
        db = getattr(self._local, "db", None)
        if db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with storage_errors(self.path):
                conn = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_MS / 1000,
                                       isolation_level=None, check_same_thread=False)
                conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                retry_when_locked(lambda: conn.execute("PRAGMA journal_mode = WAL"))
                conn.execute("PRAGMA synchronous = FULL")
                conn.execute("PRAGMA foreign_keys = ON")
            _make_private(self.path)
            db = sqlite_utils.Database(conn)
            self._local.db = db
            with self._lock:
                self._connections.append(conn)
        return db

    def release_thread_connection(self) -> None:
        """Close this thread's connection (a short-lived thread's, as it ends: each thread that
        uses the store opens its own)."""
        db = getattr(self._local, "db", None)
        if db is None:
            return
        self._local.db = None
        with self._lock:
            if db.conn in self._connections:
                self._connections.remove(db.conn)
        with contextlib.suppress(sqlite3.Error):
            db.conn.close()

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            closed = bool(self._connections)
            self._connections.clear()
        self._local = threading.local()
        if closed and self._healthy:  # the files as this process leaves them (see integrity)
            integrity.write_seal(self.path)

    def transaction(self):
        """``with store.transaction() as db:`` one write transaction (BEGIN IMMEDIATE), for the
        core modules that own a table of their own (``app.storage.outbox``)."""
        return self._tx()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite_utils.Database]:
        db = self.db
        with storage_errors(self.path):
            retry_when_locked(lambda: db.conn.execute("BEGIN IMMEDIATE"))
            try:
                yield db
            except BaseException:
                db.conn.execute("ROLLBACK")
                raise
            db.conn.execute("COMMIT")
        if self._healthy:
            integrity.write_seal(self.path)

    # -- migrations --------------------------------------------------------------------------
    def applied_migrations(self) -> list[str]:
        db = self.db
        if "_migrations" not in db.table_names():
            return []
        return [row["name"] for row in db["_migrations"].rows_where(order_by="rowid")]

    def _migrate(self, migrations: list[Migration]) -> None:
        with self._tx() as tx:
            tx["_migrations"].create({"name": str, "applied_at": str}, pk="name",
                                     if_not_exists=True)
        db = self.db
        done = set(self.applied_migrations())
        pending = [m for m in migrations if m.__name__ not in done]
        if not pending:
            return
        if any(t != "_migrations" for t in db.table_names()):
            self.last_backup = self.backup(f"before-{pending[0].__name__}")
        for fn in pending:
            with self._tx() as tx:
                # Re-checked inside the write lock: the window and the CLI may start together.
                if tx["_migrations"].count_where("name = ?", [fn.__name__]):
                    continue
                fn(tx)
                tx["_migrations"].insert({"name": fn.__name__, "applied_at": now_iso()})

    def backup(self, label: str) -> Path:
        """A checked copy of the database in the backups folder (``app.storage.backups``: 0600
        in a 0700 folder, written whole or not at all). A copy that fails its check means the
        database itself is damaged: DatabaseDamaged."""
        with storage_errors(self.backups.where):
            try:
                return self.backups.write(self.db.conn, label)
            except CopyDamaged as exc:
                raise self._damaged(str(exc)) from None

    # -- the start-up check ------------------------------------------------------------------
    def _check_at_start(self) -> None:
        """Refuse a damaged or emptied file before anything is written to it, and copy a
        leftover write-ahead log aside before SQLite applies it (``app.storage.integrity``)."""
        path = self.path
        if not path.exists():
            return  # a new install
        if path.stat().st_size == 0:
            # a database Outpost made is never empty once opened; with backups of it (or a
            # seal that knew it bigger) this is a lost file, not a new one
            if integrity.sealed_size(path) or self.backups.all():
                raise self._damaged("it is empty (0 bytes)")
            self.notes.append(f"The database {path} was an empty file (0 bytes) and has no "
                              "backup, so a new database was started in it.")
            return
        if integrity.sealed(path):
            return  # only Outpost wrote to it since it was last checked
        try:
            if integrity.wal_has_frames(path):
                self._set_aside_leftover_wal()
            problem = integrity.quick_check(path, BUSY_TIMEOUT_MS / 1000)
        except sqlite3.DatabaseError as exc:
            if sqlite_primary_code(exc) not in (SQLITE_CORRUPT, SQLITE_NOTADB):
                raise
            problem = str(exc)
        if problem is not None:
            raise self._damaged(problem)

    def _set_aside_leftover_wal(self) -> None:
        """A ``-wal`` with frames that no process has open and no seal vouches for may be
        another copy's: the database, the log and its ``-shm`` are copied to the backups
        folder as they are (while no other process can open them), then SQLite applies it."""
        with integrity.held_alone(self.path) as alone:
            if not alone:
                return  # a running Outpost owns it: its log, applied as usual
            kept = self.backups.set_aside("leftover-wal")
        self.notes.append(
            f"A write-ahead log that no running Outpost owns was beside {self.path} (it may be "
            f"another copy's), so the database and the log were copied to {kept} before it "
            f"was applied; if conversations are missing, `outpost backup restore {kept.name}` "
            "brings that copy back.")

    def _damaged(self, problem: str) -> DatabaseDamaged:
        """The refusal of a damaged file, naming the newest good backup."""
        self._healthy = False  # nothing more is sealed (nor, as the caller raises, written)
        good = self.backups.newest_good()
        return DatabaseDamaged(damaged_message(self.path, problem, good, self.backups.where),
                               str(self.path), problem, str(good.path) if good else None,
                               str(self.backups.where))

    def roll_backup(self) -> Path | None:
        """The day's rolling backup, on the first start of the day that finds a conversation
        (None: not due, or nothing to keep); only the newest ``KEEP_DAILY`` are kept. Its check
        reads every page, so damage the start-up check skipped (the seal matched) is found
        here: DatabaseDamaged. Safe from any thread (each has its own connection)."""
        if not self.backups.daily_due():
            return None
        with storage_errors(self.path):
            if not self.db.execute("SELECT EXISTS (SELECT 1 FROM conversations)"
                                   ).fetchone()[0]:
                return None
        made = self.backup(DAILY)
        self.backups.prune_daily()
        return made

    # -- conversations -----------------------------------------------------------------------
    def create_conversation(self, title: str = "New chat", system_prompt: str = "",
                            route: str | None = None, profile: str | None = None,
                            sampling: dict | None = None) -> Conversation:
        stamp = now_iso()
        row = {"id": new_id(), "title": title, "system_prompt": system_prompt,
               "created_at": stamp, "updated_at": stamp, "route": route, "profile": profile,
               "sampling": json.dumps(sampling) if sampling is not None else None}
        with self._tx() as db:
            db["conversations"].insert(row)
        return _row_to_conversation(row)

    def get_conversation(self, conversation_id: str) -> Conversation:
        with storage_errors(self.path):
            rows = list(self.db["conversations"].rows_where("id = ?", [conversation_id]))
        if not rows:
            raise UsageError(f"There is no conversation with id {conversation_id!r}.")
        return _row_to_conversation(rows[0])

    def list_conversations(self, profile: str | None = None) -> list[Conversation]:
        """Newest first; ``profile``: only that profile's (None: everyone's)."""
        with storage_errors(self.path):
            where, params = ("profile = ?", [profile]) if profile is not None else (None, None)
            rows = self.db["conversations"].rows_where(where, params,
                                                       order_by="updated_at desc, rowid desc")
            return [_row_to_conversation(r) for r in rows]

    def rename_conversation(self, conversation_id: str, title: str) -> None:
        title = title.strip()
        if not title:
            raise UsageError("A conversation title cannot be empty.")
        self.get_conversation(conversation_id)
        with self._tx() as db:
            db["conversations"].update(conversation_id, {"title": title})

    def set_conversation_route(self, conversation_id: str, route: str | None) -> None:
        """auto / local / cloud, or None for the settings' default. Local only also stops what
        this conversation has queued in the outbox (``KEPT_LOCAL``): a message the user has
        since made private is never sent (``app.chat.outbox_sender`` checks again)."""
        if route not in (None, "auto", "local", "cloud"):
            raise UsageError(f"Route must be auto, local or cloud; got {route!r}.")
        self.get_conversation(conversation_id)
        with self._tx() as db:
            db["conversations"].update(conversation_id, {"route": route})
            if route == "local":
                db.execute("UPDATE outbox SET state = 'failed', last_error = ?, updated_at = ? "
                           "WHERE conversation_id = ? AND state = 'queued'",
                           [KEPT_LOCAL, now_iso(), conversation_id])

    def set_pinned(self, conversation_id: str, pinned: bool) -> None:
        """Pin a conversation to the top of the list (or unpin it)."""
        self.get_conversation(conversation_id)
        with self._tx() as db:
            db["conversations"].update(conversation_id, {"pinned": int(bool(pinned))})

    def set_target(self, conversation_id: str, target: str, model: str | None) -> None:
        """Who answers this conversation: "local" or "provider:NAME", and that model."""
        if target != "local" and not target.startswith("provider:"):
            raise UsageError(f"{target!r} is not a target: 'local' or 'provider:NAME'.")
        self.get_conversation(conversation_id)
        with self._tx() as db:
            db["conversations"].update(conversation_id, {"target": target,
                                                         "target_model": model or None})

    def set_conversation_sampling(self, conversation_id: str, sampling: dict | None,
                                  system_prompt: str | None = None) -> None:
        """The conversation's knobs (None: back to the defaults), and its system prompt."""
        self.get_conversation(conversation_id)
        fields = {"sampling": json.dumps(sampling) if sampling is not None else None}
        if system_prompt is not None:
            fields["system_prompt"] = system_prompt
        with self._tx() as db:
            db["conversations"].update(conversation_id, fields)

    def delete_conversation(self, conversation_id: str) -> None:
        """Delete a conversation with its messages and queued requests; refused while one of
        its replies is being written (by this process or another: the window and the CLI)."""
        self.get_conversation(conversation_id)
        with self._tx() as db:
            writers = db.execute(
                "SELECT writer, id FROM messages WHERE conversation_id = ? AND status = ?",
                [conversation_id, MessageStatus.STREAMING.value]).fetchall()
            if any(writer_alive(writer, message_id) for writer, message_id in writers):
                raise UsageError("A reply in this conversation is still being written; stop "
                                 "it first, then delete the conversation.")
            db["outbox"].delete_where("conversation_id = ?", [conversation_id])
            db["messages"].delete_where("conversation_id = ?", [conversation_id])
            db["conversations"].delete(conversation_id)
        self.forgot()

    def forgot(self) -> None:
        """Messages were deleted: everything registered in ``on_forget`` drops what it kept of
        them (a failure there is logged: the delete itself is done)."""
        for forget in self.on_forget:
            try:
                forget()
            except Exception:  # noqa: BLE001 - a cache's failure must not undo a delete
                log.exception("could not forget the deleted messages everywhere")

    def touch_conversation(self, conversation_id: str) -> None:
        with self._tx() as db:
            db["conversations"].update(conversation_id, {"updated_at": now_iso()})

    # -- messages ----------------------------------------------------------------------------
    def add_message(self, conversation_id: str, role: Role, content: str,
                    status: MessageStatus = MessageStatus.COMPLETE,
                    parent_id: str | None | _AtLeaf = AT_LEAF,
                    engine: str | None = None, model: str | None = None,
                    params: dict | None = None, activate: Activate = "always",
                    message_id: str | None = None) -> Message:
        """Insert and commit one message (and bump the conversation's updated_at).

        ``parent_id``: the message it follows (None: a root); by default the end of the active
        path, so adding messages one after another makes one path. ``message_id``: its id,
        when the caller needs it before the row exists (a turn says it writes the row first).

        ``activate``: whether the new message becomes the conversation's active leaf:
        ``"always"`` (a new turn, a retry); ``"beside"`` only when the active path ends at its
        parent or at one of its siblings, so an answer that arrives late (the outbox) never
        pulls the user off a path they went on with; ``"never"``."""
        stamp = now_iso()
        row = {
            "id": message_id or new_id(), "conversation_id": conversation_id,
            "parent_id": parent_id, "role": role.value, "content": content, "status": status.value, "engine": engine,
            "model": model, "params": json.dumps(params) if params is not None else None,
            "prompt_tokens": None, "completion_tokens": None, "cached_prompt_tokens": None,
            "tokens_estimated": 0, "ttft_ms": None, "tokens_per_s": None, "finish_reason": None,
            "error": None, "route_reason": None, "segments": None, "cost_usd": None,
            "cost_estimated": 0,
            "writer": this_writer() if status is MessageStatus.STREAMING else None,
            "created_at": stamp, "updated_at": stamp,
        }
        with self._tx() as db:
            found = list(db.query("select active_leaf_id from conversations where id = ?",
                                  [conversation_id]))
            leaf = found[0]["active_leaf_id"] if found else None
            if isinstance(parent_id, _AtLeaf):
                parent_id = row["parent_id"] = leaf
            db["messages"].insert(row)
            fields = {"updated_at": stamp}
            if activate == "always" or activate == "beside" and (
                    leaf is None or leaf == parent_id or
                    self._parent_in(db, leaf) == parent_id):
                fields["active_leaf_id"] = row["id"]
            db["conversations"].update(conversation_id, fields)
        return _row_to_message(row)

    @staticmethod
    def _parent_in(db: sqlite_utils.Database, message_id: str) -> str | None:
        found = list(db.query("select parent_id from messages where id = ?", [message_id]))
        return found[0]["parent_id"] if found else None

    def update_message(self, message_id: str, **fields) -> None:
        if "status" in fields:
            status = MessageStatus(fields["status"])
            fields["status"] = status.value
            if status is not MessageStatus.STREAMING:
                fields["writer"] = None
        for name in ("params", "segments", "output_check", "candidates"):
            if name in fields and fields[name] is not None:
                fields[name] = json.dumps(fields[name])
        for name in ("tokens_estimated", "cost_estimated"):
            if name in fields:
                fields[name] = int(bool(fields[name]))
        fields["updated_at"] = now_iso()
        with self._tx() as db:
            try:
                db["messages"].update(message_id, fields)
            except sqlite_utils.db.NotFoundError:
                raise UsageError(f"The message {message_id} is not there any more (its "
                                 "conversation was deleted, maybe in another Outpost).") from None

    def delete_empty_reply(self, message_id: str | None) -> None:
        """Drop an assistant row that never got any text (a queued request's failed attempt);
        a row with text is never deleted here."""
        if message_id is None:
            return
        with self._tx() as db:
            found = list(db.query("select conversation_id, parent_id from messages where id = ? "
                                  "and role = 'assistant' and content = ''", [message_id]))
            if not found:
                return
            db.execute("delete from messages where id = ?", [message_id])
            # the active path ended there: it now ends at the newest remaining sibling, else
            # at the parent
            conversation_id, parent_id = found[0]["conversation_id"], found[0]["parent_id"]
            db.execute(
                "update conversations set active_leaf_id = coalesce((select id from messages "
                "where conversation_id = ? and parent_id is ? order by created_at desc, rowid "
                "desc limit 1), ?) where id = ? and active_leaf_id = ?",
                [conversation_id, parent_id, parent_id, conversation_id, message_id])

    def get_message(self, message_id: str) -> Message:
        with storage_errors(self.path):
            rows = list(self.db["messages"].rows_where("id = ?", [message_id]))
        if not rows:
            raise UsageError(f"There is no message with id {message_id!r}.")
        return _row_to_message(rows[0])

    def messages(self, conversation_id: str) -> list[Message]:
        """Every message of the conversation, all branches, oldest first."""
        with storage_errors(self.path):
            rows = self.db["messages"].rows_where("conversation_id = ?", [conversation_id],
                                                  order_by="created_at, rowid")
            return [_row_to_message(r) for r in rows]

    def branch(self, conversation_id: str, leaf_id: str | None = None,
               messages: list[Message] | None = None) -> list[Message]:
        """The messages from the root to ``leaf_id`` (default: the conversation's active leaf,
        else its newest message): exactly what a turn answering that message sees.
        ``messages``: the conversation's, already read (``messages()``), not read again."""
        if messages is None:
            messages = self.messages(conversation_id)
        if not messages:
            return []
        by_id = {m.id: m for m in messages}
        if leaf_id is not None and leaf_id not in by_id:
            raise UsageError(f"There is no message {leaf_id!r} in the conversation "
                             f"{conversation_id}.")
        if leaf_id is None:
            leaf_id = self.get_conversation(conversation_id).active_leaf_id
        leaf = by_id.get(leaf_id) if leaf_id else None
        node: Message | None = leaf or messages[-1]
        path: list[Message] = []
        seen: set[str] = set()
        while node is not None and node.id not in seen:  # (no cycle can be written; be safe)
            seen.add(node.id)
            path.append(node)
            node = by_id.get(node.parent_id) if node.parent_id else None
        return path[::-1]

    def siblings(self, message: Message) -> list[Message]:
        """The message and the other answers to its parent (its branches), oldest first."""
        with storage_errors(self.path):
            rows = self.db["messages"].rows_where(
                "conversation_id = ? and parent_id is ?", [message.conversation_id,
                                                           message.parent_id],
                order_by="created_at, rowid")
            return [_row_to_message(r) for r in rows]

    def delete_subtree(self, message_id: str) -> list[str]:
        """Delete a message and everything below it (its replies, their follow-ups, every
        branch); returns the ids deleted. When the active path went through it, it now ends at
        the newest remaining sibling's path, else at the parent. A message whose reply is
        still streaming cannot be deleted."""
        message = self.get_message(message_id)
        everything = self.messages(message.conversation_id)
        children: dict[str | None, list[Message]] = {}
        for m in everything:
            children.setdefault(m.parent_id, []).append(m)
        doomed, stack = [], [message]
        while stack:
            node = stack.pop()
            doomed.append(node)
            stack.extend(children.get(node.id, []))
        if any(self.being_written(m) for m in doomed):
            raise UsageError("A reply under this message is still being written; stop it "
                             "first.")
        ids = [m.id for m in doomed]
        conversation = self.get_conversation(message.conversation_id)
        with self._tx() as db:
            marks = ", ".join("?" * len(ids))
            # a queued request for a deleted question is not sent any more
            db.execute(f"update outbox set state = 'cancelled' where user_message_id in ({marks}) "
                       "and state in ('queued', 'failed')", ids)
            db.execute(f"update outbox set answer_message_id = null where answer_message_id in "
                       f"({marks})", ids)
            db.execute(f"delete from messages where id in ({marks})", ids)
        if conversation.active_leaf_id in ids:
            siblings = [m for m in children.get(message.parent_id, []) if m.id != message.id]
            target = siblings[-1].id if siblings else message.parent_id
            if target is None:
                with self._tx() as db:
                    db["conversations"].update(conversation.id, {"active_leaf_id": None})
            else:
                self.set_active(conversation.id, target)
        self.forgot()
        return ids

    def being_written(self, message: Message) -> bool:
        """Is ``message`` a reply a live turn is still writing (here or in another process)?"""
        return message.status is MessageStatus.STREAMING and \
            writer_alive(self._writer_of(message.id), message.id)

    def _writer_of(self, message_id: str) -> str | None:
        rows = list(self.db.query("select writer from messages where id = ?", [message_id]))
        return rows[0]["writer"] if rows else None

    def keep_candidate(self, message_id: str, index: int) -> Message:
        """Best-of-n / self-consistency: candidate ``index`` of reply ``message_id`` becomes a
        version of its own beside it ("keep this one"), and the active one."""
        reply = self.get_message(message_id)
        candidates = (reply.candidates or {}).get("candidates") or []
        chosen = next((c for c in candidates if c.get("index") == index), None)
        if chosen is None:
            raise UsageError(f"The reply {message_id} has no candidate {index}"
                             + (f" (it has {', '.join(str(c['index']) for c in candidates)})."
                                if candidates else "; it was a single sample."))
        params = dict(reply.params or {}, seed=chosen.get("seed"),
                      kept_candidate=index)
        kept = self.add_message(reply.conversation_id, Role.ASSISTANT, chosen.get("text") or "",
                                parent_id=reply.parent_id, engine=reply.engine,
                                model=reply.model, params=params)
        self.update_message(kept.id, finish_reason=chosen.get("finish"),
                            completion_tokens=chosen.get("completion_tokens"),
                            route_reason=f"candidate {index + 1} of the best-of reply, kept")
        return self.get_message(kept.id)

    def fork(self, message_id: str, profile: str | None) -> Conversation:
        """A new conversation (of ``profile``) holding copies of the path up to ``message_id``,
        with the original's system prompt, route and knobs; the original is unchanged."""
        source = self.get_message(message_id)
        original = self.get_conversation(source.conversation_id)
        path = self.branch(original.id, message_id)
        stamp = now_iso()
        fork = {"id": new_id(), "title": f"{self._fork_title(original, path)} (fork)",
                "system_prompt": original.system_prompt, "created_at": stamp,
                "updated_at": stamp, "route": original.route, "profile": profile,
                "sampling": json.dumps(original.sampling) if original.sampling is not None
                else None, "active_leaf_id": None}
        columns = [c.name for c in self.db["messages"].columns]
        with self._tx() as db:
            db["conversations"].insert(fork)
            parent = None
            for message in path:
                rows = list(db.query("select * from messages where id = ?", [message.id]))
                row = {k: v for k, v in rows[0].items() if k in columns}
                row.update(id=new_id(), conversation_id=fork["id"], parent_id=parent,
                           writer=None)
                db["messages"].insert(row)
                parent = row["id"]
            db["conversations"].update(fork["id"], {"active_leaf_id": parent})
        return self.get_conversation(fork["id"])

    def _fork_title(self, original: Conversation, path: list[Message]) -> str:
        """A fork's title: the original's, unless that was made from its first message and the
        fork starts from another one (a first message edited): then from the fork's own."""
        first = next((m for m in path if m.role is Role.USER), None)
        roots = [m for m in self.messages(original.id)
                 if m.parent_id is None and m.role is Role.USER]
        made_from_first = bool(roots) and original.title == title_from(roots[0].content)
        return title_from(first.content) if made_from_first and first is not None \
            else original.title

    def set_active(self, conversation_id: str, message_id: str) -> list[Message]:
        """Make the path through ``message_id`` the active one (it continues down each newest
        child to a leaf); returns that path."""
        messages = self.messages(conversation_id)
        if message_id not in {m.id for m in messages}:
            raise UsageError(f"There is no message {message_id!r} in the conversation "
                             f"{conversation_id}.")
        children: dict[str | None, list[Message]] = {}
        for m in messages:
            children.setdefault(m.parent_id, []).append(m)
        leaf = message_id
        while children.get(leaf):
            leaf = children[leaf][-1].id  # the newest branch below
        with self._tx() as db:
            db["conversations"].update(conversation_id, {"active_leaf_id": leaf})
        return self.branch(conversation_id, leaf)

    # Full-text search, newest first, in bounded windows (shared by `history search` and the
    # window's search, app.storage.search). Ranking every match by bm25 made a very common
    # word cost ~0.5 s at a million messages (every hit scored, then sorted), and FTS5's
    # ORDER BY rowid DESC is no cure: it reads a term's whole doclist to walk it backwards
    # (~0.85 s for "the"). FTS5 does seek to a rowid range cheaply, so the search walks back
    # from the newest message in windows of rowids, each sized from the last one's density of
    # matches to hold about SEARCH_TARGET of them: a common word needs one small window, a rare
    # one a few growing ones. A page's matches are filtered by profile or conversation through
    # their rowids only. At most SEARCH_WINDOWS windows are read (bench/search.py has the
    # figures).
    SEARCH_TARGET = 400
    SEARCH_WINDOWS = 40

    def search_rowids(self, query: str, limit: int = 50, profile: str | None = None,
                      conversation_id: str | None = None) -> list[int]:
        """The rowids of the newest messages matching the FTS5 ``query`` (in that profile or
        conversation), newest first, at most ``limit``."""
        # the scope is checked on a window's rowids only: "+" keeps SQLite from walking the
        # conversation index over every message of the profile instead (60 ms at a million)
        scope, args = [], []
        if conversation_id is not None:
            scope.append("+m.conversation_id = ?")
            args.append(conversation_id)
        if profile is not None:
            scope.append("c.profile = ?")
            args.append(profile)
        found: list[int] = []
        with storage_errors(self.path):
            try:
                top = self.db.execute("SELECT max(rowid) FROM messages").fetchone()[0]
                high = (top or 0) + 1
                window = 2 * self.SEARCH_TARGET
                for _ in range(self.SEARCH_WINDOWS):
                    if high <= 0 or len(found) >= limit:
                        break
                    low = max(0, high - window)
                    page = sorted((r[0] for r in self.db.execute(
                        "SELECT rowid FROM messages_fts WHERE messages_fts MATCH ? "
                        "AND rowid >= ? AND rowid < ?", [query, low, high]).fetchall()),
                        reverse=True)
                    if page and scope:
                        marks = ",".join("?" * len(page))
                        kept = {r[0] for r in self.db.execute(
                            "SELECT m.rowid FROM messages m CROSS JOIN conversations c ON "
                            f"c.id = m.conversation_id WHERE m.rowid IN ({marks}) AND "
                            + " AND ".join(scope), page + args).fetchall()}
                        page = [rowid for rowid in page if rowid in kept]
                    found += page
                    # the next window: about SEARCH_TARGET matches at this one's density
                    density = len(page) / (high - low)
                    grow = self.SEARCH_TARGET / (density * window) if density else 8.0
                    window = int(window * min(64.0, max(1.0, grow)))
                    high = low
            except sqlite3.OperationalError as exc:
                # FTS5 reports query syntax as OperationalError; disk/lock problems stay
                # storage errors
                if storage_error_class(exc) is StorageError:  # SQLITE_ERROR: the syntax
                    raise UsageError(f"The search {query!r} is not valid full-text search "
                                     f"syntax ({exc}); put words in double quotes to search "
                                     "them as they are.") from None
                raise
        return found[:limit]

    def search(self, query: str, limit: int = 50, profile: str | None = None) -> list[Message]:
        """Full-text search over message content (FTS5 query syntax), newest first;
        ``profile``: only in that profile's conversations."""
        rowids = self.search_rowids(query, limit, profile)
        if not rowids:
            return []
        marks = ",".join("?" * len(rowids))
        with storage_errors(self.path):
            rows = {r["rowid"]: r for r in self.db.query(
                f"SELECT rowid, * FROM messages WHERE rowid IN ({marks})", rowids)}
        return [_row_to_message(rows[r]) for r in rowids if r in rows]

    def mark_orphaned_streaming(self) -> int:
        """Mark rows still 'streaming' whose writer process is gone as 'interrupted'."""
        with storage_errors(self.path):
            rows = list(self.db["messages"].rows_where("status = ?",
                                                       [MessageStatus.STREAMING.value]))
        orphans = [r["id"] for r in rows if not writer_alive(r["writer"], r["id"])]
        for message_id in orphans:
            self.update_message(message_id, status=MessageStatus.INTERRUPTED,
                                finish_reason="interrupted",
                                error="The app stopped before this reply was finished.")
        return len(orphans)

    # -- request log -------------------------------------------------------------------------
    def log_attempt(self, record, **ledger) -> None:
        """Store one ``engines.http_policy.AttemptRecord`` (called from engine threads);
        ``ledger``: profile, route, conversation_id, cost_usd, cost_estimated (see
        ``app.storage.ledger``, which knows them from the turn)."""
        with self._tx() as db:
            db["request_log"].insert({
                "idempotency_key": record.idempotency_key, "provider": record.provider,
                "model": record.model, "attempt": record.attempt, "status": record.status,
                "latency_ms": round(record.latency_ms, 1), "error_kind": record.error_kind,
                "rate_limits": json.dumps(record.rate_limits),
                "outcome": record.outcome, "created_at": now_iso(),
                "kind": record.kind or None,
                "conversation_id": ledger.get("conversation_id"),
                "prompt_tokens": record.prompt_tokens,
                "completion_tokens": record.completion_tokens,
                "cached_prompt_tokens": record.cached_prompt_tokens,
                "tokens_estimated": int(record.tokens_estimated),
                "ttft_ms": record.ttft_ms,
                "profile": ledger.get("profile"), "route": ledger.get("route"),
                "cost_usd": ledger.get("cost_usd"),
                "cost_estimated": int(bool(ledger.get("cost_estimated")))})

    def request_log(self, idempotency_key: str | None = None) -> list[dict]:
        with storage_errors(self.path):
            if idempotency_key is None:
                rows = self.db["request_log"].rows_where(order_by="id")
            else:
                rows = self.db["request_log"].rows_where("idempotency_key = ?",
                                                         [idempotency_key], order_by="id")
            return [dict(r, rate_limits=json.loads(r["rate_limits"] or "{}")) for r in rows]

    def integrity_check(self) -> str:  # (the full check, for tests and by hand)
        with storage_errors(self.path):
            return self.db.execute("PRAGMA integrity_check").fetchone()[0]


