"""Outpost's own export format: lossless JSON, what ``outpost import`` reads back.

    {"conversations": [{...every column of the conversation...,
                        "messages": [{...every column of each message...}, ...]}, ...],
     "format": "outpost-conversations", "version": 1}

Every message of every branch is there, oldest first (ties: the order they were written in),
with its ``parent_id``; the file is written a conversation at a time (``dump``), the same bytes
as ``json.dumps`` of the whole document with ``indent=2`` and sorted keys; the conversation's
``active_leaf_id`` says which path is shown. JSON columns (params, segments, output_check,
candidates, sampling) are written as the JSON they hold, flags as true/false, everything else
as stored. Keys are sorted and nothing depends on the clock, so exporting, importing into
another home and exporting again gives the same bytes.

Reading is strict: a field this version does not know, a value of the wrong type, a reply whose
parent is not in its conversation, a cycle of parents, an active leaf that is not one of the
conversation's messages, or an id twice is refused with one sentence; so is a value no Outpost
writes: a count, time or cost below zero, a user or system message whose status is not
``complete``, a segment other than ``{"engine", "model", "start", "end"?, "reason"?}`` within
the text, a knob in ``params`` of the wrong type or out of its range, a title over
``shape.MAX_TITLE`` characters, a target other than ``local`` or ``provider:NAME``. A newer
format version is refused (a field added to the file means a new version). A reply still
``streaming`` when it was exported is imported as ``interrupted`` (nobody is writing it here),
with an error that says so.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Iterator

from app.config.providers import is_target
from app.domain.adapters import adapters_from_records
from app.domain.errors import UsageError
from app.domain.messages import MessageStatus, Role
from app.domain.sampling import KNOB_NAMES, check
from app.domain.structured import check_schema
from app.storage.store import Store
from app.storage.transfer import shape
from app.storage.transfer.records import (CONVERSATIONS, FLAG_COLUMNS, JSON_COLUMNS, MESSAGES,
                                          ConversationRows, file_columns, read_conversation,
                                          schema, to_file)
from app.storage.transfer.shape import Where

FORMAT, VERSION = "outpost-conversations", 1
_TOP_KEYS = {"format", "version", "conversations"}
_ROLES = {r.value for r in Role}
_STATUSES = {s.value for s in MessageStatus}
_ROUTES = {None, "auto", "local", "cloud"}
_NOT_NEGATIVE = ("prompt_tokens", "completion_tokens", "cached_prompt_tokens", "ttft_ms",
                 "tokens_per_s", "cost_usd")
_SEGMENT_KEYS = {"engine", "model", "start", "end", "reason"}
_PARAMS_TEXT = ("user", "idempotency_key", "engine_kind", "system_prompt")
EXPORTED_STREAMING = "The export was taken while this reply was being written."


def dump(store: Store, conversation_ids: list[str]) -> Iterator[str]:
    """The conversations, in the order given, as the export file's text, in pieces: each
    conversation is read when its piece is asked for, so one is held at a time. The pieces
    join into ``json.dumps(document, ensure_ascii=False, sort_keys=True, indent=2) + "\\n"``
    ("conversations" sorts before "format" and "version"; JSON text holds no raw line break
    but the ones indentation adds, so a conversation is indented two levels by prefixing
    its lines)."""
    tail = json.dumps({"format": FORMAT, "version": VERSION}, sort_keys=True, indent=2)[1:]
    if not conversation_ids:
        yield '{\n  "conversations": [],' + tail + "\n"
        return
    for index, conversation_id in enumerate(conversation_ids):
        row, messages = read_conversation(store, conversation_id)
        record = to_file(CONVERSATIONS, row)
        record["messages"] = [to_file(MESSAGES, m) for m in messages]
        text = json.dumps(record, ensure_ascii=False, sort_keys=True, indent=2)
        yield ('{\n  "conversations": [\n    ' if index == 0 else ",\n    ") + \
            text.replace("\n", "\n    ")
    yield "\n  ]," + tail + "\n"


def check_header(members: dict, where: Where, whole: bool) -> None:
    """The top level's members other than the conversations: the format (else the file is
    not Outpost's), the version; with ``whole`` (the whole top level was read), no other field
    and a list of conversations."""
    if members.get("format") != FORMAT:
        raise where.fail("it is neither an Outpost export (\"format\": "
                         f"\"{FORMAT}\") nor ChatGPT's conversations.json (a list of "
                         "conversations with a \"mapping\")")
    version = members.get("version")
    if version != VERSION:
        if isinstance(version, int) and not isinstance(version, bool) and version > VERSION:
            raise where.fail(f"it was written by a newer Outpost (format version {version}); "
                             f"this one reads version {VERSION}")
        raise where.fail(f"version must be {VERSION}, got {shape.shown(version)}")
    if not whole:
        return
    extra = sorted(set(members) - _TOP_KEYS)
    if extra:
        raise where.fail(f"it has a field this version of Outpost does not know: {extra[0]!r}")
    shape.array(members.get("conversations"), where, "conversations")


@dataclass
class Seen:
    """The ids of the conversations and messages read so far from one file."""

    conversations: set[str] = field(default_factory=set)
    messages: dict[str, int] = field(default_factory=dict)  # id -> its conversation's place


def conversation(record: object, index: int, where: Where, seen: Seen) -> ConversationRows:
    """The ``index``-th conversation of the file (from 1), every field checked."""
    here = where.at(f"conversation {index}")
    shape.obj(record, here, "a conversation")
    assert isinstance(record, dict)
    title = record.get("title")
    if isinstance(title, str) and title:
        here = where.at(f"conversation {index} ({shape.shown(title)})")
    rows = _conversation(record, here, index, seen.messages)
    if rows.id in seen.conversations:
        raise here.fail(f"the conversation {rows.id!r} is in the file twice")
    seen.conversations.add(rows.id)
    return rows


def _conversation(record: dict, where: Where, index: int, seen: dict[str, int]
                  ) -> ConversationRows:
    """``seen``: the ids of the messages before it in the file (and whose they are), which
    this conversation's messages are added to."""
    row = _row(CONVERSATIONS, record, where)
    shape.identifier(row.get("id"), where, "id")
    shape.title(row.get("title"), where)
    if row.get("pinned") not in (None, 0, 1):
        raise where.fail(f"pinned must be 0 or 1, got {shape.shown(row['pinned'])}")
    for name in ("created_at", "updated_at"):
        shape.timestamp(row.get(name), where, name)
    shape.identifier(row.get("active_leaf_id"), where, "active_leaf_id", optional=True)
    if row.get("route") not in _ROUTES:
        raise where.fail(f"route must be auto, local, cloud or null, got "
                         f"{shape.shown(row.get('route'))}")
    if not is_target(row.get("target")):  # the window read the provider's name after a ':'
        raise where.fail(f"target must be 'local', 'provider:NAME' or null, got "
                         f"{shape.shown(row.get('target'))}")
    if record.get("sampling") is not None:
        _check_sampling(record["sampling"], where)
    items = shape.array(record.get("messages"), where, "messages")
    assert items is not None  # (not optional)
    messages = []
    for place, item in enumerate(items, 1):
        here = where.at(f"message {place}")
        shape.obj(item, here, "a message")
        message = _message(item, here)
        if message["id"] in seen:  # before the tree: a copy would be taken for a lost parent
            other = seen[message["id"]]
            raise here.fail(f"the message {message['id']!r} is in the file twice ("
                            + ("both in this conversation" if other == index else
                               f"also in conversation {other}") + ")")
        seen[message["id"]] = index
        messages.append(message)
    parents = {m["id"]: m.get("parent_id") for m in messages}
    shape.check_tree(parents, where, "message")
    leaf = row.get("active_leaf_id")
    if leaf is not None and leaf not in parents:
        raise where.fail(f"its active_leaf_id {leaf!r} is not one of its messages")
    return ConversationRows(row, messages)


