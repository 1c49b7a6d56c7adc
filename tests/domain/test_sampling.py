"""Sampling knobs (issue 6): ranges, the capability map in real payloads, the parameters stored
being those sent, seeds on the real bundled model, presets, knobs kept per conversation."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading

import pytest

from app.chat.service import ChatService, TurnOptions
from app.config.presets import PresetBook
from app.config.settings import Settings
from app.domain.errors import UsageError
from app.domain.messages import ChatMessage, ChatRequest, Role
from app.domain.sampling import CAPABILITIES, KNOB_NAMES, check, sent_params
from app.storage.store import Store
from tests.fault_server import fault_server
from tests.support import wire_engine

EVERY_KNOB = TurnOptions(temperature=0.4, top_p=0.8, top_k=30, min_p=0.07, max_tokens=40,
                         stop=("END",), presence_penalty=0.3, frequency_penalty=0.2,
                         repeat_penalty=1.1, seed=1234)


@pytest.fixture
def service(tmp_path):
    store = Store(tmp_path / "outpost.db")
    yield ChatService(store, Settings(tmp_path / "settings.json"))
    store.close()


@pytest.mark.parametrize("name, bad", [
    ("temperature", 2.5), ("temperature", -0.1), ("top_p", 0.0), ("top_p", 1.5),
    ("top_k", -1), ("top_k", 2.5), ("min_p", 1.2), ("max_tokens", 0),
    ("presence_penalty", 3.0), ("frequency_penalty", -2.5), ("repeat_penalty", 2.5),
    ("seed", -5), ("seed", 2 ** 40), ("temperature", float("nan")), ("stop", [""]),
    ("stop", [str(i) for i in range(9)]), ("seed", True), ("top_k", "ten")])
def test_each_knob_is_checked_for_its_range_with_a_specific_error(name, bad):
    with pytest.raises(UsageError) as info:
        check(name, bad)
    assert name in str(info.value) or "stop sequence" in str(info.value)
    with pytest.raises(UsageError):
        ChatRequest(model="m", messages=(ChatMessage(Role.USER, "hi"),), **{
            name: tuple(bad) if name == "stop" else bad})


def test_anthropic_and_openai_rows_of_the_capability_map():
    assert CAPABILITIES["local"] == frozenset(KNOB_NAMES)
    assert not CAPABILITIES["openai"] & {"top_k", "min_p", "repeat_penalty"}
    assert not CAPABILITIES["anthropic"] & {"presence_penalty", "frequency_penalty", "seed",
                                            "repeat_penalty", "min_p"}
    request = ChatRequest(model="m", messages=(ChatMessage(Role.USER, "hi"),), temperature=1.6,
                          top_p=0.99)
    # Anthropic: temperature capped at its maximum of 1; top_p only when narrowed, and then
    # instead of temperature (newer models refuse both)
    assert sent_params("anthropic", request) == {"temperature": 1.0, "max_tokens": 512}
    narrowed = ChatRequest(model="m", messages=(ChatMessage(Role.USER, "hi"),), top_p=0.8)
    assert sent_params("anthropic", narrowed) == {"top_p": 0.8, "max_tokens": 512}


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
def test_payload_has_exactly_the_allowed_knobs_and_the_reply_stores_them(service, wire):
    allowed = {"openai": {"temperature", "top_p", "max_tokens", "stop", "presence_penalty",
                          "frequency_penalty", "seed"},
               # top_p 0.8 is narrowed: sent instead of temperature (not both, for Anthropic)
               "anthropic": {"top_p", "top_k", "max_tokens", "stop"}}[wire]
    knob_keys = {"temperature", "top_p", "top_k", "min_p", "max_tokens", "stop",
                 "stop_sequences", "presence_penalty", "frequency_penalty", "repeat_penalty",
                 "seed", "max_completion_tokens"}
    with fault_server() as server:
        engine = wire_engine(wire, server.url)
        try:
            turn = service.start_turn("Hello", model=engine.info.model, options=EVERY_KNOB)
            list(turn.run(engine, threading.Event()))
        finally:
            engine.close()
        [sent] = server.chat_requests()
    body = sent.json
    sent_knobs = {("stop" if k == "stop_sequences" else k): v for k, v in body.items()
                  if k in knob_keys}
    assert set(sent_knobs) == allowed
    stored = service.store.get_message(turn.assistant_message_id).params
    assert {k: stored[k] for k in allowed} == sent_knobs
    assert not set(stored) & (set(KNOB_NAMES) - allowed)  # nothing claimed that was not sent
    assert stored["engine_kind"] == wire


@pytest.mark.local_model
def test_same_seed_same_output_and_temperature_zero_is_greedy(local_engine):
    def reply(**knobs) -> str:
        request = ChatRequest(model="local", messages=(
            ChatMessage(Role.USER, "Write one sentence about the sea."),), max_tokens=24,
            **knobs)
        return "".join(getattr(e, "text", "") for e in local_engine.stream(
            request, threading.Event()))

    hot = dict(temperature=1.3, top_p=1.0, top_k=0, min_p=0.0)
    first = reply(seed=7, **hot)
    assert reply(seed=7, **hot) == first  # reproducible
    others = {reply(seed=s, **hot) for s in (8, 9, 10)}
    assert others - {first}  # and the seed does matter at this temperature
    assert reply(temperature=0.0, seed=1) == reply(temperature=0.0, seed=2)  # greedy


@pytest.mark.local_model
def test_an_unseeded_local_reply_stores_the_seed_it_drew_and_it_reproduces(service,
                                                                          local_engine):
    options = TurnOptions(temperature=1.3, top_p=1.0, max_tokens=16)
    turn = service.start_turn("Write about the sea.", model="local", options=options)
    list(turn.run(local_engine, threading.Event()))
    stored = service.store.get_message(turn.assistant_message_id)
    assert stored.params["seed_drawn"] and isinstance(stored.params["seed"], int)
    again = service.start_turn("Write about the sea.", model="local",
                               options=TurnOptions(temperature=1.3, top_p=1.0, max_tokens=16,
                                                   seed=stored.params["seed"]))
    list(again.run(local_engine, threading.Event()))
    assert service.store.get_message(again.assistant_message_id).content == stored.content


def test_presets_builtin_are_fixed_yours_can_be_saved_renamed_deleted(tmp_path):
    book = PresetBook(tmp_path / "presets.json")
    assert book.names()[:3] == ["Precise", "Balanced", "Creative"]
    assert book.get("precise")["temperature"] == 0.2
    book.save("Long form", {"temperature": 0.9, "max_tokens": 2000, "stop": ["THE END"]})
    assert book.get("long form") == {"temperature": 0.9, "max_tokens": 2000,
                                     "stop": ["THE END"]}
    book.rename("Long form", "Essay")
    assert "Essay" in book.names() and "Long form" not in book.names()
    for bad in (lambda: book.save("Creative", {}), lambda: book.delete("Balanced"),
                lambda: book.rename("Precise", "x"), lambda: book.save("x", {"top_p": 2}),
                lambda: book.save("x", {"warmth": 1}), lambda: book.get("nope")):
        with pytest.raises(UsageError):
            bad()
    book.delete("essay")
    assert book.names() == ["Precise", "Balanced", "Creative"]


def test_knobs_resolve_settings_then_conversation_then_preset_then_turn(service):
    turn = service.start_turn("Hi", model="m", options=TurnOptions(preset="Creative", seed=3))
    conversation = service.store.get_conversation(turn.conversation_id)
    assert conversation.sampling["temperature"] == 1.0 and conversation.sampling["seed"] == 3
    # the next turn keeps the conversation's knobs; a flag overrides it for that turn only
    nxt = service.start_turn("More", turn.conversation_id, model="m",
                             options=TurnOptions(temperature=0.1))
    assert (nxt.request.temperature, nxt.request.seed, nxt.request.min_p) == (0.1, 3, 0.1)
    again = service.start_turn("Again", turn.conversation_id, model="m")
    assert again.request.temperature == 1.0
    unset = service.start_turn("No seed", turn.conversation_id, model="m",
                               options=TurnOptions(unset=("seed",)))
    assert unset.request.seed is None
    fresh = service.start_turn("New", model="m")
    assert fresh.request.temperature == service.settings["temperature"]
    assert fresh.request.seed is None and fresh.request.top_k is None


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True,
                          text=True, env=os.environ.copy(), timeout=120,
                          stdin=subprocess.DEVNULL)


@pytest.mark.local_model
def test_cli_knob_flags_preset_and_system_prompt_reach_the_model(outpost_home):
    result = cli("ask", "Name a colour.", "--preset", "Precise", "--seed", "11", "--top-k",
                 "5", "--stop", "\n\n", "--max-tokens", "6", "--system", "Answer in one word.")
    assert result.returncode == 0, result.stderr
    [conversation] = json.loads(cli("history", "list", "--json").stdout)
    messages = json.loads(cli("history", "show", conversation["id"], "--json").stdout)
    params = messages[-1]["params"]
    assert (params["temperature"], params["seed"], params["top_k"], params["max_tokens"],
            params["stop"], params["repeat_penalty"]) == (0.2, 11, 5, 6, ["\n\n"], 1.05)
    bad = cli("ask", "x", "--min-p", "3")
    assert bad.returncode == 2 and "--min-p must be between 0 and 1, got 3" in bad.stderr
    assert cli("ask", "x", "--preset", "Nope").returncode == 2
    for flag, value in (("--max-tokens", "0"), ("--max-tokens", "-5"), ("--top-p", "nan")):
        refused = cli("ask", "x", flag, value)  # the flag named as typed, nothing stored
        assert refused.returncode == 2 and refused.stderr.startswith(f"outpost: {flag} must")


def test_each_knobs_help_says_the_range_its_check_accepts():
    """`outpost ask --help` gives each knob's range as ``check`` has it: Top-p and the repeat
    penalty refuse 0 ("must be greater than 0 and at most 1"), so their help does not say
    "0..1" / "0..2"; every other range includes both ends, and says so."""
    import argparse

    from app.cli.parser import build_parser
    from app.domain.sampling import BY_NAME

    [commands] = [action for action in build_parser()._actions
                  if isinstance(action, argparse._SubParsersAction)]
    helps = {action.dest: action.help for action in commands.choices["ask"]._actions
             if action.dest in BY_NAME}
    assert set(helps) == set(KNOB_NAMES)
    assert helps["top_p"].startswith("Greater than 0 and at most 1. ")  # it said "0..1"
    assert helps["repeat_penalty"].startswith("Greater than 0 and at most 2. ")  # "0..2"
    assert helps["temperature"].startswith("Between 0 and 2. ")
    for name, text in helps.items():
        knob = BY_NAME[name]
        if knob.kind is list:
            continue
        words = "Greater than" if knob.low_open else "Between"
        assert text.startswith(f"{words} {knob.low:g} and "), (name, text)
        with pytest.raises(UsageError, match=re.escape(knob.span())):  # the same words
            check(name, knob.high + 1)
        if knob.low_open:
            with pytest.raises(UsageError):
                check(name, knob.low)
        else:
            assert check(name, knob.low) == knob.low and check(name, knob.high) == knob.high


def test_stop_sequences_survive_the_panels_lines_exactly():
    """The window's field holds one stop per line: a stop with a line break (``ask --stop
    $'\\n'``) is written \\n, a backslash \\\\, a tab \\t, and any character Qt's field would
    change (\\r, U+00A0, U+2028, U+FDD0…) or nobody could see as \\uXXXX; every stop comes back
    exactly, whatever its characters."""
    from app.domain.sampling import stops_as_lines, stops_from_lines

    stops = ["\n", "\n\nUser:", "\\", "C:\\new", "\tEND\r\n", "a\u00a0b", "\u2028", " ",
             "\\u0041", "\U000e0001", "é😀"]
    text = stops_as_lines(stops)
    assert text.split("\n") == ["\\n", "\\n\\nUser:", "\\\\", "C:\\\\new", "\\tEND\\r\\n",
                                "a\\u00a0b", "\\u2028", " ", "\\\\u0041", "\\U000e0001", "é😀"]
    assert stops_from_lines(text) == stops
    every = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    for start in range(0, len(every), 4096):  # every character, in stops of 4096
        chunk = ["x" + "".join(every[start:start + 4096]) + "\\"]
        assert stops_from_lines(stops_as_lines(chunk)) == chunk
    # typed: the escapes read; a backslash before anything else, or a bad code, kept as typed
    assert stops_from_lines("\\n\n\n\\t|\\\\\nC:\\d\\q\\u12\\ud800\\") == [
        "\n", "\t|\\", "C:\\d\\q\\u12\\ud800\\"]


def test_the_local_defaults_the_panel_shows_are_llama_cpps_own():
    """An unticked knob says which default the local model applies ("default (40)"); those
    are ``LOCAL_DEFAULTS``, which must be llama-cpp-python's own defaults, not a guess."""
    import inspect

    from app.domain.sampling import LOCAL_DEFAULTS

    llama_cpp = pytest.importorskip("llama_cpp")
    defaults = {name: p.default for name, p in
                inspect.signature(llama_cpp.Llama.generate).parameters.items()}
    assert {name: defaults[name] for name in LOCAL_DEFAULTS} == LOCAL_DEFAULTS
    assert (LOCAL_DEFAULTS["top_k"], LOCAL_DEFAULTS["min_p"]) == (40, 0.05)


