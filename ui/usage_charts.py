"""The usage dashboard's charts (pyqtgraph): tokens per day (the local model's and the cloud's,
stacked), cost per month per provider against the monthly budget, time to first token and
tokens/s per model over time, and failed attempts and retries per provider.

Why pyqtgraph: it is pure Python on numpy (a few MB), draws fast with Qt's own painter, and
works with the PySide6-Essentials wheels Outpost ships; QtCharts would need PySide6-Addons,
several times the download, for four charts. The series are summed by SQLite
(``app.storage.usage_series``); the charts only draw them. Colours come from the palette
(``ui.theme``), so the charts follow the light or dark theme.
"""
from __future__ import annotations

import base64
import datetime as dt
import functools
import html

import pyqtgraph as pg
from PySide6.QtCore import QBuffer, QIODevice, Qt
from PySide6.QtGui import QColor, QImage, QPalette
from PySide6.QtWidgets import QGridLayout, QLabel, QSizePolicy, QVBoxLayout, QWidget

from app.accounting.pricing import format_usd
from app.storage.store import Store
from app.storage.usage_series import (
    cost_per_month,
    problems_per_provider,
    speed_per_model,
    tokens_per_day,
)
from ui import theme

DAYS = 30
MONTHS = 12
# the tokens/s chart with replies to show on the TTFT chart but none it can time (their
# tokens/s is NULL in the ledger: one token, or all arriving at once)
UNTIMED = ("No reply could be timed yet: tokens per second is measured between a reply's "
           "first and last token, so it needs two tokens or more, not all arriving at once.")


@functools.lru_cache(maxsize=32)
def _swatch(colour: str) -> str:
    """A square of ``colour`` for the key, as an image: a coloured glyph would be text in a
    series colour (too faint to read as text on either palette); the names stay in the
    palette's text colour."""
    image = QImage(10, 10, QImage.Format.Format_ARGB32)
    image.fill(QColor(colour))
    buffer = QBuffer()
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    image.save(buffer, "PNG")
    data = base64.b64encode(bytes(buffer.data().data())).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" width="10" height="10">'


def _axis_ticks(labels: list[str], every: int = 1) -> list[list[tuple[int, str]]]:
    return [[(i, label) for i, label in enumerate(labels) if i % every == 0]]


class Chart(QWidget):
    """A titled plot that follows the palette."""

    def __init__(self, title: str, unit: str, parent=None):
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        self.title = QLabel(f"<b>{title}</b>")
        self.title.setAccessibleName(title)
        self.plot = pg.PlotWidget()
        self.plot.setAccessibleName(title)
        self.plot.setMenuEnabled(False)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.getPlotItem().hideButtons()
        # room above the plot for half of the top tick's number (it was cut in two)
        self.top_margin = self.plot.fontMetrics().height() // 2 + 1
        self.plot.getPlotItem().layout.setContentsMargins(1, self.top_margin, 1, 1)
        self.plot.setLabel("left", unit)
        # "USD", never "USD (x1e-09)": ticks say the amounts as they are
        self.plot.getAxis("left").enableAutoSIPrefix(False)
        # the key: a line of coloured squares and names above the plot, wrapped when long
        # (pyqtgraph's legend sits inside the plot: it hid data and cut long model names)
        self.key = QLabel()
        self.key.setObjectName("chartKey")
        self.key.setWordWrap(True)
        self.keys: list[tuple[str, str]] = []  # (colour, name), in order
        self.empty = QLabel("No data yet.")
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty.setWordWrap(True)
        self.empty.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        layout.addWidget(self.title)
        layout.addWidget(self.key)
        layout.addWidget(self.plot, 1)
        layout.addWidget(self.empty, 1)
        self.restyle()
        theme.on_palette_change(self, self.restyle)

    def restyle(self) -> None:
        pal = theme.palette()
        self.plot.setBackground(pal.color(QPalette.ColorRole.Base))
        text = pal.color(QPalette.ColorRole.Text)
        for side in ("left", "bottom"):
            axis = self.plot.getAxis(side)
            axis.setPen(pg.mkPen(text))
            axis.setTextPen(pg.mkPen(text))

    def clear(self) -> None:
        self.plot.clear()
        self.keys = []

    def add_key(self, colour: str, name: str) -> None:
        """One more entry of the key: ``name`` after a square of ``colour``."""
        self.keys.append((colour, name))

    def show_days(self, days: list[str], every: int = 7) -> None:
        """An x axis of one unit per day, labelled every ``every`` days from the first: the
        same half a day on either side at any size. pyqtgraph's own padding depends on the
        plot's size when the range is set, and a label reaching past the axis is hidden: the
        first date went missing on a chart whose numbers on the left were wide ("1500")."""
        axis = self.plot.getAxis("bottom")
        axis.setTicks(_axis_ticks(days, every))
        # a label may reach past the axis by half its width: on the left into the corner by
        # the y axis, on the right into a margin kept for it (the last date was cut)
        half = self.plot.fontMetrics().horizontalAdvance(max(days, key=len, default="")) // 2
        axis.setStyle(hideOverlappingLabels=half + 4)
        self.plot.getPlotItem().layout.setContentsMargins(1, self.top_margin, half + 4, 1)
        self.plot.setXRange(-0.5, len(days) - 0.5, padding=0)

    def show_empty(self, empty: bool, top: float = 0.0, why: str = "") -> None:
        """Show the plot from 0 to ``top`` (a little above) with its key, or only "No data
        yet." (or ``why`` there is none)."""
        self.empty.setText(why or "No data yet.")
        self.empty.setVisible(empty)
        self.plot.setVisible(not empty)
        self.key.setVisible(not empty and bool(self.keys))
        self.key.setText("&nbsp;&nbsp;&nbsp; ".join(
            f"{_swatch(colour)}&nbsp;{html.escape(name)}" for colour, name in self.keys))
        if not empty:  # (all zero, as a month of free local replies: an axis up to 1)
            self.plot.setYRange(0, (top if top > 0 else 1.0) * 1.1, padding=0)


