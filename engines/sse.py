"""A small, pure Server-Sent Events decoder for the cloud engines' streaming responses.

Follows the WHATWG HTML "event stream interpretation" rules: lines end with CRLF, LF or a lone CR
(a CR ending one chunk and an LF starting the next are one line end); a UTF-8 BOM at the start of
the stream is dropped; ``:`` lines are comments; ``field: value`` loses exactly one space after the
colon; a line without a colon is a field with an empty value; unknown fields are ignored; a blank
line dispatches the event when its data buffer is non-empty. Lines are split on bytes and only
then decoded as UTF-8, so a character split across chunks is never broken and U+2028 / U+2029 /
U+0085 inside JSON strings are never mistaken for line ends. No I/O: bytes in, events out.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

_EOL = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class ServerSentEvent:
    event: str = "message"
    data: str = ""
    id: str | None = None  # the last event ID seen so far; persists across events
    retry: int | None = None  # reconnection time in ms, when this event carried a valid "retry:"

    def json(self) -> Any:
        return json.loads(self.data)


class SSEDecoder:
    """Incremental decoder: bytes in (any fragmentation), events out."""

    def __init__(self) -> None:
        self.comments = 0  # comment lines seen (keep-alives); for diagnostics
        self.incomplete = False  # set by flush(): the stream ended in the middle of an event
        self._buf = bytearray()
        self._bom_checked = False
        self._skip_lf = False  # the last line ended with a CR; an LF right after it is part of it
        self._event = ""
        self._data: list[str] = []
        self._last_id: str | None = None
        self._retry: int | None = None
        self._pending = False  # a field line was seen since the last blank line

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        buf = self._buf
        buf += chunk
        if not self._bom_checked:
            if len(buf) < len(_BOM) and _BOM.startswith(buf):
                return []  # could still be the start of a BOM
            if buf.startswith(_BOM):
                del buf[:len(_BOM)]
            self._bom_checked = True
        events: list[ServerSentEvent] = []
        pos = 0
        while True:
            if self._skip_lf and pos < len(buf):
                if buf[pos] == 0x0A:
                    pos += 1
                self._skip_lf = False
            match = _EOL.search(buf, pos)
            if match is None:
                break
            line = bytes(buf[pos:match.start()]).decode("utf-8", errors="replace")
            self._skip_lf = match.group() == b"\r"
            pos = match.end()
            event = self._line(line)
            if event is not None:
                events.append(event)
        del buf[:pos]
        return events

    def flush(self) -> list[ServerSentEvent]:
        """End of stream. Per the spec an unterminated event is discarded, never dispatched."""
        self.incomplete = bool(self._buf) or self._pending
        self._buf.clear()
        self._skip_lf = False
        self._reset_event()
        return []

    def _line(self, line: str) -> ServerSentEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            self.comments += 1
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        self._pending = True
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            if "\0" not in value:
                self._last_id = value
        elif name == "retry":
            if value.isascii() and value.isdigit():
                self._retry = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        event = None
        if self._data:
            event = ServerSentEvent(event=self._event or "message", data="\n".join(self._data),
                                    id=self._last_id, retry=self._retry)
        self._reset_event()
        return event

    def _reset_event(self) -> None:
        self._event = ""
        self._data = []
        self._retry = None
        self._pending = False


def looks_like_json(data: str) -> bool:
    """Whether an event's data was meant as a JSON object or array (it starts like one): when
    it does not parse, it is broken JSON, not a keep-alive or a comment sent as data."""
    return data.lstrip().startswith(("{", "["))
