"""LoRA adapters on the real bundled model, with adapters made on the spot for its architecture
(tests/lora_files.py): set per reply, switched between turns without reloading the base model.

The assertions compare the model with itself (greedy decoding, one process): never what it says.
"""
from __future__ import annotations

import threading

import pytest

from app.domain.adapters import LoraAdapter, parse_lora
from app.domain.errors import ModelInvalid, ModelNotFound, UsageError
from app.domain.messages import ChatMessage, ChatRequest, Role, accumulate
from engines.llama_local import LocalEngine
from tests.lora_files import make_lora

pytestmark = pytest.mark.local_model

PROMPT = "Write one sentence about the sea."


@pytest.fixture(scope="module")
def adapters(bundled_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("lora")
    return (make_lora(bundled_model, folder / "style-a.gguf", seed=1),
            make_lora(bundled_model, folder / "style-b.gguf", seed=2))


@pytest.fixture(scope="module")
def engine(bundled_model):
    engine = LocalEngine(bundled_model)
    engine.wait_ready(timeout=120)
    yield engine
    engine.close()


def greedy(engine, *lora: LoraAdapter) -> str:
    request = ChatRequest(model="m", messages=(ChatMessage(Role.USER, PROMPT),),
                          temperature=0.0, max_tokens=24, lora=tuple(lora))
    reply = accumulate(engine.stream(request, threading.Event()))
    assert reply.finish is not None and reply.finish.error is None
    return reply.text


def test_scale_zero_is_the_base_model_and_a_scale_changes_the_text(engine, adapters):
    base = greedy(engine)
    assert greedy(engine, LoraAdapter(str(adapters[0]), 0.0)) == base
    assert greedy(engine, LoraAdapter(str(adapters[0]), 1.0)) != base
    assert greedy(engine) == base  # detaching restores the base model exactly


def test_two_adapters_alternate_over_four_turns_with_one_model_load(bundled_model, adapters):
    engine = LocalEngine(bundled_model)
    try:
        engine.wait_ready(timeout=120)
        a, b = (LoraAdapter(str(p), 1.0) for p in adapters)
        texts = [greedy(engine, a), greedy(engine, b), greedy(engine, a), greedy(engine, b)]
        assert engine.loads == 1
        assert len(engine.adapters_loaded) == 2  # each file loaded once, then only switched
        assert texts[0] == texts[2] and texts[1] == texts[3]
        assert texts[0] != texts[1]
    finally:
        engine.close()


def test_a_changed_scale_does_not_reuse_the_cache_of_the_old_one(engine, adapters):
    # same prompt, same adapter, other scale: the KV cache computed at 1.0 must not serve 0.5
    half = LoraAdapter(str(adapters[0]), 0.5)
    first = greedy(engine, half)
    greedy(engine, LoraAdapter(str(adapters[0]), 1.0))
    assert greedy(engine, half) == first


def test_bad_adapters_get_one_clear_sentence_and_the_engine_keeps_answering(
        engine, adapters, bundled_model, gemma_model, tmp_path):
    missing = tmp_path / "gone.gguf"
    with pytest.raises(ModelNotFound, match="does not exist"):
        greedy(engine, LoraAdapter(str(missing)))
    with pytest.raises(ModelInvalid, match="is not a LoRA adapter"):
        greedy(engine, LoraAdapter(str(bundled_model)))  # a whole model, not an adapter
    other = make_lora(gemma_model, tmp_path / "for-gemma.gguf", layers=(1,))
    with pytest.raises(ModelInvalid, match="made for gemma3 models"):
        greedy(engine, LoraAdapter(str(other)))
    html = tmp_path / "page.gguf"
    html.write_text("<html>not found</html>")
    with pytest.raises(ModelInvalid, match="cannot be used as a LoRA adapter: it is not a GGUF file"):
        greedy(engine, LoraAdapter(str(html)))
    assert greedy(engine) == greedy(engine)  # still answering, base model


def test_the_lora_spec_names_a_file_and_a_scale():
    assert parse_lora("style.gguf") == LoraAdapter("style.gguf", 1.0)
    assert parse_lora("dir/style.gguf:0.5") == LoraAdapter("dir/style.gguf", 0.5)
    assert parse_lora(r"C:\lora\x.gguf:-0.25") == LoraAdapter(r"C:\lora\x.gguf", -0.25)
    assert parse_lora(r"C:\lora\x.gguf").path == r"C:\lora\x.gguf"
    with pytest.raises(UsageError, match="not a number"):
        parse_lora("style.gguf:strong")
    with pytest.raises(UsageError, match="between -4 and 4"):
        parse_lora("style.gguf:40")
    request = ChatRequest(model="m", messages=(ChatMessage(Role.USER, "hi"),),
                          lora=(LoraAdapter("a.gguf", 0.5),))
    assert ChatRequest.from_record(request.as_record()).lora == request.lora
