"""The conversations table: creating, reading, renaming, a conversation's settings (route,
pin, target, knobs), deleting; and ``forgot``, run after any delete of messages: their words
leave the file (``app.storage.erasure``) and every cache."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable

import sqlite_utils

from app.config.providers import is_target
from app.domain.errors import UsageError
from app.domain.messages import Conversation, MessageStatus, new_id
from app.domain.routes import (
    KEPT_LOCAL,
    kept_local_reply,
    no_longer_local,
    no_longer_local_reply,
)
from app.storage import deletions, erasure, integrity
from app.storage.connections import Connections
from app.storage.rows import now_iso, row_to_conversation
from app.storage.sqlite_errors import storage_errors
from app.storage.writers import writer_alive

log = logging.getLogger(__name__)


class ConversationRows(Connections):
    """The conversations of ``app.storage.store.Store``, one row each."""

    def __init__(self, path: Path):
        super().__init__(path)
        # called after messages are deleted (``forgot``): what else holds their words forgets
        # them too (the saved KV states: ``app.compose``)
        self.on_forget: list[Callable[[], None]] = []
        # runs the erasing of deleted words from the file (``erase_deleted``): here, now, by
        # default; the window hands it to a background thread (it rewrites the search index)
        self.run_erasure: Callable[[Callable[[], None]], None] = lambda erase: erase()

    def create_conversation(self, title: str = "New chat", system_prompt: str = "",
                            route: str | None = None, profile: str | None = None,
                            sampling: dict | None = None) -> Conversation:
        stamp = now_iso()
        row = {"id": new_id(), "title": title, "system_prompt": system_prompt,
               "created_at": stamp, "updated_at": stamp, "route": route, "profile": profile,
               "sampling": json.dumps(sampling) if sampling is not None else None}
        with self._tx() as db:
            db["conversations"].insert(row)
        return row_to_conversation(row)

    def get_conversation(self, conversation_id: str) -> Conversation:
        with storage_errors(self.path):
            rows = list(self.db["conversations"].rows_where("id = ?", [conversation_id]))
        if not rows:
            raise UsageError(f"There is no conversation with id {conversation_id!r}.")
        return row_to_conversation(rows[0])

    def list_conversations(self, profile: str | None = None) -> list[Conversation]:
        """Newest first; ``profile``: only that profile's (None: everyone's)."""
        with storage_errors(self.path):
            where, params = ("profile = ?", [profile]) if profile is not None else (None, None)
            rows = self.db["conversations"].rows_where(where, params,
                                                       order_by="updated_at desc, rowid desc")
            return [row_to_conversation(r) for r in rows]

    def rename_conversation(self, conversation_id: str, title: str) -> None:
        title = title.strip()
        if not title:
            raise UsageError("A conversation title cannot be empty.")
        self.get_conversation(conversation_id)
        with self._tx() as db:
            self._change(db, conversation_id, {"title": title})

    def set_conversation_route(self, conversation_id: str, route: str | None,
                               default_route: str | None = None) -> int:
        """auto / local / cloud, or None for the settings' default (``default_route``, when
        the caller knows it: what the conversation follows from now). Local only also stops
        what this conversation has queued in the outbox (``KEPT_LOCAL``): a message the user
        has since made private is never sent (``app.chat.outbox_sender`` checks again). Auto
        or Cloud only again: those items stay failed (a retry sends them), no longer saying
        the conversation is Local only. The reply that stands for such an item (Cloud only: it
        said the message is sent once its provider can be reached) says so too. A reset to
        the default does the same for the route the default is. Returns how many items
        changed (a window showing the conversation shows it again)."""
        if route not in (None, "auto", "local", "cloud"):
            raise UsageError(f"Route must be auto, local or cloud; got {route!r}.")
        self.get_conversation(conversation_id)
        with self._tx() as db:
            self._change(db, conversation_id, {"route": route})
            return _items_follow_route(db, conversation_id, route or default_route)

    def follow_default_route(self, default_route: str) -> list[str]:
        """The settings' default route is ``default_route`` now: the outbox items of every
        conversation that follows it (no route of its own) go with it, as
        ``set_conversation_route`` has them (Local only: not sent; else no longer saying so).
        Returns the conversations whose items changed."""
        with self._tx() as db:
            following = [row[0] for row in db.execute(
                "SELECT DISTINCT c.id FROM conversations c JOIN outbox o ON "
                "o.conversation_id = c.id WHERE c.route IS NULL").fetchall()]
            return [conversation_id for conversation_id in following
                    if _items_follow_route(db, conversation_id, default_route)]

    def set_pinned(self, conversation_id: str, pinned: bool) -> None:
        """Pin a conversation to the top of the list (or unpin it)."""
        self.get_conversation(conversation_id)
        with self._tx() as db:
            self._change(db, conversation_id, {"pinned": int(bool(pinned))})

    def set_target(self, conversation_id: str, target: str, model: str | None) -> None:
        """Who answers this conversation: "local" or "provider:NAME", and that model."""
        if target is None or not is_target(target):
            raise UsageError(f"{target!r} is not a target: 'local' or 'provider:NAME'.")
        self.get_conversation(conversation_id)
        with self._tx() as db:
            self._change(db, conversation_id, {"target": target, "target_model": model or None})

    def local_model_targets(self) -> list[str]:
        """Every local model a conversation remembers (``set_target``'s model with "local"),
        once each: a name, a file name or a path, as it was asked for."""
        with storage_errors(self.path):
            rows = self.db.execute("SELECT DISTINCT target_model FROM conversations "
                                   "WHERE target = 'local' AND target_model IS NOT NULL")
            return [row[0] for row in rows.fetchall()]

    def retarget_local_model(self, old: str, new: str | None) -> int:
        """The conversations that remember the local model ``old`` remember ``new`` instead
        (None: the configured one), as a model is renamed or removed; how many. Their
        ``updated_at`` moves, as with every change (see ``_change``)."""
        with self._tx() as db:
            cursor = db.execute("UPDATE conversations SET target_model = ?, updated_at = ? "
                                "WHERE target = 'local' AND target_model = ?",
                                [new, now_iso(), old])
            return cursor.rowcount

    def set_conversation_sampling(self, conversation_id: str, sampling: dict | None,
                                  system_prompt: str | None = None) -> None:
        """The conversation's knobs (None: back to the defaults), and its system prompt."""
        self.get_conversation(conversation_id)
        fields = {"sampling": json.dumps(sampling) if sampling is not None else None}
        if system_prompt is not None:
            fields["system_prompt"] = system_prompt
        with self._tx() as db:
            self._change(db, conversation_id, fields)

    @staticmethod
    def _change(db: sqlite_utils.Database, conversation_id: str, fields: dict) -> bool:
        """Write ``fields`` of a conversation, inside the caller's transaction, and move its
        ``updated_at`` when one of them changes (whether one did). Every change moves it: a
        restore over a damaged file brings a conversation over from that file only when it is
        newer than the backup's (``app.storage.salvage``), and a rename, a pin or a branch
        switch made since was lost. A write that changes nothing (the knobs saved again as a
        conversation opens) leaves it, and the conversation's place in the list, alone."""
        names = list(fields)
        found = db.execute(f"SELECT {', '.join(names)} FROM conversations WHERE id = ?",
                           [conversation_id]).fetchone()
        if found is None or dict(zip(names, found)) == fields:
            return False
        db["conversations"].update(conversation_id, dict(fields, updated_at=now_iso()))
        return True

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
            deletions.drop_conversations(db.conn, [conversation_id], now_iso())  # a tombstone too
        self.forgot()

    def forgot(self) -> None:
        """Messages were deleted: their words leave the file (``erase_deleted``, through
        ``run_erasure``), and everything registered in ``on_forget`` drops what it kept of
        them (a failure there is logged: the delete itself is done)."""
        for forget in self.on_forget:
            try:
                forget()
            except Exception:  # noqa: BLE001 - a cache's failure must not undo a delete
                log.exception("could not forget the deleted messages everywhere")
        self.run_erasure(self.erase_deleted)

    def erase_deleted(self) -> None:
        """What deleted rows left in the file goes: the search index is merged (its deleted
        entries dropped; freed pages are zeroed, ``secure_delete``), a step per transaction
        so that a reply being saved meanwhile waits one step, not the whole merge, and the
        write-ahead log emptied (``app.storage.erasure``). Safe from any thread."""
        for _ in range(erasure.MOST_MERGE_STEPS):
            with self._tx() as db:
                if not erasure.merge_search_index_step(db):
                    break
        with storage_errors(self.path):
            erasure.empty_log(self.db.conn)
        if self._healthy:  # the checkpoint changed the files after the commit's seal
            integrity.write_seal(self.path)

    def touch_conversation(self, conversation_id: str) -> None:
        with self._tx() as db:
            db["conversations"].update(conversation_id, {"updated_at": now_iso()})


def _items_follow_route(db, conversation_id: str, route: str | None) -> int:
    """The conversation's outbox items after its route became ``route`` (None: not known
    here): Local only fails the queued ones (``KEPT_LOCAL``), Auto or Cloud only has those
    say they are not Local only any more; their replies say so too. How many changed."""
    if route == "local":
        changed = db.execute(
            "SELECT id, placeholder_message_id FROM outbox WHERE conversation_id = ? "
            "AND state = 'queued'", [conversation_id]).fetchall()
        for item_id, placeholder in changed:
            db.execute("UPDATE outbox SET state = 'failed', last_error = ?, "
                       "updated_at = ? WHERE id = ?", [KEPT_LOCAL, now_iso(), item_id])
            _say_on_reply(db, placeholder, kept_local_reply(item_id))
        return len(changed)
    if route is None:
        return 0
    changed = db.execute(
        "SELECT id, placeholder_message_id FROM outbox WHERE conversation_id = ? "
        "AND state = 'failed' AND last_error = ?", [conversation_id, KEPT_LOCAL]).fetchall()
    for item_id, placeholder in changed:
        db.execute("UPDATE outbox SET last_error = ?, updated_at = ? WHERE id = ?",
                   [no_longer_local(item_id), now_iso(), item_id])
        _say_on_reply(db, placeholder, no_longer_local_reply(item_id))
    return len(changed)


def _say_on_reply(db, message_id: str | None, text: str) -> None:
    """The empty reply that stands for an outbox item (Cloud only) says ``text`` (as
    ``app.storage.outbox.Outbox._say_on_placeholder`` does; here inside the route's own
    transaction). None, or a reply deleted meanwhile: nothing to say it on."""
    if message_id is not None:
        db.execute("UPDATE messages SET error = ?, updated_at = ? WHERE id = ? AND "
                   "role = 'assistant'", [text, now_iso(), message_id])
