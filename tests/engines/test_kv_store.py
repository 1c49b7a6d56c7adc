"""Saved KV states (engines/kv_store.py): a follow-up in a new engine or a new process evaluates
only what an in-memory follow-up would, and gives the same reply as from scratch; a state is
never used for another model, template, adapter, KV type or history; the folder is bounded,
survives damaged files and writers racing each other.

On the real bundled model. The assertions count evaluated tokens and compare the engine with
itself (greedy decoding, same process, same settings): never what the model says, never time.
"""
from __future__ import annotations

import dataclasses
import json
import os
import stat
import subprocess
import sys
import threading
import time

import pytest

from app.domain.adapters import LoraAdapter
from app.domain.messages import ChatMessage, ChatRequest, Role, accumulate
from engines.kv_store import KVStore, common_prefix
from engines.llama_local import LoadSettings, LocalEngine
from engines.model_load import ModelLoadOptions
from tests.conftest import ROOT, outpost_cmd

CHUNK = ModelLoadOptions().batch
DIRECTIONS = ("north", "east", "south", "west")


def log_book(entries: int = 22) -> str:
    """A long, fixed user message (~20 tokens an entry)."""
    return "Here is my lighthouse log. " + " ".join(
        f"Entry {i}: wind {i * 7 % 40} knots from the {DIRECTIONS[i % 4]}, "
        f"{i % 3 + 1} ships passed." for i in range(entries))


def history(system: str = "You are a helpful assistant.",
            log: str | None = None) -> tuple[ChatMessage, ...]:
    return (ChatMessage(Role.SYSTEM, system), ChatMessage(Role.USER, log or log_book()),
            ChatMessage(Role.ASSISTANT, "Thank you, I have read the log."),
            ChatMessage(Role.USER, "Which entry had the strongest wind?"))


def ask(engine: LocalEngine, messages, *lora: LoraAdapter, max_tokens: int = 8):
    request = ChatRequest(model="m", messages=tuple(messages), temperature=0.0,
                          max_tokens=max_tokens, lora=tuple(lora))
    reply = accumulate(engine.stream(request, threading.Event()))
    assert reply.finish is not None and reply.finish.error is None
    assert reply.usage is not None
    settled(engine)
    return reply


def settled(engine: LocalEngine) -> None:
    """Wait until the model thread is idle: the state is saved after Finished went out."""
    engine.call_on_model_thread(lambda llm: None)


def follow_up(messages, reply_text: str) -> tuple[ChatMessage, ...]:
    return (*messages, ChatMessage(Role.ASSISTANT, reply_text),
            ChatMessage(Role.USER, "And the weakest?"))


def state_files(folder) -> list:
    return sorted(folder.glob("*.kv"))


def identity_of(engine: LocalEngine):
    return engine.call_on_model_thread(lambda llm: engine._kv_identity())


# -- the engine ------------------------------------------------------------------------------
@pytest.mark.local_model
def test_a_follow_up_in_a_new_engine_evaluates_only_the_new_tokens_and_replies_the_same(
        fresh_engine, tmp_path):
    folder = tmp_path / "kv"
    first = fresh_engine(kv_cache_dir=folder)
    turn = history()
    reply = ask(first, turn)
    follow = follow_up(turn, reply.text)
    prompt = first.call_on_model_thread(
        lambda llm: first._tokenize(ChatRequest(model="m", messages=follow))[0])
    # saved: the prompt and the reply as the follow-up's prompt holds them (to the text's end)
    assert first.kv_last_save is not None
    kept = first.kv_last_save[0]
    assert reply.usage.prompt_tokens < kept < len(prompt) - 5
    assert kept >= LoadSettings().kv_cache_min_tokens
    [saved] = state_files(folder)
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700

    restarted = ask(fresh_engine(kv_cache_dir=folder), follow)  # an app restart
    scratch = ask(fresh_engine(), follow)  # the same without saved states
    in_memory = ask(first, follow)  # the follow-up had the app stayed open

    assert scratch.usage.cached_prompt_tokens == 0
    assert restarted.usage.cached_prompt_tokens == in_memory.usage.cached_prompt_tokens == kept
    assert restarted.usage.evaluated_prompt_tokens == len(prompt) - kept
    # the restored KV values are the bytes a cold evaluation computes: the same greedy reply
    assert restarted.text == scratch.text == in_memory.text
    # the follow-up's reply is kept too: one state holds it all (the shorter one is redundant)
    [longer] = state_files(folder)
    assert longer != saved


