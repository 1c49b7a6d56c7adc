"""The GUI-thread state machine of one chat: idle -> (waiting_for_model) -> streaming ->
(stopping) -> idle.

It saves the prompt through ChatService (committed before anything is sent), hands the turn to the
StreamWorker's thread, buffers the deltas that come back and flushes them to the view on a timer
(every FLUSH_MS), so a fast model never makes the window re-render per token.
"""
from __future__ import annotations

import threading
from enum import StrEnum

from PySide6.QtCore import QObject, QThread, QTimer, Signal, Slot

from app.chat_service import ChatService, OutboxPlan
from app.domain import Finished, FinishReason, Message, Role
from app.errors import ModelError, OutpostError
from app.router import Route, RoutedEngine, decide_route
from engines.registry import CloudTargets
from ui.conversation_view import ConversationView
from ui.model_loader import ModelLoader
from ui.stream_worker import StreamWorker

FLUSH_MS = 33


class ControllerState(StrEnum):
    """Where the current turn is. A ``StrEnum``: ``state_changed`` carries it as its text."""

    IDLE = "idle"
    WAITING = "waiting_for_model"  # the message is saved; the model is still loading
    STREAMING = "streaming"
    STOPPING = "stopping"  # cancel was asked; the engine ends within one token


IDLE, WAITING, STREAMING, STOPPING = (ControllerState.IDLE, ControllerState.WAITING,
                                      ControllerState.STREAMING, ControllerState.STOPPING)


