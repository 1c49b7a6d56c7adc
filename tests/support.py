"""Small helpers shared by several test modules (fixtures live in conftest.py)."""
from __future__ import annotations

import functools
import threading
from collections import deque
from pathlib import Path

from app.domain.messages import estimate_prompt_tokens
from engines.base import EngineBase, EngineCapabilities


def files_holding(path: Path, word: str) -> list[str]:
    """Which of a database's files hold ``word``, as a program reading the disk sees them (the
    database and its write-ahead log; the ``-shm`` index holds no rows)."""
    return [part.name for part in (path, path.with_name(path.name + "-wal"))
            if part.exists() and word.encode() in part.read_bytes()]


class Clock:
    """A virtual monotonic clock: tests move ``now`` by hand."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def send(qtbot, app, text: str) -> None:
    """Type ``text`` into the window's composer, press Enter, wait until the reply is done."""
    from PySide6.QtCore import Qt

    edit = app.window.composer.edit
    qtbot.keyClicks(edit, text)
    qtbot.keyClick(edit, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: app.window.controller.state == "idle", timeout=60000)


def wire_engine(wire: str, server_url: str):
    """A real cloud engine of ``wire`` ("openai" / "anthropic") against a fault server."""
    from app.config.providers import ProviderConfig
    from engines.anthropic import AnthropicEngine
    from engines.openai_compat import OpenAICompatEngine

    if wire == "openai":
        return OpenAICompatEngine(ProviderConfig("f", "openai", server_url + "/v1",
                                                 "test-model"), "sk-test")
    return AnthropicEngine(ProviderConfig("f", "anthropic", server_url, "claude-t"), "sk-test")


# -- a scripted local engine for the real window -------------------------------------------------
def reply(*deltas: str, prompt_tokens: int = 30, ttft_ms: float = 120.0,
          tokens_per_s: float = 42.5) -> list:
    """The events of one known reply: each delta (one token each), its usage, a clean stop."""
    from app.domain.messages import Finished, FinishReason, TextDelta, Usage

    return [*(TextDelta(d) for d in deltas), Usage(prompt_tokens, len(deltas)),
            Finished(FinishReason.STOP, ttft_ms=ttft_ms, tokens_per_s=tokens_per_s)]


def held_open(*deltas: str):
    """A long reply: streams ``deltas``, then waits (as a model still decoding would) until the
    turn is cancelled; ScriptedEngine then ends it as cancelled."""
    from app.domain.messages import TextDelta

    def play(request, cancel):
        yield from (TextDelta(d) for d in deltas)
        cancel.wait(60)  # a safety net: a test that never cancels ends here, not hangs

    return play