def _message(record: dict, where: Where) -> dict:
    row = _row(MESSAGES, record, where)
    shape.identifier(row.get("id"), where, "id")
    shape.identifier(row.get("parent_id"), where, "parent_id", optional=True)
    if row["role"] not in _ROLES:
        raise where.fail(f"role must be one of {', '.join(sorted(_ROLES))}, got "
                         f"{shape.shown(row['role'])}")
    if row["status"] not in _STATUSES:
        raise where.fail(f"status must be one of {', '.join(sorted(_STATUSES))}, got "
                         f"{shape.shown(row['status'])}")
    if row["role"] != Role.ASSISTANT.value and row["status"] != MessageStatus.COMPLETE.value:
        raise where.fail(f"a {row['role']} message's status must be complete (only a reply can "
                         f"be anything else), got {shape.shown(row['status'])}")
    for name in ("created_at", "updated_at"):
        shape.timestamp(row[name], where, name)
    for name in _NOT_NEGATIVE:
        if row.get(name) is not None and row[name] < 0:
            raise where.fail(f"{name} cannot be below zero, got {shape.shown(record[name])}")
    _check_params(record.get("params") or {}, where)
    _check_segments(record.get("segments") or [], len(row.get("content") or ""), where)
    candidates = record.get("candidates") or {}
    for index, candidate in enumerate(shape.array(candidates.get("candidates"), where,
                                                  "candidates.candidates", True) or [], 1):
        shape.obj(candidate, where, f"candidates.candidates[{index}]")
    if row["status"] == MessageStatus.STREAMING.value:  # nobody is writing it here
        row["status"] = MessageStatus.INTERRUPTED.value
        row["error"] = row.get("error") or EXPORTED_STREAMING
    return row


