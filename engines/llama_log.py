"""llama.cpp's own log, routed into Python's logging instead of stderr.

llama-cpp-python installs a log callback that prints the lines it takes for errors, reading
the levels in an older order of ggml's enum: a warning (3 now) reads as an error there, so
``outpost ask`` on a Gemma 3 model printed llama.cpp's note "llama_kv_cache_iswa: using
full-size SWA cache (ref: …)" above every answer. Here each line goes to the ``llama.cpp``
logger: its errors as errors (the CLI and the window show those), its warnings at INFO and the
rest at DEBUG (notes for a developer, who turns them on with logging).
"""
from __future__ import annotations

import ctypes
import logging

log = logging.getLogger("llama.cpp")

# ggml_log_level: NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5 (the last line continued)
_LEVELS = {4: logging.ERROR, 3: logging.INFO}
_CONTINUED = 5

_callback = None  # the ctypes callback, kept alive as long as llama.cpp may call it


def route_llama_log(llama_cpp) -> None:
    """Install the callback (once; ``llama_cpp`` is the imported module)."""
    global _callback
    if _callback is not None:
        return

    last = [logging.DEBUG]

    @llama_cpp.llama_log_callback
    def forward(level: int, text: bytes, _user_data) -> None:
        if level != _CONTINUED:
            last[0] = _LEVELS.get(level, logging.DEBUG)
        line = text.decode("utf-8", "replace").rstrip("\n")
        if line:
            log.log(last[0], "%s", line)

    llama_cpp.llama_log_set(forward, ctypes.c_void_p(0))
    _callback = forward
