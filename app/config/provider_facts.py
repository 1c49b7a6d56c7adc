"""What Outpost has learnt about a provider's server that its API does not advertise, kept so
the next run (the CLI starts fresh each time) does not pay for learning it again.

Two kinds of fact, per server and model: it refused ``response_format`` ``json_schema`` (many
OpenAI-compatible servers know only ``json_object``), and the request parameters it refused as
unsupported (OpenAI's reasoning models refuse ``temperature``, ``top_p``, the penalties; some
servers ``stop``): ``{"refuses_json_schema": true, "refuses": ["temperature"]}``. Kept in
``<data dir>/provider_facts.json``, keyed by base URL and model; deleting the file forgets
everything, harmlessly. So a damaged
file (not JSON, too big, the wrong shape) is read as knowing nothing, and replaced by the next fact
learnt; an entry of the wrong shape is ignored.
"""
from __future__ import annotations

import json
import threading

from app.config import paths
from app.config.file_schema import ConfigFile, ConfigFileInvalid, write_config
from app.domain.errors import FileWriteFailed

_lock = threading.Lock()


def _path():
    return paths.data_dir() / "provider_facts.json"


def _read() -> dict[str, dict]:
    try:
        data = ConfigFile(_path(), "provider facts file").read()
    except (FileNotFoundError, ConfigFileInvalid):
        return {}
    if not isinstance(data, dict):
        return {}
    return {key: facts for key, facts in data.items() if isinstance(facts, dict)}


def _key(base_url: str, model: str) -> str:
    return f"{base_url.rstrip('/')}|{model}"


def refuses_json_schema(base_url: str, model: str) -> bool:
    return _read().get(_key(base_url, model), {}).get("refuses_json_schema") is True


def note_refuses_json_schema(base_url: str, model: str) -> None:
    _note(base_url, model, lambda facts: facts.__setitem__("refuses_json_schema", True))


def refused_params(base_url: str, model: str) -> frozenset[str]:
    """The request parameters the server refused for ``model`` (``note_refused_param``)."""
    names = _read().get(_key(base_url, model), {}).get("refuses")
    if not isinstance(names, list):
        return frozenset()
    return frozenset(name for name in names if isinstance(name, str))


def note_refused_param(base_url: str, model: str, name: str) -> None:
    def add(facts: dict) -> None:
        known = facts.get("refuses")
        kept = [n for n in known if isinstance(n, str)] if isinstance(known, list) else []
        facts["refuses"] = sorted({*kept, name})

    _note(base_url, model, add)


def learnt() -> dict[str, dict]:
    """Everything learnt, ``"<base URL>|<model>"`` -> its facts (``preset knobs`` lists it)."""
    return _read()


def _note(base_url: str, model: str, change) -> None:
    with _lock:
        data = _read()
        change(data.setdefault(_key(base_url, model), {}))
        try:
            write_config(_path(), json.dumps(data, indent=2) + "\n")
        except FileWriteFailed:
            pass  # only a cache: the next run learns it again
