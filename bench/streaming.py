"""Benchmark: GUI time per flush of a streaming reply, at its start against at its end.

    QT_QPA_PLATFORM=offscreen python -m bench.streaming [--tokens 4000] [--trials 5]

A reply bubble of the real window's kind (``ui.message_bubble.MessageBubble``) receives a
long Markdown reply (paragraphs, code blocks, tables) a flush at a time, 8 tokens a flush (what
33 ms of 2,000 tok/s gives, rounded up). Each trial times every flush; the medians of the first
and the last 100 flushes are compared (target: ratio <= 1.5, flat whatever the reply's length).
Alternating with it, the same reply is streamed the way the window did before (the whole
reply's HTML set at every flush), as the anchor. Prints the medians and the ratios, and the
machine's load; nothing here runs in the test suite.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

from app.domain.messages import Role

WORDS_PER_TOKEN = 0.75


def reply(tokens: int) -> list[str]:
    from tests.ui.test_streaming_render import long_reply  # the same reply as the test

    text = long_reply(max(1, int(tokens * WORDS_PER_TOKEN / 30)))
    step = max(1, len(text) // (tokens // 8))
    return [text[i:i + step] for i in range(0, len(text), step)]


def stream(bubble, pieces, whole: bool) -> list[float]:
    from ui.markdown import IncrementalMarkdown  # deferred: needs the QApplication first

    times, incremental, text = [], IncrementalMarkdown(), ""
    for piece in pieces:
        started = time.perf_counter()
        if whole:  # before: the whole reply's HTML at every flush
            text += piece
            bubble.body.setHtml(incremental.update(text))
        else:
            bubble.append_text(piece)
        bubble.body.document().size()  # lay it out, as painting would
        times.append((time.perf_counter() - started) * 1000)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=4000)
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args(argv)
    from PySide6.QtWidgets import QApplication  # deferred: a GUI benchmark, one QApplication

    from ui.message_bubble import MessageBubble

    app = QApplication.instance() or QApplication([])
    pieces = reply(args.tokens)
    results = {"now": ([], []), "before": ([], [])}
    for trial in range(args.trials):
        for name in (("now", "before") if trial % 2 == 0 else ("before", "now")):
            bubble = MessageBubble(Role.ASSISTANT)
            bubble.resize(700, 600)
            times = stream(bubble, pieces, whole=name == "before")
            results[name][0].extend(times[:100])
            results[name][1].extend(times[-100:])
            bubble.deleteLater()
            app.processEvents()
    print(f"load average {os.getloadavg()[0]:.2f}; {len(pieces)} flushes of a "
          f"~{args.tokens}-token reply; {args.trials} alternating trials")
    for name, (first, last) in results.items():
        a, b = statistics.median(first), statistics.median(last)
        print(f"  {name:<7} first 100 flushes {a:7.2f} ms, last 100 {b:7.2f} ms: "
              f"ratio {b / a:5.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
