"""Sends what waits in the outbox (``app.storage.outbox``), in order, once per item: each
item's request goes to its provider as a turn of its own (``app.chat.turn.Turn``), and the
answer is stored as a sibling of the reply the user already has. An answer cut off mid-way is
kept (marked interrupted) and its item waits to be sent again, as one whose provider is
unreachable does; so does one the app's closing cut short (a cancel ``CLOSING``: not the
user's stop, whose answer counts as sent as far as it went). An item whose conversation is
Local only by now is never sent (it fails with ``KEPT_LOCAL``), nor one whose profile may no
longer use its route (``allowed_routes``: it fails, saying how to send it). The quotas of the
profile that asked are checked again when an item goes out (a day or a month may have been
used up since it was queued): without room, it waits, saying why, and so do that profile's
later items for the provider; with room for a shorter reply, it is sent with max_tokens
lowered, as a new message would be. An item whose request holds one of the user's own API keys
(queued before messages were checked for them, or a key stored since) is never sent: it fails,
saying whose key it is (``KeyInMessage``)."""
from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import logging
import threading
import time
from typing import Callable, Mapping

from app.chat.outbox_words import route_note
from app.chat.turn import Turn
from app.config.pseudonym import provider_user
from app.config.secrets import known_keys
from app.config.settings import Settings, default_user_id
from app.domain.errors import (
    KeyInMessage,
    KnownStorageError,
    OutpostError,
    RateLimited,
    StreamInterrupted,
    UsageError,
)
from app.domain.messages import CLOSING, FinishReason, MessageStatus, cancel_reason
from app.domain.routes import FAILOVER_ERRORS, KEPT_LOCAL
from app.domain.secrets_mask import SecretMask, refuse_keys
from app.storage.outbox import Outbox, OutboxState, SendReport
from app.storage.quotas import QuotaExceeded, RateLimitedLocally, RouteNotAllowed

log = logging.getLogger(__name__)

# how often an item a budget holds back is looked at again (the admin may raise the limit)
QUOTA_RECHECK_S = 60.0
# how many times an item whose answer broke off (the link dropped mid-way) is sent; each try
# keeps its part as a version
CUT_OFF_TRIES = 3
# what an item, and the part of its answer kept, say when the app closed while it was sent
CLOSED_WHILE_SENDING = "Outpost was closed while it was being sent; it will be sent again."


