"""The chat view: a bubble widget per message in a scroll area, built only near the screen.

A chat of any length opens at the bottom with a screenful of bubbles built; more are built as the
user scrolls towards them, and those far away are dropped (``ConversationView``). A finished
message's HTML is kept in ``ui.render_cache``, so building its bubble again renders nothing.

Streaming touches only the last bubble: new text is rendered incrementally (see ui.markdown) and
set on that bubble's label; the rest of the conversation is never re-laid out per token.
"""
from __future__ import annotations

import html
from typing import Callable

from PySide6.QtCore import QEvent, QPoint, QSizeF, Qt, QTimer, QUrl, Signal, Slot
from PySide6.QtGui import (
    QDesktopServices,
    QGuiApplication,
    QKeySequence,
    QTextCursor,
    QTextOption,
)
from PySide6.QtWidgets import (
    QApplication,
    QFrame,
    QHBoxLayout,
    QLabel,
    QMenu,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from app.domain.errors import with_kind_words
from app.domain.messages import Message, MessageStatus, Role
from app.domain.test_time import SCORER_LABELS
from ui import theme
from ui.markdown import IncrementalMarkdown, code_of_link, render
from ui.message_actions import (
    SHORTCUTS,
    MessageActionBar,
    MessageEditor,
    Versions,
    VersionSwitcher,
)
from ui.render_cache import RENDERED
from ui.rich_append import End, append_html, cut_back, end_of

NO_REPLY = "No reply."  # what a reply without text shows, live and after reopening alike
_BUBBLE_NAMES = {Role.USER: "Your message", Role.ASSISTANT: "Reply", Role.SYSTEM: "System message"}
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
    # a figure never wraps away from its unit ("42.5 / tok/s", "< / $0.0001"): the spaces
    # inside each figure do not break, only those between them
    first = 1 if message.engine or message.model else 0
    parts[first:] = [p.replace(" ", "\u00a0") for p in parts[first:]]
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

    code_copied = Signal(str)  # a code block's "Copy" link was clicked: its code

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setAccessibleName("Message text")
        self.setAccessibleDescription("Select text to copy it; a link opens in your browser.")
        # links are ours to open: a code block's "Copy" link copies, any other opens outside
        self.setOpenLinks(False)
        self.anchorClicked.connect(self._on_anchor_clicked)
        # a right click shows the bubble's menu (which offers "Copy selected text")
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.NoContextMenu)
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

    @Slot(QUrl)
    def _on_anchor_clicked(self, url: QUrl) -> None:
        code = code_of_link(url.toString(QUrl.ComponentFormattingOption.FullyEncoded))
        if code is None:
            QDesktopServices.openUrl(url)
        else:
            self.code_copied.emit(code)


