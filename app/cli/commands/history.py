"""``outpost history``: stored conversations, listed, shown (the active path, or ``--tree``),
searched, and switched to another branch; deleted in ``history_delete``."""
from __future__ import annotations

import argparse
import dataclasses
import sys

from app.cli.commands.common import emit, emit_list, local_time, open_core
from app.cli.commands.history_delete import cmd_history_delete
from app.config.secrets import stored_keys
from app.domain.adapters import adapters_from_records
from app.domain.context import LeftOut
from app.domain.wording import counted
from app.domain.errors import BadSearch, UsageError
from app.domain.messages import Conversation, Message
from app.domain.secrets_mask import SecretMask
from app.storage.search import (
    MARK_END,
    MARK_START,
    command_line_query,
    snippet,
    words_query,
)

MESSAGE_KEYS = ("id", "conversation_id", "parent_id", "role", "content", "status", "engine",
                "model", "params", "prompt_tokens", "completion_tokens", "cached_prompt_tokens",
                "tokens_estimated", "ttft_ms", "tokens_per_s", "finish_reason", "error",
                "route_reason", "segments", "cost_usd", "cost_estimated", "output_check",
                "candidates", "created_at", "updated_at")


def cmd_history(args: argparse.Namespace) -> int:
    if args.history_command == "search" and not args.query.strip():
        raise UsageError("The search is empty; give a word to look for.")
    core = open_core(args)
    store, me = core.store, core.profile.name
    # a stored text may hold a known key (a Local only chat's, or one stored before its key
    # was): printed masked, as exports are
    mask = SecretMask(stored_keys())
    try:
        if args.history_command == "delete":
            return cmd_history_delete(core, args)
        if args.history_command == "list":
            conversations = [_titled(c, mask) for c in store.list_conversations(me)]
            if args.json:
                emit_list([{"id": c.id, "title": c.title, "updated_at": c.updated_at,
                            "created_at": c.created_at} for c in conversations])
            else:
                if not conversations:  # (on stderr: stdout stays empty for a script)
                    print('No conversations yet: `outpost ask "…"` starts one.',
                          file=sys.stderr)
                for c in conversations:
                    print(f"{c.id}  {c.updated_at}  {c.title}")
            return 0
        if args.history_command == "search":
            # one hit more than shown says whether more match, never counting them all
            # (a common word is in most messages: README "Search")
            page = {"limit": args.limit + 1, "offset": args.offset, "profile": me}
            try:
                query = command_line_query(args.query)
                messages = store.search(query, **page) if query is not None else []
            except BadSearch as exc:  # not valid syntax even so: its words, said so
                plain = words_query(args.query)
                print(f"outpost: {exc.as_typed(args.query)} Searched for its words instead.",
                      file=sys.stderr)
                messages = store.search(plain, **page) if plain is not None else []
            more = len(messages) > args.limit
            messages = [mask.scrub_message(m) for m in messages[:args.limit]]
            following = args.offset + args.limit
            if args.json:  # a list of hits, as ever (scripts read it); a page as full as
                emit([_row(m) for m in messages])  # --limit may have more: the note says so
            else:
                if not messages:
                    beyond = f" beyond the {counted(args.offset, 'newest hit')}" \
                        if args.offset else ""
                    print(f"No message matches {args.query!r}{beyond}.", file=sys.stderr)
                _print_hits(store, messages, args.query, mask)
            if more:  # (on stderr: stdout stays the hits)
                print(f"outpost: more messages match; add --offset {following} for the next "
                      f"{args.limit:,}.", file=sys.stderr)
            return 0
        if args.history_command == "fork":
            message = store.get_message(args.message)
            core.profiles.check_owner(core.profile, store.get_conversation(
                message.conversation_id), message_id=args.message)
            fork = _titled(store.fork(message.id, me), mask)
            path = [mask.scrub_message(m) for m in store.branch(fork.id)]
            if args.json:
                emit_list([_row(m, _versions(path), True) for m in path])
            else:
                print(f"{fork.id}  {fork.title}  ({len(path)} messages)")
            return 0
        if args.history_command == "switch":
            message = store.get_message(args.message)
            conversation = store.get_conversation(message.conversation_id)
            core.profiles.check_owner(core.profile, conversation, message_id=args.message)
        else:
            conversation = store.get_conversation(args.id)
            core.profiles.check_owner(core.profile, conversation)
        if args.history_command == "switch":
            path = store.set_active(conversation.id, message.id)
        else:
            path = store.branch(conversation.id)
        conversation = _titled(conversation, mask)
        path = [mask.scrub_message(m) for m in path]
        everything = [mask.scrub_message(m) for m in store.messages(conversation.id)]
        versions = _versions(everything)
        if args.history_command == "show" and args.tree:
            on_path = {m.id for m in path}
            if args.json:
                emit_list([_row(m, versions, m.id in on_path) for m in everything])
            else:
                print(f"# {conversation.title}  ({conversation.id})  * the active path")
                _print_tree(everything, on_path, versions)
            return 0
        if args.json:
            emit_list([_row(m, versions, True) for m in path])
        else:
            print(f"# {conversation.title}  ({conversation.id})")
            for m in path:
                index, count = versions[m.id]
                mark = f"  ‹{index}/{count}›" if count > 1 else ""
                print(_block(m, mark))
        return 0
    finally:
        store.close()


