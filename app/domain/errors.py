"""The one error tree of Outpost.

    OutpostError                      base; `kind` is a stable machine-readable name
    ├── UsageError                    bad input from the user or a script (CLI flag, unknown id)
    │   ├── NoProviderForCloud        a Cloud only conversation, and no provider is chosen
    │   ├── BadSearch                 a full-text search that is not valid FTS5 syntax (carries
    │   │                             `why`; ``as_typed`` names the search as the user typed it)
    │   ├── KeyInMessage              a message holds one of the user's own API keys: refused
    │   │                             before it is stored or sent (carries `whose`)
    │   └── ProfileError              a profile that does not exist, an unusable name or PIN
    │       ├── WrongPin              a wrong or missing PIN, or a profile locked after those
    │       └── NotAllowed            only the admin may do that (or: another's conversation)
    ├── ModelError                    a local model file cannot be used
    │   ├── ModelNotFound             the path does not exist / bundled model not installed
    │   ├── ModelInvalid              not a GGUF file, or truncated, or unsupported
    │   └── ModelLoadFailed           llama.cpp refused to load a well-formed file
    ├── EngineError                   a backend failed while producing a reply
    │   ├── ProviderError             a cloud provider said no (carries `status`, `provider`)
    │   │   ├── AuthError             401/403: the key is missing, wrong or lacks access
    │   │   ├── BadRequest            400/404/422: the provider's own message is kept
    │   │   │   └── ContextTooLong    the conversation does not fit the model's window
    │   │   ├── RateLimited           429 (carries `retry_after` seconds, `retry_at`)
    │   │   ├── ProviderUnavailable   5xx, 529, overloaded
    │   │   └── UnreadableStream      the reply stream carried an event Outpost cannot read
    │   │                             (broken JSON, a field of another type)
    │   ├── TimeoutError_             connect / first-token / idle deadline passed
    │   ├── ConnectionFailed          DNS, refused, reset before any reply
    │   │   ├── OfflineModeOn         Offline mode is on: the host was not contacted
    │   │   │                         (engines.network_guard refuses before any socket)
    │   │   └── NetworkIntercepted    the network answered in place of the provider (a
    │   │                             sign-in page or a redirect: hotel or captive Wi-Fi)
    │   ├── StreamInterrupted         died after partial text (carries `partial`, `cause`;
    │   │                             its kind is the cause's when a provider's error ended it)
    │   ├── DownloadFailed            a model download stopped or was refused (the part is kept
    │   │                             when it can be resumed: `resumable`, `what`, `first`)
    │   ├── EmptyReply                the model answered nothing (saved, marked as an error)
    │   └── InvalidJsonReply          structured output still invalid after its one repair
    ├── StorageError                  the database or a file could not be read or written
    │   ├── KnownStorageError         disk full, database locked, read-only: shown to the user
    │   │   ├── DatabaseDamaged       the database file fails its check (or is empty): nothing
    │   │   │                         is written to it; carries the newest good backup
    │   │   ├── BackupSkipped         the day's rolling backup could not be written (a full
    │   │   │                         disk): a warning, never a reason to refuse a command
    │   │   └── ReplyNotSaved         a reply's final write failed: the turn keeps it and
    │   │                             ``ChatService.save_unsaved`` writes it when it can
    │   └── FileWriteFailed           a file Outpost owns (settings, keys, …) could not be
    │                                 written; the previous version is kept
    ├── InternalError                 a bug: an exception outside this tree, wrapped
    └── Cancelled                     the user stopped the reply; never shown as an error

Engines translate their own failures (llama.cpp exceptions, HTTP errors) into these at their
boundary. Every message is one plain sentence that names the thing and the problem, so the CLI
can print it as-is on stderr and the window can show it in a banner. Where only the kind is
kept (a route reason, a provider's link state), ``kind_words`` says it in words.
"""
from __future__ import annotations

import re


class OutpostError(Exception):
    """Base class of every error Outpost raises on purpose."""

    kind = "error"
    exit_code = 1

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(OutpostError):
    kind = "usage"
    exit_code = 2


