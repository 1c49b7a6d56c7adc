"""The GUI-thread state machine of one chat: idle -> (waiting_for_model) -> streaming ->
(stopping) -> idle.

It hands the user's message to the core's turn pipeline (``app.chat.pipeline``: route, engine, the
prompt saved before anything is sent), gives the pending turn to the StreamWorker's thread,
and on a timer (every FLUSH_MS) takes the text that came meanwhile from the worker's mailbox and
renders it, so a fast model never makes the window wake up, or re-render, per token. It decides
nothing about routes, engines or the outbox: it says what the user chose (``TurnTarget``) and
renders what comes back.

Preparing a turn (route, engine, the conversation fitted to the window: token counting, which
renders the model's chat template, and the prompt saved) runs on a thread of its own
(``_off_gui``): the GUI thread waits for it up to ``PREPARE_WAIT_S`` (a prepare usually takes a
few ms, and the caller then gets its answer at once); a longer one (a slow tokenizer, a hostile
chat template running into its 2 s limit, a model thread busy saving a KV state) lets the window
go on painting in a local event loop, the state ``preparing`` keeping the other commands out.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
from enum import StrEnum
from typing import Callable, TypeVar

from PySide6.QtCore import QEventLoop, QMetaObject, QObject, Qt, QThread, QTimer, Signal, Slot
from PySide6.QtGui import QGuiApplication

from app.chat.outbox_words import queued_news
from app.chat.pipeline import PendingTurn, Queued, TurnOutcome, TurnPipeline, TurnTarget
from app.chat.service import NEW_ROOT, ChatService, TurnOptions
from app.domain.errors import Cancelled, OutpostError, ReplyNotSaved, UsageError
from app.domain.messages import (
    CLOSING,
    CancelWithReason,
    Message,
    Resent,
    Retrying,
    Role,
    Stalled,
)
from engines.registry import CloudTargets
from ui.conversation_view import ConversationView
from ui.message_actions import Versions
from ui.message_text import resend_text, retry_text, stall_text
from ui.model_loader import ModelLoader
from ui.stream_worker import StreamWorker

log = logging.getLogger(__name__)

FLUSH_MS = 33
SAVE_AGAIN_MS = 3000  # how often a reply the disk refused is written again
PREPARE_WAIT_S = 0.05  # a prepare this quick is waited for; a longer one keeps the window alive
T = TypeVar("T")


class ControllerState(StrEnum):
    """Where the current turn is. A ``StrEnum``: ``state_changed`` carries it as its text."""

    IDLE = "idle"
    PREPARING = "preparing"  # a slow prepare (counting tokens, saving the prompt) is under way
    WAITING = "waiting_for_model"  # the message is saved; the model is still loading
    STREAMING = "streaming"
    STOPPING = "stopping"  # cancel was asked; the engine ends within one token


IDLE, WAITING, STREAMING, STOPPING = (ControllerState.IDLE, ControllerState.WAITING,
                                      ControllerState.STREAMING, ControllerState.STOPPING)
PREPARING = ControllerState.PREPARING


class ChatController(QObject):
    state_changed = Signal(str)
    conversations_changed = Signal()
    reply_finished = Signal(object)  # the stored assistant Message, or None
    conversation_opened = Signal(str)  # the conversation shown now ("": a new chat)
    error_occurred = Signal(object)  # an app.domain.errors.OutpostError (the window presents it)
    notice = Signal(str)  # plain news that is not an error (a message queued in the outbox)
    outbox_changed = Signal()
    route_changed = Signal(str)  # the effective route policy of the current conversation
    turn_requested = Signal(object, object)  # PendingTurn, cancel -> StreamWorker.run_turn
    warm_up_requested = Signal()  # -> StreamWorker.warm_up, once

    def __init__(self, pipeline: TurnPipeline, loader: ModelLoader, view: ConversationView,
                 cloud: "CloudTargets | None" = None, parent: QObject | None = None,
                 flush_timer=None):
        """``pipeline``: the core's turns, with the window's engines (``app.compose``);
        ``cloud``: the providers the target picker offers (None: the local model only).
        ``flush_timer``: what paces the renders while a reply streams (anything with
        ``start()``, ``stop()`` and a ``timeout`` signal); default a QTimer every FLUSH_MS. Tests
        pass one they fire by hand, to see exactly which deltas land in which render."""
        super().__init__(parent)
        self.pipeline = pipeline
        self.service: ChatService = pipeline.service
        self.store = self.service.store
        self.loader = loader
        self.view = view
        self.cloud = cloud
        self.target = "local"  # or "provider:NAME"
        self.cloud_model: str | None = None  # None: the provider's default model
        self.failed_turn = None  # the last turn that ended in an error: Retry answers it again
        self.new_chat_route: str | None = None  # route of the chat not created yet (None: default)
        self.send_when_online = bool(self.service.settings["send_when_online"])
        # the sampling panel's values for the next turn (app.chat.service.TurnOptions), and its
        # best-of-n / self-consistency plan (app.chat.candidates.Plan or None)
        self.options_for_turn = None
        self.test_time_for_turn = None
        self.state: ControllerState = IDLE
        # one thread prepares turns, so the store keeps one connection for it
        self._prepare_thread = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="outpost-prepare")
        self.conversation_id: str | None = None
        self._turn = None
        self._held_offline = False  # the running turn is one Offline mode held for the outbox
        self._cancel: CancelWithReason | None = None
        self._buffer: list[str] = []
        self._bubble = None
        if flush_timer is None:
            flush_timer = QTimer(self)
            flush_timer.setInterval(FLUSH_MS)
        self._timer = flush_timer
        self._timer.timeout.connect(self._flush)
        # a reply whose final write failed (a full disk) is written again every SAVE_AGAIN_MS,
        # off this thread, until it lands (``ChatService.save_unsaved``)
        self._save_timer = QTimer(self)
        self._save_timer.setInterval(SAVE_AGAIN_MS)
        self._save_timer.timeout.connect(self._save_unsaved)
        self._saving: concurrent.futures.Future | None = None
        self._asked_again = False  # this turn's reply was not valid JSON and asked again

        self._thread = QThread(self)
        self._thread.setObjectName("outpost-stream-worker")
        self._worker = StreamWorker()
        self._worker.moveToThread(self._thread)
        self._thread.finished.connect(self._worker.deleteLater)
        self.turn_requested.connect(self._worker.run_turn)
        self.warm_up_requested.connect(self._worker.warm_up)
        self._worker.model_wait_started.connect(self._on_model_wait_started)
        self._mailbox = self._worker.mailbox  # the streamed text (see ui.stream_worker)
        self._rendered: tuple[str, str, object] | None = None  # the finished reply's HTML
        self._worker.reply_rendered.connect(self._on_reply_rendered)
        self._worker.turn_ended.connect(self._on_turn_ended)
        self._worker.turn_failed.connect(self._on_turn_failed)
        self._worker.seam_received.connect(self._on_seam)
        self._worker.restarted.connect(self._on_restart)
        self._worker.retrying.connect(self._on_retrying)
        self._worker.stalled.connect(self._on_stalled)
        self._worker.resent.connect(self._on_resent)
        self._worker.turn_queued.connect(self._on_turn_queued)
        self._worker.notice.connect(self.notice)
        self._thread.start()
        self.warm_up_requested.emit()

    # -- commands from the window -------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self.state != IDLE

    @property
    def conversation_id(self) -> str | None:
        """The conversation shown (None: a new chat, not saved yet)."""
        return self._conversation_id

    @conversation_id.setter
    def conversation_id(self, value: str | None) -> None:
        changed = value != getattr(self, "_conversation_id", None)
        self._conversation_id = value
        if changed:
            self.conversation_opened.emit(value or "")

    def send(self, prompt: str) -> bool:
        """Save the prompt and start the reply. False (and an error signal) if it cannot start."""
        if self.busy or (chosen := self._chosen()) is None:
            return False
        conversation_id, (target, options) = self.conversation_id, chosen
        try:
            pending = self._off_gui(lambda: self.pipeline.prepare(
                prompt, conversation_id, target=target, options=options))
        except OutpostError as exc:
            self.error_occurred.emit(exc)
            return False
        self._notice_fit(pending)
        self.conversation_id = pending.started.conversation_id
        self._show_prompt(pending, prompt)
        if pending.started.new_conversation:
            self.conversations_changed.emit()
        return True

    def _show_prompt(self, pending: PendingTurn, prompt: str) -> None:
        """The saved prompt's bubble, then the reply's, streaming."""
        user_bubble = self.view.add_bubble(Role.USER)
        user_bubble.set_text(prompt)
        user_bubble.message_id = pending.started.user_message_id
        self._run(pending)

    def retry(self) -> bool:
        """Answer the failed turn's saved prompt again, with the engine chosen now."""
        if self.busy or self.failed_turn is None:
            return False
        if self.failed_turn.conversation_id != self.conversation_id or \
                (chosen := self._chosen()) is None:
            return False
        failed, (target, options) = self.failed_turn, chosen
        try:  # the retry answers the way the panel says now (best of n included)
            pending = self._off_gui(lambda: self.pipeline.retry(failed, target=target,
                                                                options=options))
        except OutpostError as exc:
            self.error_occurred.emit(exc)
            return False
        if self.failed_turn.assistant_message_id:  # the new reply is a version beside it
            self.view.truncate_at(self.failed_turn.assistant_message_id)
        self._run(pending)
        return True

    def _off_gui(self, prepare: Callable[[], T]) -> T:
        """``prepare()`` on the prepare thread; its result (or its exception) here. Waits up to
        PREPARE_WAIT_S with the GUI thread blocked, then in a local event loop (the window
        paints, timers run; ``busy`` keeps every other command out meanwhile)."""
        future = self._prepare_thread.submit(prepare)
        try:
            return future.result(timeout=PREPARE_WAIT_S)
        except concurrent.futures.TimeoutError:
            pass
        loop = QEventLoop()
        # quit from the GUI thread's queue: a quit posted before exec() is still seen
        future.add_done_callback(lambda _done: QMetaObject.invokeMethod(
            loop, "quit", Qt.ConnectionType.QueuedConnection))
        previous = self.state
        self._set_state(PREPARING)
        try:
            if not future.done():
                loop.exec()
        finally:
            self._set_state(previous)
        return future.result()

    # -- the conversation tree: versions, regenerate, edit, delete, fork ----------------------
    def refused_while_busy(self, doing: str) -> bool:
        """True (and a UsageError shown) while a reply streams: the tree must not change under
        it."""
        if self.busy:
            self.error_occurred.emit(UsageError(f"Stop the reply before you {doing}."))
        return self.busy

    def versions(self, messages: list[Message] | None = None) -> dict[str, Versions]:
        """Every message of the current conversation that has other versions: its place among
        them (one query for the whole conversation, or ``messages`` already read)."""
        if self.conversation_id is None:
            return {}
        if messages is None:
            messages = self.store.messages(self.conversation_id)
        children: dict[str | None, list[str]] = {}
        for message in messages:  # oldest first
            children.setdefault(message.parent_id, []).append(message.id)
        return {mid: Versions(tuple(ids), index) for ids in children.values() if len(ids) > 1
                for index, mid in enumerate(ids)}

    def _show_versions(self) -> None:
        try:
            self.view.show_versions(self.versions())
        except OutpostError as exc:
            self.error_occurred.emit(exc)

    def switch_version(self, message_id: str) -> bool:
        """Make the path through ``message_id`` (a sibling of a message on screen) the active
        one and show it; the bubbles above it stay."""
        if self.conversation_id is None or self.refused_while_busy("switch versions"):
            return False
        was_in_view = self._focus_in_view()
        try:
            path = self.store.set_active(self.conversation_id, message_id)
            self.view.show_path(path, self.versions())
        except OutpostError as exc:
            self.error_occurred.emit(exc)
            return False
        shown = self.view.bubble_of(message_id)
        if was_in_view and shown is not None:  # by keyboard (Alt+Left): the next one goes on
            shown.setFocus()
        return True

    def keep_candidate(self, message_id: str, index: int) -> bool:
        """Best-of-n: candidate ``index`` of reply ``message_id`` becomes a version of its own
        beside it (the active one), and is shown."""
        if self.conversation_id is None or self.refused_while_busy("keep a candidate"):
            return False
        try:
            kept = self.store.keep_candidate(message_id, index)
            self.view.show_path(self.store.branch(self.conversation_id, kept.id),
                                self.versions())
        except OutpostError as exc:
            self.error_occurred.emit(exc)
            return False
        return True

    def regenerate(self, message_id: str, answerer: str | None = None) -> bool:
        """A new answer beside the reply ``message_id``, with the engine and knobs chosen now
        (``answerer``: "local" or "provider:NAME" for this answer only); the old answer stays
        as another version."""
        if self.refused_while_busy("regenerate a reply") or (chosen := self._chosen()) is None:
            return False
        target, options = chosen
        if answerer == "local":
            target = dataclasses.replace(target, provider=None, route="local")
        elif answerer is not None and answerer.startswith("provider:"):
            target = dataclasses.replace(target, provider=answerer.split(":", 1)[1], model=None,
                                         route="cloud")
        try:
            pending = self._off_gui(lambda: self.pipeline.regenerate(
                message_id, target=target, options=options))
        except OutpostError as exc:
            self.error_occurred.emit(exc)
            return False
        self._notice_fit(pending)
        was_in_view = self._focus_in_view()
        self.view.truncate_at(message_id)
        self._run(pending)
        self._focus_reply(was_in_view)
        return True

    def _focus_in_view(self) -> bool:
        """Whether the keyboard is in the conversation (a bubble, its editor, its buttons)."""
        focus = QGuiApplication.focusObject()
        return focus is not None and focus.isWidgetType() and \
            (focus is self.view or self.view.isAncestorOf(focus))

    def _focus_reply(self, was_in_view: bool) -> None:
        """After R on a reply or an edit sent from the keyboard, the new reply has the focus
        (its R, Alt+Left, Alt+Right work at once); taking the old bubbles away had left it on
        the whole view."""
        if was_in_view and self._bubble is not None:
            self._bubble.setFocus(Qt.FocusReason.OtherFocusReason)  # (with the ring)

    def edit_and_resend(self, message_id: str, text: str) -> bool:
        """Send ``text`` in place of the user message ``message_id``: a new message beside it
        (same parent), answered from the path above it; the old one and its replies stay."""
        if self.conversation_id is None or self.refused_while_busy("edit a message") or \
                (chosen := self._chosen()) is None:
            return False
        conversation_id, (target, options) = self.conversation_id, chosen
        try:
            original = self.store.get_message(message_id)
            pending = self._off_gui(lambda: self.pipeline.prepare(
                text, conversation_id, target=target, options=options,
                reply_to=original.parent_id or NEW_ROOT))
        except OutpostError as exc:
            self.error_occurred.emit(exc)
            return False
        self._notice_fit(pending)
        was_in_view = self._focus_in_view()
        self.view.truncate_at(message_id)
        self._show_prompt(pending, text)
        self._show_versions()
        self._focus_reply(was_in_view)
        return True

    def delete_message(self, message_id: str) -> list[str]:
        """Delete ``message_id`` and everything below it (the window asked first); show the
        active path as it is now. The ids deleted (none: refused, and said)."""
        if self.conversation_id is None or self.refused_while_busy("delete messages"):
            return []
        try:
            deleted = self.store.delete_subtree(message_id)
            self.view.show_path(self.store.branch(self.conversation_id), self.versions())
        except OutpostError as exc:
            self.error_occurred.emit(exc)
            return []
        self.conversations_changed.emit()
        return deleted

    def fork(self, message_id: str, profile: str | None) -> str | None:
        """A new conversation (of ``profile``) with copies of the path up to ``message_id``;
        opened here. Its id, or None."""
        if self.refused_while_busy("fork the conversation"):
            return None
        try:
            conversation = self.store.fork(message_id, profile)
        except OutpostError as exc:
            self.error_occurred.emit(exc)
            return None
        self.open_conversation(conversation.id)
        self.conversations_changed.emit()
        return conversation.id

    def _notice_fit(self, pending: PendingTurn) -> None:
        fit = pending.started.fit
        if fit is not None and fit.dropped:
            self.notice.emit(fit.describe_dropped())

    def set_target(self, target: str, model: str | None = None) -> None:
        self.target = target
        self.cloud_model = model or None

    # -- routing -------------------------------------------------------------------------------
    @property
    def provider(self) -> str | None:
        return self.target.split(":", 1)[1] if self.target.startswith("provider:") else None

    def conversation_route(self) -> str | None:
        """The current conversation's own route (None: it follows the default)."""
        if self.conversation_id is None:
            return self.new_chat_route
        try:
            return self.store.get_conversation(self.conversation_id).route
        except OutpostError:
            return None

    def effective_route(self) -> str:
        """The route policy the next turn takes (the core decides: ``TurnPipeline``)."""
        try:
            return self.pipeline.effective_route(self._target(), self.conversation_id).value
        except OutpostError:
            return self.service.settings["default_route"]

    def held_by_offline_mode(self) -> bool:
        """Offline mode keeps the next turn on the local model although it names a provider
        elsewhere: the composer offers "Send to P once Offline mode is off" (the core decides:
        ``TurnPipeline.held_by_offline_mode``)."""
        try:
            return self.pipeline.held_by_offline_mode(self._chosen_target(),
                                                      self.conversation_id)
        except OutpostError:
            return False

    def provider_on_this_computer(self) -> bool:
        """The chosen provider is on this computer (loopback: Offline mode lets it answer)."""
        return self.provider is not None and self.cloud is not None and \
            self.cloud.registry.on_this_computer(self.provider)

    def _target(self) -> TurnTarget:
        """What the user chose for the next turn: provider and model, the new chat's route,
        send-when-online, and the sampling panel's best-of-n / self-consistency. A turn
        Offline mode holds back with "Send to P once Offline mode is off" ticked asks the
        outbox to keep it for then (``outbox_asked``, as `ask --send-when-online` does)."""
        target = self._chosen_target()
        if not self.send_when_online:
            return target
        try:
            held = self.pipeline.held_by_offline_mode(target, self.conversation_id)
        except OutpostError:
            held = False
        return dataclasses.replace(target, outbox_asked=held)

    def _chosen_target(self) -> TurnTarget:
        return TurnTarget(
            provider=self.provider if self.cloud is not None else None, model=self.cloud_model,
            route=self.new_chat_route if self.conversation_id is None else None,
            send_when_online=self.send_when_online,
            test_time=self.test_time_for_turn() if self.test_time_for_turn is not None else None)

    def set_route(self, route: str | None) -> None:
        """Route policy of the current conversation (None: the settings' default)."""
        if self.conversation_id is None:
            self.new_chat_route = route
        else:
            try:  # (None: the default, whose route its queued items follow from now)
                moved = self.store.set_conversation_route(
                    self.conversation_id, route, self.service.settings["default_route"])
            except OutpostError as exc:
                self.error_occurred.emit(exc)
                return
            if moved:  # its queued replies say something else now (Local only: not sent)
                self.reload_conversation()
                self.outbox_changed.emit()
        self.route_changed.emit(self.effective_route())

    @Slot(str)
    def default_route_changed(self, route: str) -> None:
        """The settings' default route is ``route`` now: the queued items of the chats that
        follow it go with it (Local only: not sent), and say so."""
        try:
            moved = self.store.follow_default_route(route)
        except OutpostError as exc:
            self.error_occurred.emit(exc)
            return
        if moved:
            if self.conversation_id in moved:
                self.reload_conversation()
            self.outbox_changed.emit()

    def _chosen(self) -> tuple[TurnTarget, TurnOptions] | None:
        """The target and knobs the panel says for the next turn; None, and the error shown,
        when they make no turn (a self-consistency answer rule that is not a valid pattern):
        a refusal in the banner like any other, not an "unexpected error"."""
        try:
            return self._target(), self._options()
        except OutpostError as exc:
            self.error_occurred.emit(exc)
            return None

    def _options(self) -> TurnOptions:
        return self.options_for_turn() if self.options_for_turn is not None else TurnOptions()

    def prepare_measure(self, draft: str):
        """On the GUI thread: a job for the token meter (run in the background) that counts
        the prompt this draft would make, or None when there is nothing to count."""
        try:
            target, options = self._target(), self._options()
        except OutpostError:  # a knob being typed (a self-consistency answer "json:"): the
            return None       # panel shows why; Send says it again
        job = self.pipeline.measure(draft, self.conversation_id, target=target,
                                    options=options, local=self.loader.active)
        return None if job is None else (lambda: job().as_dict())

    def _run(self, pending: PendingTurn) -> None:
        self.failed_turn = None
        self._turn = pending.turn
        self._held_offline = pending.started.held_offline  # (the queued news says so)
        self._cancel = CancelWithReason()
        self._bubble = self.view.add_bubble(Role.ASSISTANT)
        self._bubble.set_placeholder("…")
        self._buffer.clear()
        self._mailbox.take_all()  # nothing of an earlier turn is left; this keeps it so
        self._rendered = None
        self._set_state(STREAMING)
        self._timer.start()
        self.turn_requested.emit(pending, self._cancel)

    def stop(self) -> None:
        if self.state in (STREAMING, WAITING) and self._cancel is not None:
            self._cancel.set()
            self._set_state(STOPPING)

    def open_conversation(self, conversation_id: str) -> None:
        if self.busy or conversation_id == self.conversation_id:
            return
        try:  # one read of the rows gives the path and the versions (5,000 rows: ~0.1 s each)
            everything = self.store.messages(conversation_id)
            messages = self.store.branch(conversation_id, messages=everything)
        except OutpostError as exc:
            self.error_occurred.emit(exc)
            return
        self.conversation_id = conversation_id
        self.view.show_messages(messages, self.versions(everything))
        self.route_changed.emit(self.effective_route())

    def reload_conversation(self) -> None:
        """Show the current conversation again from the database (an outbox answer arrived)."""
        if self.busy or self.conversation_id is None:
            return
        try:
            self.view.show_messages(self.store.branch(self.conversation_id), self.versions())
        except OutpostError as exc:
            self.error_occurred.emit(exc)

    @Slot(str)
    def reload_if_shown(self, conversation_id: str) -> None:
        """Show ``conversation_id`` again from the database when it is the one on screen (an
        outbox item of it failed)."""
        if conversation_id == self.conversation_id:
            self.reload_conversation()

    def new_conversation(self) -> None:
        if self.busy:
            return
        self.conversation_id = None
        self.new_chat_route = None
        self.view.clear()
        self.conversations_changed.emit()
        self.route_changed.emit(self.effective_route())

    def forget_conversation(self, conversation_id: str) -> None:
        """After a delete: clear the view if it showed that conversation."""
        if conversation_id == self.conversation_id:
            self.conversation_id = None
            self.view.clear()

    def save_later(self) -> None:
        """Replies kept in memory (``ChatService.unsaved``: this window's turns, the outbox's
        answers) are written again every SAVE_AGAIN_MS until they land."""
        if not self._save_timer.isActive():
            self._save_timer.start()

    @Slot()
    def _save_unsaved(self) -> None:
        """One step of writing the kept replies again: read the last try's result, start the
        next one; done (and said so) when nothing waits any more."""
        future = self._saving
        if future is not None and not future.done():
            return
        self._saving = None
        failure = future.exception() if future is not None else None
        if failure is not None:  # a bug, not a full disk: said, not tried forever in silence
            self._save_timer.stop()
            log.error("writing the kept replies failed", exc_info=failure)
            self.error_occurred.emit(failure if isinstance(failure, OutpostError) else
                                     ReplyNotSaved(f"The kept reply could not be saved: "
                                                   f"{failure!r}."))
            return
        if future is not None and future.result() == 0:
            self._save_timer.stop()
            self.notice.emit("The reply is saved now.")
            return
        self._saving = self._prepare_thread.submit(self.service.save_unsaved)

    def shutdown(self) -> None:
        self._save_timer.stop()
        if self.service.unsaved and self.service.save_unsaved():  # a last try
            log.warning("%d replies could not be saved before closing", len(self.service.unsaved))
        self._prepare_thread.shutdown(wait=False)
        if self._cancel is not None:  # closing is not the user's Stop: the reply says so
            self._cancel.set_because(CLOSING)
        self._timer.stop()
        self._thread.quit()
        self._thread.wait(30000)

    # -- from the worker ----------------------------------------------------------------------
    @Slot()
    def _on_model_wait_started(self) -> None:
        if self.state == STREAMING:
            self._set_state(WAITING)
            if self._bubble is not None:
                self._bubble.set_placeholder("Waiting for the model to finish loading…")

    def _take_text(self, everything: bool = False) -> None:
        """Move what the worker streamed meanwhile into the buffer (``everything``: the turn
        has ended, take what is left)."""
        text = self._mailbox.take_all() if everything else self._mailbox.take()
        if text:
            if self.state == WAITING:
                self._set_state(STREAMING)
            self._buffer.append(text)

    @Slot(str, str, int)
    def _on_seam(self, label: str, reason: str, offset: int) -> None:
        self._flush()  # the text before the seam; the text after it is let through below
        self._mailbox.unseal()
        if self._bubble is not None:
            self._bubble.add_seam(label, reason)

    @Slot(str)
    def _on_restart(self, reason: str) -> None:
        """The reply was not valid JSON and is asked for again: start the bubble over."""
        self._mailbox.take()  # the text before the restart is dropped
        self._mailbox.unseal()
        self._buffer.clear()
        if self._bubble is not None:
            self._bubble.restart("Not valid JSON; asking once more…")
        self._asked_again = True  # (the banner says so until the reply ends)
        self.notice.emit(reason)

    @Slot(object)
    def _on_retrying(self, retry: Retrying) -> None:
        """A cloud request failed before any text and is sent again after a wait: the reply's
        status says so while it waits (until text arrives)."""
        if self._bubble is not None and not self._bubble.text and not self._buffer:
            self._bubble.show_retrying(retry_text(retry))

    @Slot(object)
    def _on_resent(self, resent: Resent) -> None:
        """The server refused a parameter and the request went again at once without it: the
        reply's status says so, as a retry's does (until text arrives)."""
        if self._bubble is not None and not self._bubble.text and not self._buffer:
            self._bubble.show_retrying(resend_text(resent))

    @Slot(object)
    def _on_stalled(self, stalled: Stalled) -> None:
        """Nothing has come from the provider for a while (before the first text, or in the
        middle of the reply): the reply's status says so, and when it gives up, until text
        arrives (or the reply ends)."""
        if self._bubble is not None:
            self._flush()  # (text that came just before the silence goes first)
            # ◷: common fonts draw it (⏳ needs an emoji font: a box without one)
            self._bubble.show_retrying(stall_text(stalled), mark="◷")

    @Slot(object)
    def _on_turn_queued(self, queued: Queued) -> None:
        item = queued.item
        if queued.answered_locally and self._held_offline:
            message = (f"Offline mode is on, so the local model answered. Your message also "
                       f"waits in the outbox (item {item.id}); it is sent to {item.provider} "
                       f"once Offline mode is off, and the answer will appear next to this one.")
        else:
            # the real cause (a 429, a first-token timeout: no outage) and when it is tried next
            links = self.cloud.connectivity if self.cloud is not None else None
            message = queued_news(item, queued.answered_locally, links)
        self.outbox_changed.emit()
        self.notice.emit(message)

    @Slot()
    def _flush(self) -> None:
        self._take_text()
        if self._buffer and self._bubble is not None:
            self._bubble.append_text("".join(self._buffer))
            self._buffer.clear()

    @Slot(str, str, object)
    def _on_reply_rendered(self, text: str, html: str, palette_key: object) -> None:
        """The finished reply's HTML, rendered on the worker's thread (see ``_end_turn``)."""
        self._rendered = (text, html, palette_key)

    def _finished_html(self, message: Message) -> str | None:
        """The HTML the worker rendered for ``message``, if it still holds (same text, same
        palette); None: the bubble renders it itself."""
        rendered, self._rendered = self._rendered, None
        if rendered is None or rendered[0] != message.content or (message.segments and
                                                                 len(message.segments) > 1):
            return None
        return rendered[1] if rendered[2] == QGuiApplication.palette().cacheKey() else None

    @Slot(object)
    def _on_turn_ended(self, outcome: TurnOutcome) -> None:
        bubble, asked_again = self._bubble, self._asked_again
        self._end_turn(outcome.message)
        error = outcome.error
        if asked_again and error is None:  # the banner's "asking once more" is answered
            self.notice.emit("The reply asked for again is valid JSON.")
        if outcome.unsaved is not None:  # the reply is on screen as it ended; only not stored
            self.save_later()
            kept = (f"{outcome.unsaved} It stays here and is saved as soon as Outpost can "
                    "write again (it tries every few seconds).")
            if error is None or isinstance(error, Cancelled):
                self.error_occurred.emit(ReplyNotSaved(kept))
                return
            # the turn's own failure too (Retry answers it again), then the write's
            self.failed_turn = outcome.turn
            self.error_occurred.emit(ReplyNotSaved(f"{error} {kept}"))
            return
        if error is None or isinstance(error, Cancelled):
            return  # a reply (or the user's own stop): nothing to report
        if outcome.stream_failed:
            if bubble is not None and not bubble.text:
                bubble.show_no_reply()  # a queued message: the banner says it waits
            if outcome.queued is not None:  # Cloud only, provider unreachable: the outbox has it
                return
        # a failed stream, an empty (or blocked) reply, JSON still invalid after its repair:
        # say so, with Retry, rather than leave a blank or broken bubble
        self.failed_turn = outcome.turn
        self.error_occurred.emit(error)

    @Slot(object)
    def _on_turn_failed(self, error: OutpostError) -> None:
        """A bug ended the turn (the pipeline reports every expected failure in its outcome)."""
        turn, bubble = self._turn, self._bubble
        message = None
        if turn is not None and turn.assistant_message_id:
            try:
                message = self.store.get_message(turn.assistant_message_id)
            except OutpostError as exc:
                self.error_occurred.emit(exc)
        self._end_turn(message)
        if bubble is not None and not bubble.text:
            bubble.show_no_reply()
        self.failed_turn = turn
        self.error_occurred.emit(error)

    def _end_turn(self, message: Message | None) -> Message | None:
        """Back to idle, the bubble showing the stored reply as it ended."""
        self._timer.stop()
        self._asked_again = False
        self._take_text(everything=True)
        self._flush()
        if message is not None and self._bubble is not None:
            if message.content:  # rendered whole once, as it shows when reopened (a checked,
                # maybe repaired, JSON reply included); its Markdown was rendered off this thread
                self._bubble.message_id = message.id  # (so the render cache keeps it)
                self._bubble.set_text(message.content, message.segments,
                                      rendered=self._finished_html(message))
            if not message.content:
                self._bubble.show_no_reply()
            self._bubble.show_message_state(message)
        self._turn = None
        self._cancel = None
        if message is not None:  # a regenerated reply or a retry is a new version
            self._show_versions()
        self._set_state(IDLE)
        self.conversations_changed.emit()
        self.reply_finished.emit(message)
        return message

    def _set_state(self, state: ControllerState) -> None:
        if state != self.state:
            self.state = state
            self.state_changed.emit(state)
