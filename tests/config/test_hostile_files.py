"""Every file Outpost reads, fed wrong shapes (issue 17): a list where a table belongs, a table
where a list belongs, text where a number belongs, NaN, infinities, huge numbers, a lone
surrogate, invalid UTF-8, nesting 100,000 deep and 50 MB. Each gives one sentence naming the
file (a warning and the defaults for settings, a refusal with exit 2 for the rest, nothing at
all for the provider-facts cache), never a traceback, and the file is never rewritten: its folder
holds the same bytes afterwards, and no temporary or set-aside file.

How each file is read is the real path the user meets: the CLI in-process for settings,
providers, presets, the policy and the quotas; the reader itself for the rest.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import pytest

from app import cli
from app.config.file_schema import MAX_CONFIG_BYTES, ConfigFileInvalid
from app.config.settings import Settings
from app.domain.errors import OutpostError

DEEP = 100_000
BIG = 50 * 1024 * 1024


def run_cli(*argv: str) -> Callable[[pytest.CaptureFixture], tuple[int, str]]:
    def run(capsys) -> tuple[int, str]:
        code = cli.main(list(argv))
        return code, capsys.readouterr().err
    return run


def context_overrides(capsys) -> tuple[int, str]:
    from app.accounting.metering import CloudCounter

    try:
        CloudCounter("openai", "gpt-4o").context_window
    except OutpostError as exc:
        return exc.exit_code, f"outpost: {exc}\n"
    return 0, ""


def load_settings(capsys) -> tuple[int, str]:
    from engines.model_load import LoadSettingsFile
    from engines.model_library import default_models_dir

    try:
        LoadSettingsFile(default_models_dir()).get("m")
    except OutpostError as exc:
        return exc.exit_code, f"outpost: {exc}\n"
    return 0, ""


def references(capsys) -> tuple[int, str]:
    from engines.model_library import ModelLibrary

    library = ModelLibrary(include_bundled=False)
    assert library.entries() == []
    return 0, "".join(f"outpost: warning: {problem}\n" for problem in library.problems)


def provider_facts(capsys) -> tuple[int, str]:
    from app.config.provider_facts import refuses_json_schema

    assert refuses_json_schema("http://x", "m") is False  # a cache: damaged means unknown
    return 0, ""


@dataclass(frozen=True)
class Target:
    """One file: where it lives under OUTPOST_HOME, its format, where a value of each kind
    goes in it (``%s``), how Outpost reads it, and what a wrong shape gives: "warn" (exit 0,
    a warning), "refuse" (exit 2, an error) or "ignore" (nothing: a cache)."""

    name: str
    where: str
    format: str
    slots: dict[str, str]
    read: Callable
    outcome: str
    valid: tuple[str, ...] = ()  # shapes that mean something here (null: "auto", "unset")


TARGETS = [
    Target("settings", "config/settings.json", "json", {
        "table": '{"version": 1, "values": %s}',
        "list": '{"version": 1, "values": {"shared_model_folders": %s}}',
        "number": '{"version": 1, "values": {"temperature": %s}}',
        "text": '{"version": 1, "values": {"system_prompt": %s}}'},
        run_cli("profile", "whoami"), "warn"),
    Target("providers", "config/providers.json", "json", {
        "table": '{"version": 1, "providers": [%s]}',
        "list": '{"version": 1, "providers": %s}',
        "text": '{"version": 1, "providers": [{"name": %s, "kind": "openai", '
                '"base_url": "http://localhost:1/v1"}]}'},
        run_cli("providers", "list"), "refuse"),
    Target("presets", "config/presets.json", "json", {
        "table": '{"presets": {"mine": %s}}',
        "list": '{"presets": {"mine": {"stop": %s}}}',
        "number": '{"presets": {"mine": {"temperature": %s}}}',
        "text": '{"presets": {"mine": {"lora": [{"path": %s}]}}}'},
        run_cli("preset", "list"), "refuse", valid=("null-for-number",)),
    Target("policy", "config/policy.toml", "toml", {
        "table": "default = %s",
        "list": "[default]\nallowed_routes = %s",
        "number": "[default]\ncloud_cost_per_month = %s",
        "text": "[default]\nallowed_routes = [%s]"},
        run_cli("quota", "show"), "refuse"),
    Target("quotas", "config/quotas.json", "json", {
        "table": '{"profiles": {"ana": %s}}',
        "list": '{"default": {"allowed_routes": %s}}',
        "number": '{"default": {"requests_per_minute": %s}}',
        "text": '{"default": {"allowed_routes": [%s]}}'},
        run_cli("quota", "show"), "refuse"),
    Target("context-windows", "config/context_windows.json", "json", {
        "table": "%s", "number": '{"gpt-4o": %s}', "text": "{%s: 1000}"},
        context_overrides, "refuse"),
    Target("load-settings", "data/models/load_settings.json", "json", {
        "table": '{"m": %s}', "number": '{"m": {"context": %s}}',
        "text": '{"m": {"kv_type": %s}}'},
        load_settings, "refuse", valid=("null-for-number",)),
    Target("references", "data/models/references.json", "json", {
        "table": "%s", "list": '{"paths": %s}', "text": '{"paths": [%s]}'},
        references, "warn"),
    Target("provider-facts", "data/provider_facts.json", "json", {
        "table": '{"http://x|m": %s}', "number": '{"http://x|m": {"refuses_json_schema": %s}}'},
        provider_facts, "ignore"),
]

# (id, slot, JSON literal, TOML literal); None: the format has no such value
SLOT_SHAPES = [
    ("list-for-table", "table", "[1, 2]", "[1, 2]"),
    ("table-for-list", "list", '{"a": 1}', "{ a = 1 }"),
    ("text-for-number", "number", '"ten"', '"ten"'),
    ("null-for-number", "number", "null", None),
    ("nan", "number", "NaN", "nan"),
    ("infinity", "number", "Infinity", "inf"),
    ("minus-infinity", "number", "-Infinity", "-inf"),
    ("huge-float", "number", "1e400", "1e400"),
    ("huge-whole-number", "number", "1" + "0" * 30, "1" + "0" * 30),
    ("400-digit-number", "number", "1" + "0" * 400, "1" + "0" * 400),
    ("thousands-of-digits", "number", "9" * 5000, "9" * 5000),
    ("number-for-text", "text", "12", "12"),
    ("lone-surrogate", "text", '"\\ud800"', '"\\ud800"'),
]
# (id, JSON bytes, TOML bytes)
FILE_SHAPES = [
    ("top-level-list", b"[1, 2]", None),
    ("top-level-text", b'"settings"', None),
    ("not-json-or-toml", b"{ this is = not [", b"{ this is = not ["),
    ("not-utf8", b'{"a": "\xff\xfe"}', b'a = "\xff\xfe"'),
    ("nested-100000-deep", b"[" * DEEP + b"]" * DEEP, b"a = " + b"[" * DEEP + b"]" * DEEP),
    ("nested-100000-deep-objects", b'{"a": ' * DEEP + b"1" + b"}" * DEEP,
     b"a = " + b"{ a = " * DEEP + b"1" + b" }" * DEEP),
    ("50-mb", None, None),  # a valid empty document padded with 50 MB of white space
]


def cases():
    for target in TARGETS:
        for shape, slot, as_json, as_toml in SLOT_SHAPES:
            literal = as_toml if target.format == "toml" else as_json
            if slot in target.slots and literal is not None:
                content = (target.slots[slot] % literal).encode("utf-8")
                yield pytest.param(target, shape, content, id=f"{target.name}-{shape}")
        for shape, as_json, as_toml in FILE_SHAPES:
            content = as_toml if target.format == "toml" else as_json
            if shape == "50-mb" or content is not None:
                yield pytest.param(target, shape, content, id=f"{target.name}-{shape}")


def snapshot(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()
            if p.is_file()}


@pytest.mark.parametrize("target, shape, content", list(cases()))
def test_a_wrong_shape_gives_one_sentence_and_the_file_is_kept(outpost_home, capsys, target,
                                                               shape, content):
    path = outpost_home / target.where
    path.parent.mkdir(parents=True, exist_ok=True)
    if content is None:  # 50 MB: valid, but far more than a config file ever holds
        with path.open("wb") as out:
            out.write(b"{" if target.format == "json" else b"#")
            out.write(b" " * BIG)
            out.write(b"}\n" if target.format == "json" else b"\n")
    else:
        path.write_bytes(content)
    before = snapshot(path.parent)

    code, err = target.read(capsys)  # any exception that is not Outpost's fails the test

    assert snapshot(path.parent) == before  # never rewritten, set aside or left a temp file
    lines = [line for line in err.splitlines() if line]
    if target.outcome == "ignore" or shape in target.valid:
        assert (code, lines) == (0, [])
        return
    assert len(lines) == 1, err
    message = lines[0].removeprefix("outpost: ").removeprefix("warning: ")
    assert code == (2 if target.outcome == "refuse" else 0), err
    assert str(path) in message
    assert message.endswith(".") and message.count(". ") == 0, message  # one sentence
    assert "Traceback" not in err and "Error:" not in err
    if shape == "50-mb":
        assert f"larger than {MAX_CONFIG_BYTES // (1024 * 1024)} MB" in message
    if shape.startswith("nested"):
        assert "levels deep" in message


# -- the crashes of issue 17, one by one ----------------------------------------------------
def test_settings_nested_100000_deep_gives_the_defaults_and_a_warning(outpost_home):
    path = outpost_home / "config" / "settings.json"
    path.parent.mkdir(parents=True)
    path.write_text("[" * DEEP + "]" * DEEP)
    settings = Settings(path)  # was: RecursionError
    assert settings["temperature"] == 0.7
    assert settings.load_warnings == [
        f"The settings file {path} is invalid: it nests more than 32 levels deep; the "
        "defaults are used and the file is left as it is."]


@pytest.mark.parametrize("policy, key, got", [
    ("default = 5", "default", "a whole number (5)"),
    ("default = [1]", "default", "a list ([1])"),
    ("profiles = 1", "profiles", "a whole number (1)"),
    ("profiles = [1, 2]", "profiles", "a list ([1, 2])"),
    ("[profiles]\nana = 3", "profiles.ana", "a whole number (3)"),
    ("[profiles]\nana = [\"x\"]", "profiles.ana", "a list (['x'])"),
])
def test_a_policy_table_of_the_wrong_type_is_named(tmp_path, policy, key, got):
    from app.storage.quotas import QuotaBook

    path = tmp_path / "policy.toml"
    path.write_text(policy + "\n")
    with pytest.raises(ConfigFileInvalid) as caught:  # was: AttributeError
        QuotaBook(path, tmp_path / "quotas.json").limits("ana")
    assert str(caught.value).startswith(f"The policy file {path} is invalid: {key} must be a "
                                        "table of ")
    assert str(caught.value).endswith(f", got {got}.")
    assert caught.value.exit_code == 2


@pytest.mark.parametrize("quotas, key", [
    ("[1, 2]", "the top level"), ('{"default": [1]}', "default"),
    ('{"profiles": [1]}', "profiles"), ('{"profiles": {"ana": "x"}}', "profiles.ana")])
def test_a_quota_file_of_the_wrong_shape_is_named(tmp_path, quotas, key):
    from app.storage.quotas import QuotaBook

    path = tmp_path / "quotas.json"
    path.write_text(quotas)
    with pytest.raises(ConfigFileInvalid, match=f"The quota file .* is invalid: {key} must be "
                                                "an object"):  # was: AttributeError
        QuotaBook(tmp_path / "none.toml", path).limits("ana")
    assert path.read_text() == quotas


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "+nan"])
def test_a_nan_or_infinite_limit_is_refused_not_read_as_no_limit(tmp_path, value):
    from app.storage.quotas import QuotaBook

    path = tmp_path / "policy.toml"
    path.write_text(f"[default]\ncloud_cost_per_month = {value}\n")
    with pytest.raises(ConfigFileInvalid, match="default.cloud_cost_per_month must be a number "
                                                "of dollars from 0 to 1,000,000,000, got "):
        QuotaBook(path, tmp_path / "quotas.json").limits("ana")  # was: a NaN budget


@pytest.mark.parametrize("name, value", [
    ("cloud_cost_per_month", math.nan), ("cloud_cost_per_month", math.inf),
    ("requests_per_minute", 10**400), ("tokens_per_minute", 10**13)])
def test_quota_set_refuses_nan_infinities_and_huge_numbers(tmp_path, name, value):
    from app.storage.quotas import QuotaBook

    book = QuotaBook(tmp_path / "none.toml", tmp_path / "quotas.json")
    with pytest.raises(OutpostError, match=f"{name} must be "):
        book.set("ana", name, value, by=SimpleNamespace(is_admin=True, name="admin"))
    assert not (tmp_path / "quotas.json").exists()


def test_a_lone_surrogate_in_settings_falls_back_with_a_warning(outpost_home, capsys):
    path = outpost_home / "config" / "settings.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"version": 1, "values": {"system_prompt": "Hi \\ud800", '
                    '"shared_model_folders": ["/mnt/\\udc80"], "theme": "dark"}}')
    settings = Settings(path)
    assert settings["system_prompt"] == "You are a helpful assistant."
    assert settings["shared_model_folders"] == []
    assert settings["theme"] == "dark"  # the good values stay
    assert len(settings.load_warnings) == 2
    assert 'system_prompt="Hi \\ud800"' in settings.load_warnings[0]
    assert cli.main(["profile", "whoami"]) == 0  # prints the warnings: was a traceback
    err = capsys.readouterr().err
    assert err.count("outpost: warning: ") == 2 and "Traceback" not in err


def test_saving_keeps_what_the_user_wrote_that_could_not_be_used(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text('{"version": 1, "values": {"temperature": 9, "top_p": "x", '
                    '"from_a_newer_version": {"a": 1}, "theme": "dark"}}')
    settings = Settings(path)
    settings.set("top_p", 0.5)
    settings.save()
    again = Settings(path)
    assert again["top_p"] == 0.5 and again["theme"] == "dark"
    values = json.loads(path.read_text())["values"]
    assert values["temperature"] == 9  # still the user's (invalid) value: never lost
    assert values["from_a_newer_version"] == {"a": 1}


def test_saving_over_a_damaged_settings_file_keeps_it_beside(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text('{"values": {"theme": "dark",')  # cut off mid-write by an editor
    settings = Settings(path)
    assert settings["theme"] == "system" and settings.load_warnings
    assert [p.name for p in tmp_path.iterdir()] == ["settings.json"]  # reading changes nothing
    settings.set("theme", "light")
    settings.save()
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("settings.json.damaged-")]
    assert len(aside) == 1 and aside[0].read_text() == '{"values": {"theme": "dark",'
    assert Settings(path)["theme"] == "light"


def test_the_download_queue_nested_deep_is_set_aside_not_a_traceback(tmp_path):
    from engines.download_queue import QUEUE_FILE, DownloadQueue
    from engines.model_library import ModelLibrary

    library = ModelLibrary(tmp_path / "models", include_bundled=False)
    notices: list[str] = []
    queue = DownloadQueue(library, notices.append)
    queue.path.parent.mkdir(parents=True, exist_ok=True)
    queue.path.write_text("[" * DEEP + "]" * DEEP)
    assert queue.items() == []  # was: RecursionError
    assert len(notices) == 1 and "levels deep" in notices[0]
    kept = [p.name for p in queue.path.parent.iterdir() if p.name.startswith(QUEUE_FILE)]
    assert len(kept) == 1 and ".corrupt-" in kept[0]


def test_a_damaged_references_file_is_never_written_over(tmp_path):
    from engines.model_library import REFERENCES, ModelLibrary

    library = ModelLibrary(tmp_path / "models", include_bundled=False)
    library.models_dir.mkdir()
    references = library.models_dir / REFERENCES
    references.write_text('{"paths": ["/models/a.gguf", ')
    assert library.entries() == [] and "model references file" in library.problems[0]
    with pytest.raises(ConfigFileInvalid, match="model references file"):
        library._write_references({Path("/models/b.gguf"): "b"})  # was: written over, a lost
    assert references.read_text() == '{"paths": ["/models/a.gguf", '


def test_a_misspelt_policy_table_is_refused_not_read_as_no_limits(tmp_path):
    from app.storage.quotas import QuotaBook

    path = tmp_path / "policy.toml"
    path.write_text("[defaults]\nrequests_per_minute = 1\n")
    with pytest.raises(ConfigFileInvalid, match=r"unknown key 'defaults' \(it may hold only "
                                                r"default and profiles\)\.$"):
        QuotaBook(path, tmp_path / "quotas.json").limits("ana")


def test_a_damaged_settings_file_stays_in_place_when_the_save_fails(tmp_path, monkeypatch):
    from app.config import settings as settings_module
    from app.domain.errors import FileWriteFailed

    path = tmp_path / "settings.json"
    path.write_text("{ damaged")
    settings = Settings(path)

    def full_disk(target, text):
        raise FileWriteFailed(f"{target} could not be written: the disk is full; the previous "
                              "version is kept.")

    monkeypatch.setattr(settings_module, "write_config", full_disk)
    with pytest.raises(FileWriteFailed):
        settings.save()
    assert [p.name for p in tmp_path.iterdir()] == ["settings.json"]
    assert path.read_text() == "{ damaged"
