"""A conversation's messages as a tree: the path from the root to a leaf (``branch``), a
message's siblings (its other versions), which path is active, deleting a message with
everything below it, an answer taking the place of the empty reply that stood for it (the
outbox), keeping a best-of candidate as a version of its own, and forking a path into a new
conversation."""
from __future__ import annotations

import json

from app.domain.errors import UsageError
from app.domain.messages import Conversation, Message, Role, new_id
from app.domain.wording import title_from
from app.storage import deletions, erasure
from app.storage.conversation_rows import ConversationRows
from app.storage.message_rows import MessageRows
from app.storage.rows import now_iso, row_to_message
from app.storage.sqlite_errors import storage_errors


class MessageTree(ConversationRows, MessageRows):
    """Each message names its parent (None: a root); the conversation names its active leaf.
    Part of ``app.storage.store.Store``."""

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
            return [row_to_message(r) for r in rows]

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
            # in pieces: a subtree may hold more messages than SQLite takes parameters (32,766;
            # the first message of a long imported chat)
            for start in range(0, len(ids), 500):
                piece = ids[start:start + 500]
                marks = ", ".join("?" * len(piece))
                erasure.blank_outbox_requests(db.conn, piece)
                db.execute(f"update outbox set answer_message_id = null where "
                           f"answer_message_id in ({marks})", piece)
                db.execute(f"delete from messages where id in ({marks})", piece)
            stamp = now_iso()
            deletions.record(db.conn, deletions.MESSAGE, ids, stamp)
            # the conversation changed (a salvage of an older copy must not win over it)
            db["conversations"].update(conversation.id, {"updated_at": stamp})
        if conversation.active_leaf_id in ids:
            siblings = [m for m in children.get(message.parent_id, []) if m.id != message.id]
            target = siblings[-1].id if siblings else message.parent_id
            if target is None:
                with self._tx() as db:
                    self._change(db, conversation.id, {"active_leaf_id": None})
            else:
                self.set_active(conversation.id, target)
        self.forgot()
        return ids

    def answer_in_place_of(self, placeholder_id: str | None, answer_id: str) -> bool:
        """The answer (a sibling of ``placeholder_id``) takes the place of the empty reply that
        stood for it while its request waited in the outbox: the follow-ups the user asked
        meanwhile (children of that reply) move under the answer, then the empty reply is
        deleted. So the conversation stays one tree, and its active path (and the next turn's
        context) reads question, answer, follow-up. A reply with text is never replaced.
        Whether it took its place."""
        if placeholder_id is None or placeholder_id == answer_id:
            return False
        with self._tx() as db:
            found = list(db.query(
                "select conversation_id from messages where id = ? and role = 'assistant' "
                "and content = ''", [placeholder_id]))
            if not found:  # deleted meanwhile, or not empty: nothing to replace
                return False
            stamp = now_iso()
            db.execute("update messages set parent_id = ?, updated_at = ? where parent_id = ?",
                       [answer_id, stamp, placeholder_id])
            db.execute("delete from messages where id = ?", [placeholder_id])
            deletions.record(db.conn, deletions.MESSAGE, [placeholder_id], stamp)
            db.execute("update conversations set active_leaf_id = ?, updated_at = ? where id = ? "
                       "and active_leaf_id = ?", [answer_id, stamp, found[0]["conversation_id"],
                                                  placeholder_id])
        return True

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
        # (not the search key: a copy gets its own, from the same time)
        columns = [c.name for c in self.db["messages"].columns if c.name != "seq"]
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
            self._change(db, conversation_id, {"active_leaf_id": leaf})
        return self.branch(conversation_id, leaf)
