"""Conversations for people: Markdown and one self-contained HTML page.

Both show each conversation's active path (what the window shows), every message headed by its
role, and for replies the engine and model that wrote them, its version among its siblings and
its state (interrupted, error, cut at max tokens). Messages on other branches are counted, not
shown: the JSON export has them all. Code blocks are kept as written; a block an interrupted
reply left open is closed, so it cannot swallow the rest of the document.

The HTML page needs nothing else (no script, no web font, no network): every text is escaped,
and its colours follow the reader's light or dark setting (``prefers-color-scheme``).

Both are written in pieces (``markdown``, ``page``: generators), one conversation at a time, so
an export never holds more than one conversation of the document.
"""
from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Iterable, Iterator

from app.domain.messages import Conversation, Message

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")


@dataclass
class Shown:
    """One conversation as the readable formats show it."""

    conversation: Conversation
    path: list[Message]  # the active path, root first
    versions: dict[str, tuple[int, int]]  # message id -> (its place among its siblings, count)
    elsewhere: int  # messages on other branches


def blocks(text: str) -> list[tuple[str, str, str]]:
    """``text`` as ("text", "", prose) and ("code", info string, code) pieces, in order; a
    fence left open ends at the end of the text."""
    pieces: list[tuple[str, str, str]] = []
    lines: list[str] = []
    fence, info = "", ""
    for line in text.split("\n"):
        found = _FENCE.match(line)
        if not fence and found and not (found.group(1)[0] == "`" and "`" in found.group(2)):
            if lines:
                pieces.append(("text", "", "\n".join(lines)))
            fence, info, lines = found.group(1), found.group(2).strip(), []
        elif fence and found and found.group(1)[0] == fence[0] and \
                len(found.group(1)) >= len(fence) and not found.group(2).strip():
            pieces.append(("code", info, "\n".join(lines)))
            fence, info, lines = "", "", []
        else:
            lines.append(line)
    if fence or lines:
        pieces.append(("code" if fence else "text", info, "\n".join(lines)))
    return pieces


def closed_fences(text: str) -> str:
    """``text`` with a code block left open (a reply that broke off) closed."""
    fence = ""
    for line in text.split("\n"):
        found = _FENCE.match(line)
        if not found:
            continue
        if not fence and not (found.group(1)[0] == "`" and "`" in found.group(2)):
            fence = found.group(1)
        elif fence and found.group(1)[0] == fence[0] and len(found.group(1)) >= len(fence) \
                and not found.group(2).strip():
            fence = ""
    return f"{text}\n{fence}" if fence else text


def _who(m: Message, versions: dict[str, tuple[int, int]]) -> str:
    """``Assistant · local · smollm2 · version 2 of 3 · interrupted``."""
    parts = [m.role.value.capitalize()]
    if m.role.value == "assistant":
        if m.segments and len(m.segments) > 1:
            parts.append(" → ".join(f"{s.get('engine')} · {s.get('model')}" for s in m.segments))
        else:
            parts += [x for x in (m.engine, m.model) if x]
    index, count = versions.get(m.id, (1, 1))
    if count > 1:
        parts.append(f"version {index} of {count}")
    if m.status.value != "complete":
        parts.append(m.status.value)
    if m.finish_reason == "length":
        parts.append("cut at max tokens")
    return " · ".join(parts)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _elsewhere_note(item: Shown) -> str:
    if not item.elsewhere:
        return ""
    return (f"{item.elsewhere} more message{'s' if item.elsewhere != 1 else ''} on other "
            f"branches, not shown (`outpost history show {item.conversation.id} --tree`, or "
            "the JSON export)")


# -- Markdown ------------------------------------------------------------------------------------
def markdown(items: Iterable[Shown]) -> Iterator[str]:
    """The Markdown document, a conversation at a time."""
    empty = True
    for item in items:
        yield ("" if empty else "\n\n---\n\n") + _markdown_one(item)
        empty = False
    yield "*No conversations.*\n" if empty else "\n"


