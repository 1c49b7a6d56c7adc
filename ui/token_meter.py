"""The composer's live meter: prompt tokens of the draft (with the conversation it joins), a
gauge of the context window it fills, and the cost estimate before sending.

The same quota check the send makes runs with the count, dry (nothing reserved: see
``TurnPipeline.measure``): the meter shows the reply tokens a quota leaves, and the cost bound
for them, and says in the quota's own words when the next send would be refused (the gauge
red); a rate limit's refusal is checked again once its wait is over.

The prompt counted is the one the send makes: fitted to the window of the model that will see
it (the oldest turns left out, said: "4 oldest messages left out"), and, when the connection
state decides where the message goes (Offline mode, the provider known to be unreachable), the
meter says so on a line of its own, counted for the model that would answer.

Counting runs in the background (``TaskRunner``), a quarter second after the last keystroke, one
count at a time: typing or pasting 100,000 characters never waits for a tokenizer.
"""
from __future__ import annotations

from typing import Callable

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QWidget

from app.domain.context import LeftOut
from ui import theme
from ui.errors import window_words

DEBOUNCE_MS = 250


def _unbroken(phrase: str) -> str:
    """``phrase`` kept on one line when the meter wraps (no-break spaces): "reply)" alone on
    the second line read as a fault."""
    return phrase.replace(" ", "\u00a0")


class TokenMeter(QWidget):
    def __init__(self, tasks, prepare: Callable[[str], Callable[[], dict | None] | None],
                 parent: QWidget | None = None):
        """``prepare(draft)`` (GUI thread) -> a job or None; the job (run off the GUI thread)
        -> ``Measure.as_dict()`` ({"tokens", "exact", "window", "max_tokens", "cost", and
        the quotas' "asked", "limit", "refused", "retry_s", "instead", the fit's "left_out",
        the connection's "goes"}) or None."""
        super().__init__(parent)
        self.tasks, self.prepare = tasks, prepare
        # wraps to a second line (a third at the narrowest window) rather than end in "…":
        # cut at the default size, "… 4,096 context (with 12 for the rep…" hid why the
        # count was over the window. A label sized to its text on one line made the window
        # wider than the user had made it; a wrapping one is as narrow as its longest word.
        self.label = QLabel("")
        self.label.setWordWrap(True)
        self.label.setTextFormat(Qt.TextFormat.PlainText)
        theme.set_colour(self.label, "muted", "font-size:11px;")
        self.gauge = QProgressBar()
        self.gauge.setTextVisible(False)
        self.gauge.setFixedSize(90, 8)
        self.gauge.hide()
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(6)
        layout.addWidget(self.label, 1)
        layout.addWidget(self.gauge)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(DEBOUNCE_MS)
        self._timer.timeout.connect(self._count)
        self._later = QTimer(self)  # a rate limit's wait is over: the meter checks again
        self._later.setSingleShot(True)
        self._later.timeout.connect(self._count)
        self._draft = ""
        self._busy = False
        self._again = False
        self.last: dict | None = None

    def draft_changed(self, text: str) -> None:
        self._draft = text
        self._timer.start()

    def refresh(self) -> None:
        """The conversation, the target (provider, cloud model) or the local model changed:
        count again (a count under way is followed by another)."""
        self._timer.start()

    def _count(self) -> None:
        if self._busy:
            self._again = True
            return
        job = self.prepare(self._draft)
        if job is None:
            self._show(None)
            return
        self._busy = True
        self.tasks.run_in_background(job, self._show, self._failed)

    def _failed(self, _exc) -> None:
        self._busy = False
        self.label.setText("")
        self.gauge.hide()
        if self._again:  # e.g. the model it counted with was closed by a switch meanwhile
            self._again = False
            self._count()

    def _show(self, result: dict | None) -> None:
        self._busy = False
        if self._again:
            self._again = False
            self._count()
        self.last = result
        if not result:
            self.label.setText("")
            self.gauge.hide()
            return
        approx = "" if result["exact"] else "~"
        text = f"{approx}{result['tokens']:,} prompt tokens"
        window = result.get("window")
        limit = result.get("limit")
        refused = result.get("refused")
        reply = _unbroken(f"{result['max_tokens']:,} for the reply")
        if limit:  # a quota leaves fewer than asked: what the request will ask for
            reply += f", limited by the {limit}"  # (may wrap: a long line at the narrowest)
        if window:
            used = result["tokens"] + result["max_tokens"]
            text += f" · {used:,} / {window:,} context {_unbroken('(with ')}{reply})"
            self.gauge.setMaximum(window)
            self.gauge.setValue(min(used, window))
        elif limit:
            text += f" · {reply}"
        left_out = LeftOut.from_record(result.get("left_out"))
        dropped = None
        if left_out is not None:  # what the model will not see (the reply's footer says it too)
            plural = "s" if left_out.messages != 1 else ""
            dropped = f"{left_out.messages} oldest message{plural} left out"
            text += f" · {_unbroken(dropped)}"
        over = bool(window) and result["tokens"] + result["max_tokens"] > window
        if window or refused:
            if refused:  # the gauge full and red: the next send goes nowhere
                self.gauge.setMaximum(1)
                self.gauge.setValue(1)
            theme.restyle(self.gauge, lambda: theme.meter_style(over or bool(refused)))
            self.gauge.setToolTip(
                "Sending now would be refused: " + window_words(refused) if refused else
                "Over the context window" if over else
                f"{dropped} to fit the context window: the model will not see them"
                if dropped else "Context window used by this message")
            self.gauge.show()
        else:
            self.gauge.hide()
        if result.get("cost") and not refused:
            text += f" · {result['cost']}"
        if refused:
            text += f"\nSending now would be refused: {window_words(refused)}"
            if result.get("retry_s"):  # (whole seconds, and one more: the wait is over then)
                self._later.start(int(result["retry_s"] * 1000) + 1000)
        elif result.get("instead"):
            text += f"\n{window_words(result['instead'])}"
        if result.get("goes"):  # Offline mode, or the provider known to be unreachable
            text += f"\n{result['goes']}"
        self.label.setText(text)
