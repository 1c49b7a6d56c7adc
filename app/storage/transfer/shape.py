"""Checking the shape of an untrusted file, one field at a time.

Every problem becomes one ``UsageError`` sentence that names the file and where in it the
problem is (``chats.json cannot be imported: conversation 2 ("Trip"), message 5: prompt_tokens
must be a whole number, got 'many'.``), so a person can find it, and a script gets exit code 2.
"""
from __future__ import annotations

import datetime as dt
import math
import re

from app.domain.errors import UsageError

MAX_INT = 2 ** 63 - 1  # SQLite's INTEGER
MAX_TITLE = 1000  # characters; a title is one line (one made from a first message: 48)
_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


def shown(value: object) -> str:
    """A value as a sentence may quote it: short, one line."""
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"


class Where:
    """A place in the file: the file's name, then e.g. ``conversation 2 ("Trip")``, ``message
    5``; ``fail`` turns a problem there into the one sentence."""

    def __init__(self, file: str, *parts: str):
        self.file = file
        self.parts = parts

    def at(self, part: str) -> "Where":
        return Where(self.file, *self.parts, part)

    def fail(self, problem: str) -> UsageError:
        place = ", ".join(self.parts)
        return UsageError(f"{self.file} cannot be imported: {place + ': ' if place else ''}"
                          f"{problem}.")


def obj(value: object, where: Where, name: str, optional: bool = False) -> dict | None:
    if value is None and optional:
        return None
    if not isinstance(value, dict):
        raise where.fail(f"{name} must be an object, got {shown(value)}")
    return value


def array(value: object, where: Where, name: str, optional: bool = False) -> list | None:
    if value is None and optional:
        return None
    if not isinstance(value, list):
        raise where.fail(f"{name} must be a list, got {shown(value)}")
    return value


def text(value: object, where: Where, name: str, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise where.fail(f"{name} must be text, got {shown(value)}")
    return value


def title(value: str | None, where: Where) -> str | None:
    """A conversation's title (checked as text), at most ``MAX_TITLE`` characters."""
    if value is not None and len(value) > MAX_TITLE:
        raise where.fail(f"title must be at most {MAX_TITLE:,} characters, got {len(value):,}")
    return value


def whole(value: object, where: Where, name: str, optional: bool = True) -> int | None:
    """A whole number SQLite can hold (booleans are not numbers here)."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or abs(value) > MAX_INT:
        raise where.fail(f"{name} must be a whole number, got {shown(value)}")
    return value


def number(value: object, where: Where, name: str, optional: bool = True) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            if math.isfinite(float(value)):
                return float(value)
        except OverflowError:  # an int too large for a float
            pass
    raise where.fail(f"{name} must be a number, got {shown(value)}")


def flag(value: object, where: Where, name: str, optional: bool = True) -> bool | None:
    if value is None and optional:
        return None
    if not isinstance(value, bool):
        raise where.fail(f"{name} must be true or false, got {shown(value)}")
    return value


def identifier(value: object, where: Where, name: str, optional: bool = False) -> str | None:
    """An id: 1 to 128 letters, digits, ``_ . : -`` (ids are printed and put in file names)."""
    if value is None and optional:
        return None
    if not isinstance(value, str) or not _ID.match(value):
        raise where.fail(f"{name} must be an id (1 to 128 letters, digits, '_', '.', ':' or "
                         f"'-'), got {shown(value)}")
    return value


def timestamp(value: object, where: Where, name: str) -> str:
    """An ISO 8601 date and time, kept as written."""
    if isinstance(value, str):
        try:
            dt.datetime.fromisoformat(value)
            return value
        except ValueError:
            pass
    raise where.fail(f"{name} must be an ISO date and time, got {shown(value)}")


def check_tree(parents: dict[str, str | None], where: Where, noun: str) -> None:
    """Every parent is one of the nodes and following parents always ends at a root (no
    cycle). ``parents``: node id -> its parent's id (None: a root)."""
    settled: set[str] = set()  # nodes whose way up is known to end at a root
    for start in parents:
        trail: list[str] = []
        on_trail: set[str] = set()
        node: str | None = start
        while node is not None and node not in settled:
            if node in on_trail:
                raise where.fail(f"its {noun}s form a cycle through {node!r} (a {noun} is "
                                 f"its own ancestor)")
            if node not in parents:
                raise where.fail(f"{noun} {trail[-1]!r} follows {node!r}, which is not in "
                                 "the file")
            trail.append(node)
            on_trail.add(node)
            node = parents[node]
        settled.update(trail)


def depth_of(value: object) -> int:
    """How deeply lists and objects nest in ``value`` (iterative: a hostile file cannot make it
    recurse)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if not isinstance(item, (dict, list)):
            continue
        deepest = max(deepest, depth)
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children)
    return deepest
