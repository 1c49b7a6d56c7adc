"""Turn a messages array into the prompt text a local model was trained on.

The template comes from the GGUF metadata (``tokenizer.chat_template``), rendered with
llama-cpp-python's Jinja2 formatter, like Hugging Face transformers does. A model without a
template (a base model such as gemma-3-270m) gets a plain transcript ("User: ... / Assistant:"),
which base models continue sensibly, rather than special tokens they never saw.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from app.domain import ChatMessage, Role

PLAIN_ROLE_NAMES = {Role.SYSTEM: "System", Role.USER: "User", Role.ASSISTANT: "Assistant"}


@dataclass(frozen=True)
class FormattedPrompt:
    text: str
    stop: tuple[str, ...]  # text stop sequences implied by the template
    add_bos: bool  # whether the tokenizer should add BOS (templates add their own)
    template: str  # "gguf" or "plain"


class ChatFormatter:
    def __init__(self, template: str | None, bos_token: str, eos_token: str):
        self.template_name = "gguf" if template else "plain"
        self._jinja = None
        if template:
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
                                   template="gguf")
        lines = [f"{PLAIN_ROLE_NAMES[m.role]}: {m.content.strip()}" for m in messages]
        text = "\n\n".join(lines) + "\n\nAssistant:"
        return FormattedPrompt(text, ("\nUser:", "\nSystem:"), add_bos=True, template="plain")
