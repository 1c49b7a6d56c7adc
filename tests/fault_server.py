"""An honest, fault-injecting fake LLM provider for tests: a real HTTP/1.1 server on loopback.

It speaks both wire formats the cloud engines use, close enough to the real APIs that the official
``openai`` and ``anthropic`` SDKs read its streams (``tests/engines/test_sdk_honesty.py`` checks
that):

* OpenAI ``POST /v1/chat/completions`` (SSE ``data: {chat.completion.chunk}`` ..., a usage chunk
  with ``choices: []`` when the request asks ``stream_options.include_usage``, ``data: [DONE]``)
  and ``GET /v1/models``;
* Anthropic ``POST /v1/messages`` (message_start, content_block_start, ping, content_block_delta,
  content_block_stop, message_delta, message_stop; ``event: error`` for in-stream errors) and
  ``GET /v1/models`` (Anthropic's shape when the request carries ``anthropic-version``).

Each request pops the next scenario from a queue (``server.script([...])``); with the queue empty
it gets ``Normal()``: "Hello from the fault server." in several chunks. A scenario works for both
wire formats: it drives an ``Exchange``, which knows the request's format. Every request is
recorded (path, headers, JSON body, when it arrived, whether and when the client went away before
the response was complete), and so is every connection (opened, closed, by whom), so a test can see
a silent resend, a missing Idempotency-Key or a connection left open.

The socket is handled by hand (no ``http.server``) so a scenario can stall after the headers, cut
the connection in the middle of a chunked body (FIN or RST), split a UTF-8 character across two
writes, or notice within ~20 ms that the client hung up. Every wait is bounded and wakes on
``stop()``, which joins every thread it started.
"""
from __future__ import annotations

import contextlib
import json
import select
import socket
import struct
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import parse_qsl, urlsplit

DEFAULT_CHUNKS: tuple[str, ...] = ("Hello", " from", " the", " fault", " server", ".")
DEFAULT_TEXT = "".join(DEFAULT_CHUNKS)
DEFAULT_MODELS = ("test-model", "o3-mini", "gpt-4o-mini")
PROMPT_TOKENS = 12  # what Normal() reports unless told otherwise

_POLL_S = 0.02  # how often waits look at the socket and at stop()
_MAX_PAUSE_S = 30.0  # no single wait of a scenario lasts longer
_REQUEST_IDLE_S = 30.0  # a keep-alive connection with no request for this long is closed
_MAX_BODY = 8 * 1024 * 1024


# -- records -------------------------------------------------------------------------------------
@dataclass
class RecordedRequest:
    index: int  # 0-based, in arrival order over the whole server
    connection: int
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    received_at: float  # time.monotonic() when the whole request had arrived
    json: Any = None
    scenario: str = ""
    status: int | None = None  # the status line the server sent
    completed_at: float | None = None  # the whole response was written
    disconnected_at: float | None = None  # the client went away before the response was complete

    @property
    def disconnected(self) -> bool:
        return self.disconnected_at is not None

    @property
    def idempotency_key(self) -> str | None:
        return self.headers.get("idempotency-key")


@dataclass
class ConnectionRecord:
    id: int
    opened_at: float
    closed_at: float | None = None
    closed_by: str | None = None  # "client", "server" (a scenario cut it / close framing), "stop"
    requests: int = 0


class ClientGone(Exception):
    """The client closed or reset the connection while the server was answering."""


class _Stopping(Exception):
    pass


class _CloseConnection(Exception):
    def __init__(self, rst: bool):
        super().__init__("cut")
        self.rst = rst


# -- wire formats --------------------------------------------------------------------------------
def _dumps(obj: Any) -> str:
    # ensure_ascii=False: UTF-8 (and a raw U+2028) on the wire, as real providers send it
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _mask(key: str) -> str:
    return f"{key[:3]}{'*' * 4}{key[-4:]}" if len(key) > 8 else "****"


class OpenAIWire:
    name = "openai"

    def __init__(self, request: RecordedRequest):
        body = request.json if isinstance(request.json, dict) else {}
        self.model = str(body.get("model") or "test-model")
        self.include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        self.id = f"chatcmpl-fault{request.index:06d}"
        self.created = int(time.time())

    def _chunk(self, choices: list, usage: dict | None = None) -> list[str]:
        chunk = {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                 "model": self.model, "system_fingerprint": "fp_fault", "choices": choices}
        if self.include_usage:
            chunk["usage"] = usage  # null on every chunk but the last, as OpenAI does
        return [f"data: {_dumps(chunk)}"]

    @staticmethod
    def _choice(delta: dict, finish: str | None = None) -> dict:
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}

    def opening(self, usage: tuple[int, int] | None) -> list[list[str]]:
        return [self._chunk([self._choice({"role": "assistant", "content": "",
                                           "refusal": None})])]

    def text(self, text: str) -> list[str]:
        return self._chunk([self._choice({"content": text})])

    def closing(self, finish: str, usage: tuple[int, int] | None) -> list[list[str]]:
        events = [self._chunk([self._choice({}, finish)])]
        if self.include_usage and usage is not None:
            prompt, completion = usage
            events.append(self._chunk([], {
                "prompt_tokens": prompt, "completion_tokens": completion,
                "total_tokens": prompt + completion,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                              "accepted_prediction_tokens": 0,
                                              "rejected_prediction_tokens": 0}}))
        events.append(["data: [DONE]"])
        return events

    def keepalive(self) -> list[str]:
        return [": keep-alive"]  # a comment, as OpenRouter and others send while waiting

    def error_event(self, error_type: str, message: str, code: str | None = None) -> list[str]:
        return [f"data: {_dumps(self.error_body(error_type, message, code))}"]

    @staticmethod
    def error_body(error_type: str, message: str, code: str | None = None,
                   param: str | None = None) -> dict:
        return {"error": {"message": message, "type": error_type, "param": param, "code": code}}

    def json_reply(self, text: str, usage: tuple[int, int]) -> dict:
        return {"id": self.id, "object": "chat.completion", "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "logprobs": None, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1],
                          "total_tokens": sum(usage)}}


