"""Per-model load settings (engines/model_load.py): parsed and checked with one sentence each,
remembered per model name (a rename carries them, a removal drops them), and really applied
by llama.cpp when the model loads."""
from __future__ import annotations

import json
import shutil
import threading

import pytest

from app.config.settings import Settings
from app.domain.errors import UsageError
from app.domain.messages import ChatMessage, ChatRequest, Role, accumulate
from engines.llama_local import LoadSettings, LocalEngine
from engines.model_library import ModelLibrary
from engines.model_load import ModelLoadOptions, check_for_model, parse_value
from engines.registry import create_local_engine
from tests.cli.test_cli import assert_one_sentence, cli


def test_values_parse_and_bad_ones_say_what_is_wanted():
    assert parse_value("context", "2048") == 2048
    assert parse_value("gpu_layers", "auto") is None
    assert parse_value("flash_attn", "on") is True and parse_value("mmap", "off") is False
    assert parse_value("kv_type", "Q8_0") == "q8_0"
    assert parse_value("batch", "auto") == 128  # no auto: back to the default
    for key, value, says in (("context", "big", "whole number or auto"),
                             ("context", "10", "between 256 and"),
                             ("kv_type", "q2", "one of f16, q8_0, q4_0"),
                             ("mlock", "maybe", "on or off"),
                             ("speed", "1", "not a load setting")):
        with pytest.raises(UsageError, match=says):
            parse_value(key, value)
    with pytest.raises(UsageError, match="trained on 8,192 tokens"):
        check_for_model(ModelLoadOptions(context=9000), name="m", trained_context=8192,
                        layers=30)
    with pytest.raises(UsageError, match="has 30 layers"):
        check_for_model(ModelLoadOptions(gpu_layers=31), name="m", trained_context=8192,
                        layers=30)
    with pytest.raises(UsageError, match="needs flash attention"):
        check_for_model(ModelLoadOptions(kv_type="q4_0", flash_attn=False), name="m",
                        trained_context=None, layers=30)


def test_settings_are_remembered_per_model_and_follow_a_rename(tmp_path, bundled_model):
    library = ModelLibrary(tmp_path / "models", include_bundled=False)
    library.import_file(bundled_model, "copy", "small")
    library.load_settings.set("small", "context", 1024)
    library.load_settings.set("small", "kv_type", "q8_0")
    stored = json.loads((tmp_path / "models" / "load_settings.json").read_text())
    assert stored == {"small": {"context": 1024, "kv_type": "q8_0"}}  # only what differs
    reopened = ModelLibrary(tmp_path / "models", include_bundled=False)
    assert reopened.load_settings.get("small") == ModelLoadOptions(context=1024,
                                                                   kv_type="q8_0")
    entry = reopened.find("small")
    assert reopened.describe(entry, 4096)["context"] == 1024
    q8 = reopened.describe(entry, 4096)["memory_estimate_bytes"]
    reopened.load_settings.set("small", "kv_type", "f16")
    assert reopened.describe(entry, 4096)["memory_estimate_bytes"] > q8
    reopened.rename("small", "tiny")
    assert reopened.load_settings.get("tiny").context == 1024
    assert reopened.load_settings.get("small") == ModelLoadOptions()
    reopened.remove("tiny")
    assert reopened.load_settings.get("tiny") == ModelLoadOptions()


