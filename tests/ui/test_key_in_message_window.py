"""The window refuses a message holding one of the user's own API keys as it refuses any send:
the error in the banner (whose key, never the key), the draft left in the composer (or the
edit in its editor), nothing stored and nothing sent. Real window, ScriptedEngine as the local
model, the key stored as the user stores it (``keep_key``)."""
from __future__ import annotations

import keyring
import keyring.backend
import pytest
from keyring.compat import properties
from PySide6.QtCore import Qt

from app.config.providers import ProviderConfig
from tests.support import reply, send

pytestmark = pytest.mark.gui

KEY = "sk-pasted-in-the-window-31415926535897"
EDIT_KEY = "sk-pasted-in-an-edit-27182818284590ab"


def test_a_key_in_the_composer_is_refused_and_the_draft_stays(qtbot, scripted,
                                                               scripted_engine, keep_key):
    scripted.registry.add(ProviderConfig("acme", "openai", "http://127.0.0.1:9/v1", "m"))
    keep_key("acme", KEY)
    window = scripted.window
    draft = f"Why is {KEY} refused?"
    window.composer.edit.setPlainText(draft)
    qtbot.keyClick(window.composer.edit, Qt.Key.Key_Return)
    assert window.controller.state == "idle"
    assert window.banner.isVisible()
    assert window.banner.label.text() == (
        "The message contains your API key for acme; remove the key and send the message "
        "again (nothing was saved or sent).")
    assert window.composer.edit.toPlainText() == draft
    assert scripted.store.list_conversations() == [] and scripted_engine.requests == []
    assert window.view.bubbles == []


def test_an_edit_with_a_key_is_refused_and_stays_in_its_editor(qtbot, scripted,
                                                                scripted_engine, keep_key):
    scripted.registry.add(ProviderConfig("acme", "openai", "http://127.0.0.1:9/v1", "m"))
    window = scripted.window
    scripted_engine.script(reply("First answer."))
    send(qtbot, scripted, "Q1")
    conversation_id = window.controller.conversation_id
    before = [m.id for m in scripted.store.messages(conversation_id)]
    keep_key("acme", EDIT_KEY)
    question = window.view.bubbles[0]
    question.start_editing()
    question.editor.edit.setPlainText(f"Q1 with {EDIT_KEY}")
    question.editor.submit()
    assert "contains your API key for acme" in window.banner.label.text()
    assert EDIT_KEY not in window.banner.label.text()
    assert question.editing() and question.editor.edit.toPlainText() == f"Q1 with {EDIT_KEY}"
    assert [m.id for m in scripted.store.messages(conversation_id)] == before
    assert len(scripted_engine.requests) == 1  # only Q1's turn


DRAFT_KEY = "sk-typed-into-the-draft-16180339887498"
SYSTEM_KEY = "sk-typed-into-the-system-prompt-1414213"
STORED_KEY = "sk-stored-by-a-local-chat-173205080756"


@pytest.fixture
def forgetful(monkeypatch):
    """This process forgets the keys it handled (as a fresh process): only the key store
    (the keychain, or keys.json) can say a text holds one."""
    monkeypatch.setattr("app.domain.secrets_mask._remembered", {})


def test_a_draft_holding_a_key_is_kept_with_the_key_masked(qtbot, scripted, keep_key,
                                                          forgetful):
    """A refused message stays in the box, but window.ini (the drafts) never gets the key."""
    from ui.window_state import WindowState

    scripted.registry.add(ProviderConfig("acme", "openai", "http://127.0.0.1:9/v1", "m"))
    keep_key("acme", DRAFT_KEY)
    window = scripted.window
    window.target_picker.refresh("provider:acme")
    window.composer.edit.setPlainText(f"my key {DRAFT_KEY}")
    qtbot.keyClick(window.composer.edit, Qt.Key.Key_Return)
    assert "contains your API key for acme" in window.banner.label.text()
    window.draft.save()  # (as the timer or closing the window does)
    assert window.composer.edit.toPlainText() == f"my key {DRAFT_KEY}"
    assert WindowState().draft(window.profile_name) == "my key [redacted]"
    with open(WindowState().qsettings.fileName(), encoding="utf-8") as ini:
        assert DRAFT_KEY not in ini.read()


