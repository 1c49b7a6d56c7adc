"""The chat view: one bubble widget per message in a scroll area.

Streaming touches only the last bubble: new text is rendered incrementally (see ui.markdown) and
set on that bubble's label; the rest of the conversation is never re-laid out per token.
"""
from __future__ import annotations

import html

from PySide6.QtCore import QSizeF, Qt, QTimer, Signal, Slot
from PySide6.QtGui import QTextOption
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from app.domain.messages import Message, MessageStatus, Role
from ui import theme
from ui.markdown import IncrementalMarkdown, render

_STATUS_NOTES = {
    MessageStatus.INTERRUPTED: "⚠ interrupted — the answer is partial",
    MessageStatus.ERROR: "⚠ error",
    MessageStatus.STREAMING: "…",
}


def authors_text(message: Message) -> str:
    """Who wrote the reply: "openai · gpt-4o", or "openai · gpt-4o → local · SmolLM2" when the
    local model continued a broken cloud stream."""
    segments = message.segments or []
    if len(segments) > 1:
        return " → ".join(f"{s.get('engine')} · {s.get('model')}" for s in segments)
    return " · ".join(p for p in (message.engine, message.model) if p)


def metrics_text(message: Message) -> str:
    parts = []
    if message.engine or message.model:
        parts.append(authors_text(message))
    if message.prompt_tokens is not None:
        approx = "~" if message.tokens_estimated else ""
        tokens = f"{approx}{message.prompt_tokens} in / {approx}{message.completion_tokens or 0} out"
        if message.tokens_estimated:
            tokens += " (estimated)"
        if message.cached_prompt_tokens:
            tokens += f" ({message.cached_prompt_tokens} cached)"
        parts.append(tokens)
    if message.ttft_ms is not None:
        parts.append(f"TTFT {message.ttft_ms:.0f} ms")
    if message.tokens_per_s is not None:
        parts.append(f"{message.tokens_per_s:.1f} tok/s")
    if message.role is Role.ASSISTANT and message.prompt_tokens is not None:
        parts.append(cost_text(message))
    return "  ·  ".join(parts)


def cost_text(message: Message) -> str:
    """"free" (local), "$0.0012" (~ when estimated), or "cost unknown" — never $0 for unknown."""
    engines = {s.get("engine") for s in message.segments or []} or {message.engine}
    if engines == {"local"}:
        return "free"
    if message.cost_usd is None:
        return "cost unknown"
    approx = "~" if message.cost_estimated else ""
    if 0 < message.cost_usd < 0.0001:
        return f"{approx}< $0.0001"
    return f"{approx}${message.cost_usd:.4f}"


