"""`outpost usage` writes costs as the reply's footer does: small amounts with two significant
digits (so the rows add up to the total), and `~` before a cost reckoned from estimated tokens,
on its row and on the total. A real ledger in the test's home."""
from __future__ import annotations

import csv
import io
import json

from app import cli
from app.config.settings import Settings
from app.storage.ledger import make_ledger
from app.storage.store import Store
from engines.http_policy import AttemptRecord


def attempt(key: str, model: str, prompt: int, estimated: bool) -> AttemptRecord:
    return AttemptRecord(attempt=1, status=200, latency_ms=1.0, error_kind=None,
                         idempotency_key=key, provider="acme", model=model, kind="openai",
                         prompt_tokens=prompt, completion_tokens=0, tokens_estimated=estimated)


def test_usage_marks_estimated_costs_and_shows_small_ones_whole(outpost_home, capsys):
    store = Store()
    ledger = make_ledger(store, Settings())
    ledger.record(attempt("t1", "gpt-4o-mini", 3000, True))  # $0.15 per 1M: $0.00045, counted
    ledger.record(attempt("t2", "gpt-4.1-nano", 4500, False))  # $0.10 per 1M: $0.00045
    store.close()
    assert cli.main(["usage"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[1]: line for line in out.splitlines()[1:]}
    assert lines["gpt-4o-mini"].endswith("~$0.00045")
    assert lines["gpt-4.1-nano"].endswith(" $0.00045")
    assert "cloud cost ~$0.00090;" in out.splitlines()[0]
    for since in (["--since", "today"], ["--month"]):
        assert cli.main(["usage", *since]) == 0
        assert "cloud cost ~$0.00090;" in capsys.readouterr().out
    assert cli.main(["usage", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["cost_estimated"] is True
    assert {r["model"]: r["cost_estimated"] for r in data["by_model"]} == {
        "gpt-4o-mini": True, "gpt-4.1-nano": False}
    assert cli.main(["usage", "--since", "today", "--csv"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3  # a header and a line per model


def test_a_model_with_no_known_price_is_unknown_even_with_no_tokens(outpost_home, capsys):
    """Attempts that never reached the provider (no tokens) of a model with no known price:
    `unknown` on its row, null in --json, an empty cost and cost_known false in --csv; never
    the $0 they used to show. A priced model's such attempts are a known $0."""
    store = Store()
    ledger = make_ledger(store, Settings())
    for key, model in (("t1", "gpt-4o-mini-slow"), ("t2", "gpt-4o-mini-slow"),
                       ("t3", "gpt-4o-mini")):
        ledger.record(AttemptRecord(attempt=1, status=None, latency_ms=1.0,
                                    error_kind="connection_failed", idempotency_key=key,
                                    provider="acme", model=model, kind="openai"))
    store.close()
    assert cli.main(["usage"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[1]: line for line in out.splitlines()[1:]}
    assert lines["gpt-4o-mini-slow"].endswith(" unknown"), lines
    assert lines["gpt-4o-mini"].endswith(" $0")
    # nothing known was paid: the headline's cost is unknown, not "$0 + unknown"
    assert "; cloud cost unknown (2 requests with no known price);" in out.splitlines()[0]
    assert cli.main(["usage", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {r["model"]: (r["cost_usd"], r["unknown_cost_requests"]) for r in data["by_model"]} \
        == {"gpt-4o-mini-slow": (None, 2), "gpt-4o-mini": (0.0, 0)}
    assert data["unknown_cost_requests"] == 2
    assert cli.main(["usage", "--since", "today", "--csv"]) == 0
    rows = {r["model"]: r for r in csv.DictReader(io.StringIO(capsys.readouterr().out))}
    assert (rows["gpt-4o-mini-slow"]["cost_usd"], rows["gpt-4o-mini-slow"]["cost_known"]) == (
        "", "false")
    assert (rows["gpt-4o-mini"]["cost_usd"], rows["gpt-4o-mini"]["cost_known"]) == (
        "0.0", "true")
