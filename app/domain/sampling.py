"""The sampling knobs: what each does, its valid range, the built-in presets, and which engines
honour which knob (the capability map).

A knob set to ``None`` is *not sent*: the engine's own default applies (for the local model,
llama.cpp's defaults, which are then recorded as what was applied). Every assistant message
stores the parameters actually sent to the engine that answered (``sent_params``), never the
panel's values.
"""
from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass

from app.domain.errors import UsageError


@dataclass(frozen=True)
class Knob:
    name: str
    label: str
    kind: type  # float, int, or list (stop sequences)
    low: float | None
    high: float | None
    tip: str
    low_open: bool = False  # the low end itself is not allowed (top_p > 0)

    def span(self) -> str:
        """The values ``check`` accepts, in words ("between 0 and 2", "greater than 0 and at
        most 1"): its error for a value out of range and the command line's help both say it."""
        assert self.low is not None and self.high is not None, f"{self.name} has no range"
        if self.low_open:
            return f"greater than {_num(self.low)} and at most {_num(self.high)}"
        return f"between {_num(self.low)} and {_num(self.high)}"


KNOBS: tuple[Knob, ...] = (
    Knob("temperature", "Temperature", float, 0.0, 2.0,
         "How random the choice of each next token is. 0 always takes the most likely token "
         "(greedy: the same input gives the same output). 0.2–0.7 for factual work and code, "
         "0.7–1.0 for creative writing; above 1.2 text soon turns incoherent."),
    Knob("top_p", "Top-p", float, 0.0, 1.0,
         "Nucleus sampling: choose only among the most likely tokens whose probabilities add up "
         "to p. 0.8–0.95 is usual; 1 turns it off. Tune this or temperature, not both.",
         low_open=True),
    Knob("top_k", "Top-k", int, 0, 1000,
         "Choose only among the k most likely tokens. Off (empty) unless you need it; 40 is "
         "llama.cpp's default, 0 means no limit."),
    Knob("min_p", "Min-p", float, 0.0, 1.0,
         "Drop tokens less likely than min-p × the most likely token's probability. 0.05–0.1 "
         "keeps output coherent at higher temperatures; 0 turns it off."),
    Knob("max_tokens", "Max tokens", int, 1, 131_072,
         "The longest reply, in tokens. The reply stops there (marked \"cut at max tokens\")."),
    Knob("stop", "Stop sequences", list, None, None,
         "The reply ends before any of these strings (OpenAI accepts at most 4)."),
    Knob("presence_penalty", "Presence penalty", float, -2.0, 2.0,
         "Penalise tokens that already appeared at all, nudging toward new topics. 0 is off; "
         "0.1–1.0 is usual; negative values encourage repetition."),
    Knob("frequency_penalty", "Frequency penalty", float, -2.0, 2.0,
         "Penalise tokens in proportion to how often they already appeared, reducing verbatim "
         "repetition. 0 is off; 0.1–1.0 is usual."),
    Knob("repeat_penalty", "Repeat penalty", float, 0.0, 2.0,
         "llama.cpp's repetition penalty: divide the odds of recently used tokens. 1 is off; "
         "1.05–1.2 curbs loops on small models.", low_open=True),
    Knob("seed", "Seed", int, 0, 2 ** 31 - 1,
         "Random seed. With the same seed, input and knobs the local model gives the same "
         "output; cloud providers only try to. Unset (unticked, or --seed random): a new "
         "random seed each time."),
)
KNOB_NAMES = tuple(k.name for k in KNOBS)
BY_NAME = {k.name: k for k in KNOBS}
MAX_STOPS = 8


