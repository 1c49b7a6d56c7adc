"""ChatGPT's data export (``conversations.json``) as Outpost conversations.

The file (ChatGPT ▸ Settings ▸ Data controls ▸ Export data) is a list of conversations, each
``{"title", "create_time", "update_time", "current_node", "conversation_id" or "id",
"default_model_slug"?, "mapping": {node id: {"id", "parent", "children", "message": null |
{"author": {"role"}, "content": {"content_type", "parts" | "text", ...}, "create_time",
"metadata"}}}}``,
times in Unix seconds. How it is imported:

* **The tree.** A node's ``parent`` becomes the message's parent (``children`` only orders
  siblings); an edited question or a regenerated answer is a sibling, as in Outpost.
  ``current_node`` becomes the active leaf (or, when messages hang below it, the newest
  answer's leaf below it). A node that is not imported (below) is skipped:
  its children hang from its nearest imported ancestor.
* **Not imported:** the root node (no message); ``system`` messages (ChatGPT's own, usually
  hidden and empty; the first visible one with text becomes the conversation's system prompt);
  ``tool`` messages (browsing results, code output, plugins); messages marked
  ``is_visually_hidden_from_conversation`` (e.g. custom instructions); messages with no text
  at all (reasoning summaries, an empty reply before a tool call). Skipped messages that had text
  are counted (``left_out`` in the import summary).
* **Content.** ``text``: the parts, a blank line between them. ``code``: one fenced code block in
  its language. ``multimodal_text``: its text parts, and ``[image not imported]`` (or the part's
  kind) where an image, audio or file part was: the file itself is not in ``conversations.json``.
  Other kinds: their ``text`` when they have one.
* **Replies** are marked as imported: engine ``imported``, model ``metadata.model_slug`` (else the
  conversation's ``default_model_slug``, else ``chatgpt``), the original times; no tokens or
  cost (unknown). ``finish_details`` ``max_tokens`` becomes finish reason ``length``,
  ``interrupted`` the status ``interrupted``.
* **Ids** are derived (UUID 5) from the conversation's id and each node's id, so importing the same
  file twice finds its conversations already there and skips them, and a newer export of a
  conversation that went on adds only its new messages (``importer``).
"""
from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from dataclasses import dataclass, field

from app.domain.messages import MessageStatus, Role
from app.storage.store import now_iso
from app.storage.transfer import shape
from app.storage.transfer.records import ConversationRows
from app.storage.transfer.shape import Where

IMPORTED_ENGINE = "imported"
ROUTE_REASON = "imported from a ChatGPT export"
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://outpost.invalid/import/chatgpt")
_LATEST = 253402300799  # 9999-12-31T23:59:59Z
_BACKTICKS = re.compile(r"`+")


def is_conversation(item: object) -> bool:
    """An entry of the list that looks like a ChatGPT conversation (an object with a
    ``mapping``)."""
    return isinstance(item, dict) and "mapping" in item


def conversation(item: dict, index: int, where: Where, seen: set[str]) -> ConversationRows:
    """The ``index``-th conversation of the file (from 1), checked; ``seen``: the ids of the
    conversations before it in the file."""
    title = item.get("title")
    here = where.at(f"conversation {index}" + (f" ({shape.shown(title)})"
                                               if isinstance(title, str) and title else ""))
    rows = _conversation(item, here)
    if rows.id in seen:
        raise here.fail("the conversation is in the file twice")
    seen.add(rows.id)
    return rows


def _conversation(item: dict, where: Where) -> ConversationRows:
    mapping = shape.obj(item.get("mapping"), where, "mapping")
    assert mapping is not None  # (not optional)
    title = shape.title(shape.text(item.get("title"), where, "title", True), where) or \
        "ChatGPT conversation"
    source_id = shape.text(item.get("conversation_id") or item.get("id"), where, "id", True) \
        or json.dumps([title, item.get("create_time"), item.get("current_node")])
    default_model = shape.text(item.get("default_model_slug"), where, "default_model_slug",
                               True) or "chatgpt"
    current = shape.text(item.get("current_node"), where, "current_node", True)
    nodes = {key: _node(key, value, where.at(f"node {shape.shown(key)}"))
             for key, value in mapping.items()}
    shape.check_tree({key: node["parent"] for key, node in nodes.items()}, where, "node")
    if current is not None and current not in nodes:
        raise where.fail(f"its current_node {current!r} is not in the mapping")

    order = _tree_order(nodes)
    times = _times(nodes, order, item, where)
    walk = _walk(nodes, order, times, source_id, default_model, where)
    created = times[None]
    conversation = {"id": uuid.uuid5(_NAMESPACE, source_id).hex, "title": title,
                    "system_prompt": walk.system_prompt, "created_at": created,
                    "updated_at": _iso(item.get("update_time"), where, "update_time") or created,
                    "route": None, "sampling": None,
                    "active_leaf_id": _down_to_a_leaf(walk.rows, walk.anchor[current])
                    if current is not None else None}
    messages = sorted(walk.rows, key=lambda row: row["created_at"])  # stable: tree order
    return ConversationRows(conversation, messages, walk.left_out)


