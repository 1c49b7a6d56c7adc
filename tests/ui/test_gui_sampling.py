"""The Sampling dock (issue 6): knobs per conversation, presets, the capability map of the
engine that will answer, and the parameters actually sent stored with the reply."""
from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from app.config.providers import ProviderConfig
from tests.support import reply as known_reply
from tests.support import send

pytestmark = pytest.mark.gui


@pytest.mark.local_model
def test_panel_knobs_presets_and_capabilities(qtbot, outpost, artifacts_dir):
    window = outpost.window
    panel = window.sampling
    assert panel.isVisible() and panel.kind == "local"
    assert all(panel.labels[name].isEnabled() for name in panel.labels)  # local: every knob
    panel.apply_preset("Creative")
    assert panel.fields["temperature"].value() == 1.0 and panel.use["min_p"].isChecked()
    panel.use["seed"].setChecked(True)
    panel.fields["seed"].setValue(99)
    panel.fields["max_tokens"].setValue(12)
    panel.system_prompt.setPlainText("Answer like a pirate.")
    send(qtbot, outpost, "Hello")
    [conversation] = outpost.store.list_conversations(window.profile_name)
    assert conversation.system_prompt == "Answer like a pirate."
    assert conversation.sampling["temperature"] == 1.0 and conversation.sampling["seed"] == 99
    reply = outpost.store.messages(conversation.id)[-1]
    assert (reply.params["temperature"], reply.params["seed"], reply.params["max_tokens"],
            reply.params["min_p"]) == (1.0, 99, 12, 0.1)

    # the reply's details show what was sent
    bubble = window.view.last_bubble()
    assert bubble.details_button.isVisible() and bubble.message_id == reply.id
    bubble.details_button.click()
    details = window.details_dialog
    qtbot.addWidget(details)
    assert '"seed": 99' in details.params.toPlainText()
    assert '"repeat_penalty": 1.1' in details.params.toPlainText()
    assert details.values["Answered by"].startswith("local")
    qtbot.wait(50)
    details.grab().save(str(artifacts_dir / "message_details.png"))
    details.close()

    # an edit is kept with the conversation; a new chat starts from the defaults
    panel.fields["temperature"].setValue(0.3)
    assert outpost.store.get_conversation(conversation.id).sampling["temperature"] == 0.3
    window._on_new_chat()
    assert panel.fields["temperature"].value() == outpost.settings["temperature"]
    assert not panel.use["seed"].isChecked()
    window._on_conversation_selected(conversation.id)
    assert panel.fields["temperature"].value() == 0.3 and panel.fields["seed"].value() == 99

    # a user preset: saved, listed, not a built-in
    assert panel.save_preset("Pirate")
    assert panel.preset_picker.findData("Pirate") >= 0 and panel.delete_button.isEnabled()
    assert not panel.save_preset("Precise") and "built-in" in panel.error.text()

    # Anthropic will answer: its unsupported knobs go grey, saying why
    outpost.registry.add(ProviderConfig("claude", "anthropic", "http://127.0.0.1:9",
                                        "claude-test"), replace=True)
    window.target_picker.refresh("provider:claude")
    assert panel.kind == "anthropic"
    for name in ("seed", "presence_penalty", "frequency_penalty", "repeat_penalty", "min_p"):
        assert not panel.labels[name].isEnabled()
        assert "Anthropic" in panel.fields[name].toolTip()
    assert panel.labels["top_k"].isEnabled() and panel.fields["temperature"].isEnabled()
    qtbot.wait(50)
    window.grab().save(str(artifacts_dir / "main_window_sampling.png"))
    window.target_picker.refresh("local")
    assert panel.kind == "local" and panel.fields["seed"].isEnabled()


