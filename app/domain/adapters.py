"""LoRA adapters: small GGUF files of low-rank weight updates applied on top of a loaded local
model, each with a scale (0: no effect, 1: as trained; negative or above 1 is allowed, as in
llama.cpp). Adapters change between turns without reloading the base model; each reply stores
the adapters and scales it was made with.

``FILE[:SCALE]`` is how the CLI (``--lora``) and settings name one: the scale defaults to 1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import PurePath

from app.domain.errors import UsageError

SCALE_LIMIT = 4.0  # |scale| above this only produces noise; refused as a likely typo


@dataclass(frozen=True)
class LoraAdapter:
    path: str
    scale: float = 1.0

    def __post_init__(self) -> None:
        if not str(self.path).strip():
            raise UsageError("A LoRA adapter needs a file.")
        if isinstance(self.scale, bool) or not isinstance(self.scale, (int, float)) or \
                not math.isfinite(self.scale) or abs(self.scale) > SCALE_LIMIT:
            raise UsageError(f"The LoRA scale {self.scale!r} for {self.name} is not a number "
                             f"between -{SCALE_LIMIT:g} and {SCALE_LIMIT:g}.")
        object.__setattr__(self, "scale", float(self.scale))

    @property
    def name(self) -> str:
        return PurePath(self.path).name

    def record(self) -> dict:
        """As stored with a conversation and on each reply."""
        return {"name": self.name, "path": self.path, "scale": self.scale}

    @classmethod
    def from_record(cls, data: dict) -> "LoraAdapter":
        return cls(str(data["path"]), float(data.get("scale", 1.0)))

    def label(self) -> str:
        return f"{self.name} × {self.scale:g}"


def parse_lora(spec: str) -> LoraAdapter:
    """``FILE[:SCALE]``: ``style.gguf``, ``style.gguf:0.5``, ``C:\\lora\\x.gguf:0.8``."""
    spec = spec.strip()
    path, sep, tail = spec.rpartition(":")
    if sep and path and not tail.startswith(("\\", "/")):
        try:
            scale = float(tail)
        except ValueError:
            raise UsageError(f"The LoRA scale in {spec!r} is not a number: write FILE or "
                             "FILE:SCALE, e.g. style.gguf:0.5.") from None
        return LoraAdapter(path, scale)
    return LoraAdapter(spec)


def adapters_from_records(records) -> tuple[LoraAdapter, ...]:
    return tuple(LoraAdapter.from_record(r) for r in records or ())
