"""The retry/timeout policy as data: pure functions, no network."""
from __future__ import annotations

import datetime as dt
import random

import httpx

from app.domain.errors import (
    AuthError,
    BadRequest,
    ContextTooLong,
    ProviderUnavailable,
    RateLimited,
)
from engines.http_policy import (
    RetryPolicy,
    error_from_status,
    nobody_there,
    parse_retry_after,
    rate_limit_headers,
    should_retry_header,
)

NOW = dt.datetime(2026, 11, 24, 12, 0, 0, tzinfo=dt.timezone.utc)


def test_retry_after_forms():
    assert parse_retry_after({"retry-after-ms": "1500"}) == 1.5
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert parse_retry_after({"retry-after": "121"}) == 121
    assert parse_retry_after({"retry-after": "Tue, 24 Nov 2026 12:00:30 GMT"}, NOW) == 30
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def test_next_delay_follows_the_policy():
    policy = RetryPolicy()
    rng = random.Random(1)
    assert policy.next_delay(0, True, 1.5, rng) == 1.5  # the server's word, within the cap
    assert policy.next_delay(0, True, 121, rng) is None  # beyond the 60 s cap: stop and tell
    assert policy.next_delay(2, True, None, rng) is None  # 2 retries by default
    assert policy.next_delay(0, False, None, rng) is None
    first = [policy.next_delay(0, True, None, random.Random(s)) for s in range(50)]
    assert all(0.375 <= d <= 0.625 for d in first)  # 0.5 s +-25% jitter
    assert len(set(first)) > 10
    assert all(d <= 8 * 1.25 for d in (policy.backoff(n) for n in range(1, 12)))


def test_status_becomes_a_typed_error_in_plain_words():
    body = '{"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}'
    auth = error_from_status(401, body, {}, "openai")
    assert isinstance(auth, AuthError) and "outpost keys set openai" in str(auth)
    limited = error_from_status(429, "{}", {}, "openai", retry_after=121)
    assert isinstance(limited, RateLimited) and limited.retry_after == 121
    assert "Try again after" in str(limited) and "in 121 s" in str(limited)
    past = error_from_status(429, "{}", {}, "openai", retry_after=-30)  # a date already gone
    assert "tried again now" in str(past) and "in 0 s" not in str(past)
    ctx = error_from_status(400, '{"error": {"code": "context_length_exceeded", "message": '
                                 '"maximum context length is 8192 tokens"}}', {}, "openai")
    assert isinstance(ctx, ContextTooLong)
    assert isinstance(error_from_status(422, '{"error": {"message": "bad"}}', {}, "x"), BadRequest)
    assert isinstance(error_from_status(529, '{"type": "error", "error": {"type": '
                                            '"overloaded_error"}}', {}, "a"), ProviderUnavailable)


def test_headers_kept_and_obeyed():
    headers = {"x-ratelimit-remaining-requests": "9", "anthropic-ratelimit-tokens-remaining": "5",
               "content-type": "text/event-stream", "retry-after": "3"}
    assert rate_limit_headers(headers) == {"x-ratelimit-remaining-requests": "9",
                                           "anthropic-ratelimit-tokens-remaining": "5",
                                           "retry-after": "3"}
    assert should_retry_header({"x-should-retry": "false"}) is False
    assert should_retry_header({"x-should-retry": "true"}) is True
    assert should_retry_header({}) is None


def test_nobody_there_is_a_refused_connection_an_unknown_name_or_no_route():
    """What Auto answers locally at once (no retries): nothing at the address can answer.
    A timeout, a reset or a TLS failure may pass on a second try: not these."""
    for words in ("[Errno 111] Connection refused", "[Errno -2] Name or service not known",
                  "[Errno -3] Temporary failure in name resolution",
                  "[Errno 101] Network is unreachable", "[Errno 113] No route to host"):
        assert nobody_there(httpx.ConnectError(words)), words
    for words in ("[Errno 104] Connection reset by peer", "timed out",
                  "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"):
        assert not nobody_there(httpx.ConnectError(words)), words
    assert not nobody_there(httpx.ConnectTimeout("timed out"))
