"""A stored row read as a domain object (``Message``, ``Conversation``), and the time stamp
rows carry. Shared by the store's tables and by salvage, which asks whether a damaged file's
row still reads."""
from __future__ import annotations

import datetime as dt
import json

from app.domain.messages import Conversation, Message, MessageStatus, Role


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def row_to_message(row: dict) -> Message:
    return Message(
        id=row["id"],
        conversation_id=row["conversation_id"],
        parent_id=row["parent_id"],
        role=Role(row["role"]),
        content=row["content"] or "",
        status=MessageStatus(row["status"]),
        engine=row["engine"],
        model=row["model"],
        params=json.loads(row["params"]) if row["params"] else None,
        prompt_tokens=row["prompt_tokens"],
        completion_tokens=row["completion_tokens"],
        cached_prompt_tokens=row["cached_prompt_tokens"],
        tokens_estimated=bool(row["tokens_estimated"]),
        ttft_ms=row["ttft_ms"],
        tokens_per_s=row["tokens_per_s"],
        finish_reason=row["finish_reason"],
        error=row["error"],
        route_reason=row.get("route_reason"),
        segments=json.loads(row["segments"]) if row.get("segments") else None,
        cost_usd=row.get("cost_usd"),
        cost_estimated=bool(row.get("cost_estimated")),
        output_check=json.loads(row["output_check"]) if row.get("output_check") else None,
        candidates=json.loads(row["candidates"]) if row.get("candidates") else None,
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def row_to_conversation(row: dict) -> Conversation:
    return Conversation(id=row["id"], title=row["title"] or "", created_at=row["created_at"],
                        updated_at=row["updated_at"], system_prompt=row["system_prompt"] or "",
                        route=row.get("route"), profile=row.get("profile"),
                        sampling=json.loads(row["sampling"]) if row.get("sampling") else None,
                        active_leaf_id=row.get("active_leaf_id"),
                        pinned=bool(row.get("pinned")), target=row.get("target"),
                        target_model=row.get("target_model"))