def _markdown_one(item: Shown) -> str:
    c = item.conversation
    out = [f"# {_one_line(c.title) or 'Untitled'}", "",
           f"Conversation `{c.id}` · started {c.created_at} · last change {c.updated_at}"]
    note = _elsewhere_note(item)
    if note:
        out += ["", f"*{note}.*"]
    if c.system_prompt:
        out += ["", "**System prompt:**", ""]
        out += [f"> {line}" if line else ">" for line in c.system_prompt.split("\n")]
    for m in item.path:
        body = closed_fences(m.content) if m.content else \
            (f"*(error: {m.error})*" if m.error else "*(no text)*")
        out += ["", f"## {_who(m, item.versions)}", "", f"*{m.created_at}*", "", body]
    return "\n".join(out)


# -- HTML ----------------------------------------------------------------------------------------
_CSS = """
:root { color-scheme: light dark; --bg: #ffffff; --fg: #1f2328; --muted: #57606a;
  --user: #eef4ff; --reply: #f6f8fa; --border: #d0d7de; --code: #eaeef2; --mark: #7d4e00; }
@media (prefers-color-scheme: dark) {
  :root { --bg: #0d1117; --fg: #e6edf3; --muted: #9198a1; --user: #132339; --reply: #161b22;
    --border: #3d444d; --code: #1f242c; --mark: #d29922; } }
body { background: var(--bg); color: var(--fg); margin: 2rem auto; max-width: 52rem;
  padding: 0 1rem; font: 16px/1.55 system-ui, -apple-system, "Segoe UI", sans-serif; }
article + article { border-top: 2px solid var(--border); margin-top: 3rem; }
h1 { font-size: 1.5rem; margin-bottom: 0.25rem; }
.meta, .when, .note { color: var(--muted); font-size: 0.875rem; }
.system { border-left: 4px solid var(--border); padding: 0.25rem 0.75rem; white-space: pre-wrap; }
.message { border: 1px solid var(--border); border-radius: 8px; margin: 1rem 0;
  padding: 0.75rem 1rem; background: var(--reply); }
.message.user { background: var(--user); }
.who { font-weight: 600; }
.state { color: var(--mark); }
.text { white-space: pre-wrap; overflow-wrap: anywhere; }
pre { background: var(--code); border: 1px solid var(--border); border-radius: 6px;
  padding: 0.75rem; overflow-x: auto; }
code { font: 0.875rem/1.45 ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; }
""".strip()


def page(items: Iterable[Shown], count: int, only_title: str | None = None) -> Iterator[str]:
    """The HTML page, a conversation at a time. ``count``: how many ``items`` are; with one,
    ``only_title`` (its title) is the page's title."""
    e = html.escape
    title = _one_line(only_title or "") if count == 1 else f"Outpost: {count} conversations"
    yield ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
           "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
           "<meta name=\"color-scheme\" content=\"light dark\">\n"
           f"<title>{e(title or 'Untitled')}</title>\n<style>\n{_CSS}\n</style>\n</head>\n"
           "<body>\n")
    empty = True
    for item in items:
        yield ("" if empty else "\n") + _html_one(item)
        empty = False
    yield ("<p>No conversations.</p>" if empty else "") + "\n</body>\n</html>\n"


def _html_one(item: Shown) -> str:
    e = html.escape
    c = item.conversation
    out = [f'<article id="c-{e(c.id)}">', f"<h1>{e(_one_line(c.title) or 'Untitled')}</h1>",
           f'<p class="meta">Conversation <code>{e(c.id)}</code> · started '
           f"{e(c.created_at)} · last change {e(c.updated_at)}</p>"]
    note = _elsewhere_note(item)
    if note:
        out.append(f'<p class="note">{e(note)}.</p>')
    if c.system_prompt:
        out.append(f'<p class="who">System prompt</p>\n<div class="system">'
                   f"{e(c.system_prompt)}</div>")
    for m in item.path:
        who = _who(m, item.versions)
        out.append(f'<section class="message {e(m.role.value)}" id="m-{e(m.id)}">')
        out.append(f'<div class="who">{e(who)}</div><div class="when">{e(m.created_at)}</div>')
        if not m.content:
            text = f"(error: {m.error})" if m.error else "(no text)"
            out.append(f'<div class="text state">{e(text)}</div>')
        for kind, info, piece in blocks(m.content):
            if kind == "code":
                language = f' data-language="{e(info.split()[0])}"' if info.strip() else ""
                out.append(f"<pre><code{language}>{e(piece)}</code></pre>")
            elif piece.strip():
                out.append(f'<div class="text">{e(piece.strip(chr(10)))}</div>')
        out.append("</section>")
    out.append("</article>")
    return "\n".join(out)
