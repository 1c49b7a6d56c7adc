"""A reply's time to first token reads as people read a time: "3.95 s" above a second (it
said "3,950 ms") in the footer, the status bar and Details alike; and the status bar, in a
narrow window, leaves out whole figures rather than cutting one ("TTFT 2,…")."""
from __future__ import annotations

import pytest

from app.domain.messages import Message, MessageStatus, Role
from ui.message_bubble import MessageBubble
from ui.message_details import MessageDetails
from ui.reply_metrics import ReplyMetrics

pytestmark = pytest.mark.gui


def a_reply(ttft_ms: float) -> Message:
    return Message("m1", "c1", Role.ASSISTANT, "Hi.", MessageStatus.COMPLETE, "", "",
                   engine="local", model="smol.gguf", prompt_tokens=22, completion_tokens=45,
                   ttft_ms=ttft_ms, tokens_per_s=50.7, cost_usd=0.0)


def test_a_time_to_first_token_is_in_seconds_above_one():
    from ui.message_text import duration_text

    assert [duration_text(ms) for ms in (120.0, 850.4, 999.4, 999.6, 3950.0, 12_345.0,
                                         59_900.0, 125_000.0)] == [
        "120 ms", "850 ms", "999 ms", "1.00 s", "3.95 s", "12.3 s", "59.9 s", "2 min 5 s"]


def test_the_footer_the_status_bar_and_details_say_it_alike(qtbot):
    reply = a_reply(3950.0)
    bubble = MessageBubble(Role.ASSISTANT)
    qtbot.addWidget(bubble)
    bubble.show_message_state(reply)
    metrics = ReplyMetrics()
    qtbot.addWidget(metrics)
    metrics.show_reply(reply)
    details = MessageDetails(reply)
    qtbot.addWidget(details)
    assert "TTFT 3.95 s" in bubble.footer.text().replace("\u00a0", " ")
    assert metrics.text() == "TTFT 3.95 s · 50.7 tok/s"
    assert details.values["Time to first token"] == "3.95 s"
    assert "ms" not in metrics.text()


def test_a_narrow_status_bar_leaves_out_whole_figures(qtbot):
    metrics = ReplyMetrics()
    qtbot.addWidget(metrics)
    metrics.show_reply(a_reply(2245.0))
    fm = metrics.fontMetrics()
    margins = metrics.width() - metrics.contentsRect().width()
    metrics.show()
    shown = {}
    for text in ("TTFT 2.25 s · 50.7 tok/s", "TTFT 2.25 s …"):
        metrics.resize(fm.horizontalAdvance(text) + margins, metrics.height())
        qtbot.waitUntil(lambda text=text: metrics.contentsRect().width() ==
                        fm.horizontalAdvance(text))
        shown[text] = metrics.shown_text()
    assert shown == {text: text for text in shown}  # whole figures, or none
    metrics.resize(fm.horizontalAdvance("TTFT 2.25 s ") + margins, metrics.height())
    qtbot.waitUntil(lambda: metrics.shown_text() != "TTFT 2.25 s …")
    assert metrics.shown_text() == "…"  # not "TTFT 2,…" nor "TTFT 2.2…"
    metrics.resize(metrics.minimumWidth(), metrics.height())
    qtbot.waitUntil(lambda: metrics.width() == metrics.minimumWidth())
    assert metrics.shown_text() == "…"
    assert metrics.toolTip().startswith("TTFT 2.25 s · 50.7 tok/s")
