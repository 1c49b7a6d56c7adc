"""Helpers shared by the ``outpost`` subcommands: JSON output, opening the core, engines."""
from __future__ import annotations

import json
import sys

from app.errors import UsageError


def emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()

def emit_list(rows: list[dict]) -> None:
    sys.stdout.write(json.dumps(rows, ensure_ascii=False, indent=2) + "\n")

def open_core():
    from app.chat_service import ChatService
    from app.settings import Settings
    from app.store import Store

    settings = Settings()
    for warning in settings.load_warnings:
        sys.stderr.write(f"outpost: warning: {warning}\n")
    from app.ledger import make_ledger

    store = Store()
    service = ChatService(store, settings)
    service.ledger = make_ledger(store, settings)
    from app.quotas import QuotaBook, QuotaGuard

    service.quotas = QuotaGuard(QuotaBook(), service.ledger)
    service.recover_interrupted()
    return settings, store, service

def read_prompt(value: str) -> str:
    return sys.stdin.read() if value == "-" else value

def round_or_none(value: float | None) -> float | None:
    return round(value, 2) if value is not None else None

def local_time(iso: str) -> str:
    import datetime as dt

    return dt.datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M")

def cloud_engine(name: str, model: str | None, on_attempt):
    from app.providers import ProviderRegistry, needs_key
    from app.secrets import KeyStore
    from app.settings import Settings
    from engines.registry import cloud_timeouts, create_cloud_engine

    config = ProviderRegistry().get(name)
    key = KeyStore(fallback="file").resolve(config.name, config.base_url)
    if key is None and needs_key(config):
        raise UsageError(f"There is no API key for {config.name}: store one with "
                         f"`outpost keys set {config.name}`.")
    return create_cloud_engine(config, key, model, on_attempt=on_attempt,
                               timeouts=cloud_timeouts(Settings()))
