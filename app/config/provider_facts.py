"""What Outpost has learnt about a provider's server that its API does not advertise, kept so
the next run (the CLI starts fresh each time) does not pay for learning it again.

Today one fact: the server refused ``response_format`` ``json_schema`` for a model (many
OpenAI-compatible servers know only ``json_object``). Kept in ``<data dir>/provider_facts.json``,
keyed by base URL and model; deleting the file forgets everything, harmlessly.
"""
from __future__ import annotations

import json
import os
import threading

from app.config import paths

_lock = threading.Lock()


def _path():
    return paths.data_dir() / "provider_facts.json"


def _read() -> dict:
    try:
        data = json.loads(_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _key(base_url: str, model: str) -> str:
    return f"{base_url.rstrip('/')}|{model}"


def refuses_json_schema(base_url: str, model: str) -> bool:
    return bool(_read().get(_key(base_url, model), {}).get("refuses_json_schema"))


def note_refuses_json_schema(base_url: str, model: str) -> None:
    with _lock:
        data = _read()
        data.setdefault(_key(base_url, model), {})["refuses_json_schema"] = True
        path = _path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
            os.replace(tmp, path)
        except OSError:
            pass  # only a cache: the next run learns it again
