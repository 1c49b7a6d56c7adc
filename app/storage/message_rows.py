"""The messages table: adding a message (and where it goes on its conversation's tree), updating
it as its reply streams, reading it, and telling a row a live writer still owns from one left
behind by a process that is gone."""
from __future__ import annotations

import json
from typing import Literal

import sqlite_utils

from app.domain.errors import UsageError
from app.domain.messages import Message, MessageStatus, Role, new_id
from app.storage import deletions
from app.storage.connections import Connections
from app.storage.rows import now_iso, row_to_message
from app.storage.sqlite_errors import storage_errors
from app.storage.writers import this_writer, writer_alive

# whether a new message becomes its conversation's active leaf (``Store.add_message``)
Activate = Literal["always", "beside", "never"]


class _AtLeaf:
    """``Store.add_message``'s default parent: the end of the conversation's active path."""

    def __repr__(self) -> str:
        return "AT_LEAF"


AT_LEAF = _AtLeaf()


class MessageRows(Connections):
    """The messages of ``app.storage.store.Store``, one row each (the tree they form:
    ``app.storage.message_tree``)."""

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
            "parent_id": parent_id, "role": role.value, "content": content,
            "status": status.value, "engine": engine,
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
        return row_to_message(row)

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
        a row with text is never deleted here, nor one something follows (its children would
        be left naming a parent that is gone)."""
        if message_id is None:
            return
        with self._tx() as db:
            found = list(db.query("select conversation_id, parent_id from messages where id = ? "
                                  "and role = 'assistant' and content = '' and not exists "
                                  "(select 1 from messages c where c.parent_id = messages.id)",
                                  [message_id]))
            if not found:
                return
            db.execute("delete from messages where id = ?", [message_id])
            deletions.record(db.conn, deletions.MESSAGE, [message_id], now_iso())
            # the active path ended there: it now ends at the newest remaining sibling, else
            # at the parent
            conversation_id, parent_id = found[0]["conversation_id"], found[0]["parent_id"]
            db.execute(
                "update conversations set active_leaf_id = coalesce((select id from messages "
                "where conversation_id = ? and parent_id is ? order by created_at desc, rowid "
                "desc limit 1), ?), updated_at = ? where id = ? and active_leaf_id = ?",
                [conversation_id, parent_id, parent_id, now_iso(), conversation_id, message_id])

    def get_message(self, message_id: str) -> Message:
        with storage_errors(self.path):
            rows = list(self.db["messages"].rows_where("id = ?", [message_id]))
        if not rows:
            raise UsageError(f"There is no message with id {message_id!r}.")
        return row_to_message(rows[0])

    def messages(self, conversation_id: str) -> list[Message]:
        """Every message of the conversation, all branches, oldest first."""
        with storage_errors(self.path):
            rows = self.db["messages"].rows_where("conversation_id = ?", [conversation_id],
                                                  order_by="created_at, rowid")
            return [row_to_message(r) for r in rows]

    def being_written(self, message: Message) -> bool:
        """Is ``message`` a reply a live turn is still writing (here or in another process)?"""
        return message.status is MessageStatus.STREAMING and \
            writer_alive(self._writer_of(message.id), message.id)

    def _writer_of(self, message_id: str) -> str | None:
        rows = list(self.db.query("select writer from messages where id = ?", [message_id]))
        return rows[0]["writer"] if rows else None

    def mark_orphaned_streaming(self) -> int:
        """Mark rows still 'streaming' whose writer process is gone as 'interrupted'."""
        return len(self.recover_orphaned_streaming())

    def recover_orphaned_streaming(self) -> list[Message]:
        """``mark_orphaned_streaming``, returning the replies it marked, oldest first; each
        also waits to be told to its profile (``take_untold_interruptions``)."""
        with storage_errors(self.path):
            rows = list(self.db["messages"].rows_where("status = ?",
                                                       [MessageStatus.STREAMING.value],
                                                       order_by="created_at, rowid"))
        orphans = [r["id"] for r in rows if not writer_alive(r["writer"], r["id"])]
        if orphans:
            with self.transaction() as db:  # marked and waiting to be told, together
                for message_id in orphans:
                    self.update_message(message_id, status=MessageStatus.INTERRUPTED,
                                        finish_reason="interrupted",
                                        error="The app stopped before this reply was finished.")
                db["untold_interruptions"].insert_all(
                    ({"message_id": m} for m in orphans), ignore=True)
        return [self.get_message(message_id) for message_id in orphans]

    def take_untold_interruptions(self, profile: str) -> list[Message]:
        """The interrupted replies in ``profile``'s chats (and chats of no profile) it has not
        been told of, oldest first; from now on told. Another profile's stay untold until it
        takes them; a reply deleted meanwhile is forgotten."""
        with self.transaction() as db:
            rows = list(db.query(
                """SELECT m.* FROM untold_interruptions u
                     JOIN messages m ON m.id = u.message_id
                     JOIN conversations c ON c.id = m.conversation_id
                    WHERE c.profile IS NULL OR c.profile = ?
                    ORDER BY m.created_at, m.rowid""", [profile]))
            db.execute(
                """DELETE FROM untold_interruptions WHERE message_id IN (
                     SELECT u.message_id FROM untold_interruptions u
                       LEFT JOIN messages m ON m.id = u.message_id
                       LEFT JOIN conversations c ON c.id = m.conversation_id
                      WHERE m.id IS NULL OR c.profile IS NULL OR c.profile = ?)""", [profile])
        return [row_to_message(r) for r in rows]