def check(name: str, value, label: str | None = None):
    """The value, validated for its range; raises UsageError naming the knob (as ``label``
    calls it: the command line says ``--max-tokens``) and its range."""
    knob = BY_NAME.get(name)
    if knob is None:
        raise UsageError(f"There is no sampling knob called {name!r} (knobs: "
                         f"{', '.join(KNOB_NAMES)}).")
    if value is None:
        return None
    if knob.kind is list:
        if isinstance(value, str):
            value = [value]
        stops = [str(s) for s in value]
        if any(not s for s in stops):
            raise UsageError("A stop sequence cannot be empty.")
        if len(stops) > MAX_STOPS:
            raise UsageError(f"At most {MAX_STOPS} stop sequences, got {len(stops)}.")
        return tuple(stops)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"{label or name} must be a number, got {value!r}.")
    if not math.isfinite(value):
        raise UsageError(f"{label or name} must be a finite number, got {value!r}.")
    if knob.kind is int:
        if float(value) != int(value):
            raise UsageError(f"{label or name} must be a whole number, got {value!r}.")
        value = int(value)
    else:
        value = float(value)
    assert knob.low is not None and knob.high is not None  # every numeric knob has a range
    too_low = value <= knob.low if knob.low_open else value < knob.low
    if too_low or value > knob.high:
        raise UsageError(f"{label or name} must be {knob.span()}, got {_num(value)}.")
    return value


def _num(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


# -- stop sequences as lines of text ---------------------------------------------------------
# The window edits stop sequences one per line, so a stop that holds a line break (``"\n"``,
# common for chat models) or other invisible characters is written as an escape: ``\n``,
# ``\t``, ``\r``, ``\\`` for a backslash, ``\uXXXX`` (``\UXXXXXXXX``) for any other
# control, separator or non-character (Qt's text field would turn those into line breaks or
# plain spaces). Every stop survives ``stops_from_lines(stops_as_lines(stops))`` exactly.
_SHORT_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}
_UNESCAPE = {"\\": "\\", "n": "\n", "t": "\t", "r": "\r"}
_HIDDEN = frozenset({"Cc", "Cf", "Co", "Cn", "Zl", "Zp", "Zs"})  # invisible, or changed by Qt


def _stop_char(char: str) -> str:
    if char in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[char]
    if char != " " and unicodedata.category(char) in _HIDDEN:
        code = ord(char)
        return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
    return char


def stops_as_lines(stops) -> str:
    """The stop sequences as the window's field shows them: one per line, escaped."""
    return "\n".join("".join(_stop_char(c) for c in stop) for stop in stops or ())


def stops_from_lines(text: str) -> list[str]:
    """The stop sequences typed in the window's field (one per line, empty lines skipped),
    escapes read: ``\\n`` newline, ``\\t`` tab, ``\\r`` carriage return, ``\\\\`` one
    backslash, ``\\uXXXX``/``\\UXXXXXXXX`` that character; a backslash before anything else
    is kept as typed (``\\d`` stays two characters), so typing never fails."""
    stops = []
    for line in text.split("\n"):
        out, i = [], 0
        while i < len(line):
            char = line[i]
            nxt = line[i + 1] if i + 1 < len(line) else ""
            if char == "\\" and nxt in _UNESCAPE:
                out.append(_UNESCAPE[nxt])
                i += 2
                continue
            if char == "\\" and nxt in ("u", "U"):
                width = 4 if nxt == "u" else 8
                code = _hex(line[i + 2:i + 2 + width], width)
                if code is not None:
                    out.append(chr(code))
                    i += 2 + width
                    continue
            out.append(char)
            i += 1
        if out:
            stops.append("".join(out))
    return stops


def _hex(digits: str, width: int) -> int | None:
    """The character code ``digits`` (exactly ``width`` hex digits) names, or None when it is
    no character text can hold (a surrogate, beyond U+10FFFF)."""
    if len(digits) != width or any(d not in "0123456789abcdefABCDEF" for d in digits):
        return None
    code = int(digits, 16)
    return code if code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF else None


# -- presets ---------------------------------------------------------------------------------
BUILTIN_PRESETS: dict[str, dict] = {
    "Precise": {"temperature": 0.2, "top_p": 0.9, "top_k": 40, "min_p": 0.05,
                "repeat_penalty": 1.05, "presence_penalty": None, "frequency_penalty": None},
    "Balanced": {"temperature": 0.7, "top_p": 0.95, "top_k": None, "min_p": 0.05,
                 "repeat_penalty": 1.0, "presence_penalty": None, "frequency_penalty": None},
    "Creative": {"temperature": 1.0, "top_p": 0.98, "top_k": None, "min_p": 0.1,
                 "repeat_penalty": 1.1, "presence_penalty": 0.3, "frequency_penalty": 0.3},
}