def _down_to_a_leaf(rows: list[dict], start: str | None) -> str | None:
    """The leaf under ``start`` by its newest answer at each step: a ``current_node`` that is a
    question with an answer below it (an export taken while the answer was shown, a node
    whose answer was a tool's) would otherwise hide that answer."""
    children: dict[str | None, list[dict]] = {}
    for row in rows:
        children.setdefault(row["parent_id"], []).append(row)
    leaf = start
    while leaf is not None and children.get(leaf):
        leaf = max(children[leaf], key=lambda row: row["created_at"])["id"]
    return leaf


@dataclass
class _Walk:
    rows: list[dict] = field(default_factory=list)  # the imported messages, in tree order
    # node -> the id of the imported message at or nearest above it (None: none above)
    anchor: dict[str, str | None] = field(default_factory=dict)
    system_prompt: str = ""
    left_out: int = 0


def _walk(nodes: dict[str, dict], order: list[str], times: dict[str | None, str],
          source_id: str, default_model: str, where: Where) -> _Walk:
    """Which nodes become messages, and each one's parent: its nearest imported ancestor
    (one pass, parents first, so a long chain of skipped nodes costs nothing extra)."""
    walk = _Walk()
    for key in order:
        node = nodes[key]
        message, text = node["message"], node["text"]
        above = walk.anchor[node["parent"]] if node["parent"] is not None else None
        walk.anchor[key] = above
        if message is None:  # the root
            continue
        visible = bool(text) and not message["hidden"]
        if message["role"] == "system" and visible and not walk.system_prompt:
            walk.system_prompt = text
        elif message["role"] in ("user", "assistant") and visible:
            message_id = uuid.uuid5(_NAMESPACE, f"{source_id}/{key}").hex
            updated = _iso(message["update_time"], where.at(f"node {shape.shown(key)}"),
                           "message.update_time")
            walk.rows.append(_message_row(message, text, message_id, above, times[key],
                                          updated or times[key], default_model))
            walk.anchor[key] = message_id
        else:  # a tool's output, a hidden message, a second system prompt
            walk.left_out += bool(text)
    return walk


def _node(key: str, value: object, where: Where) -> dict:
    """A mapping entry, checked: its parent, its children, and its message's role and text."""
    shape.obj(value, where, "the node")
    assert isinstance(value, dict)
    parent = shape.text(value.get("parent"), where, "parent", True)
    children = shape.array(value.get("children"), where, "children", True) or []
    for child in children:
        shape.text(child, where, "each of children")
    raw = shape.obj(value.get("message"), where, "message", True)
    if raw is None:
        return {"parent": parent, "children": children, "message": None, "text": ""}
    author = shape.obj(raw.get("author"), where, "message.author")
    assert author is not None  # (not optional)
    metadata = shape.obj(raw.get("metadata"), where, "message.metadata", True) or {}
    finish = shape.obj(metadata.get("finish_details"), where,
                       "message.metadata.finish_details", True) or {}
    message = {
        "role": shape.text(author.get("role"), where, "message.author.role"),
        "create_time": raw.get("create_time"),
        "update_time": raw.get("update_time"),
        "hidden": bool(shape.flag(metadata.get("is_visually_hidden_from_conversation"), where,
                                  "message.metadata.is_visually_hidden_from_conversation")),
        "model": shape.text(metadata.get("model_slug"), where, "message.metadata.model_slug",
                            True),
        "finish": shape.text(finish.get("type"), where,
                             "message.metadata.finish_details.type", True),
    }
    for name in ("create_time", "update_time"):
        shape.number(message[name], where, f"message.{name}")
    content = shape.obj(raw.get("content"), where, "message.content")
    assert content is not None  # (not optional)
    return {"parent": parent, "children": children, "message": message,
            "text": _content_text(content, where)}


