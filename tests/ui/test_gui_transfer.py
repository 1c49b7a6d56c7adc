"""Chat ▸ Export / Import in the real window (issue 15): the same files as the CLI, written and
read in the background, the list refreshed, a bad file one sentence with nothing imported."""
from __future__ import annotations

import json

import pytest

from tests.storage.test_transfer import chatgpt_export
from tests.support import reply, send

pytestmark = pytest.mark.gui


def test_export_and_import_from_the_window(qtbot, scripted, scripted_engine, tmp_path):
    window = scripted.window
    scripted_engine.script(reply("The **lighthouse** stands on the cliff."))
    send(qtbot, scripted, "Where is the lighthouse?")
    markdown = tmp_path / "chat.md"
    with qtbot.waitSignal(window.transfer.done, timeout=10000):
        window.transfer.export(markdown, all_chats=False)
    text = markdown.read_text()
    assert "Where is the lighthouse?" in text and "The **lighthouse** stands" in text
    everything = tmp_path / "all.json"
    with qtbot.waitSignal(window.transfer.done, timeout=10000):
        window.transfer.export(everything, all_chats=True)
    assert json.loads(everything.read_text())["format"] == "outpost-conversations"

    chatgpt = tmp_path / "conversations.json"
    chatgpt.write_text(json.dumps(chatgpt_export()))
    with qtbot.waitSignal(window.transfer.done, timeout=10000) as done:
        window.transfer.import_file(chatgpt)
    assert done.args[0].startswith("Imported ")
    assert window.sidebar.conversation_count() > 1  # the list shows them at once
    with qtbot.waitSignal(window.transfer.done, timeout=10000) as again:
        window.transfer.import_file(everything)  # already here: skipped, never overwritten
    assert "already here, skipped" in again.args[0]

    before = window.sidebar.conversation_count()
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": "outpost-conversations", "version": 1, "conversations": 7}')
    with qtbot.waitSignal(window.transfer.failed, timeout=10000) as failed:
        window.transfer.import_file(broken)
    assert "broken.json cannot be imported" in str(failed.args[0])
    assert window.sidebar.conversation_count() == before


def test_export_follows_the_type_chosen_in_the_save_dialog(qtbot, scripted, scripted_engine,
                                                           tmp_path, monkeypatch):
    """'notes' typed with 'Web page' chosen is notes.html, a web page (it was a JSON file
    named notes); a name with its own suffix keeps it."""
    from ui import transfer_menu

    window = scripted.window
    scripted_engine.script(reply("The lighthouse stands on the cliff."))
    send(qtbot, scripted, "Where is the lighthouse?")
    answers = [(str(tmp_path / "notes"), "Web page (*.html)"),
               (str(tmp_path / "mine.json"), "Markdown (*.md)")]
    monkeypatch.setattr(transfer_menu.QFileDialog, "getSaveFileName",
                        lambda *args: answers.pop(0))
    for _ in range(2):
        with qtbot.waitSignal(window.transfer.done, timeout=10000):
            window.transfer.export_one_action.trigger()
    assert (tmp_path / "notes.html").read_text().lstrip().lower().startswith("<!doctype html")
    assert not (tmp_path / "notes").exists()
    assert json.loads((tmp_path / "mine.json").read_text())["format"] == \
        "outpost-conversations"
