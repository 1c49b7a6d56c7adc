"""`outpost models rename` and `remove` keep what names a model elsewhere in step: the
``model_path`` setting, the conversations that remember it, and the usage ledger's rows (by file
name). A rename left the setting and a conversation naming a model that was gone ("There is no
model called 'gemma3'"), and `outpost usage` split one file into two rows; removing the
configured model was allowed, and every later `ask` failed. In process, on a real library and a
real SQLite file; the local model of `ask` is scripted."""
from __future__ import annotations

import json
import shutil

import pytest

from app import cli
from app.config.settings import Settings
from app.storage.store import Store
from engines.http_policy import AttemptRecord
from engines.model_library import ModelLibrary


@pytest.fixture
def gem(outpost_home, tmp_path, bundled_model):
    """A model called "gem" in the models folder, and a conversation `ask --model gem` made."""
    copy = tmp_path / "gem.gguf"
    shutil.copyfile(bundled_model, copy)
    ModelLibrary.from_settings(Settings()).import_file(copy, "link")
    return copy


def run(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def conversation_with(capsys, model: str) -> str:
    code, out, _ = run(capsys, "ask", "Hello", "--model", model, "--json")
    assert code == 0
    return [e for e in map(json.loads, out.splitlines())
            if e["event"] == "finished"][0]["conversation_id"]


def remembered(cid: str) -> str | None:
    store = Store()
    try:
        return store.get_conversation(cid).target_model
    finally:
        store.close()


def test_a_rename_carries_the_setting_the_conversations_and_the_usage_rows(
        capsys, local, gem):
    settings = Settings()
    settings.set("model_path", str(ModelLibrary.from_settings(settings).find("gem").path))
    settings.save()
    by_name, by_file = conversation_with(capsys, "gem"), conversation_with(capsys, "gem.gguf")
    elsewhere = conversation_with(capsys, "SmolLM2-135M-Instruct.Q4_1")
    store = Store()
    try:
        store.log_attempt(AttemptRecord(1, 200, 5.0, None, provider="local", model="gem.gguf",
                                        kind="local"), profile="me")
    finally:
        store.close()

    code, out, err = run(capsys, "models", "rename", "gem", "gemma", "--json")
    assert code == 0 and json.loads(out)["name"] == "gemma"
    assert "model_path setting now names gemma" in err
    assert "2 conversations that remembered it now remember gemma" in err
    assert "1 usage row now filed under gemma.gguf" in err
    assert Settings()["model_path"].endswith("/models/gemma.gguf")  # a path stays a path
    assert remembered(by_name) == remembered(by_file) == "gemma"
    assert remembered(elsewhere) == "SmolLM2-135M-Instruct.Q4_1"  # another model's: left
    store = Store()
    try:
        assert [r["model"] for r in store.request_log() if r["provider"] == "local"
                and r["model"].startswith("gem")] == ["gemma.gguf"]
    finally:
        store.close()

    # the conversation goes on with the renamed model, with nothing to say
    local.loads.clear()
    code, out, err = run(capsys, "ask", "Again", "--conversation", by_name, "--json")
    assert code == 0 and local.loads == ["gemma"] and err == ""


def test_the_configured_model_is_not_removed_and_chats_that_remembered_one_move_on(
        capsys, local, gem):
    settings = Settings()
    settings.set("model_path", "gem")
    settings.save()
    cid = conversation_with(capsys, "gem")

    code, out, err = run(capsys, "models", "remove", "gem", "--yes")
    assert code == 2 and "gem is the configured local model" in err and out == ""
    assert ModelLibrary.from_settings(Settings()).find("gem").path.exists()

    settings.set("model_path", "")
    settings.save()
    code, out, err = run(capsys, "models", "remove", "gem", "--yes")
    assert code == 0 and "Removed gem." in out
    assert "1 conversation that remembered gem will be answered by the configured" in err
    assert remembered(cid) is None