class AnthropicWire:
    name = "anthropic"
    _STOP = {"stop": "end_turn", "length": "max_tokens"}

    def __init__(self, request: RecordedRequest):
        body = request.json if isinstance(request.json, dict) else {}
        self.model = str(body.get("model") or "claude-test")
        self.id = f"msg_fault{request.index:06d}"

    @staticmethod
    def _event(name: str, data: dict) -> list[str]:
        return [f"event: {name}", f"data: {_dumps(data)}"]

    def opening(self, usage: tuple[int, int] | None) -> list[list[str]]:
        message = {"id": self.id, "type": "message", "role": "assistant", "content": [],
                   "model": self.model, "stop_reason": None, "stop_sequence": None}
        if usage is not None:
            message["usage"] = {"input_tokens": usage[0], "cache_creation_input_tokens": 0,
                                "cache_read_input_tokens": 0, "output_tokens": 1}
        return [self._event("message_start", {"type": "message_start", "message": message}),
                self._event("content_block_start", {"type": "content_block_start", "index": 0,
                                                    "content_block": {"type": "text",
                                                                      "text": ""}}),
                self.keepalive()]

    def text(self, text: str) -> list[str]:
        return self._event("content_block_delta", {
            "type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": text}})

    def closing(self, finish: str, usage: tuple[int, int] | None) -> list[list[str]]:
        delta: dict = {"type": "message_delta",
                       "delta": {"stop_reason": self._STOP.get(finish, finish),
                                 "stop_sequence": None}}
        if usage is not None:
            delta["usage"] = {"output_tokens": usage[1]}
        return [self._event("content_block_stop", {"type": "content_block_stop", "index": 0}),
                self._event("message_delta", delta),
                self._event("message_stop", {"type": "message_stop"})]

    def keepalive(self) -> list[str]:
        return self._event("ping", {"type": "ping"})

    def error_event(self, error_type: str, message: str, code: str | None = None) -> list[str]:
        return self._event("error", {"type": "error",
                                     "error": {"type": error_type, "message": message}})

    def error_body(self, error_type: str, message: str, code: str | None = None,
                   param: str | None = None) -> dict:
        return {"type": "error", "error": {"type": error_type, "message": message},
                "request_id": f"req_fault{self.id[-6:]}"}

    def json_reply(self, text: str, usage: tuple[int, int]) -> dict:
        return {"id": self.id, "type": "message", "role": "assistant", "model": self.model,
                "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": usage[0], "output_tokens": usage[1]}}


def _wire_for(request: RecordedRequest) -> str:
    path = request.path.split("?", 1)[0].rstrip("/")
    if request.method == "POST" and path.endswith("/chat/completions"):
        return "openai"
    if request.method == "POST" and path.endswith("/messages"):
        return "anthropic"
    if request.method == "GET" and path.endswith("/models"):
        return "models"
    return "unknown"


