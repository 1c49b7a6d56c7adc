"""Usage of the current profile, from the usage ledger: the Overview tab (today's and this
month's use against its quotas, the breakdown per provider and model) and the Charts tab
(ui/usage_charts.py: tokens per day, cost per month against the budget, speed per model,
failures and retries)."""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QGridLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.accounting.pricing import format_usd
from app.storage.ledger import start_of_day, start_of_month
from app.storage.quotas import QuotaBook
from ui import theme
from ui.usage_charts import UsageCharts


class UsageDialog(QDialog):
    def __init__(self, ledger, book: QuotaBook, profile: str, parent=None):
        super().__init__(parent)
        self.setWindowTitle(f"Usage — {profile}")
        self.resize(1100, 760)
        self.ledger, self.book, self.profile = ledger, book, profile
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
        self.table = QTableWidget(0, 5)
        self.table.setHorizontalHeaderLabels(["Provider", "Model", "Requests", "Tokens in / out",
                                              "Cost this month"])
        header = self.table.horizontalHeader()  # the model's name takes the room left
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.table.setAccessibleName("Usage by provider and model this month")
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
        unknown = f" + {month.unknown_cost_requests} unknown" if month.unknown_cost_requests \
            else ""
        self._bar("month_cost", month.cost_usd, limits.cloud_cost_per_month,
                  f"{format_usd(month.cost_usd)}{unknown}" + (
                      f" of {format_usd(limits.cloud_cost_per_month)}"
                      if limits.cloud_cost_per_month is not None else " (no limit)"))
        rate = ", ".join(f"{name.replace('_', ' ')} {value}" for name, value in (
            ("requests_per_minute", limits.requests_per_minute),
            ("tokens_per_minute", limits.tokens_per_minute)) if value)
        routes = ", ".join(limits.allowed_routes) if limits.allowed_routes else "all"
        counted = "cloud and local" if limits.count_local else "cloud only"
        self.summary.setText(
            f"Today: {_requests(day.requests)} ({day.cloud_requests} cloud), "
            f"{day.prompt_tokens + day.completion_tokens:,} tokens. This month: "
            f"{_requests(month.requests)}. Local model time this month: "
            f"{month.local_seconds:,.1f} s (free). Tokens counted toward the quota: {counted}. "
            f"Routes allowed: {routes}. "
            + (f"Rate limits: {rate}. " if rate else "")
            + ("Limits from: " + ", ".join(
                f"{name.replace('_', ' ')} ({where})"
                for name, where in sorted(limits.sources.items())) + "."
               if limits.sources else "No limits set."))
        self.table.setRowCount(len(month.by_model))
        for row, entry in enumerate(month.by_model):
            cost = "free" if entry["provider"] == "local" else (
                format_usd(entry["cost_usd"]))
            for col, text in enumerate((entry["provider"], entry["model"],
                                        str(entry["requests"]),
                                        f"{entry['prompt_tokens']:,} / "
                                        f"{entry['completion_tokens']:,}", cost)):
                item = QTableWidgetItem(text)
                if col >= 2:  # figures line up on the right
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight |
                                          Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(row, col, item)
        self.charts.refresh()

    def _bar(self, key: str, used: float, limit: float | None, text: str) -> None:
        bar = self.bars[key]
        if limit:
            bar.setMaximum(1000)
            bar.setValue(int(min(1.0, used / limit) * 1000))
            over = used >= limit
            theme.restyle(bar, lambda: theme.meter_style(over))
        else:
            bar.setMaximum(1)
            bar.setValue(0)
        self.values[key].setText(text)


def _requests(n: int) -> str:
    return f"{n} request" + ("" if n == 1 else "s")
