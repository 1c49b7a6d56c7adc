"""The Outbox window: items in queue order with readable states, Cancel item, Retry, Send now,
and the empty placeholder (a real Store on tmp_path; nothing touches the network). Then the
window sending its outbox to the fault server: the status bar's count as each item goes, and
closing the window while an answer streams."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from PySide6.QtCore import Qt

from app.config.providers import ProviderConfig
from app.domain.messages import ChatMessage, ChatRequest, MessageStatus, Role
from app.storage.outbox import Outbox, OutboxState
from app.storage.store import Store
from tests.fault_server import fault_server, normal, refused_url
from tests.support import send

pytestmark = pytest.mark.gui


@pytest.fixture
def outbox(tmp_path) -> Outbox:
    return Outbox(Store(tmp_path / "outpost.db"))


def enqueue(outbox: Outbox, prompt: str = "hello", provider: str = "openai",
            model: str | None = None):
    store = outbox.store
    conversation = store.create_conversation()
    user = store.add_message(conversation.id, Role.USER, prompt)
    request = ChatRequest(model=model or "m", messages=(ChatMessage(Role.USER, prompt),))
    return outbox.enqueue(conversation.id, user.id, provider, model, request)


@pytest.fixture
def make_panel(qtbot):
    from ui.outbox_panel import OutboxPanel

    def make(outbox: Outbox) -> OutboxPanel:
        panel = OutboxPanel(outbox)
        qtbot.addWidget(panel)
        return panel

    return make


def click(qtbot, button) -> None:
    assert button.isEnabled()
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def test_rows_waiting_first_with_readable_states(make_panel, outbox):
    first = enqueue(outbox, "first", "openai")
    second = enqueue(outbox, "second", "anthropic", "claude-x")
    third = enqueue(outbox, "third", "openai")
    outbox._finish(second.id, OutboxState.SENT)
    outbox._finish(third.id, OutboxState.FAILED, "bad key")
    panel = make_panel(outbox)
    assert not panel.isModal()
    assert panel.windowTitle() == "Outbox"
    assert panel.stack.currentWidget() is panel.table
    # what waits first, then what failed, then what was sent
    assert panel.rows() == [(first.id, "Waiting", "openai"), (third.id, "Failed", "openai"),
                            (second.id, "Sent", "anthropic")]
    table = panel.table
    headers = [table.horizontalHeaderItem(c).text() for c in range(table.columnCount())]
    assert headers == ["#", "State", "Provider", "Model", "Queued", "Message", "Note"]
    # an item that named no model shows the one its request was made for (the provider's
    # default then), as the reply will say (it showed "provider's default")
    assert [table.item(r, 3).text() for r in range(3)] == ["m", "m", "claude-x"]
    assert [table.item(r, 6).text() for r in range(3)] == [
        "waits until openai can be reached", "bad key", "answered"]
    queued = table.item(0, 4).text()
    assert len(queued) == 5 and queued[2] == ":"  # local HH:MM
    assert table.item(0, 5).text() == "first"
    # rows cannot be edited
    assert not table.item(0, 5).flags() & Qt.ItemFlag.ItemIsEditable


def test_waiting_items_come_first_and_the_panel_says_when_they_are_tried_next(qtbot,
                                                                             make_panel,
                                                                             outbox):
    """14 sent items, then 4 waiting: listed oldest first, the waiting ones were below the
    fold, and nothing said when the window would try them. They come first now (in queue
    order), and a line says when each provider's items are tried next: at its next check, or
    not before the time it asked for (429, Retry-After)."""
    import datetime as dt

    from app.chat.connectivity import Connectivity
    from app.chat.outbox_words import clock_words
    from ui.outbox_panel import OutboxPanel

    for n in range(14):
        outbox._finish(enqueue(outbox, f"sent {n}").id, OutboxState.SENT)
    waiting = [enqueue(outbox, f"waiting {n}").id for n in range(3)]
    held = enqueue(outbox, "held", provider="acme")
    outbox.hold(held.id, 600)
    clock = [1000.0]
    at = dt.datetime.now().astimezone()  # (the wall clock, frozen: the probes' times)
    links = Connectivity(lambda: clock[0], lambda: at)
    links.record("openai", "connection_failed")  # next check in 5 s
    links.record("openai", "connection_failed")  # … then 10 s
    panel = OutboxPanel(outbox, links=links)
    qtbot.addWidget(panel)
    panel.resize(1000, 380)
    panel.show()
    qtbot.waitExposed(panel)
    assert [r[0] for r in panel.rows()][:4] == [*waiting, held.id]
    assert [r[1] for r in panel.rows()][:5] == ["Waiting"] * 4 + ["Sent"]
    assert panel.table.rowAt(0) == 0  # (at the top, in view)
    until = outbox.get(held.id).held_until()
    # (a time on another day than now is said with its date: a run just before midnight)
    assert panel.next_try.isVisible() and panel.next_try.text() == (
        f"Next automatic try: openai at {clock_words(at + dt.timedelta(seconds=10))} (when "
        f"it is checked again); acme at {clock_words(until)} (not before: it asked to wait). "
        "Send now tries at once.")
    panel.offline = lambda: True
    panel.refresh()
    assert panel.next_try.text() == "Offline mode is on: nothing is sent until it is off."


def test_an_item_its_provider_asked_to_wait_for_says_until_when(make_panel, outbox):
    """A 429 with Retry-After, stored with the item: its note says until when it waits (and
    why), not the provider's last error; once the time has passed it no longer says so."""
    import datetime as dt

    held = enqueue(outbox, "held")
    past = enqueue(outbox, "past")
    outbox.hold(held.id, 600)
    outbox.hold(past.id, 60, dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1))
    outbox._finish(past.id, OutboxState.QUEUED, "openai is rate limiting requests (HTTP 429).")
    until = dt.datetime.fromisoformat(outbox.get(held.id).not_before).astimezone()
    panel = make_panel(outbox)
    note = panel.table.item(0, 6).text()  # (with the date, should the wait cross midnight)
    assert note.startswith("waits until ") and f"{until:%H:%M:%S} (the provider asked: " \
        "Retry-After 600 s)" in note
    assert panel.table.item(1, 6).text() == "openai is rate limiting requests (HTTP 429)."


