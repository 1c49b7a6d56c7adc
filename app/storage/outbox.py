"""The offline outbox: cloud requests that wait until their provider can be reached.

A message goes here when the cloud is wanted but unreachable: always under the Cloud only route,
and under Auto when the user asked "send when online" (the local model answers now, and the cloud's
answer arrives later as a sibling reply). Each item keeps the request exactly as it would have been
sent, idempotency key included, so the provider sees the same request when it is finally sent.

States: ``queued`` -> ``sending`` -> ``sent`` (or back to ``queued`` when the provider is still
unreachable; ``failed`` when the provider refused it, e.g. a bad key, or when its conversation
went Local only since, or its profile may no longer use its route: never sent then; ``cancelled``
by the user).

Never in flight twice, also across processes and restarts: an item is claimed inside a write
transaction (``queued`` -> ``sending`` with the claiming process's pid + start time), so the window
and ``outpost outbox send`` cannot both send it; an item left ``sending`` by a process that died
goes back to ``queued`` (the provider can deduplicate the resend by its idempotency key).
Items are sent in the order they were queued; a provider that is still unreachable keeps the rest
of its items waiting, so their order holds. A provider that answered 429 with Retry-After holds
its item (and those behind it) until then: the time is stored with the item (``not_before``), so
every process honours it.
"""
from __future__ import annotations

import datetime as dt
import enum
import json
from dataclasses import dataclass, field

from app.domain.errors import UsageError
from app.domain.messages import ChatRequest, Message
from app.domain.routes import KEPT_LOCAL, kept_local_reply
from app.storage.sqlite_errors import storage_errors
from app.storage.store import Store, now_iso
from app.storage.writers import this_writer, writer_alive


# what an item that failed says once its question was answered from its chat instead
ANSWERED_IN_CHAT = "answered in its chat after it failed here (not sent from the outbox)"


