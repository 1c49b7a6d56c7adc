"""What a reply's footer and Details say about the reply's limits: a quota that left room for
a shorter reply than asked (``app.storage.quotas``)."""
from __future__ import annotations

import pytest

from app.domain.messages import Message, MessageStatus, Role
from ui.message_bubble import MessageBubble
from ui.message_details import MessageDetails

pytestmark = pytest.mark.gui


def stored_reply(**fields) -> Message:
    values = dict(engine="acme", model="gpt-4o-mini", prompt_tokens=19, completion_tokens=81,
                  cost_usd=0.00005145, finish_reason="length",
                  params={"max_tokens": 81, "engine_kind": "openai",
                          "reply_cap": {"max_tokens": 81, "asked": 2000,
                                        "limit": "daily token quota"}})
    values.update(fields)
    return Message("m1", "c1", Role.ASSISTANT, "The sky scatters blue light",
                   MessageStatus.COMPLETE, "", "", **values)


def test_a_reply_a_quota_limited_says_so_under_it_and_in_its_details(qtbot):
    bubble = MessageBubble(Role.ASSISTANT)
    qtbot.addWidget(bubble)
    bubble.show_message_state(stored_reply())
    assert "reply limited to 81 tokens: daily token quota" in bubble.footer.text()
    details = MessageDetails(stored_reply())
    qtbot.addWidget(details)
    assert details.values["Reply limit"] == ("81 tokens: daily token quota (2,000 asked, more "
                                             "than was left)")
    plain = stored_reply(params={"max_tokens": 81, "engine_kind": "openai"})
    bubble.show_message_state(plain)
    assert "reply limited" not in bubble.footer.text()
    assert "Reply limit" not in MessageDetails(plain).values


def test_a_reply_whose_oldest_turns_were_left_out_says_so_under_it_and_in_details(
        qtbot, artifacts_dir):
    """Kept with the reply (trial 10): the turn's banner is gone once another chat opens."""
    from tests.support import grab_in_palette

    left_out = stored_reply(finish_reason="stop", params={
        "max_tokens": 512, "engine_kind": "local",
        "context_left_out": {"messages": 4, "turns": 2, "window": 2048}})
    bubble = MessageBubble(Role.ASSISTANT)
    qtbot.addWidget(bubble)
    bubble.resize(560, 160)
    bubble.show_message_state(left_out)
    assert "4 oldest messages left out (2,048-token context)" in \
        bubble.footer.text().replace("\u00a0", " ")
    details = MessageDetails(left_out)
    qtbot.addWidget(details)
    assert details.values["Left out"] == ("The 2 oldest turns (4 messages) left out to fit "
                                          "the model's 2,048-token context; the model did not "
                                          "see them.")
    for theme in ("light", "dark"):
        grab_in_palette(qtbot, bubble, artifacts_dir / f"reply-left-out-{theme}.png", theme)
        grab_in_palette(qtbot, details, artifacts_dir / f"details-left-out-{theme}.png", theme)
    plain = stored_reply(params={"max_tokens": 81, "engine_kind": "openai"})
    bubble.show_message_state(plain)
    assert "left out" not in bubble.footer.text()
    assert "Left out" not in MessageDetails(plain).values