def test_long_and_multiline_prompts_are_elided_with_the_full_text_in_the_tooltip(make_panel,
                                                                                outbox):
    long_prompt = "word " * 40
    enqueue(outbox, long_prompt)
    enqueue(outbox, "line one\nline two")
    panel = make_panel(outbox)
    shown = panel.table.item(0, 5).text()
    assert len(shown) <= 60 and shown.endswith("…")
    assert panel.table.item(0, 5).toolTip() == long_prompt
    assert panel.table.item(1, 5).text() == "line one …"
    assert panel.table.item(1, 5).toolTip() == "line one\nline two"


def test_cancel_item_changes_the_state_in_the_database_and_the_row(qtbot, make_panel, outbox):
    first = enqueue(outbox, "first")
    second = enqueue(outbox, "second")
    panel = make_panel(outbox)
    assert not panel.cancel_button.isEnabled()  # nothing selected
    assert panel.select(second.id)
    assert not panel.retry_button.isEnabled()
    click(qtbot, panel.cancel_button)
    assert outbox.get(second.id).state is OutboxState.CANCELLED
    assert outbox.get(first.id).state is OutboxState.QUEUED
    assert panel.rows()[1] == (second.id, "Cancelled", "openai")
    assert panel.selected_id() == second.id  # the selection is kept across the reload
    assert not panel.cancel_button.isEnabled()  # cancelled now
    assert panel.error.isHidden()


def test_cancel_shows_the_error_inline_when_the_item_moved_on(qtbot, make_panel, outbox):
    item = enqueue(outbox)
    panel = make_panel(outbox)
    panel.select(item.id)
    assert outbox.claim(item.id) is not None  # another process started sending it meanwhile
    click(qtbot, panel.cancel_button)
    assert not panel.error.isHidden()
    assert "sending" in panel.error.text() and "only a queued" in panel.error.text()
    assert outbox.get(item.id).state is OutboxState.SENDING
    assert panel.rows() == [(item.id, "Sending…", "openai")]  # refreshed to the truth
    assert not panel.cancel_button.isEnabled()