class ChatController(QObject):
    state_changed = Signal(str)
    conversations_changed = Signal()
    reply_finished = Signal(object)  # the stored assistant Message, or None
    error_occurred = Signal(str, str)  # kind, plain message
    notice = Signal(str)  # plain news that is not an error (a message queued in the outbox)
    outbox_changed = Signal()
    route_changed = Signal(str)  # the effective route policy of the current conversation
    turn_requested = Signal(object, object, object)  # -> StreamWorker.run_turn (queued)

    def __init__(self, service: ChatService, loader: ModelLoader, view: ConversationView,
                 cloud: "CloudTargets | None" = None, parent: QObject | None = None,
                 flush_timer=None):
        """``flush_timer``: what paces the renders while a reply streams (anything with
        ``start()``, ``stop()`` and a ``timeout`` signal); default a QTimer every FLUSH_MS. Tests
        pass one they fire by hand, to see exactly which deltas land in which render."""
        super().__init__(parent)
        self.service = service
        self.store = service.store
        self.loader = loader
        self.view = view
        self.cloud = cloud
        self.target = "local"  # or "provider:NAME"
        self.cloud_model: str | None = None  # None: the provider's default model
        self.failed_turn = None  # the last turn that ended in an error: Retry answers it again
        self.new_chat_route: str | None = None  # route of the chat not created yet (None: default)
        self.send_when_online = bool(service.settings["send_when_online"])
        # the sampling panel's values for the next turn (app.chat_service.TurnOptions), and its
        # best-of-n / self-consistency plan (app.candidates.Plan or None)
        self.options_for_turn = None
        self.test_time_for_turn = None
        self.state: ControllerState = IDLE
        self.conversation_id: str | None = None
        self._turn = None
        self._cancel: threading.Event | None = None
        self._buffer: list[str] = []
        self._bubble = None
        if flush_timer is None:
            flush_timer = QTimer(self)
            flush_timer.setInterval(FLUSH_MS)
        self._timer = flush_timer
        self._timer.timeout.connect(self._flush)

        self._thread = QThread(self)
        self._thread.setObjectName("outpost-stream-worker")
        self._worker = StreamWorker(service)
        self._worker.moveToThread(self._thread)
        self._thread.finished.connect(self._worker.deleteLater)
        self.turn_requested.connect(self._worker.run_turn)
        self._worker.model_wait_started.connect(self._on_model_wait_started)
        self._worker.delta_received.connect(self._on_delta)
        self._worker.turn_finished.connect(self._on_turn_finished)
        self._worker.turn_failed.connect(self._on_turn_failed)
        self._worker.seam_received.connect(self._on_seam)
        self._worker.restarted.connect(self._on_restart)
        self._worker.turn_queued.connect(self._on_turn_queued)
        self._thread.start()

    # -- commands from the window -------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self.state != IDLE

    def send(self, prompt: str) -> bool:
        """Save the prompt and start the reply. False (and an error signal) if it cannot start."""
        if self.busy:
            return False
        planned = self._engine_for_turn()
        if planned is None:
            return False
        engine, reason, plan = planned
        try:
            options = self._options()
            engine = self._with_candidates(engine, options)
            counter = engine if hasattr(engine, "count_prompt") else None
            turn = self.service.start_turn(prompt, self.conversation_id, model=engine.info.model,
                                           options=options,
                                           route=self.new_chat_route, counter=counter,
                                           effective_route=self._last_route)
        except OutpostError as exc:
            self.error_occurred.emit(exc.kind, str(exc))
            return False
        turn.route_reason, turn.outbox_plan = reason, plan
        if turn.fit is not None and turn.fit.dropped:
            self.notice.emit(turn.fit.describe_dropped())
        new_conversation = self.conversation_id is None
        self.conversation_id = turn.conversation_id
        user_bubble = self.view.add_bubble(Role.USER)
        user_bubble.set_text(prompt)
        self._run(turn, engine)
        if new_conversation:
            self.conversations_changed.emit()
        return True

    def retry(self) -> bool:
        """Answer the failed turn's saved prompt again, with the engine chosen now."""
        if self.busy or self.failed_turn is None:
            return False
        if self.failed_turn.conversation_id != self.conversation_id:
            return False
        planned = self._engine_for_turn()
        if planned is None:
            return False
        engine, reason, plan = planned
        try:  # the retry answers the way the panel says now (best of n included)
            engine = self._with_candidates(engine, self._options())
        except OutpostError as exc:
            self.error_occurred.emit(exc.kind, str(exc))
            return False
        turn = self.service.retry_turn(self.failed_turn)
        turn.route_reason, turn.outbox_plan = reason, plan
        self._run(turn, engine)
        return True

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
        settings = self.service.settings
        if settings["offline_mode"]:
            return "local"
        return self.conversation_route() or settings["default_route"]

    def set_route(self, route: str | None) -> None:
        """Route policy of the current conversation (None: the settings' default)."""
        if self.conversation_id is None:
            self.new_chat_route = route
        else:
            try:
                self.store.set_conversation_route(self.conversation_id, route)
            except OutpostError as exc:
                self.error_occurred.emit(exc.kind, str(exc))
                return
        self.route_changed.emit(self.effective_route())

    def _with_candidates(self, engine, options):
        """Best-of-n / self-consistency around the engine, checked before anything is saved."""
        tt = self.test_time_for_turn() if self.test_time_for_turn is not None else None
        if tt is None:
            return engine
        from app.candidates import CandidatesEngine
        from app.errors import UsageError

        temperature = options.temperature if options.temperature is not None \
            else self.service.settings["temperature"]
        if temperature == 0:
            raise UsageError("With temperature 0 every candidate is the same reply; raise the "
                             "temperature for best of n or self-consistency.")
        return CandidatesEngine(engine, tt)

    def _options(self):
        from app.chat_service import TurnOptions

        return self.options_for_turn() if self.options_for_turn is not None else TurnOptions()

    def prepare_measure(self, draft: str):
        """On the GUI thread: a job for the token meter (run in the background) that counts
        the prompt this draft would make, or None when there is nothing to count."""
        from app.chat_service import history_messages
        from app.domain import ChatMessage

        if not draft.strip():
            return None
        settings = self.service.settings
        options = self._options()
        max_tokens = options.max_tokens or settings["max_tokens"]
        counter = None
        if Route(self.effective_route()) is Route.LOCAL or self.provider is None:
            counter = self.loader.active
        elif self.cloud is not None:
            try:
                counter = self.cloud.engine(self.provider, self.cloud_model)
            except OutpostError:
                counter = None  # no key yet, …: the estimate below
        store, conversation_id = self.store, self.conversation_id
        system_prompt = options.system_prompt

        def job() -> dict | None:
            previous, system = [], settings["system_prompt"]
            if conversation_id is not None:
                system = store.get_conversation(conversation_id).system_prompt
                previous = store.messages(conversation_id)
            if system_prompt is not None:  # the panel's, about to be sent
                system = system_prompt
            messages = history_messages(system, previous) + [ChatMessage(Role.USER, draft)]
            if counter is None:  # no tokenizer: a documented estimate (chars / 4)
                tokens = sum(len(m.content) // 4 + 4 for m in messages) + 3
                return {"tokens": tokens, "exact": False, "window": None,
                        "max_tokens": max_tokens, "cost": None}
            tokens, exact = counter.count_prompt(messages)
            cost = counter.estimate_cost(tokens, max_tokens) \
                if hasattr(counter, "estimate_cost") else None
            return {"tokens": tokens, "exact": exact, "window": counter.context_window,
                    "max_tokens": max_tokens, "cost": cost}

        return job

    def _local_engine(self):
        engine = self.loader.engine_for_turn()
        if engine is None:
            raise ModelError("No model is loaded. Choose a GGUF file with Model ▸ Open model "
                             "file…, or use the bundled model.")
        return engine

    def _engine_for_turn(self):
        """(engine, route reason, outbox plan) for the next turn, or None (error emitted).
        A Local only turn (and Offline mode) never builds a cloud engine."""
        settings = self.service.settings
        try:
            decision = decide_route(self.conversation_route(), settings["default_route"],
                                    settings["offline_mode"],
                                    self.provider if self.cloud is not None else None)
            self._last_route = decision.route.value
            if decision.route is Route.LOCAL:
                return self._local_engine(), decision.reason, None
            model = self.cloud_model
            cloud = self.cloud.engine(self.provider, model)
            plan = OutboxPlan(self.provider, model, always=decision.route is Route.CLOUD,
                              with_local=self.send_when_online)
            if decision.route is Route.CLOUD:
                return cloud, "cloud-only conversation", plan
            routed = RoutedEngine(cloud, self._local_engine, self.cloud.connectivity,
                                  hedge_after_s=settings["hedge_after_s"],
                                  on_attempt=self.cloud.pool.on_attempt)
            return routed, None, plan
        except OutpostError as exc:
            self.error_occurred.emit(exc.kind, str(exc))
            return None

    def _run(self, turn, engine) -> None:
        self.failed_turn = None
        self._turn = turn
        self._cancel = threading.Event()
        self._bubble = self.view.add_bubble(Role.ASSISTANT)
        self._bubble.set_placeholder("…")
        self._buffer.clear()
        self._set_state(STREAMING)
        self._timer.start()
        self.turn_requested.emit(turn, engine, self._cancel)

    def stop(self) -> None:
        if self.state in (STREAMING, WAITING) and self._cancel is not None:
            self._cancel.set()
            self._set_state(STOPPING)

    def open_conversation(self, conversation_id: str) -> None:
        if self.busy or conversation_id == self.conversation_id:
            return
        try:
            messages = self.store.messages(conversation_id)
        except OutpostError as exc:
            self.error_occurred.emit(exc.kind, str(exc))
            return
        self.conversation_id = conversation_id
        self.view.show_messages(messages)
        self.route_changed.emit(self.effective_route())

    def reload_conversation(self) -> None:
        """Show the current conversation again from the database (an outbox answer arrived)."""
        if self.busy or self.conversation_id is None:
            return
        try:
            self.view.show_messages(self.store.messages(self.conversation_id))
        except OutpostError as exc:
            self.error_occurred.emit(exc.kind, str(exc))

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

    def shutdown(self) -> None:
        if self._cancel is not None:
            self._cancel.set()
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

    @Slot(str)
    def _on_delta(self, text: str) -> None:
        if self.state == WAITING:
            self._set_state(STREAMING)
        self._buffer.append(text)

    @Slot(str, str, int)
    def _on_seam(self, label: str, reason: str, offset: int) -> None:
        self._flush()
        if self._bubble is not None:
            self._bubble.add_seam(label, reason)

    @Slot(str)
    def _on_restart(self, reason: str) -> None:
        """The reply was not valid JSON and is asked for again: start the bubble over."""
        self._buffer.clear()
        if self._bubble is not None:
            self._bubble.restart("Not valid JSON; asking once more…")
        self.notice.emit(reason)

    @Slot(str)
    def _on_turn_queued(self, message: str) -> None:
        self.outbox_changed.emit()
        self.notice.emit(message)

    @Slot()
    def _flush(self) -> None:
        if self._buffer and self._bubble is not None:
            self._bubble.append_text("".join(self._buffer))
            self._buffer.clear()

    @Slot(object)
    def _on_turn_finished(self, finish: Finished | None) -> None:
        turn = self._turn
        message = self._end_turn()
        if finish is not None and finish.reason is FinishReason.ERROR:
            self.failed_turn = turn
            error = finish.error
            self.error_occurred.emit(getattr(error, "kind", "engine"), str(error))
        elif message is not None and message.error and (
                message.status.value == "error" or
                (message.output_check and not message.output_check.get("valid"))):
            # an empty (or blocked) reply, or JSON still invalid after its repair: say so,
            # with Retry, rather than leave a blank or broken bubble
            self.failed_turn = turn
            self.error_occurred.emit("empty_reply" if message.status.value == "error"
                                     else "invalid_json", message.error)

    @Slot(str, str)
    def _on_turn_failed(self, kind: str, message: str) -> None:
        turn, bubble = self._turn, self._bubble
        self._end_turn()
        if bubble is not None and not bubble.text:
            bubble.set_placeholder("No reply yet." if kind == "queued" else "No reply.")
        if kind == "queued":  # Cloud only, provider unreachable: the outbox has it
            return
        self.failed_turn = turn
        self.error_occurred.emit(kind, message)

    def _end_turn(self) -> None:
        self._timer.stop()
        self._flush()
        message: Message | None = None
        if self._turn is not None and self._turn.assistant_message_id:
            try:
                message = self.store.get_message(self._turn.assistant_message_id)
            except OutpostError as exc:
                self.error_occurred.emit(exc.kind, str(exc))
        if message is not None and self._bubble is not None:
            if message.output_check and message.content:  # checked (maybe repaired) JSON
                self._bubble.set_text(message.content, message.segments)
            elif message.content and not self._bubble.text:
                self._bubble.append_text(message.content)
            if not message.content:
                self._bubble.set_placeholder("(no text)")
            self._bubble.show_message_state(message)
        self._turn = None
        self._cancel = None
        self._set_state(IDLE)
        self.conversations_changed.emit()
        self.reply_finished.emit(message)
        return message

    def _set_state(self, state: ControllerState) -> None:
        if state != self.state:
            self.state = state
            self.state_changed.emit(state)
