"""Model files: the GGUF header reader names the file and the exact problem, before llama.cpp."""
from __future__ import annotations

import os
import struct
import subprocess
import sys

import pytest

from app.domain.errors import ModelError, ModelInvalid, ModelNotFound
from engines.gguf import read_gguf
from engines.llama_local import LocalEngine


def _copy_prefix(source, dest, size: int):
    with source.open("rb") as src, dest.open("wb") as out:
        out.write(src.read(size))
    return dest


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "notes.gguf"
    path.write_text("These are my notes, not a model at all.\n" * 10, encoding="utf-8")
    return path


def test_bundled_model_metadata(bundled_model):
    info = read_gguf(bundled_model)
    assert info.path == bundled_model.absolute()
    assert info.version == 3
    assert info.architecture == "llama"
    assert info.context_length == 8192
    assert info.chat_template and "<|im_start|>" in info.chat_template
    assert info.tensor_count > 0
    assert info.file_size == bundled_model.stat().st_size
    assert info.expected_size == info.file_size
    assert info.name  # general.name, or the file name


def test_gemma_metadata_has_no_chat_template(gemma_model):
    info = read_gguf(gemma_model)
    assert info.architecture == "gemma3"
    assert info.context_length == 32768
    assert info.chat_template is None
    assert info.expected_size == info.file_size == gemma_model.stat().st_size


def test_missing_path(tmp_path):
    path = tmp_path / "nowhere" / "model.gguf"
    with pytest.raises(ModelNotFound) as info:
        read_gguf(path)
    assert str(path) in str(info.value)
    assert "does not exist" in str(info.value)
    assert info.value.path == str(path)
    assert info.value.exit_code == 3


def test_text_file_is_not_gguf(text_file):
    with pytest.raises(ModelInvalid) as info:
        read_gguf(text_file)
    assert "not a GGUF file" in str(info.value)
    assert str(text_file) in str(info.value)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.gguf"
    path.touch()
    with pytest.raises(ModelInvalid) as info:
        read_gguf(path)
    assert "not a GGUF file" in str(info.value)
    assert "0 bytes" in str(info.value)
    assert str(path) in str(info.value)


def test_directory(tmp_path):
    folder = tmp_path / "models.gguf"
    folder.mkdir()
    with pytest.raises(ModelInvalid) as info:
        read_gguf(folder)
    assert "folder" in str(info.value)
    assert str(folder) in str(info.value)


@pytest.mark.parametrize("size", [10, 1000, 100_000])
def test_truncated_in_the_header(bundled_model, tmp_path, size):
    path = _copy_prefix(bundled_model, tmp_path / "cut.gguf", size)
    with pytest.raises(ModelInvalid) as info:
        read_gguf(path)
    assert "truncated" in str(info.value)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("fraction", [0.5, 0.999])
def test_truncated_in_the_tensor_data(bundled_model, tmp_path, fraction):
    size = int(bundled_model.stat().st_size * fraction)
    path = _copy_prefix(bundled_model, tmp_path / "half.gguf", size)
    with pytest.raises(ModelInvalid) as info:
        read_gguf(path)
    message = str(info.value)
    assert "truncated" in message
    assert str(path) in message
    assert f"{size:,}" in message  # says how much is there ...
    assert f"{bundled_model.stat().st_size:,}" in message  # ... and how much is needed


def test_unsupported_version(bundled_model, tmp_path):
    data = bytearray(bundled_model.open("rb").read(4096))
    data[4:8] = struct.pack("<I", 99)
    path = tmp_path / "future.gguf"
    path.write_bytes(bytes(data))
    with pytest.raises(ModelInvalid, match="version 99"):
        read_gguf(path)