class MessageBubble(QFrame):
    """One message: a role line (with its versions ‹ 2/3 › and, on hover or focus, its actions),
    the rendered body and a footer with status and metrics. The actions say what the user asked
    for, with this bubble's message id; the keys are listed in ``ui.message_actions``."""

    version_requested = Signal(str)  # a sibling's message id: make its path the active one
    regenerate_requested = Signal(str)
    # message id, who answers instead: "local" or "provider:NAME" (the menu's "Regenerate with")
    regenerate_with_requested = Signal(str, str)
    edit_submitted = Signal(str, str)  # message id, the edited text
    fork_requested = Signal(str)
    delete_requested = Signal(str)
    copied = Signal(str)  # what was put on the clipboard

    def __init__(self, role: Role, parent: QWidget | None = None):
        super().__init__(parent)
        self.regenerate_choices: Callable[[], list[tuple[str, str]]] = lambda: []
        self.role = role
        self.setObjectName("bubble")
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setAccessibleName(_BUBBLE_NAMES[role])
        self.setAccessibleDescription(
            "Ctrl+C copies it. " + ("R answers again. " if role is Role.ASSISTANT else
                                    "E edits and resends it. " if role is Role.USER else "")
            + "The Menu key lists every action.")
        theme.restyle(self, lambda: theme.bubble_style(role))
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 8, 12, 8)
        layout.setSpacing(4)
        self.header = QLabel({Role.USER: "You", Role.ASSISTANT: "Assistant",
                              Role.SYSTEM: "System"}[role])
        theme.restyle(self.header, lambda: f"color:{theme.muted_text(0.3)}; font-weight:600;")
        self.body = MessageBody()
        self.footer = QLabel()
        theme.set_colour(self.footer, "muted", "font-size:11px;")
        self.footer.setWordWrap(True)
        self.footer.hide()
        self.message_id: str | None = None
        self.message: Message | None = None  # the stored message shown (see ``stored``)
        self.details_button = QPushButton("Details")
        self.details_button.setFlat(True)
        self.details_button.setCursor(Qt.CursorShape.PointingHandCursor)
        theme.set_colour(self.details_button, "link", "font-size:11px; border:none;")
        self.details_button.setToolTip("The parameters actually sent, tokens, timings, cost "
                                       "and route of this reply")
        self.details_button.hide()
        # The version switcher, the action bar and the editor are built when first needed (a
        # message with versions, a hover or focus, Edit): hidden or not, a child is polished
        # with its bubble, and these three were half the cost of building a bubble, which the
        # chat does as it scrolls (bench/long_conversation.py).
        self._switcher: VersionSwitcher | None = None
        self._actions_bar: MessageActionBar | None = None
        self._editor: MessageEditor | None = None
        self._versions: Versions | None = None
        self._top = QHBoxLayout()
        self._top.setContentsMargins(0, 0, 0, 0)
        self._top.addWidget(self.header)
        self._top.addStretch(1)
        self._top.addWidget(self.details_button)
        self._column = layout
        layout.addLayout(self._top)
        layout.addWidget(self.body)
        layout.addWidget(self.footer)
        self.body.code_copied.connect(self._copy)
        self.text = ""
        self._incremental = IncrementalMarkdown()
        # Mid-stream continuation: the parts before the last seam, rendered once, with their
        # seam markers; the part after it streams incrementally.
        self._done_html = ""
        self._segment_start = 0
        self._tail_from: End | None = None  # where the streaming tail starts in the document
        self.flush_html = 0  # HTML characters the last flush parsed
        self.seams: list[tuple[int, str]] = []
        # what the body shows, to render it again in a new palette (see _render_again)
        self._seam_reasons: list[str] = []
        self._segments: list[dict] | None = None
        self._streamed = False
        self._placeholder: str | None = None
        self._shown_html: str | None = None  # the HTML the streamed document is made of
        self.kept_streamed = 0  # finished replies shown as streamed, not set again (for tests)
        theme.on_palette_change(self, self._render_again)

    # -- the parts built when first needed ----------------------------------------------------
    @property
    def switcher(self) -> VersionSwitcher:
        """‹ 2/3 ›, after the role's name; shown for a message with other versions."""
        if self._switcher is None:
            self._switcher = VersionSwitcher(self)
            self._top.insertWidget(1, self._switcher)
            self._switcher.version_requested.connect(self.version_requested)
            self._switcher.show_versions(self._versions)
            self._place_in_tab_order(self._switcher)
        return self._switcher

    @property
    def actions_bar(self) -> MessageActionBar:
        if self._actions_bar is None:
            self._actions_bar = bar = MessageActionBar(self.role, self)
            self._top.insertWidget(self._top.indexOf(self.details_button), bar)
            bar.copy_requested.connect(self.copy_message)
            bar.regenerate_requested.connect(self.request_regenerate)
            bar.edit_requested.connect(self.start_editing)
            bar.fork_requested.connect(self.request_fork)
            bar.delete_requested.connect(self.request_delete)
            self._place_in_tab_order(bar)
        return self._actions_bar

    @property
    def editor(self) -> MessageEditor:
        """Edit and resend: in place of the body while it is open."""
        if self._editor is None:
            self._editor = MessageEditor(self)
            self._column.insertWidget(self._column.indexOf(self.body) + 1, self._editor)
            self._editor.submitted.connect(self._on_edit_submitted)
            self._editor.cancelled.connect(self.stop_editing)
            self._place_in_tab_order(self._editor)
        return self._editor

    def _place_in_tab_order(self, part: QWidget) -> None:
        """Tab reaches a part built later where it would have, had it been built with the
        bubble: after the Details link, in the order switcher, action bar, editor (a widget
        built later otherwise joins the end of the window's tab chain)."""
        def tabbable(widget: QWidget) -> list[QWidget]:
            return [child for child in widget.findChildren(QWidget)
                    if child.focusPolicy() & Qt.FocusPolicy.TabFocus]
        parts = [self._switcher, self._actions_bar, self._editor]
        previous: QWidget = self.details_button
        for earlier in parts[:parts.index(part)]:
            if earlier is not None and tabbable(earlier):
                previous = tabbable(earlier)[-1]
        for child in tabbable(part):
            QWidget.setTabOrder(previous, child)
            previous = child

    def editing(self) -> bool:
        return self._editor is not None and self._editor.isVisibleTo(self)

    def tab_stops(self) -> list[QWidget]:
        """The bubble and its widgets that Tab stops at, in their order in the tab chain."""
        mine = {id(child): child for child in self.findChildren(QWidget)
                if child.focusPolicy() & Qt.FocusPolicy.TabFocus}
        stops, widget = [self], self.nextInFocusChain()
        while mine and widget is not self:
            if mine.pop(id(widget), None) is not None:
                stops.append(widget)
            widget = widget.nextInFocusChain()
        return stops

    # -- the tree actions -----------------------------------------------------------------------
    def show_versions(self, versions: Versions | None) -> None:
        self._versions = versions
        if self._switcher is not None or (versions is not None and len(versions.ids) > 1):
            self.switcher.show_versions(versions)

    def set_actions_visible(self, visible: bool) -> None:
        """The action bar is shown while the bubble is hovered or has focus."""
        if visible or self._actions_bar is not None:
            self.actions_bar.setVisible(visible and not self.editing())

    @Slot()
    def refresh_actions(self) -> None:
        focus = QApplication.focusWidget()
        self.set_actions_visible(self.underMouse() or (
            focus is not None and (focus is self or self.isAncestorOf(focus))))

    @Slot()
    def copy_message(self) -> None:
        self._copy(self.text)

    @Slot(str)
    def _copy(self, text: str) -> None:
        QGuiApplication.clipboard().setText(text)
        self.copied.emit(text)

    @Slot()
    def request_regenerate(self) -> None:
        if self.message_id and self.role is Role.ASSISTANT:
            self.regenerate_requested.emit(self.message_id)

    @Slot()
    def request_fork(self) -> None:
        if self.message_id:
            self.fork_requested.emit(self.message_id)

    @Slot()
    def request_delete(self) -> None:
        if self.message_id:
            self.delete_requested.emit(self.message_id)

    @Slot()
    def start_editing(self) -> None:
        """Edit and resend: the text in an editor in place of the body."""
        if not self.message_id or self.role is not Role.USER:
            return
        self.body.hide()
        self.actions_bar.hide()
        self.editor.start(self.text)

    @Slot()
    def stop_editing(self) -> None:
        if self._editor is not None:
            self._editor.hide()
        self.body.show()
        self.setFocus()

    @Slot(str)
    def _on_edit_submitted(self, text: str) -> None:
        if self.message_id:
            self.edit_submitted.emit(self.message_id, text)

    def menu(self) -> QMenu:
        """Every action of this message, with its key (the right click and the Menu key)."""
        menu = QMenu(self)
        if self.body.textCursor().hasSelection():
            menu.addAction("Copy selected text", self.body.copy)
        entries = [("Copy message", "copy", self.copy_message)]
        if self.role is Role.ASSISTANT:
            entries.append(("Regenerate with the current settings", "regenerate",
                            self.request_regenerate))
            others = self.regenerate_choices()
            if others and self.message_id:
                with_menu = menu.addMenu("Regenerate with")
                for label, target in others:
                    with_menu.addAction(label, lambda t=target: self.regenerate_with_requested.emit(
                        self.message_id, t))
        if self.role is Role.USER:
            entries.append(("Edit and resend…", "edit", self.start_editing))
        entries.append(("Fork into a new conversation", "fork", self.request_fork))
        versions = self._versions
        if versions is not None and len(versions.ids) > 1:
            entries += [("Previous version", "previous", self.switcher.go_previous),
                         ("Next version", "next", self.switcher.go_next)]
        entries.append(("Delete this and everything below…", "delete", self.request_delete))
        for text, key, slot in entries:
            action = menu.addAction(text, slot)
            action.setShortcut(SHORTCUTS[key])  # shown in the menu; the keys are handled below
            action.setShortcutContext(Qt.ShortcutContext.WidgetShortcut)
            if key in ("regenerate", "edit", "fork", "delete") and not self.message_id:
                action.setEnabled(False)
            if key == "previous":
                action.setEnabled(versions.previous is not None)
            if key == "next":
                action.setEnabled(versions.next is not None)
        return menu

    def contextMenuEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        self.menu().exec(event.globalPos())

    def keyPressEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        pressed = QKeySequence(event.keyCombination())
        handlers = {"copy": self.copy_message, "regenerate": self.request_regenerate,
                    "edit": self.start_editing, "fork": self.request_fork,
                    "delete": self.request_delete,
                    "previous": lambda: self._switcher and self._switcher.go_previous(),
                    "next": lambda: self._switcher and self._switcher.go_next()}
        for key, handler in handlers.items():
            if pressed.matches(SHORTCUTS[key]) == QKeySequence.SequenceMatch.ExactMatch:
                handler()
                return
        if event.key() == Qt.Key.Key_Menu or (
                event.key() == Qt.Key.Key_F10 and
                event.modifiers() & Qt.KeyboardModifier.ShiftModifier):
            self.menu().exec(self.mapToGlobal(QPoint(24, 24)))
            return
        super().keyPressEvent(event)

    def enterEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        self.set_actions_visible(True)
        super().enterEvent(event)

    def leaveEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        self.refresh_actions()
        super().leaveEvent(event)

    def set_text(self, text: str, segments: list[dict] | None = None,
                 rendered: str | None = None) -> None:
        """Show a finished message: its HTML comes from the render cache when this bubble's
        message (``message_id``) was rendered before in this palette. ``rendered``: its HTML
        made ahead, in this palette (a finished reply's, on the stream worker's thread)."""
        # a reply stored as it streamed: its document already is its HTML's (ui.rich_append),
        # block by block; setting it whole again cost ~100 ms of parse and layout on this
        # thread for a 20,000-token reply (issue 16)
        shown = self._shown_html if self._streamed and text == self.text and (
            not segments or len(segments) < 2) else None
        self.text = text
        self._tail_from = None
        self._segments, self._streamed, self._placeholder = segments, False, None
        self._shown_html = None
        if self.role is not Role.USER and segments and len(segments) >= 2:
            self.seams = [(segment.get("start") or 0,
                           f"{segment.get('engine')} · {segment.get('model')}")
                          for segment in segments[1:]]
        if shown is not None:
            RENDERED.keep(self.message_id, text, segments, shown)  # shown so when reopened
            self.kept_streamed += 1
            return
        html = RENDERED.html(self.message_id, text, segments,
                             lambda: rendered if rendered is not None
                             else message_html(self.role, text, segments))
        self.body.setHtml(html.strip())  # (a last newline would end the text with a space)

    def append_text(self, delta: str) -> None:
        """More of a streaming reply. Only the block still being written is rendered and
        replaced in the document (finished blocks are appended once), so a flush costs the
        same at token 10,000 as at token 10; ``flush_html`` is the HTML parsed by the last one.
        Each part is laid out as one ``setHtml`` of the whole would lay it out
        (``ui.rich_append``), so a reply stored as it streamed stays as it is when it ends
        (``set_text``), and shows the same when reopened."""
        self.text += delta
        self._streamed, self._placeholder = True, None
        new, tail, restarted = self._incremental.advance(self.text[self._segment_start:])
        document = self.body.document()
        stable = self._done_html + self._incremental.stable_html
        if restarted or self._tail_from is None:
            self.body.setHtml(stable.strip())
            self._tail_from = end_of(document)
            new, parsed = "", len(stable)
        else:
            parsed = 0
        cursor = QTextCursor(document)
        cursor.beginEditBlock()
        cut_back(cursor, self._tail_from)
        # each part as setHtml of the whole would give it, so the finished reply need not be
        # set again (see set_text)
        if new:
            append_html(document, new)
            self._tail_from = end_of(document)
        append_html(document, tail)
        cursor.endEditBlock()
        self._shown_html = stable + tail if not self._done_html else None
        self.flush_html = parsed + len(new) + len(tail)

    def add_seam(self, label: str, reason: str) -> None:
        """Another engine continues the reply from here: mark the seam in the bubble."""
        self._done_html += render(self.text[self._segment_start:]) + _seam_html(label, reason)
        self._segment_start = len(self.text)
        self.seams.append((len(self.text), label))
        self._seam_reasons.append(reason)
        self._streamed, self._placeholder = True, None
        self._incremental = IncrementalMarkdown()
        self._tail_from = None
        self.body.setHtml(self._done_html)

    def restart(self, note: str) -> None:
        """The reply starts over (structured output asked again): drop the text so far."""
        self.text, self._done_html, self._segment_start, self.seams = "", "", 0, []
        self._seam_reasons = []
        self._incremental = IncrementalMarkdown()
        self.set_placeholder(note)

    def show_no_reply(self) -> None:
        """The reply has no text (it failed, or was stopped, before the first word)."""
        self.set_placeholder(NO_REPLY)

    def set_placeholder(self, note: str) -> None:
        self._placeholder = note
        self._tail_from, self._shown_html = None, None
        self.body.setHtml(f"<i style='color:{theme.muted_text()}'>{_escape(note)}</i>")

    def _render_again(self) -> None:
        """The palette changed: the body's colours (code, notes, seams) are baked into its
        HTML, so render it again from what it shows."""
        if self._placeholder is not None:
            self.set_placeholder(self._placeholder)
        elif self.text and not self._streamed:
            self.set_text(self.text, self._segments)
        elif self.text:
            self._done_html, start = "", 0
            for (end, label), reason in zip(self.seams, self._seam_reasons):
                self._done_html += render(self.text[start:end]) + _seam_html(label, reason)
                start = end
            self._incremental = IncrementalMarkdown()
            self.body.setHtml(self._done_html +
                              self._incremental.update(self.text[self._segment_start:]))
            self._tail_from = None  # the next flush lays the document out again
            self._shown_html = None

    def set_footer(self, text: str, warning: bool = False) -> None:
        theme.set_colour(self.footer, "warning" if warning else "muted", "font-size:11px;")
        self.footer.setText(text)
        self.footer.setVisible(bool(text))

    def stored(self) -> Message | None:
        """The stored message this bubble shows, to build it again after the view dropped it;
        None for a reply not saved yet."""
        if self.message_id is None:
            return None
        if self.message is not None and self.message.id == self.message_id:
            return self.message
        if self.role is Role.USER:  # a prompt shown as sent: its text is all it shows
            return Message(self.message_id, "", self.role, self.text, MessageStatus.COMPLETE,
                           "", "")
        return None

    def show_message_state(self, message: Message) -> None:
        self.message_id = message.id
        self.message = message
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
                scorer = picked.get("scorer")
                how = f"best of {n} by {SCORER_LABELS.get(scorer, scorer)}"
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
        route = f"↪ {with_kind_words(message.route_reason)}" if message.route_reason and any(
            word in message.route_reason for word in _ROUTE_WORDS_SHOWN) else ""
        text = "\n".join(p for p in (note, metrics, route) if p)
        self.set_footer(text, warning=message.status in (MessageStatus.INTERRUPTED,
                                                         MessageStatus.ERROR) or bool(
            check and not check.get("valid")))


