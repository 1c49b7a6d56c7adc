"""Switching the local model in the window: the choice becomes the ``model_path`` setting only
once that model has loaded (a file that is refused or fails leaves the setting, so the next
start and ``outpost ask`` go on with the model that works)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.config.settings import Settings
from app.domain.errors import ModelInvalid, ModelLoadFailed
from tests.support import ScriptedEngine, grab_in_palette

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