@pytest.mark.local_model
def test_json_mode_with_a_schema_in_the_window(qtbot, outpost, artifacts_dir):
    import json

    from ui.schema_editor import SchemaEditor

    window = outpost.window
    panel = window.sampling
    editor = SchemaEditor(None, window)
    qtbot.addWidget(editor)
    editor.edit.setPlainText('{"type": "objekt"}')
    assert not editor.buttons.button(editor.buttons.StandardButton.Ok).isEnabled()
    assert "not valid" in editor.status.text()
    schema = {"type": "object", "properties": {"colour": {"enum": ["red", "green", "blue"]}},
              "required": ["colour"]}
    editor.edit.setPlainText(json.dumps(schema))
    assert editor.buttons.button(editor.buttons.StandardButton.Ok).isEnabled()
    panel.json_mode.setChecked(True)
    panel.set_schema(editor.schema)
    panel.fields["max_tokens"].setValue(30)
    send(qtbot, outpost, "Pick a colour.")
    [conversation] = outpost.store.list_conversations(window.profile_name)
    assert conversation.sampling["response_format"] == {"type": "json", "schema": schema}
    reply = outpost.store.messages(conversation.id)[-1]
    assert reply.output_check["valid"] and json.loads(reply.content)["colour"] in (
        "red", "green", "blue")
    assert reply.params["response_format"] == "grammar from the JSON schema"
    assert "valid JSON" in window.view.last_bubble().footer.text()
    window._on_new_chat()
    assert not panel.json_mode.isChecked()
    window._on_conversation_selected(conversation.id)
    assert panel.json_mode.isChecked() and panel.schema == schema
    qtbot.wait(50)
    window.grab().save(str(artifacts_dir / "main_window_json.png"))


@pytest.mark.local_model
def test_turns_left_out_to_fit_are_announced_and_stay_announced(qtbot, outpost):
    from app.domain.messages import Role

    window = outpost.window
    store = outpost.store
    conversation = store.create_conversation("long", profile=window.profile_name)
    for i in range(2):
        store.add_message(conversation.id, Role.USER, f"Question {i}: " + "river " * 2500)
        store.add_message(conversation.id, Role.ASSISTANT, "Noted.")
    window._on_conversation_selected(conversation.id)
    from PySide6.QtCore import Qt

    qtbot.keyClicks(window.composer.edit, "And now?")
    qtbot.keyClick(window.composer.edit, Qt.Key.Key_Return)
    # shown when the message goes out (not hidden by the send itself)
    assert window.banner.isVisible()
    assert "oldest turn" in window.banner.label.text() and "Question 0" in \
        window.banner.label.text()
    # a safety net, not a time assertion: ~2,600 prompt tokens on a busy CPU
    qtbot.waitUntil(lambda: window.controller.state == "idle", timeout=300000)


@pytest.mark.local_model
def test_best_of_n_in_the_window_shows_the_winner_and_the_candidates(qtbot, outpost,
                                                                     artifacts_dir):
    window = outpost.window
    panel = window.sampling
    panel.fields["temperature"].setValue(0.9)
    panel.tt_mode.setCurrentIndex(panel.tt_mode.findData("best_of"))
    panel.tt_n.setValue(3)
    assert panel.tt_scorer.isVisible() and not panel.tt_extract.isVisible()
    send(qtbot, outpost, "Name a colour.")
    [conversation] = outpost.store.list_conversations(window.profile_name)
    reply = outpost.store.messages(conversation.id)[-1]
    picked = reply.candidates
    assert picked["mode"] == "best_of" and len(picked["candidates"]) == 3
    assert reply.content == picked["candidates"][picked["winner"]]["text"]
    assert conversation.sampling["test_time"]["n"] == 3
    bubble = window.view.last_bubble()
    assert "best of 3 by mean log-probability" in bubble.footer.text()
    bubble.details_button.click()
    details = window.details_dialog
    qtbot.addWidget(details)
    assert details.candidates.toPlainText().count("seed") == 3
    assert "★ kept" in details.candidates.toPlainText()
    qtbot.wait(50)
    details.grab().save(str(artifacts_dir / "candidates_details.png"))
    # temperature 0: refused before anything is saved
    panel.fields["temperature"].setValue(0.0)
    count = len(outpost.store.messages(conversation.id))
    send(qtbot, outpost, "Again")
    assert "temperature 0" in window.banner.label.text()
    assert len(outpost.store.messages(conversation.id)) == count