@pytest.mark.local_model
def test_llama_cpp_loads_with_the_settings_given(bundled_model):
    options = ModelLoadOptions(context=512, threads=1, batch=64, kv_type="q8_0", mmap=False,
                               mlock=False, gpu_layers=0)
    engine = LocalEngine(bundled_model, LoadSettings(options=options))
    try:
        engine.wait_ready(timeout=120)
        llm = engine.call_on_model_thread(lambda llm: (
            llm.n_ctx(), llm.context_params.n_threads, llm.context_params.n_batch,
            llm.context_params.type_k, llm.context_params.type_v,
            llm.context_params.flash_attn_type, llm.model_params.load_mode,
            llm.model_params.n_gpu_layers))
        assert llm == (512, 1, 64, 8, 8, 1, 0, 0)  # load_mode 0: read, not mapped
        assert engine.placement == "CPU, 1 thread" and engine.info.detail.endswith("512")
        reply = accumulate(engine.stream(ChatRequest(
            model="m", messages=(ChatMessage(Role.USER, "Hi"),), max_tokens=8,
            temperature=0.0), threading.Event()))
        assert reply.finish is not None and reply.finish.error is None
        assert reply.usage is not None and reply.usage.completion_tokens > 0
    finally:
        engine.close()


@pytest.mark.local_model
def test_a_model_from_a_shared_folder_is_read_into_memory_and_survives_its_folder_going(
        tmp_path, bundled_model):
    share = tmp_path / "usb"
    share.mkdir()
    shutil.copy(bundled_model, share / "field.gguf")
    settings = Settings()
    settings.set("shared_model_folders", [str(share)])
    settings.save()  # the CLI below reads it too
    engine = create_local_engine(settings, "field")
    try:
        engine.wait_ready(timeout=120)
        assert engine.use_mmap is False  # auto: a removable folder is not mapped
        shutil.rmtree(share)  # the stick is pulled
        reply = accumulate(engine.stream(ChatRequest(
            model="m", messages=(ChatMessage(Role.USER, "Hi"),), max_tokens=6,
            temperature=0.0), threading.Event()))
        assert reply.finish is not None and reply.finish.error is None  # still answering
    finally:
        engine.close()
    library = ModelLibrary.from_settings(settings)
    assert [e.name for e in library.entries() if e.source == "shared"] == []
    assert any("cannot be reached" in p for p in library.problems)
    proc = cli("ask", "Hi", "--model", "field")
    assert proc.returncode != 0 and "no model called 'field'" in assert_one_sentence(
        proc.stderr)


def test_models_set_cli(outpost_home):
    name = "SmolLM2-135M-Instruct.Q4_1"
    proc = cli("models", "set", name, "context", "2048", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["load_settings"]["context"] == 2048
    proc = cli("models", "set", name, "gpu_layers", "99")
    assert proc.returncode == 2 and "has 30 layers" in assert_one_sentence(proc.stderr)
    proc = cli("models", "info", name)
    assert "context 2048, gpu_layers auto" in proc.stdout
    proc = cli("models", "set", name, "context", "auto")
    assert proc.returncode == 0 and "context = auto" in proc.stdout


def test_lora_files_in_the_models_folder_are_listed_apart(tmp_path, bundled_model):
    from tests.lora_files import make_lora

    library = ModelLibrary(tmp_path / "models", include_bundled=False)
    (tmp_path / "models").mkdir()
    make_lora(bundled_model, tmp_path / "models" / "style.gguf", layers=(1,))
    assert library.entries() == []
    assert [a.name for a in library.adapters] == ["style"]
    assert library.describe(library.adapters[0], 4096)["kind"] == "adapter"


@pytest.mark.local_model
def test_a_window_too_small_says_which_setting_made_it_so(bundled_model):
    """A model's own context load setting is what to raise when it set the window (it said
    "raise the context_cap setting", which would change nothing)."""
    own = LocalEngine(bundled_model, LoadSettings(options=ModelLoadOptions(context=300)))
    capped = LocalEngine(bundled_model, LoadSettings(context_cap=1024))
    try:
        assert own.more_room.startswith(f"raise {bundled_model.name}'s context load setting "
                                        "(the window is 300 tokens; it was trained on 8,192)")
        assert "context_cap" not in own.more_room
        assert capped.more_room == (f"raise the context_cap setting (the window is 1,024 "
                                    f"tokens; {bundled_model.name} was trained on 8,192)")
    finally:
        own.close()
        capped.close()