def _check_params(params: dict, where: Where) -> None:
    """What was sent, as a reply records it: each knob of its type and in its range (a seed
    drawn by the engine may be any whole number from 0), the stop sequences text."""
    for name, value in params.items():
        label = f"params.{name}"
        if name == "lora":
            _check_lora(value, where, label)
        elif name in _PARAMS_TEXT:
            shape.text(value, where, label, optional=True)
        elif name == "stop":
            for stop in shape.array(value, where, label, optional=True) or []:
                shape.text(stop, where, f"each of {label}")
        elif name == "seed":
            if shape.whole(value, where, label) is not None and value < 0:
                raise where.fail(f"{label} cannot be below zero, got {value}")
        elif name in KNOB_NAMES:
            try:
                check(name, value, label)
            except UsageError as exc:
                raise where.fail(str(exc).rstrip(".")) from None


def _check_segments(segments: list, length: int, where: Where) -> None:
    """Who wrote which part of the text: ``{"engine", "model", "start", "end"?, "reason"?}``,
    the offsets within the text (``app.chat.router`` writes them)."""
    for index, segment in enumerate(segments, 1):
        name = f"segments[{index}]"
        shape.obj(segment, where, name)
        extra = sorted(set(segment) - _SEGMENT_KEYS)
        if extra:
            raise where.fail(f"{name} has a field a segment does not have: {extra[0]!r}")
        for label in ("engine", "model"):
            shape.text(segment.get(label), where, f"{name}.{label}")
        shape.text(segment.get("reason"), where, f"{name}.reason", optional=True)
        start = shape.whole(segment.get("start"), where, f"{name}.start", optional=False)
        end = shape.whole(segment.get("end"), where, f"{name}.end")
        for label, at in (("start", start), ("end", end)):
            if at is not None and not 0 <= at <= length:
                raise where.fail(f"{name}.{label} must be from 0 to the text's length "
                                 f"({length}), got {at}")
        if start is not None and end is not None and end < start:
            raise where.fail(f"{name}.end must not be before its start ({start}), got {end}")


def _row(table: str, record: dict, where: Where) -> dict:
    """The record's fields as stored, each checked against its column's type."""
    columns = schema()[table]
    allowed = file_columns(table)
    extra = sorted(set(record) - set(allowed) - ({"messages"} if table == CONVERSATIONS
                                                 else set()))
    if extra:
        raise where.fail(f"it has a field this version of Outpost does not know: {extra[0]!r}")
    row: dict = {}
    for name in allowed:
        if name not in record:
            if columns[name].required or name == "id":
                raise where.fail(f"{name} is missing")
            continue
        value = record[name]
        if value is None:
            if columns[name].required or name == "id":
                raise where.fail(f"{name} cannot be null")
            row[name] = None
        elif name in JSON_COLUMNS[table]:
            kind = JSON_COLUMNS[table][name]
            (shape.obj if kind is dict else shape.array)(value, where, name)
            row[name] = json.dumps(value)
        elif name in FLAG_COLUMNS.get(table, ()):
            row[name] = int(bool(shape.flag(value, where, name)))
        elif columns[name].type == "INTEGER":
            row[name] = shape.whole(value, where, name)
        elif columns[name].type in ("REAL", "FLOAT"):
            row[name] = shape.number(value, where, name)
        else:
            row[name] = shape.text(value, where, name)
    return row


def _check_sampling(sampling: dict, where: Where) -> None:
    """The knobs in range (a turn builds its request from them) and the adapters readable."""
    for name, value in sampling.items():
        if name in KNOB_NAMES:
            try:
                check(name, value)
            except UsageError as exc:
                raise where.fail(f"sampling: {str(exc).rstrip('.')}") from None
    if "lora" in sampling:
        _check_lora(sampling["lora"], where, "sampling.lora")
    answer_as = shape.obj(sampling.get("response_format"), where, "sampling.response_format",
                          True)
    if answer_as is not None:  # JSON output: {"type": "json", "schema": a JSON Schema or null}
        try:
            if answer_as.get("type") != "json" or set(answer_as) - {"type", "schema"}:
                raise UsageError('it must be {"type": "json", "schema": a JSON Schema or null}')
            if answer_as.get("schema") is not None:
                check_schema(answer_as["schema"])
        except UsageError as exc:
            raise where.fail(f"sampling.response_format: {str(exc).rstrip('.')}") from None


def _check_lora(records: object, where: Where, name: str) -> None:
    try:
        if not isinstance(records, (list, type(None))):
            raise TypeError(name)
        adapters_from_records(records)
    except (UsageError, TypeError, KeyError, ValueError, AttributeError):
        raise where.fail(f"{name} must be a list of adapters, each with a path and a scale "
                         "from -4 to 4") from None
