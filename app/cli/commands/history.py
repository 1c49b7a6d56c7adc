"""``outpost history``: stored conversations, listed, shown and searched."""
from __future__ import annotations

import argparse
import sys

from app.cli.commands.common import emit_list, open_core


def cmd_history(args: argparse.Namespace) -> int:
    core = open_core(args)
    store, me = core.store, core.profile.name
    try:
        if args.history_command == "list":
            conversations = store.list_conversations(me)
            if args.json:
                emit_list([{"id": c.id, "title": c.title, "updated_at": c.updated_at,
                             "created_at": c.created_at} for c in conversations])
            else:
                for c in conversations:
                    print(f"{c.id}  {c.updated_at}  {c.title}")
            return 0
        if args.history_command == "show":
            conversation = store.get_conversation(args.id)
            core.profiles.check_owner(core.profile, conversation)
            messages = store.messages(conversation.id)
        else:
            conversation = None
            messages = store.search(args.query, profile=me)
        if args.json:
            keys = ("id", "conversation_id", "parent_id", "role", "content", "status", "engine",
                    "model", "params", "prompt_tokens", "completion_tokens",
                    "cached_prompt_tokens", "ttft_ms", "tokens_per_s", "finish_reason", "error",
                    "route_reason", "segments", "created_at", "updated_at")
            rows = []
            for m in messages:
                data = m.as_dict()
                rows.append({k: data[k] for k in keys})
            emit_list(rows)
        else:
            if conversation is not None:
                print(f"# {conversation.title}  ({conversation.id})")
            elif not messages:
                print(f"No message matches {args.query!r}.", file=sys.stderr)
            for m in messages:
                mark = "" if m.status.value == "complete" else f" [{m.status.value}]"
                if m.finish_reason == "length":
                    mark += " [cut at max tokens]"
                authors = " → ".join(f"{x.get('engine')} · {x.get('model')}"
                                     for x in m.segments or []) if m.segments and \
                    len(m.segments) > 1 else f"{m.engine} · {m.model}"
                who = m.role.value if m.role.value != "assistant" else f"assistant · {authors}"
                where = f"  (conversation {m.conversation_id})" if conversation is None else ""
                body = m.content or (f"({m.error})" if m.error else "")
                route = f"\n  [{m.route_reason}]" if m.role.value == "assistant" and \
                    m.route_reason and any(w in m.route_reason for w in (
                        "locally", "outbox", "hedge")) else ""
                print(f"\n{who}{mark}{where}:{route}\n{body}")
        return 0
    finally:
        store.close()