class OutboxSender:
    """Sends what is queued, in order, once per item. ``engine_for(provider, model)`` builds
    the cloud engine; ``send`` is blocking (run it off the GUI thread)."""

    def __init__(self, outbox: Outbox, engine_for: Callable[[str, str | None], object],
                 is_unreachable: Callable[[Exception], bool] | None = None, ledger=None,
                 default_route: Callable[[], str] = lambda: "auto",
                 keep_unsaved: Callable[[Turn], None] | None = None, quotas=None,
                 default_profile: Callable[[], str] = lambda: default_user_id(Settings()),
                 keys: Callable[[], Mapping[str, str]] = known_keys):
        """``keep_unsaved``: ``ChatService.keep_unsaved`` (an answer whose final write failed
        is kept and written later, and its item counts as sent); ``quotas``: the
        ``app.storage.quotas.QuotaGuard`` checked again for each item sent;
        ``default_profile()``: the machine's default profile, who asked for an item whose
        conversation has no profile (from before profiles: that profile claims them);
        ``keys``: every key of the user's -> whose it is (no request holding one is sent;
        the answers mask them), read once a pass."""
        self.quotas = quotas
        self.default_profile = default_profile
        self.keys = keys
        self.outbox = outbox
        self.keep_unsaved = keep_unsaved
        self.kept: list[tuple[int, Turn]] = []  # (item id, its turn) whose answer is kept
        self.default_route = default_route  # the settings' route for conversations with none
        self.engine_for = engine_for
        self.ledger = ledger  # app.storage.ledger.UsageLedger: the answers' cost
        self.is_unreachable = is_unreachable or (lambda exc: isinstance(exc, FAILOVER_ERRORS))
        self._lock = threading.Lock()  # one pass at a time in this process
        # (provider, profile) -> when (monotonic) a quota that held that profile's item back
        # is looked at again: the window's pass comes every 2 s, and each look claims the
        # item, builds an engine (a keychain read) and writes why it waits
        self._quota_hold: dict[tuple[str, str], tuple[float, int]] = {}
        self.clock: Callable[[], float] = time.monotonic
        # the time now (UTC), for the Retry-After a provider asked for: kept with the item, so
        # it holds in every process (tests put another time here)
        self.now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc)

    def send(self, only: int | None = None, cancel: threading.Event | None = None,
             skip_provider: Callable[[str], bool] = lambda name: False,
             moved: Callable[[], None] = lambda: None) -> SendReport:
        """``cancel``: set by the user's stop (an answer stopped after some text counts as
        sent), or with the reason ``CLOSING`` (``app.domain.messages.CancelWithReason``) when
        the app closes: the item then goes back to the queue. ``moved()`` is called (on this
        thread) each time an item changed state: claimed, then sent, failed or queued again."""
        report = SendReport([], [], [])
        cancel = cancel or threading.Event()
        # every key of the user's, read once a pass (a keychain read: the window passes every
        # 2 s), when the first item is claimed: a key stored since an item was queued counts
        owners: Mapping[str, str] | None = None
        with self._lock:
            self.outbox.recover()
            blocked: dict[str, int] = {}  # provider -> its first item that could not go
            busy: set[str] = set()  # providers another process is sending to right now
            # (provider, profile) -> that profile's first item a quota of its holds back
            held: dict[tuple[str, str], int] = {}
            for item in self.outbox.pending():
                if item.state is OutboxState.SENDING:
                    # another live process is sending it: its provider's later items wait, so
                    # they never overtake it (it may yet go back to the queue)
                    busy.add(item.provider)
                    if only is None or item.id == only:
                        report.elsewhere.append(item)
                    continue
                if only is not None and item.id != only:
                    continue
                if item.provider in busy:
                    report.elsewhere.append(item)
                    continue
                try:
                    self.outbox.store.get_message(item.user_message_id)
                except UsageError:  # its question is gone (salvaged without it): not sent,
                    self.outbox._finish(item.id, OutboxState.CANCELLED,  # and no pass stops
                                        "its message is gone: nothing to send")
                    moved()
                    continue
                # who asked: the conversation's profile; one from before profiles is the
                # default profile's (it claims them), its quotas checked as for anyone's
                owner = self.outbox.store.get_conversation(item.conversation_id).profile or \
                    self.default_profile()
                until, held_id = self._quota_hold.get((item.provider, owner), (0.0, None))
                if held_id == item.id and until > self.clock() and only is None:
                    held[(item.provider, owner)] = item.id  # a quota held it: looked at later
                    report.waiting.append(item)
                    continue
                if (item.provider, owner) in held:  # its profile's earlier item waits
                    report.waiting.append(item)
                    report.behind[item.id] = held[(item.provider, owner)]
                    continue
                if self.stays_here(item):  # made Local only since it was queued: never sent
                    kept = self.outbox.keep_local(item.id)
                    report.failed.append((kept, KEPT_LOCAL))
                    moved()
                    continue
                # its provider asked to be left alone (429, Retry-After) until a time not come
                # yet: it waits untried, and its provider's later items behind it (the user's
                # explicit send of this one item is not held back)
                hold = item.held(self.now()) if only is None else None
                skip = hold is not None or skip_provider(item.provider)
                if cancel.is_set() or item.provider in blocked or skip:
                    report.waiting.append(item)
                    if item.provider in blocked:
                        report.behind[item.id] = blocked[item.provider]
                    elif hold is not None:
                        report.held[item.id] = hold
                    blocked.setdefault(item.provider, item.id)
                    continue
                claimed = self.outbox.claim(item.id)
                if claimed is None:  # taken by another process since the list was read
                    busy.add(item.provider)
                    report.elsewhere.append(self.outbox.get(item.id))
                    continue
                moved()
                if owners is None:
                    owners = self.keys()
                try:
                    refuse_keys(item.request.messages, owners)
                except KeyInMessage as exc:  # never sent; the user removes the key first
                    why = f"Not sent: {exc}"  # (no attempt: the claim is undone)
                    report.failed.append((self.outbox.refuse(item.id, why), why))
                    moved()
                    continue
                # the provider is told the asker's pseudonym (an item queued before that was
                # so kept the name in its request), the same idempotency key as ever
                request = dataclasses.replace(item.request, user=provider_user(owner))
                engine, error, cap = None, None, None
                try:
                    engine = self.engine_for(item.provider, item.model)
                    request, cap = self._within_quota(owner, item, request, engine)
                except (QuotaExceeded, RateLimitedLocally) as exc:  # not now, or not as it is
                    engine.close()
                    if isinstance(exc, QuotaExceeded) and exc.lasting:  # no wait makes room:
                        why = _refused(exc, item.id)  # failed, saying so
                        report.failed.append((self.outbox.refuse(item.id, why), why))
                        moved()
                        continue
                    held[(item.provider, owner)] = item.id
                    again = exc.wait_s if isinstance(exc, RateLimitedLocally) else QUOTA_RECHECK_S
                    self._quota_hold[(item.provider, owner)] = (self.clock() + again, item.id)
                    report.waiting.append(self.outbox.release(item.id, str(exc)))
                    moved()
                    continue
                except OutpostError as exc:  # no key, no such provider: settled below
                    error = exc
                except BaseException:
                    self.outbox._finish(item.id, OutboxState.QUEUED, "interrupted")
                    if engine is not None:
                        engine.close()
                    raise
                # the answer stands beside the reply given meanwhile (a sibling)
                known = tuple(owners)  # (masked in its answer: no second keychain read)
                turn = Turn(self.outbox.store, item.conversation_id, item.user_message_id,
                            request, ledger=self.ledger, activate="beside", reply_cap=cap,
                            when_closed=CLOSED_WHILE_SENDING,
                            secrets=functools.partial(SecretMask, known))
                if self.ledger is not None:  # filed under the profile that asked, not the
                    # one signed in when it goes out
                    self.ledger.note_turn(item.request.idempotency_key, route="cloud",
                                          profile=owner, conversation_id=item.conversation_id)
                try:
                    if error is None:
                        for _ in turn.run(engine, cancel,
                                          route_reason=route_note(item, "sent", self.now())):
                            pass
                except OutpostError as exc:
                    error = exc
                except BaseException:
                    self.outbox._finish(item.id, OutboxState.QUEUED, "interrupted")
                    raise
                finally:
                    if engine is not None:
                        engine.close()
                    if self.quotas is not None:  # what the check reserved: in the ledger now
                        self.quotas.release(request.idempotency_key)
                if turn.unsaved is not None and self.keep_unsaved is not None:
                    self.keep_unsaved(turn)  # the answer's final write failed: kept, saved later
                    self.kept.append((item.id, turn))
                closing = cancel.is_set() and cancel_reason(cancel) == CLOSING
                try:  # (settled from the answer as it is, stored or kept)
                    self._settle(claimed, turn, error, report, blocked, closing)
                except KnownStorageError as exc:  # the disk refuses the outbox's write too:
                    log.warning("outbox item %s could not be settled: %s", item.id, exc)
                    report.waiting.append(claimed)  # it is sending still; the next start
                    # puts it back in the queue (its writer gone)
                moved()
        return report


    def _within_quota(self, owner: str, item, request, engine):
        """(the request as it may go, the ReplyCap or None): the asker's quotas checked
        again now, on the conversation's route; QuotaExceeded / RateLimitedLocally when it
        may not go yet."""
        if self.quotas is None:
            return request, None
        # counted as it will be sent (JSON mode's instruction included)
        prompt_tokens, _ = engine.count_prompt(
            engine.messages_as_sent(request.messages, request.response_format))
        route = self.outbox.store.get_conversation(item.conversation_id).route or \
            self.default_route()
        return self.quotas.admit(owner, route, request, prompt_tokens,
                                 price_known=engine.price_known, price=engine.price)

    def stays_here(self, item) -> bool:
        """Is the item's conversation Local only now (its own route, else the default)? Then
        nothing of it is sent, nor its provider probed for it."""
        conversation = self.outbox.store.get_conversation(item.conversation_id)
        return (conversation.route or self.default_route()) == "local"

    def _settle(self, item, turn: Turn, error: OutpostError | None, report: SendReport,
                blocked: dict[str, int], closing: bool = False) -> None:
        """Where a sent item stands once its turn ended (``error``: what the turn raised):
        * its answer is stored whole: sent (a structured reply whose repair failed too), or
          the user stopped it after some text: sent, as far as it went;
        * the app is closing (``closing``) and the answer is not whole: it waits again, as
          after a crash; the part there is stays, a version marked interrupted;
        * nothing came: the provider still unreachable, or the user cancelled: it waits again;
        * the answer broke off because the link did (a dropped connection, a timeout, an
          unavailable provider): the part is kept, a version marked interrupted, and the item
          waits to be asked again, at most ``CUT_OFF_TRIES`` times;
        * anything else (a refused key, a content filter, a bad request): failed, shown."""
        store = self.outbox.store
        message = turn.as_saved(store.get_message(turn.assistant_message_id)) \
            if turn.assistant_message_id else None
        finish = turn.reply.finish
        cancelled = finish is not None and finish.reason is FinishReason.CANCELLED
        complete = message is not None and message.status is MessageStatus.COMPLETE
        if closing and not complete:  # not the user's stop: it goes again, same key
            if not turn.reply.text:
                store.delete_empty_reply(turn.assistant_message_id)
            self.outbox._finish(item.id, OutboxState.QUEUED, CLOSED_WHILE_SENDING)
            if turn.reply.text:
                self._note_on_reply(item, turn, "cut off")
            report.waiting.append(self.outbox.get(item.id))
            return
        if message is not None and (complete or cancelled and turn.reply.text):
            self.outbox._finish(item.id, OutboxState.SENT, None, message.id)
            # the empty "queued" reply has done its job: the answer takes its place (what
            # the user asked after it moves under the answer)
            store.answer_in_place_of(self.outbox.placeholder_of(item.id), message.id)
            self._say_answered(item, message)
            report.sent.append((self.outbox.get(item.id), message))
            return
        if isinstance(error, RateLimited) and error.retry_after:  # asked to wait: it waits,
            self.outbox.hold(item.id, error.retry_after, self.now())  # in every process
        if not turn.reply.text:
            if cancelled or error is not None and self.is_unreachable(error):
                # no answer row for it: the item waits again
                store.delete_empty_reply(turn.assistant_message_id)
                self.outbox._finish(item.id, OutboxState.QUEUED,
                                    "cancelled while sending" if cancelled else str(error))
                if not cancelled:
                    blocked.setdefault(item.provider, item.id)
                report.waiting.append(self.outbox.get(item.id))
                return
        cut = error or (finish.error if finish is not None else None) or \
            StreamInterrupted("The answer was cut off.")
        if turn.reply.text and self._link_dropped(cut) and item.attempts < CUT_OFF_TRIES:
            self.outbox._finish(item.id, OutboxState.QUEUED, str(cut))
            self._note_on_reply(item, turn, "cut off")
            blocked.setdefault(item.provider, item.id)
            report.waiting.append(self.outbox.get(item.id))
            return
        why = str(cut) if not turn.reply.text or item.attempts < CUT_OFF_TRIES else \
            f"{cut} (cut off {item.attempts} times: not asked again)"
        self.outbox._finish(item.id, OutboxState.FAILED, why, turn.assistant_message_id)
        self._note_on_reply(item, turn, "failed")
        if turn.reply.text and item.attempts >= CUT_OFF_TRIES and self._link_dropped(cut):
            self._show_longest_part(item, turn)
        elif turn.assistant_message_id is not None:
            self._say_failed(item, turn, why)
        else:  # never sent (no key, no such provider): the queued reply (Cloud only) says so
            self.outbox._say_on_placeholder(item.id, _failed_words(item.id, why))
        report.failed.append((self.outbox.get(item.id), why))

    def _say_failed(self, item, turn: Turn, why: str) -> None:
        """The failed send's reply says the item failed and how to ask once more, and takes
        the place of the reply that stood for it (Cloud only: it said "Queued in the
        outbox"): one failure leaves one reply saying so (it left two, the queued one
        rewritten beside the failed attempt shown). Without one (Auto, send when online) the
        attempt beside the local answer keeps the provider's words."""
        reply_id = turn.assistant_message_id
        if reply_id is None or self.outbox.placeholder_of(item.id) is None:
            return
        words = _failed_words(item.id, why)
        unsaved = turn.unsaved
        if unsaved is not None:  # (its final write, still to come, says so too)
            unsaved["error"] = words
        try:
            self.outbox.store.update_message(reply_id, error=words)
            self.outbox.stands_for(item.id, reply_id)
        except OutpostError as exc:  # (the item's state is settled; this is the display)
            log.warning("could not say outbox item %s failed on its reply: %s", item.id, exc)

    def _say_answered(self, item, answer) -> None:
        """A retried item was answered: the parts of its earlier sends that said it failed (a
        content filter's, the longest of three cuts) say it was retried and answered; they
        kept saying it failed beside the answer."""
        store = self.outbox.store
        failed = f"Outbox item {item.id} failed"
        try:
            for part in store.siblings(answer):
                if part.id != answer.id and part.error and failed in part.error:
                    store.update_message(part.id, error=_answered_words(item.id, part.error))
        except OutpostError as exc:  # (the item's state is settled; this is the display)
            log.warning("could not say outbox item %s was answered on its parts: %s", item.id,
                        exc)

    def _note_on_reply(self, item, turn: Turn, how: str) -> None:
        """The reply of a send that did not count as sent says how it went (``how``: "cut
        off", "failed"), not that the message was sent when its provider was back (the turn
        stored that, the note of an answer that came)."""
        if turn.assistant_message_id is None:  # (never run: no engine for it)
            return
        note = route_note(item, how, self.now())
        unsaved = turn.unsaved
        if unsaved is not None:  # (its final write, still to come, says so too)
            unsaved["route_reason"] = note
        try:
            self.outbox.store.update_message(turn.assistant_message_id, route_reason=note)
        except OutpostError as exc:  # (the item's state is settled; this is the display)
            log.warning("could not say how outbox item %s went on its reply: %s", item.id, exc)

    def _show_longest_part(self, item, turn: Turn) -> None:
        """An item failed because its answer broke off every time: the longest part kept
        becomes the version shown (the last try's may be the shortest), when the user is still
        on the last try, and says the item failed and how to ask once more; under Cloud only
        it takes the place of the queued reply."""
        store = self.outbox.store
        try:
            last = store.get_message(turn.assistant_message_id)
            key = item.request.idempotency_key
            parts = [m for m in store.siblings(last) if m.content and m.engine == last.engine
                     and (m.params or {}).get("idempotency_key", key) == key]
            longest = max(reversed(parts), key=lambda m: len(m.content), default=last)
            if store.get_conversation(item.conversation_id).active_leaf_id == last.id:
                store.set_active(item.conversation_id, longest.id)
            store.update_message(longest.id, error=(
                f"{_sentence(longest.error or 'The answer was cut off.')} Outbox item "
                f"{item.id} failed: its answer was cut off {item.attempts} times, so it is not "
                f"asked again (this is the longest part). Retry in the Outbox (or `outpost "
                f"outbox retry {item.id}`) asks once more."))
            self.outbox.stands_for(item.id, longest.id)  # (Cloud only: for the queued reply)
        except OutpostError as exc:  # (the item's state is settled; this is the display)
            log.warning("could not show outbox item %s's longest part: %s", item.id, exc)

    def _link_dropped(self, error: Exception) -> bool:
        """Did the answer break off because the link did (worth asking again)?"""
        if isinstance(error, StreamInterrupted):
            return error.cause is None or self.is_unreachable(error.cause)
        return self.is_unreachable(error)


