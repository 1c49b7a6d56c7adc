"""Long conversations in the real window (issue 16): a 1,000-message chat written through the
real Store opens at the bottom with only a screenful or so of bubbles built; scrolling up builds
older batches while what was on screen stays put; a search jump reaches the first message; a new
reply streams at the bottom. Work is counted (bubbles built, markdown renders), never timed."""
from __future__ import annotations

import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtWidgets import QApplication

from app.domain.messages import Role
from app.storage.store import Store
from tests.support import grab_in_palette, reply, send
from ui.conversation_view import ConversationView
from ui.render_cache import RENDERED
from ui.theme import dark_palette

pytestmark = pytest.mark.gui
MESSAGES = 1000


def user_text(n: int) -> str:
    return f"Question {n}: how do I count the `lamps` on floor {n % 7}?\nKeep it short."


def assistant_text(n: int) -> str:
    """A reply of the kind that is slow to lay out: paragraphs, a code block, now and then a
    table."""
    parts = [(f"Answer {n}. The keeper walks up **{n % 9 + 2} floors** and counts as she "
              f"goes; each lamp has a number, so nothing is counted twice."),
             (f"```python\ndef count_{n}(floors):\n    total = 0\n    for floor in floors:\n"
              f"        total += len(floor.lamps)\n    return total  # {n}\n```")]
    if n % 3 == 0:
        parts.append("| floor | lamps |\n|---|---:|\n" +
                     "\n".join(f"| {k} | {k * n % 11} |" for k in range(1, 4)))
    parts.append("- check the *wicks*\n- note the oil level")
    return "\n\n".join(parts)


def seed_conversation(store, messages: int, profile: str | None = None,
                      title: str = "The long chat") -> str:
    """A conversation of ``messages`` messages (user/assistant pairs), written through the
    app's own Store; its id. The writes skip fsync (set back afterwards): only the seeding is
    quicker, the rows and the file are those the app writes."""
    conversation = store.create_conversation(title, profile=profile)
    conn = store.db.conn
    conn.execute("PRAGMA synchronous = OFF")
    try:
        for n in range(messages):
            pair, assistant = divmod(n, 2)
            if assistant:
                store.add_message(conversation.id, Role.ASSISTANT, assistant_text(pair),
                                  engine="local", model="scripted-model.gguf")
            else:
                store.add_message(conversation.id, Role.USER, user_text(pair))
    finally:
        conn.execute("PRAGMA synchronous = FULL")
    return conversation.id


# -- the window --------------------------------------------------------------------------------
def opened(qtbot, app, messages: int) -> tuple[str, list]:
    """The window at a fixed size showing a new conversation of ``messages`` messages, its
    margin built; (its id, its stored path)."""
    window = app.window
    window.resize(1000, 760)
    conversation = seed_conversation(app.store, messages, profile=window.profile_name)
    window.refresh_sidebar()
    window._on_conversation_selected(conversation)
    idle(qtbot, window.view)
    return conversation, app.store.branch(conversation)


def idle(qtbot, view) -> None:
    """Until the view has built what it keeps near the screen."""
    qtbot.waitUntil(lambda: not view.filling, timeout=20000)
    qtbot.wait(1)  # the scroll to the end follows on the next turn


def built_now(view) -> None:
    """Let the view build what it keeps near the screen, turn by turn (quicker than waiting)."""
    while view.filling:
        QApplication.processEvents()


def on_screen(view, bubble) -> int:
    """Where ``bubble`` starts, in the viewport's pixels (0: at its top)."""
    return bubble.mapTo(view.viewport(), QPoint(0, 0)).y()


def visible(view, bubble) -> bool:
    top = on_screen(view, bubble)
    return top < view.viewport().height() and top + bubble.height() > 0


def at_bottom(view) -> bool:
    bar = view.verticalScrollBar()
    return bar.maximum() > 0 and bar.value() == bar.maximum()