class MessageBody(QTextBrowser):
    """Rich text that wraps anywhere (a long URL or token never widens the chat) and is exactly
    as tall as its content: the conversation scrolls, not each message."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setOpenExternalLinks(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.setWordWrapMode(QTextOption.WrapMode.WrapAtWordBoundaryOrAnywhere)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setStyleSheet("QTextBrowser { background: transparent; }")
        self.viewport().setAutoFillBackground(False)
        self.document().setDocumentMargin(0)
        self.document().documentLayout().documentSizeChanged.connect(self._on_size_changed)
        self.setFixedHeight(self._content_height(self.document().size()))

    def _content_height(self, size: QSizeF) -> int:
        extra = self.horizontalScrollBar().sizeHint().height() \
            if self.horizontalScrollBar().isVisible() else 0
        return max(18, int(size.height()) + 4 + extra)

    @Slot(QSizeF)
    def _on_size_changed(self, size: QSizeF) -> None:
        self.setFixedHeight(self._content_height(size))


class MessageBubble(QFrame):
    """One message: a role line, the rendered body and a footer with status and metrics."""

    def __init__(self, role: Role, parent: QWidget | None = None):
        super().__init__(parent)
        self.role = role
        self.setObjectName("bubble")
        self.setStyleSheet(theme.bubble_style(role))
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 8, 12, 8)
        layout.setSpacing(4)
        self.header = QLabel({Role.USER: "You", Role.ASSISTANT: "Assistant",
                              Role.SYSTEM: "System"}[role])
        self.header.setStyleSheet(f"color:{theme.muted_text(0.3)}; font-weight:600;")
        self.body = MessageBody()
        self.footer = QLabel()
        self.footer.setStyleSheet(f"color:{theme.muted_text()}; font-size:11px;")
        self.footer.setWordWrap(True)
        self.footer.hide()
        self.message_id: str | None = None
        self.details_button = QPushButton("Details")
        self.details_button.setFlat(True)
        self.details_button.setCursor(Qt.CursorShape.PointingHandCursor)
        self.details_button.setStyleSheet("color:#0969da; font-size:11px; border:none;")
        self.details_button.setToolTip("The parameters actually sent, tokens, timings, cost "
                                       "and route of this reply")
        self.details_button.hide()
        top = QHBoxLayout()
        top.setContentsMargins(0, 0, 0, 0)
        top.addWidget(self.header)
        top.addStretch(1)
        top.addWidget(self.details_button)
        layout.addLayout(top)
        layout.addWidget(self.body)
        layout.addWidget(self.footer)
        self.text = ""
        self._incremental = IncrementalMarkdown()
        # Mid-stream continuation: the parts before the last seam, rendered once, with their
        # seam markers; the part after it streams incrementally.
        self._done_html = ""
        self._segment_start = 0
        self.seams: list[tuple[int, str]] = []

    def set_text(self, text: str, segments: list[dict] | None = None) -> None:
        self.text = text
        if self.role is Role.USER:
            self.body.setHtml("<p style='white-space:pre-wrap'>" + _escape(text) + "</p>")
            return
        if not segments or len(segments) < 2:
            self.body.setHtml(render(text))
            return
        html, self.seams = "", []
        for index, segment in enumerate(segments):
            start = segment.get("start") or 0
            end = segment.get("end")
            if index:
                label = f"{segment.get('engine')} · {segment.get('model')}"
                html += _seam_html(label, segment.get("reason") or "")
                self.seams.append((start, label))
            html += render(text[start:end if end is not None else len(text)])
        self.body.setHtml(html)

    def append_text(self, delta: str) -> None:
        self.text += delta
        self.body.setHtml(self._done_html +
                          self._incremental.update(self.text[self._segment_start:]))

    def add_seam(self, label: str, reason: str) -> None:
        """Another engine continues the reply from here: mark the seam in the bubble."""
        self._done_html += render(self.text[self._segment_start:]) + _seam_html(label, reason)
        self._segment_start = len(self.text)
        self.seams.append((len(self.text), label))
        self._incremental = IncrementalMarkdown()
        self.body.setHtml(self._done_html)

    def restart(self, note: str) -> None:
        """The reply starts over (structured output asked again): drop the text so far."""
        self.text, self._done_html, self._segment_start, self.seams = "", "", 0, []
        self._incremental = IncrementalMarkdown()
        self.set_placeholder(note)

    def set_placeholder(self, note: str) -> None:
        self.body.setHtml(f"<i style='color:{theme.muted_text()}'>{_escape(note)}</i>")

    def set_footer(self, text: str, warning: bool = False) -> None:
        color = "#b35900" if warning else theme.muted_text()
        self.footer.setStyleSheet(f"color:{color}; font-size:11px;")
        self.footer.setText(text)
        self.footer.setVisible(bool(text))

    def show_message_state(self, message: Message) -> None:
        self.message_id = message.id
        self.details_button.setVisible(message.role is Role.ASSISTANT)
        note = _STATUS_NOTES.get(message.status, "")
        if message.status is MessageStatus.INTERRUPTED and message.error:
            note = f"⚠ interrupted — {message.error}"
        elif message.status is MessageStatus.ERROR and message.error:
            note = f"⚠ {message.error}"
        metrics = metrics_text(message) if message.role is Role.ASSISTANT else ""
        picked = message.candidates
        if picked:
            n = len(picked.get("candidates") or [])
            if picked.get("mode") == "best_of":
                how = f"best of {n} by {picked.get('scorer')}"
            else:
                votes = picked.get("votes") or {}
                top = max(votes.values(), default=0)
                how = f"self-consistency: {top} of {n} agreed"
            metrics = f"{how} (Details) · {metrics}" if metrics else how
        if message.role is Role.ASSISTANT and message.finish_reason == "length" and \
                message.status is MessageStatus.COMPLETE:
            metrics = "cut at max tokens · " + metrics if metrics else "cut at max tokens"
        check = message.output_check
        if check:
            if not check.get("valid"):
                note = f"⚠ invalid JSON — {check.get('error')}" + (
                    " (raw text kept)" if message.content.strip() else "")
            else:
                metrics = ("✓ valid JSON" + (" (repaired: " + {
                    "lenient": "extracted from the text", "reask": "asked once more"}.get(
                    check.get("repair"), "") + ")" if check.get("repair") else "")
                           + (" · " + metrics if metrics else ""))
        route = f"↪ {message.route_reason}" if message.route_reason and any(
            word in message.route_reason for word in _ROUTE_WORDS_SHOWN) else ""
        text = "\n".join(p for p in (note, metrics, route) if p)
        self.set_footer(text, warning=message.status in (MessageStatus.INTERRUPTED,
                                                         MessageStatus.ERROR) or bool(
            check and not check.get("valid")))


# Route reasons worth a line under the reply: the engine was not the one the user picked.
_ROUTE_WORDS_SHOWN = ("answered locally", "continued locally", "outbox", "hedge")


def _seam_html(label: str, reason: str) -> str:
    """A thin rule with a caption: who continued the reply, and why (in the tooltip too)."""
    why = reason.split(":")[0] if reason else ""  # "openai stream broke after 412 characters …"
    return ("<table width='100%' cellspacing='0' cellpadding='0' style='margin:6px 0'><tr>"
            "<td style='border-top:1px dashed #d4a72c'></td></tr><tr><td>"
            f"<span style='color:#9a6700; font-size:11px' title='{_escape(reason)}'>"
            f"↳ continued by {_escape(label)}" + (f" ({_escape(why)})" if why else "")
            + "</span></td></tr></table>")


def _escape(text: str) -> str:
    return html.escape(text)


class ConversationView(QScrollArea):
    """Shows one conversation. Knows nothing about engines or the database."""

    details_requested = Signal(str)  # a reply's message id: show what was sent and measured

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self._content = QWidget()
        self._content.setObjectName("conversationContent")
        self._layout = QVBoxLayout(self._content)
        self._layout.setContentsMargins(16, 16, 16, 16)
        self._layout.setSpacing(10)
        self._empty = QLabel("Start a conversation: type below and press Enter.\n"
                             "Everything stays on this computer with the local model.")
        self._empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._empty.setStyleSheet(f"color:{theme.muted_text(0.5)}; font-size:14px;")
        self._layout.addWidget(self._empty)
        self._layout.addStretch(1)
        self.setWidget(self._content)
        self.bubbles: list[MessageBubble] = []
        self._follow = True
        self.verticalScrollBar().valueChanged.connect(self._on_scrolled)
        self.verticalScrollBar().rangeChanged.connect(self._on_range_changed)

    def set_empty_text(self, text: str) -> None:
        """What an empty conversation says (it depends on where messages go)."""
        self._empty.setText(text)

    def clear(self) -> None:
        for bubble in self.bubbles:
            self._layout.removeWidget(bubble)
            bubble.deleteLater()
        self.bubbles.clear()
        self._empty.show()
        self._follow = True

    def show_messages(self, messages: list[Message]) -> None:
        self.clear()
        for message in messages:
            bubble = self.add_bubble(message.role)
            bubble.set_text(message.content, message.segments)
            if not message.content and message.status is not MessageStatus.COMPLETE:
                bubble.set_placeholder("(no text)")
            bubble.show_message_state(message)

    def add_bubble(self, role: Role) -> MessageBubble:
        self._empty.hide()
        bubble = MessageBubble(role, self._content)
        bubble.details_button.clicked.connect(
            lambda: bubble.message_id and self.details_requested.emit(bubble.message_id))
        self._layout.insertWidget(self._layout.count() - 1, bubble)
        self.bubbles.append(bubble)
        self._follow = True
        return bubble

    def last_bubble(self) -> MessageBubble | None:
        return self.bubbles[-1] if self.bubbles else None

    def _on_scrolled(self, value: int) -> None:
        bar = self.verticalScrollBar()
        self._follow = value >= bar.maximum() - 24

    def _on_range_changed(self, _min: int, maximum: int) -> None:
        if self._follow:
            QTimer.singleShot(0, self._scroll_to_end)

    @Slot()
    def _scroll_to_end(self) -> None:
        self.verticalScrollBar().setValue(self.verticalScrollBar().maximum())
