"""The window with cloud providers: the Providers dialog, the picker, errors with Retry."""
from __future__ import annotations

import pytest

from app.config.settings import Settings
from app.domain.messages import MessageStatus, Role
from tests.support import send

pytestmark = [pytest.mark.gui, pytest.mark.local_model]


def test_add_provider_test_connection_and_chat_through_it(qtbot, outpost, llama_server,
                                                           artifacts_dir):
    from ui.providers_dialog import ProvidersDialog

    window = outpost.window
    # this test is about the provider answering: no hedge racing it on a busy machine
    outpost.settings.set("hedge_after_s", 0)
    dialog = ProvidersDialog(outpost.registry, outpost.keys, outpost.settings, outpost.tasks,
                             window)
    qtbot.addWidget(dialog)
    dialog.preset.setCurrentIndex(dialog.preset.findData("llama-server"))
    assert dialog.kind.currentData() == "openai"
    assert dialog.kind.currentText() == "OpenAI-compatible"  # the API type, in words
    dialog.name.setText("llama")
    dialog.base_url.setText(llama_server)
    dialog.model.setEditText("smollm2")
    dialog.providers_changed.connect(window.model_menu.providers_changed)
    dialog._on_save()
    assert [p.name for p in outpost.registry.list()] == ["llama"]
    dialog._on_test()
    qtbot.waitUntil(lambda: "Connected" in dialog.result.text() or "✘" in dialog.result.text(),
                    timeout=20000)
    assert "Connected" in dialog.result.text() and "smollm2" in dialog.result.text()
    dialog.show()
    assert dialog.grab().save(str(artifacts_dir / "providers_dialog.png"))
    dialog.close()

    picker = window.target_picker
    index = picker.findData("provider:llama")
    assert index > 0
    picker.setCurrentIndex(index)
    assert "Auto · llama" in window.route_label.text()
    assert Settings()["chat_target"] == "provider:llama"  # remembered
    send(qtbot, outpost, "Say hello.")
    conversation = outpost.store.list_conversations()[0]
    reply = outpost.store.messages(conversation.id)[-1]
    assert reply.status is MessageStatus.COMPLETE and reply.content
    assert (reply.engine, reply.model) == ("llama", "smollm2")
    assert "llama · smollm2" in window.view.bubbles[-1].footer.text()
    assert window.model_picker.isVisible() and window.model_picker.currentText() == "smollm2"
    qtbot.waitUntil(lambda: window.model_picker.count() >= 1, timeout=10000)
    assert outpost.store.request_log(reply.params["idempotency_key"])[0]["status"] == 200
    window.resize(1100, 720)
    assert window.grab().save(str(artifacts_dir / "main_window_cloud.png"))


def test_a_provider_shows_the_preset_it_was_made_from(qtbot, outpost):
    """`providers add box --preset ollama` (or the dialog's preset): selecting it shows Ollama,
    not Custom, and its own fields as they are (a changed model is not reset)."""
    from app.config.providers import ProviderConfig
    from ui.providers_dialog import ProvidersDialog

    outpost.registry.add(ProviderConfig("box", "openai", "http://localhost:11434/v1", "qwen3"))
    outpost.registry.add(ProviderConfig("lab", "openai", "https://llm.example.org/v1", "m"))
    dialog = ProvidersDialog(outpost.registry, outpost.keys, outpost.settings, outpost.tasks,
                             outpost.window)
    qtbot.addWidget(dialog)
    rows = {dialog.list.item(i).text(): dialog.list.item(i) for i in range(dialog.list.count())}
    dialog.list.setCurrentItem(next(item for text, item in rows.items() if "box" in text))
    assert dialog.preset.currentText() == "Ollama"
    assert dialog.model.currentText() == "qwen3" and dialog.name.text() == "box"
    dialog.list.setCurrentItem(next(item for text, item in rows.items() if "lab" in text))
    assert dialog.preset.currentText() == "Custom"


