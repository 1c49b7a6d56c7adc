"""Switching the local model in the window: the choice becomes the ``model_path`` setting only
once that model has loaded (a file that is refused or fails leaves the setting, so the next
start and ``outpost ask`` go on with the model that works), and the token meter counts the
draft again with whichever model or cloud target now answers."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.config.providers import ProviderConfig
from app.config.settings import Settings
from app.domain.errors import ModelInvalid, ModelLoadFailed
from app.domain.messages import Role
from tests.fault_server import refused_url
from tests.support import ScriptedEngine, grab_in_palette
from ui.token_meter import DEBOUNCE_MS, TokenMeter

pytestmark = pytest.mark.gui

BUNDLED = "SmolLM2-135M-Instruct.Q4_1.gguf"


class Counted(ScriptedEngine):
    """A scripted model with a tokenizer of its own: every draft is ``tokens`` prompt tokens."""

    def __init__(self, tokens: int | None, **kwargs):
        super().__init__(**kwargs)
        self.tokens = tokens

    def count_prompt(self, messages) -> tuple[int, bool]:
        return (self.tokens, True) if self.tokens is not None else super().count_prompt(messages)


class Models:
    """``OutpostApp``'s engine_factory: a new scripted engine for each load, named after its
    file. Paths in ``refused`` are refused as the GGUF header reader would (the factory raises);
    those in ``slow`` "load" until the test ends it (``made[-1].finish_loading()`` or
    ``fail_loading``); ``tokens`` gives a path's prompt count."""

    def __init__(self, refused=(), slow=(), tokens=None):
        self.refused, self.slow, self.tokens = set(refused), set(slow), tokens or {}
        self.made: list[Counted] = []
        self.paths: list[str | None] = []

    def __call__(self, settings, model_path=None, on_attempt=None) -> Counted:
        self.paths.append(model_path)
        if model_path in self.refused:
            raise ModelInvalid(f"The model file {model_path} is not a GGUF file (it starts "
                               "with b'{\"mo', not b'GGUF').", model_path)
        engine = Counted(self.tokens.get(model_path), model=Path(model_path or BUNDLED).name,
                         ready=model_path not in self.slow)
        engine.factory(settings, model_path, on_attempt)  # the usage ledger, as the app wires it
        self.made.append(engine)
        return engine


def started(qtbot, outpost_app, models: Models):
    app = outpost_app(max_tokens=12, engine_factory=models)
    with qtbot.waitSignal(app.loader.model_ready, timeout=10000):
        app.start()
    return app


def saved_model() -> str:
    """``model_path`` as the settings file holds it (what the next start and the CLI read)."""
    return Settings()["model_path"]


def test_a_model_becomes_the_setting_only_once_it_has_loaded(qtbot, outpost_app):
    models = Models(refused={"/m/notes.gguf"}, slow={"/m/broken.gguf", "/m/second.gguf"})
    app = started(qtbot, outpost_app, models)
    window, loader = app.window, app.loader
    first = loader.active
    menu, state = window.model_menu, window.model_status.state_label

    # refused up front (not GGUF, a LoRA adapter): nothing changes
    menu.choose_model("/m/notes.gguf")
    assert window.banner.isVisible() and "/m/notes.gguf" in window.banner.label.text()
    assert state.text() == f"Still using {BUNDLED}"
    assert saved_model() == "" and app.settings["model_path"] == ""

    # the header was fine, llama.cpp refuses the file while it loads
    with qtbot.waitSignal(loader.loading_started, timeout=5000):
        menu.choose_model("/m/broken.gguf")
    assert saved_model() == ""  # not while it loads
    with qtbot.waitSignal(loader.load_failed, timeout=5000):
        models.made[-1].fail_loading(ModelLoadFailed(
            "llama.cpp could not load the model file /m/broken.gguf: Failed to load model.",
            "/m/broken.gguf"))
    assert "could not load the model file /m/broken.gguf" in window.banner.label.text()
    assert state.text() == f"Still using {BUNDLED}" and loader.active is first
    assert saved_model() == "" and app.settings["model_path"] == ""

    # a good one: remembered when it is ready, not before; new load settings given meanwhile
    # load that one again (not the setting's, which is still the old model)
    with qtbot.waitSignal(loader.loading_started, timeout=5000):
        menu.choose_model("/m/second.gguf")
    window.apply_settings(["context_cap"])
    assert models.paths[-2:] == ["/m/second.gguf", "/m/second.gguf"]
    assert saved_model() == ""
    with qtbot.waitSignal(loader.model_ready, timeout=5000):
        models.made[-1].finish_loading()
    assert saved_model() == "/m/second.gguf" and loader.active is models.made[-1]
    assert window.model_label.text() == "Local model: second.gguf"

    # the bundled model (empty): asked for as such, not as "whatever the setting says"
    with qtbot.waitSignal(loader.model_ready, timeout=5000):
        window.bundled_model_action.trigger()
    assert models.paths[-1] == "" and saved_model() == ""


