"""Colours derived from the application's palette, so a dark palette stays readable.

Surfaces (message bubbles, the conversation list) and muted text are mixed from the palette's
own roles instead of fixed light colours: a light palette gives the look the window always had
(a pale blue bubble for you, a white one with a hairline border for the assistant), a dark
palette gives dark bubbles with light text.
"""
from __future__ import annotations

from PySide6.QtGui import QColor, QGuiApplication, QPalette

from app.domain.messages import Role

_ROLE = QPalette.ColorRole
_ACCENT = {Role.USER: QColor("#1a73e8"), Role.SYSTEM: QColor("#f2b600")}


def palette() -> QPalette:
    return QGuiApplication.palette()


def is_dark(pal: QPalette | None = None) -> bool:
    pal = pal or palette()
    return pal.color(_ROLE.Base).lightness() < pal.color(_ROLE.Text).lightness()


def mix(a: QColor, b: QColor, t: float) -> str:
    """``a`` moved a fraction ``t`` towards ``b``, as #rrggbb."""
    return QColor(round(a.red() + (b.red() - a.red()) * t),
                  round(a.green() + (b.green() - a.green()) * t),
                  round(a.blue() + (b.blue() - a.blue()) * t)).name()


def muted_text(strength: float = 0.45) -> str:
    """Secondary text (headers, footers, notes): the text colour faded towards the base."""
    pal = palette()
    return mix(pal.color(_ROLE.Text), pal.color(_ROLE.Base), strength)


def bubble_style(role: Role) -> str:
    pal = palette()
    base = pal.color(_ROLE.Base)
    if role in _ACCENT:
        tint = mix(base, _ACCENT[role], 0.22 if is_dark(pal) else 0.10)
        return f"QFrame#bubble {{ background:{tint}; border-radius:10px; }}"
    border = mix(base, pal.color(_ROLE.Text), 0.12)
    return (f"QFrame#bubble {{ background:{base.name()}; border:1px solid {border}; "
            "border-radius:10px; }")


def sidebar_style() -> str:
    pal = palette()
    background = mix(pal.color(_ROLE.Window), pal.color(_ROLE.Base), 0.5)
    return (f"QListWidget {{ border:none; background:{background}; }} "
            "QListWidget::item { padding:6px; }")


def code_block_style() -> str:
    """A fenced code block's box (CSS for QTextDocument): a shade of the base, apart from the
    bubble behind it in either palette."""
    pal = palette()
    base, text = pal.color(_ROLE.Base), pal.color(_ROLE.Text)
    return (f"background:{mix(base, text, 0.08 if is_dark(pal) else 0.05)}; "
            f"border:1px solid {mix(base, text, 0.15)}; padding:8px; ")
