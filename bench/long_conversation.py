"""Benchmark: opening and scrolling a long conversation in the real window, the view that builds
only what is near the screen against building every message (the view before issue 16).

    QT_QPA_PLATFORM=offscreen python -m bench.long_conversation [--trials 3] [--steps 60]
    xvfb-run -a python -m bench.long_conversation          # a real X screen

The real window (``ui.app.OutpostApp`` with a scripted engine, 1000x760, shown) and a real
database: chats of 10, 40, 1,000 and 5,000 messages written through the app's Store
(user/assistant pairs with Markdown, code blocks and tables: the long-conversation tests).
The seeding is ``seed_conversation`` in ``tests/ui/test_long_conversation.py``.

- open: from choosing the chat to its first paint (the window grabbed), the bottom on screen.
  "now" with the render cache emptied first (a chat not seen since the app started), and
  "now, again" (seen before: HTML from the cache).
- scroll step: a wheel notch on the chat (60 px up, then down when an end is reached), the
  events it causes handled, the chat's viewport painted (grabbed); p50 and p95 over ``--steps``
  steps, starting at the bottom and going up, notch after notch with no pause (the work a
  notch starts counts against it). Three passes per chat, each from where the last ended:
  1. just opened (at 10 messages, the three above the first screen are built on the way);
  2. paced: a notch every ``--every`` ms (16: a fast spin of the wheel) with the event loop
     running, ms from when each was due to its frame painted: what the user waits for; the
     work a notch starts runs after its frame, before the next notch if it fits;
  3. again as in 1 ("a second pass"): at 10 every message is built by then, so this compares
     the work per notch against a chat where scrolling builds nothing.

Last, the floor of the third pass for any view: what laying out a reply's text and rendering
its Markdown cost with no widget at all, and how many notches at 1,000 bring a message in.

"before" is the old way, kept here as the anchor (``show_every_message``: one bubble per message,
each rendered, at once). Alternating trials; ratios against the 10-message chat and against
"before" of the same run; the load average printed before and after. Wall-clock times, and
this process's CPU time beside them, which a busy machine changes less. Before at 5,000
messages takes minutes and is left out unless ``--before-at-5000``. Nothing here runs in the
test suite.
Targets (issue 16): open 1,000 <= 150 ms; scroll p95 at 1,000 <= 1.2x at 10 (which of the
three passes reads it: README, "Long conversations").
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

NOTCH = 120  # one wheel notch (Qt's angleDelta)


def show_every_message(view, messages, versions) -> None:
    """The old ``ConversationView.show_messages``: every message built and rendered at once
    (no render cache), laid out when the event loop next runs."""
    from app.domain.messages import MessageStatus  # deferred: after the QApplication
    from ui.message_bubble import MessageBubble

    view.clear()
    # nothing of the new view's left to run: a drop the last chat's scrolling had timed would
    # otherwise drop most of these (and scrolling would then build them again)
    view._fill_timer.stop()
    view._drop_timer.stop()
    for message in messages:  # the old add_bubble: shown (and laid out) at the next turn
        bubble = MessageBubble(message.role, view._content)
        view._layout.insertWidget(view._layout.count() - 1, bubble)
        view.bubbles.append(bubble)
        bubble.set_text(message.content, message.segments)  # no id yet: rendered, not cached
        if not message.content and message.status is not MessageStatus.COMPLETE:
            bubble.show_no_reply()
        bubble.show_message_state(message)
    view.show_versions(versions or {})


def settle(qt) -> None:
    """What the event loop does after an event: the posted events, then the widgets deleted
    with ``deleteLater`` (which ``processEvents`` alone never deletes: without them, every
    bubble ever dropped stayed a hidden child of the chat and each later notch cost ~50 %
    more, a drift the running app does not have)."""
    from PySide6.QtCore import QEvent  # deferred: after the QApplication

    qt.processEvents()
    qt.sendPostedEvents(None, QEvent.Type.DeferredDelete.value)


def open_chat(qt, app, conversation: str, way: str) -> tuple[float, float]:
    """(wall ms, this process's CPU ms) from choosing ``conversation`` to its first paint."""
    from ui.render_cache import RENDERED

    window = app.window
    if way == "now":
        RENDERED.clear()
    started, cpu = time.perf_counter(), time.process_time()
    if way == "before":
        controller = app.controller
        messages = app.store.branch(conversation)
        controller.conversation_id = conversation
        show_every_message(window.view, messages, controller.versions())
        window._show_title()
    else:
        window._on_conversation_selected(conversation)
    settle(qt)
    window.grab()
    return (time.perf_counter() - started) * 1000, (time.process_time() - cpu) * 1000


class FrameClock:
    """When the window's next frame is painted: an event filter on the window (not on the
    application: a Python filter there sees every event of every widget, ~3 us each, which
    charged a chat with more widgets for the measuring itself) that handles the window's
    UpdateRequest (its repaint) itself and notes when it is done."""

    def __init__(self, window):
        from PySide6.QtCore import QEvent, QObject  # deferred: after the QApplication

        clock = self

        class Filter(QObject):
            def eventFilter(self, watched, event) -> bool:  # noqa: N802 (Qt naming)
                if watched is window and event.type() == QEvent.Type.UpdateRequest:
                    watched.event(event)
                    if clock.painted is None:
                        clock.painted = time.perf_counter()
                    return True
                return False

        self.painted: float | None = None
        self.filter = Filter()


class Wheel:
    """Wheel notches over the middle of the chat: up until the top, then down until the
    bottom, and so on."""

    def __init__(self, view):
        from PySide6.QtCore import QPointF  # deferred: after the QApplication

        self.view, self.up = view, True
        self.centre = QPointF(view.viewport().width() / 2, view.viewport().height() / 2)

    def next_notch(self):
        """The next notch's event (to send to the chat's viewport)."""
        from PySide6.QtCore import QPoint, Qt
        from PySide6.QtGui import QWheelEvent

        bar = self.view.verticalScrollBar()
        if self.up and bar.value() == bar.minimum() or \
                not self.up and bar.value() == bar.maximum():
            self.up = not self.up
        viewport = self.view.viewport()
        return QWheelEvent(self.centre, viewport.mapToGlobal(self.centre), QPoint(),
                           QPoint(0, NOTCH if self.up else -NOTCH), Qt.MouseButton.NoButton,
                           Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)


def scroll_steps(qt, view, steps: int) -> list[tuple[float, float, bool, float]]:
    """Per wheel notch: (wall ms, CPU ms) to handle it and all it causes, the viewport painted;
    whether it built or dropped a bubble; wall ms until its frame was painted (the window's
    first repaint after it: what the user waits for; a build or a drop the notch starts runs
    after that frame, in the same event-loop pass, so the wall ms counts it and this does not).
    """
    times, wheel = [], Wheel(view)
    clock = FrameClock(view.window())
    view.window().installEventFilter(clock.filter)
    try:
        for _ in range(steps):
            event = wheel.next_notch()
            built, shown = view.built, len(view.bubbles)
            clock.painted = None
            started, cpu = time.perf_counter(), time.process_time()
            qt.sendEvent(view.viewport(), event)
            settle(qt)
            view.viewport().grab()
            ended = time.perf_counter()
            times.append(((ended - started) * 1000, (time.process_time() - cpu) * 1000,
                          view.built != built or len(view.bubbles) != shown,
                          ((clock.painted or ended) - started) * 1000))
    finally:
        view.window().removeEventFilter(clock.filter)
    return times


def paced_steps(qt, view, steps: int, every_ms: int) -> list[float]:
    """Wheel notches as a hand sends them, one every ``every_ms`` ms while the event loop
    runs (so the work a notch starts can run before the next one comes); per notch, ms from
    when it was due to its frame painted (a notch sent late, behind work, counts its wait)."""
    from PySide6.QtCore import QEventLoop, Qt, QTimer

    wheel, latencies = Wheel(view), []
    clock, loop, timer = FrameClock(view.window()), QEventLoop(), QTimer()
    timer.setTimerType(Qt.TimerType.PreciseTimer)
    timer.setInterval(every_ms)
    started, due = time.perf_counter(), []

    def notch() -> None:
        if clock.painted is not None and due:  # the last notch's frame
            latencies.append((clock.painted - due[-1]) * 1000)
        elif due:
            latencies.append((time.perf_counter() - due[-1]) * 1000)  # not painted yet
        if len(due) == steps:
            timer.stop()
            loop.quit()
            return
        event = wheel.next_notch()
        due.append(started + (len(due) + 1) * every_ms / 1000)
        clock.painted = None
        qt.sendEvent(view.viewport(), event)

    timer.timeout.connect(notch)
    view.window().installEventFilter(clock.filter)
    try:
        timer.start()
        loop.exec()
    finally:
        view.window().removeEventFilter(clock.filter)
    return latencies


def layout_floor(view, messages, count: int = 40) -> tuple[float, float]:
    """(p50 ms to lay out a reply's text, p50 ms to render its Markdown) over the replies
    among the first ``count`` messages of ``messages``: the text laid out at a message's width
    in a bare QTextDocument, from its HTML (rendered beforehand), no widget at all. Any view
    that shows a message it has not shown yet lays its text out on the GUI thread, in one go
    (Qt lays a document out whole to know its height, and a thread would hold the GIL
    throughout); scrolling at 1,000 messages brings a new one every notch or two, a built
    10-message chat never does. Replies, not prompts: half the messages, a third of the notches,
    and so what the p95 sees (a prompt costs a fraction of a reply)."""
    from PySide6.QtGui import QTextDocument  # deferred: after the QApplication

    from app.domain.messages import Role
    from ui.message_text import message_html

    body = view.bubbles[-1].body
    width = body.viewport().width()
    layouts, renders = [], []
    for message in messages[:count]:
        if message.role is not Role.ASSISTANT:
            continue
        started = time.perf_counter()
        html = message_html(message.role, message.content, message.segments)
        renders.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        document = QTextDocument()
        document.setDefaultFont(body.font())
        document.setDocumentMargin(0)
        document.setHtml(html)
        document.setTextWidth(width)
        document.size()
        layouts.append((time.perf_counter() - started) * 1000)
    return statistics.median(layouts), statistics.median(renders)


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) > 1 else values[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--before-at-5000", action="store_true")
    parser.add_argument("--every", type=int, default=16,
                        help="ms between notches in the paced scroll (default 16: a fast spin)")
    args = parser.parse_args(argv)
    os.environ["OUTPOST_HOME"] = tempfile.mkdtemp(prefix="outpost-bench-")
    from PySide6.QtWidgets import (
        QApplication,  # deferred: one QApplication, after the home
    )

    from app.config.settings import Settings
    from tests.support import ScriptedEngine
    from tests.ui.test_long_conversation import seed_conversation
    from ui.app import OutpostApp

    qt = QApplication.instance() or QApplication([])
    engine = ScriptedEngine()
    app = OutpostApp(settings=Settings(), engine_factory=engine.factory)
    app.window.resize(1000, 760)
    app.start()
    profile = app.window.profile_name
    sizes = (10, 40, 1000, 5000)
    chats = {n: seed_conversation(app.store, n, profile=profile, title=f"{n} messages")
             for n in sizes}
    elsewhere = seed_conversation(app.store, 2, profile=profile, title="elsewhere")
    app.window.refresh_sidebar()
    load_before = os.getloadavg()
    reads: dict[int, list[float]] = {}
    opens: dict[tuple[str, int], list[tuple[float, float]]] = {}
    scrolls: dict[tuple[str, int | str], list[tuple[float, float, bool, float]]] = {}
    paced: dict[tuple[str, int], list[float]] = {}
    ways = ("now", "now, again", "before")
    for trial in range(args.trials):
        order = ways if trial % 2 == 0 else ways[::-1]
        for size in sizes:
            started = time.perf_counter()  # what the controller reads to open a chat
            app.store.branch(chats[size])
            app.store.messages(chats[size])
            reads.setdefault(size, []).append((time.perf_counter() - started) * 1000)
            for way in order:
                if way == "before" and size == 5000 and not args.before_at_5000:
                    continue
                open_chat(qt, app, elsewhere, "now")  # each open is a real one
                if way == "now, again":
                    open_chat(qt, app, chats[size], "now")
                    open_chat(qt, app, elsewhere, "now")
                ms, cpu = open_chat(qt, app, chats[size],
                                    "cached" if way == "now, again" else way)
                opens.setdefault((way, size), []).append((ms, cpu))
                if size in (10, 1000) and way != "now, again":
                    while app.window.view.filling:  # the margin built, as after a moment
                        settle(qt)
                    scrolls.setdefault((way, size), []).extend(
                        scroll_steps(qt, app.window.view, args.steps))
                    paced.setdefault((way, size), []).extend(
                        paced_steps(qt, app.window.view, args.steps, args.every))
                    settle(qt)
                    scrolls.setdefault((way, f"{size} warm"), []).extend(
                        scroll_steps(qt, app.window.view, args.steps))
                print(f"  trial {trial + 1} {way:<10} {size:>5} messages: open {ms:8.1f} ms "
                      f"({cpu:.1f} ms CPU); load {os.getloadavg()[0]:.2f}", flush=True)
    load_after = os.getloadavg()
    print(f"\nload average before {load_before[0]:.2f} {load_before[1]:.2f} "
          f"{load_before[2]:.2f}, after {load_after[0]:.2f} {load_after[1]:.2f} "
          f"{load_after[2]:.2f} ({os.cpu_count()} CPUs); {args.trials} alternating trials")
    for clock, name in ((0, "wall ms"), (1, "CPU ms of this process")):
        print(f"open, median {name} (x: against 'before' at the same size)")
        for size in sizes:
            before = [t[clock] for t in opens.get(("before", size), [])]
            line = f"  {size:>5} messages:"
            for way in ways:
                if (way, size) in opens:
                    median = statistics.median(t[clock] for t in opens[(way, size)])
                    ratio = f" ({median / statistics.median(before):.3f}x)" if before and \
                        way != "before" else ""
                    line += f"  {way} {median:8.1f}{ratio}"
            print(line)
    print("of which the store (the path, and every message for the versions: "
          "ChatController.open_conversation), median ms: " +
          ", ".join(f"{size:,} messages {statistics.median(reads[size]):.1f}"
                    for size in sizes))
    print(f"scroll step, {args.steps} wheel notches a trial (ms; ratio: p95 at 1,000 against "
          "p95 at 10, same way)")
    for clock, name in ((0, "wall"), (1, "CPU"), (3, "to the frame")):
        for way in ("now", "before"):
            small = [t[clock] for t in scrolls[(way, 10)]]
            large = [t[clock] for t in scrolls[(way, 1000)]]
            print(f"  {name:<12} {way:<7} 10: p50 {statistics.median(small):6.2f} "
                  f"p95 {p95(small):6.2f};  1,000: p50 {statistics.median(large):6.2f} "
                  f"p95 {p95(large):6.2f};  ratio {p95(large) / p95(small):5.2f}")
    print("  a second pass of notches, each chat as the first pass left it (at 10 every "
          "message is built by then):")
    for way in ("now", "before"):
        small = [t[0] for t in scrolls[(way, "10 warm")]]
        large = [t[0] for t in scrolls[(way, "1000 warm")]]
        print(f"  wall         {way:<7} 10: p50 {statistics.median(small):6.2f} "
              f"p95 {p95(small):6.2f};  1,000: p50 {statistics.median(large):6.2f} "
              f"p95 {p95(large):6.2f};  ratio {p95(large) / p95(small):5.2f}")
    print(f"paced: a notch every {args.every} ms with the event loop running, ms from when it "
          "was due to its frame painted (ratio: p95 at 1,000 against p95 at 10)")
    for way in ("now", "before"):
        small, large = paced[(way, 10)], paced[(way, 1000)]
        print(f"  {way:<7} 10: p50 {statistics.median(small):6.2f} p95 {p95(small):6.2f} "
              f"max {max(small):6.2f};  1,000: p50 {statistics.median(large):6.2f} "
              f"p95 {p95(large):6.2f} max {max(large):6.2f};  ratio "
              f"{p95(large) / p95(small):5.2f}")
    print("the 'now' notches at 1,000 that built or dropped a bubble, and the others (wall ms):")
    for label, changed in (("built or dropped", True), ("the others", False)):
        part = [t[0] for t in scrolls[("now", 1000)] if t[2] is changed]
        if part:
            print(f"  {label:<17} {len(part):4d} notches: p50 {statistics.median(part):6.2f} "
                  f"p95 {p95(part):6.2f}")
    open_chat(qt, app, chats[1000], "now")
    layout, render = layout_floor(app.window.view, app.store.branch(chats[1000]))
    second = scrolls[("now", "1000 warm")]
    share = sum(t[2] for t in second) / len(second)
    anchor = p95([t[0] for t in scrolls[("now", "10 warm")]])
    print(f"the floor of the second pass, any view (no widget at all): a reply's text laid "
          f"out p50 {layout:.2f} ms, its Markdown rendered {render:.2f} ms; {share:.0%} of the "
          f"notches at 1,000 brought a message in (half of them a reply), none at 10 (p95 "
          f"{anchor:.2f} ms): "
          f"at least {(anchor + layout) / anchor:.2f}x with the HTML rendered ahead elsewhere, "
          f"{(anchor + layout + render) / anchor:.2f}x rendering it while scrolling")
    app.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
