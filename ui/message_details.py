"""A reply's details: who answered and why, the parameters actually sent (after the engine's
capability map), tokens, timings and cost. Opened from the reply's "Details" link."""
from __future__ import annotations

import json

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
)

from app.config.providers import KIND_LABELS
from app.domain.adapters import adapters_from_records
from app.domain.context import LeftOut, ReplyCap
from app.domain.errors import with_kind_words
from app.domain.messages import FinishReason, Message, MessageStatus
from app.domain.test_time import SCORER_LABELS
from ui.message_text import cost_text, duration_text

_STATUS_WORDS = {MessageStatus.COMPLETE: "Complete", MessageStatus.STREAMING: "Being written",
                 MessageStatus.INTERRUPTED: "Interrupted: the answer is partial",
                 MessageStatus.ERROR: "Failed"}
_FINISH_WORDS = {FinishReason.LENGTH.value: "cut at the token limit",
                 FinishReason.CANCELLED.value: "stopped by you"}


def status_text(message: Message) -> str:
    """"Complete", "Complete, cut at the token limit", "Failed", …: how the reply ended."""
    finish = _FINISH_WORDS.get(message.finish_reason or "")
    return _STATUS_WORDS[message.status] + (f", {finish}" if finish else "")


def _votes_text(votes: dict) -> str:
    """{"42": 2, "41": 1} -> "42 (2), 41 (1)"."""
    return ", ".join(f"{answer} ({count})" for answer, count in votes.items()) or "none"


class MessageDetails(QDialog):
    keep_requested = Signal(str, int)  # reply id, candidate index: keep it as a version

    def __init__(self, message: Message, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Reply details")
        self.resize(520, 560)
        layout = QVBoxLayout(self)
        form = QFormLayout()
        params = dict(message.params or {})
        authors = " → ".join(f"{s.get('engine')} · {s.get('model')}"
                             for s in message.segments or []) or \
            f"{message.engine} · {message.model}"
        tokens = "—"
        if message.prompt_tokens is not None:
            tokens = (f"{message.prompt_tokens:,} in / {message.completion_tokens or 0:,} out"
                      + (f" ({message.cached_prompt_tokens:,} cached)"
                         if message.cached_prompt_tokens else "")
                      + (" (estimated)" if message.tokens_estimated else ""))
        rows = [
            ("Answered by", authors),
            ("Why", with_kind_words(message.route_reason or "—")),
            ("Status", status_text(message)),
            ("Tokens", tokens),
            ("Time to first token", (duration_text(message.ttft_ms) + (
                # best-of-n / self-consistency: the wait for the kept candidate to be shown
                " (until the chosen reply appeared)" if "test_time" in params else ""))
             if message.ttft_ms else "—"),
            ("Speed", f"{message.tokens_per_s:.1f} tokens/s" if message.tokens_per_s else "—"),
            ("Cost", cost_text(message) or "—"),
            ("Request id", str(params.get("idempotency_key", "—"))),
        ]
        cap = ReplyCap.from_record(params.get("reply_cap"))
        if cap is not None:  # a quota left room for a shorter reply than asked
            rows.insert(rows.index(("Tokens", tokens)) + 1, (
                "Reply limit", f"{cap.max_tokens:,} tokens: {cap.limit} ({cap.asked:,} asked, "
                               "more than was left)"))
        left_out = LeftOut.from_record(params.get("context_left_out"))
        if left_out is not None:  # the oldest turns were not sent, to fit the context window
            rows.insert(rows.index(("Tokens", tokens)) + 1, ("Left out", left_out.describe()))
        adapters = adapters_from_records(params.get("lora"))
        if adapters:
            rows.insert(1, ("LoRA adapters", ", ".join(a.label() for a in adapters)))
        if message.error:
            rows.append(("Problem", message.error))
        self.values: dict[str, str] = {}
        for title, value in rows:
            label = QLabel(value)
            label.setWordWrap(True)
            label.setTextInteractionFlags(label.textInteractionFlags() |
                                          label.textInteractionFlags().TextSelectableByMouse)
            form.addRow(title, label)
            self.values[title] = value
        layout.addLayout(form)
        kind = params.pop("engine_kind", None)
        for key in ("idempotency_key", "user"):
            params.pop(key, None)
        heading = {None: "Parameters sent",
                   "local": "Parameters the local model applied (llama.cpp's defaults for the "
                            "ones left empty)"}.get(
            kind, f"Parameters sent to the {KIND_LABELS.get(kind, kind)} API (the ones it has "
                  "no use for were not sent)")
        title = QLabel(heading)
        title.setWordWrap(True)
        layout.addWidget(title)
        self.params = QPlainTextEdit(json.dumps(params, indent=2, ensure_ascii=False))
        self.params.setReadOnly(True)
        self.params.setAccessibleName("Parameters")
        title.setBuddy(self.params)
        layout.addWidget(self.params, 1)
        picked = message.candidates
        if picked:
            winner = picked.get("winner")
            if picked.get("mode") == "best_of":
                scorer = picked.get("scorer")
                head = f"Best of {picked['n']}, scored by {SCORER_LABELS.get(scorer, scorer)}"
            else:
                head = (f"Self-consistency over {len(picked['candidates'])} of {picked['n']} "
                        f"samples{' (stopped early: decided)' if picked.get('stopped_early') else ''}"
                        f"; votes: {_votes_text(picked.get('votes') or {})}; ties: "
                        f"{picked.get('tie_rule')}")
            title = QLabel(head + (f". {picked['note']}" if picked.get("note") else ""))
            title.setWordWrap(True)
            layout.addWidget(title)
            lines = []
            for c in picked["candidates"]:
                mark = "★ kept" if c["index"] == winner else ""
                score = "" if c.get("score") is None else f"score {c['score']:.4g}"
                answer = f"answer {c['answer']!r}" if c.get("answer") is not None else ""
                facts = " · ".join(p for p in (mark, score, answer,
                                               f"seed {c.get('seed')}") if p)
                lines.append(f"#{c['index'] + 1}  {facts}\n{c['text'].strip()}")
            self.candidates = QPlainTextEdit("\n\n".join(lines))
            self.candidates.setReadOnly(True)
            self.candidates.setAccessibleName("Candidates")
            layout.addWidget(self.candidates, 1)
            # "keep this one": a candidate that did not win becomes a version of its own
            others = [c for c in picked["candidates"] if c["index"] != winner]
            if others:
                row = QHBoxLayout()
                self.candidate_picker = QComboBox()
                self.candidate_picker.setAccessibleName("Candidate to keep")
                for c in others:
                    first = " ".join(c["text"].split())[:40]
                    self.candidate_picker.addItem(f"#{c['index'] + 1}  {first}", c["index"])
                self.keep_button = QPushButton("Keep as a version")
                self.keep_button.setToolTip("Add this candidate beside the reply as another "
                                            "version (‹ › switches between them)")
                self.keep_button.clicked.connect(lambda: self.keep_requested.emit(
                    message.id, self.candidate_picker.currentData()))
                self.keep_button.clicked.connect(self.accept)
                row.addWidget(self.candidate_picker, 1)
                row.addWidget(self.keep_button)
                layout.addLayout(row)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
