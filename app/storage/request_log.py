"""The request log: one row per HTTP attempt an engine made (``engines.http_policy``), with
what the ledger needs to know of it (``app.storage.ledger`` reads it)."""
from __future__ import annotations

import json

from app.storage.connections import Connections
from app.storage.rows import now_iso
from app.storage.sqlite_errors import storage_errors


class RequestLog(Connections):
    """The request log of ``app.storage.store.Store``."""

    def log_attempt(self, record, **ledger) -> None:
        """Store one ``engines.http_policy.AttemptRecord`` (called from engine threads);
        ``ledger``: profile, route, conversation_id, cost_usd, cost_estimated (see
        ``app.storage.ledger``, which knows them from the turn), and created_at (default: now;
        a row the disk refused at first keeps the time of its attempt)."""
        with self._tx() as db:
            db["request_log"].insert({
                "idempotency_key": record.idempotency_key, "provider": record.provider,
                "model": record.model, "attempt": record.attempt, "status": record.status,
                "latency_ms": round(record.latency_ms, 1), "error_kind": record.error_kind,
                "rate_limits": json.dumps(record.rate_limits),
                "outcome": record.outcome, "note": record.note,
                "created_at": ledger.get("created_at") or now_iso(),
                "kind": record.kind or None,
                "conversation_id": ledger.get("conversation_id"),
                "prompt_tokens": record.prompt_tokens,
                "completion_tokens": record.completion_tokens,
                "cached_prompt_tokens": record.cached_prompt_tokens,
                "tokens_estimated": int(record.tokens_estimated),
                "ttft_ms": record.ttft_ms,
                "profile": ledger.get("profile"), "route": ledger.get("route"),
                "cost_usd": ledger.get("cost_usd"),
                "cost_estimated": int(bool(ledger.get("cost_estimated")))})

    def relabel_local_model(self, old_file: str, new_file: str) -> int:
        """The local model's rows filed under the file name ``old_file`` are filed under
        ``new_file`` (a model of the library was renamed; the ledger knows a local model by
        its file's name only); how many."""
        with self._tx() as db:
            return db.execute("UPDATE request_log SET model = ? "
                              "WHERE provider = 'local' AND model = ?",
                              [new_file, old_file]).rowcount

    def request_log(self, idempotency_key: str | None = None) -> list[dict]:
        with storage_errors(self.path):
            if idempotency_key is None:
                rows = self.db["request_log"].rows_where(order_by="id")
            else:
                rows = self.db["request_log"].rows_where("idempotency_key = ?",
                                                         [idempotency_key], order_by="id")
            return [dict(r, rate_limits=json.loads(r["rate_limits"] or "{}")) for r in rows]