class ScriptedEngine(EngineBase):
    """Stands in for the local model: plays known replies, one script per turn, in order.

    ``OutpostApp(engine_factory=engine.factory)`` puts it where the real model goes, so a turn
    takes the window's own path: ModelLoader, the stream worker's thread, the signals, the flush
    timer, ChatService and the store, the usage ledger (one AttemptRecord per reply, as the local
    engine reports). A script is a list of StreamEvents, or ``play(request, cancel)`` returning an
    iterable of them. Cancel is honoured between events (Usage + Finished(CANCELLED), as the
    Engine contract says). ``ready=False``: it "loads" until the test calls ``finish_loading``
    (or ``fail_loading``, as a file llama.cpp refuses).
    """

    context_window = 8192

    def __init__(self, *scripts, model: str = "scripted-model.gguf", ready: bool = True):
        self.scripts = deque(scripts)
        self.model = model
        self.requests: list = []  # every ChatRequest it was asked to answer
        self.loads: list = []  # the model paths the window asked for
        self.on_attempt = None
        self.closed = False
        self._load_error: Exception | None = None
        self._loaded = threading.Event()
        if ready:
            self._loaded.set()

    def factory(self, settings, model_path=None, on_attempt=None) -> "ScriptedEngine":
        """OutpostApp's ``engine_factory``: every model load gets this engine."""
        self.loads.append(model_path)
        self.on_attempt = on_attempt
        return self

    def script(self, *scripts) -> None:
        """Queue the replies of the next turns."""
        self.scripts.extend(scripts)

    def finish_loading(self) -> None:
        self._loaded.set()

    def fail_loading(self, error: Exception) -> None:
        """End the "load" with ``error`` (``wait_ready`` raises it), as the local engine does."""
        self._load_error = error
        self._loaded.set()

    # -- what the window uses --------------------------------------------------------------------
    @property
    def capabilities(self) -> EngineCapabilities:  # type: ignore[override]
        """What it stands in for: the local model (app.domain.sampling's "local" row), loading in
        the
        background, its attempts in the usage ledger once the window wired it."""
        return EngineCapabilities(knob_kind="local", loads_in_background=True,
                                  logs_own_attempts=self.on_attempt is not None)

    @property
    def info(self):
        from engines.base import EngineInfo

        return EngineInfo(engine="local", model=self.model, detail="scripted, no model")

    @property
    def ready(self) -> bool:
        return self._loaded.is_set() and self._load_error is None

    def wait_ready(self, timeout: float | None = 60) -> None:
        if not self._loaded.wait(timeout):
            from app.domain.errors import EngineError

            raise EngineError(f"The model {self.model} is still loading.")
        if self._load_error is not None:
            raise self._load_error

    def count_prompt(self, messages) -> tuple[int, bool]:
        """The documented estimate (chars / 4), marked as not exact."""
        return estimate_prompt_tokens(messages), False

    def stream(self, request, cancel):
        from app.domain.messages import Finished, FinishReason, TextDelta, Usage

        self.requests.append(request)
        script = self.scripts.popleft() if self.scripts else reply("(no reply was scripted)")
        if callable(script):
            script = script(request, cancel)
        tokens, usage = 0, None
        for event in script:
            if cancel.is_set():
                break
            if isinstance(event, Exception):  # an OutpostError before any text, say
                raise event
            if isinstance(event, TextDelta):
                tokens += 1
            elif isinstance(event, Usage):
                usage = event
            elif isinstance(event, Finished):
                self._record(request, usage, event)
            yield event
            if isinstance(event, Finished):
                return
        # cancelled (or a script with no end): close the stream as the contract says
        usage = Usage(self.count_prompt(request.messages)[0], tokens, estimated=True)
        finish = Finished(FinishReason.CANCELLED if cancel.is_set() else FinishReason.STOP)
        self._record(request, usage, finish)
        yield usage
        yield finish

    def _record(self, request, usage, finish) -> None:
        if self.on_attempt is None:
            return
        from engines.http_policy import AttemptRecord

        self.on_attempt(AttemptRecord(
            attempt=1, status=None, latency_ms=0.0, error_kind=None,
            idempotency_key=request.idempotency_key, provider="local", model=self.model,
            outcome="cancelled" if finish.reason.value == "cancelled" else None,
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
            ttft_ms=finish.ttft_ms, kind="local"))

    def close(self) -> None:
        self.closed = True


@functools.cache
def _manual_ticker_class():
    from PySide6.QtCore import QObject, Signal

    class ManualTicker(QObject):
        """The controller's flush timer, fired by hand: a render happens on ``tick()`` only."""

        timeout = Signal()

        def __init__(self):
            super().__init__()
            self.active = False

        def start(self) -> None:
            self.active = True

        def stop(self) -> None:
            self.active = False

        def tick(self) -> None:
            assert self.active, "the flush timer only runs while a reply streams"
            self.timeout.emit()

    return ManualTicker


def manual_ticker():
    """A flush timer for ``OutpostApp(flush_timer=...)`` that fires only when told to."""
    return _manual_ticker_class()()


class FixedEngines:
    """An ``app.chat.pipeline.EngineSource`` that answers every turn with one engine (local or
    cloud alike): drives the turn pipeline with a scripted engine."""

    connectivity = None

    def __init__(self, engine, cloud=None, here: bool = False):
        """``here``: the cloud engine stands for a provider on this computer (loopback, which
        Offline mode lets answer); by default for one elsewhere, fault server or not."""
        self.engine, self.cloud_engine, self.here = engine, cloud, here
        self.attempts: list = []

    def on_this_computer(self, provider) -> bool:
        return self.here

    def on_attempt(self, record) -> None:
        self.attempts.append(record)

    def local(self, model=None):
        return self.engine

    def cloud(self, provider, model=None):
        if self.cloud_engine is None:
            from app.domain.errors import UsageError

            raise UsageError(f"No cloud engine for {provider} in this test.")
        return self.cloud_engine


class Borrowed(EngineBase):
    """The shared warm local engine, lent to a router that would close it: every member of the
    contract is the engine's, except that ``close`` leaves it open."""

    def __init__(self, engine):
        self.engine = engine

    @property
    def info(self):
        return self.engine.info

    @property
    def capabilities(self):  # type: ignore[override]
        return self.engine.capabilities

    @property
    def ready(self) -> bool:
        return self.engine.ready

    def wait_ready(self, timeout=None) -> None:
        self.engine.wait_ready(timeout)

    @property
    def context_window(self):
        return self.engine.context_window

    def count_prompt(self, messages):
        return self.engine.count_prompt(messages)

    def messages_as_sent(self, messages, response_format):
        return self.engine.messages_as_sent(messages, response_format)

    def stream(self, request, cancel):
        return self.engine.stream(request, cancel)

    def outcome(self):
        return self.engine.outcome()

    def check_adapters(self, adapters) -> None:
        self.engine.check_adapters(adapters)

    def close(self) -> None:
        return None


