"""Fitting a conversation into a model's context window, before anything is sent.

The prompt (system + history + the new message) plus ``max_tokens`` for the reply must fit the
window. When it does not, the oldest turns go first: a user message with the replies that answer
it, never the system prompt and never the newest user message. If the newest message alone cannot
fit, the turn is refused with ``MessageTooLong`` (nothing is saved, nothing is sent).

Counting is the engine's business (``TokenCounter``): the local model's own tokenizer applied to
the chat-templated prompt (exact), tiktoken for OpenAI models (exact), or a documented estimate.
The search over how many turns to drop is a binary search (the prompt only shrinks as turns are
dropped), so a long conversation is counted O(log n) times, not n.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

from app.domain.errors import UsageError
# Fit (what fit_messages returns) lives with the stream events, one of which carries it; it is
# imported from here too
from app.domain.messages import ChatMessage, Fit, Role


class MessageTooLong(UsageError):
    """The newest message (with the system prompt and max_tokens) cannot fit at all."""

    kind = "message_too_long"


class TokenCounter(Protocol):
    def count_prompt(self, messages: Sequence[ChatMessage]) -> tuple[int, bool]:
        """(tokens of the prompt these messages make, exact?)"""

    @property
    def context_window(self) -> int | None:
        """The model's window in tokens; None when unknown (then nothing is dropped)."""


LARGER = "use a model with a larger context"


def more_room(counter: TokenCounter) -> str:
    """How this counter's window could be larger, for a refusal: a counter may say (the local
    model: a window capped below what it was trained on grows with the ``context_cap``
    setting) with a ``more_room`` attribute; else another model is the way."""
    return getattr(counter, "more_room", None) or LARGER


@dataclass(frozen=True)
class Fanout:
    """How many times a turn's prompt and reply can be sent and paid for: one request for a
    plain turn; ``n`` for best-of-n and self-consistency (each candidate sends the prompt and
    gets up to max_tokens back); a judge adds one request whose prompt holds the prompt and
    every candidate (so the reply length counts twice per candidate) and ``extra`` tokens of
    its own wording and verdict. The quotas reckon a turn's whole cost with it
    (``app.storage.quotas``), and a cap shares what is left among the ``replies``."""

    requests: int = 1
    prompts: int = 1  # how many times the prompt is sent
    replies: int = 1  # how many times a reply of max_tokens can be paid for
    extra: int = 0  # tokens no prompt or reply explains (the judge's wording and its answer)
    what: str = ""  # "best of 4 and a judge": what sends more than one request

    def tokens(self, prompt_tokens: int, max_tokens: int) -> int:
        """The most tokens the turn can use with replies of ``max_tokens``."""
        return self.prompts * prompt_tokens + self.replies * max_tokens + self.extra

    def reply_room(self, tokens_left: int, prompt_tokens: int) -> int:
        """The longest reply (max_tokens of each request) ``tokens_left`` can pay for."""
        return (tokens_left - self.prompts * prompt_tokens - self.extra) // self.replies

    def need(self, prompt_tokens: int, max_tokens: int, unit: str = "") -> str:
        """What the turn could need, said: "19 for the prompt, up to 2,000 for the reply"
        (``unit`` after each number: " tokens")."""
        if self.requests == 1:
            return (f"{prompt_tokens:,}{unit} for the prompt, up to {max_tokens:,}{unit} for "
                    "the reply")
        return (f"{self.what}: {self.requests} requests, "
                f"{self.prompts * prompt_tokens + self.extra:,}{unit} for the prompts, up to "
                f"{self.replies * max_tokens:,}{unit} for the replies")


ONE_REQUEST = Fanout()


@dataclass(frozen=True)
class ReplyCap:
    """A quota left room for a shorter reply than asked (``app.storage.quotas``): the request
    is sent with ``max_tokens`` instead of ``asked``; ``limit`` names the quota ("daily token
    quota", "monthly cloud budget"). Stored with the reply's parameters (``record``), so its
    footer and Details say why the reply may be short."""

    max_tokens: int
    asked: int
    limit: str

    def describe(self) -> str:
        return f"reply limited to {self.max_tokens:,} tokens: {self.limit}"

    def record(self) -> dict:
        return {"max_tokens": self.max_tokens, "asked": self.asked, "limit": self.limit}

    @classmethod
    def from_record(cls, record) -> "ReplyCap | None":
        """The cap a reply's parameters recorded (None: none, or not a record of one)."""
        if not isinstance(record, dict):
            return None
        try:
            return cls(int(record["max_tokens"]), int(record["asked"]), str(record["limit"]))
        except (KeyError, TypeError, ValueError):
            return None


