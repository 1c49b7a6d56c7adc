"""Reading a file Outpost is given (settings, providers, presets, the quota policy, overrides,
caches) without ever crashing on it, and saying what is wrong in one sentence.

``ConfigFile(path, what).read()`` caps the size before parsing (``MAX_CONFIG_BYTES``), reads
strict UTF-8, parses JSON or TOML, survives any nesting (Python's parsers raise RecursionError
on a file nested 100,000 deep; files deeper than ``MAX_NESTING`` are refused) and returns the
parsed value or raises ``ConfigFileInvalid``. The checks (``table``, ``whole_number``,
``number``, ``text``, ``text_list``…) then validate the shape key by key, each failure naming
the file, the key and what was expected:

    The policy file /etc/outpost/policy.toml is invalid: profiles.alice must be a table of
    limits, got a whole number.

Reading never changes the file. What a caller does with the error (defaults and a warning, or
refusing) is its own choice, documented where it reads the file. ``write_config`` is the
writing side: the folder made when missing, then ``write_atomic`` (temp file, fsync, rename,
owner-only).
"""
from __future__ import annotations

import json
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.config.atomic_file import write_atomic
from app.domain.errors import FileWriteFailed, UsageError

# No config file Outpost writes comes near these; a bigger or deeper file is not one of ours.
MAX_CONFIG_BYTES = 1024 * 1024  # 1 MiB
MAX_NESTING = 32  # lists/objects/tables inside each other
# The largest whole number a config file may hold anywhere a count or a limit is read (beyond
# it, converting to a float overflows): a million million.
MAX_WHOLE = 10**12


class ConfigFileInvalid(UsageError):
    """A file Outpost reads is unreadable, too big, too deep or of the wrong shape. The message
    is one sentence naming the file, the key and what was expected; the file is left as it
    is."""

    kind = "config_invalid"

    def __init__(self, message: str, path: Path | None = None):
        super().__init__(message)
        self.path = path


