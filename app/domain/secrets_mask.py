"""Masking known secrets in everything Outpost shows, stores or logs (as CI systems mask secrets
in build logs).

A provider (or a proxy in front of it) may echo the request's API key anywhere: in an error body,
an error event in the middle of a stream, a response header, even the streamed text. Outpost
never passes it on: every known secret of at least ``MIN_SECRET`` characters is replaced with
``REDACTED`` before a text is shown, stored or logged.

* ``SecretMask(secrets).scrub(text)`` masks a whole text; ``scrub_error(exc)`` masks an error's
  message (and a ``StreamInterrupted``'s partial text) in place, so the object can travel on.
* ``SecretMask.stream()`` masks a text that arrives in pieces (streamed deltas): a key split
  across two deltas is still caught. It holds back only the end of the text that could still
  become a secret (a suffix that is the start of one), so ordinary text is never delayed: a
  stream's first token and its pace stay what they were.
* ``remember(secret, owner)`` adds a key to the process-wide set every ``SecretMask`` also
  masks (the key store remembers each key it hands out or stores, with its provider; a cloud
  engine its own key), so a key kept for this session only, or taken from the environment, is
  masked as well.
* ``find_secret(text, owners)`` finds a known key in a text the user wrote (a key pasted into a
  message), by the same exact match (or with whitespace taken out: a key split across two
  lines); ``refuse_keys(messages, owners)`` raises ``KeyInMessage``
  for one, naming whose key it is, so the turn is refused before the text is kept or sent.
"""
from __future__ import annotations

import dataclasses
import threading
from typing import Iterable, Iterator, Mapping, Sequence

from app.domain.errors import KeyInMessage, OutpostError, StreamInterrupted
from app.domain.messages import (
    ChatMessage,
    Finished,
    Message,
    Restart,
    Retrying,
    Role,
    StreamEvent,
    TextDelta,
)

REDACTED = "[redacted]"
MIN_SECRET = 8  # shorter strings are not masked: they would hit ordinary words

# every key this process handled -> whose it is (a provider's name; None: not known)
_remembered: dict[str, str | None] = {}
_lock = threading.Lock()


def remember(secret: str | None, owner: str | None = None) -> None:
    """Mask ``secret`` everywhere in this process from now on. ``owner``: the provider it is
    for, when known (a later call without one keeps it)."""
    if secret and len(secret) >= MIN_SECRET:
        with _lock:
            if owner or secret not in _remembered:
                _remembered[secret] = owner


def remembered() -> frozenset[str]:
    with _lock:
        return frozenset(_remembered)


def remembered_owners() -> dict[str, str | None]:
    """Every key this process handled, with the provider it is for (None: not known)."""
    with _lock:
        return dict(_remembered)


def find_secret(text: str, owners: Mapping[str, str]) -> tuple[str, str] | None:
    """(the key, its owner) for a known key that ``text`` contains, the longest first (a key
    that contains another is named whole); None when it contains none. ``owners`` maps each
    key to whose it is; keys shorter than ``MIN_SECRET`` are not looked for, as the mask does
    not mask them. A key split by whitespace (a line break a paste or a terminal put in it)
    is found too: the text is also compared with its whitespace taken out."""
    squeezed = None
    for secret in sorted(owners, key=len, reverse=True):
        if len(secret) < MIN_SECRET:
            continue
        if secret in text:
            return secret, owners[secret]
        if squeezed is None:
            squeezed = "".join(text.split())
        if secret in squeezed:
            return secret, owners[secret]
    return None


def refuse_keys(messages: Sequence[ChatMessage], owners: Mapping[str, str], *,
                new_prompt: bool = False) -> None:
    """``KeyInMessage`` when one of ``messages`` (what a turn would store or send) holds a key
    of ``owners`` (key -> the words that say whose it is), naming the message and whose key
    it is, never the key. ``new_prompt``: the last message is the user's new one, not saved
    yet (it is looked at first, and named as "the message")."""
    if not owners:
        return
    for index in reversed(range(len(messages))):
        message = messages[index]
        found = find_secret(message.content, owners)
        if found is None:
            continue
        whose = found[1]
        if new_prompt and index == len(messages) - 1:
            text = (f"The message contains {whose}; remove the key and send the message again "
                    "(nothing was saved or sent).")
        elif message.role is Role.SYSTEM:
            text = (f"The system prompt of this conversation contains {whose}, and it would "
                    "be sent to the provider; remove the key from it first (nothing was sent).")
        else:
            text = (f"A message in this conversation contains {whose}, and it would be sent "
                    "to the provider with it; delete that message, or start a new "
                    "conversation (nothing was sent).")
        raise KeyInMessage(text, whose)


