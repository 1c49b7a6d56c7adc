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
from engines.registry import create_local_engine


@pytest.fixture
def gguf(tmp_path, bundled_model):
    """A copy of the bundled model elsewhere on this disk."""
    outside = tmp_path / "outside"
    outside.mkdir()
    copy = outside / "tiny.gguf"
    shutil.copyfile(bundled_model, copy)
    return copy


def variant(model, path, mark: int = 1):
    """A copy of ``model`` whose last byte (tensor data) differs: the same header and size, other
    content, so the library takes it for another model."""
    data = bytearray(model.read_bytes())
    data[-1] ^= mark
    path.write_bytes(bytes(data))
    return path


def names(library: ModelLibrary) -> list[tuple[str, str]]:
    return [(e.name, e.source) for e in library.entries()]


def test_every_source_is_listed_once_with_what_its_header_says(tmp_path, gguf):
    shared = tmp_path / "usb"
    (shared / "team").mkdir(parents=True)
    variant(gguf, shared / "team" / "other.gguf")
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
    second = variant(gguf, tmp_path / "outside" / "second.gguf")
    with pytest.raises(UsageError, match="A model called copied is already"):
        library.import_file(second, "link", name="copied")  # a name taken
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


def test_one_model_is_imported_once_whatever_its_path_or_mode(outpost_home, capsys, tmp_path,
                                                              gguf):
    """Issue 14: "one model is never copied twice". A second import of the same file under
    another name, or of another file with the same bytes (copied, linked or referenced, or
    already in a shared folder), is refused with the model it already is; it made a full
    second copy."""
    def run(*args):
        code = cli.main(list(args))
        return code, capsys.readouterr()

    models = outpost_home / "data" / "models"
    code, out = run("models", "import", str(gguf), "--name", "mycopy")
    assert code == 0 and (models / "mycopy.gguf").exists()
    code, out = run("models", "import", str(gguf), "--name", "mycopy2")
    assert code == 2 and out.out == ""
    assert f"{gguf} is already in the library, as mycopy: " in out.err
    twin = tmp_path / "elsewhere" / "same-bytes.gguf"
    twin.parent.mkdir()
    shutil.copyfile(gguf, twin)  # another file, the same content
    for mode in ([], ["--link"], ["--reference"]):
        code, out = run("models", "import", str(twin), *mode)
        assert code == 2 and "already in the library, as mycopy: " in out.err, mode
        assert "has the same content (size and sha256)" in out.err
    assert sorted(p.name for p in models.iterdir()) == ["mycopy.gguf"]  # no part, no reference
    other = variant(gguf, tmp_path / "elsewhere" / "other.gguf")  # the same size, other bytes
    code, out = run("models", "import", str(other), "--json")
    assert code == 0 and json.loads(out.out)["name"] == "other"

    shared = tmp_path / "usb"
    shared.mkdir()
    variant(gguf, shared / "theirs.gguf", 4)
    library = ModelLibrary(tmp_path / "models", [shared])
    with pytest.raises(UsageError, match="already in the library, as theirs: "):
        library.import_file(variant(gguf, tmp_path / "theirs-too.gguf", 4), "copy")
    assert not (tmp_path / "models").exists()
    kept = library.import_file(gguf, "copy")  # the bundled model's bytes: one copy is allowed
    assert names(library) == [("SmolLM2-135M-Instruct.Q4_1", "bundled"), ("theirs", "shared"),
                              (kept.name, "library")]


def test_the_bundled_models_own_file_may_be_imported_as_its_one_copy(tmp_path, bundled_model,
                                                                     gguf):
    """`models import <the bundled model's path> --name small` was refused ("already in the
    library") while a copy of that file made with cp was imported: the README allows one copy
    of the bundled model in the models folder, whichever file it is made from. A link or a
    reference to the bundled file itself is no copy: refused, saying how."""
    library = ModelLibrary(tmp_path / "models")
    for mode in ("link", "reference"):
        with pytest.raises(UsageError, match=f"^{re.escape(str(bundled_model))} is the bundled "
                           "model SmolLM2-135M-Instruct.Q4_1; one copy of it may be kept in "
                           "the models folder: import it without --link or --reference"):
            library.import_file(bundled_model, mode, name="small")
    assert not (tmp_path / "models").exists()
    kept = library.import_file(bundled_model, "copy", name="small")
    assert kept.path == tmp_path / "models" / "small.gguf"
    assert names(library) == [("small", "library"), ("SmolLM2-135M-Instruct.Q4_1", "bundled")]
    for source in (bundled_model, gguf):  # its one copy is made: from either, as before
        with pytest.raises(UsageError, match="already in the library, as small: "):
            library.import_file(source, "copy", name="again")


