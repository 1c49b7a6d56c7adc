"""Small LoRA adapters made on the spot for a real base model (the `gguf` package writes them).

llama.cpp's LoRA GGUF: ``general.type = adapter``, ``adapter.type = lora``, the base model's
``general.architecture``, an optional ``adapter.lora.alpha``, and per adapted weight two tensors
``<weight>.lora_a`` (numpy shape (rank, n_in)) and ``<weight>.lora_b`` ((n_out, rank)); the
update applied is ``scale * alpha / rank * B @ A``. Random A and B with a fixed seed give a
reproducible adapter that visibly changes the model's greedy text at scale 1 and is an exact
no-op at scale 0. Used by the LoRA tests and bench/model_switching.py.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def make_lora(base_model: str | Path, out: str | Path, *, seed: int = 0, rank: int = 4,
              strength: float = 1.0, layers: tuple[int, ...] | None = None,
              weights: tuple[str, ...] = ("ffn_down", "attn_output")) -> Path:
    """Write a random rank-``rank`` LoRA for ``base_model`` to ``out`` and return its path."""
    import gguf  # deferred: only the LoRA tests and the bench need the gguf package

    reader = gguf.GGUFReader(str(base_model))
    field = reader.fields["general.architecture"]
    arch = bytes(field.parts[field.data[0]]).decode()
    shapes = {t.name: tuple(int(n) for n in t.shape) for t in reader.tensors}
    blocks = sorted({int(name.split(".")[1]) for name in shapes if name.startswith("blk.")})
    chosen = layers if layers is not None else tuple(blocks)
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(out), arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(rank))  # alpha / rank = 1
    for block in chosen:
        for weight in weights:
            name = f"blk.{block}.{weight}.weight"
            n_in, n_out = shapes[name]  # ggml order: ne0 = inputs, ne1 = outputs
            a = rng.standard_normal((rank, n_in)) * (strength / np.sqrt(n_in))
            b = rng.standard_normal((n_out, rank)) * strength
            # F16, as llama.cpp's convert_lora_to_gguf writes them (numpy would keep float64,
            # a type llama.cpp's matrix product does not support: it crashes)
            a, b = a.astype(np.float16), b.astype(np.float16)
            writer.add_tensor(f"{name}.lora_a", a)
            writer.add_tensor(f"{name}.lora_b", b)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(out)