def test_unreachable_provider_is_answered_locally_under_auto(qtbot, outpost):
    from app.config.providers import ProviderConfig

    outpost.registry.add(ProviderConfig("down", "openai", "http://127.0.0.1:9/v1", "m"))
    # failover, not a hedge: the retries' backoff (up to ~1.9 s) must not race a 2.5 s hedge
    outpost.settings.set("hedge_after_s", 0)
    window = outpost.window
    assert window.route_picker.currentText() == "Auto (local: no provider)"  # (none yet)
    window.target_picker.refresh("provider:down")
    assert window.route_picker.currentData() == "auto"
    qtbot.waitUntil(lambda: window.route_picker.currentText() == "Auto (cloud, local fallback)")
    send(qtbot, outpost, "Are you there?")
    conversation = outpost.store.list_conversations()[0]
    messages = outpost.store.messages(conversation.id)
    assert [m.role for m in messages] == [Role.USER, Role.ASSISTANT]  # one reply, not two
    reply = messages[1]
    assert reply.status is MessageStatus.COMPLETE and reply.engine == "local"
    assert "down failed before answering" in reply.route_reason
    assert "answered locally" in window.view.bubbles[-1].footer.text()
    assert not window.banner.isVisible()
    assert outpost.connectivity.state("down").value in ("degraded", "offline")


def test_cloud_only_unreachable_waits_in_the_outbox(qtbot, outpost, artifacts_dir):
    from app.config.providers import ProviderConfig

    outpost.registry.add(ProviderConfig("down", "openai", "http://127.0.0.1:9/v1", "m"))
    window = outpost.window
    window.target_picker.refresh("provider:down")
    window.route_picker.setCurrentIndex(window.route_picker.findData("cloud"))
    window.route_picker.activated.emit(window.route_picker.currentIndex())
    assert "Cloud only" in window.route_label.text()
    assert window.composer.when_online.isChecked()  # automatic under Cloud only
    send(qtbot, outpost, "Are you there?")
    assert window.banner.isVisible() and "waits in the outbox" in window.banner.label.text()
    assert not window.banner.retry_button.isVisible()
    conversation = outpost.store.list_conversations()[0]
    assert conversation.route == "cloud"  # the new chat kept the route picked before it
    messages = outpost.store.messages(conversation.id)
    assert messages[0].content == "Are you there?"  # the prompt stays
    assert messages[-1].status is MessageStatus.ERROR and "Queued in the outbox" in \
        messages[-1].error
    [item] = outpost.service.outbox.pending()
    assert item.provider == "down" and item.user_message_id == messages[0].id
    assert window.outbox_button.isVisible() and "1 waiting" in window.outbox_button.text()
    assert "down" in window.links.labels  # its link light is shown
    window.resize(1100, 720)
    assert window.grab().save(str(artifacts_dir / "main_window_outbox.png"))
    window.outbox_button.open_panel()
    assert window.outbox_button.panel.rows()[0][0] == item.id