def test_an_empty_reply_is_an_error_with_retry_not_a_blank_bubble(qtbot, scripted,
                                                                   scripted_engine):
    """The model says nothing (here: a stop sequence from the panel cut its whole reply): an
    error with Retry, not a blank bubble. Scripted, so the reply is empty on every machine."""
    window = scripted.window
    panel = window.sampling
    panel.fields["temperature"].setValue(0.0)
    panel.fields["stop"].setPlainText("H")
    scripted_engine.script(known_reply(), known_reply("Hello", "."))  # nothing; then an answer
    send(qtbot, scripted, "Say hello.")
    assert scripted_engine.requests[0].stop == ("H",)  # the panel's stop reached the engine
    reply = scripted.store.messages(window.controller.conversation_id)[-1]
    assert reply.content == "" and reply.status.value == "error"
    assert "empty reply (finish reason: stop)" in reply.error
    assert window.banner.isVisible() and window.banner.retry_button.isVisible()
    assert "empty reply" in window.view.last_bubble().footer.text()
    window.banner.retry_button.click()
    qtbot.waitUntil(lambda: window.controller.state == "idle", timeout=10000)
    answer = scripted.store.messages(window.controller.conversation_id)[-1]
    assert answer.content == "Hello." and answer.status.value == "complete"
    assert window.view.last_bubble().text == "Hello."


@pytest.mark.local_model
def test_a_lora_attached_in_the_window_is_applied_kept_and_shown_in_details(
        qtbot, outpost, bundled_model, tmp_path, artifacts_dir):
    from tests.lora_files import make_lora

    adapter = make_lora(bundled_model, tmp_path / "pirate-style.gguf", seed=4)
    window = outpost.window
    panel = window.sampling
    assert panel.lora.isEnabled()  # the local model answers
    panel.fields["max_tokens"].setValue(8)
    panel.lora.set_adapter(str(adapter), 0.75)
    send(qtbot, outpost, "Hello")
    [conversation] = outpost.store.list_conversations(window.profile_name)
    used = [{"name": "pirate-style.gguf", "path": str(adapter), "scale": 0.75}]
    assert conversation.sampling["lora"] == used
    reply = outpost.store.messages(conversation.id)[-1]
    assert reply.params["lora"] == used and reply.status.value == "complete"

    window.view.last_bubble().details_button.click()
    details = window.details_dialog
    qtbot.addWidget(details)
    assert details.values["LoRA adapters"] == "pirate-style.gguf × 0.75"
    details.grab().save(str(artifacts_dir / "message_details_lora.png"))
    details.close()

    # a preset can carry it; a new chat starts without it; the conversation brings it back
    assert panel.save_preset("Pirate voice")
    window._on_new_chat()
    assert panel.lora.adapters() == ()
    panel.apply_preset("Pirate voice")
    assert panel.lora.records() == used
    window._on_new_chat()
    window._on_conversation_selected(conversation.id)
    assert panel.lora.records() == used
    panel.lora.set_adapter(None)  # detached: kept with the conversation
    assert outpost.store.get_conversation(conversation.id).sampling["lora"] == []


def test_a_preset_keeps_json_output_and_its_schema(qtbot, scripted):
    """A preset sets knobs; JSON output and the schema chosen stay as they were."""
    panel = scripted.window.sampling
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    panel.json_mode.setChecked(True)
    panel.set_schema(schema)
    panel.apply_preset("Precise")
    assert panel.json_mode.isChecked() and panel.schema == schema
    assert panel.response_format() == {"type": "json", "schema": schema}


def test_typing_a_self_consistency_answer_rule_never_raises(qtbot, scripted):
    """Half a rule ("json:") while it is typed: the panel says what is wrong, the token meter
    counts nothing meanwhile, and no 'unexpected error' comes up; a rule that is right again,
    or One reply, clears the message."""
    window = scripted.window
    panel = window.sampling
    panel.tt_mode.setCurrentIndex(panel.tt_mode.findData("self_consistency"))
    panel.tt_extract.setText("json:")
    assert window.controller.prepare_measure("How many?") is None  # (it used to raise)
    assert panel.error.isVisible() and panel.error.text()
    panel.tt_extract.setText("json:answer")
    assert window.controller.prepare_measure("How many?") is not None
    assert not panel.error.isVisible()
    panel.tt_extract.setText("regex:(")
    panel.test_time()
    assert panel.error.isVisible()
    panel.tt_mode.setCurrentIndex(panel.tt_mode.findData(None))
    panel.test_time()
    assert not panel.error.isVisible()


