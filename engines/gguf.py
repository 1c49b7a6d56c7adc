"""A small, pure reader of GGUF file headers: validate a model file before llama.cpp sees it.

llama.cpp answers a bad file with "failed to load model" and nothing more; this reader says
*which* problem the file has (missing, not GGUF, truncated, unknown version) and reads the metadata
Outpost needs before loading (architecture, trained context length, chat template, name).
Format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md
"""
from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from app.domain.errors import ModelInvalid, ModelNotFound

MAGIC = b"GGUF"
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
            10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
_KEEP_ARRAY_MAX = 64  # big arrays (the vocabulary) are skipped, not kept

# ggml tensor type -> (elements per block, bytes per block), to compute where the data must end.
GGML_BLOCKS: dict[int, tuple[int, int]] = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
    9: (32, 36), 10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210),
    15: (256, 292), 16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18),
    21: (256, 110), 22: (256, 82), 23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4),
    27: (1, 8), 28: (1, 8), 29: (256, 56), 30: (1, 2), 34: (256, 54), 35: (256, 66),
    39: (32, 17),
}


class _Truncated(Exception):
    pass


@dataclass
class GGUFInfo:
    path: Path
    version: int
    tensor_count: int
    metadata: dict[str, Any] = field(default_factory=dict)
    file_size: int = 0
    expected_size: int | None = None  # None when a tensor type is unknown to this reader
    parameter_count: int = 0  # the weights' elements, summed over every tensor

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", "unknown"))

    @property
    def context_length(self) -> int | None:
        value = self.metadata.get(f"{self.architecture}.context_length")
        return int(value) if value is not None else None

    @property
    def chat_template(self) -> str | None:
        return self.metadata.get("tokenizer.chat_template")

    @property
    def name(self) -> str:
        return str(self.metadata.get("general.name") or self.path.name)