@pytest.mark.local_model
@pytest.mark.parametrize("kind", ["adapter", "json", "unknown-architecture"])
def test_a_file_that_is_no_usable_model_never_becomes_the_setting(
        qtbot, outpost, tmp_path, bundled_model, kind, artifacts_dir):
    """The real model and real bad files: a LoRA adapter and a JSON file (both refused by the
    header reader, at once) and a well-formed model of an architecture llama.cpp does not know
    (refused by llama.cpp, in the background)."""
    window = outpost.window
    bad = tmp_path / "a.gguf"
    if kind == "adapter":
        from tests.lora_files import make_lora  # deferred: needs the gguf package

        make_lora(bundled_model, bad, layers=(0,))
        words = "is a LoRA adapter (its GGUF header says general.type = adapter), not a model"
    elif kind == "json":
        bad.write_text(json.dumps({"model": "not one"}))
        words = "is not a GGUF file"
    else:
        data = bytearray(bundled_model.read_bytes())
        value = data.index(b"llama", data.index(b"general.architecture"))
        data[value:value + 5] = b"zzzzz"
        bad.write_bytes(bytes(data))
        words = "llama.cpp could not load the model file"
    with qtbot.waitSignal(outpost.loader.load_failed, timeout=60000):
        window.model_menu.choose_model(str(bad))
    assert window.banner.isVisible()
    assert str(bad) in window.banner.label.text() and words in window.banner.label.text()
    assert window.model_status.state_label.text() == f"Still using {BUNDLED}"
    assert outpost.loader.active.info.model == BUNDLED and outpost.loader.pending is None
    assert saved_model() == "" and outpost.settings["model_path"] == ""
    if kind == "adapter":
        window.resize(1000, 700)
        for theme in ("light", "dark"):
            grab_in_palette(qtbot, window.banner,
                            artifacts_dir / f"banner-adapter-as-model-{theme}.png", theme)


def test_the_meter_counts_again_with_the_model_switched_to(qtbot, outpost_app):
    """"Tell me a joke." is 25 tokens to the model loaded, 20 to the one chosen: once that one
    is ready the meter says 20 (the draft was not touched)."""
    models = Models(slow={"gemma.gguf"}, tokens={None: 25, "gemma.gguf": 20})
    app = started(qtbot, outpost_app, models)
    meter = app.window.meter
    qtbot.keyClicks(app.window.composer.edit, "Tell me a joke.")
    qtbot.waitUntil(lambda: bool(meter.last) and meter.last["tokens"] == 25, timeout=5000)
    with qtbot.waitSignal(app.loader.loading_started, timeout=5000):
        app.window.model_menu.choose_model("gemma.gguf")
    with qtbot.waitSignal(app.loader.model_ready, timeout=5000):
        models.made[-1].finish_loading()
    qtbot.waitUntil(lambda: meter.last["tokens"] == 20, timeout=5000)
    assert meter.label.text().startswith("20 prompt tokens · 32 / 8,192 context")


def test_the_meter_counts_again_when_the_cloud_model_changes(qtbot, outpost_app):
    """A provider's model the app has no tokenizer for is estimated ("~"); typing gpt-4o there
    counts the same draft exactly, with gpt-4o's tokenizer."""
    app = started(qtbot, outpost_app, Models())
    window, meter = app.window, app.window.meter
    with refused_url() as url:  # nothing is sent: counting needs no connection
        app.registry.add(ProviderConfig("here", "openai", url + "/v1", "house-model"))
        window.target_picker.refresh("provider:here")
        qtbot.keyClicks(window.composer.edit, "Tell me a joke.")
        qtbot.waitUntil(lambda: bool(meter.last), timeout=5000)
        assert not meter.last["exact"] and meter.label.text().startswith("~")
        window.model_picker.setEditText("gpt-4o")
        qtbot.waitUntil(lambda: meter.last["exact"], timeout=5000)
    assert not meter.label.text().startswith("~")