def test_the_test_time_fields_are_labelled_for_each_mode(qtbot, scripted):
    """Best of n shows "Chosen by" its scorer, self-consistency "Answer from" its rule (each
    the label's buddy, so Alt+letter and screen readers reach it); One reply shows neither."""
    panel = scripted.window.sampling
    panel.show()
    shown = {}
    for mode in ("best_of", "self_consistency", None):
        panel.tt_mode.setCurrentIndex(panel.tt_mode.findData(mode))
        shown[mode] = (panel.tt_by.isVisible() and panel.tt_by.text(),
                       panel.tt_by.buddy() if panel.tt_by.isVisible() else None)
    assert shown == {"best_of": ("Chosen by", panel.tt_scorer),
                     "self_consistency": ("Answer from", panel.tt_extract), None: (False, None)}


def test_sending_with_a_bad_answer_rule_is_refused_in_the_banner(qtbot, scripted):
    """Self-consistency with an answer rule that is no pattern ("regex:("): Enter says why in
    the banner and keeps the draft, with nothing saved (it opened 'unexpected error')."""
    window = scripted.window
    panel = window.sampling
    panel.tt_mode.setCurrentIndex(panel.tt_mode.findData("self_consistency"))
    panel.tt_extract.setText("regex:(")
    window.composer.edit.setPlainText("How many legs has a spider?")
    window.composer.edit.setFocus()
    qtbot.keyClick(window.composer.edit, Qt.Key.Key_Return)
    assert "not a valid regular expression" in window.errors.banner.label.text()
    assert window.composer.edit.toPlainText() == "How many legs has a spider?"
    assert scripted.store.list_conversations() == []


def test_a_file_that_is_no_lora_adapter_is_refused_when_picked(qtbot, scripted, bundled_model,
                                                                tmp_path):
    """A full model picked as an adapter is refused at once, with why, under the row (it was
    accepted, and the next message failed, saved as a new chat with a failed reply); a real
    adapter is attached, and its row is no wider than with none (it pushed the panel's
    fields past its right edge)."""
    from tests.lora_files import make_lora

    panel = scripted.window.sampling
    lora = panel.lora
    lora.show()
    narrow = panel.minimumSizeHint().width()
    assert not lora.pick(str(bundled_model))
    assert lora.adapters() == () and lora.error.isVisible()
    assert "is not a LoRA adapter" in lora.error.text()
    adapter = make_lora(bundled_model, tmp_path / ("a-long-adapter-name-for-a-pirate-style-"
                                                   "of-speaking.gguf"), seed=4)
    assert lora.pick(str(adapter))
    assert not lora.error.isVisible() and lora.adapters()[0].path == str(adapter)
    assert not lora.pick(str(bundled_model)) and lora.error.isVisible()
    lora.load([])  # another conversation: the refusal was about this one's pick
    assert not lora.error.isVisible()
    assert lora.pick(str(adapter))
    assert lora.scale.isVisible() and lora.detach.isVisible()
    assert panel.minimumSizeHint().width() <= narrow


def test_the_token_meter_follows_the_knobs_of_a_new_chat(qtbot, scripted):
    """In a chat not created yet, changing Max tokens counts the draft again with the new
    reply budget (the meter waited for the next keystroke)."""
    window = scripted.window
    meter, panel = window.meter, window.sampling
    window.composer.edit.setPlainText("How far is the moon?")
    qtbot.waitUntil(lambda: bool(meter.last) and meter.last["max_tokens"] == 48, timeout=5000)
    panel.fields["max_tokens"].setValue(100)
    qtbot.waitUntil(lambda: meter.last["max_tokens"] == 100, timeout=5000)
    assert "with 100 for the reply" in meter.label.text().replace("\u00a0", " ")  # (unbroken)


