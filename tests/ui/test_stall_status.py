"""A provider that goes quiet (user trial 8, defects 2 and 3): the window showed only "…" and
"Generating…" while a reply waited, then "TTFT 6 ms · 1459.3 tok/s" for a reply stalled and
stopped. Now the reply's status line says the silence and when Outpost gives up ("◷ no data
from fault for 0.3 s; giving up at 1.5 s"), cleared when text arrives, and a burst of text has
no speed. Real window, real OpenAI-compatible engine, the fault server on loopback, short
deadlines; nothing is asserted on elapsed time."""
from __future__ import annotations

import pytest

from app.config.providers import ProviderConfig
from engines.http_policy import Timeouts
from tests.fault_server import fault_server, text_and_silences

pytestmark = pytest.mark.gui


@pytest.fixture
def quick_deadlines(monkeypatch):
    """Cloud deadlines of 3 s (first text) and 1.5 s (idle), the stall said after 0.3 s
    (before the window builds its engines)."""
    monkeypatch.setattr("engines.registry.Timeouts", lambda **kw: Timeouts(
        **{**kw, "first_token": 3.0, "idle": 1.5, "stall_notice": 0.3}))


script = text_and_silences  # (shared with the other stall tests)


def cloud_only(qtbot, window, server, registry) -> None:
    registry.add(ProviderConfig("fault", "openai", server.url + "/v1", "test-model"),
                 replace=True)
    window.target_picker.refresh("provider:fault")
    picker = window.route_picker
    picker.setCurrentIndex(picker.findData("cloud"))
    picker.activated.emit(picker.currentIndex())
    qtbot.waitUntil(lambda: bool(window.model_picker.listed.get("fault")), timeout=10000)


def test_a_stall_after_text_is_in_the_reply_status_and_its_speed_is_none(
        qtbot, quick_deadlines, scripted):
    window = scripted.window
    with fault_server() as server:
        cloud_only(qtbot, window, server, scripted.registry)
        server.script([script("Part one", " and part two", 20)])
        window._on_send_requested("Report")
        bubble = window.view.bubbles[-1]
        qtbot.waitUntil(lambda: bubble.retrying, timeout=10000)
        assert bubble.footer.text() == "◷ no data from fault for 0.3 s; giving up at 1.5 s"
        assert bubble.footer.isVisibleTo(window)
        assert bubble.text == "Part one and part two"
        qtbot.waitUntil(lambda: window.controller.state == "idle", timeout=20000)
    assert not bubble.retrying and "no data" not in bubble.footer.text()
    assert "tok/s" not in bubble.footer.text()  # a burst, then silence: no speed


def test_text_after_a_silence_clears_the_status(qtbot, quick_deadlines, scripted):
    window = scripted.window
    with fault_server() as server:
        cloud_only(qtbot, window, server, scripted.registry)
        server.script([script(1.0, "Pump 3", " leaks.")])
        window._on_send_requested("Report")
        bubble = window.view.bubbles[-1]
        qtbot.waitUntil(lambda: bubble.retrying, timeout=10000)
        assert bubble.footer.text() == "◷ no text from fault for 0.3 s; giving up at 3 s"
        qtbot.waitUntil(lambda: bubble.text.startswith("Pump 3"), timeout=10000)
        assert not bubble.retrying and "no text" not in bubble.footer.text()
        qtbot.waitUntil(lambda: window.controller.state == "idle", timeout=20000)
    assert bubble.text == "Pump 3 leaks."


def test_headers_held_back_are_in_the_reply_status_until_text_comes(
        qtbot, quick_deadlines, scripted):
    """A server that accepted the connection but held its headers back: the reply showed only
    "…" until the deadline; now its status says it waits for the reply to start."""
    window = scripted.window
    with fault_server() as server:
        cloud_only(qtbot, window, server, scripted.registry)
        server.script([script("Pump 3", " leaks.", head_after=1.0)])
        window._on_send_requested("Report")
        bubble = window.view.bubbles[-1]
        qtbot.waitUntil(lambda: bubble.retrying, timeout=10000)
        assert bubble.footer.text() == ("◷ waiting for the reply from fault to start: nothing "
                                        "for 0.3 s; giving up at 1.5 s")
        qtbot.waitUntil(lambda: bubble.text.startswith("Pump 3"), timeout=10000)
        assert not bubble.retrying and "waiting" not in bubble.footer.text()
        qtbot.waitUntil(lambda: window.controller.state == "idle", timeout=20000)
    assert bubble.text == "Pump 3 leaks."