def test_retry_requeues_a_failed_item(qtbot, make_panel, outbox):
    item = enqueue(outbox)
    outbox._finish(item.id, OutboxState.FAILED, "bad key")
    panel = make_panel(outbox)
    assert not panel.send_button.isEnabled()  # nothing waits
    panel.select(item.id)
    assert not panel.cancel_button.isEnabled()
    click(qtbot, panel.retry_button)
    assert outbox.get(item.id).state is OutboxState.QUEUED
    assert panel.rows() == [(item.id, "Waiting", "openai")]
    assert not panel.retry_button.isEnabled()
    assert panel.cancel_button.isEnabled()
    assert panel.send_button.isEnabled()


def test_send_now_emits_send_requested_and_is_disabled_when_nothing_is_queued(
        qtbot, make_panel, outbox):
    item = enqueue(outbox)
    panel = make_panel(outbox)
    with qtbot.waitSignal(panel.send_requested, timeout=1000):
        click(qtbot, panel.send_button)
    assert outbox.get(item.id).state is OutboxState.QUEUED  # the panel itself sends nothing
    outbox._finish(item.id, OutboxState.SENT)
    panel.refresh()
    assert not panel.send_button.isEnabled()
    assert panel.rows() == [(item.id, "Sent", "openai")]


def test_an_empty_outbox_shows_the_placeholder(qtbot, make_panel, outbox):
    panel = make_panel(outbox)
    panel.show()
    assert panel.stack.currentWidget() is panel.placeholder
    assert panel.placeholder.isVisible() and not panel.table.isVisible()
    assert panel.placeholder.text() == "The outbox is empty."
    assert panel.rows() == []
    assert not any(b.isEnabled() for b in (panel.send_button, panel.cancel_button,
                                           panel.retry_button))
    item = enqueue(outbox)
    panel.refresh()
    assert panel.table.isVisible() and panel.rows() == [(item.id, "Waiting", "openai")]


def test_screenshot_with_three_states(qtbot, make_panel, outbox, artifacts_dir):
    waiting = enqueue(outbox, "Summarise the meeting notes I pasted above into five bullet "
                              "points, keeping the action items and who owns them.", "openai",
                      "gpt-4o-mini")
    sent = enqueue(outbox, "What is the capital of Australia?", "anthropic")
    failed = enqueue(outbox, "Translate this paragraph to French.\nIt has two lines.", "openai")
    outbox._finish(waiting.id, OutboxState.QUEUED,
                   "Could not connect to openai: connection refused")
    outbox._finish(sent.id, OutboxState.SENT)
    outbox._finish(failed.id, OutboxState.FAILED, "openai refused the API key (401).")
    panel = make_panel(outbox)
    panel.show()
    panel.select(waiting.id)
    qtbot.waitExposed(panel)
    assert [r[1] for r in panel.rows()] == ["Waiting", "Failed", "Sent"]
    assert panel.grab().save(str(artifacts_dir / "outbox_panel.png"))


def test_the_monitor_never_probes_a_provider_for_a_conversation_that_is_local_only(scripted):
    """The window checks the providers queued items wait for; not one whose items all belong
    to conversations that are Local only now (by their own route or by the default)."""
    monitor = scripted.monitor
    monitor.watched = lambda: []  # (no open conversation asks for a provider)
    item = enqueue(scripted.service.outbox, "Private", provider="acme")
    assert monitor.providers() == ["acme"]
    scripted.settings.set("default_route", "local")
    assert monitor.providers() == []
    scripted.settings.set("default_route", "auto")
    scripted.store.set_conversation_route(item.conversation_id, "local")
    assert monitor.providers() == []
    assert scripted.service.outbox.get(item.id).state is OutboxState.FAILED


# -- the window sends its outbox -----------------------------------------------------------------
def use_provider(app, name: str, url: str, route: str) -> None:
    """``name`` at ``url`` (the same name when the provider comes back), chosen with ``route``."""
    app.registry.add(ProviderConfig(name, "openai", url, "test-model"), replace=True)
    window = app.window
    window.target_picker.refresh(f"provider:{name}")
    window.route_picker.setCurrentIndex(window.route_picker.findData(route))
    window.route_picker.activated.emit(window.route_picker.currentIndex())


