"""Benchmark: does the window's event loop stay responsive while a reply streams at 2,000 tok/s?

    QT_QPA_PLATFORM=offscreen python -m bench.gui_event_loop [--seconds 10] [--trials 3]
    xvfb-run -a python -m bench.gui_event_loop          # a real X screen

The real window (``ui.app.OutpostApp``, shown and painted) with a scripted local engine that
streams Markdown (paragraphs, code blocks, lists) one token per delta at ``--rate`` tokens a
second for ``--seconds`` (a generator that sleeps to keep the rate, as a fast model's decode
thread would). A 1 ms ``QTimer`` heartbeat on the GUI thread records when it fires; the gaps
between beats say how long the loop was blocked. Alternating with each streaming trial, the same
window sits idle for as long (the anchor). Printed for each: p50 / p95 / max gap, and the share
of the time spent in gaps longer than 16 ms (one frame at 60 Hz); the stream is split into its
start (the first 200 ms: the send, the prompt saved, the bubbles built, the first flush), the
streaming itself, and its end (from the last token to 300 ms after the turn is idle: the
finished reply shown whole). Ratios are against the idle anchor of the same run; the load
average is printed before and after, and the rate the reply was really streamed at. Target on a
quiet machine: streaming p95 <= 16 ms, max <= 50 ms.
Nothing here runs in the test suite.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

BLOCKED_MS = 16.0
END_TAIL_S = 0.3  # what is measured after the turn is idle (a render left for later)
START_S = 0.2  # the send itself: the prompt saved, two bubbles built, the first flush


def markdown_tokens(count: int) -> list[str]:
    """``count`` tokens of a Markdown reply: paragraphs, fenced code, lists, a table now and
    then; a token is a word with its trailing space (about 4-6 characters)."""
    parts: list[str] = []
    n = 0
    while True:
        kind = n % 6
        if kind == 2:
            parts.append(f"```python\ndef step_{n}(items):\n    total = 0\n"
                         f"    for i, item in enumerate(items):\n        total += i * item\n"
                         f"    return total  # {n}\n```")
        elif kind == 4:
            parts.append("\n".join(f"- item {n}.{k}: the **keeper** checks `lamp_{k}` and "
                                   f"writes it down" for k in range(4)))
        elif kind == 5 and n % 12 == 11:
            parts.append("| step | what |\n|---|---|\n| 1 | climb |\n| 2 | light |")
        else:
            parts.append(f"Paragraph {n}: the lighthouse keeper walks the stairs, counts the "
                         "steps and *watches* the sea, as he has done every night for "
                         "thirty years, while the wind keeps on at the windows.")
        n += 1
        text = "\n\n".join(parts)
        tokens = re.findall(r"\S+\s*|\s+", text)
        if len(tokens) >= count:
            return tokens[:count]


@dataclass
class Beats:
    """The heartbeat's firing times (perf_counter seconds) and the stream's landmarks."""

    times: list[float] = field(default_factory=list)
    sent: float = 0.0
    first_token: float = 0.0
    last_token: float = 0.0
    idle: float = 0.0

    def gaps(self, start: float, end: float) -> list[float]:
        """Gaps (ms) between consecutive beats that began in [start, end): a long block is
        counted where it began."""
        t = self.times
        return [(b - a) * 1000 for a, b in zip(t, t[1:]) if start <= a < end]


def summary(gaps: list[float]) -> dict:
    if not gaps:
        return {"p50": 0.0, "p95": 0.0, "max": 0.0, "blocked": 0.0, "n": 0}
    ordered = sorted(gaps)
    total = sum(gaps)
    return {"p50": statistics.median(ordered),
            "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
            "max": ordered[-1],
            "blocked": 100 * sum(g for g in gaps if g > BLOCKED_MS) / total if total else 0.0,
            "n": len(gaps)}


class Bench:
    def __init__(self, rate: float, seconds: float):
        # deferred: the QApplication first, then the window's modules
        from PySide6.QtCore import QEventLoop, Qt, QTimer

        from app.config.settings import Settings
        from tests.support import ScriptedEngine  # no pytest in it: the window's own path
        from ui.app import OutpostApp

        self.rate, self.seconds = rate, seconds
        self.tokens = markdown_tokens(int(rate * seconds))
        self.engine = ScriptedEngine()
        self.engine.context_window = 131072  # a reply of tens of thousands of tokens fits
        settings = Settings()
        settings.set("max_tokens", 32768)
        self.app = OutpostApp(settings=settings, engine_factory=self.engine.factory)
        window = self.app.window
        window.resize(1200, 860)
        ready = QEventLoop()
        self.app.loader.model_ready.connect(ready.quit)
        self.app.start()
        if self.app.loader.active is None:
            QTimer.singleShot(20000, ready.quit)
            ready.exec()
        self.beats = Beats()
        self.heart = QTimer()
        self.heart.setTimerType(Qt.TimerType.PreciseTimer)
        self.heart.setInterval(1)
        self.heart.timeout.connect(self._beat)
        self._loop = QEventLoop()

    def _beat(self) -> None:
        self.beats.times.append(time.perf_counter())

    def play(self, request, cancel):
        """The scripted reply: one delta per token, sleeping to keep the rate."""
        from app.domain.messages import Finished, FinishReason, TextDelta, Usage

        start = self.beats.first_token = time.perf_counter()
        for i, token in enumerate(self.tokens):
            ahead = start + i / self.rate - time.perf_counter()
            if ahead > 0.0005:
                time.sleep(ahead)
            if cancel.is_set():
                break
            yield TextDelta(token)
        self.beats.last_token = time.perf_counter()
        yield Usage(40, len(self.tokens))
        yield Finished(FinishReason.STOP, ttft_ms=5.0, tokens_per_s=self.rate)

    def _fresh(self) -> None:
        self.app.window.controller.new_conversation()
        self._settle(0.3)

    def _settle(self, seconds: float) -> None:
        from PySide6.QtCore import QTimer  # deferred: see __init__

        QTimer.singleShot(int(seconds * 1000), self._loop.quit)
        self._loop.exec()

    def idle(self) -> dict:
        self._fresh()
        self.beats = Beats()
        self.heart.start()
        self._settle(self.seconds)
        self.heart.stop()
        return {"all": summary(self.beats.gaps(0, float("inf")))}

    def stream(self) -> dict:
        from PySide6.QtCore import QTimer  # deferred: see __init__

        self._fresh()
        window = self.app.window
        controller = window.controller
        self.engine.script(self.play)
        self.beats = Beats()
        done = threading.Event()

        def on_state(state: str) -> None:
            if state == "idle" and not done.is_set():
                done.set()
                self.beats.idle = time.perf_counter()
                QTimer.singleShot(int(END_TAIL_S * 1000), self._loop.quit)

        def on_error(error) -> None:
            print(f"the turn failed: {error}", file=sys.stderr)
            self._loop.quit()

        controller.state_changed.connect(on_state)
        controller.error_occurred.connect(on_error)
        self.heart.start()
        self._settle(0.1)
        self.beats.sent = time.perf_counter()
        window.composer.edit.setPlainText("Tell me about the lighthouse, at length.")
        window.composer.edit.submit_requested.emit()
        QTimer.singleShot(int((self.seconds * 4 + 60) * 1000), self._loop.quit)  # a safety net
        self._loop.exec()
        self.heart.stop()
        controller.state_changed.disconnect(on_state)
        controller.error_occurred.disconnect(on_error)
        bubble = window.view.last_bubble()
        if not done.is_set() or bubble is None or bubble.text != "".join(self.tokens):
            raise SystemExit("the reply did not arrive whole: the benchmark is void")
        b = self.beats
        return {"rate": len(self.tokens) / max(b.last_token - b.first_token, 1e-9),
                "start": summary(b.gaps(b.sent, b.sent + START_S)),
                "stream": summary(b.gaps(b.sent + START_S, b.last_token)),
                "end": summary(b.gaps(b.last_token, float("inf"))),
                "all": summary(b.gaps(b.sent, float("inf")))}

    def close(self) -> None:
        self.app.shutdown()


def _line(name: str, s: dict, anchor: dict | None) -> str:
    text = (f"  {name:<24} p50 {s['p50']:6.2f} ms  p95 {s['p95']:7.2f} ms  max {s['max']:7.1f} ms"
            f"  blocked>16ms {s['blocked']:5.1f} %")
    if anchor is not None:
        text += (f"   x idle: p95 {s['p95'] / max(anchor['p95'], 1e-6):5.1f}, "
                 f"max {s['max'] / max(anchor['max'], 1e-6):5.1f}")
    return text


def _merge(runs: list[dict], key: str) -> dict:
    """The median over trials of each figure (max: the worst trial)."""
    parts = [r[key] for r in runs]
    merged = {k: statistics.median(p[k] for p in parts) for k in ("p50", "p95", "blocked")}
    merged["max"] = max(p["max"] for p in parts)
    return merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=2000.0, help="tokens a second")
    parser.add_argument("--seconds", type=float, default=10.0, help="of streaming (and idle)")
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args(argv)
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ["OUTPOST_HOME"] = tempfile.mkdtemp(prefix="outpost-bench-")
    from PySide6.QtWidgets import QApplication  # deferred: a GUI benchmark, one QApplication

    qt = QApplication.instance() or QApplication(sys.argv[:1])
    load_before = os.getloadavg()
    bench = Bench(args.rate, args.seconds)
    idle_runs, stream_runs = [], []
    try:
        for trial in range(args.trials):
            order = ("idle", "stream") if trial % 2 == 0 else ("stream", "idle")
            for name in order:
                result = bench.idle() if name == "idle" else bench.stream()
                (idle_runs if name == "idle" else stream_runs).append(result)
                s = result["all"] if name == "idle" else result["stream"]
                print(f"trial {trial + 1} {name:<6} p95 {s['p95']:6.2f} ms  max "
                      f"{s['max']:6.1f} ms  load {os.getloadavg()[0]:.2f}", flush=True)
    finally:
        bench.close()
    load_after = os.getloadavg()
    print(f"\nplatform {qt.platformName()}; {os.cpu_count()} CPUs; load average (1/5/15 min) "
          f"before {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, after "
          f"{load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f}")
    rates = ", ".join(f"{r['rate']:.0f}" for r in stream_runs)
    print(f"{len(bench.tokens)} tokens at {args.rate:.0f} tok/s ({args.seconds:.0f} s; as "
          f"streamed: {rates} tok/s), 1 ms heartbeat, {args.trials} alternating trials "
          "(medians; max: the worst trial)")
    anchor = _merge(idle_runs, "all")
    print(_line("idle (anchor)", anchor, None))
    print(_line("start (send, 1st flush)", _merge(stream_runs, "start"), anchor))
    print(_line("streaming", _merge(stream_runs, "stream"), anchor))
    print(_line("end of stream", _merge(stream_runs, "end"), anchor))
    print(_line("stream + end", _merge(stream_runs, "all"), anchor))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