class NoProviderForCloud(UsageError):
    kind = "no_provider"


class BadSearch(UsageError):
    """A full-text search that is not valid FTS5 syntax. Its message names ``query``, the
    search as it was run; ``as_typed`` gives the same error naming what the user typed (a
    command-line search is rewritten before it runs: ``NEAR(`` runs as ``NEAR()``)."""

    kind = "bad_search"

    def __init__(self, query: str, why: str, advice: str = ""):
        super().__init__(f"The search {query!r} is not valid full-text search syntax ({why})"
                         f"{'; ' + advice if advice else ''}.")
        self.why, self.advice = why, advice

    def as_typed(self, text: str) -> BadSearch:
        return BadSearch(text, self.why, self.advice)


class KeyInMessage(UsageError):
    """A message (or what a turn would send) holds one of the user's own API keys, pasted by
    mistake: the turn is refused before anything is stored or sent. ``whose``: the words that
    name the key ("your API key for openai"); the message never quotes the key."""

    kind = "key_in_message"

    def __init__(self, message: str, whose: str = ""):
        super().__init__(message)
        self.whose = whose


class ProfileError(UsageError):
    kind = "profile"


class WrongPin(ProfileError):
    kind = "wrong_pin"


class NotAllowed(ProfileError):
    kind = "not_allowed"


class ModelError(OutpostError):
    kind = "model"
    exit_code = 3

    def __init__(self, message: str, path: str | None = None):
        super().__init__(message)
        self.path = path


class ModelNotFound(ModelError):
    kind = "model_not_found"


class ModelInvalid(ModelError):
    kind = "model_invalid"


class ModelLoadFailed(ModelError):
    kind = "model_load_failed"


class EngineError(OutpostError):
    kind = "engine"
    exit_code = 4


class ProviderError(EngineError):
    kind = "provider"

    def __init__(self, message: str, status: int | None = None, provider: str = ""):
        super().__init__(message)
        self.status = status
        self.provider = provider


class AuthError(ProviderError):
    kind = "auth"


class BadRequest(ProviderError):
    kind = "bad_request"

    def __init__(self, message: str, status: int | None = None, provider: str = "",
                 refused_params: tuple[str, ...] = ()):
        super().__init__(message, status, provider)
        # the request parameters the provider refused, as it named them (OpenAI's "param" with
        # code unsupported_parameter / unsupported_value, or the words of OpenAI's or
        # Anthropic's message: engines.http_policy.refused_params): the engine sends the request
        # again without one of them, if it sent it
        self.refused_params = refused_params


class ContextTooLong(BadRequest):
    kind = "context_too_long"


class RateLimited(ProviderError):
    kind = "rate_limited"

    def __init__(self, message: str, status: int | None = 429, provider: str = "",
                 retry_after: float | None = None, retry_at: str | None = None):
        super().__init__(message, status, provider)
        self.retry_after = retry_after
        self.retry_at = retry_at


class ProviderUnavailable(ProviderError):
    kind = "provider_unavailable"


class UnreadableStream(ProviderError):
    """The provider's reply stream carried an event Outpost cannot read: broken JSON, or valid
    JSON with a field of another type. Not a network failure: the connection was fine."""

    kind = "unreadable_stream"


class TimeoutError_(EngineError):
    """A deadline passed (named with a trailing underscore: not the builtin TimeoutError)."""

    kind = "timeout"


class ConnectionFailed(EngineError):
    """``detail``: the HTTP library's or the OS's own words about it ("peer closed connection
    without sending complete message body: incomplete chunked read"), for the log; the
    message says it plainly."""

    kind = "connection_failed"

    def __init__(self, message: str, detail: str = ""):
        super().__init__(message)
        self.detail = detail


class OfflineModeOn(ConnectionFailed):
    """Offline mode is on, so ``engines.network_guard`` refused a connection before any socket
    was opened. A ConnectionFailed, so what waits for the network (outbox items, queued
    downloads) goes on waiting instead of failing."""

    kind = "offline_mode"


