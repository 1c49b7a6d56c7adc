"""After a kill or a power cut mid-reply, the start's banner says how many replies the stop cut
short and opens the chat that holds one: the newest, when several were cut short in several
chats, whichever chat the window came back on. Real window and store; the dead writer is a
process identity with this pid and another start time (a process that had our pid before)."""
from __future__ import annotations

import os

import pytest

from app.config.settings import Settings, default_user_id
from app.domain.messages import MessageStatus, Role
from app.storage.store import Store

pytestmark = pytest.mark.gui

DEAD_WRITER = f"{os.getpid()}:12345"  # (app.storage.writers: this pid, another start time)


def chat_cut_short(store: Store, title: str, profile: str | None,
                   partial: str) -> tuple[str, str]:
    """A chat whose reply a dead process left streaming: (its id, the reply's id)."""
    conversation = store.create_conversation(title, profile=profile)
    question = store.add_message(conversation.id, Role.USER, f"{title}?")
    answer = store.add_message(conversation.id, Role.ASSISTANT, partial,
                               status=MessageStatus.STREAMING, parent_id=question.id)
    store.update_message(answer.id, writer=DEAD_WRITER)
    return conversation.id, answer.id


def test_the_banner_opens_the_newest_chat_a_stop_cut_short(qtbot, outpost_app,
                                                           scripted_engine):
    """The start came back on the chat remembered in window.ini and said "1 reply was
    interrupted" with nothing to open it by: with the reply in another chat (or several in
    several chats) the user had to hunt for it."""
    from ui.window_state import WindowState

    me = default_user_id(Settings())
    store = Store()
    remembered = store.create_conversation("Remembered chat", profile=me)
    store.add_message(remembered.id, Role.USER, "Hello")
    older, _ = chat_cut_short(store, "Older report", me, "The first half of")
    newest, newest_reply = chat_cut_short(store, "Newest report", me, "Pump 3 leaks at")
    # a newer one in another profile's chat: not this person's to count or open
    chat_cut_short(store, "Someone else's", "someone-else", "Not yours")
    store.close()
    WindowState().save_last_conversation(remembered.id)

    app = outpost_app(max_tokens=16, engine_factory=scripted_engine.factory)
    with qtbot.waitSignal(app.loader.model_ready, timeout=10000):
        app.start()
    window = app.window
    assert window.controller.conversation_id == remembered.id  # (as it was left)
    banner = window.banner
    assert banner.isVisible()
    assert banner.label.text() == (
        "2 replies were interrupted when Outpost stopped, in 2 chats; the text that had "
        "arrived is kept, marked interrupted.")  # (it counted someone else's too: 3 in 3)
    assert banner.action_button.isVisible()
    assert banner.action_button.text() == "Open the newest"
    banner.action_button.click()
    assert window.controller.conversation_id == newest != older
    assert window.view.bubbles[-1].message_id == newest_reply
    assert window.view.bubbles[-1].text == "Pump 3 leaks at"
    assert "interrupted" in window.view.bubbles[-1].footer.text()
    assert not banner.isVisible()
    # the next news in the banner has no such action
    window.errors.inform("Something else.")
    assert not banner.action_button.isVisible()


def test_one_reply_cut_short_in_another_chat_is_opened_by_the_banner(qtbot, outpost_app,
                                                                      scripted_engine):
    from ui.window_state import WindowState

    me = default_user_id(Settings())
    store = Store()
    remembered = store.create_conversation("Remembered chat", profile=me)
    store.add_message(remembered.id, Role.USER, "Hello")
    cut, reply_id = chat_cut_short(store, "Field report", me, "Pump 3 leaks at")
    store.close()
    WindowState().save_last_conversation(remembered.id)

    app = outpost_app(max_tokens=16, engine_factory=scripted_engine.factory)
    with qtbot.waitSignal(app.loader.model_ready, timeout=10000):
        app.start()
    window = app.window
    assert window.banner.label.text() == (
        "1 reply was interrupted when Outpost stopped; the text that had arrived is kept, "
        "marked interrupted.")
    assert window.banner.action_button.text() == "Open the chat"
    window.banner.action_button.click()
    assert window.controller.conversation_id == cut
    assert window.view.bubbles[-1].message_id == reply_id


def test_a_profile_signing_in_later_is_told_of_its_replies_a_stop_cut_short(
        qtbot, outpost_app, scripted_engine):
    """The start marks every profile's replies left streaming but tells only the profile
    signed in: maria, whose reply was cut short while the admin's window started, was never
    told (it was marked, so no later start saw it either). She is told when she signs in, with
    the button to her chat, once; the admin is not told of hers."""
    from app.storage.profiles import Profiles

    me = default_user_id(Settings())
    store = Store()
    profiles = Profiles(store)
    admin = profiles.ensure_default(me)
    profiles.add("maria", admin)
    hers, her_reply = chat_cut_short(store, "Maria's report", "maria", "Valve 2 at")
    store.close()

    app = outpost_app(max_tokens=16, engine_factory=scripted_engine.factory)
    with qtbot.waitSignal(app.loader.model_ready, timeout=10000):
        app.start()
    window = app.window
    assert not window.banner.isVisible()  # nothing of the admin's was cut short
    assert app.store.get_message(her_reply).status is MessageStatus.INTERRUPTED

    window.profile_button.switch_requested.emit("maria")
    assert window.profile.name == "maria"
    assert window.banner.isVisible()
    assert window.banner.label.text() == (
        "1 reply was interrupted when Outpost stopped; the text that had arrived is kept, "
        "marked interrupted.")
    window.banner.action_button.click()
    assert window.controller.conversation_id == hers
    assert window.view.bubbles[-1].message_id == her_reply

    window.profile_button.switch_requested.emit(me)
    assert not window.banner.isVisible()
    window.profile_button.switch_requested.emit("maria")  # told once
    assert not window.banner.isVisible()
