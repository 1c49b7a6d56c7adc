"""A reply the disk refused, saved late (found by a trial: "The reply is saved now." came, but
its usage record, refused by the same full disk, was dropped: a cloud reply was missing from
the cost and quota totals). A real small tmpfs in a private mount namespace (``unshare``),
filled while the reply streams: the usage ledger keeps the row and writes it with the reply
once there is room, at the time of its attempt; the reply's cost counts it all along."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests.support import in_mount_namespace

ROOT = Path(__file__).resolve().parents[2]
MOUNT_AND_RUN = 'mount -t tmpfs -o size=$0 tmpfs "$1" || exit 97; shift; exec "$@"'

CHILD = r"""
import json, os, sys, threading
from pathlib import Path

disk, guarded = Path(sys.argv[1]), sys.argv[2] == "guarded"
os.environ["OUTPOST_HOME"] = str(disk / "home")
from app.compose import build_service
from app.config.settings import Settings
from app.domain.messages import Finished, FinishReason, TextDelta, Usage
from app.storage.ledger import start_of_day
from app.storage.store import Store
from engines.http_policy import AttemptRecord
from tests.support import ScriptedEngine

def fill_the_disk():
    with open(disk / "fill", "wb", buffering=0) as fill:
        try:
            while True:
                fill.write(b"\0" * 4096)
        except OSError:  # (no space left on device)
            pass

class CloudReply(ScriptedEngine):
    # a cloud provider's reply, its attempt priced by the shipped price table; ``guarded``:
    # a failure to record it is logged and dropped, as the local engine does
    def _record(self, request, usage, finish):
        try:
            self.on_attempt(AttemptRecord(
                attempt=1, status=200, latency_ms=900.0, error_kind=None,
                idempotency_key=request.idempotency_key, provider="openai", kind="openai",
                model="gpt-4o-mini", prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens))
        except Exception:
            if not guarded:
                raise

def play(request, cancel):
    yield TextDelta("Half an answer, ")
    fill_the_disk()  # another program took the last of the disk meanwhile
    yield TextDelta("then the rest.")
    yield Usage(120_000, 40_000)
    yield Finished(FinishReason.STOP)

store = Store()
service = build_service(store, Settings(), "ann")
engine = CloudReply(play)
engine.on_attempt = service.ledger.record
turn = service.start_turn("Q", model="gpt-4o-mini", effective_route="cloud")
raised = None
try:
    list(turn.run(engine, threading.Event()))
except Exception as exc:
    raised = f"{type(exc).__name__}: {exc}"
waiting = turn.unsaved is not None
cost_meanwhile = turn.unsaved["cost_usd"] if waiting else None
service.keep_unsaved(turn)
while_full = service.save_unsaved()
(disk / "fill").unlink()  # room again
after = service.save_unsaved()
message = store.get_message(turn.assistant_message_id)
rows = store.request_log(turn.request.idempotency_key)
totals = service.ledger.totals(start_of_day())
print(json.dumps({
    "raised": raised, "waiting": waiting, "cost_meanwhile": cost_meanwhile,
    "while_full": while_full, "after": after, "status": message.status.value,
    "content": message.content, "cost": message.cost_usd, "rows": len(rows),
    "row_time": rows[0]["created_at"] if rows else None, "turn_time": message.created_at,
    "saved_time": message.updated_at, "cloud_requests": totals.cloud_requests,
    "total_cost": totals.cost_usd}))
store.close()
"""


@pytest.mark.parametrize("engine", ["guarded", "unguarded"])
def test_a_reply_saved_late_brings_its_usage_record_with_it(tmp_path, engine):
    """``guarded``: an engine that drops a record it could not write (the local one did);
    ``unguarded``: one whose reply broke on it (the cloud engines')."""
    disk = tmp_path / "disk"
    disk.mkdir()
    done = in_mount_namespace(MOUNT_AND_RUN, "8m", str(disk), sys.executable, "-c", CHILD,
                              str(disk), engine, cwd=ROOT, timeout=120,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["raised"] is None  # the reply ended as it would have (not on the ledger)
    # 120k in at $0.15/M + 40k out at $0.60/M: known while the row waited, and after
    assert result["waiting"] and result["cost_meanwhile"] == 0.042
    assert result["while_full"] == 1 and result["after"] == 0
    assert (result["status"], result["content"]) == ("complete",
                                                     "Half an answer, then the rest.")
    assert result["cost"] == 0.042
    assert result["rows"] == 1 and result["cloud_requests"] == 1
    assert result["total_cost"] == 0.042
    # the row keeps the time of its attempt, not the time the disk took it
    assert result["turn_time"] <= result["row_time"] < result["saved_time"]