def provider_back(app, name: str, url: str) -> None:
    """The provider can be reached (again: the same name), and the OS says the network
    changed."""
    app.registry.add(ProviderConfig(name, "openai", url, "test-model"), replace=True)
    app.connectivity.network_changed()
    app.monitor.tick()


def test_the_outbox_count_drops_as_each_item_is_sent_not_at_the_end_of_the_pass(qtbot,
                                                                               scripted):
    """Two items wait; the first is answered while the second's answer is still streaming:
    the status bar says so then (it kept saying "2 waiting" until the whole pass ended, and a
    pass lasts as long as its slowest answer)."""
    app, button = scripted, scripted.window.outbox_button
    service = app.service
    items = []
    for prompt in ("First report", "Second report"):
        turn = service.start_turn(prompt, model="test-model")
        app.store.set_conversation_route(turn.conversation_id, "cloud")
        items.append(service.queue_for_later(turn, "acme", None))
    button.refresh()
    assert button.text() == "Outbox: 2 waiting"
    service.outbox.claim(items[0].id)  # one being sent, one waiting: said apart
    button.refresh()
    assert button.text() == "Outbox: 1 sending…, 1 waiting"
    service.outbox.release(items[0].id, "back")
    with fault_server() as server:
        # the second answer: a first part, then a pause that lasts until the client goes away
        server.script([normal(), normal(chunks=("Part ", "two."), delay=25)])
        provider_back(app, "acme", server.url + "/v1")
        outbox = service.outbox
        qtbot.waitUntil(lambda: outbox.get(items[0].id).state is OutboxState.SENT and
                        len(server.chat_requests()) == 2, timeout=20000)
        qtbot.waitUntil(lambda: button.text() == "Outbox: 1 sending…", timeout=5000)
        assert app.monitor._sending  # the pass goes on: the second answer still streams
        assert outbox.get(items[1].id).state is OutboxState.SENDING
        app.window.close()
        app.shutdown()  # (the second item goes back to the queue: see the next test)


def test_closing_the_window_while_an_item_is_sent_queues_it_again(qtbot, scripted):
    """Cloud only, provider unreachable: the message waits. The provider comes back, slow; the
    window sends the item and is closed (as run_gui does on quit) while the answer streams.
    Closing is not the user's Stop: the item is queued again (it was marked sent, its reply
    "Stopped by the user." and never sent again), its part is kept as a version that says why,
    and `outpost outbox send` then sends it again with the same idempotency key."""
    from app.chat.outbox_sender import CLOSED_WHILE_SENDING

    app = scripted
    with refused_url() as down:
        use_provider(app, "acme", down + "/v1", route="cloud")
        send(qtbot, app, "The supplies, please")
        app.tasks.wait()  # (the model list the window asked for, refused too: no later GET)
    [item] = app.service.outbox.pending()
    key = item.request.idempotency_key
    whole = ("Water ", "20 L, ", "rice 5 kg.")

    def parts(store: Store) -> list:  # the answers' rows with text
        return [m for m in store.messages(item.conversation_id)
                if m.role is Role.ASSISTANT and m.content]

    with fault_server() as server:
        # the first part, then a pause that lasts until the client goes away
        server.script([normal(chunks=whole, delay=25), normal(chunks=whole)])
        provider_back(app, "acme", server.url + "/v1")
        qtbot.waitUntil(lambda: [m.content for m in parts(app.store)] == ["Water "],
                        timeout=20000)
        app.window.close()
        app.shutdown()  # as run_gui does when the app quits

        store = Store()
        outbox = Outbox(store)
        waiting = outbox.get(item.id)
        assert (waiting.state, waiting.last_error) == (OutboxState.QUEUED, CLOSED_WHILE_SENDING)
        [part] = parts(store)
        assert (part.status, part.error) == (MessageStatus.INTERRUPTED, CLOSED_WHILE_SENDING)
        store.close()

        sent = subprocess.run([sys.executable, "-m", "app.cli", "outbox", "send"],
                              capture_output=True, text=True, env=os.environ.copy(),
                              timeout=120)
        assert sent.returncode == 0, sent.stderr
        assert f"Sent item {item.id} to acme" in sent.stdout
        keys = [r.idempotency_key for r in server.chat_requests()]
    assert keys == [key, key]
    store = Store()
    assert Outbox(store).get(item.id).state is OutboxState.SENT
    answers = {m.content: m.status for m in parts(store)}
    assert answers == {"Water ": MessageStatus.INTERRUPTED,
                       "Water 20 L, rice 5 kg.": MessageStatus.COMPLETE}
    store.close()