def test_a_system_prompt_holding_a_key_is_not_stored_and_the_user_is_told(qtbot, scripted,
                                                                          scripted_engine,
                                                                          keep_key, forgetful):
    scripted.registry.add(ProviderConfig("acme", "openai", "http://127.0.0.1:9/v1", "m"))
    window = scripted.window
    scripted_engine.script(reply("First answer."))
    send(qtbot, scripted, "Q1")
    conversation_id = window.controller.conversation_id
    keep_key("acme", SYSTEM_KEY)
    window.target_picker.refresh("provider:acme")
    window.sampling.system_prompt.setPlainText("Be brief.")
    assert scripted.store.get_conversation(conversation_id).system_prompt == "Be brief."
    window.sampling.system_prompt.setPlainText(f"Use the key {SYSTEM_KEY}.")
    assert window.banner.label.text() == (
        "The system prompt contains your API key for acme; remove the key from it (the system "
        "prompt was not saved).")
    assert scripted.store.get_conversation(conversation_id).system_prompt == "Be brief."


def test_a_key_a_stored_chat_holds_is_masked_in_its_title_and_text(qtbot, scripted,
                                                                    scripted_engine, keep_key,
                                                                    forgetful):
    """A Local only chat checks no keychain key (or the key was stored later): the window
    shows such a chat with the key masked, in the list, the title and the messages."""
    window = scripted.window
    scripted_engine.script(reply("Noted."))
    send(qtbot, scripted, f"local: {STORED_KEY}")
    conversation_id = window.controller.conversation_id
    scripted.registry.add(ProviderConfig("acme", "openai", "http://127.0.0.1:9/v1", "m"))
    keep_key("acme", STORED_KEY)
    window.target_picker.refresh("provider:acme")
    window.controller.new_conversation()
    window.refresh_sidebar()
    [item] = window.sidebar.conversation_items()
    assert item.text() == "local: [redacted]" and STORED_KEY not in item.toolTip()
    window.sidebar.conversation_selected.emit(conversation_id)  # (a click on it)
    assert window.controller.conversation_id == conversation_id
    assert window.title_label.text() == "local: [redacted]"
    assert window.view.bubbles[0].message.content == "local: [redacted]"


class InMemoryKeychain(keyring.backend.KeyringBackend):
    """A secure OS keychain as keyring sees one (priority 5), kept in memory: a key stored
    here is in no file Outpost reads without the keychain. Viable only while a test uses it
    (keyring registers every backend class: its own detection must never pick this one)."""

    active = False

    @properties.classproperty
    def priority(cls) -> float:
        if not cls.active:
            raise RuntimeError("only for tests")
        return 5.0

    def __init__(self):
        super().__init__()
        self.passwords: dict[tuple[str, str], str] = {}

    def get_password(self, service, username):
        return self.passwords.get((service, username))

    def set_password(self, service, username, password):
        self.passwords[(service, username)] = password

    def delete_password(self, service, username):
        self.passwords.pop((service, username), None)


@pytest.fixture
def keychain_only():
    """The OS keychain is a secure one in memory for the test (the detected one after)."""
    previous = keyring.get_keyring()
    InMemoryKeychain.active = True
    keyring.set_keyring(InMemoryKeychain())
    yield
    keyring.set_keyring(previous)
    InMemoryKeychain.active = False