def kind_of(value: Any, toml: bool = False) -> str:
    """What a parsed value is, in words ("a list", "a table", "text")."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int):
        return "a whole number"
    if isinstance(value, float):
        return "a number" if math.isfinite(value) else "NaN" if math.isnan(value) else \
            "an infinity"
    if isinstance(value, str):
        return "text" if is_text(value) else "text that is not valid Unicode (a lone surrogate)"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table" if toml else "an object"
    return type(value).__name__  # TOML dates and times


def is_text(value: Any) -> bool:
    """A str that can be written as UTF-8 (no lone surrogate, which JSON's ``\\ud800`` gives)."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def depth_of(value: Any) -> int:
    """How deeply lists and objects nest in ``value`` (without recursion)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if depth > MAX_NESTING:
            return depth  # deep enough to refuse: no need to walk the rest
        stack.extend((child, depth + 1) for child in children)
    return deepest


@dataclass(frozen=True)
class ConfigFile:
    """One file Outpost reads: where it is, what it is called in a sentence ("policy file"),
    its format ("json" or "toml") and the most bytes it may have."""

    path: Path
    what: str
    format: str = "json"
    max_bytes: int = MAX_CONFIG_BYTES

    @property
    def toml(self) -> bool:
        return self.format == "toml"

    def fail(self, problem: str) -> ConfigFileInvalid:
        return ConfigFileInvalid(f"The {self.what} {self.path} is invalid: {problem}.", self.path)

    def wrong(self, key: str, expected: str, value: Any) -> ConfigFileInvalid:
        """``key`` must be ``expected`` and is not."""
        got = kind_of(value, self.toml)
        short = isinstance(value, int) and abs(value) < 10**30 or \
            isinstance(value, float) and math.isfinite(value) or \
            isinstance(value, str) and len(value) <= 30 and is_text(value) or \
            isinstance(value, list) and len(value) <= 8 and depth_of(value) == 1 and \
            len(repr(value)) <= 60
        if short and not isinstance(value, bool):
            got = f"{got} ({value!r})"
        return self.fail(f"{key or 'the top level'} must be {expected}, got {got}")

    # -- reading ---------------------------------------------------------------------------

    def read_bytes(self) -> bytes:
        """The file's bytes, at most ``max_bytes``; FileNotFoundError when it does not exist."""
        try:
            with self.path.open("rb") as handle:
                data = handle.read(self.max_bytes + 1)
        except FileNotFoundError:
            raise
        except IsADirectoryError:
            raise ConfigFileInvalid(f"The {self.what} {self.path} is a folder, not a file.",
                                    self.path) from None
        except OSError as exc:
            raise ConfigFileInvalid(f"The {self.what} {self.path} could not be read: "
                                    f"{(exc.strerror or str(exc)).lower()}.", self.path) from None
        if len(data) > self.max_bytes:
            raise ConfigFileInvalid(
                f"The {self.what} {self.path} is larger than {_size(self.max_bytes)}, the most "
                "Outpost reads for it, so it is not read.", self.path)
        return data

    def read(self) -> Any:
        """The parsed file. FileNotFoundError when it does not exist (callers decide what
        missing means); ``ConfigFileInvalid`` for anything else that is wrong."""
        data = self.read_bytes()
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise self.fail(f"it is not UTF-8 text (byte {exc.start + 1})") from None
        try:
            parsed = tomllib.loads(text) if self.toml else json.loads(text)
        except RecursionError:
            raise self.fail(f"it nests more than {MAX_NESTING} levels deep") from None
        except json.JSONDecodeError as exc:
            raise self.fail(f"it is not valid JSON ({exc.msg} at line {exc.lineno}, column "
                            f"{exc.colno})") from None
        except tomllib.TOMLDecodeError as exc:
            raise self.fail(f"it is not valid TOML ({exc})") from None
        except ValueError:  # an integer thousands of digits long
            raise self.fail("it holds a number thousands of digits long") from None
        if depth_of(parsed) > MAX_NESTING:
            raise self.fail(f"it nests more than {MAX_NESTING} levels deep")
        return parsed

    # -- checking shapes -------------------------------------------------------------------
    def table(self, value: Any, key: str, of: str = "") -> dict:
        """``value`` as an object/table with text keys; ``of`` says what it holds."""
        noun = "a table" if self.toml else "an object"
        expected = f"{noun} of {of}" if of else noun
        if not isinstance(value, dict):
            raise self.wrong(key, expected, value)
        for name in value:
            if not is_text(name):
                raise self.fail(f"{key or 'the top level'} has a key that is not text")
        return value

    def text(self, value: Any, key: str, *, empty: bool = True) -> str:
        if not is_text(value) or (not empty and not value.strip()):
            raise self.wrong(key, "text" if empty else "non-empty text", value)
        return value

    def text_list(self, value: Any, key: str) -> list[str]:
        if not isinstance(value, list):
            raise self.wrong(key, "a list of text", value)
        for index, item in enumerate(value):
            self.text(item, f"{key}[{index}]")
        return value

    def flag(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.wrong(key, "true or false", value)
        return value

    def whole_number(self, value: Any, key: str, minimum: int = 0,
                     maximum: int = MAX_WHOLE) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or \
                not minimum <= value <= maximum:
            raise self.wrong(key, f"a whole number from {minimum:,} to {maximum:,}", value)
        return value

    def number(self, value: Any, key: str, minimum: float = 0.0,
               maximum: float = float(MAX_WHOLE)) -> float:
        """A finite number (never NaN or an infinity) within the bounds."""
        finite = isinstance(value, int) or isinstance(value, float) and math.isfinite(value)
        if isinstance(value, bool) or not finite or not minimum <= value <= maximum:
            raise self.wrong(key, f"a number from {_figure(minimum)} to {_figure(maximum)}",
                             value)
        return float(value)


def write_config(path: Path, text: str) -> None:
    """Write a file Outpost owns whole or not at all, making its folder when missing; raises
    ``FileWriteFailed`` (one sentence: "… could not be written: the disk is full; the previous
    version is kept.") when it cannot."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FileWriteFailed(f"{path} could not be written: its folder could not be made "
                              f"({(exc.strerror or str(exc)).lower()}).") from None
    write_atomic(path, text)


def _figure(x: float) -> str:
    return f"{int(x):,}" if float(x).is_integer() else f"{x:,}"


def _size(count: int) -> str:
    return f"{count // (1024 * 1024)} MB" if count >= 1024 * 1024 else f"{count // 1024} KB"
