"""One message of the chat: its bubble (``MessageBubble``: role line, versions, actions, the
rendered body, a footer with status and metrics).

A finished message's HTML (``message_html``) comes from ``ui.render_cache`` when it was made
before; a streaming reply is rendered incrementally (``ui.markdown``), each finished block
appended once (``ui.rich_append``), so a flush costs the same at token 10,000 as at token 10.
The bubbles are built, placed and dropped by ``ui.conversation_view``; what a message says as
text (its footer's figures, its HTML) is ``ui.message_text``.
"""
from __future__ import annotations

from typing import Callable

from PySide6.QtCore import QPoint, QSizeF, Qt, QUrl, Signal, Slot
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
    QSizePolicy,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from app.domain.context import LeftOut, ReplyCap
from app.domain.errors import with_kind_words
from app.domain.messages import Message, MessageStatus, Role
from app.domain.test_time import SCORER_LABELS
from ui import theme
from ui.access_letters import with_access_letters
from ui.markdown import IncrementalMarkdown, code_of_link, render
from ui.message_actions import (
    SHORTCUTS,
    MessageActionBar,
    MessageEditor,
    Versions,
    VersionSwitcher,
)
from ui.message_text import (
    ROUTE_WORDS_SHOWN,
    escape,
    message_html,
    metrics_text,
    seam_html,
    status_note,
)
from ui.render_cache import RENDERED
from ui.rich_append import End, append_html, cut_back, end_of

NO_REPLY = "No reply."  # what a reply without text shows, live and after reopening alike
_BUBBLE_NAMES = {Role.USER: "Your message", Role.ASSISTANT: "Reply", Role.SYSTEM: "System message"}


