"""The Sampling panel makes room for the chat.

Docked, the panel (about 300-420 px) made the window at least 820 px wide: it could not be made
800 px wide, and on a narrow window the chat kept ~330 px, its model name cut. Now the window's
least width is the chat's and the status bar's alone, and the panel steps aside:

- the window (or the sidebar) leaves the chat narrower than ``READABLE_CHAT``: the panel hides;
- the chat has room for it again (the window made wider): it comes back, as wide as it was;
- the user opens it (View ▸ Sampling panel, Ctrl+Shift+S) where there is no room for it: it
  opens floating, in a window of its own beside the window where the screen has room, and
  docks again once there is room.

A panel the user closed or floated stays so. Whether it is hidden for want of room is kept in
``window.ini`` (``WindowState``), so a window closed narrow brings it back at the next start
once it is wide enough.
"""
from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, QTimer, Slot
from PySide6.QtWidgets import QDockWidget, QMainWindow, QStyle, QWidget

from ui import screen_fit
from ui.window_state import WindowState

READABLE_CHAT = 400  # px: the chat column's least width beside the panel
_MARGIN = 16  # px: the panel comes back with this much to spare (no hide/show flapping)


class SamplingRoom(QObject):
    """Hides, brings back or floats ``dock`` so that ``chat`` keeps ``READABLE_CHAT`` in
    ``window``; keeps the window's least width that of its other parts."""

    def __init__(self, window: QMainWindow, dock: QDockWidget, chat: QWidget,
                 state: WindowState):
        super().__init__(window)
        self.window, self.dock, self.chat, self.state = window, dock, chat, state
        self.squeezed = False  # hidden by us for want of room: back once there is
        self._floated = False  # floated by us: docked again once there is room
        self._user_shown = False  # opened by the user since the last check
        self._ours = False  # a hide, show or float of ours is under way
        self._later = QTimer(self)  # a check once the layout has settled
        self._later.setSingleShot(True)
        self._later.setInterval(0)
        self._later.timeout.connect(self.check)
        dock.visibilityChanged.connect(self._on_visibility_changed)
        dock.toggleViewAction().triggered.connect(self._on_toggled)
        dock.topLevelChanged.connect(self._on_floating_changed)
        window.installEventFilter(self)
        chat.installEventFilter(self)
        self._keep_least_width()

    def restore(self) -> None:
        """At the start: a panel hidden for want of room comes back once there is room."""
        self.squeezed = self.state.sampling_squeezed() and self.dock.isHidden()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt naming)
        kind = event.type()
        if kind == QEvent.Type.Resize:  # the window's, or the chat's (the split dragged)
            if self._showing():
                # the panel's own show laid the chat out narrower: a hide now, inside that
                # show, left it hidden and visible at once, docked over the chat, unpainted
                # (and before the View menu's slot says the user opened it): once shown
                self._later.start()
            else:
                self.check()
        elif kind in (QEvent.Type.LayoutRequest, QEvent.Type.Show) and \
                watched is self.window:
            self._keep_least_width()
            if kind == QEvent.Type.Show:
                self._later.start()
        return False

    @Slot()
    def check(self) -> None:
        """Hide, show, float or dock the panel as the chat's width asks."""
        if not self.window.isVisible():
            return
        dock = self.dock
        docked_and_shown = not dock.isHidden() and not dock.isFloating()
        if docked_and_shown and self._chat_beside_panel() < READABLE_CHAT:
            if self._user_shown:
                self._float()
            else:
                self._hide()
        elif docked_and_shown:
            self._user_shown = False
        elif self.squeezed and dock.isHidden() and self._room():
            self._show()
        elif self._floated and dock.isFloating() and not dock.isHidden() and self._room():
            self._dock()

    def _showing(self) -> bool:
        """Whether the panel is being shown: no longer hidden, not yet visible."""
        return self.window.isVisible() and not self.dock.isHidden() and \
            not self.dock.isVisible()

    def _chat_beside_panel(self) -> int:
        """The chat's width with the panel docked beside it, from the window's width (what the
        layout gives the chat lags behind, and overflows the window when it is too narrow)."""
        window = self.window
        margins = window.contentsMargins()
        splitter = window.centralWidget()
        sidebar = splitter.width() - self.chat.width()  # (and the split's handle)
        panel = max(self.dock.width(), self.dock.minimumSizeHint().width())
        separator = window.style().pixelMetric(
            QStyle.PixelMetric.PM_DockWidgetSeparatorExtent, None, window)
        return window.width() - margins.left() - margins.right() - sidebar - panel - separator

    def _room(self) -> bool:
        """Whether the chat keeps ``READABLE_CHAT`` (and a margin) with the panel beside it."""
        return self._chat_beside_panel() >= READABLE_CHAT + _MARGIN

    def _hide(self) -> None:
        self._as_ours(self.dock.hide)
        self._set_squeezed(True)

    def _show(self) -> None:
        self._as_ours(self.dock.show)
        self._set_squeezed(False)

    def _float(self) -> None:
        self._user_shown = False
        self._as_ours(lambda: self.dock.setFloating(True))
        self._floated = True
        dock = self.dock  # as wide as it likes (squeezed beside the chat it may not have been)
        dock.resize(max(dock.width(), dock.sizeHint().width()), dock.height())
        self._place_beside_window()

    def _place_beside_window(self) -> None:
        """The floating panel stands beside the window where the screen has room for it, else
        at the screen's edge (centred on the window, as every new window is, it covered the
        chat it had stepped aside for)."""
        area = screen_fit.available_geometry(self.window)
        window, panel = self.window.frameGeometry(), self.dock.frameGeometry()
        if window.right() + panel.width() <= area.right():
            left = window.right() + 1
        elif window.left() - panel.width() >= area.left():
            left = window.left() - panel.width()
        else:
            left = area.right() + 1 - panel.width()
        top = max(area.top(), min(window.top(), area.bottom() + 1 - panel.height()))
        self.dock.move(left, top)

    def _dock(self) -> None:
        self._as_ours(lambda: self.dock.setFloating(False))
        self._floated = False

    def _as_ours(self, change) -> None:
        self._ours = True
        try:
            change()
        finally:
            self._ours = False

    def _set_squeezed(self, squeezed: bool) -> None:
        if squeezed != self.squeezed:
            self.squeezed = squeezed
            self.state.save_sampling_squeezed(squeezed)

    @Slot(bool)
    def _on_visibility_changed(self, _visible: bool) -> None:
        if not self._ours:  # opened or closed otherwise than by us: as it is now
            self._set_squeezed(False)
            self._floated = False

    @Slot(bool)
    def _on_toggled(self, shown: bool) -> None:
        """The user opened the panel (View ▸ Sampling panel): where there is no room beside
        the chat it opens floating (the check, once laid out)."""
        self._user_shown = shown
        if shown:
            self._later.start()

    @Slot(bool)
    def _on_floating_changed(self, _floating: bool) -> None:
        if not self._ours:
            self._floated = False  # the user floated or docked it

    def _keep_least_width(self) -> None:
        """The window's least width is its chat's (the sidebar, the chat column), the status
        bar's and the menu bar's, without the panel: the panel steps aside instead of holding
        the window wide (Qt's own least width counts a docked panel in)."""
        window = self.window
        least = max(window.centralWidget().minimumSizeHint().width(),
                    window.statusBar().minimumSizeHint().width(),
                    window.menuBar().minimumSizeHint().width())
        margins = window.contentsMargins()
        least += margins.left() + margins.right()
        if window.minimumWidth() != least:
            window.setMinimumWidth(least)