def test_rename_and_remove_touch_only_the_library(tmp_path, gguf):
    shared = tmp_path / "share"
    shared.mkdir()
    variant(gguf, shared / "theirs.gguf")
    library = ModelLibrary(tmp_path / "models", [shared])
    library.import_file(gguf, "copy", name="mine")
    referenced = variant(gguf, tmp_path / "outside" / "elsewhere.gguf", 2)
    library.import_file(referenced, "reference", name="kept")
    assert library.rename("mine", "renamed").path.name == "renamed.gguf"
    with pytest.raises(UsageError, match="shared model"):
        library.remove("theirs")
    with pytest.raises(UsageError, match="bundled model"):
        library.remove("SmolLM2-135M-Instruct.Q4_1")
    assert library.remove("kept").source == "reference"  # forgotten, the file stays
    assert referenced.exists()
    library.remove("renamed")
    assert not (tmp_path / "models" / "renamed.gguf").exists()
    assert (shared / "theirs.gguf").exists()
    with pytest.raises(ModelNotFound, match="no model called 'renamed'"):
        library.find("renamed")


def test_a_reference_keeps_the_name_it_was_given(outpost_home, capsys, tmp_path, gguf):
    """``import --reference --name N`` printed N but stored only the path: list showed the file's
    name and ``info N`` said there was no such model. The name is kept in references.json
    (beside the paths, so a file without names still loads) and every command uses it."""
    def run(*args):
        code = cli.main(list(args))
        return code, capsys.readouterr()

    references = outpost_home / "data" / "models" / "references.json"
    code, out = run("models", "import", str(gguf), "--reference", "--name", "smolref", "--json")
    assert code == 0 and json.loads(out.out)["name"] == "smolref"
    assert json.loads(references.read_text())["names"] == {str(gguf): "smolref"}
    code, out = run("models", "list", "--json")
    assert [(m["name"], m["source"]) for m in json.loads(out.out)] == [
        ("SmolLM2-135M-Instruct.Q4_1", "bundled"), ("smolref", "reference")]
    code, out = run("models", "info", "smolref")
    assert code == 0 and re.search(r"^name: +smolref$", out.out, re.M)
    code, out = run("models", "set", "smolref", "context", "1024")
    assert code == 0
    code, out = run("models", "info", str(gguf), "--json")  # its path finds it under its name
    assert json.loads(out.out)["name"] == "smolref"
    assert json.loads(out.out)["load_settings"]["context"] == 1024

    code, out = run("models", "rename", "smolref", "smol2", "--json")  # the name, not the file
    assert code == 0 and json.loads(out.out)["path"] == str(gguf) and gguf.exists()
    assert json.loads(out.out)["load_settings"]["context"] == 1024  # its settings follow
    code, out = run("models", "info", "smolref")
    assert code == 3 and "no model called 'smolref'" in out.err

    # a name that cannot be honoured is refused before anything is written
    before = references.read_text()
    other = variant(gguf, tmp_path / "outside" / "other.gguf")
    for name, why in (("SMOL2", "A model called smol2 is already"),
                      ("x.gguf.gguf", "still ends in .gguf"), ("~me", "starts with a dot or ~")):
        code, out = run("models", "import", str(other), "--reference", "--name", name)
        assert code == 2 and why in out.err and out.out == "", name
    assert references.read_text() == before

    code, out = run("models", "remove", "smol2", "--yes")
    assert code == 0 and "Removed smol2." in out.out and gguf.exists()
    assert json.loads(references.read_text()) == {"paths": [], "names": {}}

    # a references.json written before names were kept: listed by the file's name
    references.write_text(json.dumps({"paths": [str(gguf), str(tmp_path / "unplugged.gguf")]}))
    library = ModelLibrary.from_settings(Settings())
    assert ("tiny", "reference") in names(library) and library.problems == []
    with pytest.raises(UsageError, match="A model called unplugged is already"):
        library.import_file(other, "reference", name="unplugged")  # its file is away, not gone
    assert library.rename("tiny", "tiny-ref").path == gguf
    assert ("tiny-ref", "reference") in names(library)


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
def test_an_empty_model_path_is_the_bundled_model_and_none_the_setting(outpost_home, tmp_path):
    """The window asks for the bundled model as "" while the setting still names the model in
    use (it changes once the new one has loaded); None is "the setting's model"."""
    settings = Settings()
    settings.set("model_path", str(tmp_path / "gone.gguf"))
    engine = create_local_engine(settings, "")
    try:
        assert engine.path.samefile(bundled_model_path())
    finally:
        engine.close()
    with pytest.raises(ModelNotFound, match="gone.gguf"):
        create_local_engine(settings, None)


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


def test_a_model_is_found_by_the_file_name_replies_show(tmp_path, gguf, monkeypatch):
    """Replies, Details and `history` name the model by its file ("my-model.gguf"); that name
    finds it too (it was taken for a path in the current folder, and not found)."""
    library = ModelLibrary(tmp_path / "models")
    library.import_file(gguf, "link", name="my-model")
    monkeypatch.chdir(tmp_path)  # no such file here
    assert library.find("my-model.gguf").name == "my-model"
    assert library.find(bundled_model_path().name).source == "bundled"
    with pytest.raises(ModelNotFound):
        library.find("no-such-model.gguf")
