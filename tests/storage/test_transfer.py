"""Export and import of conversations (``app.storage.transfer``) on real SQLite files: the JSON
export holds every field of every branch and survives export → import → export byte for byte;
Markdown and HTML show the active path (HTML escaped, light and dark); a hand-written ChatGPT
``conversations.json`` becomes Outpost's tree; and a hostile file is refused with one sentence
before anything is written."""
from __future__ import annotations

import copy
import io
import dataclasses
import json
import os
import sqlite3
import threading
import tracemalloc
from html.parser import HTMLParser
from pathlib import Path

import pytest

from app.domain.adapters import LoraAdapter
from app.domain.errors import StorageError, UsageError
from app.domain.messages import (ChatMessage, ChatRequest, Finished, FinishReason, Message,
                                 MessageStatus, Role, Usage)
from app.domain.test_time import Candidate, Selection
from app.storage.store import Store
from app.storage.transfer import importer, json_stream
from app.storage.transfer.export import export_conversations, format_for

PROFILE = "alice"
LORA = LoraAdapter("/models/lora/terse.gguf", 0.5).record()


def build_conversations(store: Store, profile: str | None) -> dict[str, str]:
    """What a real database holds after some use: a conversation with a failed reply and its
    retry (continued by another engine mid-stream), an interrupted reply with an open code
    block, an edited question, a best-of-3 reply with JSON params and its candidates; and a
    second, plain conversation. Returns the ids by name."""
    lighthouse = store.create_conversation(
        "Lighthouse <notes> & code", system_prompt="Answer briefly.\nUse metric units.",
        route="auto", profile=profile,
        sampling={"temperature": 0.4, "seed": 7, "lora": [LORA]})
    cid = lighthouse.id
    request = ChatRequest("gpt-4o-mini", (ChatMessage(Role.USER, "How tall?"),),
                          temperature=0.4, seed=7, stop=("###",))
    q1 = store.add_message(cid, Role.USER, "How tall is the Fastnet lighthouse?")
    failed = store.add_message(cid, Role.ASSISTANT, "", status=MessageStatus.STREAMING,
                               engine="openai", model="gpt-4o-mini",
                               params=request.sampling_params())
    store.update_message(failed.id, status=MessageStatus.ERROR, finish_reason="error",
                         error="The provider openai is unavailable (HTTP 503).",
                         prompt_tokens=21, tokens_estimated=True,
                         route_reason="cloud only conversation")
    retry = store.add_message(cid, Role.ASSISTANT, "", parent_id=q1.id,
                              status=MessageStatus.STREAMING, engine="local",
                              model="SmolLM2-135M-Instruct",
                              params=dict(request.sampling_params(), lora=[LORA]))
    store.update_message(
        retry.id, content="It is 54 m tall, granite, lit since 1904.",
        status=MessageStatus.COMPLETE, prompt_tokens=21, completion_tokens=13,
        cached_prompt_tokens=16, ttft_ms=84.25, tokens_per_s=41.7, finish_reason="stop",
        cost_usd=0.000123, cost_estimated=True,
        route_reason="continued locally: openai broke off",
        segments=[{"engine": "openai", "model": "gpt-4o-mini", "start": 0, "end": 10},
                  {"engine": "local", "model": "SmolLM2-135M-Instruct", "start": 10,
                   "end": 41, "reason": "stream broke"}])
    q2 = store.add_message(cid, Role.USER, "Show me the height as code")
    cut = store.add_message(cid, Role.ASSISTANT, "Here:\n```python\nheight_m = 54\nprint(",
                            status=MessageStatus.STREAMING, engine="local",
                            model="SmolLM2-135M-Instruct")
    store.update_message(cut.id, status=MessageStatus.INTERRUPTED, finish_reason="cancelled",
                         completion_tokens=9, error="The app stopped before this reply was "
                         "finished.")
    edited = store.add_message(cid, Role.USER, "Show me the height as Rust code",
                               parent_id=retry.id)
    selection = Selection("best_of", 3, [
        Candidate(0, "```rust\nfn main() { println!(\"54 m\"); }\n```", Usage(30, 12),
                  Finished(FinishReason.STOP), seed=11, mean_logprob=-0.42, score=-0.42),
        Candidate(1, "54", Usage(30, 2), Finished(FinishReason.STOP), seed=12,
                  mean_logprob=-1.25, score=-1.25),
        Candidate(2, "", None, Finished(FinishReason.ERROR), seed=13)],
        winner=0, scorer="logprob")
    best = store.add_message(cid, Role.ASSISTANT, selection.candidates[0].text,
                             engine="local", model="SmolLM2-135M-Instruct",
                             params={"temperature": 0.8, "max_tokens": 64, "best_of": 3,
                                     "response_format": {"type": "json", "schema": {
                                         "type": "object", "required": ["m"],
                                         "properties": {"m": {"type": "number"}}}},
                                     "note": "Ünïcødé ✓ \u2028 \"quoted\""})
    store.update_message(best.id, candidates=selection.record(), completion_tokens=44,
                         prompt_tokens=30, tokens_per_s=38.5, ttft_ms=120.0, cost_usd=0.0,
                         finish_reason="stop",
                         output_check={"mode": "json", "valid": True, "error": None,
                                       "repair": None})
    other = store.create_conversation("Packing list", profile=profile)
    store.add_message(other.id, Role.USER, "What should I pack for the island?")
    store.add_message(other.id, Role.ASSISTANT, "A raincoat, a torch and spare batteries.",
                      engine="imported", model="gpt-4")
    return {"lighthouse": cid, "other": other.id, "q1": q1.id, "failed": failed.id,
            "retry": retry.id, "q2": q2.id, "cut": cut.id, "edited": edited.id,
            "best": best.id}


def all_ids(store: Store) -> list[str]:
    return [c.id for c in sorted(store.list_conversations(), key=lambda c: (c.created_at, c.id))]


def load_text(tmp_path: Path, text: str | bytes, name: str = "in.json"):
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return importer.load(path)


@pytest.fixture
def source(tmp_path):
    store = Store(tmp_path / "source.db")
    ids = build_conversations(store, PROFILE)
    yield store, ids
    store.close()


@pytest.fixture
def target(tmp_path):
    store = Store(tmp_path / "target.db")
    yield store
    store.close()


