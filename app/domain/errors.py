"""The one error tree of Outpost.

    OutpostError                      base; `kind` is a stable machine-readable name
    ├── UsageError                    bad input from the user or a script (CLI flag, unknown id)
    │   └── NoProviderForCloud        a Cloud only conversation, and no provider is chosen
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
    │   │   └── ProviderUnavailable   5xx, 529, overloaded
    │   ├── TimeoutError_             connect / first-token / idle deadline passed
    │   ├── ConnectionFailed          DNS, refused, reset before any reply
    │   ├── StreamInterrupted         died after partial text (carries `partial`)
    │   ├── DownloadFailed            a model download stopped or was refused (the part is kept
    │   │                             when it can be resumed)
    │   ├── EmptyReply                the model answered nothing (saved, marked as an error)
    │   └── InvalidJsonReply          structured output still invalid after its one repair
    ├── StorageError                  the database or a file could not be read or written
    │   └── KnownStorageError         disk full, database locked, read-only: shown to the user
    ├── InternalError                 a bug: an exception outside this tree, wrapped
    └── Cancelled                     the user stopped the reply; never shown as an error

Engines translate their own failures (llama.cpp exceptions, HTTP errors) into these at their
boundary. Every message is one plain sentence that names the thing and the problem, so the CLI
can print it as-is on stderr and the window can show it in a banner.
"""
from __future__ import annotations


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


class TimeoutError_(EngineError):
    """A deadline passed (named with a trailing underscore: not the builtin TimeoutError)."""

    kind = "timeout"


class ConnectionFailed(EngineError):
    kind = "connection_failed"


class StreamInterrupted(EngineError):
    kind = "stream_interrupted"

    def __init__(self, message: str, partial: str = ""):
        super().__init__(message)
        self.partial = partial


class DownloadFailed(EngineError):
    kind = "download_failed"


class EmptyReply(EngineError):
    kind = "empty_reply"


class InvalidJsonReply(EngineError):
    kind = "invalid_json"


class StorageError(OutpostError):
    kind = "storage"
    exit_code = 5


class KnownStorageError(StorageError):
    kind = "storage_known"


class InternalError(OutpostError):
    """An exception that is not Outpost's own (a bug), carried where only the tree may go."""

    kind = "bug"


class Cancelled(OutpostError):
    kind = "cancelled"
    exit_code = 130

    def __init__(self, message: str = "The reply was stopped."):
        super().__init__(message)
