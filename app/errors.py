"""The one error tree of Outpost.

    OutpostError                      base; `kind` is a stable machine-readable name
    ├── UsageError                    bad input from the user or a script (CLI flag, unknown id)
    ├── ModelError                    a local model file cannot be used
    │   ├── ModelNotFound             the path does not exist / bundled model not installed
    │   ├── ModelInvalid              not a GGUF file, or truncated, or unsupported
    │   └── ModelLoadFailed           llama.cpp refused to load a well-formed file
    ├── EngineError                   a backend failed while producing a reply
    │   └── StreamInterrupted         died after partial text (carries `partial`)
    ├── StorageError                  the database or a file could not be read or written
    │   └── KnownStorageError         disk full, database locked, read-only: shown to the user
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


class StreamInterrupted(EngineError):
    kind = "stream_interrupted"

    def __init__(self, message: str, partial: str = ""):
        super().__init__(message)
        self.partial = partial


class StorageError(OutpostError):
    kind = "storage"
    exit_code = 5


class KnownStorageError(StorageError):
    kind = "storage_known"


class Cancelled(OutpostError):
    kind = "cancelled"
    exit_code = 130

    def __init__(self, message: str = "The reply was stopped."):
        super().__init__(message)