def test_an_item_that_fails_while_its_chat_is_open_shows_it_failed(qtbot, scripted):
    """Cloud only, provider unreachable: the reply says the message is queued. The provider
    comes back and refuses the key: the item fails, and the open chat shows that at once (it
    kept showing "Queued in the outbox … it is sent once acme can be reached"), in one reply
    (the failed attempt in the queued reply's place)."""
    from tests.fault_server import unauthorized

    app = scripted
    with refused_url() as down:
        use_provider(app, "acme", down + "/v1", route="cloud")
        send(qtbot, app, "The supplies, please")
        app.tasks.wait()  # (the model list the window asked for, refused too: no later GET)
    [item] = app.service.outbox.pending()
    view = app.window.view
    assert "Queued in the outbox" in view.bubbles[-1].footer.text()
    with fault_server() as server:
        server.script([unauthorized()] * 3)
        provider_back(app, "acme", server.url + "/v1")
        qtbot.waitUntil(lambda: app.service.outbox.get(item.id).state is OutboxState.FAILED
                        and not app.monitor._sending, timeout=20000)
    footer = view.bubbles[-1].footer.text()
    assert "refused the API key" in footer and "Queued in the outbox" not in footer
    # one failure, one reply saying so (the queued one stayed, a second version saying it too)
    assert footer.startswith(f"⚠ Outbox item {item.id} failed: ")
    versions = view.bubbles[-1]._versions
    assert versions is None or len(versions.ids) == 1, versions
    app.window.close()
    app.shutdown()


def test_a_queued_chat_made_local_only_says_at_once_that_its_message_is_not_sent(qtbot,
                                                                               scripted):
    """Cloud only, provider unreachable: the reply says the message is queued. The user makes
    the open chat Local only: the reply says at once that the message is not sent and how to
    send it (it kept saying "it is sent once acme can be reached"); Auto again: that it can be
    retried."""
    app = scripted
    with refused_url() as down:
        use_provider(app, "acme", down + "/v1", route="cloud")
        send(qtbot, app, "The supplies, please")
        app.tasks.wait()  # (the model list the window asked for, refused too: no later GET)
    [item] = app.service.outbox.pending()
    view, picker = app.window.view, app.window.route_picker
    assert "Queued in the outbox" in view.bubbles[-1].footer.text()
    for route, says in (("local", "this conversation is Local only now"),
                        ("auto", "it is not any more")):
        picker.setCurrentIndex(picker.findData(route))
        picker.activated.emit(picker.currentIndex())
        footer = view.bubbles[-1].footer.text()
        assert says in footer and "Queued in the outbox" not in footer, footer
        assert f"outpost outbox retry {item.id}" in footer
    assert app.service.outbox.get(item.id).state is OutboxState.FAILED
    app.window.close()
    app.shutdown()


