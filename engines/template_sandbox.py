"""Rendering a model's chat template with limits: a GGUF file is untrusted input.

A chat template is Jinja code that comes inside the model file. Jinja's sandbox already stops
it from reaching Python's internals (``SecurityError``); this module adds what the sandbox does
not bound, so that a hostile or broken template ends as one sentence (a ``ModelInvalid``: the
model file cannot be used) instead of a traceback, a hang or all the memory:

- **time**: a render has ``RENDER_SECONDS``. A watchdog timer raises an exception *inside* the
  rendering thread when the time is up (``PyThreadState_SetAsyncExc``; the interpreter delivers
  it at its next loop back-edge or call), which also stops loops that call nothing (``{% for i
  in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}`` would run for
  hours) and costs nothing while a render is quick. (A ``sys.settrace`` deadline did the same
  at 12x the render time: 1 ms → 12 ms for 400 messages.) Every call the template makes checks
  the deadline too.
- **size**: the template itself is at most ``TEMPLATE_MAX_CHARS`` (real chat templates are a few
  KB; the longest seen, with tool calling, ~20 KB); its output at most ``output_limit`` characters
  (more text than any context window holds); ``*``, ``**`` and ``%`` are checked before they run,
  and so are huge numbers handed to functions (``'x'.ljust(10**9)``), because C code that
  allocates a gigabyte never reaches a line the deadline can see.
- **sticky**: a template that broke the sandbox, ran out of time or produced too much is broken
  for good: every later render fails at once with the same sentence (the window counts tokens as
  the user types; each count must not cost the deadline again).

A template that *refuses a conversation* (``raise_exception("Conversation roles must
alternate…")``) or fails on it is not broken for good: that sentence names the conversation.
"""
from __future__ import annotations

import ctypes
import json
import re
import threading
import time
from datetime import datetime
from typing import Any, Callable

import jinja2
import jinja2.ext
from jinja2.exceptions import SecurityError, TemplateError, TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from app.domain.errors import ModelInvalid

TEMPLATE_MAX_CHARS = 1 << 20  # 1 Mi characters
RENDER_SECONDS = 2.0
BIG_NUMBER = 1 << 24  # no chat template needs a number this large (16 Mi) for its text
_WIDE_FORMAT = re.compile(r"%[-+ #0]*(\d{7,})")  # '%099999999d': a huge width


class _Overrun(Exception):
    """Raised inside a render that passed a limit (caught by ``GuardedTemplate.render``)."""

    def __init__(self, what: str):
        super().__init__(what)
        self.what = what


class _IgnoreGenerationTags(jinja2.ext.Extension):
    """Hugging Face's ``{% generation %}…{% endgeneration %}``: its content, as is."""

    tags = {"generation"}

    def parse(self, parser):
        parser.stream.skip(1)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    """``tojson`` as transformers renders it (no HTML escaping)."""
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


