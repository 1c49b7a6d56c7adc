"""Every colour of the window: the light and dark palettes, and the colours derived from them.

The one place colours live. Widgets ask for a colour by what it means (``colour("error")``,
``muted_text()``, ``bubble_style(role)``), never by its value, and ``apply_theme`` picks the palette
(light, dark, or the system's). Each text colour is checked against the surfaces text is drawn on
(window, base, bubbles, sidebar) and moved towards the palette's text colour until it reaches the
WCAG AA contrast of 4.5:1 on every one of them, so a system palette we never saw stays readable.

Qt keeps the palette a widget had when its style sheet was last set: a widget with a style sheet
does not follow a later palette change, and a colour baked into a style sheet or into rich text
never does. So a widget's style sheet is set through ``restyle`` (or ``set_colour``), and a widget
that renders colours into its text re-renders in ``on_palette_change``; when the application
palette changes, every style sheet is set again and these callbacks run.
"""
from __future__ import annotations

from typing import Any, Callable, Literal, get_args

from pygments.formatters import HtmlFormatter
from pygments.style import Style
from pygments.styles import get_style_by_name
from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication, QWidget

from app.domain.messages import Role

THEMES = ("system", "light", "dark")  # the ``theme`` setting's choices
AA = 4.5  # WCAG 2.x level AA, normal-size text
NON_TEXT = 3.0  # WCAG 2.x 1.4.11: the edge of a control against what is around it

_ROLE = QPalette.ColorRole
_GROUP = QPalette.ColorGroup
ColourLike = QColor | str

# -- the two palettes (Fusion's roles) -----------------------------------------------------------
# Qt's Fusion palette, written out so "light" stays light when the system is dark. Two roles
# differ, for AA contrast: the placeholder is a solid grey (Fusion's is half-transparent black,
# 3.9:1 on white) and the selection a deeper blue (white on Fusion's #308cc6 is 3.7:1).
_LIGHT = {
    _ROLE.Window: "#efefef", _ROLE.WindowText: "#000000", _ROLE.Base: "#ffffff",
    _ROLE.AlternateBase: "#f7f7f7", _ROLE.ToolTipBase: "#ffffdc", _ROLE.ToolTipText: "#000000",
    _ROLE.PlaceholderText: "#6e6e6e", _ROLE.Text: "#000000", _ROLE.Button: "#efefef",
    _ROLE.ButtonText: "#000000", _ROLE.BrightText: "#ffffff", _ROLE.Light: "#ffffff",
    _ROLE.Midlight: "#cacaca", _ROLE.Dark: "#9f9f9f", _ROLE.Mid: "#b8b8b8",
    _ROLE.Shadow: "#767676", _ROLE.Highlight: "#2670a8", _ROLE.HighlightedText: "#ffffff",
    _ROLE.Link: "#0000ff", _ROLE.LinkVisited: "#ff00ff", _ROLE.Accent: "#2670a8",
}
_LIGHT_DISABLED = {_ROLE.WindowText: "#bebebe", _ROLE.Text: "#bebebe", _ROLE.ButtonText: "#bebebe",
                   _ROLE.Base: "#efefef", _ROLE.Highlight: "#919191", _ROLE.Dark: "#bebebe",
                   _ROLE.Shadow: "#b1b1b1"}
_DARK = {
    _ROLE.Window: "#202124", _ROLE.WindowText: "#e8eaed", _ROLE.Base: "#17181a",
    _ROLE.AlternateBase: "#2a2b2e", _ROLE.ToolTipBase: "#2a2b2e", _ROLE.ToolTipText: "#e8eaed",
    _ROLE.PlaceholderText: "#9aa0a6", _ROLE.Text: "#e8eaed", _ROLE.Button: "#2d2e31",
    _ROLE.ButtonText: "#e8eaed", _ROLE.BrightText: "#ff7b72", _ROLE.Highlight: "#1f6feb",
    _ROLE.HighlightedText: "#ffffff", _ROLE.Link: "#58a6ff", _ROLE.LinkVisited: "#bc8cff",
    _ROLE.Light: "#3c4043", _ROLE.Midlight: "#323336", _ROLE.Mid: "#28292c",
    _ROLE.Dark: "#111214", _ROLE.Shadow: "#000000", _ROLE.Accent: "#1f6feb",
}
_DARK_DISABLED = {_ROLE.WindowText: "#6e7276", _ROLE.Text: "#6e7276", _ROLE.ButtonText: "#6e7276"}


