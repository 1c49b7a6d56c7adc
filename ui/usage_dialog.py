"""Usage of the current profile, from the usage ledger: the Overview tab (today's and this
month's use against its quotas, the breakdown per provider and model over a period the user
picks, exported as CSV) and the Charts tab (ui/usage_charts.py: tokens per day, cost per month
against the budget, speed per model, failures and retries)."""
from __future__ import annotations

import datetime as dt
import io
from pathlib import Path
from typing import Callable

from PySide6.QtCore import QDate, Qt
from PySide6.QtWidgets import (
    QComboBox,
    QDateEdit,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.accounting.pricing import Cost, format_usd
from app.domain.errors import OutpostError
from app.domain.wording import counted
from app.storage.ledger import start_of_day, start_of_month
from app.storage.quotas import QuotaBook
from app.storage.transfer.files import write_whole
from app.storage.usage_report import Period, daily_rows, write_csv
from ui import theme
from ui.usage_charts import UsageCharts
from ui.window_state import documents_folder, remember_folder, start_folder

# the breakdown's periods: (name, today -> (first day, last day)); "Custom": the dates as edited
PERIODS: tuple[tuple[str, Callable[[dt.date], tuple[dt.date, dt.date]]], ...] = (
    ("This month", lambda today: (today.replace(day=1), today)),
    ("Today", lambda today: (today, today)),
    ("Last 7 days", lambda today: (today - dt.timedelta(days=6), today)),
    ("Last 30 days", lambda today: (today - dt.timedelta(days=29), today)),
    ("Last month", lambda today: (
        (today.replace(day=1) - dt.timedelta(days=1)).replace(day=1),
        today.replace(day=1) - dt.timedelta(days=1))),
    ("This year", lambda today: (today.replace(month=1, day=1), today)),
)
CUSTOM = "Custom"


class UsageDialog(QDialog):
    def __init__(self, ledger, book: QuotaBook, profile: str, parent=None,
                 today: Callable[[], dt.date] = dt.date.today):
        super().__init__(parent)
        self.setWindowTitle(f"Usage — {profile}")
        self.resize(1100, 760)
        self.ledger, self.book, self.profile = ledger, book, profile
        self.today = today
        self.bars: dict[str, QProgressBar] = {}
        self.values: dict[str, QLabel] = {}
        outer = QVBoxLayout(self)
        self.tabs = QTabWidget()
        self.tabs.setAccessibleName("Usage")
        overview = QWidget()
        layout = QVBoxLayout(overview)
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        layout.addWidget(self.summary)
        grid = QGridLayout()
        for row, (key, title) in enumerate((("day_tokens", "Tokens today (toward the quota)"),
                                            ("month_cost", "Cloud cost this month"))):
            grid.addWidget(QLabel(title), row, 0)
            bar = QProgressBar()
            bar.setTextVisible(False)
            bar.setFixedHeight(10)
            self.bars[key] = bar
            grid.addWidget(bar, row, 1)
            self.values[key] = QLabel()
            grid.addWidget(self.values[key], row, 2)
        grid.setColumnStretch(1, 1)
        layout.addLayout(grid)
        layout.addLayout(self._period_row())
        self.export_note = QLabel()  # what the last export did
        self.export_note.setWordWrap(True)
        self.export_note.hide()
        layout.addWidget(self.export_note)
        self.table = QTableWidget(0, 5)
        self.table.setHorizontalHeaderLabels(["Provider", "Model", "Requests", "Tokens in / out",
                                              "Cost"])
        header = self.table.horizontalHeader()  # the model's name takes the room left
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        layout.addWidget(self.table, 1)
        self.tabs.addTab(overview, "Overview")
        self.charts = UsageCharts(ledger.store, profile,
                                  monthly_budget=book.limits(profile).cloud_cost_per_month)
        self.tabs.addTab(self.charts, "Charts")
        outer.addWidget(self.tabs, 1)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        outer.addWidget(buttons)
        self.refresh()

    def refresh(self) -> None:
        limits = self.book.limits(self.profile)
        day = self.ledger.totals(start_of_day(), self.profile)
        month = self.ledger.totals(start_of_month(), self.profile)
        day_tokens = day.cloud_tokens + (day.local_tokens if limits.count_local else 0)
        self._bar("day_tokens", day_tokens, limits.cloud_tokens_per_day,
                  f"{day_tokens:,}" + (f" of {limits.cloud_tokens_per_day:,}"
                                       if limits.cloud_tokens_per_day is not None
                                       else " (no limit)"))
        self._bar("month_cost", month.cost_usd, limits.cloud_cost_per_month,
                  month.cost_words(brief=True) + (
                      f" of {format_usd(limits.cloud_cost_per_month)}"
                      if limits.cloud_cost_per_month is not None else " (no limit)"))
        rate = ", ".join(f"{counted(value, noun)} per minute" for noun, value in (
            ("request", limits.requests_per_minute),
            ("token", limits.tokens_per_minute)) if value is not None)
        routes = ", ".join(limits.allowed_routes) if limits.allowed_routes else "all"
        counting = "cloud and local" if limits.count_local else "cloud only"
        self.summary.setText(
            f"Today: {_requests(day.requests)} ({day.cloud_requests} cloud), "
            f"{day.prompt_tokens + day.completion_tokens:,} tokens. This month: "
            f"{_requests(month.requests)}. Local model time this month: "
            f"{month.local_seconds:,.1f} s (free). Tokens counted toward the quota: {counting}. "
            f"Routes allowed: {routes}. "
            + (f"Rate limits: {rate}. " if rate else "")
            + ("Limits from: " + ", ".join(
                f"{name.replace('_', ' ')} ({where})"
                for name, where in sorted(limits.sources.items())) + "."
               if limits.sources else "No limits set."))
        self._show_breakdown()
        self.charts.refresh()

    # -- the breakdown over a period ---------------------------------------------------------
    def _period_row(self) -> QHBoxLayout:
        row = QHBoxLayout()
        row.addWidget(QLabel("By provider and model:"))
        self.period_box = QComboBox()
        self.period_box.setAccessibleName("Period")
        self.period_box.addItems([name for name, _ in PERIODS] + [CUSTOM])
        row.addWidget(self.period_box)
        self.first_day, self.last_day = QDateEdit(), QDateEdit()
        for edit, label, name in ((self.first_day, "from", "From"),
                                  (self.last_day, "to", "To, included")):
            edit.setCalendarPopup(True)
            edit.setDisplayFormat("yyyy-MM-dd")
            edit.setAccessibleName(name)
            words = QLabel(label)
            words.setBuddy(edit)
            row.addWidget(words)
            row.addWidget(edit)
        row.addStretch(1)
        self.export_button = QPushButton("Export CSV…")
        self.export_button.setToolTip("One line per day, provider and model of this period, "
                                      "for a spreadsheet or an expense report")
        self.export_button.clicked.connect(self._ask_export)
        row.addWidget(self.export_button)
        self._set_dates(PERIODS[0][1])
        self.period_box.currentIndexChanged.connect(self._on_period_chosen)
        for edit in (self.first_day, self.last_day):
            edit.dateChanged.connect(self._on_date_edited)
        return row

    def period(self) -> Period:
        """The days the breakdown and the export cover."""
        return Period(self.first_day.date().toPython(), self.last_day.date().toPython())

    def _set_dates(self, days: Callable[[dt.date], tuple[dt.date, dt.date]]) -> None:
        today = self.today()
        for edit, day in zip((self.first_day, self.last_day), days(today)):
            edit.blockSignals(True)
            edit.setMaximumDate(QDate(today))
            edit.setMinimumDate(QDate(1970, 1, 1))  # the start, next
            edit.setDate(QDate(day))
            edit.blockSignals(False)
        self._end_after_start()

    def _end_after_start(self) -> None:
        """The end can be no earlier than the start: a start moved past it moves it along."""
        self.last_day.blockSignals(True)
        self.last_day.setMinimumDate(self.first_day.date())
        self.last_day.blockSignals(False)

    def _on_period_chosen(self, index: int) -> None:
        if index < len(PERIODS):
            self._set_dates(PERIODS[index][1])
            self._show_breakdown()

    def _on_date_edited(self) -> None:
        self._end_after_start()
        self.period_box.blockSignals(True)
        self.period_box.setCurrentText(CUSTOM)
        self.period_box.blockSignals(False)
        self._show_breakdown()

    def _show_breakdown(self) -> None:
        period = self.period()
        try:
            totals = self.ledger.totals(period.start(), self.profile, period.end())
        except OutpostError as exc:
            self._note(str(exc), warning=True)
            return
        self.table.setAccessibleName(f"Usage by provider and model, {period.words()}")
        self.table.setRowCount(len(totals.by_model))
        for row, entry in enumerate(totals.by_model):
            cost = "free" if entry["provider"] == "local" else (
                format_usd(Cost(entry["cost_usd"], entry["cost_estimated"])))
            for col, text in enumerate((entry["provider"], entry["model"],
                                        str(entry["requests"]),
                                        f"{entry['prompt_tokens']:,} / "
                                        f"{entry['completion_tokens']:,}", cost)):
                item = QTableWidgetItem(text)
                if col >= 2:  # figures line up on the right
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight |
                                          Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(row, col, item)

    def _ask_export(self) -> None:
        period = self.period()
        name = f"outpost-usage-{period.first.isoformat()}-to-{period.last.isoformat()}.csv"
        folder = start_folder("usage", documents_folder)
        path, _ = QFileDialog.getSaveFileName(self, "Export usage", str(folder / name),
                                              "CSV (*.csv)")
        if path:
            remember_folder("usage", path)
            self.export(Path(path) if Path(path).suffix else Path(path + ".csv"))

    def export(self, path: Path) -> None:
        """Write this period's usage, a line per day, provider and model, to ``path``."""
        period = self.period()
        try:
            rows = daily_rows(self.ledger.store, self.profile, period)
            out = io.StringIO()
            write_csv(rows, out)
            write_whole(path, out.getvalue().encode("utf-8"))
        except OutpostError as exc:
            self._note(f"Not exported: {exc}", warning=True)
            return
        lines = f"{len(rows)} line" + ("" if len(rows) == 1 else "s")
        self._note(f"Exported {lines} ({period.words()}) to {path}.")

    def _note(self, text: str, warning: bool = False) -> None:
        self.export_note.setText(text)
        theme.set_colour(self.export_note, "error" if warning else None)
        self.export_note.show()

    def _bar(self, key: str, used: float, limit: float | None, text: str) -> None:
        bar = self.bars[key]
        if limit is not None:  # a limit of 0 (no cloud at all) is reached, not absent
            bar.setMaximum(1000)
            bar.setValue(int((min(1.0, used / limit) if limit else 1.0) * 1000))
            over = used >= limit
            theme.restyle(bar, lambda: theme.meter_style(over))
        else:
            bar.setMaximum(1)
            bar.setValue(0)
        self.values[key].setText(text)


def _requests(n: int) -> str:
    return f"{n} request" + ("" if n == 1 else "s")