def _content_text(content: dict, where: Where) -> str:
    kind = shape.text(content.get("content_type"), where, "message.content.content_type")
    if kind == "code":
        code = shape.text(content.get("text"), where, "message.content.text", True) or ""
        language = shape.text(content.get("language"), where, "message.content.language",
                              True) or ""
        fence = "`" * max(3, 1 + max((len(m) for m in _BACKTICKS.findall(code)), default=0))
        language = "" if language == "unknown" else language
        return f"{fence}{language}\n{code}\n{fence}" if code.strip() else ""
    parts = shape.array(content.get("parts"), where, "message.content.parts", True)
    if parts is None:
        return shape.text(content.get("text"), where, "message.content.text", True) or ""
    texts = []
    for index, part in enumerate(parts):
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict):
            texts.append(_part_text(part, where.at(f"message.content.parts[{index}]")))
        elif part is not None:
            raise where.fail(f"message.content.parts[{index}] must be text or an object, got "
                             f"{shape.shown(part)}")
    return "\n\n".join(t for t in texts if t.strip())


def _part_text(part: dict, where: Where) -> str:
    """A non-text part: its transcript when it has one, else a note of what was there."""
    said = shape.text(part.get("text"), where, "text", True)
    if said:
        return said
    kind = shape.text(part.get("content_type"), where, "content_type", True) or "attachment"
    label = {"image_asset_pointer": "image", "audio_asset_pointer": "audio"}.get(
        kind, kind.replace("_", " "))
    return f"[{label} not imported]"


def _tree_order(nodes: dict[str, dict]) -> list[str]:
    """Every node, parents before children, siblings in their parent's ``children`` order."""
    children: dict[str | None, list[str]] = {}
    for key, node in nodes.items():
        children.setdefault(node["parent"], []).append(key)
    for parent, keys in children.items():
        listed = nodes[parent]["children"] if parent is not None else []
        place = {key: i for i, key in enumerate(listed)}
        keys.sort(key=lambda k: (place.get(k, len(place)), k))
    order: list[str] = []
    stack = list(reversed(children.get(None, [])))
    while stack:
        key = stack.pop()
        order.append(key)
        stack.extend(reversed(children.get(key, [])))
    return order


def _times(nodes: dict[str, dict], order: list[str], item: dict, where: Where
           ) -> dict[str | None, str]:
    """Each node's time (ISO, UTC): its own, else its parent's; ``None``: the conversation's
    (``create_time``, else its first message's, else now)."""
    own = {key: _iso(nodes[key]["message"]["create_time"] if nodes[key]["message"] else None,
                     where.at(f"node {shape.shown(key)}"), "message.create_time")
           for key in order}
    started = _iso(item.get("create_time"), where, "create_time") or \
        min((t for t in own.values() if t), default=None) or now_iso()
    times: dict[str | None, str] = {None: started}
    for key in order:  # parents come first
        times[key] = own[key] or times[nodes[key]["parent"]]
    return times


def _iso(value: object, where: Where, name: str) -> str | None:
    seconds = shape.number(value, where, name)
    if seconds is None:
        return None
    if not 0 <= seconds <= _LATEST:
        raise where.fail(f"{name} must be a time in Unix seconds, got {shape.shown(value)}")
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).isoformat(
        timespec="milliseconds")


def _message_row(message: dict, text: str, message_id: str, parent_id: str | None,
                 created_at: str, updated_at: str, default_model: str) -> dict:
    reply = message["role"] == "assistant"
    finish = {"stop": "stop", "max_tokens": "length", "interrupted": "cancelled"}.get(
        message["finish"] or "") if reply else None
    interrupted = reply and message["finish"] == "interrupted"
    return {"id": message_id, "parent_id": parent_id,
            "role": Role.ASSISTANT.value if reply else Role.USER.value, "content": text,
            "status": (MessageStatus.INTERRUPTED if interrupted else MessageStatus.COMPLETE).value,
            "engine": IMPORTED_ENGINE if reply else None,
            "model": (message["model"] or default_model) if reply else None,
            "finish_reason": finish, "route_reason": ROUTE_REASON if reply else None,
            "tokens_estimated": 0, "cost_estimated": 0,
            "created_at": created_at, "updated_at": updated_at}
