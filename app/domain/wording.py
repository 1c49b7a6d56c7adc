"""Words for counts: "1 conversation", "4 conversations" (never the plural in brackets), for
what the core says to the user in both front ends; waits in seconds; sentences put together."""
from __future__ import annotations


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and ``noun``, in the plural (``noun`` + "s" unless given) when ``n`` is not 1."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


def byte_size(n: int) -> str:
    """A size in bytes as a person reads it, in decimal units as ``df -H`` and ``backup list``
    say them: "900 bytes", "172 KB", "1.2 MB", "3.4 GB"."""
    if n < 1000:
        return counted(n, "byte")
    for unit, size in (("KB", 1e3), ("MB", 1e6), ("GB", 1e9), ("TB", 1e12)):
        if round(n / size) < 1000 or unit == "TB":
            value = n / size
            return f"{value:.1f} {unit}" if value < 10 else f"{value:,.0f} {unit}"
    raise AssertionError("unreachable")


TITLE_LENGTH = 48  # a conversation's title made from its first message: at most this long


def title_from(prompt: str) -> str:
    """A new conversation's title: its first message on one line, cut with "…" when long."""
    line = " ".join(prompt.split())
    return line if len(line) <= TITLE_LENGTH else line[: TITLE_LENGTH - 1].rstrip() + "…"



def seconds(s: float) -> str:
    """A wait in seconds as people say it: "0.5 s", "2 s", "1.3 s" (tenths, none when whole)."""
    text = f"{max(s, 0.0):.1f}"
    return (text[:-2] if text.endswith(".0") else text) + " s"


def sentence(text: str) -> str:
    """``text`` ending as a sentence does, so that another can follow it: a full stop added
    when it ends without one (a provider's own words often do: "HTTP 503")."""
    text = text.rstrip()
    return text if not text or text[-1] in ".!?…" else text + "."
