"""The model library (issue 14, first step): the models folder, references, shared read-only
folders and the bundled model; each file once; what each header says; import, rename, remove;
``--model NAME`` everywhere a path was accepted."""
from __future__ import annotations

import json
import os
import re
import shutil

import pytest

from app import cli
from app.config.settings import Settings
from app.domain.errors import ModelInvalid, ModelNotFound, UsageError
from engines.model_files import bundled_model_path
from engines.model_library import ModelLibrary


@pytest.fixture
def gguf(tmp_path, bundled_model):
    """A copy of the bundled model elsewhere on this disk."""
    outside = tmp_path / "outside"
    outside.mkdir()
    copy = outside / "tiny.gguf"
    shutil.copyfile(bundled_model, copy)
    return copy


def names(library: ModelLibrary) -> list[tuple[str, str]]:
    return [(e.name, e.source) for e in library.entries()]


def test_every_source_is_listed_once_with_what_its_header_says(tmp_path, gguf):
    shared = tmp_path / "usb"
    (shared / "team").mkdir(parents=True)
    shutil.copyfile(gguf, shared / "team" / "other.gguf")
    (shared / "broken.gguf").write_text("<html>404</html>")
    (shared / "half.gguf.part").write_bytes(b"GGUF")
    library = ModelLibrary(tmp_path / "models", [shared])
    library.import_file(gguf, "reference")
    os.link(gguf, shared / "team" / "tiny-shared.gguf")  # the same file, reached a second way
    listed = names(library)
    assert listed == [("other", "shared"), ("SmolLM2-135M-Instruct.Q4_1", "bundled"),
                      ("tiny", "reference")]  # tiny-shared is the same file: listed once
    assert any("not a GGUF file" in p for p in library.problems)  # the HTML page, skipped
    tiny = library.find("tiny").describe(4096)
    assert (tiny["architecture"], tiny["quantization"], tiny["trained_context"]) == (
        "llama", "Q4_1", 8192)
    assert tiny["parameters"] == 134_515_008 and tiny["chat_template"]
    assert tiny["license"] == "apache-2.0" and tiny["size_bytes"] == gguf.stat().st_size
    # weights + an f16 KV cache (2 x 30 layers x 4096 tokens x 3 heads x 64 x 2 bytes) + 64 MiB
    kv = 2 * 30 * 4096 * 3 * 64 * 2
    assert tiny["memory_estimate_bytes"] == gguf.stat().st_size + kv + 64 * 1024 * 1024
    assert library.find("TINY").name == "tiny"  # names match without case when unambiguous


def test_import_copies_links_or_references_and_refuses_what_is_not_a_model(tmp_path, gguf):
    library = ModelLibrary(tmp_path / "models", include_bundled=False)
    copied = library.import_file(gguf, "copy", name="copied")
    assert copied.path == tmp_path / "models" / "copied.gguf" and copied.source == "library"
    assert not list((tmp_path / "models").glob("*.part"))
    with pytest.raises(UsageError, match="already in the library"):
        library.import_file(copied.path, "reference")
    with pytest.raises(UsageError, match="A model called copied is already"):
        library.import_file(gguf, "link", name="copied")  # a name taken
    second = tmp_path / "outside" / "second.gguf"
    shutil.copyfile(gguf, second)
    linked = library.import_file(second, "link")
    assert os.path.samefile(linked.path, second)  # no second copy on the disk
    html = tmp_path / "page.gguf"
    html.write_text("<!doctype html><title>Not found</title>")
    with pytest.raises(ModelInvalid, match="not a GGUF file"):
        library.import_file(html)
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(gguf.read_bytes()[:50_000])
    with pytest.raises(ModelInvalid, match="truncated"):
        library.import_file(truncated)
    assert names(library) == [("copied", "library"), ("second", "library")]
    with pytest.raises(UsageError, match="usable model name"):
        library.import_file(gguf, "reference", name="../escape")


def test_rename_and_remove_touch_only_the_library(tmp_path, gguf):
    shared = tmp_path / "share"
    shared.mkdir()
    shutil.copyfile(gguf, shared / "theirs.gguf")
    library = ModelLibrary(tmp_path / "models", [shared])
    library.import_file(gguf, "copy", name="mine")
    library.import_file(gguf, "reference", name="kept")
    assert library.rename("mine", "renamed").path.name == "renamed.gguf"
    with pytest.raises(UsageError, match="shared model"):
        library.remove("theirs")
    with pytest.raises(UsageError, match="bundled model"):
        library.remove("SmolLM2-135M-Instruct.Q4_1")
    assert library.remove("tiny").source == "reference"  # forgotten, the file stays
    assert gguf.exists()
    library.remove("renamed")
    assert not (tmp_path / "models" / "renamed.gguf").exists()
    assert (shared / "theirs.gguf").exists()
    with pytest.raises(ModelNotFound, match="no model called 'renamed'"):
        library.find("renamed")


def test_a_shared_folder_that_went_away_is_simply_not_listed(tmp_path, gguf):
    shared = tmp_path / "usb"
    shared.mkdir()
    shutil.copyfile(gguf, shared / "on-usb.gguf")
    library = ModelLibrary(tmp_path / "models", [shared])
    assert ("on-usb", "shared") in names(library)
    shutil.rmtree(shared)  # unplugged
    assert names(library) == [("SmolLM2-135M-Instruct.Q4_1", "bundled")]


def test_the_cli_lists_imports_shows_and_removes(outpost_home, capsys, gguf):
    def run(*args):
        code = cli.main(list(args))
        return code, capsys.readouterr()

    code, out = run("models", "import", str(gguf), "--link", "--json")
    assert code == 0 and json.loads(out.out)["source"] == "library"
    code, out = run("models", "list", "--json")
    assert [(m["name"], m["source"]) for m in json.loads(out.out)] == [
        ("SmolLM2-135M-Instruct.Q4_1", "bundled"), ("tiny", "library")]
    code, out = run("models", "info", "tiny")
    assert code == 0 and re.search(r"^quantization: +Q4_1$", out.out, re.M)
    assert re.search(r"^memory: +about [\d.]+ MiB at a context of 4,096$", out.out, re.M)
    code, out = run("models", "remove", "tiny")  # no terminal here: it asks for --yes
    assert code == 2 and "pass --yes" in out.err
    code, out = run("models", "remove", "tiny", "--yes")
    assert code == 0 and "Removed tiny." in out.out
    code, out = run("models", "info", "nope")
    assert code == 3 and "no model called 'nope'" in out.err


@pytest.mark.local_model
def test_ask_takes_a_library_name_for_model(outpost_home, capsys, gguf):
    from engines.registry import create_local_engine

    settings = Settings()
    ModelLibrary.from_settings(settings).import_file(gguf, "link", name="my-model")
    engine = create_local_engine(settings, "my-model")
    try:
        assert engine.path.name == "my-model.gguf"
    finally:
        engine.close()
    settings.set("model_path", "my-model")
    settings.save()
    assert cli.main(["ask", "--max-tokens", "2", "--temperature", "0", "--json", "Hi"]) == 0
    finished = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert finished["model"] == "my-model.gguf"
    assert bundled_model_path().exists()
