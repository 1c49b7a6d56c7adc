"""Markdown -> Qt rich text, with highlighted code blocks, rendered incrementally while streaming.

``IncrementalMarkdown`` splits a growing message into a *stable* part (complete blocks, rendered
once and cached) and a *tail* (the block still being written, re-rendered at each flush), so a long
reply costs the same per flush at its end as at its start.
"""
from __future__ import annotations

import html
import re
from urllib.parse import quote, unquote

from markdown_it import MarkdownIt
from markdown_it.token import Token
from pygments import highlight
from pygments.lexers import TextLexer, get_lexer_by_name
from pygments.util import ClassNotFound

from ui import theme

# a code line longer than the bubble wraps (at a space, else anywhere: the body's wrap mode):
# QTextDocument cannot scroll one block sideways, and a <pre> that does not wrap made the whole
# message scroll, prose and all; "Copy" gives the code as written, with no line breaks added
_CODE_FONT = ("font-family:'DejaVu Sans Mono','Menlo','Consolas',monospace; "
              "white-space:pre-wrap;")
COPY_SCHEME = "copy"  # a code block's "Copy" link: copy:<the code, percent-encoded>


def copy_link(code: str) -> str:
    """The href of a code block's "Copy" link: the code itself travels in it, so the link copies
    exactly its block however the message was split into rendered parts while streaming."""
    return f"{COPY_SCHEME}:{quote(code, safe='')}"


def code_of_link(href: str) -> str | None:
    """The code a "Copy" link carries, or None for any other link."""
    prefix = COPY_SCHEME + ":"
    return unquote(href[len(prefix):]) if href.startswith(prefix) else None


def _highlight(code: str, lang: str, attrs: str) -> str:
    try:
        lexer = get_lexer_by_name(lang.strip()) if lang.strip() else TextLexer()
    except ClassNotFound:
        lexer = TextLexer()
    body = highlight(code, lexer, theme.code_formatter()).rstrip("\n")  # the palette's colours
    # the language, then "Copy" drawn as the bubble's own actions are (theme.bubble_action)
    name = f"{html.escape(lang.strip())} · " if lang.strip() else ""
    link = copy_link(code.rstrip("\n"))
    label = (f"<div style='color:{theme.muted_text()}; font-size:{theme.ACTION_FONT_PX}px;'>"
             f"{name}<a href=\"{link}\" title='Copy this code' style='color:"
             f"{theme.bubble_action()}; text-decoration:none; font-weight:600;'>Copy</a></div>")
    # QTextDocument ignores padding and borders on <pre>: a one-cell table gives the box
    return (f"{label}<table width='100%' cellspacing='0' cellpadding='8' border='1' "
            f"style='border-collapse:collapse; border-color:{theme.rule_colour()}; "
            f"border-style:solid; background:{theme.code_background()};'><tr><td>"
            f"<pre style=\"{_CODE_FONT} margin:0;\">{body}</pre></td></tr></table>")


# "breaks": a single line break in a reply is one in the bubble (an address, a poem, a list
# written without Markdown's marks), as chat apps show it, rather than CommonMark's space
_MD = MarkdownIt("commonmark", {"html": False, "linkify": True, "typographer": False,
                                "breaks": True, "highlight": _highlight}
                 ).enable("table").enable("strikethrough")
# a bare http(s):// address in a reply is a link (it opens in the browser when clicked); only
# those: "settings.py" or "foo.com" stay text (.py is a country's domain), and so do
# "//host/path", mailto: and ftp:
_MD.enable("linkify")
_MD.linkify.set({"fuzzy_link": False, "fuzzy_email": False, "fuzzy_ip": False})
for _scheme in ("//", "mailto:", "ftp:"):  # http:// and https:// only
    _MD.linkify.add(_scheme, None)


def _indented_code(_renderer, tokens: list[Token], index: int, _options, _env) -> str:
    """A code block written by indenting it is drawn as a fenced one with no language is: the
    same box, font and "Copy" link. Bare, it had no box, no Copy, and its last line ended in a
    blank one (a 27 px gap before the paragraph under it, against 15 after a fenced block)."""
    return _highlight(tokens[index].content, "", "") + "\n"


_MD.add_render_rule("code_block", _indented_code)


def _fix_highlighted_fences(rendered: str) -> str:
    # markdown-it wraps highlighted output in <pre><code>; keep ours only.
    return re.sub(r"<pre><code[^>]*>(<div[^>]*>.*?</div>)?(<table .*?</table>)\s*</code></pre>",
                  lambda m: (m.group(1) or "") + m.group(2), rendered, flags=re.DOTALL)