def test_a_long_chat_opens_at_the_bottom_with_only_a_screenful_built(qtbot, scripted):
    view = scripted.window.view
    rendered = RENDERED.renders
    conversation, path = opened(qtbot, scripted, MESSAGES)
    assert at_bottom(view)
    assert view.bubbles[-1].message_id == path[-1].id and visible(view, view.bubbles[-1])
    assert view.last_bubble() is view.bubbles[-1]
    assert 3 <= len(view.bubbles) <= 16, len(view.bubbles)  # a screen and a margin, not 1,000
    assert view.built == len(view.bubbles)
    # one render per bubble at most, and the next few above rendered ahead
    assert RENDERED.renders - rendered <= len(view.bubbles) + view.AHEAD
    assert all(RENDERED.has(m.id, m.content, m.segments)
               for m in path[-len(view.bubbles) - view.AHEAD:])
    # what is shown is what is stored: the newest messages, in order
    assert [b.message_id for b in view.bubbles] == [m.id for m in path[-len(view.bubbles):]]
    assert view.bubbles[-1].text == path[-1].content
    assert view.shows(path[0].id) and view.bubble_of(path[0].id) is None

    # opened again (after another chat): the HTML comes from the cache, nothing is rendered
    other = seed_conversation(scripted.store, 4, profile=scripted.window.profile_name)
    scripted.window._on_conversation_selected(other)
    idle(qtbot, view)
    rendered = RENDERED.renders
    scripted.window._on_conversation_selected(conversation)
    idle(qtbot, view)
    assert at_bottom(view) and view.bubbles[-1].message_id == path[-1].id
    assert RENDERED.renders == rendered


def test_scrolling_does_one_piece_of_work_a_turn(qtbot, scripted, monkeypatch):
    """Each turn of the event loop while scrolling up builds one bubble, renders one message
    ahead or makes one spare bubble (a new one, or one far below taken back), never two of
    these: a notch waits for one piece at most. A bubble built takes a spare one (its widgets
    made in an earlier turn) and HTML rendered in an earlier turn."""
    view = scripted.window.view
    opened(qtbot, scripted, MESSAGES)
    assert all(len(spares) == view.SPARES for spares in view._spares.values())
    pieces, real = [], ConversationView._fill_a_little

    def counted(self):
        counts = (self.built, self.made + self.recycled, RENDERED.renders)
        real(self)
        pieces.append(tuple(b - a for a, b in zip(counts, (
            self.built, self.made + self.recycled, RENDERED.renders))))

    monkeypatch.setattr(ConversationView, "_fill_a_little", counted)
    bar, built = view.verticalScrollBar(), view.built
    for _ in range(40):  # two or three screens up, a notch at a time
        bar.setValue(bar.value() - 60)
        QApplication.processEvents()
    built_now(view)
    assert view.built - built >= 6, view.built - built
    assert pieces and all(sum(piece) <= 1 for piece in pieces), pieces
    assert sum(p[0] for p in pieces) == view.built - built
    # every bubble built took a spare and HTML rendered ahead (the screen's first ones aside);
    # once bubbles lay more than three screens below, spares were taken back from there
    assert sum(p[1] for p in pieces) == view.built - built
    assert view.recycled > 0
    assert sum(p[2] for p in pieces) == view.built - built
    assert all(len(spares) == view.SPARES for spares in view._spares.values())


def shown_state(bubble) -> tuple:
    """What a bubble shows and keeps of its message, every part that building sets."""
    switcher = bubble._switcher
    return (bubble.message_id, bubble.role, bubble.text, bubble.body.toHtml(), bubble.seams,
            bubble.footer.text(), bubble.footer.isHidden(), bool(bubble.footer.property(
                "warning")), bubble.details_button.isHidden(),
            switcher is not None and not switcher.isHidden(),
            switcher.label.text() if switcher is not None and not switcher.isHidden() else "",
            bubble.body.isHidden(), bubble.stored())