class _Reader:
    """Reads the header; every length comes from the file, so each is checked against the
    bytes that are left before anything is read or skipped."""

    def __init__(self, handle: BinaryIO, size: int):
        self.handle = handle
        self.size = size

    def _check(self, n: int) -> None:
        if n < 0 or n > self.size - self.handle.tell():
            raise _Truncated

    def read(self, n: int) -> bytes:
        self._check(n)
        data = self.handle.read(n)
        if len(data) != n:
            raise _Truncated
        return data

    def skip(self, n: int) -> None:
        self._check(n)
        self.handle.seek(n, io.SEEK_CUR)

    def scalar(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        return self.read(self.scalar("<Q")).decode("utf-8", errors="replace")

    def value(self, vtype: int, keep: bool = True) -> Any:
        if vtype in _SCALARS:
            return self.scalar(_SCALARS[vtype])
        if vtype == _STRING:
            if keep:
                return self.string()
            self.skip(self.scalar("<Q"))
            return None
        if vtype == _ARRAY:
            item_type, count = self.scalar("<I"), self.scalar("<Q")
            keep_items = keep and count <= _KEEP_ARRAY_MAX
            if item_type in _SCALARS and not keep_items:
                self.skip(struct.calcsize(_SCALARS[item_type]) * count)
                return None
            items = [self.value(item_type, keep_items) for _ in range(count)]
            return items if keep_items else None
        raise ValueError(f"unknown metadata value type {vtype}")


def read_gguf(path: str | Path) -> GGUFInfo:
    """Read and check a GGUF file's header; raise ModelNotFound / ModelInvalid naming the
    problem."""
    path = Path(path).expanduser().absolute()
    if not path.exists():
        raise ModelNotFound(f"The model file {path} does not exist.", str(path))
    if path.is_dir():
        raise ModelInvalid(f"The model path {path} is a folder, not a GGUF file.", str(path))
    if not path.is_file():  # a FIFO, a socket or a device would hang or never end
        raise ModelInvalid(f"The model path {path} is not a regular file (a pipe, socket or "
                           "device), so it cannot be a GGUF model.", str(path))
    file_size = path.stat().st_size
    try:
        with path.open("rb") as handle:
            reader = _Reader(handle, file_size)
            try:
                magic = reader.read(4)
            except _Truncated:
                raise ModelInvalid(f"The model file {path} is not a GGUF file: it is only "
                                   f"{file_size} bytes long.", str(path)) from None
            if magic != MAGIC:
                raise ModelInvalid(f"The model file {path} is not a GGUF file (it starts with "
                                   f"{magic!r}, not b'GGUF').", str(path))
            try:
                return _read_body(reader, path, file_size)
            except _Truncated:
                raise ModelInvalid(f"The model file {path} is truncated: its header ends early "
                                   f"at {file_size} bytes.", str(path)) from None
            except (ValueError, UnicodeDecodeError, struct.error) as exc:
                raise ModelInvalid(f"The model file {path} has a damaged GGUF header ({exc}).",
                                   str(path)) from None
    except PermissionError:
        raise ModelInvalid(f"The model file {path} cannot be read (permission denied).",
                           str(path)) from None


def _read_body(reader: _Reader, path: Path, file_size: int) -> GGUFInfo:
    version = reader.scalar("<I")
    if version not in (2, 3):
        raise ModelInvalid(f"The model file {path} uses GGUF version {version}, which is not "
                           "supported (versions 2 and 3 are).", str(path))
    tensor_count, kv_count = reader.scalar("<Q"), reader.scalar("<Q")
    if tensor_count > 1_000_000 or kv_count > 1_000_000:
        raise ValueError("implausible tensor or metadata count")
    metadata: dict[str, Any] = {}
    for _ in range(kv_count):
        key = reader.string()
        vtype = reader.scalar("<I")
        value = reader.value(vtype)
        if value is not None:
            metadata[key] = value
    data_end = 0
    known = True
    parameters = 0
    for _ in range(tensor_count):
        reader.string()
        n_dims = reader.scalar("<I")
        elements = 1
        for _ in range(n_dims):
            elements *= reader.scalar("<Q")
        parameters += elements
        ttype, offset = reader.scalar("<I"), reader.scalar("<Q")
        block = GGML_BLOCKS.get(ttype)
        if block is None:
            known = False
            continue
        data_end = max(data_end, offset + elements // block[0] * block[1])
    alignment = int(metadata.get("general.alignment", 32)) or 32
    header_end = reader.handle.tell()
    data_start = (header_end + alignment - 1) // alignment * alignment
    expected = data_start + data_end if known else None
    info = GGUFInfo(path=path, version=version, tensor_count=tensor_count, metadata=metadata,
                    file_size=file_size, expected_size=expected, parameter_count=parameters)
    if expected is not None and file_size < expected:
        raise ModelInvalid(f"The model file {path} is truncated: it has {file_size:,} bytes but "
                           f"its tensors need {expected:,}. Download or copy it again.", str(path))
    return info


def read_model(path: str | Path) -> GGUFInfo:
    """Read a model file's header (``read_gguf``), refusing a LoRA adapter: llama.cpp would
    say only that it failed to load it."""
    info = read_gguf(path)
    if info.metadata.get("general.type") == "adapter":
        fits = info.metadata.get("general.architecture")
        raise ModelInvalid(f"{Path(path).name} is a LoRA adapter (its GGUF header says "
                           "general.type = adapter), not a model: attach it to "
                           + (f"a {fits} model" if fits else "the model it was made for")
                           + f" with `--lora {path}` (in the window: the Sampling panel's LoRA "
                           "adapters).", str(path))
    return info


def read_lora(path: str | Path) -> GGUFInfo:
    """Read a LoRA adapter file's header, checked to be one (``general.type = adapter``, of
    the LoRA kind): raise ModelNotFound / ModelInvalid naming the problem in an adapter's
    words. Which model it fits (its architecture) is the caller's to check."""
    name = Path(path).name
    try:
        header = read_gguf(path)
    except ModelNotFound:
        raise ModelNotFound(f"The LoRA adapter {path} does not exist (moved, deleted, or its "
                            "drive is gone).", str(path)) from None
    except ModelInvalid as exc:  # said of an adapter, in a few words (not a model's)
        said = exc.message
        why = next((words for marker, words in (
            ("is not a GGUF file", "it is not a GGUF file (LoRA adapters for llama.cpp are "
                                   "GGUF files)"),
            ("truncated", "the file is cut short"),
            ("damaged GGUF header", "its GGUF header is damaged"),
            ("permission denied", "it cannot be read (permission denied)"),
            ("is a folder", "it is a folder"),
            ("not a regular file", "it is not a regular file")) if marker in said), said)
        why = why.replace("The model file", "The file").rstrip(".")
        raise ModelInvalid(f"{name} cannot be used as a LoRA adapter: {why}.",
                           str(path)) from None
    kind = header.metadata.get("general.type")
    if kind != "adapter" or header.metadata.get("adapter.type", "lora") != "lora":
        raise ModelInvalid(f"{name} is not a LoRA adapter (its GGUF header says general.type = "
                           f"{kind or 'nothing'}); a full model is opened as a model, not "
                           "attached as an adapter.", str(path))
    return header