# -- JSON: lossless ------------------------------------------------------------------------------
def test_the_json_export_holds_every_field_of_every_message_of_every_branch(source):
    store, ids = source
    data = json.loads(export_conversations(store, all_ids(store), "json"))
    assert (data["format"], data["version"]) == ("outpost-conversations", 1)
    assert [c["id"] for c in data["conversations"]] == [ids["lighthouse"], ids["other"]]
    lighthouse = data["conversations"][0]
    # every column of both tables, so a column a later migration adds is exported too
    columns = {c.name for c in store.db["conversations"].columns}
    assert set(lighthouse) == columns | {"messages"}
    # (not seq: the search key is this database's own, given to a row as it is stored)
    message_columns = {c.name for c in store.db["messages"].columns} - {
        "writer", "conversation_id", "seq"}
    dataclass_fields = {f.name for f in dataclasses.fields(Message)} - {"conversation_id"}
    for record in lighthouse["messages"]:
        assert set(record) == message_columns
        assert dataclass_fields <= set(record)
    # the whole tree, oldest first, each message as the store reads it
    stored = store.messages(ids["lighthouse"])
    assert [m["id"] for m in lighthouse["messages"]] == [m.id for m in stored]
    for record, message in zip(lighthouse["messages"], stored):
        expected = message.as_dict()
        del expected["conversation_id"]
        assert {k: record[k] for k in expected} == expected
    by_id = {m["id"]: m for m in lighthouse["messages"]}
    assert lighthouse["active_leaf_id"] == ids["best"]
    assert lighthouse["sampling"] == {"temperature": 0.4, "seed": 7, "lora": [LORA]}
    assert lighthouse["system_prompt"] == "Answer briefly.\nUse metric units."
    assert lighthouse["profile"] == PROFILE and lighthouse["route"] == "auto"
    failed, retry = by_id[ids["failed"]], by_id[ids["retry"]]
    assert (failed["status"], failed["error"], failed["tokens_estimated"]) == (
        "error", "The provider openai is unavailable (HTTP 503).", True)
    assert failed["parent_id"] == retry["parent_id"] == ids["q1"]
    assert (retry["ttft_ms"], retry["tokens_per_s"], retry["cost_usd"]) == (84.25, 41.7,
                                                                            0.000123)
    assert retry["params"]["lora"] == [LORA] and len(retry["segments"]) == 2
    assert by_id[ids["cut"]]["status"] == "interrupted"
    best = by_id[ids["best"]]
    assert best["candidates"]["winner"] == 0 and len(best["candidates"]["candidates"]) == 3
    assert best["params"]["response_format"]["schema"]["required"] == ["m"]
    assert by_id[ids["edited"]]["parent_id"] == ids["retry"]


def test_export_import_export_is_byte_identical_and_the_tree_survives(source, target,
                                                                      tmp_path):
    store, ids = source
    first = export_conversations(store, all_ids(store), "json")
    summary = importer.write(target, load_text(tmp_path, first), PROFILE)
    assert [i["id"] for i in summary.imported] == [ids["lighthouse"], ids["other"]]
    assert [i["messages"] for i in summary.imported] == [7, 2] and summary.skipped == []
    second = export_conversations(target, all_ids(target), "json")
    assert second.encode("utf-8") == first.encode("utf-8")
    # the imported conversation behaves as the original: the same messages, active path,
    # versions of each message
    assert target.messages(ids["lighthouse"]) == store.messages(ids["lighthouse"])
    assert [m.id for m in target.branch(ids["lighthouse"])] == \
        [ids["q1"], ids["retry"], ids["edited"], ids["best"]]
    retry = target.get_message(ids["retry"])
    assert [m.id for m in target.siblings(retry)] == [ids["failed"], ids["retry"]]
    assert target.get_conversation(ids["lighthouse"]) == store.get_conversation(
        ids["lighthouse"])
    # the full-text index was kept by the triggers: imported text is found
    assert target.integrity_check() == "ok"
    assert target.db.execute("select count(*) from messages_fts").fetchone()[0] == 9
    found = target.search('"granite"', profile=PROFILE)
    assert [m.id for m in found] == [ids["retry"]]
    assert target.search('"granite"', profile="bob") == []


def test_importing_again_skips_and_never_overwrites(source, target, tmp_path):
    store, ids = source
    loaded = load_text(tmp_path, export_conversations(store, all_ids(store), "json"))
    importer.write(target, loaded, PROFILE)
    target.rename_conversation(ids["lighthouse"], "Renamed here")
    again = importer.write(target, loaded, PROFILE)
    assert again.imported == []
    assert [(s["id"], "already here" in s["reason"]) for s in again.skipped] == \
        [(ids["lighthouse"], True), (ids["other"], True)]
    assert target.get_conversation(ids["lighthouse"]).title == "Renamed here"
    assert target.db.execute("select count(*) from messages").fetchone()[0] == 9


def test_a_conversation_whose_message_ids_are_taken_is_skipped(source, target, tmp_path):
    store, ids = source
    data = json.loads(export_conversations(store, [ids["other"]], "json"))
    importer.write(target, load_text(tmp_path, json.dumps(data)), PROFILE)
    data["conversations"][0]["id"] = "a-new-conversation-id"
    summary = importer.write(target, load_text(tmp_path, json.dumps(data)), PROFILE)
    assert summary.imported == []
    assert "already in another conversation" in summary.skipped[0]["reason"]
    assert target.db.execute("select count(*) from conversations").fetchone()[0] == 1


def test_a_failure_while_writing_leaves_nothing_behind(source, target, tmp_path, monkeypatch):
    store, _ = source
    loaded = load_text(tmp_path, export_conversations(store, all_ids(store), "json"))
    real, calls = importer._insert_many, []

    def failing(db, table, names, values):
        calls.append(table)
        if len(calls) == 3:  # the second conversation's row: the first is written by now
            raise sqlite3.OperationalError("disk I/O error")
        return real(db, table, names, values)

    monkeypatch.setattr(importer, "_insert_many", failing)
    with pytest.raises(StorageError):
        importer.write(target, loaded, PROFILE)
    assert calls == ["conversations", "messages", "conversations"]
    for table in ("conversations", "messages", "messages_fts"):
        assert target.db.execute(f"select count(*) from {table}").fetchone()[0] == 0
    assert target.integrity_check() == "ok"


def test_a_reply_still_streaming_in_the_file_is_imported_interrupted(source, target, tmp_path):
    store, ids = source
    data = json.loads(export_conversations(store, [ids["lighthouse"]], "json"))
    cut = next(m for m in data["conversations"][0]["messages"] if m["id"] == ids["cut"])
    cut.update(status="streaming", error=None)
    importer.write(target, load_text(tmp_path, json.dumps(data)), PROFILE)
    message = target.get_message(ids["cut"])
    assert message.status is MessageStatus.INTERRUPTED
    assert message.error == "The export was taken while this reply was being written."


# -- refused files -------------------------------------------------------------------------------
def _exported(store: Store) -> dict:
    return json.loads(export_conversations(store, all_ids(store), "json"))


def _message(data: dict, index: int = 1) -> dict:
    return data["conversations"][0]["messages"][index]


