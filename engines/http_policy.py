"""The one place that decides about HTTP failures: timeouts, which responses are retried and how
long to wait, how a status becomes an Outpost error, which rate-limit headers are kept, and the
words for a connection that failed (``connect_failure``: a provider's or a model download's).

Modelled on the openai/anthropic SDKs' constants: 2 retries, exponential backoff 0.5 s .. 8 s with
jitter, ``retry-after-ms`` / ``retry-after`` (seconds or an HTTP date) honoured up to a cap, and
``x-should-retry`` obeyed. Retries happen only before the first token reached the user.
"""
from __future__ import annotations

import datetime as dt
import email.utils
import json
import random
import re
from dataclasses import dataclass, field
from typing import Mapping
from urllib.parse import urlsplit

from app.domain.errors import (
    AuthError,
    BadRequest,
    ContextTooLong,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
)

RETRYABLE_STATUSES = frozenset({408, 409, 429, 529})
_CONTEXT_MARKERS = ("context_length_exceeded", "context length", "maximum context",
                    "prompt is too long", "too many tokens", "context window")


@dataclass(frozen=True)
class Timeouts:
    connect: float = 5.0
    first_token: float = 30.0  # from sending the request to the first text
    idle: float = 60.0  # between two reads of the stream; keep-alive comments and pings reset it
    # after this long without text (before the first) or data (after it) the stream says it
    # waits (``Stalled``), once per silence; none when the deadline comes first
    stall_notice: float = 10.0
    # after a stop sequence Outpost ends the reply at itself (beyond the provider's limit): how
    # long the rest of the stream is read, unseen, for the provider's reported usage
    usage_after_stop: float = 2.0


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 2
    initial_backoff: float = 0.5
    max_backoff: float = 8.0
    jitter: float = 0.25  # +-25% of the backoff
    max_retry_after: float = 60.0  # a longer server-requested wait is not waited: the user is told
    # a provider nothing answers for (connection refused, a name that does not resolve, no
    # route: ``nobody_there``) is tried again only when no other engine stands behind it (Cloud
    # only); on Auto the local model answers at once instead of after the backoff
    retry_nobody_there_with_fallback: bool = False

    def is_retryable_status(self, status: int) -> bool:
        return status in RETRYABLE_STATUSES or status >= 500

    def next_delay(self, retries_done: int, retryable: bool, retry_after: float | None,
                   rng: random.Random | None = None) -> float | None:
        """Seconds to wait before the next attempt, or None to stop and report the error.

        The server's own ``retry-after`` wins when it is within the cap; beyond the cap we stop
        (the error tells the user when to try again) rather than hang for minutes."""
        if not retryable or retries_done >= self.max_retries:
            return None
        if retry_after is not None:
            return retry_after if retry_after <= self.max_retry_after else None
        return self.backoff(retries_done + 1, rng)

    def backoff(self, retry_number: int, rng: random.Random | None = None) -> float:
        """Delay before retry ``retry_number`` (1-based) when the server did not say."""
        base = min(self.max_backoff, self.initial_backoff * 2 ** (retry_number - 1))
        spread = (rng or random).uniform(-self.jitter, self.jitter)
        return max(0.0, base * (1 + spread))


@dataclass
class AttemptRecord:
    """One HTTP attempt, for the request log."""

    attempt: int  # 1-based
    status: int | None
    latency_ms: float
    error_kind: str | None
    rate_limits: dict[str, str] = field(default_factory=dict)
    idempotency_key: str = ""
    provider: str = ""  # "local" for the local model's attempts (hedging, failover)
    model: str = ""
    outcome: str | None = None  # "cancelled", "hedge_lost" (the other engine won), "won", …
    # what the attempt produced (the usage ledger): reported, or estimated when not
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    tokens_estimated: bool = False
    cached_prompt_tokens: int = 0
    ttft_ms: float | None = None
    kind: str = ""  # the wire format / engine kind: "openai", "anthropic", "local"
    # why the attempt was sent again, not as a retry: "re-sent without temperature" (the one
    # before it was refused for a parameter the request can go without)
    note: str | None = None