def test_saving_over_a_preset_and_deleting_one_are_asked_first(qtbot, scripted, monkeypatch):
    """"Save as… mine" over a preset called "Mine" asks before replacing it (names match
    whatever their case), and Delete asks too; Cancel keeps the preset as it was."""
    from tests.support import answer_confirmations
    from ui.sampling_panel import QInputDialog

    panel = scripted.window.sampling
    panel.fields["temperature"].setValue(0.2)
    assert panel.save_preset("Mine")
    panel.fields["temperature"].setValue(1.1)
    monkeypatch.setattr(QInputDialog, "getText", lambda *a, **k: ("mine", True))
    asked = answer_confirmations(monkeypatch, "Cancel", "Replace", "Cancel", "Delete")
    panel._save_preset()
    assert panel.presets.get("Mine")["temperature"] == 0.2  # kept
    panel._save_preset()
    assert panel.presets.get("mine")["temperature"] == 1.1
    panel.preset_picker.setCurrentIndex(panel.preset_picker.findData("mine"))
    panel._delete_preset()
    assert "mine" in panel.presets.names()
    panel._delete_preset()
    assert "mine" not in panel.presets.names()
    assert [(a["title"], a["default"]) for a in asked] == [
        ("Replace preset", "Cancel")] * 2 + [("Delete preset", "Cancel")] * 2


def _conversation_with(scripted, **sampling):
    """A conversation stored with ``sampling`` (as `outpost ask` leaves one), shown."""
    window = scripted.window
    conversation = scripted.store.create_conversation(
        "from the CLI", profile=window.profile_name,
        sampling={"temperature": 0.7, "top_p": 0.95, "max_tokens": 48, **sampling})
    window._on_conversation_selected(conversation.id)
    return conversation


def test_knobs_finer_than_two_decimals_are_shown_and_sent_as_stored(qtbot, scripted,
                                                                    scripted_engine):
    """A conversation from `outpost ask --min-p 0.025 --top-p 0.925 --repeat-penalty 1.025
    --temperature 0.655`, opened in the window: the panel shows those values and the next turn
    sends them as stored (the boxes rounded each to 2 decimals, 0.03, 0.93, 1.02, 0.66, and sent
    that). A value with more decimals than a box shows is still sent exactly; one typed with
    three or four decimals is kept as typed."""
    panel = scripted.window.sampling
    knobs = {"temperature": 0.655, "top_p": 0.925, "min_p": 0.025, "repeat_penalty": 1.025,
             "presence_penalty": 0.1 + 0.2}  # 0.30000000000000004: more than a box shows
    conversation = _conversation_with(scripted, **knobs)
    assert {name: panel.fields[name].text() for name in knobs} == {
        "temperature": "0.655", "top_p": "0.925", "min_p": "0.025", "repeat_penalty": "1.025",
        "presence_penalty": "0.3"}
    assert {name: panel.values()[name] for name in knobs} == knobs
    scripted_engine.script(known_reply("Teal", "."))
    send(qtbot, scripted, "And another?")
    sent = scripted_engine.requests[-1]
    assert {name: getattr(sent, name) for name in knobs} == knobs
    reply = scripted.store.messages(conversation.id)[-1]
    assert {name: reply.params[name] for name in knobs} == knobs  # (history show --json)
    assert {name: scripted.store.get_conversation(conversation.id).sampling[name]
            for name in knobs} == knobs

    field = panel.fields["min_p"]  # typed: kept as typed, with the conversation
    field.lineEdit().selectAll()
    qtbot.keyClicks(field.lineEdit(), "0.0125")
    assert field.text() == "0.0125" and panel.values()["min_p"] == 0.0125
    assert scripted.store.get_conversation(conversation.id).sampling["min_p"] == 0.0125
    panel.fields["presence_penalty"].stepBy(1)  # changed by the user: the box's own value
    assert panel.values()["presence_penalty"] == 0.4