def _refused(exc: QuotaExceeded, item_id: int) -> str:
    """Why an item no wait would make room for is not sent, and how to send it."""
    if isinstance(exc, RouteNotAllowed):
        return _route_refused(exc, item_id)
    return (f"Not sent: {exc.finding} Nothing is lost: the message stays in its conversation. "
            f"Once that changes, retry it (Retry in the Outbox, or `outpost outbox retry "
            f"{item_id}`).")


def _route_refused(exc: RouteNotAllowed, item_id: int) -> str:
    """Why an item whose profile may no longer use its route is not sent, and how to send it."""
    who = exc.profile
    if exc.source == "policy file":
        allow = "the policy file would have to allow that route (nobody can in Outpost)"
    else:
        routes = ",".join(dict.fromkeys([*exc.allowed, exc.route]))
        allow = (f"the admin can allow that route again (Chat ▸ Profiles…, or `outpost quota "
                 f"set allowed_routes {routes} --profile {who}`) and then retry the item "
                 f"(Retry in the Outbox, or `outpost outbox retry {item_id}`)")
    return (f"Not sent: the profile {who} may no longer use {exc.route_words}, the route this "
            f"message was queued under (its quota allows {exc.allowed_words}; {exc.source}). "
            f"Nothing is lost: the message stays in its conversation. To send it, {allow}; or "
            f"switch the conversation to a route {who} may use and send the message again.")