def test_a_queued_chat_that_follows_the_default_route_goes_with_it(qtbot, scripted):
    """Cloud only, provider unreachable, queued; the chat follows the default route (one
    from before routes were kept). Chat ▸ Default route ▸ Local only: its reply says at once
    that the message is not sent (it said it is sent once acme can be reached), and the
    status bar's count drops; Auto again: that it can be retried."""
    app = scripted
    with refused_url() as down:
        use_provider(app, "acme", down + "/v1", route="cloud")
        send(qtbot, app, "The supplies, please")
        app.tasks.wait()
    [item] = app.service.outbox.pending()
    app.store.set_conversation_route(item.conversation_id, None)
    view = app.window.view
    assert "Queued in the outbox" in view.bubbles[-1].footer.text()
    for route, says in (("local", "this conversation is Local only now"),
                        ("auto", "it is not any more")):
        [action] = [a for a in app.window.default_route_actions.actions()
                    if a.data() == route]
        action.trigger()
        footer = view.bubbles[-1].footer.text()
        assert says in footer and "Queued in the outbox" not in footer, footer
    assert app.service.outbox.get(item.id).state is OutboxState.FAILED
    assert not app.window.outbox_button.isVisible()
    app.window.close()
    app.shutdown()


def test_the_queued_banner_says_the_real_cause_and_when_the_next_try_is(qtbot, scripted):
    """Cloud only: a 429 with Retry-After 120, then a reply with no text within the
    first-token timeout. Both messages wait in the outbox, and the banner said each time
    "acme cannot be reached: … sent once acme is back". It says the cause now, and when the
    window tries again: at the time the provider asked for, or at its next check."""
    import re

    from engines.http_policy import Timeouts
    from tests.fault_server import rate_limited, slow_first_token

    app, banner = scripted, scripted.window.banner
    app.cloud_pool.timeouts = Timeouts(first_token=1, idle=5)
    clock = r"(\d{4}-\d\d-\d\d )?\d\d:\d\d:\d\d"
    with fault_server() as server:
        use_provider(app, "acme", server.url + "/v1", route="cloud")
        # (the model list the window asks for: not a chat request, not scripted)
        qtbot.waitUntil(lambda: [r.path for r in server.requests] == ["/v1/models"])
        app.tasks.wait()
        server.script([rate_limited(retry_after=120)])
        send(qtbot, app, "Report, please")
        [held] = app.service.outbox.pending()
        text = banner.label.text()
        assert "cannot be reached" not in text, text
        assert re.fullmatch(
            rf"acme was rate limiting requests and asked to wait 120 s: your message waits in "
            rf"the outbox \(item {held.id}\), and the next try is at {clock} \(not before: acme "
            r"asked to wait\)\.", text), text
        assert held.held() is not None
        server.script([slow_first_token(delay=4.0)])
        send(qtbot, app, "And the stock count")
        [late] = [i for i in app.service.outbox.pending() if i.id != held.id]
        text = banner.label.text()
        assert re.fullmatch(
            rf"acme sent no text within 1 s: your message waits in the outbox \(item "
            rf"{late.id}\), and the next try is at {clock}, when acme is checked again \(Send "
            r"now in the Outbox tries at once\)\.", text), text
    app.window.close()
    app.shutdown()


def test_the_news_of_a_pass_counts_every_answer_and_names_each_chat(qtbot, scripted):
    """Cloud only, provider down: two messages in one chat wait. One pass answers both: the
    banner said "acme answered your queued message in “…” — 1/1." (the last answer only, and
    a count of versions nobody asked about). It says how many, and in which chat."""
    app, banner = scripted, scripted.window.banner
    with refused_url() as down:
        use_provider(app, "acme", down + "/v1", route="cloud")
        send(qtbot, app, "Water report")
        send(qtbot, app, "Fuel report")
        app.tasks.wait()
    items = app.service.outbox.pending()
    assert len(items) == 2
    title = app.store.get_conversation(items[0].conversation_id).title
    with fault_server() as server:
        server.script([normal(), normal()])
        provider_back(app, "acme", server.url + "/v1")
        qtbot.waitUntil(lambda: not app.service.outbox.pending() and not app.monitor._sending,
                        timeout=20000)
        qtbot.waitUntil(lambda: "answered" in banner.label.text(), timeout=5000)
    assert banner.label.text() == f"acme answered 2 of your queued messages in “{title}”."
    from ui.outbox_button import answered_news  # (several chats: how many in each, by whom)

    assert answered_news([("A", ["acme", "acme"]), ("B", ["fault"])]) == (
        "3 of your queued messages were answered: 2 in “A” (acme), 1 in “B” (fault).")
    app.window.close()
    app.shutdown()