# -- the capability map ----------------------------------------------------------------------
# Which knobs each engine kind honours, and why the others are not sent.
CAPABILITIES: dict[str, frozenset[str]] = {
    "local": frozenset(KNOB_NAMES),
    "openai": frozenset({"temperature", "top_p", "max_tokens", "stop", "presence_penalty",
                         "frequency_penalty", "seed"}),
    "anthropic": frozenset({"temperature", "top_p", "top_k", "max_tokens", "stop"}),
}
_WHY = {
    "openai": "The OpenAI chat completions API has no {knob}; it is not sent.",
    "anthropic": "Anthropic's Messages API has no {knob}; it is not sent.",
}
# OpenAI's reasoning models (o1, o3, o4-mini, gpt-5 and its mini and nano; gpt-5-chat is not
# one) take ``max_completion_tokens`` and reject ``max_tokens``, and refuse the sampling knobs
# below (HTTP 400, "unsupported_value": only the default temperature 1 is allowed,
# "unsupported_parameter" for the penalties). Those are sent to them only when given for the
# turn (``ChatRequest.chosen``: a flag or a preset), never from the settings' defaults or what
# a conversation kept; a server that refuses a knob anyway is remembered
# (``app.config.provider_facts``) and the knob not sent to that model again.
_MAX_COMPLETION_TOKENS_MODELS = re.compile(r"^(o\d|gpt-5|gpt-4\.1-nano-reasoning)",
                                           re.IGNORECASE)
_REASONING_MODELS = re.compile(r"^(o\d|gpt-5(?!-chat))", re.IGNORECASE)
REASONING_FAMILIES = "o1, o3, o4-mini, gpt-5"
REASONING_REFUSES = frozenset({"temperature", "top_p", "presence_penalty", "frequency_penalty"})


def takes_max_completion_tokens(model: str) -> bool:
    """Whether an OpenAI model wants ``max_completion_tokens`` in place of ``max_tokens``: by
    its bare name only. A router (OpenRouter's ``openai/o3-mini``) takes ``max_tokens`` for
    every model and passes it on as the model wants it; a server that refuses either name
    gets the other (learnt, ``app.config.provider_facts``)."""
    return bool(_MAX_COMPLETION_TOKENS_MODELS.match(model or ""))


def is_reasoning_model(kind: str, model: str | None) -> bool:
    """An OpenAI reasoning model (``REASONING_FAMILIES``), by its name at an OpenAI-compatible
    server, also behind a router's prefix (OpenRouter's ``openai/o3-mini``, a proxy's
    ``team/gpt-5``: the name after the last ``/``): the knobs of ``REASONING_REFUSES`` go to
    it only when given for the turn."""
    return kind == "openai" and bool(_REASONING_MODELS.match((model or "").rsplit("/", 1)[-1]))


def withheld(kind: str, model: str | None, chosen=(), refused=()) -> frozenset[str]:
    """The knobs the map allows ``kind`` that are not sent to ``model``: those a reasoning model
    refuses, unless ``chosen`` for the turn, and those the server refused before
    (``refused``, learnt), chosen or not."""
    by_default = REASONING_REFUSES - set(chosen) if is_reasoning_model(kind, model) \
        else frozenset()
    # (max_tokens is always sent: a refusal of it says which of its two names to use)
    allowed = CAPABILITIES.get(kind, frozenset()) - {"max_tokens"}
    return frozenset(by_default | set(refused)) & allowed


def why_withheld(kind: str, model: str | None, knob: str, refused=()) -> str | None:
    """Why ``knob`` is not sent to ``model`` although its API has it (None: it is sent): the
    window's tooltip and ``preset knobs`` say it."""
    label = BY_NAME[knob].label.lower() if knob in BY_NAME else knob
    if knob in refused:
        return (f"The server refused {label} for {model}, so Outpost no longer sends it to "
                "that model (delete provider_facts.json in the data folder to try again).")
    if knob in REASONING_REFUSES and is_reasoning_model(kind, model):
        return (f"{model} is an OpenAI reasoning model ({REASONING_FAMILIES}), which refuses "
                f"{label}: it is not sent unless given for the message (a flag, a preset).")
    return None