# Route reasons worth a line under the reply: the engine was not the one the user picked.
_ROUTE_WORDS_SHOWN = ("answered locally", "continued locally", "outbox", "hedge")


def message_html(role: Role, text: str, segments: list[dict] | None) -> str:
    """A finished message's HTML: a prompt as typed, a reply's Markdown rendered, with a seam
    where another engine went on."""
    if role is Role.USER:
        return "<p style='white-space:pre-wrap'>" + _escape(text) + "</p>"
    if not segments or len(segments) < 2:
        return render(text)
    html = ""
    for index, segment in enumerate(segments):
        start = segment.get("start") or 0
        end = segment.get("end")
        if index:
            label = f"{segment.get('engine')} · {segment.get('model')}"
            html += _seam_html(label, segment.get("reason") or "")
        html += render(text[start:end if end is not None else len(text)])
    return html


def _seam_html(label: str, reason: str) -> str:
    """A thin rule with a caption: who continued the reply, and why (in the tooltip too)."""
    why = reason.split(":")[0] if reason else ""  # "openai stream broke after 412 characters …"
    return ("<table width='100%' cellspacing='0' cellpadding='0' style='margin:6px 0'><tr>"
            f"<td style='border-top:1px dashed {theme.warning_text()}'></td></tr><tr><td>"
            f"<span style='color:{theme.warning_text()}; font-size:11px' "
            f"title='{_escape(reason)}'>"
            f"↳ continued by {_escape(label)}" + (f" ({_escape(why)})" if why else "")
            + "</span></td></tr></table>")


