"""OpenAI-compatible chat completions over SSE: OpenAI, OpenRouter, Groq, Together, Ollama (/v1),
vLLM, llama.cpp's server and LM Studio all speak it (presets in ``app.config.providers``)."""
from __future__ import annotations

import dataclasses
import json
from typing import Sequence

from app.config.provider_facts import note_refuses_json_schema, refuses_json_schema
from app.domain.errors import BadRequest
from app.domain.messages import ChatMessage, ChatRequest, FinishReason, Role
from app.domain.sampling import KNOB_NAMES, sent_params, strict_ok, takes_max_completion_tokens
from engines.base import StreamOutcome
from engines.cloud import CloudEngine, StreamState
from engines.http_policy import error_from_stream_event
from engines.sse import ServerSentEvent, looks_like_json

# the two names of the reply's token limit: a server that refuses one gets the other
_LIMIT_NAMES = ("max_tokens", "max_completion_tokens")
_FINISH = {"stop": FinishReason.STOP, "length": FinishReason.LENGTH,
           "tool_calls": FinishReason.STOP, "function_call": FinishReason.STOP,
           "content_filter": FinishReason.ERROR}


class OpenAICompatEngine(CloudEngine):
    kind = "openai"
    # the server refused response_format json_schema for this model (many OpenAI-compatible
    # servers know only json_object): structured requests go as json_object from the start.
    # Learnt once and kept (app.config.provider_facts), so later runs do not pay for it again.
    _refused: bool | None = None  # read once per engine
    # the parameters a server may refuse for a model (OpenAI's reasoning models: temperature,
    # top_p, the penalties; some servers stop; one of the two names of the token limit):
    # learnt, not sent again (CloudEngine.resend)
    refusable = {name: name for name in (*_LIMIT_NAMES, *KNOB_NAMES)}

    @property
    def json_schema_refused(self) -> bool:
        if self._refused is None:
            self._refused = refuses_json_schema(self.config.base_url, self.model)
        return self._refused

    def outcome(self) -> StreamOutcome:
        return dataclasses.replace(super().outcome(),
                                   json_schema_refused=self.json_schema_refused)

    def resend(self, exc: BadRequest, request: ChatRequest, sent: dict) -> str | None:
        """Also asked again, before any text, when structured output "json_schema where
        supported, else json_object" met a server that refuses json_schema: with json_object
        (the reply is still validated against the schema by the caller), learnt like a refused
        parameter. A stop sequence refused is watched for by Outpost (``unsent_stops``)."""
        said = super().resend(exc, request, sent)
        if said is not None:
            return said
        text = str(exc).lower()
        schema_refused = any(w in text for w in ("response_format", "json_schema",
                                                 "response format"))
        format_sent = sent.get("response_format")
        if schema_refused and isinstance(format_sent, dict) and \
                format_sent.get("type") == "json_schema":
            if not self.json_schema_refused:
                self._refused = True
                note_refuses_json_schema(self.config.base_url, self.model)
            return "with json_object in place of json_schema"
        return None

    def messages_as_sent(self, messages: Sequence[ChatMessage],
                         response_format: dict | None) -> Sequence[ChatMessage]:
        """JSON mode sent as ``json_object`` gains ``json_object_messages``' instruction (and,
        after a json_schema refusal, the schema). A schema not known to be refused is counted
        in the prompt too, a safe upper bound: a server that refuses it on this very request
        is asked again with the schema in the prompt (``resend``), after the fit; one that
        takes it as ``json_schema`` builds it into the prompt it bills (OpenAI does) or
        sends fewer tokens than counted."""
        if not response_format:
            return messages
        sent = json_object_messages([m.as_dict() for m in messages],
                                    response_format.get("schema"))
        return tuple(ChatMessage(Role(m["role"]), m["content"]) for m in sent)

    def build_request(self, request: ChatRequest) -> tuple[str, dict, dict]:
        body: dict = {
            "model": self.model,
            "messages": [m.as_dict() for m in request.messages],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        # only what the capability map allows, less what this model refuses
        knobs = sent_params("openai", request, self.model, self.refused_knobs)
        max_tokens = knobs.pop("max_tokens")
        knobs.pop("response_format", None)
        body.update(knobs)
        rf = request.response_format
        if rf:  # structured output: json_schema where there is a schema, else json_object
            schema = rf.get("schema") if not self.json_schema_refused else None
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "reply", "schema": schema, "strict": strict_ok(schema)}} \
                if schema else {"type": "json_object"}
            if not schema:
                body["messages"] = json_object_messages(body["messages"], rf.get("schema"))
        body[self._limit_name()] = max_tokens
        if request.user:
            body["user"] = request.user
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return f"{self.config.base_url}/chat/completions", headers, body

    def _limit_name(self) -> str:
        """Reasoning models take max_completion_tokens and reject max_tokens; a server that
        refused one of the two names gets the other."""
        name = "max_completion_tokens" if takes_max_completion_tokens(self.model) \
            else "max_tokens"
        if name in self.refused_knobs:
            return next(other for other in _LIMIT_NAMES if other != name)
        return name

    def read_event(self, event: ServerSentEvent, state: StreamState) -> str | None:
        if event.data.strip() == "[DONE]":
            state.done = True
            return None
        try:
            data = event.json()
        except ValueError:
            if looks_like_json(event.data):
                raise  # broken JSON: its text is lost; the engine ends the reply, saying so
            return None  # not JSON at all: tolerated like a comment
        if not isinstance(data, dict):
            return None
        if "error" in data:
            error = data["error"] if isinstance(data["error"], dict) else {"message": data["error"]}
            state.error = error_from_stream_event(
                str(error.get("type") or error.get("code") or ""), str(error.get("message", "")),
                self.config.name)
            return None
        usage = data.get("usage")
        if not isinstance(usage, dict):
            usage = {}
        prompt = _count(usage.get("prompt_tokens"))
        if prompt is not None:  # (a count that is not a number is left out: then estimated)
            state.prompt_tokens = prompt
            state.completion_tokens = _count(usage.get("completion_tokens")) or 0
            details = usage.get("prompt_tokens_details")
            state.cached_prompt_tokens = (_count(details.get("cached_tokens")) or 0) \
                if isinstance(details, dict) else 0
        text = ""
        # an event of another shape (a choice that is not an object, content that is not
        # text) raises here: the engine ends the reply with a ProviderError (CloudEngine)
        for choice in data.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            content = delta.get("content") or ""
            if isinstance(content, list):  # content parts, as some servers send them
                content = "".join(part["text"] for part in content
                                  if part.get("type", "text") == "text")
            text += content
            reason = choice.get("finish_reason")
            if reason:
                state.finish_reason = _FINISH.get(reason, FinishReason.STOP)
                if reason == "content_filter":
                    state.extra["filtered"] = True
        state.text += text
        return text or None

    def list_models(self) -> list[str]:
        """``GET /models`` where the server has it."""
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        return self.get_model_ids(f"{self.config.base_url}/models", headers)


def _count(value) -> int | None:
    """A token count as sent (12, or 12.0 from a server that writes floats), or None when it
    is not one (a string, a fraction, a negative number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        return None
    return int(value) if isinstance(value, int) or value.is_integer() else None


JSON_INSTRUCTION = "Reply with a JSON object."


def json_object_messages(messages: list[dict], schema: dict | None) -> list[dict]:
    """The messages of a ``json_object`` request: OpenAI refuses JSON mode (HTTP 400) unless
    the word "JSON" is in the messages, and a model told nothing may write a wall of
    whitespace until max_tokens. When no message says JSON, the system message (a new one if
    there is none) gains ``JSON_INSTRUCTION``; with a schema the server would not take as
    ``json_schema``, the schema too, so the model still knows the shape."""
    wanted = JSON_INSTRUCTION if schema is None else \
        f"Reply with a JSON object matching this JSON Schema: {json.dumps(schema)}"
    if schema is None and any("json" in str(m.get("content", "")).lower() for m in messages):
        return messages
    if messages and messages[0].get("role") == "system":
        first = dict(messages[0], content=f"{messages[0]['content']}\n\n{wanted}".lstrip())
        return [first, *messages[1:]]
    return [{"role": "system", "content": wanted}, *messages]
