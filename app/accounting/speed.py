"""A streamed reply's speed (tokens/s), from when its text arrived.

The speed is the tokens that came after the first arrival of text, over the time from that
arrival to the last one: the first token is what TTFT times, the rest how fast the reply went.
A pause between two arrivals counts (a reply that stalled for 5 s between its words was
slow); the wait after the last one does not (a reply stopped, cut or timed out during a stall
got nothing more).

There is no speed when fewer than two tokens came, and none from a burst: text that arrived
all at once, or within ``BURST_S`` of its first part (a proxy that buffered the reply, a
server that wrote it in one go, a stream cut right after a few buffered words), says nothing
of how fast it was written; divided by the microseconds it took to be read it gave
"18266.18 tokens/s". A figure from a real stream needs its text spread over at least that long.
"""
from __future__ import annotations

from dataclasses import dataclass

# text spread over less than this is one burst: too short to time (a real stream of even a
# fast provider, ~2,000 tokens/s, spreads a reply of 100 tokens over 50 ms)
BURST_S = 0.05


@dataclass
class ArrivalMeter:
    """When a reply's text arrived (``arrived`` with each part and the time it was read, on
    the engine's clock), and the speed that makes (``tokens_per_s``)."""

    first_at: float | None = None
    last_at: float | None = None
    first_chars: int = 0  # the text of the first arrival (timed by TTFT, not by the speed)
    chars: int = 0

    def arrived(self, text: str, at: float) -> None:
        if not text:
            return
        if self.first_at is None:
            self.first_at, self.first_chars = at, len(text)
        self.last_at = at
        self.chars += len(text)

    def tokens_per_s(self, tokens: int) -> float | None:
        """The speed of ``tokens`` (the reply's completion tokens, reported or counted): those
        after the first arrival (in proportion to its characters) over the time they took;
        None for fewer than two tokens or a burst."""
        if self.first_at is None or self.last_at is None or tokens < 2 or not self.chars:
            return None
        span = self.last_at - self.first_at
        if span < BURST_S:
            return None
        later = tokens * (self.chars - self.first_chars) / self.chars
        return later / span if later > 0 else None