def _ask_flags(**given):
    """``outpost ask``'s parsed arguments with only ``given`` set."""
    import argparse

    flags = {name: None for name in KNOB_NAMES}
    flags.update(preset=None, system=None, lora=None, json_schema=None, json_mode=False)
    return argparse.Namespace(**{**flags, **given})


def test_seed_random_draws_a_seed_for_the_turn_though_the_conversation_has_one(service):
    """``--seed random`` (any case) is no fixed seed: the turn sends none (the local model
    draws one), though the conversation was started with ``--seed 5``; numbers stay as they
    are and anything else is refused naming the flag (``--seed none`` was refused as no
    number, with no way back to a random seed)."""
    from app.cli.commands.ask import knob_options

    pinned = service.start_turn("Hi", model="m", options=knob_options(_ask_flags(seed="5")))
    cid = pinned.conversation_id
    assert pinned.request.seed == 5 and service.store.get_conversation(cid).sampling["seed"] == 5
    for spelled in ("random", "Random"):
        options = knob_options(_ask_flags(seed=spelled))
        assert options.seed is None and options.unset == ("seed",)
        assert service.start_turn("Again", cid, model="m", options=options).request.seed is None
    assert knob_options(_ask_flags(seed=7)).seed == 7  # (as argparse's int gave it)
    assert knob_options(_ask_flags(seed="7")).seed == 7 and not knob_options(
        _ask_flags(seed="7")).unset
    for bad, why in (("none", "whole number or 'random'"), ("1.5", "whole number"),
                     ("-1", "between 0 and")):
        with pytest.raises(UsageError, match=why) as info:
            knob_options(_ask_flags(seed=bad))
        assert str(info.value).startswith("--seed must be")
    fresh = service.start_turn("New", model="m", options=knob_options(_ask_flags(seed="random")))
    assert service.store.get_conversation(fresh.conversation_id).sampling["seed"] is None


