"""Domain types shared by the core, the engines, the CLI and the window.

A turn is: the user's ``Message`` is saved, a ``ChatRequest`` is built from the conversation,
an engine turns it into a stream of ``StreamEvent`` s, and ``accumulate`` folds those events into
the final ``Reply``. All of it is plain data: no Qt, no database, no threads.
"""
from __future__ import annotations

import enum
import threading
import uuid
from dataclasses import asdict, dataclass, field
from typing import Iterable, Union

from app.domain.adapters import LoraAdapter
from app.domain.errors import UsageError
from app.domain.sampling import KNOB_NAMES, check
from app.domain.wording import seconds


class Role(str, enum.Enum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"


class MessageStatus(str, enum.Enum):
    COMPLETE = "complete"
    STREAMING = "streaming"
    INTERRUPTED = "interrupted"  # the writer died or the user stopped it: content is partial
    ERROR = "error"


class FinishReason(str, enum.Enum):
    STOP = "stop"  # end of turn or a stop sequence
    LENGTH = "length"  # max_tokens or the context window
    CANCELLED = "cancelled"
    ERROR = "error"


def new_id() -> str:
    return uuid.uuid4().hex


# The documented estimate where no tokenizer is at hand (a provider that reports no usage, a
# model still loading, a test double): four characters a token, four tokens of framing a message
# and three to prime the reply (OpenAI's chat-format rule of thumb).
CHARS_PER_TOKEN = 4


def estimate_tokens(text: str) -> int:
    """Tokens of a piece of text by the chars/4 estimate (rounded up; 0 for no text)."""
    return max(1, -(-len(text) // CHARS_PER_TOKEN)) if text else 0


def estimate_prompt_tokens(messages: Iterable["ChatMessage"]) -> int:
    """Tokens of a chat prompt by the chars/4 estimate."""
    return sum(len(m.content) // CHARS_PER_TOKEN + 4 for m in messages) + 3


# Why a stream was cancelled (``CancelWithReason.reason``, logged as the attempt's outcome):
# the user stopped it, the router cancelled the slower engine of a hedge, or the app is closing
# (not the user's stop: what was being sent is sent again at the next start)
USER_STOPPED, HEDGE_LOST, CLOSING = "cancelled", "hedge_lost", "closing"
# cancelled before an answer for one of these, an attempt says nothing about the provider
CANCEL_OUTCOMES = (USER_STOPPED, HEDGE_LOST, CLOSING)


class CancelWithReason(threading.Event):
    """A cancel event that says why it was set; engines log it as the attempt's outcome
    ("cancelled" by the user, "hedge_lost" when the router cancels the slower engine,
    "closing" when the app closes while it streams)."""

    reason = USER_STOPPED
    # set (not the event) by the router when this attempt won a race or took a reply over:
    # "won", logged by an engine that logs its own attempts when it ends normally
    outcome: str | None = None
    # set by the router on the cloud's stream when the local model stands behind it (Auto): a
    # provider nothing answers for (connection refused, no such name, no route) is then not
    # tried again after a backoff; the local model answers at once (engines.cloud)
    fallback: bool = False

    def set_because(self, reason: str) -> None:
        if not self.is_set():
            self.reason = reason
        self.set()


@dataclass(frozen=True)
class ChatMessage:
    """One entry of the request's messages array."""

    role: Role
    content: str

    def as_dict(self) -> dict:
        return {"role": self.role.value, "content": self.content}


@dataclass(frozen=True)
class ChatRequest:
    """The anatomy of one LLM request (course notes, "Anatomy of a request").

    ``idempotency_key`` is generated once per user turn: every attempt of that turn (retries,
    failover later) carries the same key, so a provider can deduplicate.
    """

    model: str
    messages: tuple[ChatMessage, ...]
    temperature: float = 0.7
    top_p: float | None = 0.95  # None: not sent (the best-of judge's), as the knobs below
    max_tokens: int = 512
    stop: tuple[str, ...] = ()
    user: str = ""
    idempotency_key: str = field(default_factory=lambda: f"turn-{new_id()}")
    # Optional knobs: None means "not sent" (the engine's or provider's default applies).
    top_k: int | None = None
    min_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repeat_penalty: float | None = None
    seed: int | None = None
    # The start of the assistant's reply, already written (a cloud stream that died mid-answer):
    # the engine continues from it. Only the local engine supports it; never a sampling knob.
    assistant_prefix: str = ""
    # Structured output (app.domain.structured): {"type": "json", "schema": dict | None}; None: text
    response_format: dict | None = None
    # Report the reply's mean token log-probability (Finished.mean_logprob): local engine only
    logprobs: bool = False
    # LoRA adapters on the local model (app.domain.adapters); only the local engine applies them
    lora: tuple[LoraAdapter, ...] = ()
    # the knobs given for this turn (a flag, a preset), not the settings' defaults or what the
    # conversation kept: only these go to a model that refuses them unless asked (OpenAI's
    # reasoning models: app.domain.sampling.withheld)
    chosen: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.messages:
            raise UsageError("A request needs at least one message.")
        object.__setattr__(self, "chosen", tuple(sorted(
            {str(name) for name in self.chosen or ()} & set(KNOB_NAMES))))
        object.__setattr__(self, "lora", tuple(
            a if isinstance(a, LoraAdapter) else LoraAdapter.from_record(a) for a in self.lora))
        for name in KNOB_NAMES:  # each knob within its range (app.domain.sampling says which)
            object.__setattr__(self, name, check(name, getattr(self, name)) if name != "stop"
                               else check(name, list(self.stop)) or ())

    def as_record(self) -> dict:
        """All of the request as JSON-ready data (the outbox stores queued requests so)."""
        data = asdict(self)
        data["messages"] = [m.as_dict() for m in self.messages]
        data["stop"] = list(self.stop)
        data["lora"] = [a.record() for a in self.lora]
        return data

    @classmethod
    def from_record(cls, data: dict) -> "ChatRequest":
        data = dict(data)
        data["messages"] = tuple(ChatMessage(Role(m["role"]), m["content"])
                                 for m in data["messages"])
        data["stop"] = tuple(data.get("stop") or ())
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def sampling_params(self) -> dict:
        """The parameters sent, as stored on the assistant message."""
        params = {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "stop": list(self.stop),
            "user": self.user,
            "idempotency_key": self.idempotency_key,
        }
        for name in ("top_k", "min_p", "presence_penalty", "frequency_penalty",
                     "repeat_penalty", "seed"):
            if getattr(self, name) is not None:
                params[name] = getattr(self, name)
        return params


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class Usage:
    """Token counts of one reply. ``estimated`` is True when counted by us, not reported.

    ``cached_prompt_tokens`` are prompt tokens the engine did not have to evaluate again
    (the local engine's KV-cache reuse across turns).
    """

    prompt_tokens: int
    completion_tokens: int
    estimated: bool = False
    cached_prompt_tokens: int = 0

    @property
    def evaluated_prompt_tokens(self) -> int:
        return self.prompt_tokens - self.cached_prompt_tokens


@dataclass(frozen=True)
class Finished:
    """Last event of every stream. ``error`` is set when ``reason`` is ERROR."""

    reason: FinishReason
    ttft_ms: float | None = None
    tokens_per_s: float | None = None
    error: Exception | None = None
    # the mean log-probability of the reply's tokens under the model (local engine, when the
    # request asked for it: best-of-n scoring)
    mean_logprob: float | None = None
    # the seed the engine drew when the request had none (local engine): stored with the
    # reply, so a reply you liked can be made again
    seed: int | None = None


@dataclass(frozen=True)
class Seam:
    """Another engine takes over the reply from here (mid-stream continuation). Only the router
    emits it, between the text of the two engines; ``offset`` is the length of the text so far."""

    engine: str
    model: str
    reason: str
    offset: int


@dataclass(frozen=True)
class Fit:
    """How ``app.domain.context.fit_messages`` fitted a conversation into a model's context
    window: what is sent, the oldest turns left out, the prompt's count and the room kept for
    the reply. Here, not there, so that a stream event (``Refit``) can carry it."""

    messages: tuple[ChatMessage, ...]  # what is sent
    dropped: tuple[ChatMessage, ...]  # oldest first
    prompt_tokens: int
    exact: bool
    window: int | None
    max_tokens: int

    @property
    def used(self) -> int:
        """Tokens the request may take: the prompt and the room kept for the reply."""
        return self.prompt_tokens + self.max_tokens

    def describe_dropped(self) -> str | None:
        if not self.dropped:
            return None
        turns = sum(1 for m in self.dropped if m.role is Role.USER)
        asked = [" ".join(m.content.split()) for m in self.dropped if m.role is Role.USER]
        quote = lambda t: f"“{t[:40]}…”" if len(t) > 40 else f"“{t}”"  # noqa: E731
        which = quote(asked[0]) + (f" to {quote(asked[-1])}" if len(asked) > 1 else "") \
            if asked else ""
        head = "The oldest turn" if turns == 1 else f"The {turns} oldest turns"
        verb = "was" if turns == 1 else "were"
        return (f"{head} ({len(self.dropped)} messages{', ' + which if which else ''}) {verb} "
                f"left out to fit the model's {self.window:,}-token context; the model does not "
                "see them in this reply.")


@dataclass(frozen=True)
class Refit:
    """The conversation was fitted again for the engine that answers from here, whose context
    window is not the one the turn was fitted for (the local model behind Auto, after the
    provider failed or was slow): ``fit`` is what that engine is sent and which oldest turns it
    leaves out. Only the router emits it, before that engine's first text."""

    fit: Fit
    engine: str
    model: str


@dataclass(frozen=True)
class Restart:
    """The reply starts over (a structured reply that was not valid JSON is asked for again):
    the text so far is dropped; ``reason`` says why."""

    reason: str


@dataclass(frozen=True)
class Retrying:
    """A cloud attempt failed before any text reached the reply, and the engine sends the
    request again after ``wait_s`` seconds (the provider's Retry-After, else the backoff):
    ``attempt`` is the one that failed (1-based), ``error`` why, ``attempts`` how many the
    engine makes in all (None: not said). Sent before the wait, so a front end can say it
    while it lasts; nothing of the reply changes."""

    engine: str
    attempt: int
    error: Exception
    wait_s: float
    attempts: int | None = None


@dataclass(frozen=True)
class Stalled:
    """Nothing has come from ``engine`` for ``silent_s`` seconds, and it gives up at
    ``gives_up_s`` of that: before the reply's first text (``before_text``: no text since the
    request was sent; the first-token deadline), or in the middle of it (no data at all; the
    idle deadline). Said once per silence while it lasts, so a front end can show that the
    reply waits (the next text ends it); nothing of the reply changes."""

    engine: str
    silent_s: float
    gives_up_s: float
    before_text: bool
    # the server has not even sent its response headers: the reply has not started
    before_head: bool = False

    def describe(self) -> str:
        """"no data from openai for 10 s; giving up at 60 s"; while the headers are held back
        "waiting for the reply from openai to start: nothing for 10 s; giving up at 30 s"."""
        gives_up = f"giving up at {seconds(self.gives_up_s)}"
        if self.before_head:
            return (f"waiting for the reply from {self.engine} to start: nothing for "
                    f"{seconds(self.silent_s)}; {gives_up}")
        what = "no text" if self.before_text else "no data"
        return f"{what} from {self.engine} for {seconds(self.silent_s)}; {gives_up}"


@dataclass(frozen=True)
class Resent:
    """``engine``'s server refused a parameter for ``model`` (HTTP 400 naming it), and the
    request was sent again at once ``change`` ("without temperature"), before any text: said
    so a front end can tell the user (the request log has it too); nothing of the reply
    changes."""

    engine: str
    model: str | None
    change: str
    knob: str | None = None  # the knob the parameter carries ("temperature", "max_tokens")

    def describe(self) -> str:
        """"openai refused temperature for o3-mini: re-sent without temperature"."""
        what = self.change.removeprefix("without ")
        model = f" for {self.model}" if self.model else ""
        return f"{self.engine} refused {what}{model}: re-sent {self.change}"


StreamEvent = Union[TextDelta, Usage, Finished, Seam, Refit, Restart, Retrying, Stalled,
                    Resent]


@dataclass
class Reply:
    """What a stream of events adds up to."""

    text: str = ""
    usage: Usage | None = None
    finish: Finished | None = None
    seams: list[Seam] = field(default_factory=list)


def accumulate(events: Iterable[StreamEvent], reply: Reply | None = None) -> Reply:
    """Fold events into a Reply (pure; usable incrementally by passing the same reply)."""
    reply = reply or Reply()
    for event in events:
        if isinstance(event, TextDelta):
            reply.text += event.text
        elif isinstance(event, Usage):
            reply.usage = event
        elif isinstance(event, Finished):
            reply.finish = event
        elif isinstance(event, Seam):
            reply.seams.append(event)
        elif isinstance(event, Restart):
            reply.text = ""
    return reply


@dataclass
class Conversation:
    id: str
    title: str
    created_at: str
    updated_at: str
    system_prompt: str = ""
    route: str | None = None  # auto / local / cloud; None: the settings' default_route
    # whose conversation (app.storage.profiles); None: the default profile's
    profile: str | None = None
    sampling: dict | None = None  # its sampling knobs (app.domain.sampling); None: the defaults
    # the end of the path shown and answered (conversations are trees); None: the newest message
    active_leaf_id: str | None = None
    pinned: bool = False  # shown at the top of the list
    # who answers it: "local" or "provider:NAME" (chosen when it was last sent), and the model
    target: str | None = None
    target_model: str | None = None


@dataclass
class Message:
    id: str
    conversation_id: str
    role: Role
    content: str
    status: MessageStatus
    created_at: str
    updated_at: str
    parent_id: str | None = None
    engine: str | None = None
    model: str | None = None
    params: dict | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_prompt_tokens: int | None = None
    tokens_estimated: bool = False
    ttft_ms: float | None = None
    tokens_per_s: float | None = None
    finish_reason: str | None = None
    error: str | None = None
    route_reason: str | None = None
    # Which engine wrote which part: [{"engine", "model", "start", "end", "reason"?}, ...]
    # (more than one after a mid-stream continuation). None for user messages.
    segments: list[dict] | None = None
    cost_usd: float | None = None  # None: unknown (or not a reply); 0.0 for the local model
    cost_estimated: bool = False
    # structured output: {"mode", "valid", "error", "repair", "raw"?} (app.domain.structured)
    output_check: dict | None = None
    # best-of-n / self-consistency: the candidates and how one won (app.chat.candidates)
    candidates: dict | None = None

    def as_dict(self) -> dict:
        data = asdict(self)
        data["role"] = self.role.value
        data["status"] = self.status.value
        return data


def has_fallback(cancel: threading.Event) -> bool:
    """Whether another engine answers when this stream's cannot be reached (``fallback``)."""
    return isinstance(cancel, CancelWithReason) and cancel.fallback


def cancel_reason(cancel: threading.Event) -> str:
    """Why a stream was cancelled: the user, unless the event says otherwise."""
    return cancel.reason if isinstance(cancel, CancelWithReason) else USER_STOPPED