def test_the_name_follows_the_preset_until_the_user_types_one(qtbot, scripted):
    """Down through the presets (or typing "oll" on the box) names the provider after each one
    in turn, not after the first passed through ("openai" for Anthropic); a name the user typed
    stays when they pick another preset, and an existing provider keeps its own."""
    from PySide6.QtCore import Qt

    from app.config.providers import ProviderConfig
    from ui.providers_dialog import ProvidersDialog

    dialog = ProvidersDialog(scripted.registry, scripted.keys, scripted.settings,
                             scripted.tasks, scripted.window)
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitExposed(dialog)
    dialog.preset.setFocus()
    seen = []
    for _ in range(6):  # Custom ▸ OpenAI ▸ Anthropic ▸ … ▸ Ollama
        qtbot.keyClick(dialog.preset, Qt.Key.Key_Down)
        seen.append((dialog.preset.currentText(), dialog.name.text()))
    assert seen == [("OpenAI", "openai"), ("Anthropic", "anthropic"),
                    ("OpenRouter", "openrouter"), ("Groq", "groq"), ("Together", "together"),
                    ("Ollama", "ollama")]
    assert dialog.kind.currentData() == "openai"
    assert dialog.base_url.text() == "http://localhost:11434/v1"
    qtbot.keyClick(dialog.preset, Qt.Key.Key_Up, Qt.KeyboardModifier.NoModifier)
    assert dialog.name.text() == "together"  # back up: it follows that way too
    qtbot.keyClicks(dialog.preset, "anth")  # typed on the closed box: the keyboard search
    assert (dialog.preset.currentText(), dialog.name.text()) == ("Anthropic", "anthropic")
    assert dialog.kind.currentData() == "anthropic"

    dialog.name.setFocus()
    dialog.name.selectAll()
    qtbot.keyClicks(dialog.name, "work")  # their own name
    qtbot.keyClick(dialog.preset, Qt.Key.Key_Down)
    assert (dialog.preset.currentText(), dialog.name.text()) == ("OpenRouter", "work")
    dialog.name.clear()  # emptied: the preset names it again
    qtbot.keyClick(dialog.preset, Qt.Key.Key_Down)
    assert dialog.name.text() == "groq"

    scripted.registry.add(ProviderConfig("box", "openai", "http://localhost:11434/v1", "m"))
    dialog.reload(select="box")
    assert dialog.name.text() == "box"
    qtbot.keyClick(dialog.preset, Qt.Key.Key_Down)
    assert dialog.name.text() == "box"  # another preset does not rename a saved provider
    dialog.reload(select="box")  # (as saved: nothing to ask about when the test closes it)


def test_closing_with_a_provider_not_saved_asks_first(qtbot, scripted, monkeypatch):
    """Esc dropped a provider being added (a preset picked, a name typed) silently, as the
    Profiles dialog dropped quota changes. It asks "Save the provider mine?": Cancel goes back
    to it, Discard closes, Save saves it; picking another provider in the list asks too."""
    from PySide6.QtCore import Qt

    from app.config.providers import ProviderConfig
    from tests.support import answer_confirmations
    from ui.providers_dialog import ProvidersDialog

    scripted.registry.add(ProviderConfig("box", "openai", "http://localhost:11434/v1", "m"))
    dialog = ProvidersDialog(scripted.registry, scripted.keys, scripted.settings,
                             scripted.tasks, scripted.window)
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitExposed(dialog)
    dialog.reject()  # Esc (or Close): nothing changed, so it closes, nothing asked
    assert not dialog.isVisible()

    asked = answer_confirmations(monkeypatch, "Cancel", "Cancel", "Discard", "Save")
    try:
        _ask_about_a_provider_not_saved(qtbot, dialog, scripted.registry, asked)
    finally:
        dialog._saved_form = dialog._form_state()  # (closed by the test's end: nothing asked)


def _ask_about_a_provider_not_saved(qtbot, dialog, registry, asked) -> None:
    dialog.show()
    qtbot.waitExposed(dialog)
    dialog._on_add()
    dialog.preset.setCurrentIndex(dialog.preset.findData("groq"))
    dialog.name.setFocus()
    dialog.name.selectAll()
    qtbot.keyClicks(dialog.name, "mine")
    dialog.reject()  # Esc: Cancel, still open, the form as it was
    assert dialog.isVisible() and dialog.name.text() == "mine"
    dialog.list.setCurrentRow(0)  # another provider: Cancel keeps the form
    assert dialog.name.text() == "mine" and dialog.list.currentItem() is None
    dialog.reject()  # Esc: Discard, closed, nothing saved
    assert not dialog.isVisible()
    assert [c.name for c in registry.list()] == ["box"]
    assert [a["text"] for a in asked] == ["Save the provider mine?"] * 3

    dialog.show()
    qtbot.waitExposed(dialog)
    dialog._on_add()
    dialog.preset.setCurrentIndex(dialog.preset.findData("groq"))
    dialog.name.setText("mine")
    dialog.list.setCurrentRow(0)  # Save: saved, then box shown
    assert sorted(c.name for c in registry.list()) == ["box", "mine"]
    assert dialog.name.text() == "box" and len(asked) == 4
    dialog.close()
