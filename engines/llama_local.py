"""The local engine: a GGUF model on llama-cpp-python, kept warm on one long-lived thread.

* One worker thread owns the ``Llama`` object (llama.cpp contexts are not thread-safe): it loads
  the model once, then runs one reply at a time from a job queue. ``stream()`` may be called from
  any thread; events cross back through a per-reply queue.
* ``n_threads`` = the cores free now, at most the physical cores (llama-cpp-python's default
  of half the logical CPUs was ~25% slower on a 2-core machine; all of them collapse on a busy
  one), re-read during every reply, see ``engines.cpu_budget``; a thread setting fixes it; all layers go to the GPU when llama.cpp was built with offload
  support; the context is the model's trained length capped by the ``context_cap`` setting.
* Seeds reproduce: the same model file, prompt, knobs and seed give the same text, in one
  process or a new one, whatever ran on the model before. llama.cpp's results depend in their
  last bits on how the prompt was split into batches (on AVX2 CPUs a token evaluated alone
  gives other logits than the same token inside a batch), and a hot sampler turns that into
  other words. So the prompt is always evaluated the way a cold cache would, in batches that
  depend on the request alone (``engines.llama_kv_resume.batch_starts``): the prompt is cut where
  each earlier reply of the conversation begins and ends, each part in batches of
  ``PROMPT_CHUNK`` tokens aligned to its own start. The tokens decoded one at a time while
  replying are not such a batch, so once a reply is written (after ``Finished``, while its
  reader reads) its text is evaluated again as the next prompt will hold it, as a batch of its
  own (``_keep_reply``): a follow-up then evaluates only what is new (the question and the
  template's glue). A follow-up reuses the cache only where every batch before is the same.
  The prompt evaluated last, asked again (the next best-of candidate, a regenerate), evaluates
  nothing: its KV is still cached and the logits it ended with are kept (``_prompt_end``).
  ``reproducible_seeds=False`` restores llama-cpp-python's own reuse (longest common prefix,
  no guarantee).
  ``Usage`` reports how many prompt tokens were actually evaluated (counted in ``eval``).
* Cancel is checked after every token, so a stop takes effect within one token.
* LoRA adapters (``ChatRequest.lora``) are loaded once per file onto the loaded model and set on
  its context per reply (``llama_set_adapters_lora``): switching adapters, or their scales,
  between turns never reloads the base model. The KV cache was computed under the previous
  adapters, so a change of adapters drops it (the next prompt is evaluated in full).
* Saved KV states (``LoadSettings.kv_cache_dir``, ``engines/kv_store.py``): after a reply the
  cache's reusable prefix is written to disk (after ``Finished``), and a request the in-memory
  cache cannot serve loads the saved state sharing its longest prefix, so a follow-up in a new
  process evaluates what an in-memory follow-up would. The bytes are the same KV values, so the
  reply is the same as from scratch.
"""
from __future__ import annotations

import json
import logging
import queue
import random
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

from app.domain.adapters import LoraAdapter
from app.domain.errors import (
    Cancelled,
    EngineError,
    ModelInvalid,
    ModelLoadFailed,
    OutpostError,
    UsageError,
)
from app.domain.messages import (
    ChatMessage,
    ChatRequest,
    Finished,
    FinishReason,
    Role,
    StreamEvent,
    TextDelta,
    Usage,
    cancel_reason,
    estimate_prompt_tokens,
)
from app.domain.sampling import sent_params
from engines.base import EngineBase, EngineCapabilities, EngineInfo
from engines.chat_format import ChatFormatter
from engines.cpu_budget import CpuBudget, physical_cores, prepare_openmp
from engines.gguf import GGUFInfo, read_lora, read_model
from engines.llama_log import route_llama_log
from engines.http_policy import AttemptRecord
from engines.llama_kv_resume import SavedPrefixes, batch_starts, reusable
from engines.llama_output import LogprobScorer, TextAssembler
from engines.model_load import KV_TYPES, NO_GPU_OFFLOAD, ModelLoadOptions, check_for_model

log = logging.getLogger(__name__)

# libgomp reads its wait policy once, when llama_cpp loads it: set it before anything can import
# llama_cpp (engines.cpu_budget explains why llama.cpp's threads must not spin ~10 ms per token)
prepare_openmp()

# Prompts are evaluated in batches of at most this many tokens (llama.cpp's n_batch), aligned to
# the start of the prompt and of each reply in it (engines.llama_kv_resume.batch_starts).
PROMPT_CHUNK = ModelLoadOptions().batch  # 128 unless a model's load settings say otherwise


