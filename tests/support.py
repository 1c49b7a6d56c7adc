"""Small helpers shared by several test modules (fixtures live in conftest.py)."""
from __future__ import annotations


class Clock:
    """A virtual monotonic clock: tests move ``now`` by hand."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def send(qtbot, app, text: str) -> None:
    """Type ``text`` into the window's composer, press Enter, wait until the reply is done."""
    from PySide6.QtCore import Qt

    edit = app.window.composer.edit
    qtbot.keyClicks(edit, text)
    qtbot.keyClick(edit, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: app.window.controller.state == "idle", timeout=60000)


def wire_engine(wire: str, server_url: str):
    """A real cloud engine of ``wire`` ("openai" / "anthropic") against a fault server."""
    from app.providers import ProviderConfig
    from engines.anthropic import AnthropicEngine
    from engines.openai_compat import OpenAICompatEngine

    if wire == "openai":
        return OpenAICompatEngine(ProviderConfig("f", "openai", server_url + "/v1",
                                                 "test-model"), "sk-test")
    return AnthropicEngine(ProviderConfig("f", "anthropic", server_url, "claude-t"), "sk-test")
