"""The OpenAI-compatible engine against a real server: llama-cpp-python's own, on loopback."""
from __future__ import annotations

import threading

import pytest

from app.chat.service import ChatService, TurnOptions
from app.config.providers import ProviderConfig
from app.config.settings import Settings
from app.domain.messages import MessageStatus
from app.storage.store import Store
from engines.openai_compat import OpenAICompatEngine

pytestmark = pytest.mark.local_model


@pytest.fixture
def engine(llama_server, tmp_path):
    store = Store(tmp_path / "outpost.db")
    engine = OpenAICompatEngine(ProviderConfig("llama", "openai", llama_server, "smollm2"),
                                api_key=None, on_attempt=store.log_attempt)
    yield engine, store
    engine.close()
    store.close()


def test_streams_a_reply_and_records_estimated_usage(engine):
    engine, store = engine
    service = ChatService(store, Settings())
    turn = service.start_turn("What is the capital of France?", model=engine.info.model,
                              options=TurnOptions(max_tokens=24, temperature=0.0))
    events = list(turn.run(engine, threading.Event()))
    message = store.get_message(turn.assistant_message_id)
    assert message.status is MessageStatus.COMPLETE
    assert message.content and message.content == turn.reply.text
    assert (message.engine, message.model) == ("llama", "smollm2")
    # llama_cpp.server sends no usage chunk in streams: Outpost estimates, and says so.
    assert message.tokens_estimated is True
    assert message.prompt_tokens > 0 and message.completion_tokens > 0
    assert message.ttft_ms is not None
    [attempt] = store.request_log(turn.request.idempotency_key)
    assert attempt["status"] == 200 and attempt["attempt"] == 1 and attempt["provider"] == "llama"
    assert sum(1 for e in events if type(e).__name__ == "TextDelta") >= 1


def test_lists_the_servers_models(engine):
    engine, _ = engine
    assert "smollm2" in engine.list_models()