class ContextOverflow(EngineError):
    kind = "context_too_long"


def gpu_offload_supported() -> bool:
    import llama_cpp  # deferred: llama_cpp loads only with a model

    try:
        return bool(llama_cpp.llama_supports_gpu_offload())
    except AttributeError:
        return False


@dataclass
class LoadSettings:
    context_cap: int = 4096
    n_threads: int = 0  # 0: the cores free now, at most the physical ones (cpu_budget.py)
    gpu_offload: bool = True
    seed: int = -1
    # Same seed + prompt + knobs -> same text, whatever the KV cache held (see the module doc).
    reproducible_seeds: bool = True
    # Deltas are handed to the consumer at most this often (the first one at once). Waking the
    # consumer thread per token steals a core from llama.cpp's compute threads; the window
    # only repaints every 33 ms anyway. 0 = one delta per token.
    delta_interval_s: float = 0.02
    # the model's own load settings (engines/model_load.py: context, GPU layers, threads, batch,
    # flash attention, KV type, mmap, mlock); None fields: auto
    options: ModelLoadOptions = field(default_factory=ModelLoadOptions)
    # the file is on a shared (removable) folder: auto mmap is off, so the weights are in RAM
    # and a share or USB stick that goes away cannot take the app down
    removable: bool = False
    # Saved KV states (engines/kv_store.py): after a reply whose prompt has at least
    # kv_cache_min_tokens reusable tokens, their KV cache is saved in this folder, and a new
    # engine (a restarted app, the next `outpost ask --conversation`) loads it instead of
    # evaluating that history again. None: off. At most kv_cache_max_bytes in all (LRU).
    kv_cache_dir: Path | None = None
    kv_cache_max_bytes: int = 2 * 1024 ** 3
    kv_cache_min_tokens: int = 256


@dataclass
class _Job:
    request: ChatRequest
    cancel: threading.Event
    events: "queue.Queue[Any]" = field(default_factory=queue.Queue)
    abandoned: threading.Event = field(default_factory=threading.Event)

    def stopped(self) -> bool:
        return self.cancel.is_set() or self.abandoned.is_set()


_STOP_WORKER = object()
_RAISE = "raise"