def test_a_count_that_failed_still_gives_way_to_the_count_asked_for_meanwhile(qtbot):
    """The old model is closed as soon as the new one is ready: a count still running on it
    fails. The recount asked for meanwhile (the new model's) must follow all the same."""
    class HeldTasks:
        """Runs nothing by itself: the test ends each job as it likes."""

        def __init__(self):
            self.held: list = []

        def run_in_background(self, job, on_done, on_error) -> None:
            self.held.append((job, on_done, on_error))

    tasks = HeldTasks()
    meter = TokenMeter(tasks, lambda draft: lambda: None)
    qtbot.addWidget(meter)
    meter.draft_changed("Tell me a joke.")
    qtbot.waitUntil(lambda: len(tasks.held) == 1, timeout=5000)
    meter.refresh()  # the new model is ready, while the first count runs on the old one
    qtbot.wait(2 * DEBOUNCE_MS)
    assert len(tasks.held) == 1  # one count at a time
    tasks.held[0][2](RuntimeError("the local engine was closed"))
    assert len(tasks.held) == 2  # counted again
    tasks.held[1][1]({"tokens": 20, "exact": True, "window": None, "max_tokens": 12,
                      "cost": None})
    assert meter.label.text() == "20 prompt tokens"


def test_a_chat_that_remembers_a_local_model_loads_it_and_keeps_it(qtbot, outpost_app):
    """`outpost ask … --model gem` then the chat opened in the window: the window answered with
    the model it had loaded, said nothing, and stored no model, so the chat (and the next `ask
    --conversation`) went to the bundled model. Now opening it loads the remembered model, as
    choosing it does; one that cannot be loaded is named with the model answering instead, and
    stays remembered until the user picks another model in that chat."""
    from tests.support import reply, send

    models = Models(refused={"/m/gone.gguf"})
    app = started(qtbot, outpost_app, models)
    window, loader, store = app.window, app.loader, app.store

    def remembering(model: str) -> str:
        chat = store.create_conversation("Paris is")
        store.add_message(chat.id, Role.USER, "Paris is")
        store.set_target(chat.id, "local", model)
        return chat.id

    def answered(text: str) -> None:
        (loader.pending or loader.active).script(reply("ok"))
        send(qtbot, app, text)

    gem, gone = remembering("/m/gem.gguf"), remembering("/m/gone.gguf")
    with qtbot.waitSignal(loader.model_ready, timeout=10000):
        window._on_conversation_selected(gem)
    assert models.paths[-1] == "/m/gem.gguf" and loader.active.info.model == "gem.gguf"
    assert saved_model() == "/m/gem.gguf"  # as choosing it does
    answered("Berlin is")
    assert store.get_conversation(gem).target_model == "/m/gem.gguf"
    loads = len(models.paths)
    window._on_conversation_selected(gem)  # already the model in use: not loaded again
    assert len(models.paths) == loads

    window._on_conversation_selected(gone)
    assert "This chat remembers the local model /m/gone.gguf, which cannot be loaded " \
           "(The model file /m/gone.gguf is not a GGUF file" in window.banner.label.text()
    assert window.banner.label.text().endswith(": gem.gguf answers it instead.")
    answered("Rome is")  # gem answers; the chat still remembers its own model
    assert (store.get_conversation(gone).target, store.get_conversation(gone).target_model) \
        == ("local", "/m/gone.gguf")

    with qtbot.waitSignal(loader.model_ready, timeout=10000):
        window.model_menu.choose_model("/m/other.gguf")  # the user picks another: remembered
    answered("Madrid is")
    assert store.get_conversation(gone).target_model == "/m/other.gguf"

    window._on_new_chat()  # a new chat remembers the model in use (for `ask --conversation`)
    answered("Lisbon is")
    assert store.get_conversation(window.controller.conversation_id).target_model == \
        "/m/other.gguf"