def test_a_stop_with_a_line_break_is_shown_escaped_and_sent(qtbot, scripted, scripted_engine):
    """A stop of "\\n" (from `ask --stop $'\\n'`) shows as the two characters \\n and is sent
    with the next turn from the window (it showed nothing and was dropped); typing \\n, \\t
    and \\\\ in the field means a line break, a tab and a backslash; every stop, whatever its
    characters (Qt's field turns some into line breaks or spaces), is stored back exactly."""
    panel = scripted.window.sampling
    stops = ["\n", "\\end", "\tEND\r\n", "a\u00a0b", "\u2028"]
    conversation = _conversation_with(scripted, stop=stops)
    field = panel.fields["stop"]
    assert field.toPlainText().split("\n") == ["\\n", "\\\\end", "\\tEND\\r\\n", "a\\u00a0b",
                                               "\\u2028"]
    assert "\\n" in field.placeholderText() and "\\n" in field.toolTip()
    scripted_engine.script(known_reply("Hi", "."))
    send(qtbot, scripted, "Hello")
    assert scripted_engine.requests[-1].stop == tuple(stops)
    panel.fields["temperature"].setValue(0.2)  # any edit saves every knob: the stops intact
    assert scripted.store.get_conversation(conversation.id).sampling["stop"] == stops

    field.clear()
    qtbot.keyClicks(field, "\\n\\nUser:")
    qtbot.keyClick(field, Qt.Key.Key_Return)
    qtbot.keyClicks(field, "tab\\there\\\\")
    assert scripted.store.get_conversation(conversation.id).sampling["stop"] == [
        "\n\nUser:", "tab\there\\"]
    panel.show()
    for dark in (False, True):
        _grab_in_palette(qtbot, panel, dark, "sampling_stop_escapes")


def _grab_in_palette(qtbot, widget, dark: bool, name: str) -> None:
    """``widget`` drawn in the light or dark palette, saved for a look (artifacts)."""
    from PySide6.QtWidgets import QApplication

    from tests.conftest import ARTIFACTS
    from ui.theme import apply_theme

    app = QApplication.instance()
    apply_theme(app, "dark" if dark else "light")
    try:
        qtbot.wait(50)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        widget.grab().save(str(ARTIFACTS / f"{name}_{'dark' if dark else 'light'}.png"))
    finally:
        apply_theme(app, "light")


def test_every_lora_adapter_of_a_conversation_is_kept_and_sent(qtbot, scripted,
                                                               scripted_engine, bundled_model,
                                                               tmp_path):
    """Two adapters attached from the CLI: the row shows the first with "+1 more" (both in
    its tooltip) and the window's next turn sends both (it sent only the first, and saved
    only it); the scale box edits the first, Change… replaces both with the one picked,
    Detach removes all."""
    from tests.lora_files import make_lora

    panel = scripted.window.sampling
    lora = panel.lora
    both = [{"name": "a.gguf", "path": str(tmp_path / "a.gguf"), "scale": 0.5},
            {"name": "b.gguf", "path": str(tmp_path / "b.gguf"), "scale": 0.2}]
    conversation = _conversation_with(scripted, lora=both)
    scripted_engine.script(known_reply("Hi", "."))
    send(qtbot, scripted, "Hello")
    assert [a.record() for a in scripted_engine.requests[-1].lora] == both
    panel.show()
    assert lora.label.text() == "LoRA: a.gguf" and lora.more.isVisible()
    assert lora.more.text() == "+1 more"
    assert "a.gguf × 0.5" in lora.label.toolTip() and "b.gguf × 0.2" in lora.label.toolTip()
    assert lora.scale.value() == 0.5 and "2 adapters" in lora.detach.toolTip()
    for dark in (False, True):
        _grab_in_palette(qtbot, panel, dark, "sampling_two_loras")

    lora.scale.setValue(0.75)  # the first one's scale; the second kept
    stored = scripted.store.get_conversation(conversation.id).sampling["lora"]
    assert stored == [dict(both[0], scale=0.75), both[1]]
    assert "a.gguf × 0.75" in lora.label.toolTip()

    adapter = make_lora(bundled_model, tmp_path / "c.gguf", seed=4)
    assert lora.pick(str(adapter))  # Change…: the one picked replaces both
    assert [a["name"] for a in scripted.store.get_conversation(conversation.id)
            .sampling["lora"]] == ["c.gguf"]
    assert not lora.more.isVisible()
    lora.load(both)
    lora.detach.click()
    assert lora.adapters() == () and not lora.more.isVisible()