class SecretMask:
    """Replaces each known secret with ``REDACTED``: the ones given plus the remembered ones."""

    def __init__(self, secrets: Iterable[str | None] = ()):
        known = {s for s in secrets if s and len(s) >= MIN_SECRET} | remembered()
        # the longest first: a key that contains another is masked whole
        self.secrets: tuple[str, ...] = tuple(sorted(known, key=len, reverse=True))

    def __bool__(self) -> bool:
        return bool(self.secrets)

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def scrub_optional(self, text: str | None) -> str | None:
        return None if text is None else self.scrub(text)

    def scrub_message(self, message: Message) -> Message:
        """A stored message as it may be shown: its text and error masked (the same object
        when there is nothing to mask)."""
        content, error = self.scrub(message.content), self.scrub_optional(message.error)
        if content == message.content and error == message.error:
            return message
        return dataclasses.replace(message, content=content, error=error)

    def scrub_error(self, error: BaseException | None) -> None:
        """Mask an error's message in place (and a ``StreamInterrupted``'s partial text)."""
        if error is None or not self.secrets:
            return
        if isinstance(error, OutpostError):
            error.message = self.scrub(error.message)
        error.args = tuple(self.scrub(a) if isinstance(a, str) else a for a in error.args)
        if isinstance(error, StreamInterrupted):
            error.partial = self.scrub(error.partial)

    def stream(self) -> "StreamMask":
        return StreamMask(self)


class StreamMask:
    """One streamed text: ``feed`` each piece, then ``flush`` at the end (or before anything
    that must follow the text so far). Together they return the text, masked."""

    def __init__(self, mask: SecretMask):
        self.mask = mask
        self._pending = ""

    def feed(self, text: str) -> str:
        if not self.mask.secrets:
            return text
        pending = self.mask.scrub(self._pending + text)
        keep = self._could_still_be_a_secret(pending)
        self._pending = pending[len(pending) - keep:] if keep else ""
        return pending[:len(pending) - keep]

    def flush(self) -> str:
        out, self._pending = self._pending, ""
        return out

    @property
    def held(self) -> int:
        """Characters held back until more text arrives (for tests and diagnostics)."""
        return len(self._pending)

    def _could_still_be_a_secret(self, text: str) -> int:
        """The length of the longest end of ``text`` that is the start of a secret."""
        longest = 0
        for secret in self.mask.secrets:
            for size in range(min(len(text), len(secret) - 1), longest, -1):
                if text.endswith(secret[:size]):
                    longest = size
                    break
        return longest


def mask_stream(events: Iterable[StreamEvent], mask: SecretMask) -> Iterator[StreamEvent]:
    """An engine's events with every secret masked: the text (also a secret split across two
    deltas), the error a ``Finished`` or a ``Retrying`` carries, a ``Restart``'s reason, and an
    error the stream raises. Text held back is let out before any other event, so the order
    stays the same."""
    if not mask.secrets:
        yield from events
        return
    text = mask.stream()
    try:
        for event in events:
            if isinstance(event, TextDelta):
                shown = text.feed(event.text)
                if shown:
                    yield dataclasses.replace(event, text=shown)
                continue
            rest = text.flush()
            if rest:
                yield TextDelta(rest)
            if isinstance(event, (Finished, Retrying)):
                mask.scrub_error(event.error)
            elif isinstance(event, Restart):
                event = dataclasses.replace(event, reason=mask.scrub(event.reason))
            yield event
    except BaseException as exc:
        mask.scrub_error(exc)
        raise
    rest = text.flush()
    if rest:
        yield TextDelta(rest)
