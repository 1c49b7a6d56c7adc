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
