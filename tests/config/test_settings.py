"""Settings: schema defaults, atomic save/load, validation on set, lenient load of bad files."""
from __future__ import annotations

import json
import math

import pytest

from app.config import paths
from app.config.settings import SCHEMA, SETTINGS_VERSION, Settings
from app.domain.errors import UsageError

DEFAULTS = {
    "model_path": "", "models_dir": "", "shared_model_folders": [], "context_cap": 4096, "kv_cache_max_mb": 2048, "n_threads": 0, "gpu_offload": True,
    "reproducible_seeds": True,
    "system_prompt": "You are a helpful assistant.", "temperature": 0.7, "top_p": 0.95,
    "max_tokens": 512, "user_id": "", "last_profile": "", "key_fallback": "refuse", "chat_target": "local",
    "first_token_timeout_s": 30.0, "idle_timeout_s": 60.0,
    "default_route": "auto", "offline_mode": False, "hedge_after_s": 2.5,
    "send_when_online": False, "rate_limit_wait": True, "theme": "system",
}


def test_defaults_when_there_is_no_file(outpost_home):
    settings = Settings()
    assert settings.as_dict() == DEFAULTS
    assert settings.load_warnings == []
    assert settings.path == outpost_home / "config" / "settings.json"
    assert not settings.path.exists()


def test_every_option_is_documented_and_its_default_is_valid():
    for option in SCHEMA:
        assert option.description.strip(), option.name
        assert isinstance(option.default, option.type), option.name
        if option.minimum is not None:
            assert option.minimum <= option.default <= option.maximum, option.name


def test_save_and_load_roundtrip(tmp_path):
    path = tmp_path / "cfg" / "settings.json"
    settings = Settings(path)
    settings.set("temperature", 0.2)
    settings.set("max_tokens", 64)
    settings.set("gpu_offload", False)
    settings.set("system_prompt", "Be brief. Ünïcödé ✓")
    settings.set("context_cap", 512)
    settings.save()

    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["version"] == SETTINGS_VERSION
    assert data["values"]["temperature"] == 0.2

    again = Settings(path)
    assert again.load_warnings == []
    assert again.as_dict() == {**DEFAULTS, "temperature": 0.2, "max_tokens": 64,
                               "gpu_offload": False, "system_prompt": "Be brief. Ünïcödé ✓",
                               "context_cap": 512}
    # the atomic write leaves no temp files behind
    assert sorted(p.name for p in path.parent.iterdir()) == ["settings.json"]


def test_default_path_is_under_outpost_home(outpost_home):
    settings = Settings()
    settings.set("top_p", 0.5)
    settings.save()
    assert paths.settings_path().exists()
    assert Settings()["top_p"] == 0.5


def test_an_int_is_accepted_for_a_float_option(tmp_path):
    settings = Settings(tmp_path / "s.json")
    settings.set("temperature", 1)
    assert settings["temperature"] == 1.0 and isinstance(settings["temperature"], float)


@pytest.mark.parametrize("name, value", [
    ("temperature", 2.5),
    ("temperature", -0.1),
    ("temperature", "hot"),
    ("top_p", 0.0),
    ("max_tokens", 0),
    ("max_tokens", 1.5),
    ("max_tokens", True),
    ("context_cap", 100),
    ("n_threads", -1),
    ("gpu_offload", 1),
    ("gpu_offload", "yes"),
    ("model_path", 3),
])
def test_invalid_values_are_rejected_with_usage_error(tmp_path, name, value):
    settings = Settings(tmp_path / "s.json")
    before = settings[name]
    with pytest.raises(UsageError) as info:
        settings.set(name, value)
    assert name in str(info.value)
    assert repr(value) in str(info.value)
    assert settings[name] == before


def test_unknown_setting_is_rejected(tmp_path):
    with pytest.raises(UsageError, match="no setting called 'colour'"):
        Settings(tmp_path / "s.json").set("colour", "blue")


def test_invalid_file_values_fall_back_with_a_warning(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"version": 1, "values": {
        "temperature": 9, "max_tokens": "many", "gpu_offload": "no", "top_p": 0.3,
        "system_prompt": "Kept.", "some_future_option": 1}}), encoding="utf-8")
    settings = Settings(path)
    assert settings["temperature"] == 0.7
    assert settings["max_tokens"] == 512
    assert settings["gpu_offload"] is True
    # the valid ones survive, the unknown one is ignored silently
    assert settings["top_p"] == 0.3
    assert settings["system_prompt"] == "Kept."
    assert len(settings.load_warnings) == 3
    joined = " ".join(settings.load_warnings)
    for name in ("temperature", "max_tokens", "gpu_offload"):
        assert name in joined
    assert "some_future_option" not in joined


def test_unreadable_file_gives_defaults_and_a_warning(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text("{ this is not json", encoding="utf-8")
    settings = Settings(path)
    assert settings.as_dict() == DEFAULTS
    assert len(settings.load_warnings) == 1
    assert str(path) in settings.load_warnings[0]


def test_nan_in_the_file_falls_back_with_a_warning(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text('{"version": 1, "values": {"temperature": NaN}}', encoding="utf-8")
    settings = Settings(path)
    assert not math.isnan(settings["temperature"])
    assert settings.load_warnings


def test_nan_is_rejected_by_set(tmp_path):
    with pytest.raises(UsageError):
        Settings(tmp_path / "s.json").set("temperature", math.nan)


@pytest.mark.parametrize("content", ['[1, 2]', 'null', '"text"', '{"values": [1]}'])
def test_settings_file_of_the_wrong_shape_falls_back_with_a_warning(tmp_path, content):
    path = tmp_path / "settings.json"
    path.write_text(content, encoding="utf-8")
    settings = Settings(path)
    assert settings.as_dict() == DEFAULTS
    assert settings.load_warnings


def test_choice_options_accept_only_their_choices(outpost_home):
    settings = Settings()
    settings.set("key_fallback", "memory")
    assert settings["key_fallback"] == "memory"
    with pytest.raises(UsageError):
        settings.set("key_fallback", "plaintext-anywhere")
