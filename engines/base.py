"""The one contract every backend implements, and everything callers may rely on.

``Engine.stream(request, cancel)`` is a blocking generator of ``StreamEvent`` s:
zero or more ``TextDelta``, one ``Usage`` (reported or estimated), then exactly one ``Finished``
whose reason is stop / length / cancelled / error (a cloud engine may say a ``Retrying`` before
its first text, and a ``Stalled`` while the stream is quiet: once per silence). A failure *before* the stream starts (bad model
file, bad request) is raised as an ``OutpostError``; a failure *during* the stream ends it with
``Finished(reason=ERROR, error=...)`` so the caller keeps the partial text. Setting ``cancel`` (or
closing the generator) stops the work within one token and ends with reason ``cancelled``.

Besides streaming, an engine declares what it can do (``capabilities``), whether it is loaded
(``ready`` / ``wait_ready``), how it counts a prompt and what its context window is (for
``app.domain.context``), what a reply may cost, and, after a stream, who answered it (``outcome``):
a wrapper such as the router or best-of-n says there which engine wrote which part and why. Callers
use these members directly; nothing is probed with ``getattr``. ``EngineBase`` gives the defaults of
a plain engine that answers by itself and is always ready.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Protocol, Sequence, runtime_checkable

from app.domain.messages import ChatMessage, ChatRequest, StreamEvent, estimate_prompt_tokens

if TYPE_CHECKING:  # records of the chat layer's wrappers, prices, adapters (typing only)
    from app.accounting.pricing import Price
    from app.domain.adapters import LoraAdapter
    from app.domain.test_time import Plan, Selection


@dataclass(frozen=True)
class EngineInfo:
    """What the status bar and the stored message say about who answered."""

    engine: str  # e.g. "local"
    model: str  # e.g. "SmolLM2-135M-Instruct.Q4_1.gguf"
    detail: str = ""  # e.g. "CPU, 2 threads, context 4096"
    placement: str = ""  # a local model: where its layers are ("GPU 30/30 layers", "CPU, 2 threads")


@dataclass(frozen=True)
class EngineCapabilities:
    """What an engine can do, declared once.

    ``knob_kind``: its row of the capability map in ``app.domain.sampling`` ("local", "openai",
    "anthropic"), which says which knobs it sends; the reply stores exactly those. None: an
    engine with no row (a test double): the request's knobs are stored as they are.
    """

    knob_kind: str | None = None
    exact_token_count: bool = False  # count_prompt can use the model's own tokenizer
    logprobs: bool = False  # Finished.mean_logprob when the request asks for it
    grammar: bool = False  # constrained decoding: JSON output is enforced while sampling
    json_schema: bool = False  # the server itself is asked for schema-valid JSON
    loads_in_background: bool = False  # ``ready`` may be False until ``wait_ready`` returns
    continues_prefix: bool = False  # honours ChatRequest.assistant_prefix
    logs_own_attempts: bool = False  # reports every attempt to the usage ledger itself


@dataclass(frozen=True)
class Segment:
    """Which engine wrote which part of a reply (character offsets, ``end`` None while open)."""

    engine: str
    model: str
    start: int
    end: int | None = None
    reason: str | None = None

    def record(self) -> dict:
        """As stored with the message (``messages.segments``)."""
        data: dict = {"engine": self.engine, "model": self.model, "start": self.start,
                      "end": self.end}
        if self.reason:
            data["reason"] = self.reason
        return data


@dataclass(frozen=True)
class StreamOutcome:
    """Who answered the last stream, and how: what the reply stores besides its text.

    A plain engine answered by itself; the router (``app.chat.router.RoutedEngine``) reports the
    engine that wrote the last part, why, the segments and whether the provider was unreachable
    before any token (the outbox uses it); best-of-n (``app.chat.candidates``) adds its plan and how
    the winner was chosen."""

    answered: EngineInfo
    knob_kind: str | None
    reason: str | None = None
    segments: tuple[Segment, ...] = ()
    cloud_unreachable: bool = False
    # why the cloud gave no answer (``cloud_unreachable``): its error, or None when it was not
    # asked (known offline, Offline mode); the outbox keeps why, and a 429's Retry-After
    cloud_error: Exception | None = None
    json_schema_refused: bool = False  # the OpenAI-compatible server took json_object only
    # knobs the server refused for the model, learnt: not sent (app.domain.sampling.withheld)
    refused_knobs: frozenset[str] = frozenset()
    test_time: "Plan | None" = None
    selection: "Selection | None" = None


@runtime_checkable
class Engine(Protocol):
    @property
    def info(self) -> EngineInfo: ...

    @property
    def capabilities(self) -> EngineCapabilities: ...

    @property
    def ready(self) -> bool: ...

    def wait_ready(self, timeout: float | None = None) -> None: ...

    @property
    def context_window(self) -> int | None: ...

    def count_prompt(self, messages: Sequence[ChatMessage]) -> tuple[int, bool]: ...

    def messages_as_sent(self, messages: Sequence[ChatMessage],
                         response_format: dict | None) -> Sequence[ChatMessage]: ...

    def estimate_cost(self, prompt_tokens: int, max_tokens: int) -> str | None: ...

    @property
    def price_known(self) -> bool: ...

    @property
    def price(self) -> "Price | None": ...

    def stream(self, request: ChatRequest, cancel: threading.Event) -> Iterator[StreamEvent]: ...

    def outcome(self) -> StreamOutcome: ...

    def repair_engine(self) -> "Engine": ...

    def check_adapters(self, adapters: Sequence["LoraAdapter"]) -> None: ...

    def close(self) -> None: ...


class EngineBase:
    """Defaults for the members of the contract beyond ``info``, ``stream`` and ``close``:
    always ready, the documented chars/4 prompt estimate, no known window, nothing to price, and
    the engine itself answered."""

    capabilities = EngineCapabilities()

    @property
    def info(self) -> EngineInfo:
        raise NotImplementedError  # every engine says who it is

    @property
    def ready(self) -> bool:
        return True

    def wait_ready(self, timeout: float | None = None) -> None:
        return None

    @property
    def context_window(self) -> int | None:
        return None

    def count_prompt(self, messages: Sequence[ChatMessage]) -> tuple[int, bool]:
        return estimate_prompt_tokens(messages), False

    def messages_as_sent(self, messages: Sequence[ChatMessage],
                         response_format: dict | None) -> Sequence[ChatMessage]:
        """The messages as this engine sends them for ``response_format`` (JSON mode): what
        the context fit and the quotas count. An engine that adds words of its own to the
        prompt (an instruction, a schema) says so here; by default it adds none."""
        return messages

    def estimate_cost(self, prompt_tokens: int, max_tokens: int) -> str | None:
        return None  # nothing to price

    @property
    def price_known(self) -> bool:
        """False only when the model has a price that is not known (quotas in dollars then
        cannot be checked before sending)."""
        return True

    @property
    def price(self) -> "Price | None":
        """The model's price, with which a monthly cloud budget limits a reply to what it can
        still pay for (``app.storage.quotas``); None: nothing to reckon with (the local model,
        an unknown price)."""
        return None

    def outcome(self) -> StreamOutcome:
        return StreamOutcome(self.info, self.capabilities.knob_kind)

    def repair_engine(self) -> "Engine":
        """The engine that answers a structured-output repair (one reply, not n again)."""
        return self  # type: ignore[return-value]

    def check_adapters(self, adapters: Sequence["LoraAdapter"]) -> None:
        """Raise (ModelNotFound / ModelInvalid, one sentence) when one of ``adapters`` cannot go
        on this engine's model, from the files' headers only: before a turn saves anything. An
        engine that takes no adapters has nothing to check (the pipeline refuses adapters on a
        route that is not local)."""
        return None

    def close(self) -> None:
        return None