@dataclass(frozen=True)
class LeftOut:
    """The oldest turns the model that answered a reply did not see: left out to fit its
    context window of ``window`` tokens. Stored with the reply's parameters (``record``) as a
    ``ReplyCap`` is, so its footer, Details and ``history show`` say so after the turn's own
    notice is gone."""

    messages: int
    turns: int
    window: int | None

    @classmethod
    def of(cls, fit: Fit | None, refit: Fit | None = None) -> "LeftOut | None":
        """What ``fit`` left out, and ``refit`` after it (fitted again for the engine that
        answered instead, from the messages ``fit`` kept); None when nothing was."""
        dropped = (fit.dropped if fit is not None else ()) + \
            (refit.dropped if refit is not None else ())
        if not dropped:
            return None
        window = (refit or fit).window  # type: ignore[union-attr]  # (one is not None)
        return cls(len(dropped), sum(1 for m in dropped if m.role is Role.USER), window)

    def _what(self) -> str:
        turns = "the oldest turn" if self.turns == 1 else f"the {self.turns} oldest turns"
        if self.turns == 0:  # (a leading run of replies is a turn of its own)
            turns = "the oldest messages"
        return f"{turns} ({self.messages} message{'s' if self.messages != 1 else ''})"

    def describe(self) -> str:
        """The long form (Details): "the 2 oldest turns (4 messages) left out to fit the
        model's 2,048-token context; the model did not see them"."""
        window = f"{self.window:,}-token " if self.window else ""
        what = self._what()
        return (f"{what[0].upper()}{what[1:]} left out to fit the model's {window}context; "
                "the model did not see them.")

    def short(self) -> str:
        """The footer's: "4 oldest messages left out (2,048-token context)"."""
        window = f" ({self.window:,}-token context)" if self.window else ""
        return (f"{self.messages} oldest message{'s' if self.messages != 1 else ''} left out"
                f"{window}")

    def record(self) -> dict:
        return {"messages": self.messages, "turns": self.turns, "window": self.window}

    @classmethod
    def from_record(cls, record) -> "LeftOut | None":
        """What a reply's parameters recorded (None: nothing left out, or not a record)."""
        if not isinstance(record, dict):
            return None
        try:
            window = record.get("window")
            return cls(int(record["messages"]), int(record["turns"]),
                       int(window) if window is not None else None)
        except (KeyError, TypeError, ValueError):
            return None


def _turn_starts(middle: Sequence[ChatMessage]) -> list[int]:
    """Indexes where a turn (a user message and what follows it) starts; a leading run of
    assistant messages counts as its own turn."""
    starts = [i for i, m in enumerate(middle) if m.role is Role.USER]
    if middle and (not starts or starts[0] != 0):
        starts.insert(0, 0)
    return starts


# No token of the vocabularies in use is longer than 128 bytes (tiktoken's o200k and cl100k:
# 128; llama.cpp's GGUF vocabularies: less), and a character is at least a byte, so a message
# of more than this many characters per token of the window can never fit: it is refused
# before it is tokenized (a 20 MB prompt took two full tokenizer passes to refuse).
MAX_CHARS_PER_TOKEN = 128


def fit_messages(messages: Sequence[ChatMessage], counter: TokenCounter,
                 max_tokens: int,
                 as_sent: Callable[[Sequence[ChatMessage]], Sequence[ChatMessage]] | None = None
                 ) -> Fit:
    """``messages`` fitted into ``counter``'s window with ``max_tokens`` kept for the reply.
    ``as_sent``: the messages as the engine will send them (JSON mode's instruction added:
    ``Engine.messages_as_sent``); that is what is counted, while the fit keeps and drops the
    messages as given."""
    messages = tuple(messages)
    window = counter.context_window
    head = tuple(m for m in messages[:1] if m.role is Role.SYSTEM)
    newest = messages[-1:]
    if window is not None and newest and \
            len(newest[0].content) > MAX_CHARS_PER_TOKEN * window:
        raise MessageTooLong(
            f"This message does not fit the model's context window of {window:,} tokens: it "
            f"is {len(newest[0].content):,} characters long, so it takes more than "
            f"{len(newest[0].content) // MAX_CHARS_PER_TOKEN:,} tokens (no token is longer "
            f"than {MAX_CHARS_PER_TOKEN} bytes). Shorten the message or {more_room(counter)}.")
    middle = messages[len(head):len(messages) - 1]

    def count(kept: Sequence[ChatMessage]) -> tuple[int, bool]:
        prompt = head + tuple(kept) + newest
        return counter.count_prompt(as_sent(prompt) if as_sent is not None else prompt)

    tokens, exact = count(middle)
    if window is None or tokens + max_tokens <= window:
        return Fit(messages, (), tokens, exact, window, max_tokens)
    alone, alone_exact = count(())
    if alone + max_tokens > window:
        approx = "" if alone_exact else "about "
        raise MessageTooLong(
            f"This message does not fit the model's context window of {window:,} tokens: with "
            f"the system prompt it takes {approx}{alone:,} tokens, and max tokens keeps "
            f"{max_tokens:,} more for the reply. "
            + ("Lower max tokens, " if max_tokens >= alone else "Shorten the message, lower "
               "max tokens, ")
            + f"or {more_room(counter)}.")
    starts = _turn_starts(middle) + [len(middle)]
    # the smallest number of dropped turns that fits (dropping everything fits: checked above)
    low, high = 0, len(starts) - 1
    best = (high, alone, alone_exact)
    while low <= high:
        mid = (low + high) // 2
        tokens, exact = count(middle[starts[mid]:])
        if tokens + max_tokens <= window:
            best = (mid, tokens, exact)
            high = mid - 1
        else:
            low = mid + 1
    cut, tokens, exact = best
    kept = middle[starts[cut]:]
    return Fit(head + kept + newest, middle[:starts[cut]], tokens, exact, window, max_tokens)
