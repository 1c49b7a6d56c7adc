"""The schema as the Settings dialog reads it: each option's group and what changing it needs
(checked against where the code reads it), the rule a bad value is told, and no secret."""
from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from app.config.settings import GROUPS, SCHEMA, TAKES_EFFECT, Option, Settings, option_named
from app.domain.errors import UsageError


class ReadLog(Settings):
    """Real settings that remember which options were read."""

    def __init__(self, path):
        super().__init__(path)
        self.read: set[str] = set()

    def __getitem__(self, name):
        self.read.add(name)
        return super().__getitem__(name)


def test_every_option_has_a_known_group_and_effect():
    for option in SCHEMA:
        assert option.group in (*GROUPS, ""), option.name
        assert option.takes_effect in TAKES_EFFECT, option.name
    assert {o.group for o in SCHEMA} == {*GROUPS, ""}  # no empty page
    assert len({o.name for o in SCHEMA}) == len(SCHEMA)


def test_only_what_the_window_keeps_by_itself_is_hidden():
    assert [o.name for o in SCHEMA if not o.group] == ["last_profile", "chat_target"]


def test_no_option_holds_a_secret():
    """API keys live in the OS keychain (app.config.secrets); ``key_fallback`` only says where
    they go when there is none."""
    secret = re.compile(r"api_?key|secret|password|passphrase|\bpin\b|credential", re.I)
    for option in SCHEMA:
        assert not secret.search(option.name) and not secret.search(option.title), option.name
        assert not (isinstance(option.default, str) and option.default.startswith("sk-"))
    assert [o.name for o in SCHEMA if "key" in o.name] == ["key_fallback"]
    assert option_named("key_fallback").choices == ("refuse", "memory", "file")


def test_what_a_model_load_reads_takes_a_reload(tmp_path):
    from engines.model_library import ModelLibrary
    from engines.registry import local_load_settings

    settings = ReadLog(tmp_path / "settings.json")
    local_load_settings(settings, ModelLibrary(tmp_path / "models"),
                        SimpleNamespace(name="m", source="models"))
    read = settings.read | {"model_path"}  # create_local_engine: which model to load
    assert read == {o.name for o in SCHEMA if o.takes_effect == "reload"}


def test_what_is_built_once_at_start_takes_a_restart(tmp_path):
    from app.config.settings import default_user_id
    from engines.model_library import ModelLibrary
    from engines.registry import cloud_timeouts

    settings = ReadLog(tmp_path / "settings.json")
    ModelLibrary.from_settings(settings)  # ui/app.py: the library, the Models dialog's
    cloud_timeouts(settings)  # ui/app.py: the cloud engines' pool
    default_user_id(settings)  # ui/app.py: the default profile
    read = settings.read | {"key_fallback"}  # ui/app.py: KeyStore(fallback=...)
    assert read == {o.name for o in SCHEMA if o.takes_effect == "restart"}


@pytest.mark.parametrize("name, value, rule", [
    ("context_cap", 99, "must be a whole number from 256 to 1,048,576; got 99."),
    ("top_p", 0.0, "must be a number greater than 0 and at most 1; got 0.0."),
    ("hedge_after_s", -1.0, "must be a number from 0 to 600; got -1.0."),
    ("default_route", "fast", "must be one of auto, local, cloud; got 'fast'."),
    ("gpu_offload", "yes", "must be true or false; got 'yes'."),
    ("shared_model_folders", "/mnt", "must be a list of text; got '/mnt'."),
])
def test_check_says_the_rule_and_keeps_nothing(tmp_path, name, value, rule):
    settings = Settings(tmp_path / "settings.json")
    with pytest.raises(UsageError) as info:
        Settings.check(name, value)
    assert str(info.value) == f"Setting {name} {rule}"
    with pytest.raises(UsageError, match=re.escape(rule)):
        settings.set(name, value)
    assert settings[name] == option_named(name).default
    assert Settings.check("temperature", 1) == 1.0  # as set would keep it


def test_a_sampling_default_takes_what_its_knob_takes():
    """Settings' Top-p stopped at 0.01 while the knob (the Sampling panel, --top-p) takes
    anything greater than 0: each option that is a knob's default accepts and refuses the same
    values as the knob, at both ends of its range, and says an open end as the knob does."""
    from app.domain import sampling

    knobs = [o for o in SCHEMA if o.name in sampling.BY_NAME]
    assert {o.name for o in knobs} == {"temperature", "top_p", "max_tokens"}
    for option in knobs:
        knob = sampling.BY_NAME[option.name]
        assert knob.low is not None and knob.high is not None
        assert option.span.startswith("greater than") == knob.low_open, option.name
        step = 1 if knob.kind is int else 1e-6
        for value in (knob.low - step, knob.low, knob.low + step, knob.low + 0.005 * step,
                      knob.high, knob.high + step):
            value = knob.kind(value)
            try:
                sampling.check(option.name, value)
                knob_takes = True
            except UsageError:
                knob_takes = False
            try:
                Settings.check(option.name, value)
                setting_takes = True
            except UsageError:
                setting_takes = False
            assert setting_takes == knob_takes, (option.name, value)
    assert Settings.check("top_p", 0.005) == 0.005


def test_titles():
    assert option_named("context_cap").title == "Context cap (tokens)"
    assert Option("beta_budget", int, 1, "x").title == "Beta budget"  # no label: from the name
    with pytest.raises(UsageError, match="no setting called 'colour'"):
        option_named("colour")