def test_a_bubble_taken_back_shows_its_next_message_as_a_new_one_would(qtbot, scripted):
    """Scrolling a long chat takes far bubbles back as spares and builds other messages into
    them: nothing of the message a bubble showed before (a warning footer, seams, a version
    switcher, its text) stays; each shows what a bubble made for its message shows."""
    from app.domain.messages import MessageStatus

    view, store = scripted.window.view, scripted.store
    conversation = seed_conversation(store, 300, profile=scripted.window.profile_name)
    path = store.branch(conversation)
    for n, message in enumerate(path):
        if message.role is not Role.ASSISTANT:
            continue
        if n % 4 == 1:  # a reply that broke: a warning footer
            store.update_message(message.id, status=MessageStatus.INTERRUPTED,
                                 error="the stream broke")
        elif n % 4 == 3:  # a reply another engine finished: a seam
            cut = len(message.content) // 2
            store.update_message(message.id, segments=[
                {"engine": "openai", "model": "gpt-4o-mini", "start": 0, "end": cut},
                {"engine": "local", "model": "SmolLM2", "start": cut, "end": None,
                 "reason": "network down: the stream broke"}])
    scripted.window.refresh_sidebar()
    scripted.window._on_conversation_selected(conversation)
    idle(qtbot, view)
    bar, built, made = view.verticalScrollBar(), view.built, view.made
    showed: dict = {}  # bubble -> the messages it showed (the keys keep the wrappers alive)
    for step in [-1] * 36 + [1] * 24:  # up by screens, then back down: taken back both ways
        bar.setValue(bar.value() + step * view.viewport().height())
        built_now(view)
        for bubble in view.bubbles:
            showed.setdefault(bubble, set()).add(bubble.message_id)
    assert view.recycled >= 10, view.recycled
    assert sum(len(showed[b]) > 1 for b in view.bubbles) >= 5  # compared below: reused ones
    # fewer bubbles made than messages built: the others went into bubbles taken back
    assert view.made - made < view.built - built - 10, (view.made - made, view.built - built)

    stored = {m.id: m for m in store.branch(conversation)}
    fresh = ConversationView()
    qtbot.addWidget(fresh)
    for bubble in view.bubbles:
        fresh.show_messages([stored[bubble.message_id]], view._versions)
        assert shown_state(bubble) == shown_state(fresh.bubbles[0])
    states = {shown_state(b)[5:9] for b in view.bubbles}
    assert len(states) >= 3  # warnings, seams and plain replies among those compared


def test_a_system_message_in_a_long_chat_is_dropped_and_built_again(qtbot, scripted):
    """A system message (an imported chat can have one) has no spare bubbles of its own:
    scrolled far away it is dropped, never kept as a spare, and built again when it comes
    back; switching to another chat clears it like any other."""
    window, store, view = scripted.window, scripted.store, scripted.window.view
    conversation = store.create_conversation("With a system prompt",
                                             profile=window.profile_name)
    system = store.add_message(conversation.id, Role.SYSTEM, "You are terse.")
    for n in range(40):  # 81 messages: more than a chat keeps whole (KEEP_ALL)
        store.add_message(conversation.id, Role.USER, user_text(n))
        store.add_message(conversation.id, Role.ASSISTANT, assistant_text(n),
                          engine="local", model="scripted-model.gguf")
    window.refresh_sidebar()
    window._on_conversation_selected(conversation.id)
    idle(qtbot, view)
    assert view.show_message(system.id)  # a jump to the top (as a search result)
    idle(qtbot, view)
    assert view.bubbles[0].role is Role.SYSTEM and view.bubbles[0].text == "You are terse."
    bar = view.verticalScrollBar()
    while view._newer or bar.value() < bar.maximum():  # down to the end: the top taken back
        bar.setValue(bar.value() + view.viewport().height())
        built_now(view)
    assert view.bubble_of(system.id) is None and view.recycled > 0
    assert all(b.role is not Role.SYSTEM for spares in view._spares.values() for b in spares)
    assert view.show_message(system.id)  # and back: built again
    idle(qtbot, view)
    assert view.bubble_of(system.id).text == "You are terse."
    other = seed_conversation(store, 4, profile=window.profile_name)
    window._on_conversation_selected(other)
    idle(qtbot, view)
    assert [b.role for b in view.bubbles] == [Role.USER, Role.ASSISTANT] * 2


