"""The usage dashboard's charts on a real ledger: what each chart draws is what the ledger
holds, empty charts say so, and both palettes render (screenshots)."""
from __future__ import annotations

import datetime as dt

import pyqtgraph as pg
import pytest

from app.storage.store import Store
from tests.storage.test_usage_series import row
from tests.support import grab_in_palette
from ui.usage_charts import UsageCharts

pytestmark = pytest.mark.gui
TODAY = dt.date(2026, 11, 30)


@pytest.fixture
def ledger(tmp_path):
    store = Store(tmp_path / "outpost.db")
    for day in range(1, 30):
        when = (TODAY - dt.timedelta(days=day)).isoformat()
        row(store, when, "local", "smol", prompt=100 * day, completion=50, ttft=80.0 + day,
            latency=1080.0 + day)
        if day % 3 == 0:
            row(store, when, "openai", "gpt-4o-mini", cost=0.02 * day, ttft=400.0,
                latency=2400.0, completion=81)
        if day % 7 == 0:
            row(store, when, "openai", "gpt-4o-mini", attempt=2, error="unavailable",
                prompt=0, completion=0)
    row(store, "2026-10-05", "anthropic", "claude", cost=3.5)
    yield store
    store.close()


def test_the_charts_draw_what_the_ledger_holds(qtbot, ledger, artifacts_dir):
    charts = UsageCharts(ledger, "ana", monthly_budget=5.0, today=lambda: TODAY)
    qtbot.addWidget(charts)
    charts.resize(1200, 800)
    charts.show()
    charts.refresh()
    days = charts.series["tokens"]
    assert len(days) == 30 and days[-1].day == "2026-11-30"
    assert days[-2].local == 150  # yesterday: 100 + 50 tokens of the local model
    assert days[-4].cloud == 10 + 81  # three days ago: one cloud reply
    assert charts.series["cost"]["anthropic"] == [("2026-10", 3.5)]
    assert set(charts.series["speed"]) == {"local · smol", "openai · gpt-4o-mini"}
    problems = {p.provider: p for p in charts.series["problems"]}
    assert (problems["openai"].errors, problems["openai"].retries) == (4, 4)
    assert not charts.tokens.empty.isVisible() and not charts.cost.empty.isVisible()
    [budget] = [item for item in charts.cost.plot.getPlotItem().items
                if isinstance(item, pg.InfiniteLine)]
    assert budget.label.format == "budget $5.00"  # money as money (it said "$5")
    def redraw() -> None:
        charts.refresh()
        for chart in (charts.tokens, charts.cost, charts.ttft, charts.speed, charts.problems):
            chart.restyle()

    for theme_name in ("light", "dark"):
        grab_in_palette(qtbot, charts, artifacts_dir / f"usage-charts-{theme_name}.png",
                        theme_name, redraw)


def test_an_empty_ledger_says_so(qtbot, tmp_path):
    store = Store(tmp_path / "outpost.db")
    charts = UsageCharts(store, "ana", today=lambda: TODAY)
    qtbot.addWidget(charts)
    charts.show()
    charts.refresh()
    assert charts.tokens.empty.isVisible() and charts.cost.empty.isVisible()
    store.close()


def test_the_usage_dialog_has_the_charts_of_the_real_ledger(qtbot, scripted, scripted_engine,
                                                            artifacts_dir):
    from tests.support import reply, send

    scripted_engine.script(reply("Counted."))
    send(qtbot, scripted, "Count me")
    window = scripted.window
    window.usage_action.trigger()
    dialog = window.usage_dialog
    qtbot.addWidget(dialog)
    assert [dialog.tabs.tabText(i) for i in range(dialog.tabs.count())] == ["Overview",
                                                                          "Charts"]
    today = dialog.charts.series["tokens"][-1]
    assert today.local > 0 and today.cloud == 0  # the scripted local reply, from the ledger
    dialog.resize(900, 600)
    dialog.show()
    qtbot.waitExposed(dialog)
    table = dialog.table  # the model's column takes the room; the figures fit theirs
    widths = [table.columnWidth(i) for i in range(table.columnCount())]
    assert widths[1] == max(widths), widths
    assert table.item(0, 4).text() == "free"
    dialog.grab().save(str(artifacts_dir / "usage-dialog-overview.png"))
    dialog.tabs.setCurrentIndex(1)
    qtbot.wait(50)
    dialog.grab().save(str(artifacts_dir / "usage-dialog-charts.png"))