def test_an_unticked_knob_says_what_applies_instead(qtbot, scripted, scripted_engine):
    """Unticked Top-k and Min-p say "default (40)" / "default (0.05)" on the local model, which
    applies llama.cpp's defaults there (they looked off: a greyed 0 and 0.00), and "not sent"
    when a cloud engine answers; the stored value stays unset (None), and a knob ticked starts
    from what applied."""
    from app.domain.sampling import LOCAL_DEFAULTS

    window, panel = scripted.window, scripted.window.sampling
    conversation = _conversation_with(scripted, top_k=None, min_p=None, seed=None)
    shown = {name: panel.fields[name].text() for name in ("top_k", "min_p", "seed",
                                                           "repeat_penalty")}
    assert shown == {"top_k": f"default ({LOCAL_DEFAULTS['top_k']})",
                     "min_p": f"default ({LOCAL_DEFAULTS['min_p']:g})", "seed": "random",
                     "repeat_penalty": "default (1)"}
    assert (shown["top_k"], shown["min_p"]) == ("default (40)", "default (0.05)")
    for dark in (False, True):
        _grab_in_palette(qtbot, panel, dark, "sampling_unticked_local")
    scripted_engine.script(known_reply("Hi", "."))
    send(qtbot, scripted, "Hello")
    sent = scripted_engine.requests[-1]
    assert (sent.top_k, sent.min_p, sent.seed) == (None, None, None)
    stored = scripted.store.get_conversation(conversation.id).sampling
    assert (stored["top_k"], stored["min_p"]) == (None, None)

    panel.use["top_k"].setChecked(True)  # ticked: from the default that applied, then kept
    assert panel.fields["top_k"].text() == "40"
    assert scripted.store.get_conversation(conversation.id).sampling["top_k"] == 40
    panel.fields["top_k"].setValue(0)  # 0 (no limit) is a value, not "default"
    assert panel.fields["top_k"].text() == "0" and panel.values()["top_k"] == 0
    panel.fields["top_k"].setValue(12)
    panel.use["top_k"].setChecked(False)
    assert panel.fields["top_k"].text() == "default (40)"
    assert scripted.store.get_conversation(conversation.id).sampling["top_k"] is None
    panel.use["top_k"].setChecked(True)
    assert panel.fields["top_k"].value() == 12  # its own value back
    panel.use["top_k"].setChecked(False)

    scripted.registry.add(ProviderConfig("far", "openai", "http://127.0.0.1:9/v1", "m"),
                          replace=True)
    window.target_picker.refresh("provider:far")
    assert panel.kind == "openai"
    assert {panel.fields[n].text() for n in ("top_k", "min_p", "seed")} == {"not sent"}
    for dark in (False, True):
        _grab_in_palette(qtbot, panel, dark, "sampling_unticked_cloud")
    assert panel.values()["seed"] is None and panel.values()["top_k"] is None


def test_the_panel_says_what_anthropic_gets_of_temperature_and_top_p(qtbot, scripted):
    """Anthropic takes a temperature of at most 1, and one of temperature and Top-p (Top-p
    only below 0.95): the panel greys the one not sent and says why, instead of showing both
    as sent (the reply's Details were the first place to learn it)."""
    panel = scripted.window.sampling
    temperature, top_p = panel.fields["temperature"], panel.fields["top_p"]
    panel.set_engine_kind("anthropic", "Anthropic")
    temperature.setValue(1.5)
    top_p.setValue(0.95)
    assert not panel.labels["top_p"].isEnabled() and panel.labels["temperature"].isEnabled()
    assert "at most 1: 1 is sent" in temperature.toolTip()
    assert "temperature instead" in top_p.toolTip()
    top_p.setValue(0.8)
    assert panel.labels["top_p"].isEnabled() and not panel.labels["temperature"].isEnabled()
    assert "Top-p instead of the temperature" in temperature.toolTip()
    panel.set_engine_kind("local", "the local model")
    assert panel.labels["top_p"].isEnabled() and panel.labels["temperature"].isEnabled()
    assert "Anthropic" not in temperature.toolTip()


