"""Offline mode in the window, with providers (a trial on a flaky network): one on this computer
(localhost: an Ollama or llama.cpp server of the user's) still answers and gets its outbox items,
as `outpost ask` and `outbox send` do; for one elsewhere the composer offers "Send to P once
Offline mode is off", as `ask --send-when-online` does, and the message goes once it is off.
The local model is scripted; the providers are fault servers on loopback (a provider elsewhere
is written as TEST-NET-1 while Offline mode is on, and moved to the fault server after)."""
from __future__ import annotations

import pytest

from app.storage.outbox import OutboxState
from tests.fault_server import Normal, fault_server, refused_url
from tests.support import grab_in_palette, reply, send
from tests.ui.test_gui_outbox import provider_back, use_provider

pytestmark = pytest.mark.gui

ELSEWHERE = "http://192.0.2.1:9"  # TEST-NET-1: beyond this computer, never contacted here


def offline(app, on: bool = True) -> None:
    app.window.offline_action.setChecked(on)


def test_a_provider_on_this_computer_answers_and_gets_its_outbox_items_in_offline_mode(
        qtbot, scripted, scripted_engine):
    """It answered on the local model and sent nothing; its queued items waited for Offline
    mode to be off (the README: a provider at localhost "can still be reached")."""
    app, window = scripted, scripted.window
    with fault_server() as server:
        use_provider(app, "here", server.url + "/v1", route="auto")
        offline(app)
        assert window.route_label.text() == "☁ Auto · here"
        assert "here is on this computer" in window.route_label.toolTip()
        assert window.route_picker.isEnabled() and window.target_picker.isEnabled()
        send(qtbot, app, "Water levels, please")
        assert len(server.chat_requests()) == 1 and scripted_engine.requests == []
        assert window.view.bubbles[-1].text == "".join(Normal().chunks)  # the server's
    # Cloud only, the server down: queued; back (Offline mode still on): sent by the window
    with refused_url() as down:
        use_provider(app, "here", down + "/v1", route="cloud")
        send(qtbot, app, "And the pumps?")
        app.tasks.wait()
    [item] = app.service.outbox.pending()
    assert app.monitor.providers() == ["here"]  # probed, though Offline mode is on
    with fault_server() as server:
        provider_back(app, "here", server.url + "/v1")
        qtbot.waitUntil(lambda: app.service.outbox.get(item.id).state is OutboxState.SENT
                        and not app.monitor._sending, timeout=20000)
        assert len(server.chat_requests()) == 1
    app.window.close()
    app.shutdown()


@pytest.mark.parametrize("route", ["auto", "cloud"])
def test_offline_mode_offers_to_send_to_a_provider_elsewhere_once_it_is_off(
        qtbot, scripted, scripted_engine, route, artifacts_dir):
    """The CLI queued `ask --provider remote --send-when-online` in Offline mode; the window
    hid its box, so a message could not wait for the cloud there. Now the box says what it
    does; ticked, the local model answers now and the message waits in the outbox, untried,
    until Offline mode is off; then it is sent, once."""
    app, window = scripted, scripted.window
    box = window.composer.when_online
    use_provider(app, "remote", ELSEWHERE + "/v1", route=route)
    offline(app)
    assert window.route_label.text() == "● Offline mode"
    assert box.isVisible() and box.isEnabled()
    assert box.text() == "Send to remote once Offline mode is off"
    assert "once Offline mode is off" in box.toolTip()
    if route == "auto":
        for name in ("light", "dark"):
            grab_in_palette(qtbot, window, artifacts_dir / f"offline-send-later-{name}.png",
                            name)
    box.setChecked(True)
    scripted_engine.script(reply("Local", " answer."))
    send(qtbot, app, "Report for the district office")
    [item] = app.service.outbox.pending()
    assert item.provider == "remote" and item.attempts == 0
    assert window.view.bubbles[-1].text == "Local answer."
    assert "sent to remote once Offline mode is off" in window.banner.label.text()
    assert app.monitor.providers() == []  # nothing elsewhere is probed in Offline mode
    assert not app.monitor.send_now()
    offline(app, False)
    with fault_server() as server:
        provider_back(app, "remote", server.url + "/v1")
        qtbot.waitUntil(lambda: app.service.outbox.get(item.id).state is OutboxState.SENT
                        and not app.monitor._sending, timeout=20000)
        [sent] = server.chat_requests()
    assert sent.json["messages"][-1]["content"] == "Report for the district office"
    app.window.close()
    app.shutdown()


def test_unticked_nothing_waits_for_the_provider_elsewhere(qtbot, scripted, scripted_engine):
    app, window = scripted, scripted.window
    use_provider(app, "remote", ELSEWHERE + "/v1", route="auto")
    offline(app)
    window.composer.when_online.setChecked(False)
    scripted_engine.script(reply("Local."))
    send(qtbot, app, "Just here")
    assert app.service.outbox.pending() == []
    use_provider(app, "remote", ELSEWHERE + "/v1", route="local")  # Local only: no box
    assert not window.composer.when_online.isVisible()
    app.window.close()
    app.shutdown()
