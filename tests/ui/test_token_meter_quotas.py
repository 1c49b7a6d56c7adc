"""The composer's token meter reckons the profile's quotas as the send does (dry: nothing
reserved): the reply tokens a quota leaves, and the words of a quota that would refuse the
next send, with the gauge red. Before, it showed the whole max_tokens and a green gauge."""
from __future__ import annotations

import pytest

from tests.support import grab_in_palette

pytestmark = pytest.mark.gui


def test_the_meter_shows_what_a_quota_leaves_and_when_it_would_refuse(qtbot, scripted,
                                                                      artifacts_dir):
    from app.config.settings import default_user_id

    window = scripted.window
    meter = window.meter
    book = scripted.service.quotas.book
    profile = default_user_id(scripted.settings)
    book.set(profile, "count_local", True, by=window.profile)  # the local model counts
    window.composer.edit.setPlainText("Tell me about lighthouses.")
    qtbot.waitUntil(lambda: bool(meter.last), timeout=10000)
    tokens, asked = meter.last["tokens"], meter.last["max_tokens"]
    assert asked == 48 and meter.last["limit"] is None
    book.set(profile, "cloud_tokens_per_day", tokens + 20, by=window.profile)
    meter.refresh()
    qtbot.waitUntil(lambda: meter.last["max_tokens"] == 20, timeout=10000)
    assert meter.last["asked"] == 48
    text = meter.label.text()
    assert "(with\u00a020\u00a0for\u00a0the\u00a0reply, limited by the daily token quota)" \
        in text, text
    assert f"{tokens + 20:,} / " in text and "#cf222e" not in meter.gauge.styleSheet()
    window.resize(1200, 750)
    for theme in ("light", "dark"):
        grab_in_palette(qtbot, window, artifacts_dir / f"token-meter-quota-cap-{theme}.png",
                        theme)
    book.set(profile, "cloud_tokens_per_day", tokens, by=window.profile)  # no room for a reply
    meter.refresh()
    qtbot.waitUntil(lambda: bool(meter.last.get("refused")), timeout=10000)
    text = meter.label.text()
    assert "\nSending now would be refused: Daily token quota reached for " in text, text
    assert "It resets at " in text
    assert meter.gauge.isVisible() and "#cf222e" in meter.gauge.styleSheet()
    assert meter.gauge.toolTip().startswith("Sending now would be refused: Daily token quota")
    for theme in ("light", "dark"):
        grab_in_palette(qtbot, window, artifacts_dir / f"token-meter-quota-refused-{theme}.png",
                        theme)
