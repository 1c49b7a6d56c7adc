"""A reply streamed at 2,000 tokens a second keeps the window's event loop free (issue 16).

The scripted engine gives 66 deltas per 33 ms flush (2,000 tok/s), one burst per tick of the
controller's flush timer, which the test fires by hand: which deltas land in which render is
exact. Counted, never timed: how often the worker's thread wakes the GUI thread, how many renders
there are, how much HTML each parses, how often the token meter and the reply metrics are
touched, and where the finished reply's Markdown is rendered.
"""
from __future__ import annotations

import re
import statistics
import threading

import pytest
from PySide6.QtCore import QEvent, QObject
from PySide6.QtWidgets import QApplication

import ui.message_bubble as bubble_module
import ui.stream_worker as worker_module

from app.domain.messages import Role, TextDelta
from tests.support import ScriptedEngine, manual_ticker, reply
from tests.ui.test_streaming_render import long_reply
from ui.message_bubble import MessageBubble
from ui.stream_worker import TextMailbox

pytestmark = pytest.mark.gui

PER_FLUSH = 66  # 33 ms of 2,000 tok/s


def tokens_of(text: str) -> list[str]:
    """A word and the space after it: about what one token is."""
    return re.findall(r"\S+\s*|\s+", text)


class MetaCalls(QObject):
    """Counts the queued signal calls (QEvent.MetaCall) delivered to one object."""

    def __init__(self, target: QObject):
        super().__init__()
        self.target, self.count = target, 0

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 (Qt naming)
        if watched is self.target and event.type() == QEvent.Type.MetaCall:
            self.count += 1
        return False


def test_a_2000_token_a_second_stream_wakes_the_gui_per_flush_not_per_token(
        qtbot, outpost_app, monkeypatch):
    text = long_reply(60)  # paragraphs, code blocks, tables: ~1,400 tokens
    tokens = tokens_of(text)
    bursts = [tokens[i:i + PER_FLUSH] for i in range(0, len(tokens), PER_FLUSH)]
    emitted = [threading.Event() for _ in bursts]  # burst i is in the worker's hands
    go_on = [threading.Event() for _ in bursts]  # the test lets what follows burst i come

    def play(request, cancel):
        for i, burst in enumerate(bursts):
            yield from (TextDelta(t) for t in burst)
            emitted[i].set()  # runs once the worker has handed over the burst's last delta
            go_on[i].wait(30)
        yield from reply(*tokens)[-2:]  # usage, finish

    ticker = manual_ticker()
    engine = ScriptedEngine(play)
    app = outpost_app(max_tokens=4096, engine_factory=engine.factory, flush_timer=ticker)
    with qtbot.waitSignal(app.loader.model_ready, timeout=60000):
        app.start()
    window = app.window
    controller = window.controller
    # where the finished reply's Markdown is rendered: (on the GUI thread?, characters)
    whole_renders: list[tuple[bool, int]] = []
    real_render = bubble_module.render
    for module in (bubble_module, worker_module):
        monkeypatch.setattr(module, "render", lambda t: (
            whole_renders.append((threading.current_thread() is threading.main_thread(),
                                  len(t))), real_render(t))[1])
    counts = {"meter": 0, "metrics": 0}
    real_prepare = window.meter.prepare
    window.meter.prepare = lambda draft: (counts.__setitem__("meter", counts["meter"] + 1),
                                          real_prepare(draft))[1]
    real_set = window.metrics_label.setText
    window.metrics_label.setText = lambda t: (
        counts.__setitem__("metrics", counts["metrics"] + 1), real_set(t))
    calls = MetaCalls(controller)
    QApplication.instance().installEventFilter(calls)
    try:
        window.composer.edit.setPlainText("Tell me about the lighthouse.")
        window.composer.edit.submit_requested.emit()
        bubble = window.view.last_bubble()
        renders, parsed = [], []
        real_append = bubble.append_text
        bubble.append_text = lambda t: (renders.append(t), real_append(t),
                                        parsed.append(bubble.flush_html))
        for i in range(len(bursts)):
            qtbot.waitUntil(emitted[i].is_set, timeout=10000)
            qtbot.wait(1)  # whatever the worker's thread queued for the GUI thread arrives
            ticker.tick()
            assert len(renders) == i + 1  # one render a flush, with the whole burst
            assert renders[-1] == "".join(bursts[i])
            go_on[i].set()
        qtbot.waitUntil(lambda: controller.state == "idle", timeout=30000)
        qtbot.wait(10)
    finally:
        QApplication.instance().removeEventFilter(calls)
    seconds = len(tokens) / 2000
    # The worker's thread woke the GUI thread a few times for the whole turn (its end, the
    # finished reply's HTML), not once per token (old: one queued call per delta).
    assert calls.count <= 2 * len(bursts), (calls.count, len(tokens))
    assert calls.count / seconds < 100
    # every character shown and stored, once
    assert "".join(renders) == text == bubble.text
    assert app.store.messages(controller.conversation_id)[-1].content == text
    # each flush parsed the block being written, not the reply so far
    assert statistics.median(parsed[-10:]) <= 3 * statistics.median(parsed[2:12]) + 2000
    # the token meter and the reply metrics: at most once a flush (in fact once, at the end)
    assert counts["meter"] <= len(bursts) and counts["metrics"] <= len(bursts)
    # the finished reply was not rendered whole on any thread, nor set whole: the document
    # streamed block by block is the finished one (a whole render on the worker made ~200 ms
    # of garbage whose collection stalled the GUI; a whole setHtml ~100 ms of this thread)
    assert not [n for _on_gui, n in whole_renders if n >= len(text)], whole_renders
    assert bubble.kept_streamed == 1
    assert bubble.body.toPlainText().split() == real_bubble_text(text)


def real_bubble_text(text: str) -> list[str]:
    """The words of ``text`` as a bubble showing it whole reads them."""
    whole = MessageBubble(Role.ASSISTANT)
    whole.set_text(text)
    words = whole.body.toPlainText().split()
    whole.deleteLater()
    return words


def test_the_mailbox_joins_text_and_keeps_it_behind_a_seam():
    """Text put after a seal (a seam, a restart) is not taken before the GUI thread handled
    that signal, and what is taken comes joined, in order."""
    box = TextMailbox()
    for word in ("The ", "sea ", "is "):
        box.put(word)
    box.seal()  # a seam signal is on its way
    box.put("wide.")
    assert box.take() == "The sea is "  # one string for three deltas; "wide." waits
    assert box.take() == ""
    box.unseal()  # the GUI thread has handled the seam
    box.put(" Deep.")
    assert box.take() == "wide. Deep."
    box.seal()
    box.put(" Blue.")
    assert box.take_all() == " Blue."  # the turn ended: everything, and no seal left
    box.put("Next turn.")
    assert box.take() == "Next turn."
    assert box.puts == 7
