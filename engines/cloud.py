"""What the cloud engines share: one HTTP attempt loop with the retry policy, deadlines, cancel.

A subclass says how to build the request (``build_request``) and how to read one SSE event of its
wire format (``read_event``); this class does the rest, the same way for every provider:

* retries (``engines.http_policy``) only while no text has reached the caller, with the same
  ``Idempotency-Key`` on every attempt; every attempt is reported to ``on_attempt``, and a
  ``Retrying`` event says each retry (which attempt failed, why, the wait) before its wait;
* a request parameter the server refuses (HTTP 400 naming one that was sent: OpenAI's
  reasoning models' temperature, Anthropic's "`temperature` is deprecated for this model") is
  learnt per server and model (``app.config.provider_facts``) and the request sent again at
  once without it; the attempts of a turn are numbered in order across retries and re-sends,
  a re-send saying why ("re-sent without temperature") in the request log and in a ``Resent``
  event;
* deadlines: connect, first token (a watchdog), idle between reads (httpx's read timeout, which
  keep-alive comments and pings reset because they are bytes);
* cancel and deadlines shut the socket down at once, waking a blocked read; the response is
  always closed, so no connection is left open after a cancelled or failed stream;
* a stream that dies after text ends with ``Finished(ERROR, StreamInterrupted(partial))``; one
  that ends without its terminal event is an interruption, never a success, unless its stop
  reason arrived: a reply whose stop reason arrived is complete (the terminal event after it
  carries nothing);
* an answer that is not the provider's (a redirect, HTTP 511, a web page with 200: a hotel or
  captive Wi-Fi sign-in page, or a wrong base URL) is ``NetworkIntercepted``, a ConnectionFailed:
  the provider was not reached, so Auto answers locally and Cloud only queues the message; it is
  not retried;
* an attempt whose request reached the provider is in the ledger with its prompt even when no
  usage came back (the hedge it lost, a cancel, a deadline, a stream cut off): the provider bills
  a prompt it received, so it is counted as before sending, marked estimated (``_billed_usage``);
  one that never went out whole (connection refused), or that the provider refused (an error
  status or error event before any text), keeps no tokens;
* a broken connection is said in plain words ("The connection to openai was reset ..."), the
  OS's own words at most in parentheses at the end; an event that cannot be read (broken JSON) is
  ``UnreadableStream``, not a broken connection;
* the key in use is never passed on (``app.domain.secrets_mask``): it is masked in the streamed
  text (also when split across deltas), in error bodies and error events, in the response headers
  kept for the request log, and in the HTTP library's own messages; a message about a request
  header that could not be sent is replaced by Outpost's own sentence. A key that no HTTP header
  can carry (``app.config.secrets.validate_key``) is refused when the engine is built.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Generator, Iterable, Iterator, Mapping

import httpx

from app.accounting.metering import CloudCounter
from app.accounting.pricing import Price
from app.accounting.speed import ArrivalMeter
from app.accounting.tokens import count_text, encoding_for_model
from app.config.provider_facts import note_refused_param, refused_params
from app.config.providers import ProviderConfig
from app.config.secrets import validate_key
from app.domain.errors import (
    BadRequest,
    ConnectionFailed,
    EngineError,
    NetworkIntercepted,
    OutpostError,
    ProviderError,
    StreamInterrupted,
    TimeoutError_,
    UnreadableStream,
    UsageError,
)
from app.domain.messages import (
    ChatRequest,
    Finished,
    FinishReason,
    Resent,
    Retrying,
    Stalled,
    StreamEvent,
    TextDelta,
    Usage,
    cancel_reason,
    has_fallback,
)
from app.domain.sampling import StopScanner, unsent_stops
from app.domain.secrets_mask import SecretMask, remember
from engines import network_guard
from engines.base import EngineBase, EngineCapabilities, EngineInfo, StreamOutcome
from engines.http_policy import (
    AttemptRecord,
    RetryPolicy,
    Timeouts,
    connect_failure,
    error_from_status,
    how_it_broke,
    is_retryable_error,
    network_answer,
    nobody_there,
    os_words,
    parse_retry_after,
    rate_limit_headers,
    should_retry_header,
    with_detail,
)
from engines.sockets import SocketTracker
from engines.sse import ServerSentEvent, SSEDecoder
from engines.stream_watch import (
    BODY_END,
    BodyReader,
    RequestSender,
    Watchdog,
    WatchdogReason,
)

log = logging.getLogger(__name__)

USER_AGENT = "Outpost/0.1"
_MAX_ERROR_BODY = 64 * 1024
DRAIN_S = 1.0  # after the terminal event, how long the rest of the body may take


@dataclass
class StreamState:
    """What one attempt has read so far; ``read_event`` fills it in."""

    text: str = ""
    done: bool = False  # the wire format's terminal event arrived
    finish_reason: FinishReason | None = None
    error: ProviderError | None = None  # an error event inside the stream
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_prompt_tokens: int = 0
    extra: dict = field(default_factory=dict)


@dataclass
class _Try:
    """One attempt of a turn: its ``number`` (1-based, counting every send of the turn, the
    retries and the re-sends without a refused parameter alike), for a re-send why (``note``:
    "re-sent without temperature"), and the JSON body it sent (``body``)."""

    number: int
    note: str | None = None
    body: dict = field(default_factory=dict)


@dataclass
class _Tally:
    """The attempts of one turn so far (a local of ``stream``: candidates share the engine
    across threads), the note the next attempt carries, and how the turn was re-sent
    (``resent``: each way once, so a server that refuses every way cannot loop)."""

    made: int = 0
    note: str | None = None
    last: _Try | None = None
    resent: set[str] = field(default_factory=set)

    def next(self) -> _Try:
        self.made += 1
        self.last, self.note = _Try(self.made, self.note), None
        return self.last


class _Retry(Exception):
    """An attempt failed before any text: maybe try again."""

    def __init__(self, error: OutpostError, retryable: bool, retry_after: float | None = None):
        super().__init__(str(error))
        self.error = error
        self.retryable = retryable
        self.retry_after = retry_after


class _RequestSent:
    """httpcore's ``trace`` extension: notes when the whole request (its body included) has
    been written to the connection. From then on the provider may bill its prompt, whether or
    not an answer comes; before (connection refused, a connect timeout) nothing reached it."""

    def __init__(self) -> None:
        self.done = False

    def __call__(self, event: str, info: dict) -> None:
        if event.endswith(".send_request_body.complete"):  # http11. or http2.
            self.done = True


class CloudEngine(EngineBase):
    """Base of the HTTP engines. Subclasses: ``build_request`` and ``read_event``."""

    kind = "cloud"
    # the request parameters a server may refuse that the request can go without, as the wire
    # calls them -> the knob left out once refused (as ``app.domain.sampling`` names it); one
    # not here is never dropped
    refusable: ClassVar[Mapping[str, str]] = {}
    # the knobs the server refused for this model, learnt and kept (``refused_knobs``); read
    # once per engine
    _refused_params: frozenset[str] | None = None

    @property
    def capabilities(self) -> EngineCapabilities:  # type: ignore[override]
        """Its row of the capability map (app.domain.sampling) is its wire format; counts are exact
        where tiktoken knows the model (``app.accounting.tokens``)."""
        return EngineCapabilities(
            knob_kind=self.kind if self.kind in ("openai", "anthropic") else "openai",
            exact_token_count=encoding_for_model(self.model) is not None,
            json_schema=True, logs_own_attempts=self.on_attempt is not None)

    def __init__(self, config: ProviderConfig, api_key: str | None, model: str | None = None, *,
                 policy: RetryPolicy = RetryPolicy(), timeouts: Timeouts = Timeouts(),
                 on_attempt: Callable[[AttemptRecord], None] | None = None,
                 client: httpx.Client | None = None, rng: random.Random | None = None):
        self.config = config
        # checked here, before anything is sent: httpx would raise UnicodeEncodeError on a
        # non-ASCII key and quote a key with a line break in its "illegal header" message
        self.api_key = validate_key(api_key, f"The API key for {config.name}") \
            if api_key else api_key
        remember(self.api_key)
        self.model = model or config.default_model
        if not self.model:
            raise UsageError(f"No model chosen for provider {config.name}: pass --model or set "
                             "the provider's default model.")
        self.policy = policy
        self.timeouts = timeouts
        self.on_attempt = on_attempt
        self.rng = rng or random.Random()
        # what TTFT and tokens/s are read from (the deadlines keep the monotonic clock); tests
        # put a virtual one here
        self.clock: Callable[[], float] = time.monotonic
        self.rate_limits: dict[str, str] = {}
        self._current_key = ""
        self._client = client or network_guard.client(
            timeout=httpx.Timeout(connect=timeouts.connect, read=timeouts.idle,
                                  write=timeouts.connect, pool=timeouts.connect),
            headers={"User-Agent": USER_AGENT}, follow_redirects=False)
        self._sockets = SocketTracker(self._client)

    # -- Engine contract ---------------------------------------------------------------------
    @property
    def info(self) -> EngineInfo:
        return EngineInfo(engine=self.config.name, model=self.model,
                          detail=f"{self.config.kind} API at {self.config.base_url}")

    # -- context budgeting and the meter (app.domain.context.TokenCounter) -------------------------
    @property
    def _counter(self):
        return CloudCounter(self.config.kind, self.model)

    @property
    def context_window(self) -> int | None:
        return self._counter.context_window

    def count_prompt(self, messages) -> tuple[int, bool]:
        return self._counter.count_prompt(messages)

    def estimate_cost(self, prompt_tokens: int, max_tokens: int) -> str | None:
        return self._counter.estimate_cost(prompt_tokens, max_tokens)

    @property
    def price_known(self) -> bool:
        return self._counter.price_known

    @property
    def price(self) -> Price | None:
        return self._counter.price

    def close(self) -> None:
        self._client.close()

    def stream(self, request: ChatRequest, cancel: threading.Event) -> Iterator[StreamEvent]:
        """The reply. Sent again at once, before any text, when the server refused something
        the request can do without (``resend``): a parameter it does not take for this model
        (HTTP 400 naming one that was sent), without it, once per parameter, remembered so it is
        not sent to this model again. TTFT counts from the first send: the re-send is part of
        what the user waits."""
        turn_started = self.clock()
        tally = _Tally()
        while True:
            try:
                yield from self._stream(request, cancel, turn_started, tally)
                return
            except BadRequest as exc:
                sent = tally.last.body if tally.last is not None else {}
                resent = self.resend(exc, request, sent)
                if resent is None or resent in tally.resent:
                    raise
                tally.resent.add(resent)
                tally.note = f"re-sent {resent}"
                yield Resent(self.config.name, self.model, resent,  # (said: not only logged)
                             self.refusable.get(resent.removeprefix("without ")))

    def resend(self, exc: BadRequest, request: ChatRequest, sent: dict) -> str | None:
        """How the request goes again after ``exc`` refused ``sent`` (the body): "without
        temperature", now learnt, or None when ``exc`` refused nothing it can go without. A
        refusal naming several parameters that were sent ("`temperature` and `top_p` cannot
        both be specified") drops one: one not given for the turn, else the last named. What
        was sent, not what is known now, decides: candidates sent at once are all refused,
        and each is sent again, whichever learnt it first."""
        named = [wire for wire in exc.refused_params if wire in sent and wire in self.refusable]
        if not named:
            return None
        not_chosen = [wire for wire in named if self.refusable[wire] not in request.chosen]
        wire = (not_chosen or named)[-1]
        knob = self.refusable[wire]
        if knob not in self.refused_knobs:
            self._refused_params = self.refused_knobs | {knob}
            note_refused_param(self.config.base_url, self.model, knob)
        if wire in self.build_request(request)[2]:
            return None  # it would go again all the same (both names of the token limit refused)
        return f"without {wire}"

    def _stream(self, request: ChatRequest, cancel: threading.Event, turn_started: float,
                tally: _Tally) -> Iterator[StreamEvent]:
        """The reply, with the automatic retries; TTFT counts from ``turn_started`` (when the
        turn was first sent: it counts retries and re-sends, it is what the user waits)."""
        retries = 0
        while True:
            attempt = tally.next()
            try:
                yield from self._attempt(request, cancel, attempt, turn_started)
                return
            except _Retry as failed:
                delay = self.policy.next_delay(retries, failed.retryable, failed.retry_after,
                                               self.rng)
                if delay is None:
                    raise failed.error from None
                retries += 1
                # attempts in all: those made, this turn's re-sends included, and the retries
                # left after the one coming
                yield Retrying(self.config.name, attempt.number, failed.error, delay,  # (now)
                               attempts=attempt.number + 1 + self.policy.max_retries - retries)
                if cancel.wait(delay):
                    yield from self._finish(request, StreamState(), FinishReason.CANCELLED,
                                            turn_started, ArrivalMeter())
                    return

    def outcome(self) -> StreamOutcome:
        return dataclasses.replace(super().outcome(), refused_knobs=self.refused_knobs)

    @property
    def refused_knobs(self) -> frozenset[str]:
        """The knobs (request parameters) the server refused for this model, learnt (``resend``)
        and kept per server and model: not sent (``app.domain.sampling.sent_params``)."""
        if self._refused_params is None:
            self._refused_params = refused_params(self.config.base_url, self.model)
        return self._refused_params

    # -- subclass hooks ----------------------------------------------------------------------
    def build_request(self, request: ChatRequest) -> tuple[str, dict, dict]:
        """(url, headers, json body) of one attempt."""
        raise NotImplementedError

    def read_event(self, event: ServerSentEvent, state: StreamState) -> str | None:
        """Update ``state`` from one SSE event; return new text, if any."""
        raise NotImplementedError

    # -- one attempt -------------------------------------------------------------------------
    def _record(self, attempt: _Try, started: float, status: int | None,
                error: OutpostError | None, outcome: str | None = None,
                usage: Usage | None = None, ttft_ms: float | None = None) -> None:
        if self.on_attempt is not None:
            self.on_attempt(AttemptRecord(
                attempt=attempt.number, note=attempt.note, status=status, latency_ms=(time.monotonic() - started) * 1000,
                error_kind=error.kind if error else None, rate_limits=dict(self.rate_limits),
                idempotency_key=self._current_key, provider=self.config.name, model=self.model,
                outcome=outcome, kind=self.config.kind,
                prompt_tokens=usage.prompt_tokens if usage else None,
                completion_tokens=usage.completion_tokens if usage else None,
                tokens_estimated=usage.estimated if usage else False,
                cached_prompt_tokens=usage.cached_prompt_tokens if usage else 0,
                ttft_ms=ttft_ms))

    def _attempt(self, request: ChatRequest, cancel: threading.Event, attempt: _Try,
                 turn_started: float) -> Iterator[StreamEvent]:
        url, headers, body = self.build_request(request)
        attempt.body = body
        self._current_key = request.idempotency_key
        headers = {**headers, "Idempotency-Key": request.idempotency_key,
                   "Accept": "text/event-stream"}
        started = time.monotonic()
        sent = _RequestSent()
        sender = RequestSender(lambda: self._client.send(self._client.build_request(
            "POST", url, json=body, headers=headers, extensions={"trace": sent}), stream=True))
        watchdog = Watchdog(cancel, started + self.timeouts.first_token, self._sockets,
                            owner=sender.ident)
        try:
            yield from self._sent(request, cancel, attempt, turn_started, started, sent,
                                  sender, watchdog)
        finally:
            sender.release()  # (after the watchdog stopped: its thread id is the socket's key)

    def _head(self, sender: RequestSender,
              started: float) -> Generator[Stalled, None, tuple[httpx.Response, bool]]:
        """Waits for the response headers (``sender``); a ``Stalled`` when they are held back
        for ``stall_notice`` s since the request was sent (the reply has not started: the
        first-token deadline counts, or the idle one when it is shorter: httpx's read timeout
        waits for the headers too). Returns the response, and whether the silence was said."""
        notice = self.timeouts.stall_notice
        limit = min(self.timeouts.first_token, self.timeouts.idle)
        if 0 < notice < limit:
            response = sender.next(max(0.0, started + notice - time.monotonic()))
            if response is not None:
                return response, False
            yield Stalled(self.config.name, notice, limit, before_text=True, before_head=True)
            return sender.next(None), True
        return sender.next(None), False

    def _sent(self, request: ChatRequest, cancel: threading.Event, attempt: _Try,
              turn_started: float, started: float, sent: _RequestSent, sender: RequestSender,
              watchdog: Watchdog) -> Iterator[StreamEvent]:
        """One attempt once its request is on its way (``sender``): the headers awaited, then
        the reply read."""
        name = self.config.name
        try:
            response, head_said = yield from self._head(sender, started)
        except (UnicodeEncodeError, httpx.LocalProtocolError):
            watchdog.stop()
            unsendable = self._bad_header()
            self._record(attempt, started, None, unsendable)
            raise _Retry(unsendable, retryable=False) from None
        except httpx.HTTPError as exc:
            watchdog.stop()
            if watchdog.fired is WatchdogReason.CANCEL:  # the hedge lost, or the user stopped
                self._record(attempt, started, None, None, _cancel_outcome(cancel),
                             self._usage(request, StreamState()) if sent.done else None)
                yield from self._finish(request, StreamState(), FinishReason.CANCELLED,
                                        turn_started, ArrivalMeter())
                return
            raise self._send_failure(exc, watchdog, attempt, started,
                                     self._usage(request, StreamState()) if sent.done
                                     else None) from None
        except BaseException:  # Offline mode's refusal (before any socket), anything else
            if not sender.answered:  # the stream was left while waiting for the headers
                watchdog.hang_up()
            watchdog.stop()  # its thread would otherwise wait out the first-token deadline
            raise
        status = response.status_code
        try:
            secrets = self.secrets()
            self.rate_limits = {name: secrets.scrub(value) for name, value in
                                rate_limit_headers(response.headers).items()}
            intercepted = self._intercepted(response)
            if intercepted is not None:  # not the provider: no retry, it would answer the same
                self._record(attempt, started, status, intercepted)
                raise _Retry(intercepted, retryable=False)
            if status != 200:
                raise self._status_failure(response, attempt, started)
            ctype = response.headers.get("content-type", "")
            if "text/event-stream" not in ctype:
                error = ProviderError(f"{name} answered with {ctype or 'no content type'} "
                                      "instead of an event stream; is the base URL right?",
                                      status, name)
                self._record(attempt, started, status, error)
                raise _Retry(error, retryable=False)
            yield from self._read_stream(response, request, watchdog, attempt, started,
                                         turn_started, head_said)
        finally:
            watchdog.stop()
            response.close()

    def _send_failure(self, exc: httpx.HTTPError, watchdog: Watchdog, attempt: _Try,
                      started: float, sent: Usage | None) -> _Retry:
        """No response headers: connect failed, or the server said nothing in time.
        ``sent``: the prompt's usage when the whole request went out (else None); it is kept
        when Outpost stopped waiting (a deadline): the provider had the prompt. A connection
        closed or reset with no answer keeps none (a stale pooled connection, a proxy that
        dropped it: nothing says the provider saw it)."""
        name, url = self.config.name, self.config.base_url
        if watchdog.fired is WatchdogReason.FIRST_TOKEN:
            error: OutpostError = TimeoutError_(f"{name} sent no reply within "
                                                f"{self.timeouts.first_token:g} s.")
            retryable = False
        elif isinstance(exc, httpx.ConnectTimeout):
            error = ConnectionFailed(f"Could not connect to {name} at {url} within "
                                     f"{self.timeouts.connect:g} s.")
            retryable = True
        elif isinstance(exc, httpx.TimeoutException):
            error = TimeoutError_(f"{name} accepted the connection but sent nothing for "
                                  f"{self.timeouts.idle:g} s.")
            retryable = False
        else:
            error = self._connection_error(exc)
            # on Auto, nothing there to answer means the local model answers now, not after
            # the backoff; Cloud only tries again (a server restarting, a network coming up)
            retryable = self.policy.retry_nobody_there_with_fallback or not (
                has_fallback(watchdog.cancel) and nobody_there(exc))
        self.secrets().scrub_error(error)
        waited = isinstance(exc, httpx.TimeoutException) or watchdog.fired is not None
        self._record(attempt, started, None, error, usage=sent if waited else None)
        return _Retry(error, retryable)

    def _intercepted(self, response: httpx.Response) -> NetworkIntercepted | None:
        """The answer came from the network, not the provider (``http_policy.network_answer``):
        the error that says so, else None."""
        what = network_answer(response.status_code, response.headers)
        if what is None:
            return None
        name, url = self.config.name, self.config.base_url
        location = response.headers.get("location") if response.is_redirect else None
        return NetworkIntercepted(self.scrub(
            f"The network answered in place of {name}: {what} came back instead of the API's "
            "answer, as the sign-in page of a hotel or captive Wi-Fi does. Sign in to the "
            "network in a browser and try again; if there is nothing to sign in to, is the base "
            f"URL ({url}) right?"),
            response.status_code, name, self.scrub(location) if location else None)

    def _bad_header(self) -> ConnectionFailed:
        """A request header could not be sent (the HTTP library's message quotes the value, so
        it is never passed on)."""
        name = self.config.name
        return ConnectionFailed(f"Outpost could not send the request to {name}: a request "
                                "header has characters HTTP does not allow; check the API key "
                                f"with `outpost keys set {name}`.")

    def _connection_error(self, exc: httpx.HTTPError) -> ConnectionFailed:
        if isinstance(exc, httpx.LocalProtocolError):  # its message quotes our headers
            return self._bad_header()
        detail = self.scrub(os_words(exc))
        log.info("%s: no answer: %s", self.config.name, detail)
        return ConnectionFailed(self.scrub(connect_failure(exc, self.config.name,
                                                           self.config.base_url)), detail)

    def _broke_off(self, exc: httpx.HTTPError) -> ConnectionFailed:
        """The connection failed during the reply, in plain words ("the connection to openai
        closed before the reply was complete"); httpx's own ("peer closed connection without
        sending complete message body: incomplete chunked read") go to the log and the
        error's ``detail``, and into the sentence only when they are all there is to say."""
        name, how, detail = self.config.name, how_it_broke(exc), self.scrub(os_words(exc))
        log.info("%s: the stream broke: %s", name, detail)
        said = {"reset": "was reset", "closed": "closed"}.get(how, "broke")
        return ConnectionFailed(with_detail(
            f"The connection to {name} {said} before the reply was complete",
            detail if not how else ""), detail)

    def _status_failure(self, response: httpx.Response, attempt: _Try,
                        started: float) -> _Retry:
        body = b""
        try:
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > _MAX_ERROR_BODY:
                    break
        except httpx.HTTPError:
            pass
        retry_after = parse_retry_after(response.headers)
        error = error_from_status(response.status_code, self.scrub(body.decode("utf-8", "replace")),
                                  response.headers, self.config.name, retry_after)
        retryable = self.policy.is_retryable_status(response.status_code)
        header = should_retry_header(response.headers)
        if header is not None:
            retryable = header
        if retry_after is not None and retry_after > self.policy.max_retry_after:
            retryable = False
        self._record(attempt, started, response.status_code, error)
        return _Retry(error, retryable, retry_after)

    def _read_stream(self, response: httpx.Response, request: ChatRequest, watchdog: Watchdog,
                     attempt: _Try, started: float, turn_started: float,
                     head_said: bool = False) -> Iterator[StreamEvent]:
        """``head_said``: the silence since the request was sent was said while the headers
        were held back; it is not said again once they came (one notice per silence)."""
        body = BodyReader(response.iter_bytes(), watchdog)
        try:
            yield from self._read_body(body, response, request, watchdog, attempt, started,
                                       turn_started, head_said)
        finally:
            body.close()  # (before the response is: no thread is left reading it)

    def _chunks(self, body: BodyReader, started: float, meter: ArrivalMeter,
                said_at: float | None = None) -> Iterator[bytes | Stalled]:
        """The body's chunks as they come, and a ``Stalled`` when a silence has lasted
        ``stall_notice`` s, once per silence: before the first text, since the request was
        sent (the first-token deadline's count; keep-alives do not end it), after it since
        the last bytes came (the idle deadline's)."""
        # (the start of the silence said: ``said_at`` when the wait for the headers said it)
        notice, said = self.timeouts.stall_notice, said_at
        while True:
            before_text = meter.first_at is None
            since, limit = (started, self.timeouts.first_token) if before_text else (
                body.last_at, self.timeouts.idle)
            wait = max(0.0, since + notice - time.monotonic()) \
                if said != since and 0 < notice < limit else None
            chunk = body.next(wait)
            if chunk is BODY_END:
                return
            if chunk is None:  # ``wait`` passed without a chunk
                said = since
                yield Stalled(self.config.name, notice, limit, before_text)
            elif isinstance(chunk, bytes):
                yield chunk

    def _read_body(self, body: BodyReader, response: httpx.Response, request: ChatRequest,
                   watchdog: Watchdog, attempt: _Try, started: float, turn_started: float,
                   head_said: bool = False) -> Iterator[StreamEvent]:
        state = StreamState()
        decoder = SSEDecoder()
        meter = ArrivalMeter()  # when the text came: TTFT and the speed
        failure: OutpostError | None = None
        chunks = body
        secrets = self.secrets()
        masked = secrets.stream()  # the key, even split across deltas, never reaches the caller
        # stop sequences beyond what the provider takes (OpenAI: 4; none where the server
        # refused ``stop``) end the reply here
        extra_stops = unsent_stops(self.config.kind, request.stop, self.refused_knobs)
        stops = StopScanner(extra_stops) if extra_stops else None
        # the reply ended at such a stop: the provider, which never saw it, goes on generating
        # (and billing) until its own end, where its usage comes. So the rest of the stream is
        # read for that usage only, its text not shown, for at most ``usage_after_stop`` s (the
        # watchdog then hangs up, and the tokens stay estimated from the text that came)
        after_stop = False
        try:
            for chunk in self._chunks(body, started, meter,
                                      started if head_said else None):
                if isinstance(chunk, Stalled):  # (said while it lasts; nothing else changes)
                    yield chunk
                    continue
                for event in decoder.feed(chunk):
                    text = self._read_event_safely(event, state)
                    if text:
                        now = time.monotonic()
                        meter.arrived(text, self.clock())
                        watchdog.got_text = True
                    if text and not after_stop:
                        shown = masked.feed(text)
                        if stops is not None:
                            shown = stops.feed(shown)
                            if stops.hit:  # the reply ends there, as at a stop it was sent
                                after_stop = True
                                watchdog.drain_until = now + self.timeouts.usage_after_stop
                        if shown:
                            yield TextDelta(shown)
                    if state.error is not None or state.done:
                        break
                if state.error is not None or state.done:
                    break
            if state.done and watchdog.fired is None:
                watchdog.drain_until = time.monotonic() + DRAIN_S
                self._drain(chunks)
        except httpx.ReadTimeout:
            failure = TimeoutError_(f"{self.config.name} sent nothing for "
                                    f"{self.timeouts.idle:g} s; the stream was dropped.")
        except httpx.HTTPError as exc:
            failure = self._broke_off(exc)
        if after_stop:  # the reply was whole at the stop: whatever came after it (the end, an
            # error, a cut, the bound, a cancel) only decides whose the usage figures are
            failure, state.error = None, None
        rest = masked.flush()
        if stops is not None:
            rest = stops.feed(rest) + stops.flush()
            if stops.hit:  # (also when completed by the last of the text)
                state.finish_reason = FinishReason.STOP
        if rest:
            yield TextDelta(rest)
        # a reply whose stop reason arrived is complete: what was still to come (the terminal
        # event, OpenAI's usage chunk) carries no text, so its loss is no interruption
        stopped = state.error is None and (state.done or state.finish_reason is not None)
        if stopped and watchdog.fired is None:
            failure = None
        if watchdog.fired is WatchdogReason.CANCEL and not after_stop:
            self._record(attempt, started, response.status_code, None,
                         _cancel_outcome(watchdog.cancel), self._billed_usage(request, state),
                         _ms(meter.first_at, turn_started))
            yield from self._finish(request, state, FinishReason.CANCELLED, turn_started, meter)
            return
        if watchdog.fired is WatchdogReason.FIRST_TOKEN:
            failure = TimeoutError_(f"{self.config.name} sent no text within "
                                    f"{self.timeouts.first_token:g} s.")
        if failure is None and state.error is not None:
            failure = state.error
        if failure is None and stopped and state.finish_reason is FinishReason.ERROR:
            failure = ProviderError(f"{self.config.name} stopped the reply (content filter or "
                                    "refusal).", response.status_code, self.config.name)
        if failure is None and not stopped:
            failure = StreamInterrupted(f"The stream from {self.config.name} ended before the "
                                        "reply was finished.", state.text)
        secrets.scrub_error(failure)  # an error event or a library message may quote the key
        # a connection that broke after text came was not a failure to connect: logged as the
        # interrupted stream it is (a timeout stays a timeout)
        logged = StreamInterrupted(str(failure), state.text, cause=failure) \
            if state.text and isinstance(failure, ConnectionFailed) else failure
        self._record(attempt, started, response.status_code, logged,
                     getattr(watchdog.cancel, "outcome", None) if failure is None else None,
                     self._billed_usage(request, state), _ms(meter.first_at, turn_started))
        if failure is None:
            yield from self._finish(request, state, state.finish_reason or FinishReason.STOP,
                                    turn_started, meter)
            return
        if not state.text:
            retryable = is_retryable_error(failure) or isinstance(
                failure, (ConnectionFailed, StreamInterrupted))
            if watchdog.fired is WatchdogReason.FIRST_TOKEN:
                retryable = False
            raise _Retry(failure, retryable)
        said = str(failure)
        if said.startswith("The "):  # one sentence: "... was cut off: the connection ..."
            said = "the " + said[4:]
        interrupted = failure if isinstance(failure, StreamInterrupted) else StreamInterrupted(
            f"The reply from {self.config.name} was cut off: {said}",
            secrets.scrub(state.text), cause=failure)
        yield from self._finish(request, state, FinishReason.ERROR, turn_started, meter,
                                error=interrupted)

    def _read_event_safely(self, event: ServerSentEvent, state: StreamState) -> str | None:
        """``read_event``; an event it cannot read (broken JSON, or valid JSON with a field of
        another type) ends the reply with an UnreadableStream, the text before it kept,
        instead of a crash or a silent gap in the text. Once the stop reason has arrived the
        reply is whole: an unreadable event after it (the usage chunk) is passed over."""
        try:
            return self.read_event(event, state)
        except (TypeError, ValueError, AttributeError, KeyError, IndexError) as exc:
            if state.finish_reason is not None:
                return None
            what = "broken JSON" if isinstance(exc, json.JSONDecodeError) else str(exc)
            state.error = UnreadableStream(
                f"{self.config.name} sent a stream event Outpost cannot read ({what}); the "
                "reply stops there.", None, self.config.name)
            return None

    @staticmethod
    def _drain(chunks: Iterable[bytes], limit: int = 64 * 1024) -> None:
        """Read what is left of the body after the terminal event (normally just the end of
        the chunked encoding), so the connection goes back to the pool for the next turn.
        Bounded: at most DRAIN_S (the watchdog cuts it) and 64 KiB; a failure here only costs
        the connection, never the reply."""
        read = 0
        try:
            for chunk in chunks:
                read += len(chunk)
                if read > limit:
                    break
        except httpx.HTTPError:
            pass

    def secrets(self) -> SecretMask:
        """The key in use, and every key this process has handled."""
        return SecretMask([self.api_key])

    def scrub(self, text: str) -> str:
        """A provider or proxy may echo the key (in an error body, an event, a header, the
        text): never pass it on."""
        return self.secrets().scrub(text)

    def get_model_ids(self, url: str, headers: dict) -> list[str]:
        """The ids of a provider's ``/models`` listing (both wire formats use ``data[].id``)."""
        return sorted(model_ids(self.get_json(url, headers)))

    def get_json(self, url: str, headers: dict, params: dict | None = None) -> dict:
        """A GET of the provider's API that answers JSON (a model listing)."""
        try:
            response = self._client.get(url, headers=headers, params=params)
        except httpx.HTTPError as exc:
            raise self._connection_error(exc) from None
        intercepted = self._intercepted(response)
        if intercepted is not None:
            raise intercepted
        if response.status_code != 200:
            raise error_from_status(response.status_code, self.scrub(response.text),
                                    response.headers, self.config.name)
        return self.parse_json(response)

    def parse_json(self, response: httpx.Response) -> dict:
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            ctype = response.headers.get("content-type", "no content type")
            raise ProviderError(f"{self.config.name} answered with {ctype} that is not the "
                                "expected JSON; is the base URL right?", response.status_code,
                                self.config.name)
        return data

    def _billed_usage(self, request: ChatRequest, state: StreamState) -> Usage | None:
        """What an attempt whose stream began (HTTP 200) is recorded with, however it ended:
        the provider had the prompt and bills it, and whatever it generated before the end,
        even when it reported no usage (``_usage`` counts them then). None only when the
        provider refused before any text with an error event of its own (overloaded, rate
        limited), as an HTTP error status is: nothing billed, nothing reported."""
        refused = state.error is not None and not isinstance(state.error, UnreadableStream)
        if refused and not state.text and state.prompt_tokens is None and \
                state.completion_tokens is None:
            return None
        return self._usage(request, state)

    def _usage(self, request: ChatRequest, state: StreamState) -> Usage:
        """The reply's usage: reported by the provider, else counted (and marked estimated)
        the way the prompt was counted before sending (``count_prompt``: tiktoken in OpenAI's
        chat format where the model is known, else characters / 4 with the per-message
        overhead), so the ledger and the quotas see the figure the meter showed."""
        if state.prompt_tokens is not None and state.completion_tokens is not None:
            return Usage(state.prompt_tokens, state.completion_tokens, estimated=False,
                         cached_prompt_tokens=state.cached_prompt_tokens)
        prompt = state.prompt_tokens if state.prompt_tokens is not None \
            else self.count_prompt(request.messages)[0]
        completion = state.completion_tokens if state.completion_tokens is not None \
            else count_text(state.text, self.model).tokens
        return Usage(prompt, completion, estimated=True,
                     cached_prompt_tokens=state.cached_prompt_tokens)

    def _finish(self, request: ChatRequest, state: StreamState, reason: FinishReason,
                turn_started: float, meter: ArrivalMeter,
                error: EngineError | None = None) -> Iterator[StreamEvent]:
        usage = self._usage(request, state)
        yield usage
        # the speed of the tokens the reply shows (reported, else counted), as they arrived:
        # none from a burst, and a stall after the last of them does not count
        yield Finished(reason, ttft_ms=_ms(meter.first_at, turn_started),
                       tokens_per_s=meter.tokens_per_s(usage.completion_tokens), error=error)


def model_ids(listing: dict) -> list[str]:
    """The model ids of one page of a ``/models`` listing."""
    data = listing.get("data") or []
    return [str(item.get("id")) for item in data if isinstance(item, dict)]


def _ms(at: float | None, since: float) -> float | None:
    return round((at - since) * 1000, 2) if at is not None else None


def _cancel_outcome(cancel: threading.Event) -> str:
    """Why the attempt was cancelled: the user, or the router (``hedge_lost``)."""
    return cancel_reason(cancel)
