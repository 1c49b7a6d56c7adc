"""Words for counts: "1 conversation", "4 conversations" (never the plural in brackets), for
what the core says to the user in both front ends."""
from __future__ import annotations


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and ``noun``, in the plural (``noun`` + "s" unless given) when ``n`` is not 1."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


TITLE_LENGTH = 48  # a conversation's title made from its first message: at most this long


def title_from(prompt: str) -> str:
    """A new conversation's title: its first message on one line, cut with "…" when long."""
    line = " ".join(prompt.split())
    return line if len(line) <= TITLE_LENGTH else line[: TITLE_LENGTH - 1].rstrip() + "…"

