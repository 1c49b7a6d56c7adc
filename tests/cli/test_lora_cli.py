"""`outpost ask --lora FILE[:SCALE]` on the real bundled model: the reply stores the adapter and
scale it used, a conversation keeps its adapter, a cloud route is refused before anything is
saved."""
from __future__ import annotations

import pytest

from tests.cli.test_cli import assert_nothing_stored, assert_one_sentence, cli, json_lines, \
    open_store
from tests.lora_files import make_lora

pytestmark = [pytest.mark.local_model, pytest.mark.slow]


@pytest.fixture(scope="module")
def adapter(bundled_model, tmp_path_factory):
    return make_lora(bundled_model, tmp_path_factory.mktemp("lora") / "style.gguf", seed=3)


def replies(home):
    store = open_store(home)
    try:
        conversation = store.list_conversations()[0]
        return conversation, [m for m in store.branch(conversation.id)
                              if m.role.value == "assistant"]
    finally:
        store.close()


def test_ask_with_a_lora_stores_it_on_the_reply_and_the_conversation(outpost_home, adapter):
    proc = cli("ask", "Say hi.", "--lora", f"{adapter}:0.5", "--temperature", "0",
               "--max-tokens", "8", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json_lines(proc.stdout)[-1]["event"] == "finished"
    conversation, (reply,) = replies(outpost_home)
    used = [{"name": "style.gguf", "path": str(adapter), "scale": 0.5}]
    assert reply.params["lora"] == used
    assert conversation.sampling["lora"] == used

    # the next turn of that conversation keeps its adapter; --lora for one turn overrides it
    proc = cli("ask", "Again.", "--conversation", conversation.id, "--temperature", "0",
               "--max-tokens", "8")
    assert proc.returncode == 0, proc.stderr
    proc = cli("ask", "Once more.", "--conversation", conversation.id, "--lora",
               f"{adapter}:0", "--temperature", "0", "--max-tokens", "8")
    assert proc.returncode == 0, proc.stderr
    _, (_, second, third) = replies(outpost_home)
    assert second.params["lora"] == used
    assert third.params["lora"][0]["scale"] == 0.0

    shown = cli("history", "show", conversation.id)
    assert "style.gguf × 0.5" in shown.stdout


def test_a_lora_on_a_cloud_route_is_refused_before_anything_is_saved(outpost_home, adapter):
    added = cli("providers", "add", "far", "--kind", "openai", "--base-url",
                "http://127.0.0.1:9/v1", "--model", "m")
    assert added.returncode == 0, added.stderr
    proc = cli("ask", "Hi.", "--provider", "far", "--route", "cloud", "--lora", str(adapter))
    assert proc.returncode == 2
    assert "works on the local model only" in assert_one_sentence(proc.stderr)
    assert_nothing_stored(outpost_home)


def test_a_bad_lora_spec_and_a_missing_file_are_one_sentence(outpost_home, tmp_path):
    proc = cli("ask", "Hi.", "--lora", "style.gguf:loud")
    assert proc.returncode == 2
    assert "not a number" in assert_one_sentence(proc.stderr)
    assert_nothing_stored(outpost_home)
    proc = cli("ask", "Hi.", "--lora", str(tmp_path / "gone.gguf"), "--max-tokens", "4")
    assert proc.returncode != 0
    assert "does not exist" in proc.stderr and "Traceback" not in proc.stderr


def test_a_preset_with_no_knobs_is_refused_and_nothing_is_saved(outpost_home):
    proc = cli("preset", "save", "Empty")
    assert proc.returncode == 2
    assert "Nothing to save in Empty" in assert_one_sentence(proc.stderr)
    assert "Empty" not in cli("preset", "list").stdout


def test_a_preset_refuses_what_it_cannot_hold_and_a_file_that_is_no_adapter(outpost_home,
                                                                           bundled_model):
    """`preset save` takes the `ask` flags; those a preset does not keep (the system prompt,
    JSON output, best-of) are refused by name, and a LoRA file is checked when saved (they
    were dropped, exit 0, and a missing adapter failed only when the preset was used)."""
    refused = cli("preset", "save", "Full", "--temperature", "0.3", "--system", "Be terse",
                  "--json-mode", "--best-of", "3")
    assert refused.returncode == 2
    said = assert_one_sentence(refused.stderr)
    assert "--system, --json-mode, --best-of" in said and "nothing was saved" in said
    for spec, words in ((str(bundled_model), "is not a LoRA adapter"),
                        ("/nowhere/style.gguf:0.5", "does not exist")):
        bad = cli("preset", "save", "Full", "--temperature", "0.3", "--lora", spec)
        assert bad.returncode == 3 and words in assert_one_sentence(bad.stderr)
    seedless = cli("preset", "save", "Full", "--temperature", "0.3", "--seed", "random")
    assert seedless.returncode == 2 and "--seed random goes with a message" in seedless.stderr
    assert "Full" not in cli("preset", "list").stdout


def test_a_preset_can_attach_a_lora(outpost_home, adapter):
    proc = cli("preset", "save", "Styled", "--temperature", "0", "--lora", f"{adapter}:0.25")
    assert proc.returncode == 0, proc.stderr
    assert "LoRA style.gguf × 0.25" in cli("preset", "list").stdout
    based = cli("preset", "save", "Based", "--preset", "Styled", "--top-k", "5")  # as --from
    assert based.returncode == 0, based.stderr
    based_on = json_lines(cli("preset", "show", "Based").stdout)[0]
    assert (based_on["temperature"], based_on["top_k"]) == (0, 5)
    shown = json_lines(cli("preset", "show", "Styled").stdout)[0]
    assert shown["lora"] == [{"name": "style.gguf", "path": str(adapter), "scale": 0.25}]
    proc = cli("ask", "Hi.", "--preset", "Styled", "--max-tokens", "4")
    assert proc.returncode == 0, proc.stderr
    _, (reply,) = replies(outpost_home)
    assert reply.params["lora"][0]["scale"] == 0.25


def test_an_adapter_given_as_the_model_is_refused_saying_how_to_attach_it(outpost_home,
                                                                          adapter):
    """llama.cpp only says "Failed to load model from file": the header says what it is."""
    refused = cli("ask", "hi", "--model", str(adapter))
    assert refused.returncode == 3
    said = assert_one_sentence(refused.stderr)
    assert "style.gguf is a LoRA adapter (its GGUF header says general.type = adapter), " \
           "not a model: attach it to a llama model with `--lora " in said
    assert_nothing_stored(outpost_home)


def test_llama_cpps_own_notes_stay_off_stderr(outpost_home, gemma_model):
    """llama-cpp-python read ggml's log levels in an older order, so a Gemma 3 model's
    warning "llama_kv_cache_iswa: using full-size SWA cache (ref: …)" was printed above
    every answer as if an error (engines/llama_log.py)."""
    proc = cli("ask", "Hi", "--model", str(gemma_model), "--max-tokens", "2")
    assert proc.returncode == 0, proc.stderr
    assert "llama" not in proc.stderr and "SWA" not in proc.stderr, proc.stderr


def test_an_adapter_that_does_not_fit_the_new_model_is_refused_and_no_lora_detaches_it(
        outpost_home, adapter, gemma_model):
    """A chat with a llama adapter switched to a gemma model: the turn was saved (question and
    an [error] reply) and the switch remembered, so every later ask failed; now it is refused
    before anything is saved or remembered, and --no-lora detaches the adapter for good."""
    first = cli("ask", "Hi.", "--lora", str(adapter), "--max-tokens", "2")
    assert first.returncode == 0, first.stderr
    conversation, _ = replies(outpost_home)
    cid = conversation.id

    def messages() -> int:
        store = open_store(outpost_home)
        try:
            return len(store.branch(cid))
        finally:
            store.close()

    switched = cli("ask", "And Spain?", "--conversation", cid, "--model", str(gemma_model),
                   "--max-tokens", "2")
    assert switched.returncode == 3
    said = assert_one_sentence(switched.stderr)  # (no "… and remembers that." note)
    assert f"style.gguf was made for llama models, but {gemma_model.name} is a gemma3 " \
           "model." in said
    assert messages() == 2
    after, _ = replies(outpost_home)
    assert (after.target, after.target_model) == (conversation.target, None)

    both = cli("ask", "Hi.", "--conversation", cid, "--lora", str(adapter), "--no-lora")
    assert both.returncode == 2
    assert "give one of the two" in assert_one_sentence(both.stderr)

    detached = cli("ask", "And Spain?", "--conversation", cid, "--model", str(gemma_model),
                   "--no-lora", "--max-tokens", "2")
    assert detached.returncode == 0, detached.stderr
    assert "remembers that" in detached.stderr
    again = cli("ask", "And Italy?", "--conversation", cid, "--max-tokens", "2", "--json")
    assert again.returncode == 0, again.stderr  # the gemma model, remembered, no adapter
    after, (_, second, third) = replies(outpost_home)
    assert after.sampling["lora"] == [] and after.target_model == str(gemma_model)
    assert second.params.get("lora", []) == [] and third.params.get("lora", []) == []
    assert third.model == gemma_model.name