def test_seed_random_unpins_the_conversation_from_now_on(service):
    """After ``--seed random`` the conversation has no fixed seed: its next turns without
    ``--seed`` draw one too (they went back to the seed it started with)."""
    from app.cli.commands.ask import knob_options

    pinned = service.start_turn("Hi", model="m", options=knob_options(_ask_flags(seed="5")))
    cid = pinned.conversation_id
    service.start_turn("Again", cid, model="m", options=knob_options(_ask_flags(seed="random")))
    assert service.store.get_conversation(cid).sampling["seed"] is None
    assert service.start_turn("More", cid, model="m").request.seed is None


@pytest.mark.local_model
def test_cli_seed_random_is_accepted_and_draws_a_seed(outpost_home):
    """``outpost ask --seed random`` gets past the command line (argparse refused anything but
    a number) and the reply draws its seed, though the conversation was started with --seed 5;
    a word that is neither is one sentence naming the flag (exit 2)."""
    first = cli("ask", "Hi.", "--seed", "5", "--max-tokens", "4")
    assert first.returncode == 0, first.stderr
    [conversation] = json.loads(cli("history", "list", "--json").stdout)
    again = cli("ask", "Again.", "--conversation", conversation["id"], "--seed", "random",
                "--max-tokens", "4")
    assert again.returncode == 0, again.stderr
    messages = json.loads(cli("history", "show", conversation["id"], "--json").stdout)
    params = [m["params"] for m in messages if m["role"] == "assistant"]
    assert params[0]["seed"] == 5 and not params[0].get("seed_drawn")
    assert params[1]["seed_drawn"] and isinstance(params[1]["seed"], int)
    bad = cli("ask", "x", "--seed", "none")
    assert bad.returncode == 2
    assert bad.stderr.strip() == ("outpost: --seed must be a whole number or 'random', got "
                                  "'none'.")


def test_the_stop_scanner_holds_back_only_what_may_start_a_stop():
    from app.domain.sampling import StopScanner, unsent_stops

    assert unsent_stops("openai", ("a", "b", "c", "d", "e", "f")) == ("e", "f")
    assert unsent_stops("anthropic", ("a", "b", "c", "d", "e")) == ()
    scanner = StopScanner(("END", "\n\n"))
    assert scanner.feed("one") == "o"  # "ne" may be the start of END
    assert scanner.feed(" two E") == "ne two"
    assert scanner.feed("N") == " "
    assert scanner.feed("Dless") == "" and scanner.hit
    assert scanner.feed("more") == "" and scanner.flush() == ""
    quiet = StopScanner(("END",))
    assert quiet.feed("no stop here") + quiet.flush() == "no stop here"
    first = StopScanner(("xyz", "b"))
    assert first.feed("abcxyz") == "a"  # the earliest stop wins
    # the stop that ends first, as a provider checking after each token meets it, however
    # the text was cut into deltas
    whole, piecemeal = StopScanner(("b", "abc")), StopScanner(("b", "abc"))
    assert whole.feed("xabc") == "xa"
    assert "".join(piecemeal.feed(c) for c in "xabc") == "xa"
