"""The rendered HTML of finished messages, kept so a bubble built again costs no Markdown render.

The chat view builds bubbles only around what is on screen and drops those far away
(``ui.conversation_view``); a message scrolled back into view, a conversation opened again, or a
palette switched back to, takes its HTML from here. The key is the message's id, its text and
how it was split between engines (its segments), and the palette (the HTML has the palette's
colours baked in), so an edited text or a new palette is rendered afresh, never shown stale.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from PySide6.QtGui import QPalette

from ui import theme

ENTRIES = 4000  # about 4 KB each: a few tens of MB at most, whatever the chats' lengths


class RenderCache:
    """A bounded least-recently-used map from (message, palette) to HTML; ``renders`` counts
    the HTML actually made (the tests count work, not time)."""

    def __init__(self, entries: int = ENTRIES):
        self.entries = entries
        self.renders = 0
        self._html: OrderedDict[tuple, str] = OrderedDict()
        self._palette: tuple[int, tuple] = (-1, ())  # (cacheKey, its colours)

    def html(self, message_id: str | None, text: str, segments: list[dict] | None,
             make: Callable[[], str]) -> str:
        """The HTML of message ``message_id`` showing ``text``: cached, else ``make()``. A
        message without an id yet (a reply still being saved) is rendered and not kept."""
        if message_id is None:
            self.renders += 1
            return make()
        key = self._key(message_id, text, segments)
        found = self._html.get(key)
        if found is not None:
            self._html.move_to_end(key)
            return found
        self.renders += 1
        made = make()
        self._put(key, made)
        return made

    def has(self, message_id: str, text: str, segments: list[dict] | None) -> bool:
        """Whether message ``message_id``'s HTML for ``text`` in this palette is here."""
        return self._key(message_id, text, segments) in self._html

    def keep(self, message_id: str | None, text: str, segments: list[dict] | None,
             html: str) -> None:
        """Keep ``html`` as message ``message_id``'s (a streamed reply, rendered block by block
        while it streamed), so that it shows the same when built again."""
        if message_id is not None:
            self._put(self._key(message_id, text, segments), html)

    def _key(self, message_id: str, text: str, segments: list[dict] | None) -> tuple:
        return (message_id, text, repr(segments), self._colours())

    def _put(self, key: tuple, html: str) -> None:
        self._html[key] = html
        self._html.move_to_end(key)
        if len(self._html) > self.entries:
            self._html.popitem(last=False)

    def _colours(self) -> tuple:
        """The palette's colours, the key's part that says which palette the HTML was made for
        (by value: a palette set again is a new QPalette with the same colours)."""
        palette = theme.palette()
        if self._palette[0] != palette.cacheKey():
            groups = (QPalette.ColorGroup.Active, QPalette.ColorGroup.Disabled)
            roles = [QPalette.ColorRole(r) for r in range(QPalette.ColorRole.NColorRoles.value)]
            self._palette = (palette.cacheKey(), tuple(
                palette.color(group, role).rgba() for group in groups for role in roles))
        return self._palette[1]

    def clear(self) -> None:
        self._html.clear()


RENDERED = RenderCache()  # one for the application: every view and bubble shares it