def _palette(roles: dict, disabled: dict) -> QPalette:
    palette = QPalette()
    for role, colour in roles.items():
        palette.setColor(role, QColor(colour))
    for role, colour in disabled.items():
        palette.setColor(_GROUP.Disabled, role, QColor(colour))
    return palette


def light_palette() -> QPalette:
    """Qt's Fusion palette: dark text on white and light grey."""
    return _palette(_LIGHT, _LIGHT_DISABLED)


def dark_palette() -> QPalette:
    """The dark counterpart, built from the same roles: light text on near-black greys."""
    return _palette(_DARK, _DARK_DISABLED)


# -- contrast ------------------------------------------------------------------------------------
def relative_luminance(colour: ColourLike) -> float:
    """WCAG 2.x relative luminance of an sRGB colour (0: black, 1: white)."""
    c = QColor(colour)

    def linear(channel: int) -> float:
        v = channel / 255
        return v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4

    return 0.2126 * linear(c.red()) + 0.7152 * linear(c.green()) + 0.0722 * linear(c.blue())


def contrast_ratio(a: ColourLike, b: ColourLike) -> float:
    """WCAG 2.x contrast ratio, 1 to 21."""
    high, low = sorted((relative_luminance(a), relative_luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def mix(a: ColourLike, b: ColourLike, t: float) -> str:
    """``a`` moved a fraction ``t`` towards ``b``, as #rrggbb."""
    a, b = QColor(a), QColor(b)
    return QColor(round(a.red() + (b.red() - a.red()) * t),
                  round(a.green() + (b.green() - a.green()) * t),
                  round(a.blue() + (b.blue() - a.blue()) * t)).name()


def readable(colour: ColourLike, surfaces: list[QColor], towards: ColourLike,
             minimum: float = AA) -> str:
    """``colour``, moved towards ``towards`` (the palette's text colour) just far enough to
    reach ``minimum`` contrast on every surface; black or white if even that is not enough."""
    for step in range(21):
        candidate = mix(colour, towards, step / 20)
        if min(contrast_ratio(candidate, s) for s in surfaces) >= minimum:
            return candidate
    return max(("#000000", "#ffffff"),
               key=lambda c: min(contrast_ratio(c, s) for s in surfaces))


# -- what the colours mean -----------------------------------------------------------------------
def palette() -> QPalette:
    return QGuiApplication.palette()


def is_dark(pal: QPalette | None = None) -> bool:
    pal = pal or palette()
    return pal.color(_ROLE.Base).lightness() < pal.color(_ROLE.Text).lightness()


# (on a light palette, on a dark one): GitHub Primer's foreground colours, made readable below
_HUES = {
    "error": ("#cf222e", "#ff7b72"),
    "warning": ("#9a6700", "#d29922"),
    "ok": ("#1a7f37", "#3fb950"),
    "accent": ("#0969da", "#58a6ff"),
    "info": ("#0a3069", "#a5d6ff"),
}
# the tints of a message bubble: yours blue, a system prompt amber, a reply the base itself
_BUBBLE_TINT = {Role.USER: "#1a73e8", Role.SYSTEM: "#f2b600"}
# what a coloured banner (or any tinted box) is: a wash of its hue over the base
_BACKGROUND_WASH = (0.08, 0.18)
Kind = Literal["error", "warning", "ok", "accent", "info", "link", "muted"]
KINDS: tuple[Kind, ...] = get_args(Kind)


def _hue(kind: str, pal: QPalette) -> str:
    return _HUES[kind][is_dark(pal)]


def _bubble_background(pal: QPalette, role: Role) -> str:
    base = pal.color(_ROLE.Base)
    if role in _BUBBLE_TINT:
        return mix(base, _BUBBLE_TINT[role], 0.22 if is_dark(pal) else 0.10)
    return base.name()


def _sidebar_background(pal: QPalette) -> str:
    return mix(pal.color(_ROLE.Window), pal.color(_ROLE.Base), 0.5)


def surfaces(pal: QPalette | None = None) -> list[QColor]:
    """Every background text of ours is drawn on: the window, fields and lists, buttons, the
    message bubbles and the sidebar."""
    pal = pal or palette()
    roles = (_ROLE.Window, _ROLE.Base, _ROLE.AlternateBase, _ROLE.Button)
    return [pal.color(r) for r in roles] + [
        QColor(_bubble_background(pal, r)) for r in (Role.USER, Role.SYSTEM)] + [
        QColor(_sidebar_background(pal))]


_cache: dict[tuple, Any] = {}


def _cached(key: tuple, make: Callable[[QPalette], Any]) -> Any:
    """Colours are worked out once per palette (``cacheKey`` changes with every change)."""
    pal = palette()
    key = (pal.cacheKey(), *key)
    if key not in _cache:
        if len(_cache) > 256:
            _cache.clear()
        _cache[key] = make(pal)
    return _cache[key]


def _text(kind: str, on: list[QColor] | None = None) -> str:
    def make(pal: QPalette) -> str:
        base = pal.color(_ROLE.Link).name() if kind == "link" else _hue(kind, pal)
        return readable(base, surfaces(pal) + (on or []), pal.color(_ROLE.Text))

    return _cached((kind, tuple(c.name() for c in on or [])), make)


def error_text() -> str:
    return _text("error")


def warning_text() -> str:
    return _text("warning")


def ok_text() -> str:
    return _text("ok")


def info_text() -> str:
    return _text("info")


def link() -> str:
    """Links and link-like buttons: the palette's link colour, made readable."""
    return _text("link")


def accent() -> str:
    """The cloud's colour (the route badge) and other highlights that are not links."""
    return _text("accent")


def muted_text(strength: float = 0.45) -> str:
    """Secondary text (headers, footers, notes): the text colour faded towards the base, but
    never below AA contrast."""
    def make(pal: QPalette) -> str:
        faded = mix(pal.color(_ROLE.Text), pal.color(_ROLE.Base), strength)
        return readable(faded, surfaces(pal), pal.color(_ROLE.Text))

    return _cached(("muted", strength), make)


def colour(kind: Kind) -> str:
    """The colour of a meaning: one of ``KINDS``."""
    return muted_text() if kind == "muted" else _text(kind)


def _background(kind: str) -> str:
    pal = palette()
    return mix(pal.color(_ROLE.Base), _hue(kind, pal), _BACKGROUND_WASH[is_dark(pal)])


def error_background() -> str:
    return _background("error")


def warning_background() -> str:
    return _background("warning")


def info_background() -> str:
    return _background("accent")


# connectivity lights and the outbox's states: what each state means
STATE_KINDS = {"online": "ok", "degraded": "warning", "offline": "error", "unknown": "muted",
               "sent": "ok", "failed": "error", "cancelled": "muted"}


def state_colour(state: str) -> str:
    """A link's or an outbox item's state ("online", "degraded", "failed", …) as a colour;
    a state with no colour of its own gets the text colour."""
    kind = STATE_KINDS.get(state)
    return colour(kind) if kind else palette().color(_ROLE.Text).name()


# -- style sheets --------------------------------------------------------------------------------
def text_style(kind: Kind | None, extra: str = "") -> str:
    return (f"color:{colour(kind)}; " if kind else "") + extra


def meter_style(over: bool) -> str:
    """A gauge's bar: green while within its limit, red once over it."""
    return "QProgressBar::chunk { background: %s; }" % (error_text() if over else ok_text())


def banner_style(kind: str) -> str:
    """The banner above the chat (objectName ``errorBanner``): "error", "warning" or "info"."""
    background = {"error": error_background, "warning": warning_background,
                  "info": info_background}[kind]()
    pal = palette()
    hue = _hue("accent" if kind == "info" else kind, pal)
    text = _text("info" if kind == "info" else kind, on=[QColor(background)])
    return (f"#errorBanner {{ background:{background}; border-bottom:1px solid "
            f"{mix(pal.color(_ROLE.Base), hue, 0.5)}; }} QLabel {{ color:{text}; }}")


def bubble_style(role: Role) -> str:
    """A message bubble's one style sheet (``ui.message_bubble``): its frame, and by object
    name its role line, footer (``warning`` property: a broken reply's), its actions (Details,
    the action bar's and the versions' buttons) and body. One sheet for the bubble, not one
    per part: a long chat makes bubbles as it scrolls, and each sheet set is a style to
    resolve. No rule for the body: its viewport does not
    fill its background, so the bubble shows through (a background rule on it drew its
    horizontal scroll bar's track solid black)."""
    pal = palette()
    background = _bubble_background(pal, role)
    frame = f"background:{background}; border-radius:10px;"
    if role not in _BUBBLE_TINT:
        frame += f" border:1px solid {mix(pal.color(_ROLE.Base), pal.color(_ROLE.Text), 0.12)};"
    return (f"QFrame#bubble {{ {frame} }} "
            f"QLabel#bubbleHeader {{ color:{muted_text(0.3)}; font-weight:600; }} "
            f"QLabel#bubbleFooter {{ color:{muted_text()}; font-size:11px; }} "
            f"QLabel#bubbleFooter[warning=\"true\"] {{ color:{colour('warning')}; }} "
            f"{_ACTIONS} {{ color:{bubble_action()}; font-size:{ACTION_FONT_PX}px; "
            "border:none; background:transparent; padding:0 4px; } "
            f"{_ACTIONS_HOVERED} {{ color:{pal.color(_ROLE.Text).name()}; }}")


# A bubble's actions: Details, and on hover Copy, Regenerate (or Edit), Fork, Delete and the
# versions' ‹ › (ui.message_actions). One look for all: muted words that darken under the mouse;
# a code block's "Copy" (ui.markdown) is drawn in the same colour and size.
_ACTIONS = "QPushButton#detailsLink, QToolButton#bubbleAction"
_ACTIONS_HOVERED = "QPushButton#detailsLink:hover, QToolButton#bubbleAction:hover"
ACTION_FONT_PX = 12


def bubble_action() -> str:
    """The colour of a bubble's actions (``bubble_style``) and of a code block's "Copy"."""
    return muted_text(0.25)


def sidebar_style() -> str:
    """The conversation list; its group headers are items that cannot be selected, which Qt
    would draw in the faint disabled colour: they get the muted text colour instead."""
    return (f"QListWidget {{ border:none; background:{_sidebar_background(palette())}; }} "
            "QListWidget::item { padding:6px; } "
            f"QListWidget::item:disabled {{ color:{muted_text(0.3)}; }}")


# Chart series (Okabe–Ito): told apart with every kind of colour blindness; on a dark base the
# darker ones are lightened until they stand out from it (3:1, graphics rather than text)
_SERIES = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9")


def series_colour(n: int) -> str:
    pal = palette()
    base = pal.color(_ROLE.Base)
    colour = QColor(_SERIES[n % len(_SERIES)])
    for step in range(10):
        if contrast_ratio(colour, base) >= 3.0:
            break
        colour = QColor(mix(colour, pal.color(_ROLE.Text), 0.15))
    return colour.name()


def _code_background(pal: QPalette) -> str:
    return mix(pal.color(_ROLE.Base), pal.color(_ROLE.Text), 0.08 if is_dark(pal) else 0.05)


def rule_colour() -> str:
    """Hairlines: table borders, the frame of a code block."""
    pal = palette()
    return mix(pal.color(_ROLE.Base), pal.color(_ROLE.Text), 0.22)


def code_background() -> str:
    return _code_background(palette())


def quote_bar() -> str:
    """The bar beside a quoted block."""
    pal = palette()
    return mix(pal.color(_ROLE.Base), pal.color(_ROLE.Text), 0.35)


def code_block_style() -> str:
    """A fenced code block's box (CSS for QTextDocument): a shade of the base, apart from the
    bubble behind it in either palette."""
    pal = palette()
    return (f"background:{_code_background(pal)}; "
            f"border:1px solid {mix(pal.color(_ROLE.Base), pal.color(_ROLE.Text), 0.15)}; "
            "padding:8px; ")


# the highlighting of code blocks: a Pygments style per palette, its colours made readable
_CODE_STYLES = ("friendly", "github-dark")


def code_formatter() -> HtmlFormatter:
    """Pygments' formatter for code blocks (inline styles): the light or dark style's colours,
    each moved just far enough to reach AA on the code block (token backgrounds dropped)."""
    def make(pal: QPalette) -> HtmlFormatter:
        on, text = [QColor(_code_background(pal))], pal.color(_ROLE.Text)
        styles = {}
        for token, spec in get_style_by_name(_CODE_STYLES[is_dark(pal)]):
            words = ["noinherit"] + [word for word in ("bold", "italic", "underline")
                                     if spec[word]]
            if spec["color"]:
                words.append(readable("#" + spec["color"], on, text))
            styles[token] = " ".join(words)
        style = type("OutpostCode", (Style,), {"styles": styles,
                                               "background_color": on[0].name()})
        return HtmlFormatter(noclasses=True, nowrap=True, style=style)

    return _cached(("code",), make)


# -- following palette changes -------------------------------------------------------------------
class _Follower(QObject):
    """Lives as a child of a widget (so it dies with it) and runs ``callback`` again whenever
    the application palette changes."""

    def __init__(self, widget: QWidget, key: str, callback: Callable[[], None]):
        super().__init__(widget)
        self.setObjectName(key)
        self.callback = callback


def _follow(widget: QWidget, key: str, callback: Callable[[], None]) -> None:
    follower = widget.findChild(_Follower, key, Qt.FindChildOption.FindDirectChildrenOnly)
    if follower is None:
        _keeper()
        _Follower(widget, key, callback)
    else:
        follower.callback = callback
    callback()


def restyle(widget: QWidget, make: Callable[[], str]) -> None:
    """Set ``widget``'s style sheet to ``make()``, now and after every palette change (a later
    call replaces the earlier ``make``; a sheet set directly since is left alone)."""
    ours: list[str] = []

    def apply() -> None:
        if ours and widget.styleSheet() != ours[-1]:
            return  # styled by someone else since: not ours to replace
        ours[:] = [make()]
        widget.setStyleSheet(ours[0])

    _follow(widget, "theme-style", apply)


def set_colour(widget: QWidget, kind: Kind | None, extra: str = "") -> None:
    """Style ``widget``'s text in the colour of ``kind`` (None: the palette's own), with
    ``extra`` CSS, now and after every palette change."""
    restyle(widget, lambda: text_style(kind, extra))


def on_palette_change(widget: QWidget, callback: Callable[[], None]) -> None:
    """Call ``callback`` now and after every palette change, while ``widget`` lives (for a
    widget that renders colours into its text). One callback per widget."""
    _follow(widget, "theme-follow", callback)


def _refresh_all() -> None:
    # A widget polished by a style sheet keeps its old palette (Qt does not send it a
    # PaletteChange): setting the sheet again polishes it against the new one.
    for widget in QApplication.allWidgets():
        sheet = widget.styleSheet()
        if sheet:
            widget.setStyleSheet(sheet)
    for window in QApplication.topLevelWidgets():
        for follower in window.findChildren(_Follower):
            follower.callback()


class _ThemeKeeper(QWidget):
    """Never shown. As a top-level widget it gets Qt's ApplicationPaletteChange (whoever
    changed the palette: ``apply_theme``, the platform, a test), and it follows the system's
    colour scheme while the theme is "system"."""

    def __init__(self, app: QApplication):
        super().__init__()
        self.setAttribute(Qt.WidgetAttribute.WA_DontShowOnScreen)
        self.name: str | None = None
        self.refreshed_for = -1  # the application palette's cacheKey the widgets follow
        self.native_style = app.style().name()
        app.styleHints().colorSchemeChanged.connect(self._on_scheme_changed)

    def event(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.ApplicationPaletteChange:
            app = QApplication.instance()
            # once per application palette: setting the controls' class palettes is itself
            # a palette change (the application's palette, and its cacheKey, stay the same);
            # a new application palette clears class palettes, and has a new cacheKey
            if app.palette().cacheKey() != self.refreshed_for:
                self.refreshed_for = app.palette().cacheKey()
                _outline_controls(app)
                _refresh_all()
        return super().event(event)

    def _on_scheme_changed(self, _scheme) -> None:
        if self.name == "system":
            self.apply(QApplication.instance(), "system")

    def apply(self, app: QApplication, name: str) -> None:
        if name not in THEMES:
            raise ValueError(f"no theme called {name!r}: one of {', '.join(THEMES)}")
        self.name = name
        if name != "system":
            _use(app, dark_palette() if name == "dark" else light_palette())
            return
        if app.style().name() != self.native_style:
            app.setStyle(self.native_style)
        app.setPalette(QPalette())  # the platform's own palette (it follows the desktop)
        scheme = app.styleHints().colorScheme()
        if scheme != Qt.ColorScheme.Unknown and \
                is_dark(app.palette()) != (scheme == Qt.ColorScheme.Dark):
            # the platform says dark (or light) but its palette is not: use ours
            _use(app, dark_palette() if scheme == Qt.ColorScheme.Dark else light_palette())


# What Fusion draws a control's edge in, from the window colour it is given: a check box's box,
# a field's frame (line edits, spin boxes, combo boxes) and a text area's frame (qfusionstyle.cpp:
# ``outline()`` is the window colour made darker; the indicator and ``PE_Frame`` lighten it)
_EDGES: dict[str, Callable[[QColor], QColor]] = {
    "QCheckBox": lambda window: window.darker(140).lighter(110),
    "QLineEdit": lambda window: window.darker(140),
    "QAbstractSpinBox": lambda window: window.darker(140),
    "QComboBox": lambda window: window.darker(140),
    "QPlainTextEdit": lambda window: window.darker(140).lighter(108),
    "QTextEdit": lambda window: window.darker(140).lighter(108),
    # lists and tables (the Providers list, Settings' folder list, the Models table): a frame
    "QAbstractItemView": lambda window: window.darker(140).lighter(108),
}


def _outlined_window(pal: QPalette, edge: Callable[[QColor], QColor]) -> QColor:
    """The window colour, moved towards the text just far enough that the edge Fusion derives
    from it reaches 3:1 on the window around the control and on the control's own fill."""
    window, fill = pal.color(_ROLE.Window), pal.color(_ROLE.Base)
    text = pal.color(_ROLE.WindowText)
    candidate = window
    for step in range(21):
        candidate = QColor(mix(window, text, step / 20))
        if min(contrast_ratio(edge(candidate), window),
               contrast_ratio(edge(candidate), fill)) >= NON_TEXT:
            break
    return candidate


def _outline_controls(app: QApplication) -> None:
    """Check boxes and fields whose edge can be seen (WCAG 1.4.11, 3:1). Fusion draws it in the
    window colour made darker, which on a dark window is nearly the window itself (1.1:1: an
    empty box or field vanished; 2:1 on the light one). These classes get a window colour from
    which Fusion's edge reaches 3:1; nothing else of them is drawn in the window colour (a text
    area's scroll bars, which inherit it, get a visible outline too). Setting the application's
    palette clears class palettes, so this follows every palette change."""
    pal = app.palette()
    for class_name, edge in _EDGES.items():
        candidate = _outlined_window(pal, edge)
        marked = QPalette(pal)
        for group in (QPalette.ColorGroup.Active, QPalette.ColorGroup.Inactive,
                      QPalette.ColorGroup.Disabled):
            marked.setColor(group, _ROLE.Window, candidate)
        app.setPalette(marked, class_name)


def _use(app: QApplication, pal: QPalette) -> None:
    """Our palettes go with Fusion, which draws every control from the palette."""
    if app.style().name() != "fusion":
        app.setStyle("Fusion")
    app.setPalette(pal)


_KEEPER: _ThemeKeeper | None = None


def _keeper() -> _ThemeKeeper:
    global _KEEPER
    if _KEEPER is None:
        _KEEPER = _ThemeKeeper(QApplication.instance())
    return _KEEPER


def apply_theme(app: QApplication, name: str) -> None:
    """Colour ``app`` with the theme ``name``: "light", "dark" or "system" (the platform's
    palette, or our light or dark one where the platform's does not match its own colour
    scheme; followed as the desktop switches between light and dark)."""
    _keeper().apply(app, name)


def focus_ring() -> str:
    """The focus ring's colour (``ui.focus_ring``): the accent, which reaches AA on every
    surface, so the ring stands out from the window, the fields and the bubbles alike."""
    return accent()
