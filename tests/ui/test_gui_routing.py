"""The window's routing (issue 4): mid-stream continuation with a seam, Offline mode, the outbox
sent when the provider comes back, and a Local only conversation that opens no network
connection."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from app.config.providers import ProviderConfig
from app.config.settings import Settings
from app.domain.messages import MessageStatus, Role
from tests.fault_server import Cut, fault_server, refused_url
from tests.support import reply as known_reply
from tests.support import send

pytestmark = pytest.mark.gui


def use_provider(outpost, name: str, url: str, route: str = "auto") -> None:
    outpost.registry.add(ProviderConfig(name, "openai", url, "test-model"), replace=True)
    window = outpost.window
    window.target_picker.refresh(f"provider:{name}")
    window.route_picker.setCurrentIndex(window.route_picker.findData(route))
    window.route_picker.activated.emit(window.route_picker.currentIndex())


@pytest.mark.local_model
def test_stream_cut_mid_answer_shows_one_reply_with_a_seam(qtbot, outpost, artifacts_dir):
    window = outpost.window
    outpost.settings.set("hedge_after_s", 0)  # the seam comes from the cut, not a hedge race
    with fault_server() as server:
        use_provider(outpost, "fault", server.url + "/v1")
        # the window lists the provider's models first (GET /models): let that pass
        qtbot.waitUntil(lambda: bool(outpost.window.model_picker.listed.get("fault")), timeout=10000)
        server.script([Cut(chunks=("The capital", " of France", " is", " Paris"), after=2)])
        send(qtbot, outpost, "What is the capital of France?")
    conversation = outpost.store.list_conversations()[0]
    messages = outpost.store.messages(conversation.id)
    assert [m.role for m in messages] == [Role.USER, Role.ASSISTANT]
    reply = messages[1]
    assert reply.content.startswith("The capital of France") and reply.engine == "local"
    assert [s["engine"] for s in reply.segments] == ["fault", "local"]
    bubble = window.view.bubbles[-1]
    assert bubble.seams == [(len("The capital of France"), f"local · {reply.model}")]
    assert "continued by local" in bubble.body.toHtml()
    assert "continued locally" in bubble.footer.text()
    # shown again from the database, the seam is still there
    window.controller.reload_conversation()
    assert window.view.bubbles[-1].seams == bubble.seams
    window.resize(1100, 720)
    assert window.grab().save(str(artifacts_dir / "main_window_seam.png"))


@pytest.mark.local_model
def test_offline_mode_answers_locally_and_never_tries_the_provider(qtbot, outpost):
    """A provider beyond this computer (TEST-NET-1): Offline mode keeps it from being asked
    or probed. The provider stays choosable (one at localhost would answer); the route picker,
    greyed, says the local model answers."""
    window = outpost.window
    use_provider(outpost, "fault", "http://192.0.2.1:9/v1")
    window.offline_action.setChecked(True)
    assert Settings()["offline_mode"] is True  # remembered
    assert "Offline mode" in window.route_label.text()
    assert window.target_picker.isEnabled() and not window.route_picker.isEnabled()
    assert window.route_picker.currentText() == "Local model (offline mode)"
    send(qtbot, outpost, "Are you there?")
    outpost.monitor.tick()
    reply = outpost.store.messages(outpost.store.list_conversations()[0].id)[-1]
    assert reply.engine == "local" and reply.route_reason == "offline mode"
    assert outpost.monitor.providers() == []  # nothing is probed in Offline mode
    window.offline_action.setChecked(False)
    assert "Auto" in window.route_label.text()


@pytest.mark.local_model
def test_outbox_item_is_sent_when_the_provider_comes_back(qtbot, outpost, artifacts_dir):
    window = outpost.window
    with refused_url() as down:
        use_provider(outpost, "flaky", down + "/v1", route="cloud")
        send(qtbot, outpost, "Send this when you can.")
    [item] = outpost.service.outbox.pending()
    conversation_id = item.conversation_id
    assert window.outbox_button.isVisible()
    with fault_server() as server:
        # the provider is back (same name, now reachable)
        outpost.registry.add(ProviderConfig("flaky", "openai", server.url + "/v1",
                                            "test-model"), replace=True)
        outpost.connectivity.network_changed()  # as the OS would say
        outpost.monitor.tick()
        qtbot.waitUntil(lambda: outpost.service.outbox.get(item.id).state.value == "sent",
                        timeout=20000)
        qtbot.waitUntil(lambda: not outpost.monitor._sending, timeout=10000)
        keys = [r.idempotency_key for r in server.requests if r.method == "POST"]
    assert keys == [item.request.idempotency_key]  # sent once, with the turn's key
    messages = outpost.store.messages(conversation_id)
    answer = outpost.store.get_message(outpost.service.outbox.get(item.id).answer_message_id)
    assert answer.status is MessageStatus.COMPLETE and answer.engine == "flaky"
    assert answer.parent_id == messages[0].id and "queued in the outbox" in answer.route_reason
    assert "answered your queued message" in window.banner.label.text()
    assert window.view.bubbles[-1].text == answer.content  # the open conversation shows it
    assert not window.outbox_button.isVisible()
    window.outbox_button.open_panel()
    assert window.outbox_button.panel.rows()[0][1] == "Sent"
    assert window.outbox_button.panel.grab().save(str(artifacts_dir / "outbox_panel_sent.png"))


GUARD = r"""
import json, os, socket, sys
attempts = []
def guarded(real):
    def guard(self, address, *rest):
        if self.family == getattr(socket, "AF_UNIX", None):  # this computer's IPC, not the
            return real(self, address, *rest)  # network: the keychain's D-Bus (keys masked)
        attempts.append(repr(address))
        raise OSError("blocked by the test's socket guard")
    return guard