def _sentence(text: str) -> str:
    """``text`` ending as a sentence does, without doubling its own full stop."""
    text = text.strip()
    return text if text.endswith((".", "?", "!", ".)")) else text + "."


def _failed_words(item_id: int, why: str) -> str:
    """What the reply of a failed item (Cloud only) says."""
    return (f"Outbox item {item_id} failed: {_sentence(why)} Retry in the Outbox (or `outpost "
            f"outbox retry {item_id}`) asks once more.")


def _answered_words(item_id: int, said: str, how: str = "It was retried and answered") -> str:
    """What a part that said its item failed (``said``) says once a retry was answered: its
    own cause stays, the failure is put in the past, and the way to ask again goes."""
    failed = f"Outbox item {item_id} failed"
    start = said.find(failed)
    before, after = said[:start], said[start + len(failed):]
    after = after.split(" Retry in the Outbox", 1)[0]
    return (f"{before}{failed} at first{after} {how}: the answer is another version of this "
            "reply.")


def settle_answered_in_chat(outbox: Outbox, user_message_id: str, answer_id: str) -> None:
    """A question whose outbox item failed was answered from its chat (a retry or a
    regenerate, answered at once): the item is no longer failed (``Outbox.answered_in_chat``)
    and the replies that said it failed, with the way to ask again, say it was answered."""
    items = outbox.answered_in_chat(user_message_id, answer_id)
    if not items:
        return
    store = outbox.store
    for part in store.siblings(store.get_message(answer_id)):
        for item in items:
            failed = f"Outbox item {item.id} failed"
            if part.id != answer_id and part.error and failed in part.error and \
                    f"{failed} at first" not in part.error:
                store.update_message(part.id, error=_answered_words(
                    item.id, part.error, "It was answered since, from the chat"))
