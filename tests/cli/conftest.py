"""Fixtures of the command-line tests."""
from __future__ import annotations

import pytest

from tests.support import ScriptedEngine


@pytest.fixture
def local(monkeypatch) -> ScriptedEngine:
    """The local model of every command: a scripted engine (``loads``: the models asked for)."""
    engine = ScriptedEngine()
    monkeypatch.setattr("app.compose.create_local_engine", engine.factory)
    monkeypatch.setattr("signal.signal", lambda *args: None)  # (ask's Ctrl+C, not pytest's)
    return engine
