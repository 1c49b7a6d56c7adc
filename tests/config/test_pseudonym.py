"""Providers are told a pseudonym per profile, not its name (which is the OS login name by
default): stable on this install, another on any other, made with a secret kept 0600."""
from __future__ import annotations

import json
import stat
import threading

from app.chat.service import ChatService, TurnOptions
from app.config import pseudonym
from app.config.pseudonym import provider_user
from app.config.settings import Settings
from app.storage.store import Store
from tests.fault_server import fault_server
from tests.support import fault_cloud


def test_a_profile_is_sent_as_a_stable_pseudonym_of_this_install(outpost_home, tmp_path,
                                                                 monkeypatch):
    ana = provider_user("ana")
    assert ana.startswith("outpost-") and len(ana) == len("outpost-") + 16
    assert provider_user("ana") == ana and provider_user("bo") != ana
    secret = outpost_home / "config" / pseudonym.FILE
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    pseudonym._secret.cache_clear()
    assert provider_user("ana") == ana  # read back: the same after a restart
    monkeypatch.setenv("OUTPOST_HOME", str(tmp_path / "another-machine"))
    assert provider_user("ana") != ana


def test_the_request_carries_the_pseudonym_not_the_profile_name(outpost_home):
    store = Store()
    settings = Settings()
    settings.set("user_id", "maria.gonzalez")
    service = ChatService(store, settings)
    with fault_server() as server:
        engine = fault_cloud(server.url + "/v1", store)
        turn = service.start_turn("Hello", model="test-model", options=TurnOptions(max_tokens=4))
        list(turn.run(engine, threading.Event()))
        engine.close()
        [sent] = server.chat_requests()
    assert sent.json["user"] == provider_user("maria.gonzalez")
    assert "maria" not in json.dumps(sent.json) and "maria" not in json.dumps(sent.headers)
    store.close()
