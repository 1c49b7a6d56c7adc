"""Reading a big JSON file's top level one entry at a time, so an import holds one
conversation in memory, never the whole file.

An export is a list of conversations (ChatGPT's ``conversations.json``) or an object whose
``conversations`` member is that list (Outpost's). ``top_level`` walks that outer list or
object itself and hands over each entry (an element of the list, a member of the object, an
element of the streamed member's list) decoded by Python's own ``json`` (its C scanner), so
every value, and every message about a value that is not JSON, is exactly what ``json.loads``
gives; only the positions are counted here, from the start of the file.

A chunk is read at a time (``CHUNK`` characters); an entry cut by a chunk's end is decoded again
once more of the file is there. Limits: the file's size (``max_bytes``, counted as it is read,
so a stream without end stops there) and one entry's size (``max_entry``, in characters).
"""
from __future__ import annotations

import codecs
import json
import re
from dataclasses import dataclass
from typing import BinaryIO, Iterator

CHUNK = 1 << 20
_SPACE = re.compile(r"[ \t\n\r]*")
_CUT_MARGIN = 32  # an error this close to the end of what is read may be an entry cut short


class NotJsonNumber(ValueError):
    """NaN, Infinity or -Infinity: Python's json reads them, JSON has no such numbers."""


def _no_constants(name: str):
    raise NotJsonNumber(name)


class JsonSyntaxError(ValueError):
    """The file is not JSON: ``msg`` as ``json`` words it, at ``line`` and ``column``."""

    def __init__(self, msg: str, line: int, column: int):
        super().__init__(f"{msg} at line {line}, column {column}")
        self.msg, self.line, self.column = msg, line, column


class TooBig(ValueError):
    """The file (``entry`` None) or one entry is larger than its limit."""

    def __init__(self, entry: "Entry | None"):
        super().__init__("too big")
        self.entry = entry


class NotUtf8(ValueError):
    """The file is not UTF-8 text."""


@dataclass(frozen=True)
class Entry:
    """One piece of the top level.

    ``kind``: ``"item"`` (an element of the top-level list, ``key`` None, or of the list in the
    member ``key``), ``"member"`` (a member of the top-level object, its whole ``value``),
    ``"list"`` (the top-level list, or the streamed member's list, begins: ``value`` None) or
    ``"value"`` (the whole file is one value that is neither a list nor an object).
    ``index``: an item's place in its list, from 1."""

    kind: str
    key: str | None
    value: object = None
    index: int = 0


class _Text:
    """The file's characters, read a chunk at a time, and where each one is."""

    def __init__(self, handle: BinaryIO, max_bytes: int):
        self.handle, self.max_bytes = handle, max_bytes
        self.decoder = codecs.getincrementaldecoder("utf-8-sig")()
        self.buf, self.pos, self.eof, self.read_bytes = "", 0, False, 0
        self.line, self.column = 1, 1  # of buf[0]

    def more(self, size: int = 0) -> bool:
        """Read ``size`` (else ``CHUNK``) more bytes, dropping what is consumed; False at the
        end of the file."""
        if self.eof:
            return False
        raw = self.handle.read(size or CHUNK)
        self.read_bytes += len(raw)
        if self.read_bytes > self.max_bytes:
            raise TooBig(None)
        self.eof = not raw
        try:
            text = self.decoder.decode(raw, final=self.eof)
        except UnicodeDecodeError:
            raise NotUtf8() from None
        self._drop(self.pos)
        self.buf += text
        return not self.eof or bool(text)

    def _drop(self, count: int) -> None:
        newline = self.buf.rfind("\n", 0, count)
        if newline >= 0:
            self.line += self.buf.count("\n", 0, count)
            self.column = count - newline
        else:
            self.column += count
        self.buf, self.pos = self.buf[count:], self.pos - count

    def where(self, at: int) -> tuple[int, int]:
        """The line and column (from 1) of ``buf[at]``."""
        newline = self.buf.rfind("\n", 0, at)
        if newline >= 0:
            return self.line + self.buf.count("\n", 0, at), at - newline
        return self.line, self.column + at

    def fail(self, msg: str, at: int | None = None) -> JsonSyntaxError:
        return JsonSyntaxError(msg, *self.where(self.pos if at is None else at))

    def peek(self) -> str:
        """The next character that is not white space ('' at the end of the file)."""
        while True:
            spaces = _SPACE.match(self.buf, self.pos)
            assert spaces is not None  # ("*": it always matches)
            self.pos = spaces.end()
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.more():
                return ""

    def take(self, char: str, msg: str) -> None:
        if self.peek() != char:
            raise self.fail(msg)
        self.pos += 1