@pytest.mark.local_model
def test_a_seeded_hot_reply_from_a_restored_state_is_the_one_from_scratch(fresh_engine,
                                                                          tmp_path):
    folder = tmp_path / "kv"
    turn = history()
    ask(fresh_engine(kv_cache_dir=folder), turn)
    request = ChatRequest(model="m", messages=follow_up(turn, "The entry with 39 knots."),
                          temperature=1.0, seed=7, max_tokens=16)
    restored = accumulate(fresh_engine(kv_cache_dir=folder).stream(request, threading.Event()))
    scratch = accumulate(fresh_engine().stream(request, threading.Event()))
    assert restored.usage.cached_prompt_tokens > 0 == scratch.usage.cached_prompt_tokens
    assert restored.text == scratch.text


@pytest.mark.local_model
def test_an_edited_history_reuses_only_the_chunks_before_the_edit(fresh_engine, tmp_path):
    folder = tmp_path / "kv"
    turn = history()
    ask(fresh_engine(kv_cache_dir=folder), turn)
    [path] = state_files(folder)
    engine = fresh_engine(kv_cache_dir=folder)
    [(_, saved)] = KVStore(folder).candidates(identity_of(engine), [], -1)
    # an edit in the first chunk (the system prompt): nothing of the state is used
    edited_early = ask(engine, history(system="You are a terse assistant."))
    assert edited_early.usage.cached_prompt_tokens == 0
    assert engine.kv_restored_tokens == 0
    # an edit after the saved tokens' first chunks: those chunks, and nothing after the edit
    late = history(log=log_book().replace("Entry 14: wind", "Entry 14: gusts"))
    later = fresh_engine(kv_cache_dir=folder)
    edited_late = ask(later, late)
    tokens = later.call_on_model_thread(
        lambda llm: later._tokenize(ChatRequest(model="m", messages=late))[0])
    shared = common_prefix(saved.tokens, tokens)
    assert shared < len(saved.tokens)  # the edit is inside the saved tokens
    assert edited_late.usage.cached_prompt_tokens == shared // CHUNK * CHUNK > 0
    assert edited_late.text == ask(fresh_engine(), late).text
    assert path.exists()  # the other branch's state stays


@pytest.fixture
def saved_state(fresh_engine, tmp_path):
    """A folder holding the state of ``history()``'s prompt, and the follow-up to ask."""
    folder = tmp_path / "kv"
    turn = history()
    reply = ask(fresh_engine(kv_cache_dir=folder), turn)
    assert len(state_files(folder)) == 1
    return folder, follow_up(turn, reply.text)


@pytest.mark.local_model
@pytest.mark.parametrize("change", ["kv_type", "template", "adapter", "reproducible_seeds"])
def test_a_state_is_never_used_with_other_settings(fresh_engine, saved_state, bundled_model,
                                                   tmp_path, change):
    folder, follow = saved_state
    lora: tuple[LoraAdapter, ...] = ()
    if change == "kv_type":
        engine = fresh_engine(kv_cache_dir=folder, options=ModelLoadOptions(kv_type="q8_0"))
    elif change == "reproducible_seeds":
        engine = fresh_engine(kv_cache_dir=folder, reproducible_seeds=False)
    else:
        engine = fresh_engine(kv_cache_dir=folder)
    if change == "template":
        # the same tokens come out (a Jinja comment renders nothing): only the key differs
        meta = dict(engine.gguf.metadata)
        meta["tokenizer.chat_template"] += "{# edited #}"
        engine.gguf = dataclasses.replace(engine.gguf, metadata=meta)
    if change == "adapter":
        from tests.lora_files import make_lora  # deferred: writes a file with the gguf package

        # at scale 0 an adapter changes nothing in the numbers, but the state is still not used
        lora = (LoraAdapter(str(make_lora(bundled_model, tmp_path / "a.gguf", layers=(0,))),
                            0.0),)
    reply = ask(engine, follow, *lora)
    assert reply.usage.cached_prompt_tokens == 0
    assert engine.kv_restored_tokens == 0


