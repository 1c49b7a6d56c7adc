"""Costs read the same everywhere in the window as in `outpost usage`: small amounts with two
significant digits ($0.00045, not $0.0004), and `~` before a cost reckoned from estimated
tokens: the reply's footer, its Details, the usage dialog (a real ledger)."""
from __future__ import annotations

import dataclasses

import pytest

from app.accounting.metering import price_table
from app.domain.messages import Message, MessageStatus, Role
from app.storage.ledger import UsageLedger
from app.storage.quotas import QuotaBook
from app.storage.store import Store
from engines.http_policy import AttemptRecord
from ui.message_bubble import MessageBubble
from ui.message_details import MessageDetails
from ui.usage_dialog import UsageDialog

pytestmark = pytest.mark.gui


def test_a_small_estimated_cost_under_the_reply_and_in_its_details(qtbot):
    reply = Message("m1", "c1", Role.ASSISTANT, "Blue.", MessageStatus.COMPLETE, "", "",
                    engine="acme", model="gpt-4o-mini", prompt_tokens=3000,
                    completion_tokens=0, tokens_estimated=True, cost_usd=0.00045,
                    cost_estimated=True)
    bubble = MessageBubble(Role.ASSISTANT)
    qtbot.addWidget(bubble)
    bubble.show_message_state(reply)
    assert bubble.footer.text().endswith("~$0.00045")
    details = MessageDetails(reply)
    qtbot.addWidget(details)
    assert details.values["Cost"] == "~$0.00045"


def test_the_usage_dialog_writes_costs_as_the_cli_does(qtbot, tmp_path):
    store = Store(tmp_path / "outpost.db")
    ledger = UsageLedger(store, "ana", price_for=lambda kind, provider, model:
                         price_table().price_for(kind, model))
    for key, model, prompt, estimated in (("t1", "gpt-4o-mini", 3000, True),
                                          ("t2", "gpt-4.1-nano", 4500, False)):
        ledger.record(AttemptRecord(attempt=1, status=200, latency_ms=1.0, error_kind=None,
                                    idempotency_key=key, provider="acme", model=model,
                                    kind="openai", prompt_tokens=prompt, completion_tokens=0,
                                    tokens_estimated=estimated))
    dialog = UsageDialog(ledger, QuotaBook(tmp_path / "policy.toml", tmp_path / "quotas.json"),
                         "ana")
    qtbot.addWidget(dialog)
    table = dialog.table
    assert {table.item(r, 1).text(): table.item(r, 4).text()
            for r in range(table.rowCount())} == {"gpt-4.1-nano": "$0.00045",
                                                  "gpt-4o-mini": "~$0.00045"}
    assert dialog.values["month_cost"].text().startswith("~$0.00090")
    store.close()


def test_a_local_reply_shows_what_its_lost_cloud_hedge_cost(qtbot):
    """The local model won the race; the cloud attempt it beat was billed its prompt (an
    estimate): the reply's cost is that, not "free". With nothing paid it is free."""
    def local_reply(cost):
        return Message("m1", "c1", Role.ASSISTANT, "Hi.", MessageStatus.COMPLETE, "", "",
                       engine="local", model="smol.gguf", prompt_tokens=22,
                       completion_tokens=3, cost_usd=cost, cost_estimated=bool(cost))

    bubble = MessageBubble(Role.ASSISTANT)
    qtbot.addWidget(bubble)
    bubble.show_message_state(local_reply(0.000028))
    assert bubble.footer.text().endswith("~$0.000028"), bubble.footer.text()
    bubble.show_message_state(local_reply(0.0))
    assert bubble.footer.text().endswith("free")
    # the hedge went to a model with no known price: the turn's cost is unknown, not "free"
    unknown = Message("m1", "c1", Role.ASSISTANT, "Hi.", MessageStatus.COMPLETE, "", "",
                      engine="local", model="smol.gguf", prompt_tokens=22, completion_tokens=3,
                      cost_usd=None, cost_estimated=True)
    bubble.show_message_state(unknown)
    assert bubble.footer.text().endswith("cost\xa0unknown"), bubble.footer.text()


def test_the_footer_writes_token_counts_and_ttft_as_details_does(qtbot):
    """The footer read "1048 in / 23 out (896 cached)" and Details "1,048 in / 23 out (896
    cached)": one way of writing a number in both."""
    reply = Message("m1", "c1", Role.ASSISTANT, "Blue.", MessageStatus.COMPLETE, "", "",
                    engine="local", model="gemma.gguf", prompt_tokens=1048,
                    completion_tokens=1200, cached_prompt_tokens=896, ttft_ms=2472.0,
                    cost_usd=0.0)
    bubble = MessageBubble(Role.ASSISTANT)
    qtbot.addWidget(bubble)
    bubble.show_message_state(reply)
    footer = bubble.footer.text().replace("\u00a0", " ")
    details = MessageDetails(reply)
    qtbot.addWidget(details)
    assert "1,048 in / 1,200 out (896 cached)" in footer
    assert details.values["Tokens"] == "1,048 in / 1,200 out (896 cached)"
    assert "TTFT 2.47 s" in footer and details.values["Time to first token"] == "2.47 s"
    best_of = dataclasses.replace(reply, params={"test_time": {"mode": "best_of", "n": 3}})
    said = MessageDetails(best_of)
    qtbot.addWidget(said)
    assert said.values["Time to first token"] == "2.47 s (until the chosen reply appeared)"
