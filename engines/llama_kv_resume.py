"""The local engine's saved KV states (``engines.kv_store``): a conversation resumed after a
restart does not evaluate its whole history again. After a reply, the cache's reusable tokens
are saved (``_save_prefix``); before one, the saved state sharing the longest prefix with the
prompt is loaded when it covers more than the in-memory cache can reuse
(``_restore_saved_prefix``). A state is keyed by everything it depends on besides its tokens
(``_kv_identity``: the model file, template, context and batch sizes, KV type, adapters, the
llama.cpp build), so it is never used for another model, template or history.

``SavedPrefixes`` is a part of ``engines.llama_local.LocalEngine``: it uses the engine's model
(``_llm``), settings and canonical prefix, declared below, and runs on the model's thread.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Sequence

from engines.gguf import GGUFInfo
from engines.kv_store import KVStore, common_prefix, digest, file_fingerprint

log = logging.getLogger("engines.llama_local")


def batch_starts(length: int, bounds: Sequence[int], size: int) -> list[int]:
    """Where each batch of a reproducible prompt evaluation starts: the prompt cut at
    ``bounds`` (where each reply of the conversation begins and ends), each part in batches of
    ``size`` tokens aligned to its own start. A function of the request alone, so a warm cache
    and a cold one evaluate every token in the same batch, and a reply, evaluated as a batch
    of its own once it is written, is the cache its follow-up reuses."""
    edges = sorted({0, length, *(b for b in bounds if 0 < b < length)})
    starts: list[int] = []
    for start, end in zip(edges, edges[1:]):
        starts += range(start, end, size)
    return starts


def reusable(cached: Sequence[int], cached_bounds: Sequence[int], tokens: Sequence[int],
             starts: Sequence[int], n_cached: int) -> int:
    """How many leading ``tokens`` (to be evaluated in batches beginning at ``starts``) a
    reproducible evaluation may take from a cache of ``cached`` (its first ``n_cached`` still
    there), whose batches ended at ``cached_bounds`` (after a 0): up to a position where a
    batch begins in both, every batch before it the same tokens in the same batch."""
    shared = min(common_prefix(cached, tokens), n_cached)
    best = 0
    for have, want in zip(cached_bounds, starts):
        if have != want or have > shared:
            break
        best = have
    return best


class SavedPrefixes:
    """Saving and restoring the KV cache per prompt prefix (see the module's docstring)."""

    # the engine's, set by LocalEngine
    settings: Any  # engines.llama_local.LoadSettings (that module imports this one)
    gguf: GGUFInfo
    path: Path
    n_ctx: int
    n_batch: int
    flash_attn: bool
    gpu_layers: int
    _llm: Any
    _canonical: list[int]
    _canonical_bounds: list[int]
    _active_lora: tuple[tuple[str, float], ...]

    def _canonical_reuse(self, tokens: list[int], starts: Sequence[int]) -> int:  # (LocalEngine's)
        raise NotImplementedError

    # Made on first use, on the model thread, when LoadSettings.kv_cache_dir is set.
    _kv_store: KVStore | None = None
    _kv_model: str | None = None  # the model file's fingerprint, taken once
    # of the last reply: prompt tokens loaded from a saved state (0: none)
    kv_restored_tokens: int = 0
    # of the last save: (tokens, bytes, seconds); None until one was written
    kv_last_save: tuple[int, int, float] | None = None

    def _kv(self) -> KVStore | None:
        folder = self.settings.kv_cache_dir
        if folder is None:
            return None
        if self._kv_store is None:
            self._kv_store = KVStore(folder, self.settings.kv_cache_max_bytes)
        return self._kv_store

    def _kv_identity(self) -> dict[str, Any]:
        """Everything a KV state depends on besides its tokens. Not the thread count: llama.cpp
        splits work between threads by rows, and 1 and 2 threads gave bit-identical logits."""
        import llama_cpp  # deferred: llama_cpp loads only with a model

        if self._kv_model is None:
            self._kv_model = file_fingerprint(self.path)
        lora = []
        for path, scale in self._active_lora:
            stat = os.stat(path)
            lora.append([path, stat.st_size, stat.st_mtime_ns, scale])
        # format 2: a reproducible state records its batches (batch_starts); 1's did not
        return {"format": 2, "model": self._kv_model,
                "template": digest(self.gguf.chat_template or "plain"),
                "n_ctx": self.n_ctx, "n_batch": self.n_batch,
                "kv_type": self.settings.options.kv_type, "flash_attn": bool(self.flash_attn),
                "gpu_layers": self.gpu_layers,
                "reproducible_seeds": self.settings.reproducible_seeds, "lora": lora,
                "llama_cpp": llama_cpp.__version__,
                "system": llama_cpp.llama_print_system_info().decode("utf-8", "replace")}

    def _restore_saved_prefix(self, tokens: list[int], starts: Sequence[int]) -> None:
        """Load the saved state sharing the longest prefix with ``tokens`` (evaluated in batches
        beginning at ``starts`` when reproducible) when it covers at least a chunk more than
        the in-memory cache can reuse (a new engine's cache is empty)."""
        self.kv_restored_tokens = 0
        store = self._kv()
        if store is None or len(tokens) < self.settings.kv_cache_min_tokens:
            return
        llm, chunk = self._llm, self.n_batch
        reproducible = self.settings.reproducible_seeds
        if reproducible:
            limit = starts[-1]  # the last batch is evaluated anyway: it gives the logits
            in_memory = self._canonical_reuse(tokens, starts)
        else:
            limit = len(tokens) - 1
            in_memory = min(common_prefix(llm.input_ids[:llm.n_tokens].tolist(), tokens), limit)
        if limit - in_memory < chunk:
            return
        try:
            identity = self._kv_identity()
            for shared, saved in store.candidates(identity, tokens, longer_than=in_memory):
                usable = min(shared, limit)
                if reproducible:
                    usable = reusable(saved.tokens, saved.bounds, tokens, starts, shared)
                if shared - in_memory < chunk:
                    break  # the rest share even less
                if usable - in_memory < chunk:
                    continue  # its batches part from this prompt's earlier
                state = store.read_state(saved)
                if state is None:
                    continue  # damaged: deleted
                if self._load_seq_state(state, saved.tokens, usable, saved.bounds):
                    self.kv_restored_tokens = usable
                    return
                log.warning("llama.cpp refused the saved KV state %s", saved.path.name)
                store.discard(saved.path)
        except Exception:  # noqa: BLE001 - a cache that fails is a miss, never a failed reply
            log.exception("could not restore a saved KV state")
            self._drop_cache()

    def _load_seq_state(self, state: bytearray, tokens: tuple[int, ...], usable: int,
                        bounds: Sequence[int] = ()) -> bool:
        """Replace the cache with ``state`` (the KV of ``tokens``, evaluated in batches ending
        at ``bounds``), keeping ``usable`` tokens."""
        import ctypes  # with llama_cpp: the buffer its C function reads

        import llama_cpp  # deferred: llama_cpp loads only with a model

        llm = self._llm
        self._drop_cache()
        buffer = (ctypes.c_uint8 * len(state)).from_buffer(state)  # a view, not a copy
        if llama_cpp.llama_state_seq_set_data(llm._ctx.ctx, buffer, len(state), 0) != len(state):
            self._drop_cache()
            return False
        llm._ctx.kv_cache_seq_rm(-1, usable, -1)
        llm.input_ids[:usable] = tokens[:usable]
        llm.n_tokens = usable
        llm._requires_eval = True  # the logits are not in the state: evaluate at least one
        # a state saved in reproducible mode holds only canonical batches (its identity says so)
        reproducible = self.settings.reproducible_seeds
        self._canonical = list(tokens[:usable]) if reproducible else []
        self._canonical_bounds = [b for b in bounds if b <= usable] if reproducible else []
        return True

    def _drop_cache(self) -> None:
        self._llm._ctx.kv_cache_clear()
        self._llm.n_tokens = 0
        self._canonical = []
        self._canonical_bounds = []

    def _save_prefix(self, since: float | None = None) -> None:
        """Save the cache's reusable tokens (the canonical batches; with reproducible seeds off,
        everything evaluated) unless that exact state is saved already."""
        import ctypes  # with llama_cpp: the buffer its C function fills

        import llama_cpp  # deferred: llama_cpp loads only with a model

        store = self._kv()
        if store is None:
            return
        llm = self._llm
        reproducible = self.settings.reproducible_seeds
        tokens = list(self._canonical) if reproducible \
            else llm.input_ids[:llm.n_tokens].tolist()
        bounds = list(self._canonical_bounds) if reproducible else []
        if len(tokens) < max(1, self.settings.kv_cache_min_tokens):
            return
        try:
            started = time.perf_counter()
            identity = self._kv_identity()
            if store.has(identity, tokens, bounds):
                return
            # the cells past the canonical batches (a reply not evaluated again) are not
            # saved; the next reply would cut them anyway (_prefill)
            llm._ctx.kv_cache_seq_rm(-1, len(tokens), -1)
            llm.n_tokens = len(tokens)
            ctx = llm._ctx.ctx
            size = llama_cpp.llama_state_seq_get_size(ctx, 0)
            if size > store.max_bytes:
                return  # it could never be kept: do not even copy it out
            buffer = (ctypes.c_uint8 * size)()
            written = llama_cpp.llama_state_seq_get_data(ctx, buffer, size, 0)
            if not 0 < written <= size:
                return
            # a view, not a copy: the store copies it once, into the file's bytes
            if store.save(identity, tokens, memoryview(buffer).cast("B")[:written],
                          since=since, bounds=bounds) is not None:
                self.kv_last_save = (len(tokens), written, time.perf_counter() - started)
        except Exception:  # noqa: BLE001 - a cache that fails to save is only a cache
            log.exception("could not save the KV state")
