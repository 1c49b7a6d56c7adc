"""Every window and dialog fits the screen it opens on.

The window and the dialogs have default sizes made for a desktop (the window 1380x760, Usage
1100x760, Models 980x720, …); on a small screen (a laptop at 1366x768 with a panel, 800x800)
they ran off it, their buttons out of reach. ``fit_to_screen`` is the one place a size meets the
screen: no larger than the screen's available area (what the panels and docks of the desktop
leave), never below the window's own minimum, a dialog centred on its parent and kept on the
screen.

It runs by itself: the application's event filter (``ui.input_guard``) fits each top-level
window as it is shown (``fit_when_shown``; not spontaneously: a window the user brings back
from the task bar is left where the user left it), so every dialog is covered, including the
ones built later and those of modules that know nothing of it. A window restored from
``window.ini`` (``ui.window_state``) is fitted the same way when it is shown, so a geometry
saved on a larger monitor comes back on this one.
"""
from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, QPoint, QRect, QSize, Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QWidget

# the kinds of top-level window fitted (menus, tooltips and the like place themselves)
_FITTED = (Qt.WindowType.Window, Qt.WindowType.Dialog, Qt.WindowType.Tool)
_PLACED = "screenFitPlaced"  # dynamic property: the window was placed once by fit_to_screen


def available_geometry(widget: QWidget) -> QRect:
    """The part of ``widget``'s screen windows may use (tests replace this to fake a screen)."""
    screen = widget.screen() or QGuiApplication.primaryScreen()
    return screen.availableGeometry()


def fit_to_screen(window: QWidget) -> None:
    """Make the top-level ``window`` no larger than its screen's available area (never below
    its minimum size) and place it on that area: a dialog centred on its parent's window the
    first time, any window moved back onto the screen when part of it is off."""
    if window.isMaximized() or window.isFullScreen():
        return  # the platform sizes it
    area = available_geometry(window)
    frame = window.frameGeometry()
    # the title bar and borders (none known before the first show)
    extra = QSize(frame.width() - window.width(), frame.height() - window.height())
    minimum = window.minimumSize()
    width = max(min(window.width(), area.width() - extra.width()), minimum.width())
    height = max(min(window.height(), area.height() - extra.height()), minimum.height())
    if (width, height) != (window.width(), window.height()):
        window.resize(width, height)
    place = QRect(frame.topLeft(), QSize(width, height) + extra)
    parent = window.parentWidget()
    if parent is not None and not window.property(_PLACED):
        place.moveCenter(parent.window().frameGeometry().center())
    window.setProperty(_PLACED, True)
    moved = _inside(place, area)
    if moved != frame.topLeft():
        window.move(moved)


def _inside(rect: QRect, area: QRect) -> QPoint:
    """Where ``rect`` goes to lie inside ``area`` (its top-left corner kept in it when it is
    larger: the title bar and the first buttons stay reachable)."""
    left = max(area.left(), min(rect.left(), area.right() + 1 - rect.width()))
    top = max(area.top(), min(rect.top(), area.bottom() + 1 - rect.height()))
    return QPoint(left, top)


def fit_when_shown(watched: QObject, event: QEvent) -> None:
    """Fit ``watched`` if ``event`` shows it as a top-level window (not spontaneously: one the
    user brings back from the task bar is left where the user left it). Called by the
    application's one event filter (``ui.input_guard``: a second Python filter on every event
    of the application cost each scroll notch of a long chat its share)."""
    if not event.spontaneous() and isinstance(watched, QWidget) and watched.isWindow() and \
            watched.windowType() in _FITTED:
        fit_to_screen(watched)
