"""The chat view: a bubble per message (``ui.message_bubble``) in a scroll area, built only
near the screen.

A chat of any length opens at the bottom with a screenful of bubbles built; more are built as the
user scrolls towards them, and those far away are dropped (``ConversationView``). A finished
message's HTML is kept in ``ui.render_cache``, so building its bubble again renders nothing.

Streaming touches only the last bubble; the rest of the conversation is never re-laid out per
token.
"""
from __future__ import annotations

from typing import Callable

from PySide6.QtCore import QEvent, Qt, QTimer, Signal, Slot
from PySide6.QtWidgets import (
    QApplication,
    QFrame,
    QLabel,
    QScrollArea,
    QSizePolicy,
    QSpacerItem,
    QVBoxLayout,
    QWidget,
)

from app.domain.messages import Message, MessageStatus, Role
from app.domain.secrets_mask import SecretMask
from ui import theme
from ui.focus_ring import give_focus
from ui.message_actions import Versions
from ui.message_bubble import MessageBubble
from ui.message_text import message_html
from ui.render_cache import RENDERED


class ConversationView(QScrollArea):
    """Shows one conversation, building bubbles only around what is on screen.

    The conversation's path is held as three parts: ``_older`` (messages above the built ones,
    not built), ``bubbles`` (built, in order) and ``_newer`` (below them, not built; only after
    a jump to an old message). A chat opens at the bottom with a screenful built; as the user
    scrolls, a few more are built ahead on the side they scroll towards (``_fill_a_little``:
    one piece of work per event-loop turn, see ``AHEAD``), and in a chat of more than
    ``KEEP_ALL`` messages bubbles more than ``FAR_SCREENS`` away are taken back: one at a time
    as the scrolling needs spares (emptied, the next message is built into them: new widgets
    cost a notch ~1.7 ms), the rest once the scrolling pauses (their HTML stays in
    ``ui.render_cache``, so coming back costs no render). What is
    on screen never moves when bubbles come or go above it: while older messages are unbuilt,
    room is kept above the top bubble, out of the scroll bar's reach, and a bubble built above
    takes its height from it (one taken back gives it back), so the bubbles below keep their
    place and the scroll bar its value (``_take_room``: before, each one built moved every
    bubble below it and the scroll bar followed, ~10 % of a notch's CPU at 1,000 messages);
    otherwise the topmost visible bubble is the anchor, and the scroll position follows it
    (``_keep_anchor``). Knows nothing about engines or the database.
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
    # the HTML of one of the next AHEAD messages on a side, or gets one empty bubble (up to
    # SPARES a role), taking back a far one before making a new one. Building a bubble as
    # the chat scrolled cost ~4.3 ms, of which making the widgets ~2.7 and a Markdown render
    # ~1.5; now a notch does at most one piece, none over ~2 ms (bench/long_conversation.py).
    AHEAD = 3
    SPARES = 3
    BUILD_ALL = 24  # show_path builds up to this many new messages below; more re-open
    HIDDEN = 6  # built while the view is hidden (heights are unknown until it is shown)
    ROOM = 100_000  # px of room kept above the top bubble while older messages are unbuilt

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
        # the keys to mask in stored messages (the window passes those it knows)
        self.mask: Callable[[], SecretMask] = SecretMask
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
        self._empty.setWordWrap(True)  # a narrow chat (the Sampling panel open): cut otherwise
        theme.restyle(self._empty, lambda: f"color:{theme.muted_text(0.5)}; font-size:14px;")
        # room kept above the top bubble, out of the scroll bar's reach (its minimum), that a
        # bubble built above takes from: nothing below it moves (see _take_room)
        self._room = QSpacerItem(0, 0, QSizePolicy.Policy.Minimum, QSizePolicy.Policy.Fixed)
        self._room_height = 0
        self._layout.addItem(self._room)  # layout index 0
        self._layout.addWidget(self._empty)  # layout index 1; the bubbles follow it
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
        self.recycled = 0  # bubbles taken out of the chat and kept as spares, ever
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
        self._set_room(0)
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
        long new part opens at the bottom, a screenful built). A known API key a stored
        message holds is shown as ``[redacted]`` (``mask``: the keys known now)."""
        mask = self.mask()
        if mask:
            messages = [mask.scrub_message(m) for m in messages]
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
        give_focus(bubble)  # with the ring, once the search dialog has closed
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
        self._set_room(self.ROOM if len(messages) > 1 else 0)
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
            self._set_room(self.ROOM if index else 0)
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
        self._layout.insertWidget(2 + index, bubble)
        self.bubbles.insert(index, bubble)
        self._tab_after_neighbours(index)
        bubble.show()  # now, not at the next turn: it is laid out (and measured) at once
        return bubble

    def _tab_after_neighbours(self, index: int) -> None:
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
        """One more spare bubble: a bubble far from the screen taken out and emptied when
        there is one whose role needs a spare, else a new one for the role that has fewest;
        False when there are enough."""
        for bubble in self._far_ends():
            spares = self._spares.get(bubble.role)  # none for a system message's
            if spares is not None and len(spares) < self.SPARES:
                at_top = bubble is self.bubbles[0]
                self._take_back([bubble] if at_top else [], [] if at_top else [bubble])
                return True
        role = min(self._spares, key=lambda r: len(self._spares[r]))
        if len(self._spares[role]) >= self.SPARES:
            return False
        bubble = self._make_bubble(role)
        bubble.ensurePolished()  # its style too: what showing it cost besides the layout
        self._spares[role].append(bubble)
        return True

    def _keeps_all(self) -> bool:
        """Nothing is taken back: a chat of up to ``KEEP_ALL`` messages, or too few built."""
        return len(self.bubbles) < 3 or \
            len(self.bubbles) + len(self._older) + len(self._newer) <= self.KEEP_ALL

    def _far_ends(self) -> list[MessageBubble]:
        """The end bubbles (bottom, then top) more than ``FAR_SCREENS`` from the viewport that
        can be built again, in a chat longer than ``KEEP_ALL``."""
        if self._keeps_all():
            return []
        value, height = self.verticalScrollBar().value(), self.viewport().height()
        far = int(max(height, 200) * self.FAR_SCREENS)
        top, bottom = self.bubbles[0], self.bubbles[-1]
        ends = []
        if not self._follow and bottom.y() > value + height + far and self._droppable(bottom):
            ends.append(bottom)
        if top.y() + top.height() < value - far and self._droppable(top):
            ends.append(top)
        return ends

    def _take_back(self, top: list[MessageBubble], bottom: list[MessageBubble]) -> None:
        """Take built bubbles out of the chat: ``top`` from its top down, ``bottom`` from its
        bottom up; their messages go back to the unbuilt parts, and the bubbles become spares
        while a role has fewer than ``SPARES`` (making a bubble cost ~1.7 ms of a scroll notch,
        emptying one a fraction of that), else are deleted."""
        self._anchor = self._top_visible()
        if top and len(top) < len(self.bubbles):  # their place is room again
            self._set_room(self._room_height +
                           self.bubbles[len(top)].y() - self.bubbles[0].y())
        self._older += [m for m in (b.stored() for b in top) if m is not None]
        self._newer[:0] = [m for m in (b.stored() for b in reversed(bottom)) if m is not None]
        self._remove(top + bottom, keep=True)
        self._settle()
        self._keep_anchor()

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

    def _remove(self, bubbles: list[MessageBubble], keep: bool = False) -> None:
        """Take ``bubbles`` out of the chat and delete them; with ``keep``, those that can be
        built again are emptied and kept as spares while their role has fewer than
        ``SPARES``."""
        focus = QApplication.focusWidget()
        for bubble in bubbles:
            if focus is not None and (focus is bubble or bubble.isAncestorOf(focus)):
                self.setFocus(Qt.FocusReason.OtherFocusReason)  # not lost with the bubble
            if self._anchor is not None and self._anchor[0] is bubble:
                self._anchor = None
            self._layout.removeWidget(bubble)
            bubble.hide()  # gone at once; deleted once its own signals have returned
            self.bubbles.remove(bubble)
            spares = self._spares.get(bubble.role)  # none for a system message's
            if keep and spares is not None and len(spares) < self.SPARES and \
                    self._droppable(bubble):
                bubble.reset()
                spares.append(bubble)
                self.recycled += 1
            else:
                bubble.deleteLater()

    @staticmethod
    def _droppable(bubble: MessageBubble) -> bool:
        """A bubble that can be built again as it is (stored, not being edited, its menu not
        open)."""
        return bubble.stored() is not None and not bubble.in_use()

    def _show_empty(self) -> None:
        self._empty.setVisible(not (self.bubbles or self._older or self._newer))

    def _set_room(self, height: int) -> None:
        """Keep ``height`` pixels of room above the top bubble (the scroll bar stops below it)."""
        if height == self._room_height:
            return
        self._room_height = height
        self._room.changeSize(0, height, QSizePolicy.Policy.Minimum, QSizePolicy.Policy.Fixed)
        self._layout.invalidate()
        self._moving = True  # (what is seen is put back by _keep_anchor, once laid out)
        try:
            self.verticalScrollBar().setMinimum(height)
        finally:
            self._moving = False

    def _take_room(self, bubble: MessageBubble) -> None:
        """A bubble just built at the top takes its height from the room above, so the bubbles
        below it stay where they are (no move, no repaint of what is on screen, no scroll): its
        height is known once it has its width (its text laid out at it). Without room enough,
        more is made first (everything moves down once)."""
        if len(self.bubbles) < 2 or not self._content.isVisible():
            return
        margins = self._layout.contentsMargins()
        width = self._content.width() - margins.left() - margins.right()
        bubble.resize(width, max(bubble.height(), 1))
        QApplication.sendPostedEvents(bubble, QEvent.Type.LayoutRequest)  # its text's height
        item = self._layout.itemAt(2)
        need = item.heightForWidth(width) if item.hasHeightForWidth() else \
            item.sizeHint().height()
        need += self._layout.spacing()
        if need > self._room_height:
            self._set_room(self._room_height + self.ROOM)
        self._set_room(self._room_height - need)

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
                self._take_room(self._build(self._older.pop(), 0))
                self._anchor = anchor or self._anchor
            else:
                break
            built += 1
        if not self._older:  # the top is built: no room above it (a short chat fits as one)
            self._set_room(0)
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
        if self._keeps_all():
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
        if top or bottom:
            self._take_back(top, bottom)

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
        # a turn that built nothing does a piece of the next builds instead; while a turn
        # did something, the next one looks again: scrolling stays smooth
        if self.built != built or self._render_ahead() or self._make_spare() or more:
            self._fill_timer.start()

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

    def _on_range_changed(self, minimum: int, maximum: int) -> None:
        if minimum != self._room_height:  # (the scroll area sets 0: the room is not seen)
            self._moving = True
            try:
                self.verticalScrollBar().setMinimum(self._room_height)
            finally:
                self._moving = False
            return  # (called again with it)
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