def lookup(host, *rest, **kw):  # a name lookup is a network attempt too
    attempts.append("getaddrinfo " + repr(host))
    raise socket.gaierror("blocked by the test's socket guard")
socket.socket.connect = guarded(socket.socket.connect)
socket.socket.connect_ex = guarded(socket.socket.connect_ex)
socket.getaddrinfo = lookup
os.environ["QT_QPA_PLATFORM"] = "offscreen"
from PySide6.QtCore import QEventLoop, QTimer, Qt
from PySide6.QtWidgets import QApplication
from app.config.providers import ProviderConfig
from ui.app import OutpostApp

mode = sys.argv[1]
qt = QApplication([])
from app.config.settings import Settings
settings = Settings()
settings.set("max_tokens", 16)  # short replies: the test is about sockets, not prose
app = OutpostApp(settings=settings)
app.registry.add(ProviderConfig("openai", "openai", "https://api.openai.com/v1", "gpt-4o-mini"))
window = app.window
app.start()
if mode == "local":  # the new conversation is Local only ...
    window.route_picker.setCurrentIndex(window.route_picker.findData("local"))
    window.route_picker.activated.emit(window.route_picker.currentIndex())
elif mode == "offline":
    window.offline_action.setChecked(True)
window.target_picker.refresh("provider:openai")  # ... while a cloud provider is chosen

def wait(predicate, ms):
    loop = QEventLoop()
    def check():
        if predicate():
            loop.quit()
    timer = QTimer(); timer.timeout.connect(check)
    timer.start(50); QTimer.singleShot(ms, loop.quit); loop.exec()

for prompt in ("Hello there.", "And a second message."):
    window.composer.edit.setPlainText(prompt)
    window.composer._on_submit()
    wait(lambda: window.controller.state == "idle", 150000)  # generous: CI machines are busy
app.monitor.tick()
wait(lambda: False, 2500)  # a monitor tick or two more
messages = app.store.messages(app.store.list_conversations()[0].id)
result = {"engines": [m.engine for m in messages if m.role.value == "assistant"],
          "attempts": attempts}