MUTATIONS = {
    "a count that is text": (lambda d: _message(d).update(prompt_tokens="many"),
                             "message 2: prompt_tokens must be a whole number, got 'many'"),
    "a flag that is a number": (lambda d: _message(d).update(tokens_estimated=1),
                                "tokens_estimated must be true or false"),
    "a number too large": (lambda d: _message(d).update(ttft_ms=10 ** 400),
                           "ttft_ms must be a number"),
    "params that are a list": (lambda d: _message(d).update(params=[1, 2]),
                               "params must be an object"),
    "an unknown role": (lambda d: _message(d).update(role="wizard"), "role must be one of"),
    "a date that is not a date": (lambda d: _message(d).update(created_at="yesterday"),
                                  "created_at must be an ISO date and time"),
    "a title that is a number": (lambda d: d["conversations"][0].update(title=5),
                                 "title must be text"),
    "conversations that are an object": (lambda d: d.update(conversations={}),
                                         "conversations must be a list"),
    "a message that is text": (lambda d: d["conversations"][0]["messages"].append("hi"),
                               "message 8: a message must be an object"),
    "a field from elsewhere": (lambda d: _message(d).update(mood="happy"),
                               "a field this version of Outpost does not know: 'mood'"),
    "a knob out of range": (lambda d: d["conversations"][0]["sampling"].update(temperature=9),
                            "sampling: temperature must be between 0 and 2"),
    "adapters that are text": (lambda d: _message(d, 2)["params"].update(lora="x.gguf"),
                               "params.lora must be a list of adapters"),
    "a missing role": (lambda d: _message(d).pop("role"), "message 2: role is missing"),
    "a null status": (lambda d: _message(d).update(status=None), "status cannot be null"),
    "a newer version": (lambda d: d.update(version=2), "newer Outpost (format version 2)"),
    "a parent that is not there": (
        lambda d: _message(d, 2).update(parent_id="nowhere"),
        "follows 'nowhere', which is not in the file"),
    "a cycle of parents": (
        lambda d: (_message(d, 0).update(parent_id=_message(d, 2)["id"])),
        "form a cycle"),
    "an active leaf elsewhere": (
        lambda d: d["conversations"][0].update(active_leaf_id=_message(d, 0)["id"] + "x"),
        "active_leaf_id"),
    "a message twice": (
        lambda d: d["conversations"][1]["messages"].append(copy.deepcopy(_message(d, 0))),
        "is in the file twice"),
    "an id with a slash": (lambda d: d["conversations"][0].update(id="../../etc"),
                           "id must be an id"),
    # each would have broken the window or every later turn of the conversation once imported
    "a segment starting at a word": (
        lambda d: _message(d, 2).update(segments=[{"engine": "local", "model": "m",
                                                   "start": "zero"}]),
        "segments[1].start must be"),
    "a segment past the text": (
        lambda d: _message(d, 2).update(segments=[{"engine": "local", "model": "m", "start": 0},
                                                  {"engine": "cloud", "model": "m",
                                                   "start": 10**6}]),
        "segments[2].start must be from 0 to the text's length"),
    # values no Outpost writes, each accepted once (found by a trial)
    "a question still streaming": (
        lambda d: _message(d, 0).update(status="streaming"),
        "message 1: a user message's status must be complete (only a reply can be anything "
        "else), got 'streaming'"),
    "a question that failed": (lambda d: _message(d, 0).update(status="error"),
                               "a user message's status must be complete"),
    "tokens below zero": (lambda d: _message(d).update(prompt_tokens=-5),
                          "message 2: prompt_tokens cannot be below zero, got -5"),
    "a cost below zero": (lambda d: _message(d, 2).update(cost_usd=-0.5),
                          "message 3: cost_usd cannot be below zero, got -0.5"),
    "a speed below zero": (lambda d: _message(d, 2).update(tokens_per_s=-1.0),
                           "tokens_per_s cannot be below zero"),
    "a segment of anything": (lambda d: _message(d, 2).update(segments=[{"x": 1}]),
                              "message 3: segments[1] has a field a segment does not have: "
                              "'x'"),
    "a segment without an engine": (
        lambda d: _message(d, 2).update(segments=[{"model": "m", "start": 0}]),
        "segments[1].engine must be text, got None"),
    "a segment ending before it starts": (
        lambda d: _message(d, 2).update(segments=[{"engine": "local", "model": "m",
                                                   "start": 9, "end": 3}]),
        "segments[1].end must not be before its start (9), got 3"),
    "a temperature that is a word": (
        lambda d: _message(d, 2).update(params={"temperature": "hot"}),
        "message 3: params.temperature must be a number, got 'hot'"),
    "a temperature out of range": (lambda d: _message(d, 2)["params"].update(temperature=7),
                                   "params.temperature must be between 0 and 2, got 7"),
    "max tokens that are not whole": (
        lambda d: _message(d, 2)["params"].update(max_tokens=1.5),
        "params.max_tokens must be a whole number, got 1.5"),
    "stop sequences that are a number": (lambda d: _message(d, 2)["params"].update(stop=3),
                                         "params.stop must be a list, got 3"),
    "a seed below zero": (lambda d: _message(d, 2)["params"].update(seed=-1),
                          "params.seed cannot be below zero, got -1"),
    "a title of 5 MB": (lambda d: d["conversations"][0].update(title="x" * 5_000_000),
                        "title must be at most 1,000 characters, got 5,000,000"),
    "a pin that is not one": (lambda d: d["conversations"][0].update(pinned=7),
                              "pinned must be 0 or 1, got 7"),
    "a message of another conversation copied": (
        lambda d: d["conversations"][1]["messages"].append(copy.deepcopy(_message(d, 1))),
        "' is in the file twice (also in conversation 1)"),
    "a message twice in its conversation": (
        lambda d: _message(d, 2).update(id=_message(d, 1)["id"]),
        "' is in the file twice (both in this conversation)"),
    "a route that is not one": (lambda d: d["conversations"][0].update(route="sideways"),
                                "route must be auto, local, cloud or null, got 'sideways'"),
    # the window read the provider's name after a ':' and failed at every start (trial 12)
    "a target that is a provider's bare name": (
        lambda d: d["conversations"][0].update(target="openai"),
        "conversation 1 ('Lighthouse <notes> & code'): target must be 'local', "
        "'provider:NAME' or null, got 'openai'"),
    "a target naming no provider": (lambda d: d["conversations"][0].update(target="provider:"),
                                    "target must be 'local', 'provider:NAME' or null"),
    "a target naming a provider no one can add": (
        lambda d: d["conversations"][0].update(target="provider:my provider"),
        "got 'provider:my provider'"),
    "a schema that is a number": (
        lambda d: d["conversations"][0].update(sampling={"response_format": {
            "type": "json", "schema": 5}}),
        "sampling.response_format: "),
    "an answer format of another kind": (
        lambda d: d["conversations"][0].update(sampling={"response_format": {"type": "xml"}}),
        'sampling.response_format: it must be {"type": "json"'),
}


@pytest.mark.parametrize("case", sorted(MUTATIONS))
def test_a_wrong_value_anywhere_is_one_sentence_naming_where(source, tmp_path, case):
    store, _ = source
    data = _exported(store)
    mutate, expected = MUTATIONS[case]
    mutate(data)
    with pytest.raises(UsageError) as caught:
        load_text(tmp_path, json.dumps(data), "export.json")
    message = str(caught.value)
    assert message.startswith("export.json cannot be imported: ") and "\n" not in message
    assert expected in message
    assert caught.value.exit_code == 2


@pytest.mark.parametrize("remembered", ["local", "provider:openai", "provider:my-llama_3.1"])
def test_a_target_outpost_writes_is_imported(source, tmp_path, remembered):
    store, _ = source
    data = _exported(store)
    data["conversations"][0].update(target=remembered, target_model="m")
    into = Store(tmp_path / "into.db")
    try:
        importer.write(into, load_text(tmp_path, json.dumps(data)), PROFILE)
        imported = into.get_conversation(data["conversations"][0]["id"])
        assert (imported.target, imported.target_model) == (remembered, "m")
    finally:
        into.close()


def test_the_second_conversation_being_bad_refuses_the_first_too(source, target, tmp_path):
    store, _ = source
    data = _exported(store)
    data["conversations"][1]["messages"][1]["parent_id"] = "missing"
    with pytest.raises(UsageError, match=r"conversation 2 \('Packing list'\): message "
                                         r"'\w+' follows 'missing', which is not in the file"):
        load_text(tmp_path, json.dumps(data))
    assert target.list_conversations() == []


