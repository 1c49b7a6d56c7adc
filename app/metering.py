"""Counting and pricing a cloud request before it is sent: the ``TokenCounter`` the context
fitting and the composer's meter use for cloud engines (``app.context``).

Tokens: tiktoken with the shipped vocabularies for OpenAI models (exact), a documented estimate
otherwise (``app.tokens``). Window: the shipped table (``resources/context_windows.json``) or None
when the model is unknown (then nothing is dropped, and the provider's own error says so).
Cost: the upper bound prompt + max_tokens at the shipped price (``app.pricing``).
The tables are read once per process.
"""
from __future__ import annotations

import functools
from typing import Sequence

from app.domain import ChatMessage


@functools.lru_cache(maxsize=1)
def price_table():
    from app.pricing import PriceTable

    return PriceTable.load()


@functools.lru_cache(maxsize=1)
def context_table():
    from app.pricing import ContextTable

    return ContextTable.load()


class CloudCounter:
    def __init__(self, kind: str, model: str):
        self.kind, self.model = kind, model

    @property
    def context_window(self) -> int | None:
        return context_table().context_window(self.kind, self.model)

    def count_prompt(self, messages: Sequence[ChatMessage]) -> tuple[int, bool]:
        from app.tokens import count_messages

        counted = count_messages(messages, self.model)
        return counted.tokens, counted.exact

    def estimate_cost(self, prompt_tokens: int, max_tokens: int) -> str:
        """"at most $0.0031" (prompt + max_tokens as output), or "cost unknown"."""
        from app.pricing import estimate_before_sending, format_usd

        price = price_table().price_for(self.kind, self.model)
        if price is None:
            return "cost unknown"
        return "at most " + format_usd(estimate_before_sending(prompt_tokens, max_tokens, price))