def fault_cloud(url: str, store, **timeouts):
    """A real OpenAI-compatible engine against a fault server, its attempts in ``store``'s
    request log; quick retries and short deadlines (override them with ``timeouts``)."""
    from app.config.providers import ProviderConfig
    from engines.http_policy import RetryPolicy, Timeouts
    from engines.openai_compat import OpenAICompatEngine

    return OpenAICompatEngine(
        ProviderConfig("fault", "openai", url, "test-model"), "sk-test",
        policy=RetryPolicy(initial_backoff=0.01, max_backoff=0.02),
        timeouts=Timeouts(**{"connect": 1, "first_token": 3, "idle": 2, **timeouts}),
        on_attempt=store.log_attempt)


def grab_in_palette(qtbot, widget, path, theme_name: str, redraw=None) -> None:
    """Save a screenshot of ``widget`` under the light or dark palette (``ui.theme``), then put
    the application's palette back; ``redraw()`` runs once the palette is set."""
    from PySide6.QtWidgets import QApplication

    from ui.theme import dark_palette, light_palette

    app = QApplication.instance()
    old = app.palette()
    app.setPalette(dark_palette() if theme_name == "dark" else light_palette())
    try:
        if redraw is not None:
            redraw()
        qtbot.wait(50)
        widget.grab().save(str(path))
    finally:
        app.setPalette(old)


# -- a real full disk: a small tmpfs in a private mount namespace -------------------------------
def in_mount_namespace(script: str, *args: str, **run_options):
    """``sh -c script args…`` in a private mount namespace, where ``script`` mounts a small tmpfs
    (exiting 97 when it cannot) and runs the test's command: ``unshare -rm`` (a user and mount
    namespace), else ``unshare -m`` (root). Fails, never skips, when neither can mount: CI runs
    as root on the image where both work."""
    import subprocess

    import pytest

    attempts = []
    for unshare in (["unshare", "-rm"], ["unshare", "-m"]):
        try:
            done = subprocess.run([*unshare, "sh", "-c", script, *args], capture_output=True,
                                  text=True, check=False, **run_options)
        except FileNotFoundError:
            pytest.fail("This test needs `unshare` (util-linux) to mount a small tmpfs.")
        if done.returncode != 97 and not done.stderr.startswith("unshare:"):
            return done
        attempts.append(f"{' '.join(unshare)}: {done.stderr.strip()}")
    pytest.fail("This test needs a small tmpfs and could not mount one (" + "; ".join(attempts)
                + "); run it as root or where user namespaces are allowed.")


def answer_confirmations(monkeypatch, *pressed: str | tuple[str, bool]) -> list[dict]:
    """Answer the next confirmations (``ui.confirm``) by pressing ``pressed`` in turn: an action
    button's text ("Delete") or "Cancel"; ``("Delete", False)`` unchecks the question's check
    box first. Each question is shown to nothing; what it asked is returned (title, text,
    buttons, default; its check box's text and whether it was checked at first: ``option``,
    ``checked``) as it is asked."""
    from ui.confirm import Confirmation

    answers, asked = list(pressed), []

    def exec_(box) -> int:
        buttons = [button.text().replace("&", "") for button in box.buttons()]
        option = box.checkBox()
        asked.append({"title": box.windowTitle(), "text": box.text(), "buttons": buttons,
                      "default": box.defaultButton().text().replace("&", ""),
                      "option": option.text() if option is not None else None,
                      "checked": option is not None and option.isChecked()})
        press = answers.pop(0)
        if isinstance(press, tuple):
            press, keep = press
            option.setChecked(keep)
        [button] = [b for b in box.buttons() if b.text().replace("&", "") == press]
        button.click()
        return 0

    monkeypatch.setattr(Confirmation, "exec", exec_)
    return asked


def refuse_final_writes(monkeypatch, store, error=None) -> None:
    """``store``'s writes that end a reply (any status but streaming) raise ``error`` (a full
    disk, by default); the writes of its text as it streams go through. ``monkeypatch.undo()``
    gives the disk room again."""
    from app.domain.errors import KnownStorageError
    from app.domain.messages import MessageStatus

    refused = error or KnownStorageError("The disk is full.")
    real_update = store.update_message

    def update(message_id, **fields):
        if fields.get("status") not in (None, MessageStatus.STREAMING):
            raise refused
        return real_update(message_id, **fields)

    monkeypatch.setattr(store, "update_message", update)