RAW_FILES = {
    "not JSON": (b"Dear Outpost, here are my chats.", "it is not valid JSON (Expecting value "
                                                      "at line 1, column 1)"),
    "empty": (b"", "it is not valid JSON"),
    "not UTF-8": (b"\xff\xfe{\x00}\x00", "it is not UTF-8 text"),
    "NaN": (b'{"format": "outpost-conversations", "version": 1, "conversations": NaN}',
            "NaN is not a JSON number"),
    "deep nesting": (b"[" * 200_000 + b"]" * 200_000, "more than 64 deep"),
    "nesting past the limit": (b'{"a":' * 100 + b"1" + b"}" * 100, "more than 64 deep"),
    "an unknown format": (b'{"chats": []}', "neither an Outpost export"),
    "a list of something else": (b"[1, 2, 3]", "neither an Outpost export"),
    "a huge integer": (b"[" + b"9" * 5000 + b"]", "a number thousands of digits long"),
    "two lists of conversations": (  # json.loads kept the last one; a stream would read both
        b'{"conversations": [], "format": "outpost-conversations", "version": 1, '
        b'"conversations": []}', "it has the field 'conversations' twice"),
}


@pytest.mark.parametrize("case", sorted(RAW_FILES))
def test_a_file_that_is_not_an_export_is_one_sentence(tmp_path, case):
    content, expected = RAW_FILES[case]
    with pytest.raises(UsageError) as caught:
        load_text(tmp_path, content, "chats.json")
    message = str(caught.value)
    assert message.startswith("chats.json cannot be imported: ") and "\n" not in message
    assert expected in message


def test_a_file_over_the_limit_is_refused_before_it_is_read(tmp_path, monkeypatch):
    huge = tmp_path / "huge.json"
    with huge.open("wb") as out:  # 2 GB and a byte, sparse: nothing is written but its size
        out.truncate(importer.MAX_IMPORT_BYTES + 1)

    def no_reading(*args, **kwargs):
        raise AssertionError("the file was opened")

    monkeypatch.setattr(Path, "open", no_reading)
    with pytest.raises(UsageError, match=r"^huge\.json is larger than 2 GB, the most Outpost "
                                         r"imports at once; nothing was imported\.$"):
        importer.load(huge)


def test_a_stream_without_end_is_cut_at_the_limit(tmp_path, monkeypatch):
    """A pipe has no size to check first: what is read is counted, and reading stops at the
    limit (here 3 MB), with the same sentence."""
    monkeypatch.setattr(importer, "MAX_IMPORT_BYTES", 3 * 2 ** 20)
    endless = tmp_path / "endless.json"
    os.mkfifo(endless)
    written = []

    def feed():
        try:
            with endless.open("wb") as out:
                out.write(b"[")
                while len(written) < 1000:  # 64 MB at most, should the reader not stop
                    out.write(b" " * 65536)
                    written.append(1)
        except BrokenPipeError:
            pass

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    with pytest.raises(UsageError, match=r"^endless\.json is larger than 3 MB, the most "
                                         r"Outpost imports at once; nothing was imported\.$"):
        importer.load(endless)
    feeder.join(timeout=30)
    assert len(written) < 1000


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_a_stream_of_zero_bytes_is_refused_at_its_first_byte():
    with pytest.raises(UsageError, match=r"^zero cannot be imported: it is not valid JSON "
                                         r"\(Expecting value at line 1, column 1\)\.$"):
        importer.load(Path("/dev/zero"))


def _padded(text: str, padding: int) -> str:
    """An export with ``padding`` newlines between its conversations (white space is JSON)."""
    return text.replace('"conversations": [', '"conversations": [' + "\n" * padding, 1)


def test_a_file_over_the_old_64_mb_limit_is_imported(source, target, tmp_path):
    """An ``export --all`` of 1,800 conversations (88 MB) could not be imported back, nor a
    heavy user's ChatGPT export ("larger than 64 MB… nothing was imported"): found by a
    trial. Here 65 MB of the file is white space, so the test stays quick."""
    store, ids = source
    first = export_conversations(store, all_ids(store), "json")
    path = tmp_path / "big.json"
    path.write_text(_padded(first, 65 * 2 ** 20), encoding="utf-8")
    assert path.stat().st_size > 65 * 2 ** 20
    loaded = importer.load(path)
    assert (loaded.format, loaded.conversations) == ("outpost", 2)
    summary = importer.write(target, loaded, PROFILE)
    assert [i["id"] for i in summary.imported] == [ids["lighthouse"], ids["other"]]
    assert export_conversations(target, all_ids(target), "json") == first
    chatgpt_file = tmp_path / "conversations.json"
    chatgpt_file.write_text("[" + "\n" * (65 * 2 ** 20) + json.dumps(chatgpt_export())[1:],
                            encoding="utf-8")
    summary = importer.write(target, importer.load(chatgpt_file), PROFILE)
    assert [i["messages"] for i in summary.imported] == [7, 2]