# llama.cpp's defaults: what the local model applies to a knob left empty
LOCAL_DEFAULTS = {"top_p": 0.95, "top_k": 40, "min_p": 0.05, "repeat_penalty": 1.0,
                  "presence_penalty": 0.0, "frequency_penalty": 0.0}


def supports(kind: str, knob: str) -> bool:
    return knob in CAPABILITIES.get(kind, CAPABILITIES["openai"])


def why_unsupported(kind: str, knob: str) -> str:
    label = BY_NAME[knob].label.lower() if knob in BY_NAME else knob
    return _WHY.get(kind, _WHY["openai"]).format(knob=label)


ANTHROPIC_TOP_P = 0.95  # a top_p below this goes to Anthropic instead of the temperature


def sent_otherwise(kind: str, temperature: float | None, top_p: float | None
                   ) -> dict[str, str]:
    """Knobs set in the panel that this engine kind gets otherwise, and why (the panel says
    so rather than show them as sent): Anthropic takes a temperature of at most 1, and one of
    temperature and top_p (``sent_params``)."""
    if kind != "anthropic":
        return {}
    said: dict[str, str] = {}
    if top_p is not None and top_p < ANTHROPIC_TOP_P:
        said["temperature"] = (f"Top-p is below {ANTHROPIC_TOP_P}, so Anthropic gets Top-p "
                               "instead of the temperature (newer Claude models refuse both).")
    else:
        said["top_p"] = (f"Anthropic gets the temperature instead; Top-p is sent only below "
                         f"{ANTHROPIC_TOP_P} (newer Claude models refuse both).")
        if temperature is not None and temperature > 1:
            said["temperature"] = "Anthropic takes a temperature of at most 1: 1 is sent."
    return said


# why the knobs an engine kind does not take are not sent, as one clause for one or more
_NOT_TAKEN = {
    "openai": "OpenAI-compatible servers do not take {it}",
    "anthropic": "Anthropic's Messages API does not take {it}",
}


def not_taken(kind: str, many: bool = False) -> str:
    """Why knobs an engine of ``kind`` has no parameter for are not sent (one clause)."""
    return _NOT_TAKEN.get(kind, _NOT_TAKEN["openai"]).format(it="them" if many else "it")


@dataclass(frozen=True)
class NotAsAsked:
    """A knob set for a turn that did not go out as asked: what was ``sent`` (None: nothing)
    and ``why``: a sentence, ``NOT_TAKEN`` (the engine kind has no such parameter:
    ``not_taken``), or None (no reason known here)."""

    name: str
    asked: object
    sent: object
    why: str | None


NOT_TAKEN = "not_taken"


def not_as_asked(kind: str, asked: dict, sent: dict, model: str | None = None,
                 refused=()) -> list[NotAsAsked]:
    """The knobs of ``asked`` (set for one turn, by name) that ``sent`` (the record
    ``sent_params`` made of what an engine of ``kind`` was sent for ``model``, ``refused``
    the knobs its server refused, learnt) does not carry as asked, each with why, from this
    map: a knob the kind does not take, Anthropic's cap on the temperature and its one of
    temperature and top_p (``sent_otherwise``), a knob withheld from the model
    (``why_withheld``). Stop sequences and max_tokens are not among them: a provider's engine
    ends the reply at the stops it cannot send, and a quota that lowers max_tokens says so
    itself."""
    otherwise = sent_otherwise(kind, asked.get("temperature"), sent.get("top_p"))
    found = []
    for name, value in asked.items():
        if value is None or name in ("stop", "max_tokens") or sent.get(name) == value:
            continue
        why = NOT_TAKEN if not supports(kind, name) else \
            otherwise.get(name) or why_withheld(kind, model, name, refused)
        found.append(NotAsAsked(name, value, sent.get(name), why))
    return found


# stop sequences a provider takes at most (OpenAI: 4); Outpost watches for the rest itself
PROVIDER_MAX_STOPS = {"openai": 4}