# -- one request/response ------------------------------------------------------------------------
class Exchange:
    """What a scenario drives: the response to one request, written by hand."""

    def __init__(self, server: "FaultServer", sock: socket.socket, request: RecordedRequest):
        self.server = server
        self.sock = sock
        self.request = request
        self.kind = _wire_for(request)  # "openai", "anthropic", "models" or "unknown"
        anthropic = self.kind == "anthropic" or (self.kind == "models"
                                                 and "anthropic-version" in request.headers)
        self.wire = AnthropicWire(request) if anthropic else OpenAIWire(request)
        self.eol = "\n"
        self.head_sent = False
        self.framing = "chunked"
        self.ended = False
        self.close_after = False

    # the head
    def send_head(self, status: int = 200, headers: dict[str, str] | None = None, *,
                  content_type: str = "text/event-stream; charset=utf-8",
                  framing: str = "chunked", length: int | None = None) -> None:
        """framing: "chunked", "close" (body ends when the server closes) or "length"."""
        reason = _REASONS.get(status, "Status")
        lines = [f"HTTP/1.1 {status} {reason}", f"Content-Type: {content_type}",
                 f"x-request-id: req_fault{self.request.index:06d}",
                 "Cache-Control: no-cache"]
        if framing == "chunked":
            lines.append("Transfer-Encoding: chunked")
        elif framing == "length":
            lines.append(f"Content-Length: {length or 0}")
        lines.append("Connection: close" if framing == "close" else "Connection: keep-alive")
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        self.framing = framing
        self.close_after = framing == "close"
        self.request.status = status
        self._send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        self.head_sent = True

    # the body
    def write(self, data: bytes) -> None:
        """One write of body bytes (one HTTP chunk when chunked)."""
        if not data:
            return
        self._check_client()
        if self.framing == "chunked":
            data = b"%x\r\n" % len(data) + data + b"\r\n"
        self._send(data)

    def event_bytes(self, lines: list[str]) -> bytes:
        return (self.eol.join(lines) + self.eol + self.eol).encode("utf-8")

    def send_event(self, lines: list[str], split_utf8: bool = False) -> None:
        data = self.event_bytes(lines)
        cut = _inside_multibyte(data) if split_utf8 else None
        if cut is None:
            self.write(data)
        else:  # two writes, apart in time: the reader gets half a character first
            self.write(data[:cut])
            self.pause(0.03)
            self.write(data[cut:])

    def end(self) -> None:
        """The body is complete (the terminating chunk; or close, with close framing)."""
        if self.framing == "chunked":
            self._send(b"0\r\n\r\n")
        self.ended = True
        self.request.completed_at = time.monotonic()

    def send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None,
                  content_type: str = "application/json") -> None:
        body = json.dumps(obj).encode("utf-8")
        self.send_head(status, headers, content_type=content_type, framing="length",
                       length=len(body))
        self._send(body)
        self.ended = True
        self.request.completed_at = time.monotonic()

    def send_body(self, status: int, body: bytes, content_type: str,
                  headers: dict[str, str] | None = None) -> None:
        """A whole response of any type (a web page, an empty redirect), length-framed."""
        self.send_head(status, headers, content_type=content_type, framing="length",
                       length=len(body))
        self._send(body)
        self.ended = True
        self.request.completed_at = time.monotonic()

    def send_error(self, status: int, error_type: str, message: str, code: str | None = None,
                   headers: dict[str, str] | None = None, param: str | None = None) -> None:
        """An error body in the request's wire style (``param``: the request parameter it is
        about, as OpenAI names it; Anthropic's errors have no such field)."""
        self.send_json(status, self.wire.error_body(error_type, message, code, param), headers)

    # time and the socket
    def pause(self, seconds: float) -> None:
        """Wait, noticing within ~20 ms a client that hangs up (ClientGone) or stop()."""
        deadline = time.monotonic() + min(seconds, _MAX_PAUSE_S)
        while True:
            if self.server._stopping.is_set():
                raise _Stopping()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            readable, _, _ = select.select([self.sock], [], [], min(left, _POLL_S))
            if readable:
                self._check_client(block=True)
                time.sleep(min(left, _POLL_S))  # bytes from the client: not a hang-up

    def cut(self, rst: bool = False) -> None:
        """Close the connection now, in the middle of whatever was being sent."""
        raise _CloseConnection(rst)

    def _check_client(self, block: bool = False) -> None:
        if not block:
            readable, _, _ = select.select([self.sock], [], [], 0)
            if not readable:
                return
        try:
            data = self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            raise ClientGone()

    def _send(self, data: bytes) -> None:
        if self.server._stopping.is_set():
            raise _Stopping()
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            raise ClientGone() from None


def _inside_multibyte(data: bytes) -> int | None:
    """An offset that falls inside a multi-byte UTF-8 character, if the data has one."""
    for i, byte in enumerate(data):
        if byte >= 0xC0:  # a lead byte: cut right after it
            return i + 1
    return None


_REASONS = {200: "OK", 301: "Moved Permanently", 302: "Found", 303: "See Other",
            307: "Temporary Redirect", 308: "Permanent Redirect", 400: "Bad Request",
            401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 408: "Request Timeout",
            413: "Payload Too Large", 429: "Too Many Requests", 500: "Internal Server Error",
            502: "Bad Gateway", 503: "Service Unavailable",
            511: "Network Authentication Required", 529: "Overloaded"}


# -- scenarios -----------------------------------------------------------------------------------
class Scenario:
    """One response. Subclasses implement ``stream`` (a chat request) and maybe ``models``."""

    name = "scenario"

    def run(self, ex: Exchange) -> None:
        if ex.kind == "models":
            self.models(ex)
        elif ex.kind == "unknown":
            ex.send_error(404, "invalid_request_error",
                          f"Unknown request URL: {ex.request.method} {ex.request.path}.",
                          "unknown_url")
        else:
            self.stream(ex)

    def stream(self, ex: Exchange) -> None:
        raise NotImplementedError

    def models(self, ex: Exchange) -> None:
        if "anthropic-version" in ex.request.headers:  # Anthropic's list, paginated
            ex.send_json(200, _anthropic_page(ex.server.models, ex.request.path,
                                              ex.server.max_page))
            return
        ex.send_json(200, {"object": "list", "data": [
            {"id": m, "object": "model", "created": 1700000000, "owned_by": "fault"}
            for m in ex.server.models]})

    def __repr__(self) -> str:
        return self.name


def _anthropic_page(models: list[str], path: str, max_page: int) -> dict:
    """One page of Anthropic's ``GET /v1/models``: ``limit`` (default 20, at most
    ``max_page``; the real API's cap is 1000) models after ``after_id``, with ``has_more``."""
    query = dict(parse_qsl(urlsplit(path).query))
    try:
        limit = min(max(int(query.get("limit", 20)), 1), max_page)
    except ValueError:
        limit = 20
    start = models.index(query["after_id"]) + 1 if query.get("after_id") in models else 0
    page = models[start:start + limit]
    data = [{"type": "model", "id": m, "display_name": m.title(),
             "created_at": "2025-01-01T00:00:00Z"} for m in page]
    return {"data": data, "has_more": start + limit < len(models),
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None}