def test_the_panel_greys_what_a_reasoning_model_is_not_sent(qtbot, scripted):
    """OpenAI's reasoning models (o3-mini here, the provider's default model) refuse
    temperature, top_p and the penalties: greyed, saying why; another model typed in the
    model box gets them back; a knob its server refused (learnt) is greyed too. The panel's
    knobs are not "given" on purpose, so what is grey is not sent."""
    from app.config import provider_facts

    window, panel = scripted.window, scripted.window.sampling
    held = ("temperature", "top_p", "presence_penalty", "frequency_penalty")
    scripted.registry.add(ProviderConfig("oai", "openai", "http://127.0.0.1:9/v1", "o3-mini"),
                          replace=True)
    window.target_picker.refresh("provider:oai")
    assert (panel.kind, panel.model) == ("openai", "o3-mini")
    for name in held:
        assert not panel.labels[name].isEnabled(), name
        assert "reasoning model" in panel.fields[name].toolTip()
    assert panel.labels["seed"].isEnabled() and panel.options().chosen == ()
    provider_facts.note_refused_param("http://127.0.0.1:9/v1", "gpt-4o-mini", "seed")
    window.model_picker.setEditText("gpt-4o-mini")
    assert panel.model == "gpt-4o-mini"
    assert all(panel.labels[name].isEnabled() for name in held)
    assert not panel.labels["seed"].isEnabled() and "refused" in panel.fields["seed"].toolTip()


def test_a_file_that_is_not_even_gguf_is_refused_in_a_few_plain_words(qtbot, scripted,
                                                                      tmp_path):
    """A JSON file picked as a LoRA adapter: one plain sentence about an adapter (it said
    "…is not a usable GGUF file: The model file … starts with b'{"ty', not b'GGUF'")."""
    lora = scripted.window.sampling.lora
    wrong = tmp_path / "schema.json"
    wrong.write_text('{"type": "object"}')
    assert not lora.pick(str(wrong))
    said = lora.error.text()
    assert said == ("schema.json cannot be used as a LoRA adapter: it is not a GGUF file (LoRA "
                    "adapters for llama.cpp are GGUF files).")


def test_a_line_break_stop_with_json_output_is_warned_of(qtbot, scripted):
    """JSON is laid out over lines: a stop of "\\n" cut every JSON reply short, and each was
    asked for again, with nothing said. The panel says so; removing the stop clears it."""
    panel = scripted.window.sampling
    panel.show()
    panel.fields["stop"].setPlainText("###\n\\n")
    assert not panel.error.isVisible()  # (no JSON output: a line break is a fine stop)
    panel.json_mode.setChecked(True)
    assert panel.error.isVisible() and "cuts JSON replies short" in panel.error.text()
    panel.fields["stop"].setPlainText("###")
    assert not panel.error.isVisible()


def test_applying_a_preset_keeps_the_stops_in_json_warning(qtbot, scripted):
    """A preset applied (or saved, renamed, deleted) cleared every message of the panel,
    the line-break-stop warning too, while the stop was still there with JSON output."""
    panel = scripted.window.sampling
    panel.show()
    panel.json_mode.setChecked(True)
    panel.fields["stop"].setPlainText("\\n")
    assert panel.error.isVisible()
    panel.apply_preset("Precise")  # (it keeps the stops: a preset sets knobs)
    assert panel.fields["stop"].toPlainText() == "\\n"
    assert panel.error.isVisible() and "cuts JSON replies short" in panel.error.text()


def test_the_stop_fields_placeholder_is_whole_at_the_panels_narrowest(qtbot, scripted):
    """In a small window the Stop sequences placeholder (three lines there) was cut through
    the middle of its last line: the field was 52 px whatever the font, and the placeholder's
    lines wrapped to three at the panel's narrowest. Each of its lines, wrapped at the field's
    narrowest width, fits the field's text area."""
    from PySide6.QtCore import QRect, Qt
    from PySide6.QtGui import QFontMetrics

    window = scripted.window
    panel = window.sampling
    field = panel.fields["stop"]
    window.resize(1380, 760)
    window.show()
    qtbot.waitExposed(window)
    narrowest = panel.minimumSizeHint().width()  # the dock's splitter dragged to its end
    window.resizeDocks([panel], [narrowest], Qt.Orientation.Horizontal)
    qtbot.waitUntil(lambda: panel.width() <= narrowest + 2)
    width = field.viewport().width() - 2 * int(field.document().documentMargin())
    metrics = QFontMetrics(field.font())
    needed = metrics.boundingRect(QRect(0, 0, width, 10_000), Qt.TextFlag.TextWordWrap,
                                  field.placeholderText()).height()
    assert needed <= field.viewport().height() - 2 * field.document().documentMargin() + 1