@pytest.mark.local_model
def test_another_model_never_sees_the_state(fresh_engine, saved_state, gemma_model,
                                            bundled_model):
    folder, follow = saved_state
    [path] = state_files(folder)
    bundled = fresh_engine(kv_cache_dir=folder)
    [(_, saved)] = KVStore(folder).candidates(identity_of(bundled), [], -1)
    gemma = LocalEngine(gemma_model, LoadSettings(kv_cache_dir=folder, context_cap=2048))
    try:
        gemma.wait_ready(timeout=120)
        # not even the same tokens would find it: the identity differs
        assert KVStore(folder).candidates(identity_of(gemma), saved.tokens) == []
        reply = ask(gemma, follow)
        assert reply.usage.cached_prompt_tokens == 0 and gemma.kv_restored_tokens == 0
    finally:
        gemma.close()
    assert path.exists()


@pytest.mark.local_model
@pytest.mark.parametrize("damage", ["truncated", "flipped", "garbage"])
def test_a_damaged_state_file_is_ignored_and_removed(fresh_engine, saved_state, damage):
    folder, follow = saved_state
    [path] = state_files(folder)
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[:len(data) // 2])
    elif damage == "flipped":  # the length is right, one byte of the KV values is not
        path.write_bytes(data[:-100] + bytes([data[-100] ^ 0xFF]) + data[-99:])
    else:
        path.write_bytes(os.urandom(4096))
    damaged = path.read_bytes()
    engine = fresh_engine(kv_cache_dir=folder)
    reply = ask(engine, follow)
    assert reply.usage.cached_prompt_tokens == 0 and engine.kv_restored_tokens == 0
    # the damaged file is gone: the reply saved its own state (its prompt and reply), a whole
    # one, in its place, and the next engine uses that
    [saved] = state_files(folder)
    assert saved.read_bytes() != damaged
    again = ask(fresh_engine(kv_cache_dir=folder), follow)
    assert again.usage.cached_prompt_tokens > 0
    assert again.text == reply.text


@pytest.mark.local_model
def test_with_reproducible_seeds_off_the_reply_is_saved_too(fresh_engine, tmp_path):
    # llama-cpp-python's own reuse: the state holds everything evaluated, the reply included
    folder = tmp_path / "kv"
    turn = history()
    first = fresh_engine(kv_cache_dir=folder, reproducible_seeds=False)
    reply = ask(first, turn)
    assert first.kv_last_save is not None
    assert first.kv_last_save[0] == reply.usage.prompt_tokens + reply.usage.completion_tokens - 1
    follow = follow_up(turn, reply.text)
    restarted = fresh_engine(kv_cache_dir=folder, reproducible_seeds=False)
    resumed = ask(restarted, follow)
    in_memory = ask(first, follow)  # after: its own save would serve the restarted engine
    assert restarted.kv_restored_tokens > reply.usage.prompt_tokens
    assert resumed.usage.evaluated_prompt_tokens == in_memory.usage.evaluated_prompt_tokens


@pytest.mark.local_model
def test_short_prompts_save_nothing(fresh_engine, tmp_path):
    folder = tmp_path / "kv"
    engine = fresh_engine(kv_cache_dir=folder)
    ask(engine, (ChatMessage(Role.USER, "Hello there."),))
    assert engine.kv_last_save is None and state_files(folder) == []


# -- the store (no model) --------------------------------------------------------------------
IDENTITY = {"model": "m", "lora": [["a.gguf", 0.5]]}


def test_the_cap_evicts_the_least_recently_used(tmp_path):
    store = KVStore(tmp_path, max_bytes=3 * 1200)
    paths = [store.save(IDENTITY, [i, 1, 2], bytes(1000)) for i in range(3)]
    assert all(p is not None and p.exists() for p in paths)
    for age, path in zip((300, 200, 100), paths):  # oldest first, without sleeping
        os.utime(path, (time.time() - age, time.time() - age))
    [(_, oldest)] = store.candidates(IDENTITY, [0, 1, 2, 3])
    assert store.read_state(oldest) == bytes(1000)  # a use makes it the newest
    store.save(IDENTITY, [9, 1, 2], bytes(1000))
    assert [p.exists() for p in paths] == [True, False, True]
    assert len(state_files(tmp_path)) == 3


def test_a_state_bigger_than_the_cap_is_not_written(tmp_path):
    store = KVStore(tmp_path, max_bytes=500)
    assert store.save(IDENTITY, [1, 2], bytes(1000)) is None
    assert state_files(tmp_path) == []


def test_the_identity_and_the_tokens_in_the_file_decide_not_its_name(tmp_path):
    store = KVStore(tmp_path)
    path = store.save(IDENTITY, [5, 6, 7, 8], b"state")
    assert store.candidates({**IDENTITY, "model": "other"}, [5, 6, 7, 8]) == []
    assert store.candidates(IDENTITY, [6, 6, 7, 8]) == []
    [(shared, saved)] = store.candidates(IDENTITY, [5, 6, 9])
    assert shared == 2 and saved.path == path and saved.tokens == (5, 6, 7, 8)
    # a file of another identity under this identity's name is left alone, never used
    other = KVStore(tmp_path / "elsewhere").save({"model": "x"}, [5, 6, 7, 8], b"other")
    path.write_bytes(other.read_bytes())
    assert store.candidates(IDENTITY, [5, 6, 7, 8]) == [] and path.exists()


def test_a_longer_state_replaces_the_ones_it_contains(tmp_path):
    store = KVStore(tmp_path)
    short = store.save(IDENTITY, [1, 2, 3], b"a")
    branch = store.save(IDENTITY, [1, 2, 4], b"b")
    longer = store.save(IDENTITY, [1, 2, 3, 4, 5], b"c")
    assert not short.exists() and branch.exists() and longer.exists()


WRITER = """
import sys
from engines.kv_store import KVStore
folder, me = sys.argv[1], int(sys.argv[2])
store = KVStore(folder, max_bytes=6 * 70_000)
for i in range(40):
    # both writers save some of the same token lists: the same file, renamed over
    store.save({"model": "m"}, [i % 8, me * (i % 2), 3], bytes([i % 256]) * 60_000)
"""


def test_writers_in_two_processes_never_leave_a_damaged_file(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(me)],
                              cwd=ROOT) for me in (1, 2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    store = KVStore(tmp_path, max_bytes=6 * 70_000)
    files = state_files(tmp_path)
    assert files and sum(f.stat().st_size for f in files) <= 6 * 70_000
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*"))
    for path in files:
        [(_, saved)] = [c for c in store.candidates({"model": "m"}, [], -1)
                        if c[1].path == path]
        state = store.read_state(saved)
        assert state is not None and len(set(state)) == 1  # whole, from one writer
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


# -- a real new process: `outpost ask --conversation` twice ----------------------------------
@pytest.mark.local_model
def test_outpost_ask_resumes_a_long_conversation_from_its_saved_state(outpost_home):
    def run(*args, stdin=None):
        proc = subprocess.run([*outpost_cmd(), "ask", *args, "--json", "--max-tokens", "4",
                               "--temperature", "0"], input=stdin, capture_output=True,
                              text=True, env=os.environ.copy(), timeout=300, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr
        return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]

    first = run("-", stdin=log_book())
    conversation = first[-1]["conversation_id"]
    folder = outpost_home / "data" / "kv_cache"
    assert len(state_files(folder)) == 1
    second = run("Which entry had the strongest wind?", "--conversation", conversation)
    usage = second[-2]
    assert usage["event"] == "usage"
    # a new process has an empty cache: only the saved state can have served these tokens,
    # the first prompt and its reply (kept after it was written)
    assert usage["cached_prompt_tokens"] > first[-2]["prompt_tokens"]


def test_a_state_of_a_reply_begun_before_messages_were_deleted_is_not_kept(tmp_path):
    """A reply ends, its state is saved on the model's thread a moment later; messages
    deleted in between (``forget_all``) must not be readable from a state written after it:
    the save is dropped. A reply begun after the delete saves as usual."""
    from engines.kv_store import forget_all

    store = KVStore(tmp_path / "kv")
    identity = {"model": "m"}
    before = time.time() - 1.0
    assert store.save(identity, [1, 2, 3], b"state") is not None
    assert forget_all(tmp_path / "kv") == 1
    assert store.save(identity, [1, 2, 3, 4], b"state", since=before) is None
    assert list((tmp_path / "kv").glob("*.kv")) == []
    assert store.save(identity, [1, 2, 3, 4], b"state", since=time.time()) is not None


def test_deleting_before_any_state_was_saved_still_counts(tmp_path):
    """No state saved yet, so no folder: the first one, on its way as messages are deleted,
    must not be kept either (the note was written only into an existing folder)."""
    from engines.kv_store import forget_all, forgotten_at

    folder = tmp_path / "kv"
    before = time.time() - 1.0
    forget_all(folder)
    assert forgotten_at(folder) > before
    assert KVStore(folder).save({"model": "m"}, [1, 2], b"state", since=before) is None