def _escape(text: str) -> str:
    return html.escape(text)


class ConversationView(QScrollArea):
    """Shows one conversation, building bubbles only around what is on screen.

    The conversation's path is held as three parts: ``_older`` (messages above the built ones,
    not built), ``bubbles`` (built, in order) and ``_newer`` (below them, not built; only after
    a jump to an old message). A chat opens at the bottom with a screenful built; as the user
    scrolls, a few more are built ahead on the side they scroll towards (``_fill_a_little``:
    one piece of work per event-loop turn, see ``AHEAD``), and in a chat of more than
    ``KEEP_ALL`` messages bubbles more than ``FAR_SCREENS`` away are dropped once the scrolling
    pauses (their HTML stays in ``ui.render_cache``, so coming back costs no render). What is
    on screen never moves when bubbles come or go above it: the topmost visible bubble is the
    anchor, and the scroll position follows it (``_keep_anchor``). Knows nothing about engines
    or the database.
    """

    MARGIN_SCREENS = 1.0  # built beyond the viewport on a side that has unbuilt messages
    FAR_SCREENS = 3.0  # bubbles further than this from the viewport are dropped when idle...
    MOST_FAR_SCREENS = 8.0  # ...and further than this at once (memory stays bounded)
    KEEP_ALL = 60  # a chat of up to this many messages keeps what it built (no drop, no rebuild)
    # Dropping waits until the scrolling pauses this long: a drop relays the chat out, and
    # done as the user scrolls it made the notches that built nothing slow too.
    DROP_AFTER_MS = 300
    PER_TURN = 1  # bubbles built per event-loop turn while filling the margin (~2 ms each)
    # A turn that builds nothing does one smaller piece of the next builds instead: renders
    # the HTML of one of the next AHEAD messages on a side, or makes one empty bubble (up to
    # SPARES a role). Building a bubble as the chat scrolled cost ~4.3 ms, of which making
    # the widgets ~2.7 and a Markdown render ~1.5; now a notch does at most one piece, none
    # over ~2 ms (bench/long_conversation.py).
    AHEAD = 3
    SPARES = 3
    BUILD_ALL = 24  # show_path builds up to this many new messages below; more re-open
    HIDDEN = 6  # built while the view is hidden (heights are unknown until it is shown)

    details_requested = Signal(str)  # a reply's message id: show what was sent and measured
    # what a bubble's actions ask for (see MessageBubble); the controller acts on them
    version_requested = Signal(str)
    regenerate_requested = Signal(str)
    regenerate_with_requested = Signal(str, str)
    edit_submitted = Signal(str, str)
    fork_requested = Signal(str)
    delete_requested = Signal(str)
    copied = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setAccessibleName("Conversation")
        self.setAccessibleDescription("The messages of this chat. Tab moves from message to "
                                      "message; Page Up and Page Down scroll.")
        self._content = QWidget()
        self._content.setObjectName("conversationContent")
        self._layout = QVBoxLayout(self._content)
        self._layout.setContentsMargins(16, 16, 16, 16)
        self._layout.setSpacing(10)
        self._empty = QLabel("Start a conversation: type below and press Enter.\n"
                             "Everything stays on this computer with the local model.")
        self._empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        theme.restyle(self._empty, lambda: f"color:{theme.muted_text(0.5)}; font-size:14px;")
        self._layout.addWidget(self._empty)  # layout index 0; the bubbles follow it
        self._layout.addStretch(1)
        # who else may answer a Regenerate ([(label, "local" | "provider:NAME")]); the window
        # sets it (the view knows nothing about providers)
        self.regenerate_choices: Callable[[], list[tuple[str, str]]] = lambda: []
        self.setWidget(self._content)
        self.bubbles: list[MessageBubble] = []  # the built ones, top to bottom
        self._older: list[Message] = []  # above the built bubbles, oldest first
        self._newer: list[Message] = []  # below them (only after a jump), oldest first
        self._versions: dict[str, Versions] = {}
        self.built = 0  # bubbles built from stored messages, ever (the tests count work)
        self.made = 0  # bubble widgets made, ever (spares included)
        self._spares: dict[Role, list[MessageBubble]] = {Role.USER: [], Role.ASSISTANT: []}
        self._follow = True  # stay at the bottom (a reply streams in)
        self._anchor: tuple[MessageBubble, int] | None = None  # (top visible bubble, its y - value)
        self._moving = False  # the view itself is moving the scroll bar
        self._fill_timer = QTimer(self)
        self._fill_timer.setSingleShot(True)
        self._fill_timer.setInterval(0)
        self._fill_timer.timeout.connect(self._fill_a_little)
        self._drop_timer = QTimer(self)
        self._drop_timer.setSingleShot(True)
        self._drop_timer.setInterval(self.DROP_AFTER_MS)
        self._drop_timer.timeout.connect(self._drop_when_idle)
        self.verticalScrollBar().valueChanged.connect(self._on_scrolled)
        self.verticalScrollBar().rangeChanged.connect(self._on_range_changed)
        # while the scroll bar's handle is dragged nothing is added above (it would move under
        # the pointer): the older messages come once it is let go
        self.verticalScrollBar().sliderReleased.connect(self._fill_timer.start)
        # a bubble shows its actions while focus is inside it (a child button included)
        QApplication.instance().focusChanged.connect(self._on_focus_changed)

    def set_empty_text(self, text: str) -> None:
        """What an empty conversation says (it depends on where messages go)."""
        self._empty.setText(text)

    # -- what the controller and the window call --------------------------------------------
    def clear(self) -> None:
        self._remove_from(0)
        self._older, self._newer = [], []
        self._follow = True
        self._show_empty()

    def show_messages(self, messages: list[Message],
                      versions: dict[str, Versions] | None = None) -> None:
        self.clear()
        self.show_path(messages, versions)

    def show_path(self, messages: list[Message],
                  versions: dict[str, Versions] | None = None) -> None:
        """Show ``messages`` (a path of the tree): the bubbles that already show its first
        messages stay as they are; only those below the first difference are built again (a
        long new part opens at the bottom, a screenful built)."""
        self._versions = dict(versions or {})
        known = [m.id for m in self._older] + [b.message_id for b in self.bubbles] + \
            [m.id for m in self._newer]
        same = 0
        while same < min(len(messages), len(known)) and known[same] == messages[same].id:
            same += 1
        first, end = len(self._older), len(self._older) + len(self.bubbles)
        if same == len(known) == len(messages):
            self.show_versions(self._versions)
            return
        kept = min(same, end) - first  # bubbles that stay
        rest = messages[first + max(kept, 0):]
        if kept <= 0 or len(rest) > self.BUILD_ALL:
            self._open_at_bottom(messages)
        else:
            self._remove_from(kept)
            for index, bubble in enumerate(self.bubbles):  # now known as stored: droppable
                bubble.message = bubble.message or messages[first + index]
            self._newer = []
            for message in rest:
                self._build(message, len(self.bubbles))
            self._follow = True
        self.show_versions(self._versions)
        self._show_empty()

    def show_versions(self, versions: dict[str, Versions]) -> None:
        """Each bubble's ‹ n/m › (a bubble not in ``versions`` has no other version); bubbles
        built later take theirs from here too."""
        self._versions = dict(versions)
        for bubble in self.bubbles:
            bubble.show_versions(versions.get(bubble.message_id) if bubble.message_id else None)

    def truncate_at(self, message_id: str) -> None:
        """Remove the bubble of ``message_id`` and every bubble below it (a new version of
        that message is about to take its place)."""
        for index, bubble in enumerate(self.bubbles):
            if bubble.message_id == message_id:
                self._remove_from(index)
                self._newer = []
                return
        for part in (self._older, self._newer):
            for index, message in enumerate(part):
                if message.id == message_id:
                    if part is self._older:
                        self._remove_from(0)
                        self._newer = []
                    del part[index:]
                    return

    def bubble_of(self, message_id: str) -> MessageBubble | None:
        """The bubble of ``message_id`` if it is built (None for one far from the screen: see
        ``shows``)."""
        return next((b for b in self.bubbles if b.message_id == message_id), None)

    def shows(self, message_id: str) -> bool:
        """Whether ``message_id`` is on the path shown, built or not."""
        return self.bubble_of(message_id) is not None or any(
            m.id == message_id for m in (*self._older, *self._newer))

    def add_bubble(self, role: Role) -> MessageBubble:
        """A new bubble at the bottom (a prompt sent, a reply starting): the view goes back to
        the bottom first if it was showing an old part."""
        if self._newer and all(self._droppable(b) for b in self.bubbles):
            self._open_at_bottom(self._path())
        while self._newer:  # a message being edited up there stays: build down to the end
            self._build(self._newer.pop(0), len(self.bubbles))
        self._empty.hide()
        bubble = self._new_bubble(role, len(self.bubbles))
        self._follow = True
        return bubble

    @property
    def filling(self) -> bool:
        """Whether bubbles near the screen are still to be built (in the next turns), or
        those far away still to be dropped (once the scrolling pauses)."""
        return self._fill_timer.isActive() or self._drop_timer.isActive()

    def last_bubble(self) -> MessageBubble | None:
        """The bottom bubble (None when the bottom is not built: after a jump upwards)."""
        return self.bubbles[-1] if self.bubbles and not self._newer else None

    def show_message(self, message_id: str) -> bool:
        """Scroll so the message is in view and give it the focus (a search result); one far
        from the screen is built first, with a screenful around it."""
        if self.bubble_of(message_id) is None and not self._reach(message_id):
            return False
        bubble = self.bubble_of(message_id)
        assert bubble is not None
        self._follow = False
        self._settle()
        self.ensureWidgetVisible(bubble, 0, 40)
        self._anchor = self._top_visible()
        bubble.setFocus(Qt.FocusReason.OtherFocusReason)
        self._fill_timer.start()
        return True

    # -- building and dropping bubbles ------------------------------------------------------
    def _path(self) -> list[Message]:
        """The whole path, built or not (a bubble added live that was never stored reads as
        its message: see ``MessageBubble.stored``)."""
        built = [b.stored() for b in self.bubbles]
        return self._older + [m for m in built if m is not None] + self._newer

    def _open_at_bottom(self, messages: list[Message]) -> None:
        """Drop every bubble and build the newest messages: a screenful, now."""
        self._remove_from(0)
        self._older, self._newer = list(messages), []
        self._follow = True
        self._show_empty()
        self._fill(screens=0.0, budget=None)  # the rest of the margin: in the next turns
        self._fill_timer.start()

    def _reach(self, message_id: str) -> bool:
        """Build ``message_id`` (not built yet) with a screenful around it. False if it is not
        on the path shown."""
        path = self._path()
        index = next((i for i, m in enumerate(path) if m.id == message_id), None)
        if index is None:
            return False
        if all(self._droppable(b) for b in self.bubbles):
            self._remove_from(0)  # every bubble can be built again: start around the target
            self._older, self._newer = path[:index], path[index + 1:]
            self._build(path[index], 0)
        else:  # a reply not saved, a message being edited: they stay; build up to it
            while self.bubble_of(message_id) is None and (self._older or self._newer):
                if any(m.id == message_id for m in self._older):
                    self._build(self._older.pop(), 0)
                else:
                    self._build(self._newer.pop(0), len(self.bubbles))
        self._follow = False
        self._settle()
        bubble = self.bubble_of(message_id)
        assert bubble is not None
        self.ensureWidgetVisible(bubble, 0, 40)
        self._anchor = self._top_visible()
        self._fill(screens=0.0, budget=None)
        return True

    def _new_bubble(self, role: Role, index: int) -> MessageBubble:
        """An empty bubble at ``index`` among the built ones (a spare one if there is one),
        wired to the view's signals."""
        spares = self._spares.get(role)
        bubble = spares.pop() if spares else self._make_bubble(role)
        self._layout.insertWidget(1 + index, bubble)
        self.bubbles.insert(index, bubble)
        self._place_in_tab_order(index)
        bubble.show()  # now, not at the next turn: it is laid out (and measured) at once
        return bubble

    def _place_in_tab_order(self, index: int) -> None:
        """Tab goes from message to message in the order they are shown: the stops of the
        bubble at ``index`` go right after those of the one above it, or right before the one
        below (a widget joins the end of the window's tab chain when it is made, and bubbles
        are made ahead, and built above as well as below)."""
        bubble = self.bubbles[index]
        if index > 0:
            previous = self.bubbles[index - 1].tab_stops()[-1]
        elif len(self.bubbles) > 1:  # the stop before the bubble below, outside this one
            previous = self.bubbles[1].previousInFocusChain()
            while previous is not self and (
                    previous is bubble or bubble.isAncestorOf(previous) or
                    not previous.focusPolicy() & Qt.FocusPolicy.TabFocus):
                previous = previous.previousInFocusChain()
        else:
            previous = self
        for stop in bubble.tab_stops():
            QWidget.setTabOrder(previous, stop)  # (moves the one widget, not its children)
            previous = stop

    def _make_bubble(self, role: Role) -> MessageBubble:
        """A new empty bubble, hidden and outside the layout, wired to the view's signals."""
        bubble = MessageBubble(role, self._content)
        bubble.hide()
        self.made += 1
        bubble.details_button.clicked.connect(
            lambda: bubble.message_id and self.details_requested.emit(bubble.message_id))
        bubble.version_requested.connect(self.version_requested)
        bubble.regenerate_requested.connect(self.regenerate_requested)
        bubble.regenerate_with_requested.connect(self.regenerate_with_requested)
        bubble.regenerate_choices = lambda: self.regenerate_choices()
        bubble.edit_submitted.connect(self.edit_submitted)
        bubble.fork_requested.connect(self.fork_requested)
        bubble.delete_requested.connect(self.delete_requested)
        bubble.copied.connect(self.copied)
        return bubble

    def _make_spare(self) -> bool:
        """Make one spare bubble for the role that has fewest; False when there are enough."""
        role = min(self._spares, key=lambda r: len(self._spares[r]))
        if len(self._spares[role]) >= self.SPARES:
            return False
        bubble = self._make_bubble(role)
        bubble.ensurePolished()  # its style too: what showing it cost besides the layout
        self._spares[role].append(bubble)
        return True

    def _build(self, message: Message, index: int) -> MessageBubble:
        """The bubble of a stored message, at ``index`` among the built ones."""
        bubble = self._new_bubble(message.role, index)
        bubble.message_id = message.id
        bubble.set_text(message.content, message.segments)
        if not message.content and message.status is not MessageStatus.COMPLETE:
            bubble.show_no_reply()
        bubble.show_message_state(message)
        bubble.show_versions(self._versions.get(message.id))
        self.built += 1
        return bubble

    def _remove_from(self, index: int) -> None:
        self._remove(self.bubbles[index:])

    def _remove(self, bubbles: list[MessageBubble]) -> None:
        focus = QApplication.focusWidget()
        for bubble in bubbles:
            if focus is not None and (focus is bubble or bubble.isAncestorOf(focus)):
                self.setFocus(Qt.FocusReason.OtherFocusReason)  # not lost with the bubble
            if self._anchor is not None and self._anchor[0] is bubble:
                self._anchor = None
            self._layout.removeWidget(bubble)
            bubble.hide()  # gone at once; deleted once its own signals have returned
            bubble.deleteLater()
            self.bubbles.remove(bubble)

    @staticmethod
    def _droppable(bubble: MessageBubble) -> bool:
        """A bubble that can be built again as it is (stored, not being edited)."""
        return bubble.stored() is not None and not bubble.editing()

    def _show_empty(self) -> None:
        self._empty.setVisible(not (self.bubbles or self._older or self._newer))

    def _settle(self) -> None:
        """Lay the built bubbles out now (a new bubble's height depends on its width, known
        only once laid out): the scroll range and every bubble's place are then final."""
        for _ in range(4):
            self._layout.activate()
            QApplication.sendPostedEvents(None, QEvent.Type.LayoutRequest)
            if not self._layout.geometry().isValid() or not self._content.isVisible():
                break

    def _top_visible(self) -> tuple[MessageBubble, int] | None:
        """The topmost bubble at least partly on screen, and how far below the viewport's top
        it starts (negative: it starts above)."""
        value = self.verticalScrollBar().value()
        low, high = 0, len(self.bubbles)
        while low < high:  # the first bubble whose bottom is below the viewport's top
            middle = (low + high) // 2
            bubble = self.bubbles[middle]
            if bubble.y() + bubble.height() <= value:
                low = middle + 1
            else:
                high = middle
        if low == len(self.bubbles):
            return None
        return self.bubbles[low], self.bubbles[low].y() - value

    def _keep_anchor(self) -> None:
        """Put the scroll bar where the anchor bubble is as far from the top as before (or at
        the bottom while following)."""
        bar = self.verticalScrollBar()
        self._moving = True
        try:
            if self._follow:
                bar.setValue(bar.maximum())
            elif self._anchor is not None:
                bubble, offset = self._anchor
                bar.setValue(bubble.y() - offset)
        finally:
            self._moving = False

    def _gaps(self) -> tuple[int, int]:
        """How many pixels of built bubbles lie above and below the viewport (-1, -1: none
        built)."""
        if not self.bubbles:
            return -1, -1
        value = self.verticalScrollBar().value()
        last = self.bubbles[-1]
        return (value - self.bubbles[0].y(),
                last.y() + last.height() - value - self.viewport().height())

    def _fill(self, screens: float, budget: int | None) -> bool:
        """Build on each side that has unbuilt messages until ``screens`` viewports beyond the
        visible part are built (at most ``budget`` bubbles; None: no limit), then drop the
        bubbles far away. True when more is still to build."""
        height = max(self.viewport().height(), 200)
        margin = int(height * screens)
        if not self.isVisible():  # nothing is laid out: a few now, the rest once shown
            budget = max(0, self.HIDDEN - len(self.bubbles))
        built = 0
        while budget is None or built < budget:
            self._settle()
            self._keep_anchor()
            above, below = self._gaps()
            if self._newer and below < margin and not self._follow:
                self._build(self._newer.pop(0), len(self.bubbles))
            elif self._older and above < margin:
                anchor = None if self._follow else self._top_visible()
                self._build(self._older.pop(), 0)
                self._anchor = anchor or self._anchor
            else:
                break
            built += 1
        self._settle()
        self._keep_anchor()
        self._drop_far(int(height * self.MOST_FAR_SCREENS))
        self._drop_timer.start()
        above, below = self._gaps()
        return bool(self._older and above < margin or
                    self._newer and below < margin and not self._follow)

    def _drop_far(self, far: int) -> None:
        """Drop the bubbles more than ``far`` pixels beyond the viewport (those that can be
        built again: stored, not being edited); their messages go back to the unbuilt parts."""
        if len(self.bubbles) < 3 or \
                len(self.bubbles) + len(self._older) + len(self._newer) <= self.KEEP_ALL:
            return
        value, height = self.verticalScrollBar().value(), self.viewport().height()
        top = []
        for bubble in self.bubbles[:-1]:
            if bubble.y() + bubble.height() >= value - far or not self._droppable(bubble):
                break
            top.append(bubble)
        bottom = []
        if not self._follow:
            for bubble in reversed(self.bubbles[len(top) + 1:]):
                if bubble.y() <= value + height + far or not self._droppable(bubble):
                    break
                bottom.append(bubble)
        if not top and not bottom:
            return
        self._anchor = self._top_visible()
        self._older += [m for m in (b.stored() for b in top) if m is not None]
        self._newer[:0] = [m for m in (b.stored() for b in reversed(bottom)) if m is not None]
        self._remove(top + bottom)
        self._settle()
        self._keep_anchor()

    @Slot()
    def _drop_when_idle(self) -> None:
        if self.verticalScrollBar().isSliderDown():
            self._drop_timer.start()
            return
        self._drop_far(int(max(self.viewport().height(), 200) * self.FAR_SCREENS))

    @Slot()
    def _fill_a_little(self) -> None:
        if self.verticalScrollBar().isSliderDown() or not self.isVisible():
            return  # see sliderReleased and showEvent
        built = self.built
        more = self._fill(self.MARGIN_SCREENS, self.PER_TURN)
        if self.built == built:  # a turn that built nothing does a piece of the next ones
            more = self._render_ahead() or self._make_spare() or more
        if more or self._needs_spare() or self._next_unrendered() is not None:
            self._fill_timer.start()  # the rest in the next turns: scrolling stays smooth

    def _needs_spare(self) -> bool:
        return any(len(spares) < self.SPARES for spares in self._spares.values())

    def _next_unrendered(self) -> Message | None:
        """The nearest of the next ``AHEAD`` messages on either side not rendered yet."""
        for message in (*self._older[:-self.AHEAD - 1:-1], *self._newer[:self.AHEAD]):
            if not RENDERED.has(message.id, message.content, message.segments):
                return message
        return None

    def _render_ahead(self) -> bool:
        """Render one message that is about to be built (its HTML into the cache)."""
        message = self._next_unrendered()
        if message is None:
            return False
        RENDERED.html(message.id, message.content, message.segments,
                      lambda: message_html(message.role, message.content, message.segments))
        return True

    # -- following the user -----------------------------------------------------------------
    @Slot(QWidget, QWidget)
    def _on_focus_changed(self, old: QWidget | None, new: QWidget | None) -> None:
        for bubble in self.bubbles:
            if old is not None and (old is bubble or bubble.isAncestorOf(old)) or \
                    new is not None and (new is bubble or bubble.isAncestorOf(new)):
                bubble.refresh_actions()

    def _on_scrolled(self, value: int) -> None:
        if self._moving:
            return
        bar = self.verticalScrollBar()
        self._follow = value >= bar.maximum() - 24 and not self._newer
        self._anchor = self._top_visible()
        if self._older or self._newer:
            self._fill_timer.start()
        if self._drop_timer.isActive():
            self._drop_timer.start()  # not while the user scrolls

    def _on_range_changed(self, _min: int, maximum: int) -> None:
        if self._follow:
            QTimer.singleShot(0, self._scroll_to_end)
        self._keep_anchor()  # a bubble above grew, or came or went: what is seen stays

    @Slot()
    def _scroll_to_end(self) -> None:
        if self._follow:
            self._keep_anchor()

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        super().resizeEvent(event)
        if self._older or self._newer:
            self._fill_timer.start()  # a taller window shows more

    def showEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        super().showEvent(event)
        if self._older or self._newer:
            self._fill_timer.start()  # built only a few while hidden