class UsageCharts(QWidget):
    """The dashboard: ``refresh()`` reads the ledger (for ``profile``) and draws; the owner
    calls it when the charts are to be shown (built empty, so nothing is read twice)."""

    def __init__(self, store: Store, profile: str | None, monthly_budget: float | None = None,
                 today=None, parent=None):
        """``monthly_budget``: the profile's cloud cost quota per month (a line on the cost
        chart); ``today()``: the date the charts end on (tests pass a fixed one)."""
        super().__init__(parent)
        self.store, self.profile, self.monthly_budget = store, profile, monthly_budget
        self.today = today or (lambda: dt.datetime.now(dt.timezone.utc).date())
        grid = QGridLayout(self)
        self.tokens = Chart(f"Tokens per day, last {DAYS} days", "tokens")
        self.cost = Chart("Cloud cost per month", "USD")
        self.ttft = Chart("Time to first token per model", "ms")
        self.speed = Chart("Tokens per second per model", "tokens/s")
        self.problems = Chart(f"Failed attempts and retries, last {DAYS} days", "attempts")
        for index, chart in enumerate((self.tokens, self.cost, self.ttft, self.speed,
                                       self.problems)):
            grid.addWidget(chart, index // 2, index % 2)
        for column in (0, 1):
            grid.setColumnStretch(column, 1)
        for row in (0, 1, 2):
            grid.setRowStretch(row, 1)
        self.series: dict[str, object] = {}  # what each chart shows (tests read it)
        # the series' colours are the palette's: drawn again in a new one (once drawn at all)
        theme.on_palette_change(self, lambda: self.series and self.refresh())

    def refresh(self) -> None:
        today = self.today()
        since = today - dt.timedelta(days=DAYS - 1)
        self._tokens(since, today)
        self._cost(today)
        self._speed(since)
        self._problems(since)

    def _tokens(self, since: dt.date, today: dt.date) -> None:
        days = tokens_per_day(self.store, self.profile, since, today)
        self.series["tokens"] = days
        chart = self.tokens
        chart.clear()
        local_colour, cloud_colour = theme.series_colour(0), theme.series_colour(1)
        xs = list(range(len(days)))
        local = [d.local for d in days]
        cloud = [d.cloud for d in days]
        chart.plot.addItem(pg.BarGraphItem(x=xs, height=local, width=0.7,
                                           brush=local_colour))
        chart.plot.addItem(pg.BarGraphItem(x=xs, y0=local, height=cloud, width=0.7,
                                           brush=cloud_colour))
        chart.add_key(local_colour, "local model")
        chart.add_key(cloud_colour, "cloud")
        chart.show_days([d.day[5:] for d in days])
        chart.show_empty(not any(local) and not any(cloud),
                         max((a + b for a, b in zip(local, cloud)), default=0))

    def _cost(self, today: dt.date) -> None:
        since = (today.replace(day=1) - dt.timedelta(days=31 * (MONTHS - 1))).replace(day=1)
        by_provider = cost_per_month(self.store, self.profile, since)
        self.series["cost"] = by_provider
        chart = self.cost
        chart.clear()
        months = sorted({m for points in by_provider.values() for m, _ in points})
        index = {m: i for i, m in enumerate(months)}
        width = 0.8 / max(1, len(by_provider))
        for n, (provider, points) in enumerate(sorted(by_provider.items())):
            colour = theme.series_colour(n)
            xs = [index[m] - 0.4 + width * (n + 0.5) for m, _ in points]
            bars = pg.BarGraphItem(x=xs, height=[c for _, c in points], width=width * 0.9,
                                   brush=colour)
            chart.plot.addItem(bars)
            chart.add_key(colour, provider)
        if self.monthly_budget:
            line = pg.InfiniteLine(pos=self.monthly_budget, angle=0,
                                   pen=pg.mkPen(theme.series_colour(3), width=2,
                                                style=Qt.PenStyle.DashLine),
                                   label=f"budget {format_usd(self.monthly_budget)}",
                                   labelOpts={"color": theme.palette().color(
                                       QPalette.ColorRole.Text).name(), "position": 0.9})
            chart.plot.addItem(line)
        chart.plot.getAxis("bottom").setTicks(_axis_ticks(months))
        top = max([c for points in by_provider.values() for _, c in points] +
                  [self.monthly_budget or 0])
        chart.show_empty(not by_provider, top)

    def _speed(self, since: dt.date) -> None:
        by_model = speed_per_model(self.store, self.profile, since)
        self.series["speed"] = by_model
        for chart, field in ((self.ttft, "ttft_ms"), (self.speed, "tokens_per_s")):
            chart.clear()
            shown = False
            top = 0.0
            for n, (label, points) in enumerate(sorted(by_model.items())):
                xs, ys = [], []
                for point in points:
                    value = getattr(point, field)
                    if value is not None:
                        xs.append((dt.date.fromisoformat(point.day) - since).days)
                        ys.append(value)
                if xs:
                    shown = True
                    top = max([top] + ys)
                    chart.plot.plot(xs, ys, pen=pg.mkPen(theme.series_colour(n), width=2),
                                    symbol="o", symbolSize=5,
                                    symbolBrush=theme.series_colour(n))
                    chart.add_key(theme.series_colour(n), label)
            chart.show_days([(since + dt.timedelta(days=i)).isoformat()[5:]
                             for i in range(DAYS)])
            # (every model here has a reply with a first token: the TTFT chart shows them)
            chart.show_empty(not shown, top, UNTIMED if by_model else "")

    def _problems(self, since: dt.date) -> None:
        rows = problems_per_provider(self.store, self.profile, since)
        self.series["problems"] = rows
        chart = self.problems
        chart.clear()
        xs = list(range(len(rows)))
        errors = pg.BarGraphItem(x=[x - 0.2 for x in xs], height=[r.errors for r in rows],
                                 width=0.38, brush=theme.series_colour(3))
        retries = pg.BarGraphItem(x=[x + 0.2 for x in xs], height=[r.retries for r in rows],
                                  width=0.38, brush=theme.series_colour(2))
        chart.plot.addItem(errors)
        chart.plot.addItem(retries)
        chart.add_key(theme.series_colour(3), "failed attempts")
        chart.add_key(theme.series_colour(2), "retries")
        chart.plot.getAxis("bottom").setTicks(_axis_ticks([r.provider for r in rows]))
        chart.show_empty(not any(r.errors or r.retries for r in rows),
                         max([r.errors for r in rows] + [r.retries for r in rows] + [0]))
