"""The one contract every backend implements.

``Engine.stream(request, cancel)`` is a blocking generator of ``StreamEvent`` s:
zero or more ``TextDelta``, one ``Usage`` (reported or estimated), then exactly one ``Finished``
whose reason is stop / length / cancelled / error. A failure *before* the stream starts (bad model
file, bad request) is raised as an ``OutpostError``; a failure *during* the stream ends it with
``Finished(reason=ERROR, error=...)`` so the caller keeps the partial text. Setting ``cancel`` (or
closing the generator) stops the work within one token and ends with reason ``cancelled``.

An engine also has ``knob_kind`` ("local", "openai", "anthropic"): its row of the capability map
in ``app.sampling``, which says which knobs it sends; the reply stores exactly those.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Iterator, Protocol, runtime_checkable

from app.domain import ChatRequest, StreamEvent


@dataclass(frozen=True)
class EngineInfo:
    """What the status bar and the stored message say about who answered."""

    engine: str  # e.g. "local"
    model: str  # e.g. "SmolLM2-135M-Instruct.Q4_1.gguf"
    detail: str = ""  # e.g. "CPU, 2 threads, ctx 4096"


@runtime_checkable
class Engine(Protocol):
    @property
    def info(self) -> EngineInfo: ...

    def stream(self, request: ChatRequest, cancel: threading.Event) -> Iterator[StreamEvent]: ...

    def close(self) -> None: ...