class OutboxState(str, enum.Enum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class OutboxItem:
    id: int
    conversation_id: str
    user_message_id: str
    provider: str
    model: str | None
    request: ChatRequest
    state: OutboxState
    attempts: int
    last_error: str | None
    answer_message_id: str | None
    created_at: str
    updated_at: str
    # the provider asked (429, Retry-After ``retry_after`` seconds) not to be sent this before
    # ``not_before`` (UTC ISO); cleared when the item is sent again
    not_before: str | None = None
    retry_after: float | None = None
    # why it was queued, as a clause ("fault was rate limiting requests and asked to wait
    # 120 s"; ``app.chat.outbox_words``); None for items from before it was kept
    queued_because: str | None = None

    def held_until(self, now: dt.datetime | None = None) -> dt.datetime | None:
        """When its provider asked it be sent again (429, Retry-After), while that is still to
        come after ``now`` (default: the time now); else None."""
        if not self.not_before:
            return None
        try:
            until = dt.datetime.fromisoformat(self.not_before)
        except ValueError:
            return None
        return until if until > (now or dt.datetime.now(dt.timezone.utc)) else None

    def held(self, now: dt.datetime | None = None) -> str | None:
        """Why it may not be sent yet ("waits until 16:13:51 (the provider asked: Retry-After
        120 s)"), or None once ``now`` (default: the time now) is past its ``not_before``."""
        now = now or dt.datetime.now(dt.timezone.utc)
        until = self.held_until(now)
        if until is None:
            return None
        local = until.astimezone()
        when = local.strftime("%H:%M:%S") if local.date() == now.astimezone().date() else \
            local.strftime("%Y-%m-%d %H:%M:%S")
        asked = f"Retry-After {self.retry_after:.0f} s" if self.retry_after else "Retry-After"
        return f"waits until {when} (the provider asked: {asked})"

    @property
    def prompt(self) -> str:
        return self.request.messages[-1].content if self.request.messages else ""

    def as_dict(self) -> dict:
        return {"id": self.id, "conversation_id": self.conversation_id,
                "user_message_id": self.user_message_id, "provider": self.provider,
                "model": self.model, "state": self.state.value, "attempts": self.attempts,
                "last_error": self.last_error, "answer_message_id": self.answer_message_id,
                "idempotency_key": self.request.idempotency_key, "prompt": self.prompt,
                "created_at": self.created_at, "updated_at": self.updated_at,
                "not_before": self.not_before, "retry_after": self.retry_after,
                "queued_because": self.queued_because}


def _item(row: dict) -> OutboxItem:
    return OutboxItem(
        id=row["id"], conversation_id=row["conversation_id"],
        user_message_id=row["user_message_id"], provider=row["provider"], model=row["model"],
        request=ChatRequest.from_record(json.loads(row["request"])),
        state=OutboxState(row["state"]), attempts=row["attempts"] or 0,
        last_error=row["last_error"], answer_message_id=row["answer_message_id"],
        created_at=row["created_at"], updated_at=row["updated_at"],
        not_before=row.get("not_before"), retry_after=row.get("retry_after"),
        queued_because=row.get("queued_because"))


class Outbox:
    """The outbox table (created by migration m004)."""

    def __init__(self, store: Store):
        self.store = store

    def enqueue(self, conversation_id: str, user_message_id: str, provider: str,
                model: str | None, request: ChatRequest,
                placeholder_message_id: str | None = None,
                retry_after: float | None = None,
                queued_because: str | None = None) -> OutboxItem:
        """``retry_after``: the provider answered 429 with Retry-After (seconds): the item is
        held until then (``hold``). ``queued_because``: why, as a clause (the latest word
        stands for an item queued again). ``placeholder_message_id``: the empty reply that
        stands for the item (Cloud only); a retry's of an item still queued takes the place of
        the one before (``stands_for``). One item per turn: a retry of a turn whose item
        failed or was cancelled queues that item again (a second one stayed listed, failed)."""
        stamp = now_iso()
        hold: dict = {"not_before": _until(retry_after), "retry_after": retry_after} \
            if retry_after else {}
        if queued_because is not None:
            hold["queued_because"] = queued_because
        with self.store.transaction() as db:
            existing = list(db["outbox"].rows_where(
                "idempotency_key = ? and state in ('queued', 'sending', 'failed', "
                "'cancelled')", [request.idempotency_key],
                order_by="state not in ('queued', 'sending'), id desc"))
            if existing:  # the same turn queued twice (a retry while offline): keep one;
                item_id = existing[0]["id"]  # one that failed (or was cancelled) goes back
                again: dict = {} if existing[0]["state"] in ("queued", "sending") else \
                    {"state": OutboxState.QUEUED.value, "last_error": None,
                     "answer_message_id": None, "writer": None}
                if hold or again:  # (the provider's latest word, and why)
                    db["outbox"].update(item_id, dict(hold, **again, updated_at=stamp))
            else:
                table = db["outbox"]
                table.insert({
                    "conversation_id": conversation_id, "user_message_id": user_message_id,
                    "provider": provider, "model": model,
                    "request": json.dumps(request.as_record()),
                    "idempotency_key": request.idempotency_key,
                    "state": OutboxState.QUEUED.value, "attempts": 0, "last_error": None,
                    "answer_message_id": None, "writer": None,
                    "placeholder_message_id": placeholder_message_id,
                    "created_at": stamp, "updated_at": stamp, **hold})
                item_id = table.last_pk
        if existing and placeholder_message_id is not None:
            # the retry's reply (it says queued too) takes the place of the one that stood
            # for the item: one "queued" reply, the one the answer replaces
            self.stands_for(item_id, placeholder_message_id)
        return self.get(item_id)

    def hold(self, item_id: int, retry_after: float,
             now: dt.datetime | None = None) -> OutboxItem:
        """The provider asked (429, Retry-After) not to be sent anything for ``retry_after``
        seconds from ``now``: the item keeps that time, and no sender sends it before then
        (but for the user's explicit send of this one item)."""
        with self.store.transaction() as db:
            db.execute("update outbox set not_before = ?, retry_after = ?, updated_at = ? "
                       "where id = ?", [_until(retry_after, now), retry_after, now_iso(),
                                        item_id])
        return self.get(item_id)

    def get(self, item_id: int) -> OutboxItem:
        with storage_errors(self.store.path):
            rows = list(self.store.db["outbox"].rows_where("id = ?", [item_id]))
        if not rows:
            raise UsageError(f"There is no outbox item {item_id}.")
        return _item(rows[0])

    def items(self, states: tuple[OutboxState, ...] | None = None,
              profile: str | None = None) -> list[OutboxItem]:
        """In queue order. ``states`` None: all of them; ``profile``: only the items of that
        profile's conversations (what it may see; sending serves everyone's)."""
        where, params = [], []
        if states:
            where.append(f"state in ({', '.join('?' for _ in states)})")
            params += [s.value for s in states]
        if profile is not None:
            where.append("conversation_id in (select id from conversations where profile = ?)")
            params.append(profile)
        with storage_errors(self.store.path):
            rows = self.store.db["outbox"].rows_where(" and ".join(where) or None,
                                                      params or None, order_by="id")
            return [_item(r) for r in rows]

    def placeholder_of(self, item_id: int) -> str | None:
        with storage_errors(self.store.path):
            rows = list(self.store.db["outbox"].rows_where("id = ?", [item_id]))
        return rows[0].get("placeholder_message_id") if rows else None

    def pending(self, profile: str | None = None) -> list[OutboxItem]:
        return self.items((OutboxState.QUEUED, OutboxState.SENDING), profile)

    def cancel(self, item_id: int) -> OutboxItem:
        item = self.get(item_id)
        with self.store.transaction() as db:
            changed = db.execute(  # (why it waited is no news once it does not)
                "update outbox set state = ?, last_error = null, updated_at = ? where id = ? "
                "and state = ?",
                [OutboxState.CANCELLED.value, now_iso(), item_id, OutboxState.QUEUED.value]
            ).rowcount
        if not changed:
            current = self.get(item_id)
            raise UsageError(f"Outbox item {item_id} is {current.state.value}; only a queued "
                             "item can be cancelled.")
        self._say_on_placeholder(item_id, f"Cancelled in the outbox (item {item_id}): not "
                                 f"sent. `outpost outbox retry {item_id}` (or Retry in the "
                                 "Outbox) queues it again.")
        return self.get(item.id)

    def _say_on_placeholder(self, item_id: int, text: str) -> None:
        """The reply that stands for a queued request (Cloud only) says where it is now."""
        placeholder = self.placeholder_of(item_id)
        if placeholder is None:
            return
        try:
            self.store.update_message(placeholder, error=text)
        except UsageError:  # deleted meanwhile (its conversation): nothing to say it on
            pass

    def stands_for(self, item_id: int, reply_id: str) -> None:
        """The reply of a send that failed, or of a retry while the item waits (``reply_id``,
        a sibling), takes the place of the one that stood for the item (Cloud only: "Queued in
        the outbox") and of its follow-ups, so the item has one reply saying where it is. An
        empty one stands for the item from then on (a retry and a cancel say so on it; the
        answer takes its place); one with text (a part) is never replaced, so none does."""
        placeholder = self.placeholder_of(item_id)
        if placeholder == reply_id:
            return
        self.store.answer_in_place_of(placeholder, reply_id)
        try:
            empty = not self.store.get_message(reply_id).content
        except UsageError:  # deleted meanwhile (its conversation): nothing stands for it
            empty = False
        with self.store.transaction() as db:
            db.execute("update outbox set placeholder_message_id = ? where id = ?",
                       [reply_id if empty else None, item_id])

    def requeue_failed(self, item_id: int, default_route: str = "auto") -> OutboxItem:
        """A failed item (say the key was wrong and is fixed now) or a cancelled one goes back
        in the queue; not while its conversation is Local only (its own route, else
        ``default_route``, the settings')."""
        item = self.get(item_id)
        try:
            self.store.get_message(item.user_message_id)
        except UsageError:  # its question was deleted: nothing to ask any more
            raise UsageError(f"Outbox item {item_id}'s message was deleted; there is nothing "
                             "to send.") from None
        if (self.store.get_conversation(item.conversation_id).route or default_route) == \
                "local":
            raise UsageError(f"Outbox item {item_id}'s conversation is Local only: nothing of "
                             "it is sent. Choose Auto or Cloud only for it first.")
        with self.store.transaction() as db:
            changed = db.execute(
                "update outbox set state = ?, last_error = null, answer_message_id = null, "
                "updated_at = ? where id = ? and state in (?, ?)",
                [OutboxState.QUEUED.value, now_iso(), item_id, OutboxState.FAILED.value,
                 OutboxState.CANCELLED.value]).rowcount
        if not changed:
            raise UsageError(f"Outbox item {item_id} is {self.get(item_id).state.value}, not "
                             "failed or cancelled.")
        self._say_on_placeholder(item_id, f"Queued in the outbox again (item {item_id}): it is "
                                 f"sent once {item.provider} can be reached.")
        return self.get(item_id)

    # -- sending -------------------------------------------------------------------------------
    def recover(self) -> int:
        """Items left ``sending`` by a process that is gone go back to ``queued``."""
        with storage_errors(self.store.path):
            rows = list(self.store.db["outbox"].rows_where(
                "state = ?", [OutboxState.SENDING.value]))
        count = 0
        for row in rows:
            if writer_alive(row["writer"]):
                continue
            with self.store.transaction() as db:
                count += db.execute(
                    "update outbox set state = ?, writer = null, updated_at = ? "
                    "where id = ? and state = ? and writer is ?",
                    [OutboxState.QUEUED.value, now_iso(), row["id"], OutboxState.SENDING.value,
                     row["writer"]]).rowcount
        return count

    def keep_local(self, item_id: int) -> OutboxItem:
        """``queued`` -> ``failed`` because its conversation is Local only now (``KEPT_LOCAL``);
        the reply that stands for it (Cloud only) says so, and how to send it after all."""
        with self.store.transaction() as db:
            changed = db.execute("update outbox set state = ?, last_error = ?, updated_at = ? "
                                 "where id = ? and state = ?",
                                 [OutboxState.FAILED.value, KEPT_LOCAL, now_iso(), item_id,
                                  OutboxState.QUEUED.value]).rowcount
        if changed:
            self._say_on_placeholder(item_id, kept_local_reply(item_id))
        return self.get(item_id)

    def claim(self, item_id: int) -> OutboxItem | None:
        """``queued`` -> ``sending`` for this process; None when someone else has it. What
        held it (an unreachable provider, a Retry-After sent anyway, a quota) is forgotten:
        the send says afresh how it went."""
        with self.store.transaction() as db:
            changed = db.execute(
                "update outbox set state = ?, writer = ?, attempts = attempts + 1, "
                "not_before = null, retry_after = null, last_error = null, updated_at = ? "
                "where id = ? and state = ?",
                [OutboxState.SENDING.value, this_writer(), now_iso(), item_id,
                 OutboxState.QUEUED.value]).rowcount
        return self.get(item_id) if changed else None

    def release(self, item_id: int, why: str) -> OutboxItem:
        """``sending`` -> ``queued`` without sending, saying ``why`` (a quota of its profile
        that has no room now): the claim is undone, so it is not counted as an attempt."""
        with self.store.transaction() as db:
            db.execute("update outbox set state = ?, writer = null, last_error = ?, "
                       "attempts = max(attempts - 1, 0), updated_at = ? where id = ? and "
                       "state = ?", [OutboxState.QUEUED.value, why, now_iso(), item_id,
                                     OutboxState.SENDING.value])
        return self.get(item_id)

    def refuse(self, item_id: int, why: str) -> OutboxItem:
        """``sending`` -> ``failed`` without sending, saying ``why`` (its profile may not use
        its route any more: no wait would make room). The claim is undone, so it is not
        counted as an attempt; the reply that stands for it (Cloud only) says ``why`` too.
        ``requeue_failed`` queues it again."""
        with self.store.transaction() as db:
            db.execute("update outbox set state = ?, writer = null, last_error = ?, "
                       "attempts = max(attempts - 1, 0), updated_at = ? where id = ? and "
                       "state = ?", [OutboxState.FAILED.value, why, now_iso(), item_id,
                                     OutboxState.SENDING.value])
        self._say_on_placeholder(item_id, why)
        return self.get(item_id)

    def answered_in_chat(self, user_message_id: str,
                         answer_message_id: str) -> list[OutboxItem]:
        """The question of failed items was answered since in its chat (a retry or a
        regenerate sent from there, answered at once): they are no longer failed, but
        ``sent``, with that answer and ``ANSWERED_IN_CHAT`` as their note. Returns them."""
        with self.store.transaction() as db:
            ids = [row["id"] for row in db["outbox"].rows_where(
                "user_message_id = ? and state = ?",
                [user_message_id, OutboxState.FAILED.value])]
            for item_id in ids:
                db["outbox"].update(item_id, {
                    "state": OutboxState.SENT.value, "writer": None,
                    "last_error": ANSWERED_IN_CHAT, "answer_message_id": answer_message_id,
                    "updated_at": now_iso()})
        return [self.get(item_id) for item_id in ids]

    def _finish(self, item_id: int, state: OutboxState, error: str | None = None,
                answer_message_id: str | None = None) -> None:
        with self.store.transaction() as db:
            db["outbox"].update(item_id, {"state": state.value, "writer": None,
                                          "last_error": error,
                                          "answer_message_id": answer_message_id,
                                          "updated_at": now_iso()})


def _until(seconds: float, now: dt.datetime | None = None) -> str:
    """``seconds`` after ``now`` (default: the time now), as stored: UTC ISO."""
    now = now or dt.datetime.now(dt.timezone.utc)
    return (now + dt.timedelta(seconds=seconds)).astimezone(dt.timezone.utc).isoformat(
        timespec="milliseconds")


@dataclass
class SendReport:
    sent: list[tuple[OutboxItem, Message | None]]
    waiting: list[OutboxItem]  # still queued: their provider is unreachable
    failed: list[tuple[OutboxItem, str]]
    # being sent by another process (the window, another `outbox send`), or queued behind such
    # an item for the same provider (order is kept): that process takes care of them
    elsewhere: list[OutboxItem] = field(default_factory=list)
    # item id -> the earlier item (same provider) that could not go: it waits behind it, untried
    behind: dict[int, int] = field(default_factory=dict)
    # item id -> why its provider's Retry-After holds it, untried ("waits until 16:13:51 (the
    # provider asked: Retry-After 120 s)")
    held: dict[int, str] = field(default_factory=dict)
