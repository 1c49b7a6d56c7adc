"""The usage dialog's breakdown over a period the user picks, and its CSV export (the window's
side of ``outpost usage --since/--until/--csv``), on a real ledger."""
from __future__ import annotations

import csv
import datetime as dt

import pytest
from PySide6.QtCore import QDate
from PySide6.QtWidgets import QFileDialog

from app.storage.ledger import UsageLedger
from app.storage.quotas import QuotaBook
from app.storage.store import Store
from tests.storage.test_usage_series import row
from tests.support import grab_in_palette
from ui.usage_dialog import UsageDialog

pytestmark = pytest.mark.gui
TODAY = dt.date(2026, 12, 1)


@pytest.fixture
def dialog(qtbot, tmp_path):
    store = Store(tmp_path / "outpost.db")
    row(store, "2026-10-20", "openai", "gpt-4o-mini", cost=2.0)  # last month but one
    row(store, "2026-11-05", "openai", "gpt-4o-mini", cost=1.0, prompt=1000)
    row(store, "2026-11-28", "local", "smol", prompt=300)
    row(store, "2026-12-01", "anthropic", "claude", cost=None, prompt=40)  # no known price
    row(store, "2026-12-01", "openai", "gpt-4o-mini", cost=9.0, profile="bob")  # not hers
    window = UsageDialog(UsageLedger(store, "ana"), QuotaBook(tmp_path / "policy.toml",
                                                              tmp_path / "quotas.json"),
                         "ana", today=lambda: TODAY)
    qtbot.addWidget(window)
    yield window
    store.close()


def shown(dialog) -> list[tuple[str, str]]:
    table = dialog.table
    return [(table.item(r, 0).text(), table.item(r, 4).text()) for r in range(table.rowCount())]


def test_the_breakdown_follows_the_period(dialog):
    assert dialog.period_box.currentText() == "This month"
    assert shown(dialog) == [("anthropic", "unknown")]  # bob's $9 is not hers
    dialog.period_box.setCurrentText("Last 30 days")
    assert (dialog.period().first, dialog.period().last) == (dt.date(2026, 11, 2), TODAY)
    assert shown(dialog) == [("anthropic", "unknown"), ("local", "free"),
                             ("openai", "$1.00")]
    dialog.period_box.setCurrentText("Last month")
    assert (dialog.period().first, dialog.period().last) == (dt.date(2026, 11, 1),
                                                             dt.date(2026, 11, 30))
    assert [provider for provider, _ in shown(dialog)] == ["local", "openai"]
    dialog.first_day.setDate(QDate(2026, 10, 1))  # a date edited: a period of one's own
    assert dialog.period_box.currentText() == "Custom"
    assert ("openai", "$3.00") in shown(dialog)
    assert dialog.table.accessibleName() == \
        "Usage by provider and model, 2026-10-01 to 2026-11-30"
    assert dialog.last_day.maximumDate() == QDate(TODAY)  # no day to come
    dialog.first_day.setDate(QDate(2026, 12, 1))  # past the end: the end moves along
    assert (dialog.period().first, dialog.period().last) == (TODAY, TODAY)
    assert shown(dialog) == [("anthropic", "unknown")]
    dialog.period_box.setCurrentText("Last month")  # a preset sets both ends again
    assert (dialog.period().first, dialog.period().last) == (dt.date(2026, 11, 1),
                                                             dt.date(2026, 11, 30))


def test_export_writes_the_period_a_line_per_day_and_model(dialog, tmp_path, monkeypatch):
    dialog.period_box.setCurrentText("Last 30 days")
    target = tmp_path / "usage"  # the user typed no suffix
    monkeypatch.setattr(QFileDialog, "getSaveFileName",
                        lambda *a, **k: (str(target), "CSV (*.csv)"))
    dialog.export_button.click()
    lines = list(csv.DictReader((tmp_path / "usage.csv").open()))
    assert [(r["day"], r["provider"], r["prompt_tokens"], r["cost_usd"], r["cost_known"])
            for r in lines] == [("2026-11-05", "openai", "1000", "1.0", "true"),
                                ("2026-11-28", "local", "300", "0.0", "true"),
                                ("2026-12-01", "anthropic", "40", "", "false")]
    assert dialog.export_note.text() == \
        f"Exported 3 lines (2026-11-02 to 2026-12-01) to {tmp_path / 'usage.csv'}."


def test_an_export_that_cannot_be_written_says_why_and_keeps_nothing(dialog, tmp_path):
    missing = tmp_path / "no such folder" / "usage.csv"
    dialog.export(missing)
    assert dialog.export_note.text().startswith(f"Not exported: {missing} could not be written")
    assert not missing.parent.exists()


@pytest.mark.parametrize("theme_name", ["light", "dark"])
def test_the_period_row_in_both_palettes(qtbot, dialog, artifacts_dir, theme_name):
    dialog.resize(1000, 560)
    dialog.period_box.setCurrentText("Last 30 days")
    dialog.export(artifacts_dir / "usage-export.csv")
    dialog.show()
    qtbot.waitExposed(dialog)
    assert dialog.export_button.isVisible() and dialog.last_day.isVisible()
    grab_in_palette(qtbot, dialog, artifacts_dir / f"usage-dialog-period-{theme_name}.png",
                    theme_name)