def parse_retry_after(headers: Mapping[str, str], now: dt.datetime | None = None) -> float | None:
    """Seconds to wait as the server asks: ``retry-after-ms``, then ``retry-after`` as seconds or
    as an HTTP date. None when absent or unparseable."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    now = now or dt.datetime.now(dt.timezone.utc)
    return max(0.0, (when - now).total_seconds())


def should_retry_header(headers: Mapping[str, str]) -> bool | None:
    value = (headers.get("x-should-retry") or "").strip().lower()
    return True if value == "true" else False if value == "false" else None


def rate_limit_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The provider's rate-limit state, kept for routing and quotas."""
    keep = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower.startswith(("x-ratelimit-", "anthropic-ratelimit-")) or lower in (
                "retry-after", "retry-after-ms"):
            keep[lower] = value
    return keep


def provider_message(body: str) -> str:
    """The human part of an error body from OpenAI-style or Anthropic-style APIs."""
    try:
        data = json.loads(body)
    except ValueError:
        return body.strip()[:300]
    error = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(error, dict):
        return str(error.get("message") or error.get("type") or "")[:300]
    return str(error or "")[:300]


def _error_code(body: str) -> str:
    try:
        data = json.loads(body)
        error = data.get("error", {}) if isinstance(data, dict) else {}
        return " ".join(str(error.get(k, "")) for k in ("type", "code")) if isinstance(
            error, dict) else ""
    except ValueError:
        return ""


_UNSUPPORTED_CODES = ("unsupported_parameter", "unsupported_value")
# words that say a parameter is not taken (not that its value is out of range): OpenAI's
# "Unsupported value: 'temperature' does not support 0.7 with this model", Anthropic's
# "`temperature` is deprecated for this model." and "`temperature` and `top_p` cannot both be
# specified for this model. Please use only one.", a validating server's "top_k: Extra inputs
# are not permitted"
_REFUSAL_WORDS = re.compile(r"unsupported|not supported|does not support|deprecated|"
                            r"not permitted|not allowed|cannot both be specified|"
                            r"cannot be used|may only be set", re.IGNORECASE)
# a parameter named in such a message: `name`, 'name', or "name:" opening it (or a line)
_NAMED = re.compile(r"`([a-z_]+)`|'([a-z_]+)'|^([a-z_]+):", re.MULTILINE)


def refused_params(body: str) -> tuple[str, ...]:
    """The request parameters an error body refuses, in the order it names them: OpenAI's
    ``{"error": {"param": "temperature", "code": "unsupported_value", ...}}`` (or
    ``unsupported_parameter``), else the names in a message that says they are not taken
    (``_REFUSAL_WORDS``), OpenAI's or Anthropic's (``{"type": "error", "error": {"type":
    "invalid_request_error", "message": "`temperature` is deprecated for this model."}}``).
    Empty for any other error. Not every name is a parameter that was sent (OpenAI's "Use
    'max_completion_tokens' instead"): the engine drops only one it sent (``CloudEngine``)."""
    try:
        data = json.loads(body)
    except ValueError:
        return ()
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return ()
    param = error.get("param")
    if str(error.get("code") or "").lower() in _UNSUPPORTED_CODES and isinstance(param, str) \
            and param:
        return (param,)
    message = str(error.get("message") or "")
    if not _REFUSAL_WORDS.search(message):
        return ()
    named = (next(name for name in match.groups() if name) for match in _NAMED.finditer(message))
    return tuple(dict.fromkeys(named))