app.shutdown()
sys.stdout.write("RESULT=" + json.dumps(result) + "\n")
"""


def run_guarded(mode: str) -> dict:
    env = dict(os.environ, OPENAI_API_KEY="sk-test-not-a-real-key")
    env.pop("DISPLAY", None)
    result = subprocess.run([sys.executable, "-c", GUARD, mode], capture_output=True,
                            text=True, env=env, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    line = [x for x in result.stdout.splitlines() if x.startswith("RESULT=")][-1]
    return json.loads(line[len("RESULT="):])


@pytest.mark.slow
@pytest.mark.local_model
@pytest.mark.parametrize("mode", ["local", "offline"])
def test_local_only_window_conversation_opens_no_socket(mode):
    result = run_guarded(mode)
    assert result["engines"] == ["local", "local"]
    assert result["attempts"] == []  # zero connection attempts, probes included


@pytest.mark.slow
@pytest.mark.local_model
def test_the_window_socket_guard_sees_the_auto_route():
    """The same script on the Auto route is caught trying to connect: the guard is not blind."""
    result = run_guarded("auto")
    assert result["attempts"] and result["engines"][0] == "local"  # failed over, guarded


@pytest.mark.local_model
def test_default_route_menu_applies_to_new_chats_and_is_remembered(qtbot, outpost):
    window = outpost.window
    outpost.registry.add(ProviderConfig("fault", "openai", "http://127.0.0.1:9/v1", "m"))
    window.target_picker.refresh("provider:fault")
    [local] = [a for a in window.default_route_actions.actions() if a.data() == "local"]
    local.trigger()
    assert Settings()["default_route"] == "local"
    assert window.route_picker.currentData() == "local"
    assert "Local only" in window.route_label.text()
    assert not window.composer.when_online.isVisible()
    send(qtbot, outpost, "Hello")
    conversation = outpost.store.list_conversations()[0]
    # it keeps the route it began under: a later change of the default does not send it
    assert conversation.route == "local"
    reply = outpost.store.messages(conversation.id)[-1]
    assert reply.engine == "local" and reply.route_reason == "local-only conversation"


@pytest.mark.local_model
def test_composer_meter_counts_the_draft_exactly_in_the_background(qtbot, outpost,
                                                                   artifacts_dir):
    from app.domain.messages import ChatMessage, Role

    window = outpost.window
    meter = window.meter
    window.composer.edit.setPlainText("How many tokens is this?")
    qtbot.waitUntil(lambda: bool(meter.last), timeout=10000)
    system = Settings()["system_prompt"]
    expected, exact = outpost.loader.active.count_prompt(
        [ChatMessage(Role.SYSTEM, system), ChatMessage(Role.USER, "How many tokens is this?")])
    assert exact and meter.last["exact"] and meter.last["tokens"] == expected
    assert meter.last["window"] == outpost.loader.active.context_window
    assert f"{expected:,} prompt tokens" in meter.label.text() and meter.gauge.isVisible()
    window.resize(1100, 720)
    assert window.grab().save(str(artifacts_dir / "main_window_meter.png"))
    # a 100,000-character paste: counted off the GUI thread, over the window -> red gauge
    window.composer.edit.setPlainText("lorem ipsum " * 8400)
    qtbot.waitUntil(lambda: meter.last and meter.last["tokens"] > 10000, timeout=30000)
    assert "context" in meter.label.text() and "#cf222e" in meter.gauge.styleSheet()


def test_quota_in_the_window_refuses_and_the_usage_view_shows_it(qtbot, scripted,
                                                               scripted_engine, artifacts_dir):
    """Scripted: the first reply uses exactly 30 + 12 tokens, past the 40-token quota set after
    it, whatever a model would have said."""
    from app.config.settings import default_user_id

    scripted_engine.script(known_reply(*["word "] * 12, prompt_tokens=30))
    window = scripted.window
    profile = default_user_id(scripted.settings)
    book = scripted.service.quotas.book
    book.set(profile, "count_local", True, by=window.profile)
    send(qtbot, scripted, "Hello")  # fine: no token limit yet
    book.set(profile, "cloud_tokens_per_day", 40, by=window.profile)
    send(qtbot, scripted, "Hello again, a second time")
    assert window.banner.isVisible() and "Daily token quota reached" in \
        window.banner.label.text()
    conversation = scripted.store.list_conversations()[0]
    assert len(scripted.store.messages(conversation.id)) == 2  # the refused one was not saved
    assert window.composer.text()  # the draft stays, to send later
    window.open_usage()
    dialog = window.usage_dialog
    assert dialog.values["day_tokens"].text().startswith("42 of 40")
    assert dialog.bars["day_tokens"].value() == 1000  # full
    assert dialog.table.rowCount() == 1 and dialog.table.item(0, 4).text() == "free"
    assert dialog.grab().save(str(artifacts_dir / "usage_dialog.png"))


def test_reopening_a_local_only_chat_asks_the_provider_nothing(qtbot, outpost_app,
                                                              scripted_engine):
    """The window starts on a new chat (Auto, with the provider last picked) and at once opens
    the chat that was open when it closed: Local only. The provider's model list is not asked
    for on the way (it was: GET /models with the key, at every start). A new chat then asks."""
    from app.config.providers import ProviderRegistry
    from app.storage.store import Store
    from ui.window_state import WindowState

    with fault_server() as server:
        ProviderRegistry().add(ProviderConfig("fault", "openai", server.url + "/v1",
                                              "test-model"))
        settings = Settings()
        settings.set("chat_target", "provider:fault")
        settings.save()
        store = Store()
        private = store.create_conversation("Private", route="local")
        store.close()
        WindowState().qsettings.setValue("last_conversation", private.id)
        app = outpost_app(max_tokens=8, engine_factory=scripted_engine.factory)
        with qtbot.waitSignal(app.loader.model_ready, timeout=10000):
            app.start()
        assert app.window.controller.conversation_id == private.id
        qtbot.wait(300)  # the event loop's turns in which the list used to be asked for
        assert server.requests == [] and server.connections == []
        app.window.new_action.trigger()  # a new chat may use the cloud: now it asks
        qtbot.waitUntil(lambda: bool(app.window.model_picker.listed.get("fault")),
                        timeout=10000)
        assert [r.path for r in server.requests] == ["/v1/models"]


def test_the_window_says_what_the_local_model_leaves_out_when_it_answers_auto(qtbot,
                                                                             outpost_app):
    """A long conversation under Auto, its provider dead: the local model answers it, fitted
    into its smaller window, and the banner says which oldest turn it left out, as on the
    Local only route (the window said nothing: the turn was fitted for the cloud)."""
    from tests.chat.test_auto_fit import SmallLocal, answer, long_conversation

    local = SmallLocal(answer)
    app = outpost_app(max_tokens=8, engine_factory=local.factory)
    with qtbot.waitSignal(app.loader.model_ready, timeout=10000):
        app.start()
    app.settings.set("hedge_after_s", 0)  # the local model answers because the cloud failed
    conversation_id = long_conversation(app.store)
    window = app.window
    window.controller.open_conversation(conversation_id)
    with refused_url() as down:
        app.registry.add(ProviderConfig("dead", "openai", down + "/v1", "gpt-4o-mini"),
                         replace=True)
        window.target_picker.refresh("provider:dead")
        send(qtbot, app, "Summarize.")
    reply = app.store.messages(conversation_id)[-1]
    assert reply.content == "Sure." and reply.engine == "local"
    assert "answered locally" in reply.route_reason
    assert window.banner.isVisible()
    assert window.banner.label.text().startswith(
        "The oldest turn (2 messages, “Tell me everything about the sea.")
    assert "4,096-token context" in window.banner.label.text()
    # kept with the reply once the banner is gone: its footer and Details say so (trial 10)
    bubble = window.view.last_bubble()
    assert bubble.message_id == reply.id
    assert "2 oldest messages left out (4,096-token context)" in \
        bubble.footer.text().replace("\u00a0", " ")
    bubble.details_button.click()
    details = window.details_dialog
    qtbot.addWidget(details)
    assert details.values["Left out"] == (
        "The oldest turn (2 messages) left out to fit the model's 4,096-token context; the "
        "model did not see them.")
