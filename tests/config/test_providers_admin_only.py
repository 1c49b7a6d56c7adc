"""Providers and their API keys are the machine's, shared by every profile: only the admin adds,
removes or re-keys them (a trial found any profile could delete the key everyone used, or point
a provider elsewhere), in the CLI and in the window's Providers dialog."""
from __future__ import annotations

import json

import pytest

from tests.config.test_secrets import KEY, run_cli

pytestmark = pytest.mark.usefixtures("outpost_home")


def admin_and_maria() -> tuple[str, dict]:
    """The default (admin) profile's name, and the environment acting as maria (no PIN)."""
    import os

    [admin] = json.loads(run_cli("profile", "list", "--json").stdout)
    assert run_cli("profile", "add", "maria").returncode == 0
    return admin["name"], dict(os.environ, OUTPOST_PROFILE="maria")


def providers() -> list[dict]:
    return json.loads(run_cli("providers", "list", "--json").stdout)


def test_only_the_admin_adds_removes_and_keys_providers():
    admin, as_maria = admin_and_maria()
    added = run_cli("providers", "add", "lab", "--base-url", "https://llm.example.org/v1",
                    env=as_maria)
    assert added.returncode == 2
    assert f"Only the admin ({admin}) can add providers" in added.stderr
    assert "you are signed in as maria" in added.stderr and providers() == []
    assert run_cli("providers", "add", "lab", "--base-url",
                   "https://llm.example.org/v1").returncode == 0
    for args, words in ((("providers", "remove", "lab"), "remove providers"),
                        (("keys", "set", "lab"), "store API keys"),
                        (("keys", "delete", "lab"), "delete API keys")):
        refused = run_cli(*args, stdin=KEY + "\n", env=as_maria)
        assert refused.returncode == 2, args
        assert f"Only the admin ({admin}) can {words}" in refused.stderr
        assert KEY not in refused.stdout + refused.stderr
    assert [(p["name"], p["key"]) for p in providers()] == [("lab", None)]
    listed = run_cli("providers", "list", env=as_maria)  # seeing them is for everyone
    assert listed.returncode == 0 and "lab" in listed.stdout


def test_a_key_piped_over_two_lines_is_refused_not_cut():
    assert run_cli("providers", "add", "lab", "--base-url",
                   "https://llm.example.org/v1").returncode == 0
    wrapped = run_cli("keys", "set", "lab", "--insecure-file",
                      stdin=KEY[:12] + "\n" + KEY[12:] + "\n")
    assert wrapped.returncode == 2
    assert "contains a line break at character 13" in wrapped.stderr
    assert KEY[:12] not in wrapped.stdout + wrapped.stderr
    assert providers()[0]["key"] is None


def test_deleting_a_key_that_is_not_there_says_so():
    assert run_cli("providers", "add", "lab", "--base-url",
                   "https://llm.example.org/v1").returncode == 0
    deleted = run_cli("keys", "delete", "lab")
    assert deleted.returncode == 0
    assert deleted.stdout == "No key was stored for lab; nothing to forget.\n"


@pytest.mark.gui
def test_the_providers_dialog_is_read_only_to_others(qtbot, scripted):
    from ui.providers_dialog import ProvidersDialog

    admin = scripted.window.profile
    scripted.registry.add(_config("lab"))
    scripted.profiles.add("maria", admin)
    mine = scripted.window.model_menu.providers_dialog_factory(scripted.window)
    qtbot.addWidget(mine)
    assert mine.refusal is None and mine.save_button.isEnabled()
    scripted.window.profile_button.sign_in_as("maria")
    assert scripted.window.profile_name == "maria"
    theirs = scripted.window.model_menu.providers_dialog_factory(scripted.window)
    qtbot.addWidget(theirs)
    assert isinstance(theirs, ProvidersDialog)
    assert theirs.refusal.startswith(f"Only the admin ({admin.name}) can change providers")
    theirs.list.setCurrentRow(0)
    assert theirs.name.text() == "lab" and theirs.name.isReadOnly()
    assert not theirs.save_button.isEnabled() and not theirs.remove_button.isEnabled()
    assert theirs.test_button.isEnabled()  # trying the connection changes nothing
    theirs.remove("lab")  # asked anyway: refused, saying why
    assert [p.name for p in scripted.registry.list()] == ["lab"]
    assert theirs.result.text() == theirs.refusal
    theirs.show()
    assert theirs.findChild(type(theirs.result), "adminOnlyNote").isVisible()
    assert not theirs.key_note.isVisible()  # no "Choose: …" for one who cannot


def _config(name: str):
    from app.config.providers import ProviderConfig

    return ProviderConfig(name, "openai", "https://llm.example.org/v1", "m")