@pytest.mark.qt_log_ignore("does not support grabbing the keyboard")  # a popup, offscreen
def test_a_bubble_whose_menu_is_open_is_neither_dropped_nor_reused(qtbot, scripted):
    """Its menu runs a nested event loop, in which the chat's timers still run: scrolled far
    away meanwhile (by the wheel, say), the bubble stays built and its message with it, so
    "Copy message" copies that message."""
    from PySide6.QtCore import QTimer

    view = scripted.window.view
    _conversation, path = opened(qtbot, scripted, MESSAGES)
    bubble, seen = view.bubbles[-1], []

    def while_open():
        bar = view.verticalScrollBar()
        for _ in range(12):  # screens up, far past where bubbles are taken back
            bar.setValue(bar.value() - view.viewport().height())
            built_now(view)
        view._drop_when_idle()
        seen.append((bubble in view.bubbles, bubble.message_id, bubble.text))
        QApplication.activePopupWidget().close()

    QTimer.singleShot(0, while_open)
    bubble._show_menu(QPoint(0, 0))
    assert seen == [(True, path[-1].id, path[-1].content)]
    view._drop_when_idle()  # the menu closed: now it goes, as any far bubble
    assert view.bubble_of(path[-1].id) is None


def bubble_of_widget(view, widget):
    """The built bubble ``widget`` is (or is inside); None: outside them."""
    return next((b for b in view.bubbles if widget is b or b.isAncestorOf(widget)), None)


def test_tab_walks_the_messages_in_the_order_shown(qtbot, scripted):
    """Bubbles built above the ones shown (scrolling up), made ahead as spares, or added at
    the bottom (a reply) take their place in the tab chain: Tab goes down the chat message by
    message, stopping at each, and then leaves it; Shift+Tab goes back up. (Bubbles are told
    apart by identity: the focus scrolling the chat may build more above, which shifts the
    indices.)"""
    window, view = scripted.window, scripted.window.view
    opened(qtbot, scripted, MESSAGES)
    bar = view.verticalScrollBar()
    for _ in range(30):  # a few screens up: bubbles built above
        bar.setValue(bar.value() - 60)
        built_now(view)
    window.activateWindow()
    first = view.bubbles[0]
    first.setFocus(Qt.FocusReason.TabFocusReason)
    qtbot.waitUntil(first.hasFocus)

    def walk(key) -> list:
        """The bubbles whose own frame Tab (or Shift+Tab) stops at, until it leaves them."""
        frames = []
        for _ in range(400):
            qtbot.keyClick(QApplication.focusWidget(), key)
            focused = QApplication.focusWidget()
            if bubble_of_widget(view, focused) is None:
                return frames
            if focused in view.bubbles:
                frames.append(focused)
        raise AssertionError("Tab never left the chat")

    down = walk(Qt.Key.Key_Tab)
    start = view.bubbles.index(first)
    assert [view.bubbles.index(b) for b in down] == list(range(start + 1, len(view.bubbles)))
    view.bubbles[-1].body.setFocus(Qt.FocusReason.TabFocusReason)  # the last stop of the last
    up = walk(Qt.Key.Key_Backtab)
    assert [view.bubbles.index(b) for b in up] == list(range(len(view.bubbles) - 1, -1, -1))


def test_a_short_chat_keeps_what_it_built(qtbot, scripted):
    """A chat of a few screens is built as it is scrolled and then kept: after a pause (when a
    long chat drops far bubbles) scrolling back builds nothing again."""
    view = scripted.window.view
    _conversation, path = opened(qtbot, scripted, 40)
    bar = view.verticalScrollBar()
    while view.bubbles[0].message_id != path[0].id:
        bar.setValue(0)
        built_now(view)
    assert len(view.bubbles) == 40 and view.built == 40
    assert bar.maximum() > 4 * view.viewport().height()  # the bottom is far away
    qtbot.wait(view.DROP_AFTER_MS + 100)  # the scrolling paused
    idle(qtbot, view)
    bar.setValue(bar.maximum())
    idle(qtbot, view)
    assert len(view.bubbles) == 40 and view.built == 40  # nothing dropped, nothing built again