def _many(count: int, chars: int) -> str:
    """An Outpost export of ``count`` conversations of two messages, the reply ``chars``
    long (not all the same text: the index has words to keep)."""
    conversations = []
    for i in range(count):
        question = {"id": f"q{i}", "parent_id": None, "role": "user", "status": "complete",
                    "content": f"Question {i}?", "created_at": "2025-01-01T00:00:00+00:00",
                    "updated_at": "2025-01-01T00:00:00+00:00"}
        words = " ".join(f"w{(i * 7 + k) % 997}" for k in range(chars // 5))
        reply = dict(question, id=f"r{i}", parent_id=f"q{i}", role="assistant",
                     content=words[:chars])
        conversations.append({"id": f"c{i}", "title": f"Chat {i}", "system_prompt": "",
                              "created_at": "2025-01-01T00:00:00+00:00",
                              "updated_at": "2025-01-01T00:00:00+00:00",
                              "active_leaf_id": f"r{i}", "messages": [question, reply]})
    return json.dumps({"format": "outpost-conversations", "version": 1,
                       "conversations": conversations})


def test_an_import_holds_one_conversation_in_memory_not_the_whole_file(target, tmp_path):
    """Reading and writing an 18 MB file: Python's memory stays under half the file's size
    (a few chunks and one conversation; the whole file parsed at once held several copies of
    it)."""
    path = tmp_path / "many.json"
    path.write_text(_many(400, 45_000), encoding="utf-8")
    size = path.stat().st_size
    assert size > 17 * 10 ** 6
    tracemalloc.start()
    try:
        loaded = importer.load(path)
        _, load_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        summary = importer.write(target, loaded, PROFILE)
        _, write_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert load_peak < size / 2 and write_peak < size / 2, (load_peak, write_peak, size)
    assert len(summary.imported) == 400 and loaded.conversations == 400
    assert target.db.execute("select count(*) from messages").fetchone()[0] == 800


def test_a_file_changed_between_its_check_and_its_writing_writes_nothing(source, target,
                                                                         tmp_path):
    store, _ = source
    data = _exported(store)
    path = tmp_path / "moving.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    loaded = importer.load(path)
    data["conversations"][1]["messages"][1]["parent_id"] = "missing"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(UsageError, match="follows 'missing', which is not in the file"):
        importer.write(target, loaded, PROFILE)
    assert target.db.execute("select count(*) from conversations").fetchone()[0] == 0
    path.write_text(json.dumps(chatgpt_export()), encoding="utf-8")
    with pytest.raises(UsageError, match="it changed while it was being imported"):
        importer.write(target, loaded, PROFILE)
    assert target.db.execute("select count(*) from messages").fetchone()[0] == 0


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_reading_in_chunks_gives_what_json_gives(source, tmp_path, monkeypatch, chunk):
    """Whatever the chunks' size (a conversation, a number, a multi-byte character or an
    escape cut anywhere), the values are json's, and a mistake is placed where json places
    it, counted from the start of the file."""
    store, _ = source
    monkeypatch.setattr(json_stream, "CHUNK", chunk)
    text = export_conversations(store, all_ids(store), "json").replace(
        '"version": 1', '"version": 1.0e0')  # a number that ends the file's last member
    entries = list(json_stream.top_level(io.BytesIO(text.encode("utf-8")), "conversations",
                                         2 ** 30, 2 ** 30))
    items = [e.value for e in entries if e.kind == "item"]
    members = {e.key: e.value for e in entries if e.kind == "member"}
    expected = json.loads(text)
    assert items == expected["conversations"]
    assert members == {"format": "outpost-conversations", "version": 1.0}
    broken = text.replace('"role": "assistant"', '"role": "assistant",,', 3)
    with pytest.raises(json.JSONDecodeError) as wanted:
        json.loads(broken)
    with pytest.raises(json_stream.JsonSyntaxError) as got:
        list(json_stream.top_level(io.BytesIO(broken.encode("utf-8")), "conversations",
                                   2 ** 30, 2 ** 30))
    assert (got.value.msg, got.value.line, got.value.column) == (
        wanted.value.msg, wanted.value.lineno, wanted.value.colno)


def test_a_conversation_over_64_mb_is_one_sentence(tmp_path, monkeypatch):
    monkeypatch.setattr(importer, "MAX_CONVERSATION_CHARS", 2 ** 20)
    path = tmp_path / "one.json"
    path.write_text(_many(3, 2 * 2 ** 20), encoding="utf-8")
    with pytest.raises(UsageError, match=r"^one\.json cannot be imported: conversation 1 is "
                                         r"larger than 1 MB, the most Outpost reads as one "
                                         r"conversation\.$"):
        importer.load(path)


def test_a_missing_file_or_a_folder_is_one_sentence(tmp_path):
    with pytest.raises(UsageError, match=r"^There is no file .*nothing\.json\.$"):
        importer.load(tmp_path / "nothing.json")
    with pytest.raises(UsageError, match=r"is a folder; give the export file itself\.$"):
        importer.load(tmp_path)


# -- ChatGPT's conversations.json ----------------------------------------------------------------
def _node(node_id, parent, children, role=None, parts=None, *, t=None, content=None,
          metadata=None, **extra):
    """One entry of a ChatGPT ``mapping``, as the export writes it."""
    message = None
    if role is not None:
        message = {"id": node_id, "author": {"role": role, "name": None, "metadata": {}},
                   "create_time": t, "update_time": None,
                   "content": content or {"content_type": "text", "parts": parts},
                   "status": "finished_successfully", "end_turn": role == "assistant" or None,
                   "weight": 1.0, "metadata": metadata or {}, "recipient": "all", **extra}
    return {"id": node_id, "message": message, "parent": parent, "children": children}


def chatgpt_export() -> list:
    """A ChatGPT data export (conversations.json) written by hand from the public format: a
    question edited once (two versions side by side), a hidden empty system message, an
    assistant code cell run by the Python tool, an image sent with a question, a reply that was
    stopped; and a second conversation without a title."""
    done = {"finish_details": {"type": "stop", "stop_tokens": [100260]}, "is_complete": True}
    starter = {
        "title": "Sourdough starter",
        "create_time": 1700000000.0,
        "update_time": 1700000400.75,
        "mapping": {
            "client-created-root": _node("client-created-root", None, ["sys-0"]),
            "sys-0": _node("sys-0", "client-created-root", ["u-1", "u-1b"], "system", [""],
                           metadata={"is_visually_hidden_from_conversation": True}),
            "u-1": _node("u-1", "sys-0", ["a-1"], "user",
                         ["How do I feed a sourdough starter?"], t=1700000000.5,
                         metadata={"request_id": "8a1b", "message_source": None}),
            "a-1": _node("a-1", "u-1", [], "assistant",
                         ["Feed it equal weights of flour and water every 12 hours."],
                         t=1700000003.25, metadata=dict(done, model_slug="gpt-4",
                                                        parent_id="u-1")),
            "u-1b": _node("u-1b", "sys-0", ["a-2"], "user",
                          ["How do I feed a **rye** sourdough starter?"], t=1700000100.125),
            "a-2": _node("a-2", "u-1b", ["tool-1"], "assistant", t=1700000104.0,
                         content={"content_type": "code", "language": "python",
                                  "response_format_name": None,
                                  "text": "flour_g = 50\nwater_g = 50\nprint(flour_g / water_g)"},
                         metadata=dict(done, model_slug="gpt-4o"), recipient="python"),
            "tool-1": _node("tool-1", "a-2", ["a-3"], "tool", t=1700000105.0,
                            content={"content_type": "execution_output", "text": "1.0"},
                            metadata={"aggregate_result": {"status": "success"}}),
            "a-3": _node("a-3", "tool-1", ["u-2"], "assistant",
                         ["Use a 1:1 ratio of rye flour to water and feed it twice a day."],
                         t=1700000106.5, metadata=dict(done, model_slug="gpt-4o")),
            "u-2": _node("u-2", "a-3", ["a-4"], "user", t=1700000300.0, content={
                "content_type": "multimodal_text", "parts": [
                    {"content_type": "image_asset_pointer",
                     "asset_pointer": "file-service://file-Ab12Cd34", "size_bytes": 183244,
                     "width": 1024, "height": 768, "fovea": None, "metadata": None},
                    "Is my starter ready? Photo attached."]}),
            "a-4": _node("a-4", "u-2", [], "assistant", ["It looks bubbly, so it is nearly"],
                         t=1700000302.0,
                         metadata={"finish_details": {"type": "interrupted"}}),
        },
        "moderation_results": [],
        "current_node": "a-4",
        "plugin_ids": None,
        "conversation_id": "6556a0f0-1d2e-8000-9c1a-0c4b1f2e3d4a",
        "conversation_template_id": None,
        "gizmo_id": None,
        "is_archived": False,
        "safe_urls": [],
        "default_model_slug": "gpt-4o",
        "id": "6556a0f0-1d2e-8000-9c1a-0c4b1f2e3d4a",
    }
    haiku = {
        "title": None,
        "create_time": 1700100000.0,
        "update_time": 1700100010.0,
        "mapping": {
            "root": _node("root", None, ["q"]),
            "q": _node("q", "root", ["r"], "user", ["A haiku about <script> tags"],
                       t=1700100001.0),
            "r": _node("r", "q", [], "assistant",
                       ["Angle brackets close\n<script> sleeps, escaped and safe\nthe page "
                        "stays a page"], t=1700100004.0,
                       metadata=dict(done, model_slug="text-davinci-002-render-sha")),
        },
        "current_node": "r",
        "id": "6556b111-0000-8000-9c1a-0c4b1f2e3d4a",
    }
    return [starter, haiku]


def test_a_chatgpt_export_becomes_outposts_tree(target, tmp_path):
    loaded = load_text(tmp_path, json.dumps(chatgpt_export(), indent=2), "conversations.json")
    assert loaded.format == "chatgpt"
    summary = importer.write(target, loaded, PROFILE)
    assert [(i["title"], i["messages"], i["left_out"]) for i in summary.imported] == [
        ("Sourdough starter", 7, 1), ("ChatGPT conversation", 2, 0)]
    starter = target.get_conversation(summary.imported[0]["id"])
    assert (starter.profile, starter.system_prompt) == (PROFILE, "")
    assert (starter.created_at, starter.updated_at) == ("2023-11-14T22:13:20.000+00:00",
                                                        "2023-11-14T22:20:00.750+00:00")
    messages = {m.content.split("\n")[0][:22]: m for m in target.messages(starter.id)}
    first, edit = messages["How do I feed a sourdo"], messages["How do I feed a **rye*"]
    code, answer = messages["```python"], messages["Use a 1:1 ratio of rye"]
    photo, stopped = messages["[image not imported]"], messages["It looks bubbly, so it"]
    # the edited question is a second version of the first (the hidden system message and
    # the root are not imported); the tool's output is skipped, its reply follows the code
    assert first.parent_id is None and edit.parent_id is None
    assert [m.id for m in target.siblings(edit)] == [first.id, edit.id]
    assert messages["Feed it equal weights "].parent_id == first.id
    assert (code.parent_id, answer.parent_id) == (edit.id, code.id)
    assert (photo.parent_id, stopped.parent_id) == (answer.id, photo.id)
    assert [m.id for m in target.branch(starter.id)] == [edit.id, code.id, answer.id,
                                                          photo.id, stopped.id]
    assert code.content == \
        "```python\nflour_g = 50\nwater_g = 50\nprint(flour_g / water_g)\n```"
    assert photo.content == "[image not imported]\n\nIs my starter ready? Photo attached."
    assert first.created_at == "2023-11-14T22:13:20.500+00:00" and first.engine is None
    # replies are marked as imported, with the model that wrote them and their times
    assert (code.engine, code.model, code.route_reason) == ("imported", "gpt-4o",
                                                            "imported from a ChatGPT export")
    assert messages["Feed it equal weights "].model == "gpt-4"
    assert (stopped.status, stopped.finish_reason, stopped.model) == (
        MessageStatus.INTERRUPTED, "cancelled", "gpt-4o")  # the conversation's default model
    assert answer.created_at == "2023-11-14T22:15:06.500+00:00"
    assert answer.prompt_tokens is None and answer.cost_usd is None  # unknown, not zero
    # search finds imported text (newest written first)
    assert {m.id for m in target.search('"rye"', profile=PROFILE)} == {edit.id, answer.id}
    # importing the same file again finds every conversation already here
    again = importer.write(target, loaded, PROFILE)
    assert again.imported == [] and len(again.skipped) == 2


def test_a_visible_system_message_becomes_the_system_prompt(target, tmp_path):
    export = chatgpt_export()[:1]
    system = export[0]["mapping"]["sys-0"]["message"]
    system["content"]["parts"] = ["You are a patient baker."]
    system["metadata"] = {}
    summary = importer.write(target, load_text(tmp_path, json.dumps(export)), PROFILE)
    conversation = target.get_conversation(summary.imported[0]["id"])
    assert conversation.system_prompt == "You are a patient baker."
    assert summary.imported[0]["messages"] == 7


def test_a_current_node_with_an_answer_below_shows_that_answer(target, tmp_path):
    """ChatGPT's current_node on a question whose answer is below it: the answer was hidden
    (only reachable by search), found by a trial; the newest answer's leaf is shown."""
    export = chatgpt_export()[:1]
    export[0]["current_node"] = "u-2"  # the photo question; its (interrupted) answer a-4
    summary = importer.write(target, load_text(tmp_path, json.dumps(export)), PROFILE)
    path = target.branch(summary.imported[0]["id"])
    assert path[-1].content == "It looks bubbly, so it is nearly"
    assert path[-2].content.endswith("Is my starter ready? Photo attached.")
    export[0]["current_node"] = "sys-0"  # above both questions: the newer one's answers
    export[0]["id"] = export[0]["conversation_id"] = "another"
    summary = importer.write(target, load_text(tmp_path, json.dumps(export)), PROFILE)
    assert target.branch(summary.imported[0]["id"])[0].content.startswith(
        "How do I feed a **rye**")


def newer_chatgpt_export() -> list:
    """The same two conversations exported again later: the starter continued below the
    stopped reply (a question and its answer, current_node the answer); the haiku's answer
    regenerated (a second version, current_node on it); and a third conversation."""
    export = chatgpt_export()
    done = {"finish_details": {"type": "stop"}}
    starter, haiku = export
    starter["mapping"]["a-4"]["children"] = ["u-3"]
    starter["mapping"]["u-3"] = _node("u-3", "a-4", ["a-5"], "user", ["Go on, please."],
                                      t=1700500000.0)
    starter["mapping"]["a-5"] = _node("a-5", "u-3", [], "assistant",
                                      ["Bubbly and domed: ready to bake."], t=1700500004.0,
                                      metadata=dict(done, model_slug="gpt-4o"))
    starter.update(current_node="a-5", update_time=1700500004.0)
    haiku["mapping"]["q"]["children"] = ["r", "r-2"]
    haiku["mapping"]["r-2"] = _node("r-2", "q", [], "assistant",
                                    ["Tags wait in brackets\nescaped, the page stays a page"],
                                    t=1700600000.0, metadata=dict(done, model_slug="gpt-4o"))
    haiku.update(current_node="r-2", update_time=1700600000.0)
    third = copy.deepcopy(haiku)
    third.update(id="6556c222-0000-8000-9c1a-0c4b1f2e3d4a", title="Third")
    return [starter, haiku, third]


def _rows(store: Store, table: str) -> list[tuple]:
    return store.db.execute(f"select * from {table} order by id").fetchall()


def test_a_newer_chatgpt_export_adds_the_new_messages_to_conversations_here(target,
                                                                          tmp_path):
    """Importing a newer export skipped every conversation already here ("already here
    (imported before?)"), so what was said since never arrived: found by a trial. Now the new
    messages are added; nothing here is changed or deleted."""
    first = importer.write(target, load_text(tmp_path, json.dumps(chatgpt_export())), PROFILE)
    starter_id, haiku_id = [item["id"] for item in first.imported]
    target.rename_conversation(starter_id, "Renamed here")
    before = _rows(target, "messages")
    loaded = load_text(tmp_path, json.dumps(newer_chatgpt_export()), "conversations.json")
    summary = importer.write(target, loaded, PROFILE)
    assert [(i["id"], i["messages"]) for i in summary.continued] == [(starter_id, 2),
                                                                     (haiku_id, 1)]
    assert summary.added_messages == 3 and summary.skipped == []
    assert [(i["title"], i["messages"]) for i in summary.imported] == [("Third", 3)]
    after = _rows(target, "messages")
    assert [row for row in after if row[0] in {r[0] for r in before}] == before  # untouched
    assert len(after) == len(before) + 3 + 3
    starter = target.get_conversation(starter_id)
    assert starter.title == "Renamed here"
    # the later of the export's (2023-11-20) and the rename here (now)
    assert starter.updated_at > "2023-11-20T17:06:44.000+00:00"
    # the starter's shown path was continued: it now ends at the new answer
    path = target.branch(starter_id)
    assert [m.content for m in path[-3:]] == ["It looks bubbly, so it is nearly",
                                              "Go on, please.",
                                              "Bubbly and domed: ready to bake."]
    # the haiku's new answer is a second version; the one shown stays shown
    shown = target.branch(haiku_id)[-1]
    assert shown.content.startswith("Angle brackets close")
    assert [m.content[:4] for m in target.siblings(shown)] == ["Angl", "Tags"]
    assert [m.id for m in target.search('"domed"', profile=PROFILE)] == [path[-1].id]
    again = importer.write(target, loaded, PROFILE)  # nothing new now: said so, nothing done
    assert again.continued == [] and again.imported == []
    assert [s["reason"] for s in again.skipped] == [importer._ALREADY_HERE] * 3
    assert _rows(target, "messages") == after


def test_a_branch_chosen_here_stays_shown_and_deleted_messages_stay_deleted(target,
                                                                           tmp_path):
    first = importer.write(target, load_text(tmp_path, json.dumps(chatgpt_export())), PROFILE)
    starter_id = first.imported[0]["id"]
    everything = {m.content for m in target.messages(starter_id)}
    messages = {m.content[:12]: m for m in target.messages(starter_id)}
    target.set_active(starter_id, messages["Feed it equa"].id)  # the first version, chosen here
    # the newest answers deleted here (its photo question and the stopped reply go with it)
    target.delete_subtree(messages["Use a 1:1 ra"].id)
    deleted = everything - {m.content for m in target.messages(starter_id)}
    assert len(deleted) == 3
    summary = importer.write(
        target, load_text(tmp_path, json.dumps(newer_chatgpt_export()[:1])), PROFILE)
    # the continuation hung below the deleted answer: it has nowhere to go
    assert summary.continued == [] and summary.skipped[0]["id"] == starter_id
    assert summary.skipped[0]["not_brought_back"] == 5
    assert {m.content for m in target.messages(starter_id)} & deleted == set()
    assert target.branch(starter_id)[-1].id == messages["Feed it equa"].id
    newer = newer_chatgpt_export()[:1]  # continued on the first version this time
    newer[0]["mapping"]["a-1"]["children"] = ["u-9"]
    newer[0]["mapping"]["u-9"] = _node("u-9", "a-1", [], "user", ["And rye?"], t=1700700000.0)
    summary = importer.write(target, load_text(tmp_path, json.dumps(newer)), PROFILE)
    assert [(i["messages"], i["not_brought_back"]) for i in summary.continued] == [(1, 5)]
    assert {m.content for m in target.messages(starter_id)} & deleted == set()
    # the file's current path (below the stopped reply) is not the one shown: kept
    assert target.branch(starter_id)[-1].id == messages["Feed it equa"].id


def test_what_chatgpt_added_before_the_conversation_went_on_here_arrives_too(
        target, tmp_path):
    """Continued in both places: what ChatGPT added after the last import arrives, before or
    after the first message written here (a message deleted here is told apart by its
    tombstone, not by its time)."""
    first = importer.write(target, load_text(tmp_path, json.dumps(chatgpt_export()[1:])),
                           PROFILE)
    haiku_id = first.imported[0]["id"]
    answer = target.branch(haiku_id)[-1]
    local = target.add_message(haiku_id, Role.USER, "Another, about <style>?")
    target.db.execute("update messages set created_at = ?, updated_at = ? where id = ?",
                      ["2023-11-16T12:00:00.000+00:00"] * 2 + [local.id])
    target.db.execute("update conversations set updated_at = ? where id = ?",
                      ["2023-11-16T12:00:00.000+00:00", haiku_id])
    target.db.conn.commit()
    newer = chatgpt_export()[1:]
    mapping = newer[0]["mapping"]
    mapping["r"]["children"] = ["early", "late"]
    mapping["early"] = _node("early", "r", [], "user", ["Written before"], t=1700110000.0)
    mapping["late"] = _node("late", "r", [], "user", ["Written after"], t=1700200000.0)
    newer[0]["current_node"] = "late"
    summary = importer.write(target, load_text(tmp_path, json.dumps(newer)), PROFILE)
    assert summary.continued == [{"id": haiku_id, "title": "ChatGPT conversation",
                                  "messages": 2}]
    contents = [m.content for m in target.siblings(target.get_message(local.id))]
    assert sorted(contents) == ["Another, about <style>?", "Written after", "Written before"]
    assert target.branch(haiku_id)[-1].id == local.id  # continued here: stays shown
    assert target.get_message(answer.id) == answer


def test_another_profile_importing_the_same_file_gets_its_own_copy(source, target,
                                                                   tmp_path):
    """A second profile importing the same file got every conversation "skipped … already
    here (imported before?)": misleading, and it told that another profile had them (found by
    a trial). Now it gets its own copy, with ids of its own, the same each time."""
    alice = importer.write(target, load_text(tmp_path, json.dumps(chatgpt_export())), PROFILE)
    alice_rows = _rows(target, "messages")
    loaded = load_text(tmp_path, json.dumps(chatgpt_export()))
    bob = importer.write(target, loaded, "bob")
    assert bob.skipped == [] and [i["messages"] for i in bob.imported] == [7, 2]
    bob_ids = [i["id"] for i in bob.imported]
    assert not set(bob_ids) & {i["id"] for i in alice.imported}
    assert {c.id for c in target.list_conversations("bob")} == set(bob_ids)
    assert [row for row in _rows(target, "messages") if row in alice_rows] == alice_rows
    assert [m.profile for m in map(target.get_conversation, bob_ids)] == ["bob", "bob"]
    bob_tree = [(m.content, m.parent_id is None) for m in target.messages(bob_ids[0])]
    assert bob_tree == [(m.content, m.parent_id is None)
                        for m in target.messages(alice.imported[0]["id"])]
    assert target.branch(bob_ids[0])[-1].content == "It looks bubbly, so it is nearly"
    assert len(target.search('"rye"', profile="bob")) == 2
    # importing twice into one profile still finds it; a newer export continues bob's copy
    again = importer.write(target, loaded, "bob")
    assert again.imported == [] and [s["reason"] for s in again.skipped] == \
        [importer._ALREADY_HERE] * 2
    newer = importer.write(target, load_text(tmp_path, json.dumps(newer_chatgpt_export())),
                           "bob")
    assert [(i["id"], i["messages"]) for i in newer.continued] == [(bob_ids[0], 2),
                                                                   (bob_ids[1], 1)]
    assert [row for row in _rows(target, "messages") if row in alice_rows] == alice_rows
    assert len(target.messages(alice.imported[0]["id"])) == 7  # alice's: as they were
    # an Outpost export of alice's (the same database) imported by bob: a copy too
    store, ids = source
    exported = export_conversations(store, all_ids(store), "json")
    importer.write(target, load_text(tmp_path, exported), PROFILE)
    copy_summary = importer.write(target, load_text(tmp_path, exported), "bob")
    assert copy_summary.skipped == [] and len(copy_summary.imported) == 2
    copied = target.get_conversation(copy_summary.imported[0]["id"])
    assert copied.profile == "bob" and copied.title == "Lighthouse <notes> & code"
    assert [m.content for m in target.branch(copied.id)] == \
        [m.content for m in target.branch(ids["lighthouse"])]


def test_a_file_with_another_profiles_message_ids_is_a_copy_not_a_mention(source, target,
                                                                           tmp_path):
    store, ids = source
    data = json.loads(export_conversations(store, [ids["other"]], "json"))
    importer.write(target, load_text(tmp_path, json.dumps(data)), PROFILE)
    data["conversations"][0]["id"] = "a-new-conversation-id"
    summary = importer.write(target, load_text(tmp_path, json.dumps(data)), "bob")
    assert summary.skipped == [] and summary.imported[0]["id"] != "a-new-conversation-id"
    assert "another" not in json.dumps(summary.imported)
    # the same file for the profile that has those messages: its own data, said plainly
    mine = importer.write(target, load_text(tmp_path, json.dumps(data)), PROFILE)
    assert "already in another conversation here" in mine.skipped[0]["reason"]


CHATGPT_MUTATIONS = {
    "a parent that is not there": (
        lambda c: c["mapping"]["u-2"].update(parent="gone"),
        "node 'u-2' follows 'gone', which is not in the file"),
    "a cycle": (lambda c: c["mapping"]["client-created-root"].update(parent="a-1"),
                "its nodes form a cycle"),
    "a mapping that is a list": (lambda c: c.update(mapping=[]), "mapping must be an object"),
    "parts that are text": (
        lambda c: c["mapping"]["u-1"]["message"]["content"].update(parts="hi"),
        "node 'u-1': message.content.parts must be a list"),
    "a time that is text": (lambda c: c["mapping"]["u-1"]["message"].update(
        create_time="noon"), "message.create_time must be a number"),
    "a time out of range": (lambda c: c.update(create_time=1e300),
                            "create_time must be a time in Unix seconds"),
    "a current node that is not there": (lambda c: c.update(current_node="nope"),
                                         "current_node 'nope' is not in the mapping"),
    "a role that is not text": (
        lambda c: c["mapping"]["a-1"]["message"]["author"].update(role=["assistant"]),
        "message.author.role must be text"),
    "a number in parts": (
        lambda c: c["mapping"]["a-1"]["message"]["content"]["parts"].append(7),
        "message.content.parts[1] must be text or an object"),
}


@pytest.mark.parametrize("case", sorted(CHATGPT_MUTATIONS))
def test_a_broken_chatgpt_export_is_one_sentence(tmp_path, case):
    export = chatgpt_export()
    mutate, expected = CHATGPT_MUTATIONS[case]
    mutate(export[0])
    with pytest.raises(UsageError) as caught:
        load_text(tmp_path, json.dumps(export), "conversations.json")
    message = str(caught.value)
    assert message.startswith("conversations.json cannot be imported: conversation 1 "
                              "('Sourdough starter')") and "\n" not in message
    assert expected in message


def test_a_chatgpt_title_of_5_mb_is_one_sentence(tmp_path):
    export = chatgpt_export()
    export[1]["title"] = "x" * 5_000_000
    with pytest.raises(UsageError, match=r"^conversations\.json cannot be imported: "
                                         r"conversation 2 \('x+…\): title must be at most "
                                         r"1,000 characters, got 5,000,000\.$"):
        load_text(tmp_path, json.dumps(export), "conversations.json")


# -- Markdown and HTML ---------------------------------------------------------------------------
def test_markdown_shows_the_active_path_with_who_wrote_each_message(source):
    store, ids = source
    text = export_conversations(store, [ids["lighthouse"]], "md")
    assert text.startswith("# Lighthouse <notes> & code\n")
    assert "*3 more messages on other branches, not shown" in text
    assert "> Answer briefly.\n> Use metric units." in text
    order = ["## User", "How tall is the Fastnet lighthouse?",
             "## Assistant · openai · gpt-4o-mini → local · SmolLM2-135M-Instruct · "
             "version 2 of 2", "It is 54 m tall, granite, lit since 1904.",
             "## User · version 2 of 2", "Show me the height as Rust code",
             "## Assistant · local · SmolLM2-135M-Instruct",
             "```rust\nfn main() { println!(\"54 m\"); }\n```"]
    places = [text.index(piece) for piece in order]
    assert places == sorted(places)
    assert "unavailable (HTTP 503)" not in text and "height_m" not in text  # other branches


def test_markdown_closes_a_code_block_an_interrupted_reply_left_open(source):
    store, ids = source
    store.set_active(ids["lighthouse"], ids["cut"])
    text = export_conversations(store, [ids["lighthouse"]], "md")
    assert "## Assistant · local · SmolLM2-135M-Instruct · interrupted\n" in text
    assert text.endswith("Here:\n```python\nheight_m = 54\nprint(\n```\n")


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def test_html_is_one_escaped_page_for_light_and_dark(target, tmp_path):
    hostile = "<script>alert('pwned')</script> & <b>bold</b> \"quotes\""
    conversation = target.create_conversation("<script>document.title='x'</script>",
                                              profile=PROFILE)
    target.add_message(conversation.id, Role.USER, hostile)
    target.add_message(conversation.id, Role.ASSISTANT,
                       "Like this:\n```html\n</code></pre><script>steal()</script>\n```\ndone",
                       engine="local", model="<img src=x onerror=alert(1)>")
    page = export_conversations(target, [conversation.id], "html")
    assert page.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in page
    assert "<script" not in page.lower() and "<img" not in page.lower()
    assert "&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt; &amp; &lt;b&gt;bold" in page
    assert "@media (prefers-color-scheme: dark)" in page and "color-scheme: light dark" in page
    assert "http://" not in page and "https://" not in page and "@import" not in page
    parsed = _Page()
    parsed.feed(page)
    assert "script" not in parsed.tags and "img" not in parsed.tags
    assert parsed.tags.count("pre") == 1 and parsed.tags.count("section") == 2
    text = "".join(parsed.text)
    assert hostile in text  # the reader sees exactly what was written
    assert "</code></pre><script>steal()</script>" in text
    assert "<script>document.title='x'</script>" in text


def test_an_export_of_nothing_is_still_a_file(target):
    assert json.loads(export_conversations(target, [], "json"))["conversations"] == []
    assert export_conversations(target, [], "md") == "*No conversations.*\n"
    assert "<p>No conversations.</p>" in export_conversations(target, [], "html")


def test_the_format_follows_the_file_name():
    assert [format_for(p) for p in ("a.md", "b.HTML", "c.htm", "d.json", "e.txt", None)] == \
        ["md", "html", "html", "json", "json", "json"]


# -- keys a provider echoed into a database written before replies were masked ----------------
KEY = 'sk-live-"quoted"<and>&-0123456789'


@pytest.mark.parametrize("fmt", ["json", "md", "html"])
def test_an_export_never_holds_a_known_key_in_any_escaping(tmp_path, fmt):
    store = Store(tmp_path / "old.db")
    try:
        conversation = store.create_conversation("Keys", profile=PROFILE)
        store.add_message(conversation.id, Role.USER, "what did the proxy say?")
        store.add_message(conversation.id, Role.ASSISTANT, f"Echo: Authorization: Bearer {KEY}",
                          model="m")
        text = export_conversations(store, [conversation.id], fmt, secrets=[KEY])
        plain = export_conversations(store, [conversation.id], fmt)
    finally:
        store.close()
    import html as html_module

    for form in (KEY, json.dumps(KEY)[1:-1], html_module.escape(KEY)):
        assert form not in text
    assert "[redacted]" in text
    assert any(form in plain for form in (KEY, json.dumps(KEY)[1:-1], html_module.escape(KEY)))
