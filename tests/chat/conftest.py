"""The chat tests' real SQLite file, its store and a chat service on it."""
from __future__ import annotations

import pytest

from app.chat.service import ChatService
from app.config.settings import Settings
from app.storage.store import Store


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "outpost.db"


@pytest.fixture
def store(db_path):
    store = Store(db_path)
    yield store
    store.close()


@pytest.fixture
def service(store):
    return ChatService(store, Settings())