def _titled(conversation: Conversation, mask: SecretMask) -> Conversation:
    """``conversation`` with a known key in its title masked (the same object otherwise)."""
    title = mask.scrub(conversation.title)
    return conversation if title == conversation.title else \
        dataclasses.replace(conversation, title=title)


def _print_hits(store, messages: list[Message], query: str, mask: SecretMask) -> None:
    """Search hits, newest first, two lines each: the conversation (id and title, for
    ``history show``), then who wrote the message, its id (for ``history switch``, ``fork``,
    ``ask --reply-to``), when, and the words around the match (marked in bold on a
    terminal)."""
    bold, plain = ("\x1b[1m", "\x1b[0m") if sys.stdout.isatty() else ("", "")
    titles: dict[str, str] = {}
    for m in messages:
        if m.conversation_id not in titles:
            titles[m.conversation_id] = mask.scrub(
                store.get_conversation(m.conversation_id).title)
        words = snippet(m.content, query).replace(MARK_START, bold).replace(MARK_END, plain)
        print(f"conversation {m.conversation_id}  {titles[m.conversation_id]}\n"
              f"  {m.role.value} {m.id}, {local_time(m.created_at)}: {words}")


def _versions(messages: list[Message]) -> dict[str, tuple[int, int]]:
    """message id -> (its 1-based place among its siblings, how many there are)."""
    by_parent: dict[str | None, list[str]] = {}
    for m in messages:  # oldest first: the first answer is 1
        by_parent.setdefault(m.parent_id, []).append(m.id)
    return {mid: (i + 1, len(ids)) for ids in by_parent.values() for i, mid in enumerate(ids)}


def _row(m: Message, versions: dict | None = None, active: bool | None = None) -> dict:
    data = m.as_dict()
    row = {k: data[k] for k in MESSAGE_KEYS}
    if versions is not None:
        row["sibling_index"], row["siblings"] = versions[m.id]
    if active is not None:
        row["active"] = active
    return row


def _block(m: Message, note: str = "") -> str:
    """One message as ``history show`` prints it: who, its state, why it was routed so."""
    mark = "" if m.status.value == "complete" else f" [{m.status.value}]"
    if m.finish_reason == "length":
        mark += " [cut at max tokens]"
    authors = " → ".join(f"{x.get('engine')} · {x.get('model')}" for x in m.segments or []) \
        if m.segments and len(m.segments) > 1 else f"{m.engine} · {m.model}"
    who = m.role.value if m.role.value != "assistant" else f"assistant · {authors}"
    adapters = adapters_from_records((m.params or {}).get("lora"))
    if adapters:
        who += " · LoRA " + ", ".join(a.label() for a in adapters)
    body = m.content or (f"({m.error})" if m.error else "")
    if m.content and m.error and m.status.value != "complete":  # why it broke off
        body += f"\n({m.error})"
    route = f"\n  [{m.route_reason}]" if m.role.value == "assistant" and m.route_reason and \
        any(w in m.route_reason for w in ("locally", "outbox", "hedge")) else ""
    left_out = LeftOut.from_record((m.params or {}).get("context_left_out")) \
        if m.role.value == "assistant" else None
    if left_out is not None:  # the oldest turns the model did not see
        route += f"\n  [{left_out.short()}]"
    # its id's start (git's way: any unique start of 4+ will do) for switch, fork, --reply-to
    return f"\n{who}{mark}{note} · {m.id[:8]}:{route}\n{body}"


def _print_tree(messages: list[Message], on_path: set[str],
                versions: dict[str, tuple[int, int]]) -> None:
    """Every message under its parent, one line each: the active path starred, each branch's
    place among its siblings, the id's start to use with ``switch`` and ``ask --reply-to`` (8
    characters, as ``history show`` prints them; the JSON form has whole ids)."""
    children: dict[str | None, list[Message]] = {}
    for m in messages:
        children.setdefault(m.parent_id, []).append(m)
    stack = [(m, 0) for m in reversed(children.get(None, []))]
    while stack:
        m, depth = stack.pop()
        index, count = versions[m.id]
        place = f" ‹{index}/{count}›" if count > 1 else ""
        state = "" if m.status.value == "complete" else f" [{m.status.value}]"
        text = " ".join((m.content or f"({m.error or 'no text'})").split())
        text = text if len(text) <= 60 else text[:59] + "…"
        star = "*" if m.id in on_path else " "
        print(f"{star} {'  ' * depth}{m.role.value}{place}{state}: {text}  [{m.id[:8]}]")
        stack.extend((child, depth + 1) for child in reversed(children.get(m.id, [])))
