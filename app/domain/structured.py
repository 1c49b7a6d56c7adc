"""Structured output: JSON replies, optionally matching a JSON Schema.

How each engine is made to answer in JSON (``ChatRequest.response_format``):

* local: grammar-constrained decoding (llama.cpp GBNF built from the schema by
  llama-cpp-python, or its generic JSON grammar without a schema): the schema's shape, though
  not numeric bounds (minimum, maximum, multipleOf) or uniqueItems, and a reply cut at max
  tokens is unfinished, so the check below still matters;
* OpenAI-compatible: ``response_format`` ``json_schema`` (strict) with a schema, else
  ``json_object``;
* Anthropic: a forced tool call whose ``input_schema`` is the schema; its input is the reply.

Whatever the engine, every result is validated here (jsonschema). An invalid or empty result
gets one repair: a lenient parse (code fences, text around the reply's one outermost JSON
value; not for a reply cut at max tokens), else one re-ask carrying the validation error. If that fails too, the reply is kept with its raw text and marked
*invalid JSON*.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from app.domain.errors import UsageError

MAX_SCHEMA_BYTES = 64_000


def check_schema(schema) -> dict:
    """The schema, if it is itself a valid JSON Schema (a clear error naming the problem)."""
    import jsonschema  # deferred: jsonschema is heavy; only structured output needs it

    if not isinstance(schema, dict):
        raise UsageError("A JSON Schema must be a JSON object, e.g. {\"type\": \"object\", ...}.")
    validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.path) or "the top level"
        raise UsageError(f"The JSON Schema is not valid at {where}: {exc.message}.") from None
    return schema


def load_schema(path: str) -> dict:
    """``--json-schema FILE``: read, parse and check a schema file."""
    file = Path(path).expanduser()
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"The schema file {file} could not be read: "
                         f"{exc.strerror or exc}.") from None
    if len(text.encode("utf-8")) > MAX_SCHEMA_BYTES:
        raise UsageError(f"The schema file {file} is larger than {MAX_SCHEMA_BYTES:,} bytes.")
    try:
        schema = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"The schema file {file} is not JSON: {exc}.") from None
    return check_schema(schema)


def response_format(schema: dict | None) -> dict:
    """What a request carries: JSON mode, with the schema when there is one."""
    return {"type": "json", "schema": check_schema(schema) if schema is not None else None}


@dataclass(frozen=True)
class Verdict:
    valid: bool
    value: object = None
    text: str = ""  # the JSON text that is valid (normalised when repaired leniently)
    error: str | None = None  # why it is not valid

    def as_dict(self) -> dict:
        return {"valid": self.valid, "error": self.error}


def validate(text: str, schema: dict | None) -> Verdict:
    """Strict: the whole text is one JSON value (whitespace around allowed) matching the
    schema."""
    if not text.strip():
        return Verdict(False, error="the reply is empty")
    try:
        value = json.loads(text)
    except ValueError as exc:
        return Verdict(False, error=f"JSON syntax: {exc}")
    return _against(value, text.strip(), schema)


def _against(value, text: str, schema: dict | None) -> Verdict:
    if schema is not None:
        import jsonschema  # deferred: jsonschema is heavy; only structured output needs it

        validator_cls = jsonschema.validators.validator_for(
            schema, default=jsonschema.Draft202012Validator)
        errors = sorted(validator_cls(schema).iter_errors(value), key=lambda e: list(e.path))
        if errors:
            first = errors[0]
            where = "/".join(str(p) for p in first.path) or "the top level"
            return Verdict(False, value, text, f"does not match the schema at {where}: "
                                               f"{first.message}")
    return Verdict(True, value, text)


def lenient(text: str, schema: dict | None) -> Verdict:
    """The first repair: the reply's one JSON value, inside code fences or surrounded by prose.
    Only a value no other bracket encloses counts: an object nested in a reply that was cut
    (or is otherwise broken) is a fragment, never the answer; several values, each of which
    would do, are no one answer either."""
    stripped = text.strip()
    if stripped.startswith("```"):
        body = stripped.split("\n", 1)[1] if "\n" in stripped else ""
        stripped = body.rsplit("```", 1)[0]
    decoder = json.JSONDecoder()
    verdicts = []
    for start in _outermost_starts(stripped):
        try:
            value, _end = decoder.raw_decode(stripped, start)
        except ValueError:
            continue
        verdicts.append(_against(value, json.dumps(value, ensure_ascii=False), schema))
    valid = [verdict for verdict in verdicts if verdict.valid]
    if len(valid) == 1:
        return valid[0]
    if len(verdicts) == 1:
        return verdicts[0]  # the one value, and why it does not match the schema
    return validate(text, schema)


def _outermost_starts(text: str) -> list[int]:
    """Where each bracket that no other bracket encloses opens. Inside brackets JSON strings
    are skipped (a brace in a string is text); outside them prose may quote anything."""
    starts: list[int] = []
    depth, in_string, escaped = 0, False, False
    for i, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char in "{[":
            if depth == 0:
                starts.append(i)
            depth += 1
        elif char in "}]":
            depth = max(0, depth - 1)
        elif char == '"' and depth:
            in_string = True
    return starts


def repair_prompt(verdict: Verdict, schema: dict | None) -> str:
    """The re-ask: what was wrong, and what to send instead."""
    want = "one JSON value matching this JSON Schema:\n" + json.dumps(schema) if schema \
        else "one valid JSON value"
    return (f"Your previous reply was not accepted: {verdict.error}. Reply again with only "
            f"{want}\nNo explanations, no code fences.")


@dataclass
class OutputCheck:
    """How a structured reply was checked (stored as ``messages.output_check``): the mode
    ("json" or "json_schema"), whether the final text is valid, the error when it is not, the
    repair used ("lenient" or "reask", None when the first text was valid), the raw text the
    repair started from, and whether the re-ask failed (the raw text is then the reply)."""

    mode: str
    valid: bool = True
    error: str | None = None
    repair: str | None = None
    raw: str | None = None
    repair_failed: bool = False

    def record(self) -> dict:
        data: dict = {"mode": self.mode, "valid": self.valid, "error": self.error,
                      "repair": self.repair}
        if self.raw is not None:
            data["raw"] = self.raw
        if self.repair_failed:
            data["repair_failed"] = True
        return data
