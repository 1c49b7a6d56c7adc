"""Providers ▸ Key storage on a machine without a secure keychain: it is the key_fallback
setting (Settings ▸ Privacy), so the two dialogs give one answer."""
from __future__ import annotations

import keyring
import pytest

from app.config.providers import ProviderRegistry
from app.config.secrets import KeyStore
from app.config.settings import Settings

pytestmark = pytest.mark.gui

KEY = "sk-test-0123456789abcdefZZZZ"


@pytest.fixture
def no_keychain(monkeypatch):
    """keyring's null backend: no secure keychain, as on a bare Linux desktop."""
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.null.Keyring")
    keyring.core.init_backend()
    yield
    monkeypatch.delenv("PYTHON_KEYRING_BACKEND")
    keyring.core.init_backend()


def providers_dialog(qtbot, settings: Settings):
    """The dialog as the window builds it: the key store follows the setting (ui/app.py)."""
    from ui.providers_dialog import ProvidersDialog
    from ui.tasks import TaskRunner

    dialog = ProvidersDialog(ProviderRegistry(), KeyStore(fallback=settings["key_fallback"]),
                             settings, TaskRunner())
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitExposed(dialog)
    return dialog


def save_a_provider_with_a_key(dialog) -> None:
    dialog.name.setText("lab")
    dialog.base_url.setText("https://llm.example.org/v1")
    dialog.model.setEditText("m")
    dialog.key.setText(KEY)
    dialog.save_button.click()


def test_key_storage_is_the_key_fallback_setting(qtbot, no_keychain, artifacts_dir):
    """Settings ▸ Privacy said "Do not keep them" (key_fallback's default, refuse) while Key
    storage here said "Only this session": two answers to where a key goes. Key storage shows
    the setting's value and choices, by the same names, and says which applies; a key saved
    under "Do not keep them" is not kept, and choosing another keeps it and sets the setting."""
    from tests.support import grab_in_palette

    settings = Settings()
    dialog = providers_dialog(qtbot, settings)
    assert dialog.key_storage.isVisibleTo(dialog) and dialog.key_note.isVisibleTo(dialog)
    assert dialog.key_storage.currentData() == "refuse"
    assert [dialog.key_storage.itemText(i) for i in range(dialog.key_storage.count())] == [
        "Do not keep them", "Only this session", "In a file only I can read"]
    note = dialog.key_note.text()
    assert "Settings ▸ Privacy ▸ API keys without a keychain says \u201cDo not keep them\u201d" \
        in note and "so a key is not kept" in note
    for theme in ("light", "dark"):
        grab_in_palette(qtbot, dialog, artifacts_dir / f"providers-key-storage-{theme}.png",
                        theme)

    save_a_provider_with_a_key(dialog)  # as the setting says: refused, and why
    assert "No secure keychain" in dialog.result.text()
    assert dialog.keys.get("lab") is None and not settings.path.exists()

    dialog.key_storage.setCurrentIndex(dialog.key_storage.findData("memory"))
    save_a_provider_with_a_key(dialog)
    assert dialog.keys.get("lab") == KEY
    assert dialog.result.text() == "Saved. Key sk-…ZZZZ kept in memory, for this session only."
    assert Settings()["key_fallback"] == "memory"  # the setting follows, saved
    assert "says \u201cOnly this session\u201d" in dialog.key_note.text()


@pytest.mark.parametrize("fallback", ["memory", "file"])
def test_key_storage_opens_on_the_choice_made_in_settings(qtbot, no_keychain, fallback):
    settings = Settings()
    settings.set("key_fallback", fallback)
    dialog = providers_dialog(qtbot, settings)
    assert dialog.key_storage.currentData() == fallback
    assert dialog.key_storage.currentText() in dialog.key_note.text()


def test_with_a_keychain_there_is_nothing_to_choose(qtbot, monkeypatch):
    monkeypatch.setattr(KeyStore, "secure", property(lambda self: True))
    dialog = providers_dialog(qtbot, Settings())
    assert not dialog.key_storage.isVisibleTo(dialog)
    assert not dialog.key_note.isVisibleTo(dialog)
