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
* ``remember(secret)`` adds a key to the process-wide set every ``SecretMask`` also masks (the
  key store remembers each key it hands out or stores; a cloud engine its own key), so a key
  kept for this session only, or taken from the environment, is masked as well.
"""
from __future__ import annotations

import dataclasses
import threading
from typing import Iterable, Iterator

from app.domain.errors import OutpostError, StreamInterrupted
from app.domain.messages import Finished, Restart, StreamEvent, TextDelta

REDACTED = "[redacted]"
MIN_SECRET = 8  # shorter strings are not masked: they would hit ordinary words

_remembered: set[str] = set()
_lock = threading.Lock()


def remember(secret: str | None) -> None:
    """Mask ``secret`` everywhere in this process from now on."""
    if secret and len(secret) >= MIN_SECRET:
        with _lock:
            _remembered.add(secret)


def remembered() -> frozenset[str]:
    with _lock:
        return frozenset(_remembered)


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
    deltas), the error a ``Finished`` carries, a ``Restart``'s reason, and an error the stream
    raises. Text held back is let out before any other event, so the order stays the same."""
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
            if isinstance(event, Finished):
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