class NetworkIntercepted(ConnectionFailed):
    """Something on the way answered in place of the provider: a redirect, or a web page where
    the API's answer should be (a hotel or captive Wi-Fi sign-in page, a proxy's page). The
    provider was not reached, so it is a ConnectionFailed, of the same kind: Auto answers
    locally, Cloud only keeps the message in the outbox, and the provider's link counts as
    unreachable. A wrong base URL looks the same, so the message says so too."""

    def __init__(self, message: str, status: int | None = None, provider: str = "",
                 location: str | None = None):
        super().__init__(message)
        self.status = status
        self.provider = provider
        self.location = location  # where a redirect pointed (None: not a redirect)


class StreamInterrupted(EngineError):
    """A reply broke off after some text. ``cause``: the failure that broke it (a provider's
    error event, a content filter, a stream Outpost cannot read, a lost connection), or None
    when the stream just ended early (the connection closed).

    Its ``kind`` says why, for the words a route reason or a link state shows: the cause's own
    kind when the provider ended the reply (``ProviderError``: "the provider is overloaded or
    down", "the reply stream was garbled", ...), else ``stream_interrupted`` ("the connection
    broke"). It is a StreamInterrupted either way (routing looks at the type)."""

    kind = "stream_interrupted"

    def __init__(self, message: str, partial: str = "", cause: "OutpostError | None" = None):
        super().__init__(message)
        self.partial = partial
        self.cause = cause
        if isinstance(cause, ProviderError):  # the provider said why: not the connection
            self.kind = cause.kind


class DownloadFailed(EngineError):
    """A model download stopped or was refused. ``resumable``: what was downloaded is kept, and
    the same download started again goes on from there. The message then ends in the command
    line's way to do that ("…: run the same command again to resume."); a front end with its
    own way says ``saying(how)`` instead ("…. Press Retry to resume it."), built from ``what``
    happened and what to do ``first`` ("free some space"), never by rewriting the message."""

    kind = "download_failed"

    def __init__(self, what: str, *, resumable: bool = False, first: str = ""):
        self.what, self.resumable, self.first = what, resumable, first
        if resumable:
            steps = f"{first} and {RESUME_BY_COMMAND}" if first else RESUME_BY_COMMAND
            what = f"{what}{'; ' if first else ': '}{steps}."
        super().__init__(what)

    def saying(self, how: str) -> str:
        """The error in a front end's words: ``how`` it resumes a download ("press Retry to
        resume it"), after ``first`` if there is a step to take before; the message as it is
        when the download cannot be resumed."""
        if not self.resumable:
            return self.message
        steps = f"{self.first}, then {how}" if self.first else how
        return f"{self.what}. {steps[:1].upper()}{steps[1:]}."


RESUME_BY_COMMAND = "run the same command again to resume"  # DownloadFailed, in the CLI


class EmptyReply(EngineError):
    kind = "empty_reply"


class InvalidJsonReply(EngineError):
    kind = "invalid_json"


class StorageError(OutpostError):
    kind = "storage"
    exit_code = 5


class KnownStorageError(StorageError):
    kind = "storage_known"


class DatabaseDamaged(KnownStorageError):
    """The database file failed its check at start (or is empty while backups of it exist).
    It is left as it is and nothing is written to it; ``backup`` is the newest backup that
    passed its own check (None: there is none)."""

    kind = "database_damaged"

    def __init__(self, message: str, path: str = "", problem: str = "",
                 backup: str | None = None, backups_folder: str = ""):
        super().__init__(message)
        self.path = path
        self.problem = problem  # what the check found, in SQLite's words
        self.backup = backup  # the newest good backup's path
        self.backups_folder = backups_folder  # where a restore keeps the damaged file


class BackupSkipped(KnownStorageError):
    """The day's rolling backup could not be written (too little free space, a backups folder
    that cannot be written): the database itself is fine, so this is said as a warning and
    every command goes on (``app.storage.store.Store.roll_backup``). ``free`` and ``needed``:
    bytes free where the backup goes and about how many it needs (None: not known)."""

    kind = "backup_skipped"

    def __init__(self, message: str, free: int | None = None, needed: int | None = None):
        super().__init__(message)
        self.free, self.needed = free, needed