def test_a_limit_of_0_shows_as_reached_not_as_no_limit(qtbot, tmp_path):
    """A day's cloud tokens of 0 (no cloud at all) showed an empty bar, as "no limit" does."""
    from tests.storage.test_quotas import ADMIN

    store = Store(tmp_path / "outpost.db")
    book = QuotaBook(tmp_path / "policy.toml", tmp_path / "quotas.json")
    book.set("ana", "cloud_tokens_per_day", 0, by=ADMIN)
    window = UsageDialog(UsageLedger(store, "ana"), book, "ana", today=lambda: TODAY)
    qtbot.addWidget(window)
    bar = window.bars["day_tokens"]
    assert bar.maximum() > 1 and bar.value() == bar.maximum()
    assert window.values["day_tokens"].text() == "0 of 0"
    store.close()


def test_rate_limits_are_said_in_words(qtbot, tmp_path):
    from tests.storage.test_quotas import ADMIN

    store = Store(tmp_path / "outpost.db")
    book = QuotaBook(tmp_path / "policy.toml", tmp_path / "quotas.json")
    book.set("ana", "requests_per_minute", 1, by=ADMIN)
    book.set("ana", "tokens_per_minute", 2000, by=ADMIN)
    window = UsageDialog(UsageLedger(store, "ana"), book, "ana", today=lambda: TODAY)
    qtbot.addWidget(window)
    assert "Rate limits: 1 request per minute, 2,000 tokens per minute." in \
        window.summary.text()
    store.close()


def test_a_model_with_no_known_price_shows_unknown_even_with_no_tokens(qtbot, tmp_path):
    """Its attempts never reached the provider (no tokens): `unknown`, as `outpost usage`
    writes it, never $0; a priced model's such attempts are a known $0."""
    from app.config.settings import Settings
    from app.storage.ledger import make_ledger
    from engines.http_policy import AttemptRecord

    store = Store(tmp_path / "outpost.db")
    ledger = make_ledger(store, Settings())
    ledger.profile = "ana"
    for key, model in (("t1", "gpt-4o-mini-slow"), ("t2", "gpt-4o-mini")):
        ledger.record(AttemptRecord(attempt=1, status=None, latency_ms=1.0,
                                    error_kind="connection_failed", idempotency_key=key,
                                    provider=model, model=model, kind="openai"))
    window = UsageDialog(ledger, QuotaBook(tmp_path / "policy.toml", tmp_path / "quotas.json"),
                         "ana", today=dt.date.today)
    qtbot.addWidget(window)
    assert shown(window) == [("gpt-4o-mini", "$0"), ("gpt-4o-mini-slow", "unknown")]
    assert window.values["month_cost"].text() == \
        "unknown (1 request with no known price) (no limit)"  # not "$0 + 1 unknown"
    store.close()


@pytest.mark.parametrize("priced_tokens, expected", [
    (0, "unknown (2 requests with no known price) of $5.00"),  # it read "$0 + 2 unknown of $5"
    (10_000_000, "$1.50 + 2 unknown of $5.00"),
])
def test_the_month_cost_says_what_is_unknown(qtbot, tmp_path, artifacts_dir, priced_tokens,
                                             expected):
    """As ``outpost usage`` says it: with nothing known paid the cost is unknown, not $0."""
    from app.config.settings import Settings
    from app.storage.ledger import make_ledger
    from engines.http_policy import AttemptRecord
    from tests.storage.test_quotas import ADMIN

    store = Store(tmp_path / "outpost.db")
    ledger = make_ledger(store, Settings())
    ledger.profile = "ana"
    records = [("gpt-4o-mini-slow", 100), ("gpt-4o-mini-slow", 100)]
    if priced_tokens:
        records.append(("gpt-4o-mini", priced_tokens))
    for n, (model, tokens) in enumerate(records):
        ledger.record(AttemptRecord(attempt=1, status=200, latency_ms=1.0, error_kind=None,
                                    idempotency_key=f"t{n}", provider=model, model=model,
                                    kind="openai", prompt_tokens=tokens, completion_tokens=0))
    book = QuotaBook(tmp_path / "policy.toml", tmp_path / "quotas.json")
    book.set("ana", "cloud_cost_per_month", 5, by=ADMIN)
    window = UsageDialog(ledger, book, "ana", today=dt.date.today)
    qtbot.addWidget(window)
    assert window.values["month_cost"].text() == expected
    window.show()
    qtbot.waitExposed(window)
    for theme_name in ("light", "dark"):
        grab_in_palette(qtbot, window, artifacts_dir / f"usage-dialog-month-cost-"
                        f"{'some-known' if priced_tokens else 'all-unknown'}-{theme_name}.png",
                        theme_name)
    store.close()