def unsent_stops(kind: str, stops, refused=()) -> tuple[str, ...]:
    """The stop sequences an engine of ``kind`` cannot send: the engine ends the reply at them
    itself (``StopScanner``). All of them where the server refused ``stop`` (``refused``)."""
    if "stop" in refused:
        return tuple(stops or ())
    return tuple(stops or ())[PROVIDER_MAX_STOPS.get(kind, MAX_STOPS):]


class StopScanner:
    """Ends streamed text at the first of ``stops``, as a provider ends it at a stop sequence
    it was sent (the stop itself not shown). ``feed`` returns the text that can be shown so
    far, holding back what may be the start of a stop split across deltas; ``hit`` once a stop
    was found (nothing after it is shown); ``flush`` the held-back rest at the end."""

    def __init__(self, stops):
        self.stops = tuple(s for s in stops if s)
        self._held = ""
        self.hit = False
        self._keep = max((len(s) for s in self.stops), default=1) - 1

    def feed(self, text: str) -> str:
        if self.hit:
            return ""
        held = self._held + text
        # the stop a provider checking after each token meets first: the one that ends first
        # (of two ending together, the longer), whatever way the text came in deltas
        found = [(i + len(s), i) for s in self.stops if (i := held.find(s)) >= 0]
        if found:
            self.hit, self._held = True, ""
            return held[:min(found)[1]]
        cut = max(len(held) - self._keep, 0)
        self._held = held[cut:]
        return held[:cut]

    def flush(self) -> str:
        rest, self._held = self._held, ""
        return "" if self.hit else rest


def sent_params(kind: str, request, model: str | None = None, refused=()) -> dict:
    """The knobs of ``request`` an engine of ``kind`` sends (or, locally, applies) to ``model``
    (``withheld``: a reasoning model's, what the server refused before): what the assistant
    message records. Engines build their payloads from this, so it cannot drift."""
    out: dict = {}
    held = withheld(kind, model, getattr(request, "chosen", ()), refused)
    for name in KNOB_NAMES:
        if not supports(kind, name) or name in held:
            continue
        value = getattr(request, name, None)
        if name == "stop":
            value = list(value or ())[:PROVIDER_MAX_STOPS.get(kind, MAX_STOPS)]
            if not value:
                continue
        if value is None:
            if kind == "local" and name in LOCAL_DEFAULTS:
                out[name] = LOCAL_DEFAULTS[name]
            continue
        out[name] = value
    if kind == "anthropic":
        if "temperature" not in held:  # (none to a model that refused it: learnt)
            out["temperature"] = min(out.get("temperature", 1.0), 1.0)  # Anthropic's: 0..1
        # Anthropic asks to tune temperature or top_p, not both (newer models reject both):
        # top_p narrowed below Outpost's default of 0.95 is sent instead of temperature
        if out.get("top_p", 1.0) >= ANTHROPIC_TOP_P:
            out.pop("top_p", None)
        else:
            out.pop("temperature", None)
    rf = getattr(request, "response_format", None)
    if rf:
        out["response_format"] = structured_mode(kind, rf)
    lora = getattr(request, "lora", ())
    if lora and kind == "local":  # only the local engine applies adapters
        out["lora"] = [a.record() for a in lora]
    return out


def strict_ok(schema: dict | list) -> bool:
    """OpenAI's strict Structured Outputs need every object closed (additionalProperties
    false) with all its properties required; other schemas are sent non-strict."""
    if isinstance(schema, dict):
        if schema.get("type") == "object" or "properties" in schema:
            props = schema.get("properties") or {}
            if schema.get("additionalProperties", True) is not False or \
                    set(schema.get("required") or ()) != set(props):
                return False
        return all(strict_ok(v) for v in schema.values() if isinstance(v, (dict, list)))
    if isinstance(schema, list):
        return all(strict_ok(v) for v in schema if isinstance(v, (dict, list)))
    return True


def structured_mode(kind: str, rf: dict) -> str:
    """How structured output is asked of this kind of engine (stored with the reply)."""
    schema = rf.get("schema")
    if kind == "local":
        return "grammar from the JSON schema" if schema else "JSON grammar"
    if kind == "anthropic":
        return "forced tool call (input_schema)" if schema else "forced tool call (any object)"
    if schema:
        return "json_schema (strict)" if strict_ok(schema) else "json_schema"
    return "json_object"