def _boxes(rendered: str) -> str:
    """Tables with ruled cells, quoted blocks with a bar and code spans on a tint, the way
    QTextDocument can draw them (its CSS has no borders on blocks: tables stand in). Qt drops
    the bottom margin of the block before a table, so a table (and a quote) keeps a paragraph's
    12px above it itself: a list ran into one under it (4px)."""
    rule = theme.rule_colour()
    rendered = rendered.replace(
        "<table>", "<table border='1' cellspacing='0' cellpadding='5' style='border-collapse:"
        f"collapse; border-color:{rule}; border-style:solid; margin-top:12px; "
        "margin-bottom:6px;'>")
    rendered = rendered.replace("<th>", f"<th style='background:{theme.code_background()};'>")
    # inline `code` on the code blocks' tint, as chat apps show it
    rendered = rendered.replace("<code>", f"<code style='background:{theme.code_background()};'>")
    rendered = re.sub(r"<th style=\"text-align:(\w+)\">",
                      lambda m: f"<th align='{m.group(1)}' style='background:"
                                f"{theme.code_background()};'>", rendered)
    rendered = re.sub(r"<td style=\"text-align:(\w+)\">",
                      lambda m: f"<td align='{m.group(1)}'>", rendered)
    rendered = rendered.replace(
        "<blockquote>", "<table width='100%' cellspacing='0' cellpadding='0' style='margin-top:"
        f"12px; margin-bottom:6px;'><tr><td width='3' style='background:{theme.quote_bar()};'>"
        f"</td><td style='padding-left:10px; color:{theme.muted_text(0.25)};'>")
    return rendered.replace("</blockquote>", "</td></tr></table>")


_LIST_MARGIN = "12px"  # QTextDocument's margin above and below a list that is in no other


def _end_lists_at_their_last_line(tokens: list[Token]) -> None:
    """A list whose last item holds a list of its own ends, as in a browser, below the nested
    list's last line. QTextDocument gives the list's bottom margin to its own last item's
    first line instead: a gap opened between that line and the nested list under it, which
    then ran into whatever followed. The outer list loses its bottom margin and the last
    item, in reading order, gets it."""
    depth = 0
    outer: Token | None = None  # the list in no other list, being read
    last_item: tuple[Token, int] | None = None  # its last item so far, and how deep
    for token in tokens:
        if token.type in ("bullet_list_open", "ordered_list_open"):
            if depth == 0:
                outer, last_item = token, None
            depth += 1
        elif token.type == "list_item_open":
            last_item = (token, depth)
        elif token.type in ("bullet_list_close", "ordered_list_close"):
            depth -= 1
            if depth == 0 and outer is not None and last_item is not None \
                    and last_item[1] > 1:
                outer.attrSet("style", "margin-bottom:0px;")
                last_item[0].attrSet("style", f"margin-bottom:{_LIST_MARGIN};")


def render(text: str) -> str:
    """Render a complete markdown text to HTML that QTextDocument understands."""
    if not text:
        return ""
    env: dict = {}
    tokens = _MD.parse(text, env)
    _end_lists_at_their_last_line(tokens)
    return _boxes(_fix_highlighted_fences(_MD.renderer.render(tokens, _MD.options, env)))


# the block structure only (no inline parsing): where each top-level block starts
_BLOCKS = MarkdownIt("commonmark", {"html": False}).enable("table").disable("inline")


def stable_boundary(text: str) -> int:
    """Index up to which ``text`` consists of finished blocks, so that rendering the part before
    it and the part after it on their own gives what rendering ``text`` whole gives.

    A block is finished once the next top-level block has begun after a blank line and that
    block's first line is complete (``1. a`` then a blank line then ``2`` may still become the
    same list's second item: not yet). Splitting at any blank line instead (outside code
    fences) cut loose lists, and items with more than one paragraph, into lists of their own
    that the whole render then joined. Only the unfinished part is parsed at each flush (the
    caller passes it), so the cost does not grow with the reply."""
    lines = text.splitlines(keepends=True)
    starts = [token.map[0] for token in _BLOCKS.parse(text)
              if token.level == 0 and token.nesting >= 0 and token.map]
    for line in reversed(starts):
        if line >= 1 and not lines[line - 1].strip() and lines[line].endswith("\n"):
            return sum(len(previous) for previous in lines[:line])
    return 0


class IncrementalMarkdown:
    """Renders a message that only ever grows (a streaming reply)."""

    def __init__(self) -> None:
        self._stable_src = ""
        self._stable_html = ""
        self.blocks_rendered = 0  # how many block renders happened (for tests)

    @property
    def stable_html(self) -> str:
        return self._stable_html

    def advance(self, text: str) -> tuple[str, str, bool]:
        """(the HTML of blocks finished since the last call, the HTML of the block still
        being written, whether ``text`` no longer continues the last one: start over)."""
        restarted = not text.startswith(self._stable_src)
        if restarted:  # text was replaced: start over
            self._stable_src, self._stable_html = "", ""
        done = len(self._stable_src)
        boundary = done + stable_boundary(text[done:])
        new = ""
        if boundary > done:
            new = render(text[done:boundary])
            self._stable_html += new
            self._stable_src = text[:boundary]
            self.blocks_rendered += 1
        tail = text[len(self._stable_src):]
        if tail.count("```") % 2 == 1:
            tail += "\n```"  # show an open code block as code while it streams
        self.blocks_rendered += 1 if tail else 0
        return new, render(tail), restarted

    def update(self, text: str) -> str:
        """The whole message's HTML (stable part and tail)."""
        _new, tail, _restarted = self.advance(text)
        return self._stable_html + tail