@pytest.mark.slow  # about 20 s: the whole chat is built once on the way up
def test_scrolling_up_builds_older_messages_and_keeps_the_screen_still(qtbot, scripted):
    view = scripted.window.view
    _conversation, path = opened(qtbot, scripted, MESSAGES)
    bar = view.verticalScrollBar()
    built = view.built
    bar.setValue(0)  # the user drags to the top of what is built
    seen = view.bubbles[0]
    where = on_screen(view, seen)
    idle(qtbot, view)
    assert view.built > built  # an older batch was built above
    assert view.bubbles[0] is not seen and bar.value() > 0
    assert on_screen(view, seen) == where  # and what was on screen did not move

    # all the way up: the first message is reached; far bubbles are dropped on the way
    most = 0
    for _ in range(MESSAGES):
        if view.bubbles[0].message_id == path[0].id:
            break
        bar.setValue(0)
        built_now(view)
        most = max(most, len(view.bubbles))
    assert view.bubbles[0].message_id == path[0].id
    bar.setValue(0)
    assert visible(view, view.bubbles[0]) and view.bubbles[0].text == path[0].content
    assert most <= 40, most  # built around the screen only, never the whole chat
    assert view.bubble_of(path[-1].id) is None  # the bottom was dropped: built again later

    # and down again: newer messages are built below, the far top is dropped, and what is on
    # screen stays where it was each time
    for _ in range(20):
        bar.setValue(bar.maximum())
        seen = next(b for b in view.bubbles if visible(view, b))
        where = on_screen(view, seen)
        built_now(view)
        assert on_screen(view, seen) == where
    assert view.bubble_of(path[0].id) is None and len(view.bubbles) <= 40
    assert view.show_message(path[-1].id)  # the End of the chat, as a jump
    idle(qtbot, view)
    assert view.last_bubble() is not None and view.last_bubble().message_id == path[-1].id


def test_a_message_built_above_moves_nothing_below_it(qtbot, scripted):
    """A bubble built above the top one takes room kept above it: the bubbles already built
    keep their place in the chat and the scroll bar its value (before, each one built moved
    every bubble below it, ~20 a notch, and the scroll bar followed: bench/long_conversation).
    The scroll bar never reaches the room: its top is the top bubble's."""
    view = scripted.window.view
    opened(qtbot, scripted, MESSAGES)
    bar = view.verticalScrollBar()
    for _ in range(3):  # the user scrolls up to the top of what is built, three times
        bar.setValue(bar.minimum())
        places = {bubble: bubble.y() for bubble in view.bubbles}
        value, built = bar.value(), view.built
        built_now(view)
        assert view.built > built
        assert {b: b.y() for b in view.bubbles if b in places} == \
            {b: y for b, y in places.items() if b in view.bubbles}
        assert bar.value() == value
        top = view.bubbles[0]
        bar.setValue(bar.minimum())
        assert on_screen(view, top) == view._layout.contentsMargins().top()


def test_a_search_jump_builds_the_first_message_then_a_reply_streams_at_the_bottom(
        qtbot, scripted, scripted_engine):
    window, view = scripted.window, scripted.window.view
    conversation, path = opened(qtbot, scripted, MESSAGES)
    built = view.built
    window.show_search_result(conversation, path[0].id)
    bubble = view.bubble_of(path[0].id)
    assert bubble is not None and visible(view, bubble) and bubble.hasFocus()
    assert view.bubbles[0] is bubble  # nothing above the first message
    idle(qtbot, view)
    assert view.built - built <= 16  # a screenful around it, not the 1,000 above the bottom
    assert view.last_bubble() is None  # the bottom is not built now
    assert visible(view, bubble)

    # a new reply goes to the bottom of the chat and streams there
    scripted_engine.script(reply("The ", "keeper ", "counts ", "**every** ", "lamp."))
    send(qtbot, scripted, "And the last floor?")
    assert view.bubbles[-1].text == "The keeper counts **every** lamp."
    assert view.bubbles[-2].text == "And the last floor?"
    assert view.bubbles[-3].message_id == path[-1].id  # right below the stored chat
    idle(qtbot, view)
    assert at_bottom(view) and len(view.bubbles) <= 16
    stored = scripted.store.branch(conversation)
    assert len(stored) == MESSAGES + 2 and stored[-1].content == view.bubbles[-1].text