class _LimitedEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox, plus a deadline on every call and sizes checked before ``*``, ``**``, ``%``.
    Intercepting an operator also keeps Jinja from folding it at compile time (where
    ``{{ 9**9**9 }}`` would hang before any render)."""

    intercepted_binops = frozenset(["*", "**", "%"])

    def __init__(self, budget: "_Budget"):
        super().__init__(loader=jinja2.BaseLoader(), trim_blocks=True, lstrip_blocks=True,
                         extensions=[_IgnoreGenerationTags, jinja2.ext.loopcontrols])
        self.filters["tojson"] = _tojson
        self.budget = budget

    def call(self, __context, __obj, *args, **kwargs):  # noqa: N807 (Jinja's signature)
        self.budget.check()
        for value in (*args, *kwargs.values()):
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) > BIG_NUMBER:
                raise _Overrun(f"a number too large for a chat template ({value:.3g})")
        return super().call(__context, __obj, *args, **kwargs)

    def call_binop(self, context, operator, left, right):
        self.budget.check()
        if operator == "**" and isinstance(left, (int, float)) and isinstance(right, (int, float)):
            if abs(right) > 64 or abs(left) > BIG_NUMBER:
                raise _Overrun("a power too large for a chat template")
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(times, int) \
                        and len(seq) * times > self.budget.output_limit:
                    raise _Overrun("a repeated text too long for a chat template")
        if operator == "%" and isinstance(left, str) and _WIDE_FORMAT.search(left):
            raise _Overrun("a format width too large for a chat template")
        return super().call_binop(context, operator, left, right)


class _Budget:
    """The deadline of one render, checked by the trace function and by every call."""

    def __init__(self, seconds: float, clock: Callable[[], float]):
        self.seconds, self.clock = seconds, clock
        self.deadline = float("inf")
        self.output_limit = TEMPLATE_MAX_CHARS

    def start(self, output_limit: int) -> None:
        self.deadline = self.clock() + self.seconds
        self.output_limit = output_limit

    def check(self) -> None:
        if self.clock() > self.deadline:
            raise _TimeUp()


class _TimeUp(_Overrun):
    """What the watchdog raises in the rendering thread."""

    def __init__(self) -> None:
        super().__init__("more than the time a template has")


class _Watchdog:
    """Raises ``_TimeUp`` in thread ``ident`` after ``seconds`` unless stopped first.

    The rendering thread takes no lock in ``stop`` before any pending exception is cleared: an
    exception delivered while a ``with lock:`` is being entered can leave the lock held (it did,
    under a profiler). Instead ``stop`` marks the render over, waits for a firing timer to finish
    (``firing``), and then clears what it may have set; after that nothing can be set."""

    def __init__(self, ident: int, seconds: float):
        self.ident = ident
        self.rendering = True
        self.firing = False
        self.timer = threading.Timer(seconds, self._fire)
        self.timer.daemon = True

    def start(self) -> None:
        self.timer.start()

    def _fire(self) -> None:
        self.firing = True
        if self.rendering:
            _async_raise(self.ident, _TimeUp)
        self.firing = False

    def stop(self) -> None:
        self.rendering = False
        while self.firing:
            time.sleep(0.0005)
        _async_raise(self.ident, None)  # clears one set but not yet delivered
        self.timer.cancel()


def _async_raise(ident: int, exc: type[BaseException] | None) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident),
                                               ctypes.py_object(exc) if exc else None)


class GuardedTemplate:
    """A chat template compiled in the limited sandbox; ``render(**values)`` returns the text or
    raises ``ModelInvalid`` (one sentence naming ``source``, the model file)."""

    def __init__(self, template: str, source: str, *, seconds: float = RENDER_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        self.source = source
        self._broken: ModelInvalid | None = None
        self._lock = threading.Lock()  # one render at a time: the trace is per thread
        if len(template) > TEMPLATE_MAX_CHARS:
            raise self._invalid(
                f"is {len(template.encode('utf-8', 'replace')) / 1e6:.1f} MB, more than the "
                f"{TEMPLATE_MAX_CHARS // (1 << 20)} MiB any real chat template needs")
        self._budget = _Budget(seconds, clock)
        self._budget.start(TEMPLATE_MAX_CHARS)  # compiling counts too
        try:
            self._template = _LimitedEnvironment(self._budget).from_string(template)
        except TemplateSyntaxError as exc:
            raise self._invalid(f"is not valid Jinja (line {exc.lineno}: {exc.message})") \
                from None
        except (TemplateError, _Overrun, RecursionError, MemoryError) as exc:
            raise self._invalid(f"cannot be compiled ({_words(exc)})") from None

    def render(self, output_limit: int, **values: Any) -> str:
        if self._broken is not None:
            raise self._broken
        with self._lock:
            return self._render(output_limit, values)

    def _render(self, output_limit: int, values: dict[str, Any]) -> str:
        budget = self._budget
        budget.start(output_limit)
        values = dict(values, raise_exception=_raise_exception,
                      strftime_now=lambda f: datetime.now().strftime(f))
        try:
            return self._generate(output_limit, values)
        except _TimeUp:
            raise self._break(f"needed more than {budget.seconds:g} s to format this "
                              "conversation (a template that never ends)")
        except _Refusal as exc:
            raise ModelInvalid(f"The chat template in {self.source} refused this conversation: "
                               f"{exc}.", self.source) from None
        except _Overrun as exc:
            raise self._break(f"needed {exc.what} to format this conversation (a template that "
                              "never ends or grows without bound)")
        except SecurityError as exc:
            raise self._break(f"tried to reach outside Jinja's sandbox ({_words(exc)})")
        except (RecursionError, MemoryError):
            raise self._break("recursed or grew without bound")
        except (TemplateError, ArithmeticError, LookupError, TypeError, ValueError,
                AttributeError) as exc:
            raise ModelInvalid(f"The chat template in {self.source} failed on this conversation "
                               f"({_words(exc)}).", self.source) from None

    def _generate(self, output_limit: int, values: dict[str, Any]) -> str:
        """The render under the watchdog. The watchdog is stopped (and what it may have set
        but not yet delivered cleared) before anything leaves this method, so no time-up can
        strike the caller's exception handlers (one did, when a call's own deadline check and
        the watchdog fired together)."""
        watchdog = _Watchdog(threading.get_ident(), self._budget.seconds)
        watchdog.start()
        try:
            parts, size = [], 0
            for part in self._template.generate(**values):
                size += len(part)
                if size > output_limit:
                    raise _Overrun(f"more than {output_limit / 1e6:.1f} M characters of text")
                parts.append(part)
        finally:
            watchdog.stop()  # a time-up delivered inside stop() leaves from here, as _TimeUp
        return "".join(parts)

    def _invalid(self, what: str) -> ModelInvalid:
        return ModelInvalid(f"The chat template in {self.source} {what}; the model file cannot "
                            "be used as it is (choose another model, or fix its template).",
                            self.source)

    def _break(self, what: str) -> ModelInvalid:
        self._broken = self._invalid(what)
        return self._broken


class _Refusal(Exception):
    """The template's own ``raise_exception(message)``."""


def _raise_exception(message: str) -> None:
    raise _Refusal(str(message)[:300].rstrip("."))


def _words(exc: BaseException) -> str:
    text = str(exc).strip().rstrip(".") or type(exc).__name__
    return text[:300]
