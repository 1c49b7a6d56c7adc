"""A cloud request refused with 429 (or a 5xx) before any text is sent again after a wait
(``engines/http_policy.py``): the reply's status line says so while it waits, and the text
clears it. Real window, real OpenAI-compatible engine, the fault server on loopback."""
from __future__ import annotations

import pytest

from app.config.providers import ProviderConfig
from tests.fault_server import Normal, Status, fault_server, rate_limited

pytestmark = pytest.mark.gui


def test_a_retry_is_shown_in_the_reply_status_until_text_arrives(qtbot, scripted):
    """The window ignored the engine's Retrying event: nothing moved for the seconds a
    Retry-After asked, as if the app hung."""
    window = scripted.window
    with fault_server() as server:
        scripted.registry.add(ProviderConfig("fault", "openai", server.url + "/v1",
                                             "test-model"), replace=True)
        window.target_picker.refresh("provider:fault")
        picker = window.route_picker
        picker.setCurrentIndex(picker.findData("cloud"))
        picker.activated.emit(picker.currentIndex())
        # the window lists the provider's models first (GET /models): let that pass
        qtbot.waitUntil(lambda: bool(window.model_picker.listed.get("fault")), timeout=10000)
        server.script([rate_limited(retry_after_ms=1500),
                       Normal(chunks=("Pump 3", " leaks", " at the flange."), delay=0.3)])
        window._on_send_requested("Write the field report")
        bubble = window.view.bubbles[-1]
        qtbot.waitUntil(lambda: bubble.retrying, timeout=10000)
        assert bubble.footer.isVisibleTo(window)
        assert bubble.footer.text() == "↻ retrying in 1.5 s (attempt 2 of 3): rate limited"
        assert bubble.text == ""
        qtbot.waitUntil(lambda: bubble.text.startswith("Pump 3"), timeout=20000)
        assert not bubble.retrying and "retrying" not in bubble.footer.text()
        qtbot.waitUntil(lambda: window.controller.state == "idle", timeout=20000)
    assert bubble.text == "Pump 3 leaks at the flange."
    assert "retrying" not in bubble.footer.text()
    assert len(server.chat_requests()) == 2


def test_a_re_send_without_a_refused_parameter_is_shown_in_the_reply_status(qtbot, scripted):
    """The server refuses the settings' temperature for the model (HTTP 400): the request goes
    again at once without it. The window said nothing (only the request log had it); the
    reply's status says so, as a retry's does, until the text comes."""
    window = scripted.window
    with fault_server() as server:
        scripted.registry.add(ProviderConfig("fault", "openai", server.url + "/v1",
                                             "test-model"), replace=True)
        window.target_picker.refresh("provider:fault")
        picker = window.route_picker
        picker.setCurrentIndex(picker.findData("cloud"))
        picker.activated.emit(picker.currentIndex())
        qtbot.waitUntil(lambda: bool(window.model_picker.listed.get("fault")), timeout=10000)
        server.script([Status(400, message="Unsupported value: 'temperature' does not support "
                              "0.7 with this model. Only the default (1) value is supported.",
                              code="unsupported_value"),
                       Normal(chunks=("Pump 3", " leaks."), delay=1.0)])
        window._on_send_requested("Write the field report")
        bubble = window.view.bubbles[-1]
        qtbot.waitUntil(lambda: bubble.retrying, timeout=10000)
        assert bubble.footer.text() == ("↻ fault refused temperature for test-model: re-sent "
                                        "without temperature")
        assert bubble.text == ""
        qtbot.waitUntil(lambda: window.controller.state == "idle", timeout=20000)
    assert bubble.text == "Pump 3 leaks."
    assert "re-sent" not in bubble.footer.text()
    assert len(server.chat_requests()) == 2