class _Values:
    """Whole values decoded by ``json`` from the text, read further when one is cut short."""

    def __init__(self, text: _Text, max_entry: int):
        self.text, self.max_entry = text, max_entry
        self.decoder = json.JSONDecoder(parse_constant=_no_constants)

    def value(self, entry: Entry) -> object:
        """The value starting at the next character that is not white space."""
        text = self.text
        if text.peek() == "":
            raise text.fail("Expecting value")
        while True:
            try:
                value, end = self.decoder.raw_decode(text.buf, text.pos)
            except json.JSONDecodeError as exc:
                cut = exc.pos >= len(text.buf) - _CUT_MARGIN or \
                    exc.msg.startswith("Unterminated string")
                if cut and self._more(entry):
                    continue
                raise text.fail(exc.msg, exc.pos) from None
            if end >= len(text.buf) and self._more(entry):  # a number may go on
                continue
            if end - text.pos > self.max_entry:
                raise TooBig(entry)
            text.pos = end
            return value

    def _more(self, entry: Entry) -> bool:
        text = self.text
        pending = len(text.buf) - text.pos
        if pending > self.max_entry:
            raise TooBig(entry)
        return text.more(max(CHUNK, pending))  # doubling: a long entry is decoded a few times


def top_level(handle: BinaryIO, stream: str, max_bytes: int, max_entry: int
              ) -> Iterator[Entry]:
    """The entries of the file's top level, in order: a list's items; an object's members,
    the list in member ``stream`` item by item (a ``"list"`` entry first). Raises
    ``JsonSyntaxError``, ``NotUtf8``, ``TooBig``, ``NotJsonNumber``, ``RecursionError`` (a value
    nested past Python's limit) or ``ValueError`` (an integer of thousands of digits)."""
    text = _Text(handle, max_bytes)
    values = _Values(text, max_entry)
    first = text.peek()
    if first == "[":
        yield Entry("list", None)
        yield from _items(text, values, None)
    elif first == "{":
        text.pos += 1
        yield from _members(text, values, stream)
    else:
        yield Entry("value", None, values.value(Entry("value", None)))
    if text.peek() != "":
        raise text.fail("Extra data")


def _items(text: _Text, values: _Values, key: str | None) -> Iterator[Entry]:
    """The items of the list whose ``[`` is next."""
    text.take("[", "Expecting value")
    if text.peek() == "]":
        text.pos += 1
        return
    index = 0
    while True:
        index += 1
        entry = Entry("item", key, None, index)
        yield Entry("item", key, values.value(entry), index)
        if text.peek() == "]":
            text.pos += 1
            return
        text.take(",", "Expecting ',' delimiter")
        if text.peek() == "]":
            raise text.fail("Expecting value")  # a trailing comma, as json says it


def _members(text: _Text, values: _Values, stream: str) -> Iterator[Entry]:
    """The members of the object whose ``{`` was just read."""
    if text.peek() == "}":
        text.pos += 1
        return
    while True:
        if text.peek() != '"':
            raise text.fail("Expecting property name enclosed in double quotes")
        key = values.value(Entry("member", None))
        assert isinstance(key, str)
        text.take(":", "Expecting ':' delimiter")
        if key == stream and text.peek() == "[":
            yield Entry("list", key)
            yield from _items(text, values, key)
        else:
            yield Entry("member", key, values.value(Entry("member", key)))
        if text.peek() == "}":
            text.pos += 1
            return
        text.take(",", "Expecting ',' delimiter")