@dataclass(repr=False)
class Normal(Scenario):
    """A well-formed streamed reply, with knobs for timing, framing and encoding.

    chunks: the text deltas; delay: seconds between two of them; head_delay: before the response
    head; first_delay: after the opening events, before the first text, with a keep-alive
    (OpenAI comment / Anthropic ping) every ``keepalive_every`` s when set; eol: "\\n" or
    "\\r\\n"; split_utf8: each event is written in two parts cut inside a multi-byte character;
    usage: send token counts (prompt_tokens, completion_tokens default: len(chunks));
    framing: "chunked" or "close"; headers: extra response headers (rate limits...).
    """

    chunks: tuple[str, ...] = DEFAULT_CHUNKS
    delay: float = 0.0
    head_delay: float = 0.0
    first_delay: float = 0.0
    keepalive_every: float | None = None
    finish: str = "stop"
    usage: bool = True
    prompt_tokens: int = PROMPT_TOKENS
    completion_tokens: int | None = None
    eol: str = "\n"
    split_utf8: bool = False
    framing: str = "chunked"
    headers: dict = field(default_factory=dict)
    name: str = "normal"

    @property
    def text(self) -> str:
        return "".join(self.chunks)

    def token_counts(self) -> tuple[int, int] | None:
        if not self.usage:
            return None
        completion = self.completion_tokens
        return self.prompt_tokens, len(self.chunks) if completion is None else completion

    def stream(self, ex: Exchange) -> None:
        ex.eol = self.eol
        if self.head_delay:
            ex.pause(self.head_delay)
        ex.send_head(200, self.headers, framing=self.framing)
        usage = self.token_counts()
        for event in ex.wire.opening(usage):
            ex.send_event(event)
        self.wait(ex, self.first_delay)
        sent = self.send_text(ex)
        self.after_text(ex, sent, usage)

    def wait(self, ex: Exchange, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            if self.keepalive_every:
                ex.pause(min(self.keepalive_every, left))
                if time.monotonic() < end:
                    ex.send_event(ex.wire.keepalive())
            else:
                ex.pause(left)

    def send_text(self, ex: Exchange, limit: int | None = None) -> int:
        chunks = self.chunks if limit is None else self.chunks[:limit]
        for i, chunk in enumerate(chunks):
            if i and self.delay:
                ex.pause(self.delay)
            ex.send_event(ex.wire.text(chunk), split_utf8=self.split_utf8)
        return len(chunks)

    def after_text(self, ex: Exchange, sent: int, usage: tuple[int, int] | None) -> None:
        for event in ex.wire.closing(self.finish, usage):
            ex.send_event(event, split_utf8=self.split_utf8)
        ex.end()


@dataclass(repr=False)
class ToolUse(Scenario):
    """Anthropic: a forced tool call streamed as ``input_json_delta`` parts (how a structured
    reply arrives), ending with stop_reason ``tool_use``."""

    partial_json: tuple[str, ...] = ("{}",)
    tool: str = "reply"
    name: str = "tool_use"

    def stream(self, ex: Exchange) -> None:
        wire = ex.wire
        ex.send_head(200, {})
        message = {"id": wire.id, "type": "message", "role": "assistant", "content": [],
                   "model": wire.model, "stop_reason": None, "stop_sequence": None,
                   "usage": {"input_tokens": PROMPT_TOKENS, "output_tokens": 1}}
        ex.send_event(wire._event("message_start", {"type": "message_start",
                                                    "message": message}))
        ex.send_event(wire._event("content_block_start", {
            "type": "content_block_start", "index": 0,
            "content_block": {"type": "tool_use", "id": "toolu_fault", "name": self.tool,
                              "input": {}}}))
        for part in self.partial_json:
            ex.send_event(wire._event("content_block_delta", {
                "type": "content_block_delta", "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": part}}))
        ex.send_event(wire._event("content_block_stop", {"type": "content_block_stop",
                                                         "index": 0}))
        ex.send_event(wire._event("message_delta", {
            "type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"output_tokens": len(self.partial_json)}}))
        ex.send_event(wire._event("message_stop", {"type": "message_stop"}))
        ex.end()


@dataclass(repr=False)
class ErrorEvent(Normal):
    """``after`` text chunks, then an in-stream error event (Anthropic ``event: error``, OpenAI
    ``data: {"error": ...}``), then the body ends."""

    after: int = 0
    error_type: str = "overloaded_error"
    message: str = "Overloaded"
    name: str = "error_event"

    def stream(self, ex: Exchange) -> None:
        ex.send_head(200, self.headers, framing=self.framing)
        if self.after:
            for event in ex.wire.opening(self.token_counts()):
                ex.send_event(event)
            self.send_text(ex, self.after)
        ex.send_event(ex.wire.error_event(self.error_type, self.message))
        ex.end()


@dataclass(repr=False)
class Cut(Normal):
    """``after`` text chunks, then the socket is closed abruptly in the middle of the chunked
    body: a FIN (``rst=False``) or a TCP reset (``rst=True``)."""

    after: int = 2
    rst: bool = False
    name: str = "cut"

    def after_text(self, ex: Exchange, sent: int, usage: tuple[int, int] | None) -> None:
        ex.cut(self.rst)

    def send_text(self, ex: Exchange, limit: int | None = None) -> int:
        return super().send_text(ex, self.after)


@dataclass(repr=False)
class CleanEOF(Normal):
    """``after`` text chunks, then a clean end of the HTTP body, without [DONE] / message_stop."""

    after: int = 2
    name: str = "clean_eof"

    def send_text(self, ex: Exchange, limit: int | None = None) -> int:
        return super().send_text(ex, self.after)

    def after_text(self, ex: Exchange, sent: int, usage: tuple[int, int] | None) -> None:
        ex.end()


@dataclass(repr=False)
class Stall(Scenario):
    """The response head, then nothing for ``seconds`` (then the server closes)."""

    seconds: float = 10.0
    name: str = "stall"

    def stream(self, ex: Exchange) -> None:
        ex.send_head(200)
        ex.pause(self.seconds)
        ex.cut()


@dataclass(repr=False)
class Status(Scenario):
    """An HTTP error: ``status`` with headers and an error body in the request's wire style."""

    status: int = 500
    error_type: str | None = None
    message: str | None = None
    code: str | None = None
    headers: dict = field(default_factory=dict)
    name: str = "status"

    def stream(self, ex: Exchange) -> None:
        self.models(ex)

    def models(self, ex: Exchange) -> None:
        error_type, message, code = self.error_type, self.message, self.code
        if error_type is None:
            error_type, code = _default_error(ex.kind, self.status, code)
        if message is None:
            message = _default_message(self.status)
        ex.send_error(self.status, error_type, message, code, self.headers)


def _default_error(kind: str, status: int, code: str | None) -> tuple[str, str | None]:
    anthropic = {400: "invalid_request_error", 401: "authentication_error",
                 403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                 429: "rate_limit_error", 529: "overloaded_error"}
    openai = {400: ("invalid_request_error", None), 401: ("invalid_request_error",
                                                         "invalid_api_key"),
              403: ("invalid_request_error", None), 404: ("invalid_request_error", None),
              429: ("requests", "rate_limit_exceeded")}
    if kind == "anthropic":
        return anthropic.get(status, "api_error"), code
    error_type, default_code = openai.get(status, ("server_error", None))
    return error_type, code or default_code


def _default_message(status: int) -> str:
    return {400: "Invalid request.", 401: "Invalid authentication.",
            429: "Rate limit reached for requests.", 500: "The server had an error while "
            "processing your request. Sorry about that!", 529: "Overloaded"}.get(
        status, f"HTTP {status}")


@dataclass(repr=False)
class ReasoningModel(Normal):
    """OpenAI's rules for its reasoning models (o1, o3, o4-mini, gpt-5), whatever the model is
    called: the request is refused with HTTP 400 and OpenAI's error shape, naming the first
    parameter it does not take (``param``, code ``unsupported_parameter`` or
    ``unsupported_value``), as the real API does; a request without them is answered as
    ``Normal``. ``max_tokens`` (max_completion_tokens instead), ``temperature`` and ``top_p``
    other than their default 1, ``presence_penalty`` and ``frequency_penalty``; ``stop`` too
    when ``refuses_stop``."""

    refuses_stop: bool = False
    name: str = "reasoning_model"

    def stream(self, ex: Exchange) -> None:
        body = ex.request.json if isinstance(ex.request.json, dict) else {}
        refused = self.refusal(body)
        if refused is None:
            super().stream(ex)
            return
        param, code, message = refused
        ex.send_error(400, "invalid_request_error", message, code, param=param)

    def refusal(self, body: dict) -> tuple[str, str, str] | None:
        unsupported = "Unsupported parameter: '{}' is not supported with this model."
        if "max_tokens" in body:
            return ("max_tokens", "unsupported_parameter", unsupported.format("max_tokens") +
                    " Use 'max_completion_tokens' instead.")
        for name in ("temperature", "top_p"):
            if name in body and body[name] != 1:
                return (name, "unsupported_value",
                        f"Unsupported value: '{name}' does not support {body[name]} with this "
                        "model. Only the default (1) value is supported.")
        refused = ("presence_penalty", "frequency_penalty") + (
            ("stop",) if self.refuses_stop else ())
        for name in refused:
            if name in body:
                return name, "unsupported_parameter", unsupported.format(name)
        return None


def reasoning_model(**kw: Any) -> ReasoningModel:
    return ReasoningModel(**kw)


@dataclass(repr=False)
class RefusesParams(Normal):
    """A model that refuses sampling parameters as Anthropic's newer ones do: HTTP 400 with
    the official error body (``{"type": "error", "error": {"type": "invalid_request_error",
    "message": ...}, "request_id": ...}``), naming the parameter in backticks. ``deprecated``:
    parameters it no longer takes ("`temperature` is deprecated for this model."); ``not_both``:
    a pair it takes only one of ("`temperature` and `top_p` cannot both be specified for this
    model. Please use only one."). A request without them is answered as ``Normal``."""

    deprecated: tuple[str, ...] = ()
    not_both: tuple[str, str] | None = None
    name: str = "refuses_params"

    def stream(self, ex: Exchange) -> None:
        body = ex.request.json if isinstance(ex.request.json, dict) else {}
        message = self.refusal(body)
        if message is None:
            super().stream(ex)
            return
        ex.send_error(400, "invalid_request_error", message)

    def refusal(self, body: dict) -> str | None:
        for param in self.deprecated:
            if param in body:
                return f"`{param}` is deprecated for this model."
        if self.not_both and all(param in body for param in self.not_both):
            first, second = self.not_both
            return (f"`{first}` and `{second}` cannot both be specified for this model. "
                    "Please use only one.")
        return None


def refuses_params(*deprecated: str, not_both: tuple[str, str] | None = None) -> RefusesParams:
    return RefusesParams(deprecated=deprecated, not_both=not_both)


@dataclass(repr=False)
class JsonInsteadOfStream(Scenario):
    """200 with ``content-type: application/json``: a non-streamed reply (wrong endpoint/proxy)."""

    text: str = DEFAULT_TEXT
    name: str = "json_200"

    def stream(self, ex: Exchange) -> None:
        ex.send_json(200, ex.wire.json_reply(self.text, (PROMPT_TOKENS, 6)))


SIGN_IN_PAGE = ("<!DOCTYPE html><html><head><title>Welcome to Harbour Hotel Wi-Fi</title></head>"
                "<body><form action=\"/login\" method=\"post\"><p>Room number</p>"
                "<input name=\"room\"><button>Connect</button></form></body></html>")
PORTAL_URL = "http://wifi.harbour-hotel.example/login?session=c0ffee&next=%2Fv1"


@dataclass(repr=False)
class SignInPage(Scenario):
    """What a hotel or captive Wi-Fi answers in place of the provider, to any request (chat or
    models): its sign-in page as text/html, with ``status`` 200 (most portals) or 511 (Network
    Authentication Required, the status made for them)."""

    status: int = 200
    name: str = "sign_in_page"

    def stream(self, ex: Exchange) -> None:
        self.models(ex)

    def models(self, ex: Exchange) -> None:
        ex.send_body(self.status, SIGN_IN_PAGE.encode("utf-8"), "text/html; charset=utf-8")


@dataclass(repr=False)
class Redirect(Scenario):
    """A redirect (``status`` 301/302/303/307/308) to ``location``, to any request: how many
    captive portals send a device to their sign-in page (and how a website answers on an API's
    path). A client must not follow it: its key would go to another host."""

    status: int = 302
    location: str = PORTAL_URL
    name: str = "redirect"

    def stream(self, ex: Exchange) -> None:
        self.models(ex)

    def models(self, ex: Exchange) -> None:
        body = f'<html><body>Redirecting to <a href="{self.location}">sign in</a></body></html>'
        ex.send_body(self.status, body.encode("utf-8"), "text/html; charset=utf-8",
                     {"Location": self.location})


@dataclass(repr=False)
class BrokenJson(Normal):
    """``after`` text chunks, then an event whose JSON is cut short (what a faulty proxy or a
    provider's bug sends); then the rest of the reply (``then="rest"``) or the body ends
    (``then="end"``). The connection itself is fine all along."""

    after: int = 2
    then: str = "end"
    name: str = "broken_json"

    def send_text(self, ex: Exchange, limit: int | None = None) -> int:
        sent = super().send_text(ex, self.after)
        lines = ex.wire.text("lost words")
        lines[-1] = lines[-1][: len(lines[-1]) // 2]  # the data line, cut in the middle
        ex.send_event(lines)
        if self.then == "rest":
            for chunk in self.chunks[self.after:]:
                ex.send_event(ex.wire.text(chunk))
        return sent

    def after_text(self, ex: Exchange, sent: int, usage: tuple[int, int] | None) -> None:
        if self.then == "rest":
            super().after_text(ex, sent, usage)
        else:
            ex.end()


@dataclass(repr=False)
class Custom(Scenario):
    """Any function of the Exchange."""

    fn: Callable[[Exchange], None] = lambda ex: None
    name: str = "custom"

    def stream(self, ex: Exchange) -> None:
        self.fn(ex)

    def models(self, ex: Exchange) -> None:
        self.fn(ex)


# named scenarios (the ones the tests use most)
def normal(**kw: Any) -> Normal:
    return Normal(**kw)


def text_and_silences(*steps, head_after: float = 0) -> Custom:
    """The head (``head_after`` s after the request came: a server that accepted the
    connection but holds its response headers back), then each step: text to send, or
    seconds of silence; then the reply ends (unless the client gave up first)."""
    def fn(ex):
        if head_after:
            ex.pause(head_after)
        ex.send_head(200)
        for event in ex.wire.opening(None):
            ex.send_event(event)
        for step in steps:
            if isinstance(step, str):
                ex.send_event(ex.wire.text(step))
            else:
                ex.pause(step)
        for event in ex.wire.closing("stop", None):
            ex.send_event(event)
        ex.end()
    return Custom(fn, name="text_and_silences")


def rate_limited(*, retry_after_ms: int | None = None, retry_after: str | int | None = None,
                 headers: dict | None = None) -> Status:
    extra = dict(headers or {})
    if retry_after_ms is not None:
        extra["retry-after-ms"] = str(retry_after_ms)
    if retry_after is not None:
        extra["retry-after"] = str(retry_after)
    return Status(429, headers=extra, name="rate_limited")


def server_error(status: int = 500) -> Status:
    return Status(status, name=f"status_{status}")


def overloaded() -> Status:
    return Status(529, error_type="overloaded_error", message="Overloaded", name="overloaded")


def overloaded_event() -> ErrorEvent:
    return ErrorEvent(after=0, error_type="overloaded_error", message="Overloaded",
                      name="overloaded_event")


def sign_in_page(status: int = 200) -> SignInPage:
    return SignInPage(status, name=f"sign_in_page_{status}")


def redirect(status: int = 302, location: str = PORTAL_URL) -> Redirect:
    return Redirect(status, location, name=f"redirect_{status}")


def unauthorized(echo_key: bool = False) -> Custom:
    """401 as OpenAI sends it: the key masked in the message (or, ``echo_key``, verbatim, as
    some proxies do)."""

    def fn(ex: Exchange) -> None:
        auth = ex.request.headers.get("authorization", "")
        key = ex.request.headers.get("x-api-key") or auth.removeprefix("Bearer ").strip()
        shown = key if echo_key else _mask(key)
        error_type, code = _default_error(ex.kind, 401, None)
        ex.send_error(401, error_type, f"Incorrect API key provided: {shown}. You can find "
                      "your API key at https://example.invalid/account/api-keys.", code)

    return Custom(fn, name="unauthorized")


def context_too_long() -> Custom:
    def fn(ex: Exchange) -> None:
        if ex.kind == "anthropic":
            ex.send_error(400, "invalid_request_error",
                          "prompt is too long: 250123 tokens > 200000 maximum")
        else:
            ex.send_error(400, "invalid_request_error",
                          "This model's maximum context length is 128000 tokens. However, your "
                          "messages resulted in 250123 tokens. Please reduce the length of the "
                          "messages.", "context_length_exceeded")

    return Custom(fn, name="context_too_long")


def keepalive_then_text(every: float = 0.3, for_s: float = 2.5, **kw: Any) -> Normal:
    return Normal(first_delay=for_s, keepalive_every=every, name="keepalive", **kw)


def slow_first_token(delay: float = 4.0, keepalive_every: float | None = 0.3) -> Normal:
    return Normal(first_delay=delay, keepalive_every=keepalive_every, name="slow_first_token")


def crlf() -> Normal:
    return Normal(eol="\r\n", name="crlf")


UTF8_CHUNKS = ("Grüße aus Köln", " — naïve café ", "日本語テキスト",
               " 🌍🚀", " end")
U2028_CHUNKS = ("line one\u2028line two", "\u2029para\u0085nel", " end")


def utf8_split() -> Normal:
    return Normal(chunks=UTF8_CHUNKS, split_utf8=True, name="utf8_split")


def u2028() -> Normal:
    return Normal(chunks=U2028_CHUNKS, name="u2028")


# -- the server ----------------------------------------------------------------------------------
class _Reader:
    """Reads HTTP/1.1 requests from one connection, bounded in time, waking on stop()."""

    def __init__(self, sock: socket.socket, stopping: threading.Event):
        self.sock = sock
        self.stopping = stopping
        self.buf = bytearray()

    def _fill(self, idle_s: float) -> bool:
        deadline = time.monotonic() + idle_s
        while True:
            if self.stopping.is_set():
                raise _Stopping()
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            readable, _, _ = select.select([self.sock], [], [], min(left, _POLL_S))
            if readable:
                try:
                    data = self.sock.recv(65536)
                except (ConnectionResetError, ConnectionAbortedError, OSError):
                    return False
                if not data:
                    return False
                self.buf += data
                return True

    def read_request(self) -> tuple[str, str, dict[str, str], bytes] | None:
        """None when the client closed the connection (or said nothing for too long)."""
        while b"\r\n\r\n" not in self.buf:
            if not self._fill(_REQUEST_IDLE_S):
                return None
        head, _, rest = bytes(self.buf).partition(b"\r\n\r\n")
        self.buf = bytearray(rest)
        lines = head.decode("latin-1").split("\r\n")
        method, path, _version = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = self._read_chunked()
        else:
            body = self._read_exactly(int(headers.get("content-length") or 0))
        if body is None:
            return None
        return method, path, headers, body

    def _read_exactly(self, n: int) -> bytes | None:
        if n > _MAX_BODY:
            return None
        while len(self.buf) < n:
            if not self._fill(5.0):
                return None
        body, self.buf = bytes(self.buf[:n]), self.buf[n:]
        return body

    def _read_line(self) -> bytes | None:
        while b"\r\n" not in self.buf:
            if not self._fill(5.0):
                return None
        line, _, rest = bytes(self.buf).partition(b"\r\n")
        self.buf = bytearray(rest)
        return line

    def _read_chunked(self) -> bytes | None:
        body = b""
        while True:
            size_line = self._read_line()
            if size_line is None:
                return None
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                while self._read_line() not in (b"", None):
                    pass
                return body
            data = self._read_exactly(size + 2)
            if data is None:
                return None
            body += data[:-2]


class FaultServer:
    """The fake provider. Use as a context manager, or ``start()`` / ``stop()``."""

    def __init__(self, models: Iterable[str] = DEFAULT_MODELS):
        self.models = list(models)
        self.max_page = 1000  # the most models one page of Anthropic's listing holds
        self.errors: list[str] = []  # tracebacks from the server's own threads: should stay empty
        self._lock = threading.Lock()
        self._queue: deque[Scenario] = deque()
        self._requests: list[RecordedRequest] = []
        self._connections: list[ConnectionRecord] = []
        self._sockets: dict[int, socket.socket] = {}
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self.port = 0

    # lifecycle
    def start(self) -> "FaultServer":
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        listener.setblocking(False)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._accept_thread = threading.Thread(target=self._accept_loop, daemon=True,
                                               name="fault-server-accept")
        self._accept_thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, end every connection, join every thread (raises if one hangs)."""
        self._stopping.set()
        deadline = time.monotonic() + timeout
        if self._accept_thread is not None:
            self._accept_thread.join(max(0.1, deadline - time.monotonic()))
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(0.1, deadline - time.monotonic()))
        if self._listener is not None:
            self._listener.close()
        alive = [t.name for t in threads + [self._accept_thread] if t and t.is_alive()]
        with self._lock:
            leftover = list(self._sockets.values())
        for sock in leftover:
            with contextlib.suppress(OSError):
                sock.close()
        if alive:
            raise RuntimeError(f"fault server threads still running after stop(): {alive}")

    def __enter__(self) -> "FaultServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # what a test uses
    def script(self, scenarios: Iterable[Scenario]) -> "FaultServer":
        """Queue scenarios: each request pops the next; an empty queue answers ``Normal()``."""
        with self._lock:
            self._queue.extend(scenarios)
        return self

    @property
    def pending(self) -> int:
        """Scenarios queued and not yet used."""
        with self._lock:
            return len(self._queue)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "POST"]

    @property
    def connections(self) -> list[ConnectionRecord]:
        with self._lock:
            return list(self._connections)

    def open_connections(self) -> int:
        with self._lock:
            return sum(1 for c in self._connections if c.closed_at is None)

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 3.0) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def wait_disconnected(self, index: int = -1, timeout: float = 3.0) -> bool:
        """True once the client hung up on request ``index`` before its response was complete."""
        return self.wait_until(lambda: bool(self.requests) and self.requests[index].disconnected,
                               timeout)

    def wait_all_closed(self, timeout: float = 3.0) -> bool:
        return self.wait_until(lambda: self.open_connections() == 0, timeout)

    # internals
    def _next_scenario(self) -> Scenario:
        with self._lock:
            return self._queue.popleft() if self._queue else Normal()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            readable, _, _ = select.select([self._listener], [], [], _POLL_S)
            if not readable:
                continue
            try:
                sock, _addr = self._listener.accept()
            except (BlockingIOError, OSError):
                continue
            sock.setblocking(True)
            sock.settimeout(10.0)  # bounds sendall against a client that stops reading
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                record = ConnectionRecord(len(self._connections), time.monotonic())
                self._connections.append(record)
                self._sockets[record.id] = sock
                thread = threading.Thread(target=self._serve, args=(record, sock), daemon=True,
                                          name=f"fault-server-conn-{record.id}")
                self._threads.append(thread)
            thread.start()

    def _serve(self, record: ConnectionRecord, sock: socket.socket) -> None:
        reader = _Reader(sock, self._stopping)
        closed_by, rst = "server", False
        try:
            while True:
                parsed = reader.read_request()
                if parsed is None:
                    closed_by = "client"
                    break
                method, path, headers, body = parsed
                scenario = self._next_scenario()
                with self._lock:
                    request = RecordedRequest(len(self._requests), record.id, method, path,
                                              headers, body, time.monotonic(),
                                              scenario=scenario.name)
                    self._requests.append(request)
                    record.requests += 1
                with contextlib.suppress(ValueError):
                    request.json = json.loads(body) if body else None
                exchange = Exchange(self, sock, request)
                try:
                    scenario.run(exchange)
                    if exchange.head_sent and not exchange.ended:
                        exchange.end()
                    elif not exchange.head_sent:
                        raise RuntimeError(f"scenario {scenario.name} sent no response")
                except ClientGone:
                    request.disconnected_at = time.monotonic()
                    closed_by = "client"
                    break
                except _CloseConnection as cut:
                    rst = cut.rst
                    break
                if exchange.close_after:
                    break
        except _Stopping:
            closed_by = "stop"
        except Exception:  # a bug in a scenario or the server: the fixture reports it
            self.errors.append(traceback.format_exc())
        finally:
            with contextlib.suppress(OSError):
                if rst:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                elif closed_by == "server":
                    sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
            with self._lock:
                record.closed_at = time.monotonic()
                record.closed_by = closed_by
                self._sockets.pop(record.id, None)


@contextlib.contextmanager
def fault_server(models: Iterable[str] = DEFAULT_MODELS) -> Iterator[FaultServer]:
    """A running server; on exit it stops, and its threads' errors fail the test."""
    server = FaultServer(models).start()
    try:
        yield server
    finally:
        server.stop()
    assert not server.errors, "fault server errors:\n" + "\n".join(server.errors)


@contextlib.contextmanager
def refused_url() -> Iterator[str]:
    """A loopback URL where connecting is refused at once: the port is bound, nothing listens."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()
