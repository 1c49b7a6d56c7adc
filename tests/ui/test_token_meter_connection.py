"""The composer's token meter knows the connection state (user report): with the provider
known to be unreachable under Auto the local model answers at once, yet the meter counted for
the cloud model and said nothing. Now, when the links change, it counts again for the model
that would answer and says where the message goes (Offline mode: tests/chat/test_meter_fit.py).
Real window, a scripted local model, a provider whose address refuses on loopback."""
from __future__ import annotations

import pytest

from app.config.providers import ProviderConfig
from tests.fault_server import refused_url

pytestmark = pytest.mark.gui


def auto_with(qtbot, window, url, registry) -> None:
    registry.add(ProviderConfig("fault", "openai", url + "/v1", "test-model"), replace=True)
    window.target_picker.refresh("provider:fault")
    picker = window.route_picker
    picker.setCurrentIndex(picker.findData("auto"))
    picker.activated.emit(picker.currentIndex())


def test_the_meter_says_where_the_message_goes_when_the_link_changes(qtbot, scripted):
    window = scripted.window
    meter = window.meter
    window.controller.send_when_online = False
    with refused_url() as url:
        auto_with(qtbot, window, url, scripted.registry)
        window.composer.edit.setPlainText("Tell me about lighthouses.")
        qtbot.waitUntil(lambda: bool(meter.last) and meter.last["window"] != 8192,
                        timeout=10000)  # (counted for the cloud model)
        assert meter.last["goes"] is None and "\n" not in meter.label.text()
        scripted.connectivity.record("fault", "connection_failed", send="one")
        scripted.connectivity.record("fault", "connection_failed", send="two")
        window.monitor.links_changed.emit()  # (as the outbox monitor's tick does)
        qtbot.waitUntil(lambda: bool(meter.last.get("goes")), timeout=10000)
        assert meter.last["window"] == 8192 and meter.last["cost"] is None  # the local model
        line = meter.label.text().split("\n")[-1]
        assert line.startswith("fault unreachable since ") and line.endswith(
            ": the local model would answer this message."), line
        scripted.connectivity.record("fault", None)  # back
        window.monitor.links_changed.emit()
        qtbot.waitUntil(lambda: meter.last["goes"] is None, timeout=10000)
        assert "\n" not in meter.label.text()