class ReplyNotSaved(KnownStorageError):
    """The reply's final write failed (a full disk, a lock held too long): the whole reply is
    kept in memory by its turn and written when the store takes it again
    (``app.chat.service.ChatService.save_unsaved``); the row meanwhile holds what the last
    periodic write saved. Its ``kind`` stays ``storage_known`` (what scripts match on)."""


class FileWriteFailed(StorageError):
    """A config or data file could not be written (disk full, read-only, no permission). The
    file on disk is still the previous version: it is written whole or not at all."""

    kind = "file_write"


class InternalError(OutpostError):
    """An exception that is not Outpost's own (a bug), carried where only the tree may go."""

    kind = "bug"


class Cancelled(OutpostError):
    kind = "cancelled"
    exit_code = 130

    def __init__(self, message: str = "The reply was stopped."):
        super().__init__(message)


def break_kind(error: OutpostError) -> str:
    """Why a stream broke off after some text, as a kind: a timeout or a garbled stream says
    so (its cause); a connection that broke is ``stream_interrupted`` ("the connection
    broke"), never "could not connect"."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, OutpostError) and cause.kind not in ("connection_failed", "error"):
        return cause.kind
    return "stream_interrupted" if error.kind == "connection_failed" else error.kind


# Every ``kind`` above in words a user reads in a footer, a tooltip or a route reason
# ("openai failed before answering (could not connect)"); the kinds themselves stay stable,
# machine-readable names for the CLI's JSON and the usage ledger.
KIND_WORDS = {
    "error": "an error", "usage": "not a valid request", "no_provider": "no provider chosen",
    "key_in_message": "the message holds your API key",
    "model": "a problem with the model", "model_not_found": "model file not found",
    "model_invalid": "not a usable model file", "model_load_failed": "the model did not load",
    "engine": "an engine error", "provider": "refused by the provider",
    "auth": "the API key was refused", "bad_request": "the request was refused",
    "context_too_long": "the conversation is too long for the model",
    "rate_limited": "rate limited", "provider_unavailable": "the provider is overloaded or down",
    "unreadable_stream": "the reply stream was garbled",
    "timeout": "timed out", "connection_failed": "could not connect",
    "stream_interrupted": "the connection broke", "download_failed": "the download failed",
    "empty_reply": "an empty reply", "invalid_json": "not valid JSON",
    "storage": "could not read or write the data", "storage_known": "a storage problem",
    "bug": "an internal error", "cancelled": "stopped",
    # subclasses defined where they are raised
    "message_too_long": "the message is too long for the model",
    "bad_search": "not a valid search",
    "quota_exceeded": "over the quota", "rate_limited_locally": "over the profile's rate limit",
    "profile": "a profile problem", "wrong_pin": "wrong PIN",
    "not_allowed": "not allowed for this profile", "insecure_keyring": "no secure keychain",
    "config_invalid": "a config file is damaged",
    "offline_mode": "Offline mode is on",
    "file_write": "a file could not be written",
    "invalid_key": "not a usable API key", "key_file_damaged": "the key file is damaged",
    "database_damaged": "the database is damaged",
    "backup_skipped": "today's backup was skipped",
}


def kind_words(kind: str | None) -> str:
    """Plain words for an error kind (``OutpostError.kind``); an unknown kind is spelt out."""
    if not kind:
        return "an error"
    return KIND_WORDS.get(kind, kind.replace("_", " "))


_STORED_KIND = re.compile(r"\(([a-z]+_[a-z_]+|timeout)\)")


def with_kind_words(text: str) -> str:
    """``text`` with each "(kind)" that older versions wrote into a stored route reason
    ("openai failed before answering (connection_failed)") in words."""
    return _STORED_KIND.sub(lambda m: f"({KIND_WORDS[m[1]]})" if m[1] in KIND_WORDS
                            else m[0], text)
