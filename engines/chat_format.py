"""Turn a messages array into the prompt text a local model was trained on.

The template comes from the GGUF metadata (``tokenizer.chat_template``), rendered in Jinja's
sandbox as Hugging Face transformers and llama-cpp-python do, with a time and size limit
(``engines/template_sandbox.py``: the template is untrusted input from the model file). A model without a
template (a base model such as gemma-3-270m) gets a plain transcript ("User: ... / Assistant:"),
which base models continue sensibly, rather than special tokens they never saw.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any, Sequence

from app.domain.messages import ChatMessage, Role
from engines.template_sandbox import GuardedTemplate

PLAIN_ROLE_NAMES = {Role.SYSTEM: "System", Role.USER: "User", Role.ASSISTANT: "Assistant"}


@dataclass(frozen=True)
class FormattedPrompt:
    text: str
    stop: tuple[str, ...]  # text stop sequences implied by the template
    add_bos: bool  # whether the tokenizer should add BOS (templates add their own)
    template: str  # "gguf" or "plain"
    # the text cut into (piece, is_message_content): the template's own pieces are tokenized
    # with special-token syntax honoured, the messages' text as plain text, so a user who types
    # "<|im_end|><|im_start|>system" gets those characters, not a forged turn
    pieces: tuple[tuple[str, bool], ...] = field(default=())
    # which of ``pieces`` are an assistant message's text (the local engine evaluates each
    # reply as a batch of its own, so a follow-up can reuse the cache of the reply it wrote)
    assistant_pieces: frozenset[int] = field(default=frozenset())


class ChatFormatter:
    """``source`` names the model file in the sentences of a broken template."""

    def __init__(self, template: str | None, bos_token: str, eos_token: str,
                 source: str = "the model file"):
        self.template_name = "gguf" if template else "plain"
        self._template = GuardedTemplate(template, source) if template else None
        self._bos, self._eos = bos_token, eos_token

    def _jinja(self, messages: list[dict[str, Any]]) -> str:
        assert self._template is not None
        # more text than this is no prompt any context window holds: the template's doing
        limit = 4 * sum(len(str(m.get("content") or "")) for m in messages) + (1 << 20)
        return self._template.render(limit, messages=messages, bos_token=self._bos,
                                     eos_token=self._eos, add_generation_prompt=True,
                                     tools=None, tool_choice=None, functions=None,
                                     function_call=None)

    def format(self, messages: Sequence[ChatMessage]) -> FormattedPrompt:
        if self._template is not None:
            prompt = self._jinja([m.as_dict() for m in messages])
            stop = (self._eos,) if self._eos else ()
            pieces, assistant = self._pieces(messages, prompt)
            return FormattedPrompt(prompt, stop, add_bos=False, template="gguf",
                                   pieces=pieces, assistant_pieces=assistant)
        lines = [f"{PLAIN_ROLE_NAMES[m.role]}: {m.content.strip()}" for m in messages]
        text = "\n\n".join(lines) + "\n\nAssistant:"
        # no template, no special tokens: all of it is plain text
        return FormattedPrompt(text, ("\nUser:", "\nSystem:"), add_bos=True, template="plain",
                               pieces=((text, True),))

    def _pieces(self, messages: Sequence[ChatMessage],
                text: str) -> tuple[tuple[tuple[str, bool], ...], frozenset[int]]:
        """Render again with a marker in place of each message's text, and cut there; with the
        indexes of the pieces that are an assistant's text. Empty when the template does more
        to the text than trimming it (the caller then tokenizes the whole prompt with special
        tokens honoured, as llama.cpp's own server does)."""
        none: tuple[tuple[tuple[str, bool], ...], frozenset[int]] = ((), frozenset())
        nonce = secrets.token_hex(6)
        marks = [f"\x00{nonce}:{i}\x00" for i in range(len(messages))]
        marked = self._jinja([dict(m.as_dict(), content=mark)
                              for m, mark in zip(messages, marks)])
        pieces: list[tuple[str, bool]] = []
        roles: list[Role | None] = []
        rest, out = marked, text
        for i, mark in enumerate(marks):
            if rest.count(mark) != 1:
                return none  # the template does something else with the text: no pieces
            before, rest = rest.split(mark)
            if not out.startswith(before):
                return none
            out = out[len(before):]
            # the message's text as rendered: verbatim, or trimmed by the template
            following = rest.split(marks[i + 1])[0] if i + 1 < len(marks) else rest
            content = messages[i].content
            end = next((len(c) for c in (content, content.strip(), content.rstrip(),
                                         content.lstrip())
                        if out.startswith(c) and out[len(c):].startswith(following)), -1)
            if end < 0:
                return none
            pieces += [(before, False), (out[:end], True)]
            roles += [None, messages[i].role]
            out = out[end:]
        pieces.append((out, False))
        roles.append(None)
        if "".join(p for p, _ in pieces) != text:
            return none
        kept = [(piece, role) for piece, role in zip(pieces, roles) if piece[0]]
        return (tuple(piece for piece, _ in kept),
                frozenset(i for i, (_, role) in enumerate(kept) if role is Role.ASSISTANT))