def test_a_local_only_window_masks_a_key_kept_only_in_the_keychain(qtbot, scripted,
                                                                    scripted_engine,
                                                                    keychain_only, monkeypatch):
    """A Local only window left the keychain out of the keys it masks: a key kept only there
    (not in keys.json, not in the environment) showed whole in a stored chat's list entry,
    title and messages, and went into window.ini with the draft. A key the user stored is
    masked whatever the route."""
    from app.config.secrets import KeyStore
    from ui.window_state import WindowState

    window = scripted.window
    picker = window.route_picker
    picker.setCurrentIndex(picker.findData("local"))
    picker.activated.emit(picker.currentIndex())
    scripted_engine.script(reply("Noted."))
    send(qtbot, scripted, f"local: {STORED_KEY}")
    conversation_id = window.controller.conversation_id
    assert scripted.store.get_conversation(conversation_id).route == "local"
    scripted.registry.add(ProviderConfig("acme", "openai", "http://127.0.0.1:9/v1", "m"))
    assert KeyStore().set("acme", STORED_KEY) == "keychain"
    monkeypatch.setattr("app.domain.secrets_mask._remembered", {})  # (a fresh process)
    window.model_menu.providers_changed.emit()  # (the Providers dialog stored it)
    window.controller.new_conversation()
    window.refresh_sidebar()
    [item] = window.sidebar.conversation_items()
    assert item.text() == "local: [redacted]" and STORED_KEY not in item.toolTip()
    window.sidebar.conversation_selected.emit(conversation_id)  # (a click on it)
    assert window.title_label.text() == "local: [redacted]"
    assert window.view.bubbles[0].message.content == "local: [redacted]"
    assert window.controller.effective_route() == "local"
    window.composer.edit.setPlainText(f"again {STORED_KEY}")
    window.draft.save()
    assert WindowState().draft(window.profile_name) == "again [redacted]"


def test_the_window_asks_the_keychain_at_most_once_in_a_while(qtbot, scripted, keep_key,
                                                              monkeypatch):
    """Each draft save, list refresh and chat opened asked the keychain (a D-Bus round trip
    on the GUI thread): it is asked once, then again only after ``KEYS_KEPT_S`` or once the
    Providers dialog changed a provider or a key; a key it gave stays masked in between."""
    from app.config.secrets import KeyStore
    from ui.window_state import WindowState

    scripted.registry.add(ProviderConfig("acme", "openai", "http://127.0.0.1:9/v1", "m"))
    keep_key("acme", DRAFT_KEY)
    reads = []
    asked = KeyStore._from_keychain
    monkeypatch.setattr(KeyStore, "_from_keychain",
                        lambda self, *args: reads.append(args) or asked(self, *args))
    window = scripted.window
    window.target_picker.refresh("provider:acme")
    first = len(reads)
    for _ in range(5):
        window.composer.edit.setPlainText(f"my key {DRAFT_KEY}")
        window.draft.save()
        window.refresh_sidebar()
    assert WindowState().draft(window.profile_name) == "my key [redacted]"
    assert len(reads) - first <= 1  # (the first read may come with the first save)
    before = len(reads)
    window.model_menu.providers_changed.emit()  # a provider or a key changed: asked again
    window.draft.save()
    assert len(reads) == before + 1


SETTINGS_KEY = "sk-typed-into-the-default-prompt-2236067"


def test_settings_refuses_a_default_system_prompt_holding_a_key(qtbot, scripted, keep_key):
    """Settings ▸ General ▸ System prompt saved a key into settings.json, given to every new
    chat and sent with it: the field says why, and OK / Apply stay off until it is removed."""
    from app.config.settings import Settings

    scripted.registry.add(ProviderConfig("acme", "openai", "http://127.0.0.1:9/v1", "m"))
    keep_key("acme", SETTINGS_KEY)
    dialog = scripted.window.open_settings()
    qtbot.addWidget(dialog)
    row = dialog.rows["system_prompt"]
    row.field.setPlainText(f"Be brief. {SETTINGS_KEY}")
    assert row.error == (
        "The system prompt contains your API key for acme; remove the key from it (a new chat "
        "would keep it and send it with every message).")
    assert SETTINGS_KEY not in row.error_label.text() and row.error_label.isVisibleTo(dialog)
    assert not dialog.ok_button.isEnabled() and not dialog.apply()
    assert Settings()["system_prompt"] == "You are a helpful assistant."
    row.field.setPlainText("Be brief.")
    assert row.error is None and dialog.apply()
    assert Settings()["system_prompt"] == "Be brief."