class LocalEngine(SavedPrefixes, EngineBase):
    """A local GGUF model behind the ``Engine`` contract. Construction is cheap; the model
    loads on the engine's own thread (``wait_ready`` blocks until it has)."""

    # Threads in auto mode (no thread setting): a CpuBudget, set at load; the count set on the
    # context now; how many decode calls ran with each count (for benchmarks and diagnostics).
    _budget: CpuBudget | None = None
    _serving = False
    threads_in_use = 0
    threads_used: dict[int, int]  # set at load


    def __init__(self, model_path: str | Path, settings: LoadSettings | None = None,
                 on_attempt=None):
        self.settings = settings or LoadSettings()
        # the usage ledger: one engines.http_policy.AttemptRecord per reply, like cloud engines
        self.on_attempt = on_attempt
        self.gguf: GGUFInfo = read_model(model_path)  # fails fast, naming the file and problem
        self.path = self.gguf.path
        options = self.settings.options
        meta = self.gguf.metadata
        self.n_layers = int(meta.get(f"{self.gguf.architecture}.block_count") or 0)
        check_for_model(options, name=self.path.name, trained_context=self.gguf.context_length,
                        layers=self.n_layers)
        trained = self.gguf.context_length or self.settings.context_cap
        self.n_ctx = options.context or min(trained, self.settings.context_cap)
        self.n_threads = options.threads or self.settings.n_threads or physical_cores()
        self.n_batch = options.batch
        self.flash_attn = options.flash_attn if options.flash_attn is not None \
            else options.kv_type != "f16"
        self.use_mmap = options.mmap if options.mmap is not None else not self.settings.removable
        self.gpu = False
        self.gpu_layers = 0  # decided at load: llama.cpp says whether it can offload
        # the llama_cpp.Llama, once loaded (Any: llama_cpp is imported only on the model's thread)
        self._llm: Any = None
        self._formatter: ChatFormatter | None = None
        self._evaluated = 0  # tokens run through llama.cpp's decode, counted in eval()
        # Tokens whose KV entries were computed in the batches of a reproducible evaluation
        # (batch_starts), and where those batches ended, after a 0: the only part of the cache
        # a reproducible reply may reuse.
        self._canonical: list[int] = []
        self._canonical_bounds: list[int] = []
        # the logits after the last prompt evaluated, with what they depend on (the prompt's
        # tokens, its batches, the adapters): the same prompt again (another best-of candidate,
        # a regenerate) samples from them, its KV still cached, evaluating nothing
        self._prompt_end: tuple[tuple, Any] | None = None
        self._load_error: OutpostError | None = None
        self.loads = 0  # how many times the base model was loaded (once per engine)
        # LoRA adapters loaded onto the model, by file (freed with the model), and the
        # (file, scale) pairs set on the context now
        self._adapters: dict[str, Any] = {}
        self._active_lora: tuple[tuple[str, float], ...] = ()
        self._ready = threading.Event()
        self._closed = False
        self._jobs: "queue.Queue[Any]" = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="outpost-local-model",
                                        daemon=True)
        self._thread.start()

    # -- public -----------------------------------------------------------------------------
    @property
    def placement(self) -> str:
        """Where the layers are, for the status bar: "GPU 30/30 layers", "CPU, 2 threads"."""
        if self.gpu_layers and self.n_layers:
            return f"GPU {min(self.gpu_layers, self.n_layers)}/{self.n_layers} layers"
        return f"CPU, {self.n_threads} thread{'s' if self.n_threads != 1 else ''}"

    @property
    def info(self) -> EngineInfo:
        return EngineInfo(engine="local", model=self.path.name,
                          detail=f"{self.placement}, context {self.n_ctx}",
                          placement=self.placement)

    @property
    def capabilities(self) -> EngineCapabilities:  # type: ignore[override]
        """Every knob (app.domain.sampling's "local" row), its own tokenizer, log-probabilities,
        grammar-constrained JSON, continuing a prefix; it loads in the background."""
        return EngineCapabilities(knob_kind="local", exact_token_count=True, logprobs=True,
                                  grammar=True, loads_in_background=True,
                                  continues_prefix=True,
                                  logs_own_attempts=self.on_attempt is not None)

    @property
    def ready(self) -> bool:
        return self._ready.is_set() and self._load_error is None

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until the model is loaded; raise its load error if it failed."""
        if not self._ready.wait(timeout):
            raise EngineError(f"The model {self.path.name} is still loading.")
        if self._load_error is not None:
            raise self._load_error

    def _check_open(self) -> None:
        if self._closed:
            raise EngineError(f"The local engine for {self.path.name} was closed; "
                              "load the model again.")

    def stream(self, request: ChatRequest, cancel: threading.Event) -> Iterator[StreamEvent]:
        self._check_open()
        job = _Job(request, cancel)
        self._jobs.put(job)
        finished = False
        try:
            while True:
                item = job.events.get()
                if isinstance(item, tuple) and item and item[0] == _RAISE:
                    raise item[1]
                yield item
                if isinstance(item, Finished):
                    finished = True
                    return
        finally:
            if not finished:
                job.abandoned.set()  # the consumer went away: stop decoding

    def count_prompt_tokens(self, request: ChatRequest) -> int:
        """Exact prompt tokens of a request under this model's template (runs on the worker)."""
        return int(self.call_on_model_thread(lambda llm: len(self._tokenize(request)[0])))

    # -- context budgeting (app.domain.context.TokenCounter) ---------------------------------------
    @property
    def context_window(self) -> int:
        return self.n_ctx

    @property
    def more_room(self) -> str | None:
        """How the window could grow (``app.domain.context.more_room``): a window the
        ``context_cap`` setting keeps below what the model was trained on grows with it."""
        trained = self.gguf.context_length
        if not trained or self.n_ctx >= trained:
            return None
        if self.settings.options.context:  # the model's own load setting set the window
            return (f"raise {self.path.name}'s context load setting (the window is "
                    f"{self.n_ctx:,} tokens; it was trained on {trained:,}): Model ▸ Models…, "
                    f"its Load settings, or `outpost models set MODEL context N`, N up to "
                    f"{trained}")
        return (f"raise the context_cap setting (the window is {self.n_ctx:,} tokens; "
                f"{self.path.name} was trained on {trained:,})")

    def estimate_cost(self, prompt_tokens: int, max_tokens: int) -> str | None:
        return "free"

    def count_prompt(self, messages) -> tuple[int, bool]:
        """Exact tokens of the chat-templated prompt once the model is loaded; before that a
        chars/4 estimate (counting must not wait for a load on the GUI thread)."""
        if not self.ready:
            return estimate_prompt_tokens(messages), False
        request = ChatRequest(model=self.info.model, messages=tuple(messages))
        return self.count_prompt_tokens(request), True

    def call_on_model_thread(self, fn):
        """Run ``fn(llama)`` on the model's own thread, between replies, and return its result.

        For diagnostics and benchmarks: llama.cpp's OpenMP thread team belongs to the thread that
        calls it, so code that must compare like with like runs here, not on a second thread
        (two teams on the same cores slow each other down by ~40%).
        """
        self._check_open()
        self.wait_ready()
        done: "queue.Queue[object]" = queue.Queue()
        self._jobs.put(("call", fn, done))
        ok, result = done.get()
        if not ok:
            raise result
        return result

    def close(self) -> None:
        self._closed = True
        self._jobs.put(_STOP_WORKER)
        self._thread.join(timeout=30)

    # -- worker thread ------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._load()
        except OutpostError as exc:
            self._load_error = exc
        except Exception as exc:  # llama.cpp's own errors
            self._load_error = ModelLoadFailed(
                f"llama.cpp could not load the model file {self.path}: {exc}.", str(self.path))
        finally:
            self._ready.set()
        while True:
            job = self._jobs.get()
            if job is _STOP_WORKER:
                break
            if isinstance(job, tuple) and job[0] == "call":
                _, fn, done = job
                try:
                    done.put((True, fn(self._llm)))
                except Exception as exc:
                    done.put((False, exc))
                continue
            if self._load_error is not None:
                job.events.put((_RAISE, self._load_error))
                continue
            self._serve_paced(job)
        if self._llm is not None:
            self._llm.close()
            self._llm = None

    def _load(self) -> None:
        import llama_cpp  # deferred: llama_cpp loads only with a model
        from llama_cpp import Llama  # deferred: llama_cpp loads only with a model

        route_llama_log(llama_cpp)  # its notes to logging, not stderr

        engine = self

        class _CountingLlama(Llama):
            def eval(self, tokens):  # noqa: D401 - counts what llama.cpp really evaluates
                engine._evaluated += len(tokens)
                # whatever is evaluated from here on overwrites the cache past this position
                engine._cut_canonical(self.n_tokens)
                engine._pace_threads()
                return super().eval(tokens)

        self.gpu = self.settings.gpu_offload and gpu_offload_supported()
        wanted = self.settings.options.gpu_layers
        self.gpu_layers = 0 if not self.gpu else (
            self.n_layers + 1 if wanted is None else wanted)  # + 1: the output layer
        kv_type = KV_TYPES[self.settings.options.kv_type]
        # no thread setting: as many threads as cores are free, up to n_threads (re-read during
        # replies, _pace_threads); a setting is the user's choice and stays fixed
        if not (self.settings.options.threads or self.settings.n_threads):
            self._budget = CpuBudget(self.n_threads)
        self.threads_in_use = self._budget.threads_now() if self._budget else self.n_threads
        self.threads_used = {}
        started = time.perf_counter()
        self._llm = _CountingLlama(
            model_path=str(self.path),
            n_ctx=self.n_ctx,
            n_threads=self.threads_in_use,
            n_threads_batch=self.threads_in_use,
            n_batch=self.n_batch,
            n_ubatch=self.n_batch,
            n_gpu_layers=self.gpu_layers,
            flash_attn=self.flash_attn,
            type_k=kv_type,
            type_v=kv_type,
            use_mmap=self.use_mmap,
            use_mlock=self.settings.options.mlock,
            seed=self.settings.seed if self.settings.seed >= 0 else llama_cpp.LLAMA_DEFAULT_SEED,
            verbose=False,
        )
        model = self._llm._model
        eos_id, bos_id = self._llm.token_eos(), self._llm.token_bos()
        eos = model.token_get_text(eos_id) if eos_id != -1 else ""
        bos = model.token_get_text(bos_id) if bos_id != -1 else ""
        self._formatter = ChatFormatter(self.gguf.chat_template, bos_token=bos, eos_token=eos,
                                        source=self.path.name)
        self._is_eog = _eog_checker(self._llm)
        self.loads += 1
        log.info("loaded %s in %.2fs (%s)", self.path.name, time.perf_counter() - started,
                 self.info.detail)

    def _serve_paced(self, job: _Job) -> None:
        """One reply, its decode calls following the free cores (``_pace_threads``)."""
        self._serving = True
        try:
            self._serve(job)
        finally:
            self._serving = False

    def _pace_threads(self) -> None:
        """Before each decode call of a reply: as many threads as cores are free now
        (``engines.cpu_budget``; llama.cpp takes a new count on the next decode)."""
        threads = self.threads_in_use
        if self._budget is not None and self._serving:
            threads = self._budget.threads_now()
            if threads != self.threads_in_use:
                import llama_cpp  # deferred: llama_cpp loads only with a model

                llama_cpp.llama_set_n_threads(self._llm._ctx.ctx, threads, threads)
                self.threads_in_use = threads
        self.threads_used[threads] = self.threads_used.get(threads, 0) + 1

    def _tokenize(self, request: ChatRequest) -> tuple[list[int], tuple[str, ...]]:
        tokens, stops, _ = self._tokenize_parts(request)
        return tokens, stops

    def _tokenize_parts(self, request: ChatRequest
                        ) -> tuple[list[int], tuple[str, ...], list[int]]:
        """The prompt's tokens, its stop sequences, and where each reply in it (an assistant
        message's text, the ``assistant_prefix``) begins and ends (``batch_starts``)."""
        assert self._formatter is not None  # set when the model loaded
        prompt = self._formatter.format(request.messages)
        bounds: list[int] = []
        if prompt.pieces:  # template pieces with special tokens, message text as plain text
            tokens: list[int] = []
            for i, (piece, content) in enumerate(prompt.pieces):
                start = len(tokens)
                tokens += self._llm.tokenize(piece.encode("utf-8"),
                                             add_bos=prompt.add_bos and i == 0,
                                             special=not content)
                if i in prompt.assistant_pieces:
                    bounds += [start, len(tokens)]
        else:  # a template that rewrites the text: tokenize it whole
            tokens = self._llm.tokenize(prompt.text.encode("utf-8"), add_bos=prompt.add_bos,
                                        special=True)
        prefix = request.assistant_prefix
        if prefix:
            # Continue a reply another engine started (mid-stream continuation). Its text is
            # tokenized as plain text: special-token syntax in it stays text.
            if prompt.template == "plain" and not prefix[:1].isspace():
                prefix = " " + prefix
            bounds.append(len(tokens))
            tokens += self._llm.tokenize(prefix.encode("utf-8"), add_bos=False, special=False)
        return tokens, tuple(prompt.stop) + tuple(request.stop), bounds

    @property
    def adapters_loaded(self) -> tuple[str, ...]:
        """The LoRA files loaded onto this model so far (each once)."""
        return tuple(self._adapters)

    def check_adapters(self, adapters: Sequence[LoraAdapter]) -> None:
        """Each adapter's header: a LoRA file (``read_lora``) for this model's architecture.
        The pipeline asks before a turn saves its prompt, so a conversation whose adapter does
        not fit the model it now asks is refused whole (the model need not be loaded)."""
        for adapter in adapters:
            header = read_lora(adapter.path)
            if header.architecture != self.gguf.architecture:
                raise ModelInvalid(f"The LoRA adapter {adapter.name} was made for "
                                   f"{header.architecture} models, but {self.path.name} is a "
                                   f"{self.gguf.architecture} model.", adapter.path)

    def _adapter(self, adapter: LoraAdapter):
        """The llama.cpp adapter for ``adapter``'s file, loaded onto the model on first use
        after checking the file is a LoRA for this model's architecture."""
        import llama_cpp  # deferred: llama_cpp loads only with a model

        path = str(Path(adapter.path).expanduser().resolve())
        if path in self._adapters:
            return path, self._adapters[path]
        self.check_adapters((adapter,))
        handle = llama_cpp.llama_adapter_lora_init(self._llm._model.model,
                                                   path.encode("utf-8"))
        if not handle:
            raise ModelInvalid(f"llama.cpp could not attach the LoRA adapter {adapter.name} "
                               f"to {self.path.name}: its tensors do not match the model's "
                               "(an adapter for another model of the same architecture?).",
                               adapter.path)
        self._adapters[path] = handle
        return path, handle

    def _set_adapters(self, wanted: tuple[LoraAdapter, ...]) -> None:
        """Set exactly ``wanted`` on the context (no-op when they are set already)."""
        import ctypes  # with llama_cpp: the arrays its C functions take

        import llama_cpp  # deferred: llama_cpp loads only with a model

        loaded = [self._adapter(a) for a in wanted]
        key = tuple((path, a.scale) for (path, _), a in zip(loaded, wanted))
        if key == self._active_lora:
            return
        n = len(loaded)
        handles = (llama_cpp.llama_adapter_lora_p_ctypes * max(n, 1))(*[h for _, h in loaded])
        scales = (ctypes.c_float * max(n, 1))(*[a.scale for a in wanted])
        if llama_cpp.llama_set_adapters_lora(self._llm._ctx.ctx, handles if n else None, n,
                                             scales if n else None):
            raise EngineError("llama.cpp refused to set the LoRA adapters "
                              f"{', '.join(a.label() for a in wanted)}.")
        self._active_lora = key
        # the cache holds keys and values computed under the previous adapters
        self._llm.n_tokens = 0
        self._cut_canonical(0)

    def _grammar(self, response_format: dict | None):
        """Structured output: a GBNF grammar built from the JSON schema (or llama.cpp's JSON
        grammar), so the model can only write JSON of that shape. Cached per schema."""
        if not response_format:
            return None

        # deferred: llama_cpp loads only with a model
        from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

        schema = response_format.get("schema")
        key = json.dumps(schema, sort_keys=True) if schema else ""
        cache = self.__dict__.setdefault("_grammars", {})
        if key not in cache:
            try:
                cache[key] = LlamaGrammar.from_json_schema(key, verbose=False) if schema \
                    else LlamaGrammar.from_string(JSON_GBNF, verbose=False)
            except Exception as exc:  # noqa: BLE001 - llama.cpp's converter: any failure
                raise UsageError(f"The JSON schema cannot be turned into a grammar for the "
                                 f"local model: {exc}.") from None
        return cache[key]

    def _serve(self, job: _Job) -> None:
        request = job.request
        started = time.perf_counter()
        try:
            tokens, stops, bounds = self._tokenize_parts(request)
            grammar = self._grammar(request.response_format)
            self._set_adapters(request.lora)
        except OutpostError as exc:
            job.events.put((_RAISE, exc))
            return
        except Exception as exc:
            job.events.put((_RAISE, UsageError(f"The prompt could not be tokenized: {exc}.")))
            return
        room = self.n_ctx - len(tokens)
        if room < 1:
            job.events.put((_RAISE, ContextOverflow(
                f"The conversation is {len(tokens)} tokens long, which does not fit the local "
                f"model's context window of {self.n_ctx} tokens. Start a new chat or shorten "
                "the message.")))
            return
        max_new = min(request.max_tokens, room)
        decoder = TextAssembler(stops)
        interval = self.settings.delta_interval_s
        pending = ""
        last_put = 0.0
        completion = 0
        first_at = last_at = None
        reason = FinishReason.LENGTH
        error: Exception | None = None
        self._evaluated = 0
        evaluated_prompt = None
        scorer = LogprobScorer() if request.logprobs else None
        knobs = sent_params("local", request)  # llama.cpp's defaults for knobs left empty
        # a seed makes the reply reproducible: same seed + input + knobs -> same text; without
        # one a seed is drawn, and reported (Finished.seed) so the reply can be made again
        drawn = None if "seed" in knobs else random.randrange(2 ** 31)
        self._llm.set_seed(knobs["seed"] if drawn is None else drawn)
        reproducible = self.settings.reproducible_seeds
        starts = batch_starts(len(tokens), bounds, self.n_batch) if reproducible else []
        # the same prompt as last time, still cached: nothing to evaluate
        resumed = reproducible and self._resume_prompt_end(tokens, starts)
        if not resumed:
            self._restore_saved_prefix(tokens, starts)  # a saved state longer than the reuse
        parts: list[str] = []  # the reply's text (_keep_reply)
        # (generate() finds a prompt evaluated here whole in the cache and samples at once)
        generator = self._llm.generate(
            tokens, temp=knobs["temperature"], top_p=knobs["top_p"], top_k=knobs["top_k"],
            min_p=knobs["min_p"], repeat_penalty=knobs["repeat_penalty"],
            presence_penalty=knobs["presence_penalty"],
            frequency_penalty=knobs["frequency_penalty"], reset=True,
            grammar=grammar, logits_processor=scorer.processors if scorer else None)
        try:
            if reproducible and not resumed:
                self._prefill(tokens, starts, self._canonical_reuse(tokens, starts))
                self._note_prompt_end(tokens, starts)
            for token in generator:
                if scorer is not None:
                    scorer.took(token)
                now = time.perf_counter()
                if evaluated_prompt is None:
                    evaluated_prompt = self._evaluated
                    first_at = now
                last_at = now
                if job.stopped():
                    reason = FinishReason.CANCELLED
                    break
                if self._is_eog(token):
                    reason = FinishReason.STOP
                    break
                completion += 1
                text, hit_stop = decoder.feed(self._llm.detokenize([token]))
                pending += text
                parts.append(text)
                if pending and now - last_put >= interval:
                    job.events.put(TextDelta(pending))
                    pending, last_put = "", now
                if hit_stop:
                    reason = FinishReason.STOP
                    break
                if completion >= max_new:
                    reason = FinishReason.LENGTH
                    break
        except Exception as exc:  # a llama.cpp failure mid-reply
            reason = FinishReason.ERROR
            error = EngineError(f"The local model failed while answering: {exc}.")
        finally:
            generator.close()
        if reason is not FinishReason.CANCELLED and reason is not FinishReason.ERROR:
            tail = decoder.flush()
            pending += tail
            parts.append(tail)
        if pending:
            job.events.put(TextDelta(pending))
        if reason is FinishReason.CANCELLED and job.abandoned.is_set() and \
                not job.cancel.is_set():
            return  # nobody is listening
        evaluated_prompt = evaluated_prompt if evaluated_prompt is not None else self._evaluated
        job.events.put(Usage(prompt_tokens=len(tokens), completion_tokens=completion,
                             cached_prompt_tokens=max(0, len(tokens) - evaluated_prompt)))
        ttft_ms = (first_at - started) * 1000 if first_at is not None else None
        tps = None
        if first_at is not None and last_at is not None and completion > 1 and last_at > first_at:
            tps = (completion - 1) / (last_at - first_at)
        # the ledger row is written before Finished goes out: whoever sees the end of the
        # reply (the window going idle, a CLI exiting) finds the attempt already recorded
        self._record(request, job, started, len(tokens), completion,
                     max(0, len(tokens) - evaluated_prompt), ttft_ms, reason, error)
        job.events.put(Finished(reason, ttft_ms=ttft_ms, tokens_per_s=tps, error=error,
                                mean_logprob=scorer.mean() if scorer else None,
                                seed=drawn))
        if first_at is not None and error is None and reproducible:
            self._keep_reply(request, "".join(parts))
        if first_at is not None and error is None:
            # after Finished: the reply's reader does not wait for the disk; a state of a
            # reply whose messages were deleted meanwhile is not kept (``forget_all``)
            self._save_prefix(since=time.time() - (time.perf_counter() - started))

    def _prefill(self, tokens: list[int], starts: Sequence[int], keep: int) -> None:
        """Evaluate ``tokens`` from ``keep`` on (a batch start: ``_canonical_reuse``), one
        llama.cpp batch per part of ``starts``, exactly as on a cold cache; the cache past
        ``keep`` is dropped first."""
        llm = self._llm
        if llm.n_tokens > keep:
            llm.n_tokens = keep  # eval() drops the cache past this point
        self._cut_canonical(keep)
        if not self._canonical_bounds:
            self._canonical_bounds = [0]
        for start, end in zip(starts, [*starts[1:], len(tokens)]):
            if start < keep:
                continue
            llm.eval(tokens[start:end])
            self._canonical += tokens[start:end]
            self._canonical_bounds.append(end)

    def _prompt_key(self, tokens: list[int], starts: Sequence[int]) -> tuple:
        return tuple(tokens), tuple(starts), self._active_lora

    def _logits_row(self):
        """The context's logits of the last token evaluated (a writable view), or None."""
        import llama_cpp  # deferred: llama_cpp loads only with a model
        import numpy as np  # deferred: numpy (llama_cpp's) only with a model

        if self._llm.n_tokens == 0:
            return None
        pointer = llama_cpp.llama_get_logits_ith(self._llm._ctx.ctx, -1)
        if not pointer:
            return None
        return np.ctypeslib.as_array(pointer, shape=(self._llm.n_vocab(),))

    def _note_prompt_end(self, tokens: list[int], starts: Sequence[int]) -> None:
        """Keep the logits the prompt's evaluation (``_prefill``) ended with."""
        row = self._logits_row()
        self._prompt_end = None if row is None else (self._prompt_key(tokens, starts),
                                                     row.copy())

    def _resume_prompt_end(self, tokens: list[int], starts: Sequence[int]) -> bool:
        """The prompt evaluated last, asked again (the next best-of candidate, a regenerate)
        while every batch of it is still in the cache: its KV is kept, the reply decoded after
        it dropped, and the logits its evaluation ended with put back, so the reply samples at
        once from exactly what a cold evaluation gives (the same batches: the same bits)."""
        saved = self._prompt_end
        if saved is None or saved[0] != self._prompt_key(tokens, starts):
            return False
        end = len(tokens)
        llm = self._llm
        if reusable(self._canonical, self._canonical_bounds, tokens, [*starts, end],
                    llm.n_tokens) < end:
            return False
        row = self._logits_row()
        if row is None or row.shape != saved[1].shape:
            return False
        llm._ctx.kv_cache_seq_rm(-1, end, -1)
        llm.n_tokens = end
        self._cut_canonical(end)
        row[:] = saved[1]
        llm._requires_eval = False  # (generate() then samples at once: the logits are live)
        return True

    def _keep_reply(self, request: ChatRequest, text: str) -> None:
        """After a reply: evaluate its text as the follow-up's prompt will hold it, in that
        prompt's batches (``batch_starts``), so the follow-up evaluates only what is new. The
        tokens decoded while replying are not reusable (they were not evaluated in those
        batches), and the text can tokenize otherwise than it was sampled. Skipped when
        another reply is waiting for the model (its prompt evaluation does what is needed)."""
        text = (request.assistant_prefix or "") + text
        with self._jobs.mutex:  # (a look only: the model thread is the one taking jobs)
            waiting = any(isinstance(job, _Job) for job in self._jobs.queue)
        if not text or waiting:
            return
        # the follow-up's prompt up to the end of this reply: a user turn after it, so the
        # template renders the reply as it will then
        follow_up = replace(request, assistant_prefix="", messages=(
            *request.messages, ChatMessage(Role.ASSISTANT, text), ChatMessage(Role.USER, "?")))
        try:
            tokens, _, bounds = self._tokenize_parts(follow_up)
            if not bounds or bounds[-1] >= self.n_ctx:
                return
            end = bounds[-1]  # where this reply's text ends
            starts = batch_starts(end, bounds, self.n_batch)
            keep = self._canonical_reuse(tokens[:end], [*starts, end])
            if keep < end:
                self._prefill(tokens[:end], starts, keep)
        except Exception:  # noqa: BLE001 - only the next reply's speed depends on it
            log.exception("could not keep the reply in the KV cache")
            self._drop_cache()

    def _cut_canonical(self, n_tokens: int) -> None:
        """Forget the canonical batches that do not end by ``n_tokens`` (the cache is
        overwritten from there)."""
        bounds = [b for b in self._canonical_bounds if b <= n_tokens]
        self._canonical_bounds = bounds
        del self._canonical[(bounds[-1] if bounds else 0):]

    def _canonical_reuse(self, tokens: list[int], starts: Sequence[int]) -> int:
        """How many leading ``tokens``, evaluated in batches beginning at ``starts``, a
        reproducible reply may take from the cache (``reusable``); never the last batch of a
        prompt (``starts`` ends with its start): it gives the first reply token's logits."""
        return reusable(self._canonical, self._canonical_bounds, tokens, starts,
                        self._llm.n_tokens)

    def _record(self, request: ChatRequest, job: "_Job", started: float, prompt: int,
                completion: int, cached: int, ttft_ms: float | None, reason: FinishReason,
                error: Exception | None) -> None:
        if self.on_attempt is None:
            return

        outcome = getattr(job.cancel, "outcome", None) if error is None else None  # "won"
        if reason is FinishReason.CANCELLED:
            outcome = cancel_reason(job.cancel)
        try:
            self.on_attempt(AttemptRecord(
                attempt=1, status=None, latency_ms=(time.perf_counter() - started) * 1000,
                error_kind=error.kind if isinstance(error, OutpostError) else None,
                idempotency_key=request.idempotency_key, provider="local",
                model=self.path.name, outcome=outcome, prompt_tokens=prompt,
                completion_tokens=completion, cached_prompt_tokens=cached,
                ttft_ms=round(ttft_ms, 2) if ttft_ms is not None else None, kind="local"))
        except Exception:  # the ledger must never break a reply
            log.exception("could not record the local attempt")


def _eog_checker(llm):
    import llama_cpp  # deferred: llama_cpp loads only with a model

    vocab = getattr(llm._model, "vocab", None)
    fn = getattr(llama_cpp, "llama_vocab_is_eog", None)
    if vocab is not None and fn is not None:
        return lambda token: bool(fn(vocab, token))
    eos = llm.token_eos()
    return lambda token: token == eos


__all__ = ["LocalEngine", "LoadSettings", "ContextOverflow", "Cancelled", "physical_cores",
           "gpu_offload_supported", "NO_GPU_OFFLOAD"]
