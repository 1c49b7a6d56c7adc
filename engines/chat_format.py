"""Turn a messages array into the prompt text a local model was trained on.

The template comes from the GGUF metadata (``tokenizer.chat_template``), rendered with
llama-cpp-python's Jinja2 formatter, like Hugging Face transformers does. A model without a
template (a base model such as gemma-3-270m) gets a plain transcript ("User: ... / Assistant:"),
which base models continue sensibly, rather than special tokens they never saw.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any, Sequence

from app.domain.messages import ChatMessage, Role

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


class ChatFormatter:
    def __init__(self, template: str | None, bos_token: str, eos_token: str):
        self.template_name = "gguf" if template else "plain"
        self._jinja: Any = None  # llama_cpp's Jinja2ChatFormatter (imported only with a template)
        if template:
            # deferred: llama_cpp loads only with a model
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            self._jinja = Jinja2ChatFormatter(template=template, eos_token=eos_token,
                                              bos_token=bos_token)
        self._eos = eos_token

    def format(self, messages: Sequence[ChatMessage]) -> FormattedPrompt:
        if self._jinja is not None:
            result = self._jinja(messages=[m.as_dict() for m in messages])
            stop = result.stop if isinstance(result.stop, list) else [result.stop] \
                if result.stop else []
            return FormattedPrompt(result.prompt, tuple(s for s in stop if s), add_bos=False,
                                   template="gguf", pieces=self._pieces(messages, result.prompt))
        lines = [f"{PLAIN_ROLE_NAMES[m.role]}: {m.content.strip()}" for m in messages]
        text = "\n\n".join(lines) + "\n\nAssistant:"
        # no template, no special tokens: all of it is plain text
        return FormattedPrompt(text, ("\nUser:", "\nSystem:"), add_bos=True, template="plain",
                               pieces=((text, True),))

    def _pieces(self, messages: Sequence[ChatMessage], text: str) -> tuple[tuple[str, bool], ...]:
        """Render again with a marker in place of each message's text, and cut there. Empty when
        the template does more to the text than trimming it (the caller then tokenizes the
        whole prompt with special tokens honoured, as llama.cpp's own server does)."""
        nonce = secrets.token_hex(6)
        marks = [f"\x00{nonce}:{i}\x00" for i in range(len(messages))]
        marked = self._jinja(messages=[dict(m.as_dict(), content=mark)
                                       for m, mark in zip(messages, marks)]).prompt
        pieces: list[tuple[str, bool]] = []
        rest, out = marked, text
        for i, mark in enumerate(marks):
            if rest.count(mark) != 1:
                return ()  # the template does something else with the text: no pieces
            before, rest = rest.split(mark)
            if not out.startswith(before):
                return ()
            out = out[len(before):]
            # the message's text as rendered: verbatim, or trimmed by the template
            following = rest.split(marks[i + 1])[0] if i + 1 < len(marks) else rest
            content = messages[i].content
            end = next((len(c) for c in (content, content.strip(), content.rstrip(),
                                         content.lstrip())
                        if out.startswith(c) and out[len(c):].startswith(following)), -1)
            if end < 0:
                return ()
            pieces += [(before, False), (out[:end], True)]
            out = out[end:]
        pieces.append((out, False))
        if "".join(p for p, _ in pieces) != text:
            return ()
        return tuple((p, content) for p, content in pieces if p)