def test_versions_and_an_edit_in_a_long_chat(qtbot, scripted, scripted_engine):
    window, view = scripted.window, scripted.window.view
    _conversation, path = opened(qtbot, scripted, MESSAGES)
    scripted_engine.script(reply("A second answer."))
    last = view.bubbles[-1]
    last.set_actions_visible(True)
    qtbot.mouseClick(last.actions_bar.regenerate_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.controller.state == "idle", timeout=20000)
    answer = view.bubbles[-1]
    assert answer.text == "A second answer." and answer.switcher.label.text() == "2/2"
    qtbot.mouseClick(answer.switcher.previous_button, Qt.MouseButton.LeftButton)
    assert view.bubbles[-1].text == path[-1].content
    assert view.bubbles[-1].switcher.label.text() == "1/2"
    idle(qtbot, view)
    assert at_bottom(view) and len(view.bubbles) <= 16

    # a message being edited is never dropped, however far the chat is scrolled away from it
    question = view.bubbles[-2]
    question.start_editing()
    question.editor.edit.setPlainText("A question I am still writing")
    bar = view.verticalScrollBar()
    for _ in range(6):
        bar.setValue(0)
        built_now(view)
    assert question in view.bubbles and not visible(view, question)
    assert view.bubble_of(path[-1].id) is None  # the reply below it was dropped
    assert view.show_message(question.message_id)
    assert view.bubble_of(question.message_id) is question
    assert question.editor.edit.toPlainText() == "A question I am still writing"


def test_a_long_chat_scrolled_up_half_way_in_both_palettes(qtbot, scripted, artifacts_dir):
    window, view = scripted.window, scripted.window.view
    _conversation, path = opened(qtbot, scripted, MESSAGES)
    view.show_message(path[MESSAGES // 2].id)
    idle(qtbot, view)
    for name in ("light", "dark"):
        grab_in_palette(qtbot, window, artifacts_dir / f"long-chat-{name}.png", name)
    bubble = view.bubble_of(path[MESSAGES // 2].id)
    assert bubble is not None and visible(view, bubble)


@pytest.mark.slow
def test_five_thousand_messages_open_and_scroll(qtbot, scripted):
    view = scripted.window.view
    _conversation, path = opened(qtbot, scripted, 5000)
    assert at_bottom(view) and view.bubbles[-1].message_id == path[-1].id
    assert len(view.bubbles) <= 16
    bar = view.verticalScrollBar()
    for _ in range(40):  # forty wheel-sized steps up
        bar.setValue(max(0, bar.value() - 120))
        idle(qtbot, view)
    assert 0 < bar.value() < bar.maximum() and len(view.bubbles) <= 40
    assert view.show_message(path[1].id)  # a jump to the top and one back to the bottom
    assert visible(view, view.bubble_of(path[1].id))
    assert view.show_message(path[-1].id)
    idle(qtbot, view)
    assert visible(view, view.bubble_of(path[-1].id)) and len(view.bubbles) <= 40


def test_a_new_palette_renders_the_built_bubbles_again_and_the_old_one_comes_from_the_cache(
        qtbot, scripted):
    view = scripted.window.view
    opened(qtbot, scripted, MESSAGES)
    app = QApplication.instance()
    light, light_html = app.palette(), view.bubbles[-1].body.toHtml()
    rendered = RENDERED.renders
    try:
        app.setPalette(dark_palette())
        qtbot.waitUntil(lambda: view.bubbles[-1].body.toHtml() != light_html)
        assert 0 < RENDERED.renders - rendered <= len(view.bubbles)  # the built ones only
        rendered = RENDERED.renders
    finally:
        app.setPalette(light)
    qtbot.waitUntil(lambda: view.bubbles[-1].body.toHtml() == light_html)
    assert RENDERED.renders == rendered  # seen in this palette before: from the cache


def test_a_hidden_view_builds_a_few_and_the_rest_once_shown(qtbot):
    store = Store()
    path = store.branch(seed_conversation(store, 200))
    view = ConversationView()
    qtbot.addWidget(view)
    view.show_messages(path)
    assert 0 < len(view.bubbles) <= ConversationView.HIDDEN
    assert view.bubbles[-1].message_id == path[-1].id
    view.resize(700, 600)
    view.show()
    qtbot.waitExposed(view)
    idle(qtbot, view)
    assert at_bottom(view) and len(view.bubbles) > ConversationView.HIDDEN
    assert [b.message_id for b in view.bubbles] == [m.id for m in path[-len(view.bubbles):]]
    store.close()
