"""Anthropic's Messages API over SSE."""
from __future__ import annotations

from app.domain.messages import ChatRequest, FinishReason, Role
from app.domain.sampling import sent_params
from engines.cloud import CloudEngine, StreamState, model_ids
from engines.http_policy import error_from_stream_event
from engines.sse import ServerSentEvent, looks_like_json

ANTHROPIC_VERSION = "2023-06-01"
_MAX_MODEL_PAGES = 50  # a listing that never ends (a server's bug) stops there
_FINISH = {"end_turn": FinishReason.STOP, "stop_sequence": FinishReason.STOP,
           "tool_use": FinishReason.STOP, "pause_turn": FinishReason.STOP,
           "max_tokens": FinishReason.LENGTH, "refusal": FinishReason.ERROR}


def _messages(request: ChatRequest) -> tuple[str, list[dict]]:
    """System messages go top-level; consecutive same-role turns are merged (the API requires
    user/assistant alternation, starting with user)."""
    system = "\n\n".join(m.content for m in request.messages if m.role is Role.SYSTEM)
    merged: list[dict] = []
    for message in request.messages:
        if message.role is Role.SYSTEM:
            continue
        if merged and merged[-1]["role"] == message.role.value:
            merged[-1]["content"] += "\n\n" + message.content
        else:
            merged.append({"role": message.role.value, "content": message.content})
    return system, merged


class AnthropicEngine(CloudEngine):
    kind = "anthropic"
    # the sampling parameters a model may refuse ("`temperature` is deprecated for this
    # model.", "`temperature` and `top_p` cannot both be specified for this model."): learnt,
    # not sent again (CloudEngine.resend). max_tokens is required, never dropped
    refusable = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k",
                 "stop_sequences": "stop"}

    def build_request(self, request: ChatRequest) -> tuple[str, dict, dict]:
        system, messages = _messages(request)
        body: dict = {
            "model": self.model,
            "max_tokens": request.max_tokens,  # required by the API
            "messages": messages,
            "stream": True,
        }
        # only what the capability map allows (temperature capped at 1, top_p only when
        # narrowed: see app.domain.sampling.sent_params), less what this model refuses
        knobs = sent_params("anthropic", request, self.model, self.refused_knobs)
        knobs.pop("max_tokens")
        knobs.pop("response_format", None)
        rf = request.response_format
        if rf:  # structured output: a forced call of a tool whose input is the reply
            body["tools"] = [{"name": "reply", "description": "Give your reply as this tool's "
                              "input, matching its schema.",
                              "input_schema": rf.get("schema") or {"type": "object"}}]
            body["tool_choice"] = {"type": "tool", "name": "reply"}
        if "stop" in knobs:
            knobs["stop_sequences"] = knobs.pop("stop")
        body.update(knobs)
        if system:
            body["system"] = system
        if request.user:
            body["metadata"] = {"user_id": request.user}
        headers = {"Content-Type": "application/json", "anthropic-version": ANTHROPIC_VERSION}
        if self.api_key:
            headers["x-api-key"] = self.api_key
        return f"{self.config.base_url}/v1/messages", headers, body

    def read_event(self, event: ServerSentEvent, state: StreamState) -> str | None:
        if event.event == "ping" or not event.data.strip():
            return None
        try:
            data = event.json()
        except ValueError:
            if looks_like_json(event.data):
                raise  # broken JSON: its text is lost; the engine ends the reply, saying so
            return None  # not JSON at all: tolerated like a comment
        kind = event.event if event.event != "message" else data.get("type", "")
        if kind == "error":
            error = data.get("error", {}) if isinstance(data, dict) else {}
            state.error = error_from_stream_event(str(error.get("type", "")),
                                                  str(error.get("message", "")), self.config.name)
        elif kind == "message_start":
            usage = (data.get("message") or {}).get("usage") or {}
            if usage.get("input_tokens") is not None:
                state.prompt_tokens = int(usage.get("input_tokens") or 0) + int(
                    usage.get("cache_read_input_tokens") or 0) + int(
                    usage.get("cache_creation_input_tokens") or 0)
                state.cached_prompt_tokens = int(usage.get("cache_read_input_tokens") or 0)
            # message_start's output_tokens is a placeholder; the count comes in message_delta
        elif kind == "content_block_delta":
            delta = data.get("delta") or {}
            if delta.get("type") in ("text_delta", "input_json_delta"):
                # a forced tool call (structured output) streams its input as JSON text
                text = delta.get("text") or delta.get("partial_json") or ""
                state.text += text
                return text or None
        elif kind == "message_delta":
            usage = data.get("usage") or {}
            if usage.get("output_tokens") is not None:
                state.completion_tokens = int(usage["output_tokens"])
            reason = (data.get("delta") or {}).get("stop_reason")
            if reason:
                state.finish_reason = _FINISH.get(reason, FinishReason.STOP)
                # the stop reason (with the final usage) ends the reply: message_stop after it
                # carries nothing, so a stream that loses it is complete, not interrupted
                state.done = True
        elif kind == "message_stop":
            state.done = True
        return None

    def list_models(self) -> list[str]:
        """``GET /v1/models`` (also how "Test connection" checks the key), every page: the
        listing is paginated (20 models a page unless ``limit`` says more, at most 1000;
        ``has_more`` and ``after_id`` lead on)."""
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        if self.api_key:
            headers["x-api-key"] = self.api_key
        ids: set[str] = set()
        params: dict = {"limit": 1000}
        for _ in range(_MAX_MODEL_PAGES):
            page = self.get_json(f"{self.config.base_url}/v1/models", headers, params)
            ids.update(model_ids(page))
            last = page.get("last_id")
            if page.get("has_more") is not True or not isinstance(last, str) or not last:
                break
            params = {"limit": 1000, "after_id": last}
        return sorted(ids)