def retry_at_text(seconds: float, now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now().astimezone()
    when = now + dt.timedelta(seconds=seconds)
    return when.strftime("%H:%M:%S")


def error_from_status(status: int, body: str, headers: Mapping[str, str], provider: str,
                      retry_after: float | None = None) -> ProviderError:
    """Turn an HTTP error response into the matching Outpost error, in plain words."""
    detail = provider_message(body)
    code = _error_code(body).lower()
    said = f" The provider said: {detail}" if detail else ""
    if status in (401, 403):
        return AuthError(
            f"{provider} refused the API key (HTTP {status}).{said} Check the key with "
            f"`outpost keys set {provider}` or in Providers.", status, provider)
    if status == 429:
        if retry_after is not None and retry_after >= 1:
            when = (f" Try again after {retry_at_text(retry_after)} "
                    f"(in {retry_after:.0f} s).")
        elif retry_after is not None:  # (a Retry-After date already past)
            when = " It may be tried again now."
        else:
            when = " Try again in a minute."
        return RateLimited(f"{provider} is rate limiting requests (HTTP 429).{when}{said}",
                           status, provider, retry_after=retry_after,
                           retry_at=retry_at_text(retry_after) if retry_after is not None
                           else None)
    if status in (400, 404, 413, 422) and any(m in (code + " " + detail).lower()
                                               for m in _CONTEXT_MARKERS):
        return ContextTooLong(f"The conversation is too long for this model at {provider}."
                              f"{said} Start a new chat or shorten the message.", status, provider)
    if status in (400, 404, 413, 422):
        return BadRequest(f"{provider} rejected the request (HTTP {status}).{said}", status,
                          provider, refused_params=refused_params(body))
    if status == 529 or status >= 500 or "overloaded" in code:
        return ProviderUnavailable(f"{provider} is unavailable right now (HTTP {status}).{said}",
                                   status, provider)
    return ProviderError(f"{provider} answered HTTP {status}.{said}", status, provider)


_WEB_PAGE_TYPES = ("text/html", "application/xhtml+xml")


def network_answer(status: int, headers: Mapping[str, str]) -> str | None:
    """What came back, in words, when it was not the provider's API but something on the way
    (a hotel or captive Wi-Fi sign-in page, a proxy): a redirect (clients never follow one: the
    key must not travel to another host), HTTP 511 (Network Authentication Required, the status
    made for captive portals) or a web page with 200. None: an answer to read as the API's.
    A wrong base URL (the provider's website instead of its API) looks the same."""
    if 300 <= status < 400:
        where = _host_of(headers.get("location") or "")
        return f"a redirect (HTTP {status}{f' to {where}' if where else ''})"
    if status == 511:
        return "a request to sign in to the network (HTTP 511)"
    ctype = (headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    if status == 200 and ctype in _WEB_PAGE_TYPES:
        return f"a web page ({ctype})"
    return None


def _host_of(location: str) -> str:
    """The host a redirect points to (not its path or query, which may carry a portal's
    session token); "" for a relative one."""
    try:
        return urlsplit(location.strip()).hostname or ""
    except ValueError:
        return ""


def error_from_stream_event(error_type: str, message: str, provider: str) -> ProviderError:
    """An error object sent inside an SSE stream (Anthropic ``event: error``, OpenAI ``error``)."""
    kind = (error_type or "").lower()
    said = f" The provider said: {message}" if message else ""
    if "overloaded" in kind or "server" in kind or "unavailable" in kind or "api_error" == kind:
        return ProviderUnavailable(f"{provider} is overloaded or failing.{said}", None, provider)
    if "rate_limit" in kind:
        return RateLimited(f"{provider} is rate limiting requests.{said}", None, provider)
    if "authentication" in kind or "permission" in kind:
        return AuthError(f"{provider} refused the API key.{said}", None, provider)
    if any(m in (kind + " " + message).lower() for m in _CONTEXT_MARKERS):
        return ContextTooLong(f"The conversation is too long for this model at {provider}."
                              f"{said}", None, provider)
    if "invalid_request" in kind or "not_found" in kind:
        return BadRequest(f"{provider} rejected the request.{said}", None, provider)
    return ProviderError(f"{provider} reported an error in the stream ({error_type}).{said}",
                         None, provider)


def is_retryable_error(error: Exception) -> bool:
    return isinstance(error, (ProviderUnavailable, RateLimited)) or (
        isinstance(error, ProviderError) and error.status in RETRYABLE_STATUSES)


def connect_failure(exc: BaseException, name: str, url: str, check: str = "the base URL") -> str:
    """A connection to ``name`` at ``url`` that failed before any answer, in plain words from
    the HTTP library's own (refused, a name that could not be looked up, reset, closed, no
    route, TLS; else the OS's words). ``check``: where a typo would be (a provider's base URL,
    a download's URL). The cloud engines and model downloads say it alike. The library's own
    words ("peer closed connection without sending complete message body") are added in
    parentheses only where the sentence cannot say what happened (a TLS failure's reason, a
    failure of no known kind); they stay in the log (``os_words``)."""
    text = str(exc).lower()
    if "refused" in text:
        return (f"Could not connect to {name}: nothing answered at {url} (connection refused). "
                f"Is the server running and {check} right?")
    if any(words in text for words in _LOOKUP_FAILED):
        return (f"Could not connect to {name}: the address of {url} could not be looked up. "
                f"Offline, or a typo in {check}?")
    detail, how = os_words(exc), how_it_broke(exc)
    if how == "reset":
        said = f"The connection to {name} was reset before it answered"
    elif how == "closed":
        said = f"{name} closed the connection without answering"
    elif how == "pipe":
        said = f"The connection to {name} broke while the request was being sent"
    elif how == "no_route":
        said = (f"Could not connect to {name} at {url}: this computer has no network route "
                "to it; it may be offline")
    elif how == "tls":
        said = (f"Could not set up a secure connection to {name} at {url}; the sign-in "
                "page of a hotel or captive Wi-Fi, or a proxy, may be in the way")
    else:
        said = f"Could not connect to {name} at {url}"
    return with_detail(said, detail if how in ("tls", "") else "")


def nobody_there(exc: BaseException) -> bool:
    """A connection that failed because nothing can answer at the address: refused, a host
    name that could not be looked up, or no route to it (not a timeout, a reset or TLS)."""
    text = str(exc).lower()
    return "refused" in text or any(words in text for words in _LOOKUP_FAILED) or \
        how_it_broke(exc) == "no_route"


# a host name that could not be looked up (glibc: no such name, no DNS server reached, no
# address; macOS; Windows), in the OS's words as the HTTP library passes them on
_LOOKUP_FAILED = ("name or service not known", "temporary failure in name resolution",
                  "no address associated with hostname", "nodename nor servname",
                  "getaddrinfo")


def os_words(exc: BaseException) -> str:
    """The OS's or the HTTP library's own words about a failure, without the "[Errno 104]" or
    "[SSL: ...]" prefix and the "(_ssl.c:1000)" suffix; the exception's type when it has
    none."""
    text = str(exc).strip()
    text = re.sub(r"^\[(Errno -?\d+|SSL(: \w+)?)\]\s*", "", text).rstrip(".")
    text = re.sub(r"\s*\(_ssl\.c:\d+\)$", "", text)
    text = re.sub(r"\s*\(([^()]*)\)$", r": \1", text)  # no parentheses inside the ones it goes in
    return text or type(exc).__name__


def how_it_broke(exc: BaseException) -> str:
    """How a connection failed, from the library's words: "reset", "closed" (the other end
    closed it), "pipe" (it broke while sending), "no_route", "tls", or "" (something else)."""
    text = str(exc).lower()
    if "reset by peer" in text or "connection reset" in text or "econnreset" in text:
        return "reset"
    if "broken pipe" in text:
        return "pipe"
    if "incomplete chunked read" in text or "peer closed connection" in text or \
            "server disconnected" in text or "connection closed" in text:
        return "closed"
    if "network is unreachable" in text or "no route to host" in text:
        return "no_route"
    if "ssl" in text or "certificate" in text or "tls" in text:
        return "tls"
    return ""


def with_detail(sentence: str, detail: str) -> str:
    """A plain sentence, with the OS's own words in parentheses at its end."""
    return f"{sentence} ({detail})." if detail else f"{sentence}."
