"""Counting and pricing a cloud request before it is sent: the ``TokenCounter`` the context
fitting and the composer's meter use for cloud engines (``app.domain.context``).

Tokens: tiktoken with the shipped vocabularies for OpenAI models (exact), a documented estimate
otherwise (``app.accounting.tokens``). Window: the shipped table
(``resources/context_windows.json``) or None
when the model is unknown (then nothing is dropped, and the provider's own error says so).
Cost: the upper bound prompt + max_tokens at the shipped price (``app.accounting.pricing``).
The tables are read once per process.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Sequence

from app.accounting.pricing import (
    ContextTable,
    Price,
    PriceTable,
    estimate_before_sending,
    format_usd,
)
from app.accounting.tokens import count_messages
from app.config import paths
from app.config.file_schema import ConfigFile
from app.domain.messages import ChatMessage


@functools.lru_cache(maxsize=1)
def price_table():
    return PriceTable.load()


def context_overrides_path():
    """The user's context windows, ``{"model id": tokens}``: they win over the shipped table,
    for known and unknown models alike (a self-hosted model, a provider's larger tier). A file
    that cannot be read or holds a wrong value is refused with one sentence naming the model
    (``ConfigFileInvalid``): a cloud turn then stops before sending, rather than sending with a
    window the user did not mean."""
    return paths.config_dir() / "context_windows.json"


def context_table():
    path = context_overrides_path()
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        stamp = None
    return _context_table(str(path), stamp)


@functools.lru_cache(maxsize=4)
def _context_table(overrides: str, stamp):
    user = {}
    if stamp is not None:
        file = ConfigFile(Path(overrides), "context-window overrides file")
        try:
            user = file.table(file.read(), "", "model ids and tokens")
        except FileNotFoundError:
            user = {}  # removed since it was seen
        for model, tokens in user.items():
            if not model.strip():
                raise file.fail("a model id is empty")
            file.whole_number(tokens, repr(model), minimum=1)
    return ContextTable.load(user_overrides=user)


class CloudCounter:
    def __init__(self, kind: str, model: str):
        self.kind, self.model = kind, model

    @property
    def context_window(self) -> int | None:
        return context_table().context_window(self.kind, self.model)

    def count_prompt(self, messages: Sequence[ChatMessage]) -> tuple[int, bool]:
        counted = count_messages(messages, self.model)
        return counted.tokens, counted.exact

    @property
    def price(self) -> Price | None:
        return price_table().price_for(self.kind, self.model)

    @property
    def price_known(self) -> bool:
        return self.price is not None

    def estimate_cost(self, prompt_tokens: int, max_tokens: int) -> str:
        """"at most $0.0031" (prompt + max_tokens as output), or "cost unknown"."""
        price = price_table().price_for(self.kind, self.model)
        if price is None:
            return "cost unknown"
        return "at most " + format_usd(estimate_before_sending(prompt_tokens, max_tokens, price))