class MessageBody(QTextBrowser):
    """Rich text that wraps anywhere (a long URL or token never widens the chat) and is exactly
    as tall as its content: the conversation scrolls, not each message."""

    code_copied = Signal(str)  # a code block's "Copy" link was clicked: its code
    # Ctrl+C with nothing selected: the bubble copies its whole message (the text is a tab
    # stop of its own, and Qt's copy of an empty selection did nothing, silently)
    copy_all_requested = Signal()
    selection_copied = Signal(str)  # Ctrl+C with a selection: what it copied

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setAccessibleName("Message text")
        self.setAccessibleDescription("Ctrl+C copies the selected text, or the whole message "
                                      "when none is selected; a link opens in your browser.")
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
        self.setObjectName("messageBody")
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

    def keyPressEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        if event.matches(QKeySequence.StandardKey.Copy):
            cursor = self.textCursor()
            if cursor.hasSelection():
                self.copy()
                self.selection_copied.emit(cursor.selection().toPlainText())
            else:
                self.copy_all_requested.emit()
            event.accept()
            return
        super().keyPressEvent(event)

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
        # Preferred, not Maximum: Maximum held the bubble to its size hint, which reckons a
        # wrapped footer at ~80 characters a line, so a long footer (a queued reply's) in a
        # narrower chat was cut top and bottom; the view's closing stretch keeps it from
        # growing taller than its height for its width.
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 8, 12, 8)
        layout.setSpacing(4)
        # the parts are styled by the bubble's one sheet, by object name (theme.bubble_style)
        self.header = QLabel({Role.USER: "You", Role.ASSISTANT: "Assistant",
                              Role.SYSTEM: "System"}[role])
        self.header.setObjectName("bubbleHeader")
        self.body = MessageBody()
        self.footer = QLabel()
        self.footer.setObjectName("bubbleFooter")
        self.footer.setWordWrap(True)
        self.footer.hide()
        self.message_id: str | None = None
        self.message: Message | None = None  # the stored message shown (see ``stored``)
        self.details_button = QPushButton("Details")
        self.details_button.setFlat(True)
        self.details_button.setCursor(Qt.CursorShape.PointingHandCursor)
        self.details_button.setObjectName("detailsLink")
        self.details_button.setAccessibleName("Details of this reply")
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
        self._menu_open = False
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
        self.body.copy_all_requested.connect(self.copy_message)
        self.body.selection_copied.connect(self.copied)
        self._forget_text()
        theme.on_palette_change(self, self._render_again)

    def _forget_text(self) -> None:
        """The text state of a bubble that shows nothing yet (made, or ``reset``)."""
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
        self.retrying = False  # the footer says a request is sent again soon (until text)
        self._shown_html: str | None = None  # the HTML the streamed document is made of
        self.kept_streamed = 0  # finished replies shown as streamed, not set again (for tests)

    def reset(self) -> None:
        """Empty again, as a bubble just made for this role: the chat view reuses a bubble it
        takes out (one far from the screen) for the next message it builds, rather than making
        new widgets (``ConversationView``). Only a stored message's bubble that is not in use
        (``in_use``) is reused; whatever showing a message set is undone here."""
        self.message_id, self.message = None, None
        self._forget_text()
        self.body.document().clear()
        self.set_footer("")
        self.details_button.hide()
        self.show_versions(None)
        if self._actions_bar is not None:
            self._actions_bar.hide()

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
        parts = [self._switcher, self._actions_bar, self._editor]
        previous: QWidget = self.details_button
        for earlier in parts[:parts.index(part)]:
            if earlier is not None and _tabbable(earlier):
                previous = _tabbable(earlier)[-1]
        for child in _tabbable(part):
            QWidget.setTabOrder(previous, child)
            previous = child

    def editing(self) -> bool:
        return self._editor is not None and self._editor.isVisibleTo(self)

    def in_use(self) -> bool:
        """Being edited, or its menu is open (a nested event loop, in which the chat view's
        timers still run): the view neither drops nor reuses it meanwhile."""
        return self.editing() or self._menu_open

    def _show_menu(self, at: QPoint) -> None:
        self._menu_open = True
        try:
            self.menu().exec(at)
        finally:
            self._menu_open = False

    def tab_stops(self) -> list[QWidget]:
        """The bubble and its widgets that Tab stops at, in their order in the tab chain."""
        mine = {id(child): child for child in _tabbable(self)}
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
        """Every action of this message, with its key (the right click and the Menu key), and
        its access letter (the same letter as the key, where the key is one)."""
        menu = QMenu(self)
        if self.body.textCursor().hasSelection():
            menu.addAction("Copy &selected text", self.body.copy)
        entries = [("&Copy message", "copy", self.copy_message)]
        if self.role is Role.ASSISTANT:
            entries.append(("&Regenerate with the current settings", "regenerate",
                            self.request_regenerate))
            if self.message_id and self.regenerate_choices():
                entries.append(("Regenerate &with", "regenerate with", None))  # its submenu
        if self.role is Role.USER:
            entries.append(("&Edit and resend…", "edit", self.start_editing))
        entries.append(("&Fork into a new conversation", "fork", self.request_fork))
        versions = self._versions
        if versions is not None and len(versions.ids) > 1:
            entries += [("&Previous version", "previous", self.switcher.go_previous),
                         ("&Next version", "next", self.switcher.go_next)]
        entries.append(("&Delete this and everything below…", "delete", self.request_delete))
        for text, key, slot in entries:
            if key == "delete" or key == "previous":
                menu.addSeparator()
            if slot is None:  # "Regenerate with ▸", under the plain Regenerate
                with_menu = menu.addMenu(text)
                choices = self.regenerate_choices()
                for label, (_, target) in zip(with_access_letters(c[0] for c in choices),
                                              choices):
                    with_menu.addAction(label, lambda t=target: self.regenerate_with_requested.emit(
                        self.message_id, t))
                continue
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
        self._show_menu(event.globalPos())

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
            self._show_menu(self.mapToGlobal(QPoint(24, 24)))
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
        self._end_retrying()
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
        self._done_html += render(self.text[self._segment_start:]) + seam_html(label, reason)
        self._segment_start = len(self.text)
        self.seams.append((len(self.text), label))
        self._seam_reasons.append(reason)
        self._streamed, self._placeholder = True, None
        self._end_retrying()
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
        self._end_retrying()
        self.set_placeholder(NO_REPLY)

    def show_retrying(self, status: str, mark: str = "↻") -> None:
        """A streaming reply's status while its request waits to be sent again (a cloud
        request refused with 429 or 5xx before any text), or while its provider is silent
        (``mark`` "◷"): cleared when text arrives."""
        self.retrying = True
        self.set_footer(f"{mark} {status}")

    def _end_retrying(self) -> None:
        if self.retrying:
            self.retrying = False
            self.set_footer("")

    def set_placeholder(self, note: str) -> None:
        self._placeholder = note
        self._tail_from, self._shown_html = None, None
        self.body.setHtml(f"<i style='color:{theme.muted_text()}'>{escape(note)}</i>")

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
                self._done_html += render(self.text[start:end]) + seam_html(label, reason)
                start = end
            self._incremental = IncrementalMarkdown()
            self.body.setHtml(self._done_html +
                              self._incremental.update(self.text[self._segment_start:]))
            self._tail_from = None  # the next flush lays the document out again
            self._shown_html = None

    def set_footer(self, text: str, warning: bool = False) -> None:
        if bool(self.footer.property("warning")) != warning:
            self.footer.setProperty("warning", warning)  # its colour: theme.bubble_style
            self.footer.style().unpolish(self.footer)
            self.footer.style().polish(self.footer)
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
        self.retrying = False  # (the footer says how it ended now)
        self.details_button.setVisible(message.role is Role.ASSISTANT)
        note, warning = status_note(message)
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
            word in message.route_reason for word in ROUTE_WORDS_SHOWN) else ""
        cap = ReplyCap.from_record((message.params or {}).get("reply_cap")) \
            if message.role is Role.ASSISTANT else None
        capped = cap.describe() if cap is not None else ""  # a quota left less than asked
        left_out = LeftOut.from_record((message.params or {}).get("context_left_out")) \
            if message.role is Role.ASSISTANT else None
        unseen = left_out.short() if left_out is not None else ""  # the model did not see
        text = "\n".join(p for p in (note, metrics, capped, unseen, route) if p)
        self.set_footer(text, warning=warning or bool(check and not check.get("valid")))


def _tabbable(widget: QWidget) -> list[QWidget]:
    """``widget``'s descendants that Tab can stop at."""
    return [child for child in widget.findChildren(QWidget)
            if child.focusPolicy() & Qt.FocusPolicy.TabFocus]