def test_corrupted_length_field_is_model_invalid(bundled_model, tmp_path):
    data = bytearray(bundled_model.open("rb").read(200_000))
    data[24:32] = struct.pack("<Q", 2 ** 48)  # length of the first metadata key
    path = tmp_path / "damaged.gguf"
    path.write_bytes(bytes(data))
    with pytest.raises(ModelInvalid) as info:
        read_gguf(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("count", [3, 100])  # small arrays are kept, big ones skipped
def test_corrupted_array_is_model_invalid(tmp_path, count):
    key = b"general.tags"
    header = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", len(key)) + key
    header += struct.pack("<IIQ", 9, 8, count)  # array of strings
    header += struct.pack("<Q", 2 ** 63 - 1)  # the first string's length is garbage
    path = tmp_path / "damaged-array.gguf"
    path.write_bytes(header + b"x" * 64)
    with pytest.raises(ModelInvalid):
        read_gguf(path)


def test_cli_ask_with_a_damaged_header_exits_3(bundled_model, tmp_path):
    data = bytearray(bundled_model.open("rb").read(200_000))
    data[24:32] = struct.pack("<Q", 2 ** 48)
    path = tmp_path / "damaged.gguf"
    path.write_bytes(bytes(data))
    proc = subprocess.run([sys.executable, "-m", "app.cli", "ask", "hello", "--model", str(path)],
                          env=os.environ.copy(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3
    assert "Traceback" not in proc.stderr
    assert str(path) in proc.stderr


def test_bad_files_all_are_model_errors_naming_the_file(tmp_path, bundled_model, text_file):
    empty = tmp_path / "e.gguf"
    empty.touch()
    cases = [tmp_path / "missing.gguf", text_file, empty, tmp_path,
             _copy_prefix(bundled_model, tmp_path / "c.gguf", 1000)]
    for path in cases:
        with pytest.raises(ModelError) as info:
            read_gguf(path)
        assert str(path) in str(info.value), path
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("case", ["missing", "text", "empty", "header", "data", "folder",
                                  "adapter"])
def test_local_engine_raises_the_same_errors(case, tmp_path, bundled_model, text_file):
    expected = {"missing": (ModelNotFound, "does not exist"), "text": (ModelInvalid, "not a GGUF"),
                "empty": (ModelInvalid, "not a GGUF"), "header": (ModelInvalid, "truncated"),
                "data": (ModelInvalid, "truncated"), "folder": (ModelInvalid, "folder"),
                # a valid GGUF file llama.cpp would only say "failed to load model" of
                "adapter": (ModelInvalid, "is a LoRA adapter (its GGUF header says "
                                          "general.type = adapter), not a model")}[case]
    if case == "adapter":
        from tests.lora_files import make_lora  # deferred: needs the gguf package

        path = make_lora(bundled_model, tmp_path / "style.gguf", layers=(0,))
    elif case == "missing":
        path = tmp_path / "missing.gguf"
    elif case == "text":
        path = text_file
    elif case == "empty":
        path = tmp_path / "empty.gguf"
        path.touch()
    elif case == "header":
        path = _copy_prefix(bundled_model, tmp_path / "h.gguf", 1000)
    elif case == "data":
        path = _copy_prefix(bundled_model, tmp_path / "d.gguf",
                            bundled_model.stat().st_size // 2)
    else:
        path = tmp_path / "folder"
        path.mkdir()
    cls, words = expected
    with pytest.raises(cls) as info:
        LocalEngine(path)  # fails in the constructor, before any thread or llama.cpp
    assert words in str(info.value)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("case", ["missing", "text", "truncated", "adapter"])
def test_cli_ask_with_a_bad_model_exits_3_with_one_sentence(case, tmp_path, bundled_model,
                                                             text_file):
    if case == "adapter":
        from tests.lora_files import make_lora  # deferred: needs the gguf package

        path = make_lora(bundled_model, tmp_path / "style.gguf", layers=(0,))
    elif case == "missing":
        path = tmp_path / "missing.gguf"
    elif case == "text":
        path = text_file
    else:
        path = _copy_prefix(bundled_model, tmp_path / "half.gguf",
                            bundled_model.stat().st_size // 2)
    proc = subprocess.run([sys.executable, "-m", "app.cli", "ask", "hello", "--model", str(path)],
                          env=os.environ.copy(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert str(path) in lines[0]
    assert lines[0].startswith("outpost: ") and lines[0].endswith(".")
    assert proc.stdout == ""


def test_cli_ask_json_with_a_bad_model_emits_an_error_event(tmp_path):
    import json

    path = tmp_path / "missing.gguf"
    proc = subprocess.run([sys.executable, "-m", "app.cli", "ask", "hello", "--json", "--model",
                           str(path)], env=os.environ.copy(), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 3
    event = json.loads(proc.stdout.strip())
    assert event["event"] == "error"
    assert event["kind"] == "model_not_found"
    assert str(path) in event["message"]



def test_a_pipe_named_like_a_model_is_refused_at_once(tmp_path):
    import os

    from app.domain.errors import ModelInvalid
    from engines.gguf import read_gguf

    fifo = tmp_path / "x.gguf"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer forever
    with pytest.raises(ModelInvalid, match="not a regular file"):
        read_gguf(fifo)
