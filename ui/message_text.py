"""What a message says as text, with no widget: its footer's figures (who answered, tokens,
TTFT, speed, cost) and a finished message's HTML (a prompt as typed, a reply's Markdown, a
seam where another engine went on). The bubble (``ui.message_bubble``), the Details dialog
and the conversation view's render-ahead use them."""
from __future__ import annotations

import html

from app.accounting.pricing import Cost, format_usd
from app.domain.errors import OutpostError, kind_words
from app.domain.messages import (
    FinishReason,
    Message,
    MessageStatus,
    Resent,
    Retrying,
    Role,
    Stalled,
)
from app.domain.wording import seconds
from ui import theme
from ui.errors import window_words
from ui.markdown import render

def duration_text(ms: float) -> str:
    """A time to first token as people read it: "850 ms" under a second, then seconds to
    three figures ("3.95 s", "12.3 s", it said "3,950 ms"), then minutes ("2 min 5 s")."""
    if ms < 999.5:
        return f"{ms:.0f} ms"
    s = ms / 1000
    if s < 9.995:
        return f"{s:.2f} s"
    if s < 59.95:
        return f"{s:.1f} s"
    minutes, rest = divmod(round(s), 60)
    return f"{minutes} min {rest} s"


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
        # thousands separated, as Details writes them
        tokens = (f"{approx}{message.prompt_tokens:,} in / "
                  f"{approx}{message.completion_tokens or 0:,} out")
        if message.tokens_estimated:
            tokens += " (estimated)"
        if message.cached_prompt_tokens:
            tokens += f" ({message.cached_prompt_tokens:,} cached)"
        parts.append(tokens)
    if message.ttft_ms is not None:
        parts.append(f"TTFT {duration_text(message.ttft_ms)}")
    if message.tokens_per_s is not None:
        parts.append(f"{message.tokens_per_s:.1f} tok/s")
    if message.role is Role.ASSISTANT and message.prompt_tokens is not None:
        parts.append(cost_text(message))
    # a figure never wraps away from its unit ("42.5 / tok/s", "< / $0.00001"): the spaces
    # inside each figure do not break, only those between them
    first = 1 if message.engine or message.model else 0
    parts[first:] = [p.replace(" ", "\u00a0") for p in parts[first:]]
    return "  ·  ".join(parts)


def cost_text(message: Message) -> str:
    """"free" (local), "$0.00045" (~ when estimated; ``app.accounting.pricing.format_usd``, as
    `outpost usage` and the usage dialog write it), or "cost unknown" — never $0 for
    unknown. A reply the local model wrote is free unless its turn paid for a cloud attempt
    (a hedge that lost: the provider billed the prompt it had): then it shows that cost."""
    engines = {s.get("engine") for s in message.segments or []} or {message.engine}
    # free: nothing paid (0), or no cost kept at all; an unknown cost of the turn (a lost
    # hedge to a model with no known price) is marked estimated, and is no "free"
    if engines == {"local"} and (message.cost_usd == 0 or message.cost_usd is None and
                                 not message.cost_estimated):
        return "free"
    if message.cost_usd is None:
        return "cost unknown"
    return format_usd(Cost(message.cost_usd, message.cost_estimated))


_STATUS_NOTES = {
    MessageStatus.INTERRUPTED: "⚠ interrupted — the answer is partial",
    MessageStatus.ERROR: "⚠ error",
    MessageStatus.STREAMING: "…",
}
# what app.chat.turn stores as the error of a reply the user stopped (Esc, the Stop button)
USER_STOP_TEXT = "Stopped by the user."


def status_note(message: Message) -> tuple[str, bool]:
    """The line a reply's footer opens with, and whether it is a warning: a stream that broke
    ("⚠ interrupted — the connection broke …") or failed is one; a reply the user stopped
    says "Stopped", in the footer's own colour, for a stop the user asked for is no error."""
    if message.status is MessageStatus.INTERRUPTED and \
            message.finish_reason == FinishReason.CANCELLED.value and \
            message.error in (None, USER_STOP_TEXT):
        return "Stopped", False
    note = _STATUS_NOTES.get(message.status, "")
    if message.status is MessageStatus.INTERRUPTED and message.error:
        note = f"⚠ interrupted — {window_words(message.error)}"
    elif message.status is MessageStatus.ERROR and message.error:
        note = f"⚠ {window_words(message.error)}"
    return note, message.status in (MessageStatus.INTERRUPTED, MessageStatus.ERROR)


# Route reasons worth a line under the reply: the engine was not the one the user picked.
ROUTE_WORDS_SHOWN = ("answered locally", "continued locally", "outbox", "hedge")


def retry_text(retry: Retrying) -> str:
    """A reply's status while a cloud request waits to be sent again: "retrying in 4 s
    (attempt 2 of 3): rate limited"."""
    attempt = f"attempt {retry.attempt + 1}" + (
        f" of {retry.attempts}" if retry.attempts is not None else "")
    kind = retry.error.kind if isinstance(retry.error, OutpostError) else "bug"
    return f"retrying in {seconds(retry.wait_s)} ({attempt}): {kind_words(kind)}"


def resend_text(resent: Resent) -> str:
    """A reply's status once a refused parameter made the request go again: "fault refused
    temperature for o3-mini: re-sent without temperature" (the CLI says the same line)."""
    return resent.describe()


def stall_text(stalled: Stalled) -> str:
    """A reply's status while its provider is silent: "no data from openai for 10 s; giving
    up at 60 s" (the CLI says the same line)."""
    return stalled.describe()


def message_html(role: Role, text: str, segments: list[dict] | None) -> str:
    """A finished message's HTML: a prompt as typed, a reply's Markdown rendered, with a seam
    where another engine went on."""
    if role is Role.USER:
        return "<p style='white-space:pre-wrap'>" + escape(text) + "</p>"
    if not segments or len(segments) < 2:
        return render(text)
    html = ""
    for index, segment in enumerate(segments):
        start = segment.get("start") or 0
        end = segment.get("end")
        if index:
            label = f"{segment.get('engine')} · {segment.get('model')}"
            html += seam_html(label, segment.get("reason") or "")
        html += render(text[start:end if end is not None else len(text)])
    return html


def seam_html(label: str, reason: str) -> str:
    """A thin rule with a caption: who continued the reply, and why (in the tooltip too)."""
    why = reason.split(":")[0] if reason else ""  # "openai stream broke after 412 characters …"
    return ("<table width='100%' cellspacing='0' cellpadding='0' style='margin:6px 0'><tr>"
            f"<td style='border-top:1px dashed {theme.warning_text()}'></td></tr><tr><td>"
            f"<span style='color:{theme.warning_text()}; font-size:11px' "
            f"title='{escape(reason)}'>"
            f"↳ continued by {escape(label)}" + (f" ({escape(why)})" if why else "")
            + "</span></td></tr></table>")


def escape(text: str) -> str:
    return html.escape(text)