def test_a_month_of_free_cloud_replies_reads_as_zero_dollars(qtbot, tmp_path):
    """A provider whose replies cost nothing (a server on the LAN, a free model): the cost
    chart's axis says USD from 0, not "USD (x1e-09)"."""
    store = Store(tmp_path / "outpost.db")
    row(store, "2026-11-20", "lan", "qwen3", cost=0.0)
    charts = UsageCharts(store, "ana", today=lambda: TODAY)
    qtbot.addWidget(charts)
    charts.show()
    charts.refresh()
    assert not charts.cost.empty.isVisible()
    axis = charts.cost.plot.getAxis("left")
    assert "USD" in axis.labelString() and "e-" not in axis.labelString()
    low, high = charts.cost.plot.getViewBox().viewRange()[1]
    assert low == 0 and high >= 1
    store.close()


def test_long_model_names_fit_the_key_above_the_plot(qtbot, tmp_path, artifacts_dir):
    """The key sits above each chart and wraps: inside the plot it covered the points and cut
    long names ("fake · my-unprice…", found by a trial)."""
    store = Store(tmp_path / "outpost.db")
    names = [f"provider-{n} · a-rather-long-fine-tuned-model-name-{n}" for n in range(3)]
    for n, name in enumerate(names):
        provider, model = name.split(" · ")
        row(store, "2026-11-29", provider, model, ttft=100.0 + n, latency=1100.0)
    charts = UsageCharts(store, "ana", today=lambda: TODAY)
    qtbot.addWidget(charts)
    charts.resize(900, 700)
    charts.show()
    charts.refresh()
    key = charts.ttft.key
    assert key.isVisible() and key.wordWrap()
    assert [name for _, name in charts.ttft.keys] == names
    assert all(name in key.text() for name in names)
    assert key.geometry().bottom() < charts.ttft.plot.geometry().top()  # above, not over
    assert key.width() <= charts.ttft.width()
    assert charts.ttft.plot.getPlotItem().legend is None
    grab_in_palette(qtbot, charts, artifacts_dir / "usage-charts-long-names.png", "light")
    store.close()


def bottom_labels(chart) -> list[str]:
    """The dates the chart's x axis draws (pyqtgraph leaves out a label that would reach
    past the axis)."""
    from PySide6.QtGui import QImage, QPainter

    image = QImage(10, 10, QImage.Format.Format_ARGB32)
    painter = QPainter(image)
    try:
        _axis, _ticks, texts = chart.plot.getAxis("bottom").generateDrawSpecs(painter)
    finally:
        painter.end()
    return [text for _rect, _flags, text in texts]


def test_every_day_chart_labels_its_first_day(qtbot, tmp_path):
    """The TTFT chart lacked the first date the others had (a trial: numbers up to "1500"
    on its left made the plot narrower, and pyqtgraph's padding, worked out while the tab
    was hidden, left the label too little room)."""
    store = Store(tmp_path / "outpost.db")
    row(store, "2026-11-29", "local", "SmolLM2-135M-Instruct.Q4_1.gguf", ttft=1634.0,
        latency=2134.0, completion=45)
    charts = UsageCharts(store, "ana", today=lambda: TODAY)
    qtbot.addWidget(charts)
    charts.refresh()  # drawn before it is shown, as the dialog does
    charts.resize(800, 600)
    charts.show()
    qtbot.waitExposed(charts)
    first, last = "11-01", "11-29"  # the 30 days end on the 30th: labels every 7 days
    for chart in (charts.tokens, charts.ttft, charts.speed):
        qtbot.waitUntil(lambda chart=chart: chart.plot.getAxis("bottom").width() > 200)
        labels = bottom_labels(chart)
        assert labels[0] == first and labels[-1] == last, (chart.title.text(), labels)
    store.close()


def test_a_reply_the_speed_chart_cannot_time_is_said_not_left_as_no_data(qtbot, tmp_path):
    """A scripted reply of 3 tokens, all at once: the TTFT chart showed it, "Tokens per
    second" said "No data yet." under a reply whose footer said 12.3 tok/s. It says why."""
    from ui.usage_charts import UNTIMED

    store = Store(tmp_path / "outpost.db")
    row(store, "2026-11-29", "local", "scripted-model.gguf", ttft=2345.0, latency=2345.0,
        completion=3)
    charts = UsageCharts(store, "ana", today=lambda: TODAY)
    qtbot.addWidget(charts)
    charts.show()
    charts.refresh()
    assert not charts.ttft.empty.isVisible()
    assert charts.speed.empty.isVisible() and charts.speed.empty.text() == UNTIMED
    assert "two tokens or more" in UNTIMED
    nothing = Store(tmp_path / "empty.db")  # a ledger with nothing still says so
    empty = UsageCharts(nothing, "ana", today=lambda: TODAY)
    qtbot.addWidget(empty)
    empty.show()
    empty.refresh()
    assert empty.speed.empty.text() == "No data yet."
    nothing.close()
    store.close()
