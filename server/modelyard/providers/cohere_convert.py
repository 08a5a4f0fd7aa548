"""Pure conversions between the gateway's OpenAI-shaped chat and Cohere's `POST /v2/chat`.

Request → body, response → ChatCompletion, SSE events → ChatChunks (`ChatStreamTranslator`, one per
stream), Cohere error body → UpstreamError, plus the helpers `cohere.py`'s embeddings and
completions conversions share. No I/O here: the adapter sends what these build.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import msgspec
from msgspec import UNSET

from modelyard.errors import ClientError, UpstreamError, upstream_status_to_client
from modelyard.providers.openai import retry_after
from modelyard.schema.chat import (
    ChatChunk,
    ChatCompletion,
    ChatRequest,
    Choice,
    ChunkChoice,
    Delta,
    FinishReason,
    FunctionCall,
    FunctionCallDelta,
    ImageUrlPart,
    JsonObjectFormat,
    JsonSchemaFormat,
    Message,
    NamedToolChoice,
    RefusalPart,
    ResponseMessage,
    TextPart,
    ToolCall,
    ToolCallDelta,
)
from modelyard.schema.common import PromptTokensDetails, Usage
from modelyard.transport import UpstreamResponse

CHAT_EXTRAS = frozenset(
    {"documents", "citation_options", "safety_mode", "strict_tools", "logprobs", "thinking", "priority"}
)
"""Cohere-native chat fields a client may send as extras; any other extra is dropped (Cohere
rejects unknown fields), as are the typed fields Cohere has no equivalent for: user, metadata,
logit_bias, logprobs, top_logprobs and parallel_tool_calls."""

FINISH: dict[str, FinishReason] = {
    "COMPLETE": "stop",
    "STOP_SEQUENCE": "stop",
    "MAX_TOKENS": "length",
    "TIMEOUT": "length",
    "TOOL_CALL": "tool_calls",
    "ERROR_TOXIC": "content_filter",
    "ERROR_LIMIT": "length",
}
"""Cohere finish reasons (v2 chat and v1 generate) → OpenAI's; ERROR (and anything unknown but
ERROR-like) becomes an UpstreamError instead."""

_CODE_BY_STATUS = {
    401: "provider_authentication_failed",
    403: "provider_permission_denied",
    429: "rate_limit_exceeded",
    498: "content_filter",
}


# --------------------------------------------------------------------------------------------------
# Cohere's response shapes (only what the gateway reads)


class Units(msgspec.Struct):
    input_tokens: float | None = None
    output_tokens: float | None = None


class CohereUsage(msgspec.Struct):
    billed_units: Units | None = None
    tokens: Units | None = None
    cached_tokens: float | None = None


class CohereFunction(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class CohereToolCall(msgspec.Struct):
    id: str | None = None
    function: CohereFunction | None = None


class CohereContent(msgspec.Struct):
    type: str | None = None
    text: str | None = None


class CohereMessage(msgspec.Struct):
    content: list[CohereContent] | None = None
    tool_calls: list[CohereToolCall] | None = None
    tool_plan: str | None = None


class CohereChatResponse(msgspec.Struct):
    id: str = ""
    finish_reason: str | None = None
    message: CohereMessage | None = None
    usage: CohereUsage | None = None


class StreamMessage(msgspec.Struct):
    # Objects in deltas; message-start may carry empty lists of either.
    content: CohereContent | list[CohereContent] | None = None
    tool_calls: CohereToolCall | list[CohereToolCall] | None = None
    tool_plan: str | None = None


class StreamDelta(msgspec.Struct):
    message: StreamMessage | None = None
    finish_reason: str | None = None
    usage: CohereUsage | None = None
    error: str | None = None


class CohereStreamEvent(msgspec.Struct):
    type: str = ""
    id: str | None = None
    index: int | None = None
    delta: StreamDelta | None = None


class CohereMeta(msgspec.Struct):
    billed_units: Units | None = None
    tokens: Units | None = None


class CohereErrorBody(msgspec.Struct):
    message: str | None = None
    id: str | None = None


# --------------------------------------------------------------------------------------------------
# Small helpers


def refused(provider: str, what: str, param: str | None = None) -> ClientError:
    return ClientError(
        f"Provider '{provider}' (type cohere) does not support {what}.",
        status=400,
        param=param,
        code="unsupported_parameter",
    )


def _plain(value: Any) -> Any:
    """An extras value as a plain Python value (REST extras are still-encoded JSON)."""
    return msgspec.json.decode(value) if isinstance(value, msgspec.Raw) else value


def is_set(value: Any) -> bool:
    return value is not UNSET and value is not None


def stop_list(stop: Any) -> list[str] | None:
    if isinstance(stop, str):
        return [stop] if stop else None
    if isinstance(stop, list):
        return [s for s in stop if s] or None
    return None


def add_extras(extras: dict[str, Any], allowed: frozenset[str], payload: dict[str, Any]) -> None:
    """Extras only add fields: they never replace a typed one, the model or the stream mode."""
    for key, value in extras.items():
        if key in allowed and key not in payload:
            payload[key] = _plain(value)


def finish_reason(provider: str, reason: str | None, detail: str | None = None) -> FinishReason:
    if reason is None:
        return "stop"
    mapped = FINISH.get(reason)
    if mapped is not None:
        return mapped
    if reason.startswith("ERROR") or reason == "USER_CANCEL":
        raise UpstreamError(
            f"Provider '{provider}' failed while generating ({reason}{': ' + detail if detail else ''}).",
            status=502,
            code="upstream_generation_error",
            provider=provider,
        )
    return "stop"


def usage_of(usage: CohereUsage | CohereMeta | None) -> Usage:
    """Cohere's own counts: `tokens` (what the model processed) or else `billed_units`."""
    counts = (usage.tokens or usage.billed_units) if usage else None
    prompt = int(counts.input_tokens or 0) if counts else 0
    completion = int(counts.output_tokens or 0) if counts else 0
    result = Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)
    cached = usage.cached_tokens if isinstance(usage, CohereUsage) else None
    if cached is not None:
        result.prompt_tokens_details = PromptTokensDetails(cached_tokens=int(cached))
    return result


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


# --------------------------------------------------------------------------------------------------
# Chat request


def _text_parts(provider: str, message: Message, images: bool) -> str | list[dict[str, Any]]:
    content = message.content
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    parts: list[dict[str, Any]] = []
    for part in content:
        if isinstance(part, TextPart):
            parts.append({"type": "text", "text": part.text})
        elif isinstance(part, RefusalPart):
            parts.append({"type": "text", "text": part.refusal})
        elif isinstance(part, ImageUrlPart) and images:
            image: dict[str, Any] = {"url": part.image_url.url}
            if isinstance(part.image_url.detail, str):
                image["detail"] = part.image_url.detail
            parts.append({"type": "image_url", "image_url": image})
        else:
            kind = part.__struct_config__.tag
            raise refused(provider, f"{kind} content in {message.role} messages", "messages")
    return parts


def _joined(content: str | list[dict[str, Any]]) -> str:
    return content if isinstance(content, str) else "".join(p.get("text", "") for p in content)


def _message(provider: str, message: Message) -> dict[str, Any]:
    role = message.role
    if role in ("system", "developer"):
        return {"role": "system", "content": _text_parts(provider, message, images=False)}
    if role == "user":
        return {"role": "user", "content": _text_parts(provider, message, images=True)}
    if role == "tool":
        content = _text_parts(provider, message, images=False)
        return {"role": "tool", "tool_call_id": message.tool_call_id or "", "content": content or " "}
    out: dict[str, Any] = {"role": "assistant"}
    content = _text_parts(provider, message, images=False)
    if isinstance(message.tool_calls, list) and message.tool_calls:
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.function.name, "arguments": call.function.arguments},
            }
            for call in message.tool_calls
        ]
        # Cohere's place for text that accompanies tool calls (what it streams as tool-plan-delta).
        if text := _joined(content):
            out["tool_plan"] = text
    elif content:
        out["content"] = content
    return out


def _tools(request: ChatRequest, payload: dict[str, Any]) -> None:
    tools = request.tools if isinstance(request.tools, list) else []
    choice = request.tool_choice
    if isinstance(choice, NamedToolChoice):
        # Cohere has no named choice: offer only that function and require a call.
        tools = [t for t in tools if t.function.name == choice.function.name]
        choice = "required"
    if tools:
        converted = []
        for tool in tools:
            function: dict[str, Any] = {"name": tool.function.name}
            if isinstance(tool.function.description, str):
                function["description"] = tool.function.description
            parameters = tool.function.parameters
            function["parameters"] = (
                parameters if isinstance(parameters, dict) else {"type": "object", "properties": {}}
            )
            converted.append({"type": "function", "function": function})
        payload["tools"] = converted
        if any(t.function.strict is True for t in tools):
            payload["strict_tools"] = True
        if choice in ("none", "required"):
            payload["tool_choice"] = str(choice).upper()


def build_chat(provider: str, request: ChatRequest, model_id: str, *, stream: bool) -> dict[str, Any]:
    """The `/v2/chat` body for a chat request."""
    if isinstance(request.n, int) and request.n > 1:
        raise refused(provider, "n > 1 (one choice per request)", "n")
    payload: dict[str, Any] = {
        "model": model_id,
        "messages": [_message(provider, m) for m in request.messages],
        "stream": stream,
    }
    _tools(request, payload)
    response_format = request.response_format
    if isinstance(response_format, JsonObjectFormat):
        payload["response_format"] = {"type": "json_object"}
    elif isinstance(response_format, JsonSchemaFormat):
        payload["response_format"] = {"type": "json_object"}
        if isinstance(response_format.json_schema.schema, dict):
            payload["response_format"]["json_schema"] = response_format.json_schema.schema
    if stop := stop_list(request.stop):
        payload["stop_sequences"] = stop
    limit = request.max_completion_tokens if is_set(request.max_completion_tokens) else request.max_tokens
    for key, value in (
        ("temperature", request.temperature),
        ("p", request.top_p),
        ("k", request.top_k),
        ("max_tokens", limit),
        ("seed", request.seed),
        ("frequency_penalty", request.frequency_penalty),
        ("presence_penalty", request.presence_penalty),
    ):
        if is_set(value):
            payload[key] = value
    add_extras(request.extras, CHAT_EXTRAS, payload)
    return payload


# --------------------------------------------------------------------------------------------------
# Chat response and stream


def chat_completion(provider: str, response: CohereChatResponse, model_id: str) -> ChatCompletion:
    message = response.message or CohereMessage()
    finish = finish_reason(provider, response.finish_reason)
    text = "".join(p.text or "" for p in message.content or [] if p.type in (None, "text"))
    calls = [
        ToolCall(
            id=call.id or new_id("call"),
            function=FunctionCall(
                name=(call.function.name if call.function else None) or "",
                arguments=(call.function.arguments if call.function else None) or "{}",
            ),
        )
        for call in message.tool_calls or []
    ]
    if not text and calls and message.tool_plan:
        text = message.tool_plan
    reply = ResponseMessage(content=text or (None if calls else ""), tool_calls=calls if calls else UNSET)
    return ChatCompletion(
        id=response.id or new_id("chatcmpl"),
        created=int(time.time()),
        model=model_id,
        choices=[Choice(index=0, message=reply, finish_reason=finish)],
        usage=usage_of(response.usage),
    )


class ChatStreamTranslator:
    """Cohere v2 stream events → ChatChunks, as they arrive (one translator per stream)."""

    def __init__(self, provider: str, model_id: str, include_usage: bool) -> None:
        self.provider = provider
        self.model_id = model_id
        self.include_usage = include_usage
        self.id = new_id("chatcmpl")
        self.created = int(time.time())
        self.started = False
        self.finished = False
        self._tool_index: dict[int, int] = {}

    def _chunk(self, delta: Delta, finish: FinishReason | None = None) -> ChatChunk:
        return ChatChunk(
            id=self.id,
            created=self.created,
            model=self.model_id,
            choices=[ChunkChoice(index=0, delta=delta, finish_reason=finish)],
            usage=None if self.include_usage else UNSET,
        )

    def _opening(self) -> list[ChatChunk]:
        if self.started:
            return []
        self.started = True
        return [self._chunk(Delta(role="assistant", content=""))]

    def translate(self, event: CohereStreamEvent) -> list[ChatChunk]:
        kind = event.type
        delta = event.delta or StreamDelta()
        message = delta.message or StreamMessage()
        if kind == "message-start":
            if event.id:
                self.id = event.id
            return self._opening()
        out = self._opening()
        if kind in ("content-start", "content-delta"):
            content = message.content
            if isinstance(content, CohereContent) and content.text and content.type in (None, "text"):
                out.append(self._chunk(Delta(content=content.text)))
        elif kind == "tool-plan-delta":
            if message.tool_plan:
                out.append(self._chunk(Delta(content=message.tool_plan)))
        elif kind in ("tool-call-start", "tool-call-delta"):
            call = message.tool_calls
            out += self._tool_chunk(
                kind, event.index or 0, call if isinstance(call, CohereToolCall) else None
            )
        elif kind == "message-end":
            self.finished = True
            finish = finish_reason(self.provider, delta.finish_reason, delta.error)
            out.append(self._chunk(Delta(), finish))
            if self.include_usage:
                out.append(
                    ChatChunk(
                        id=self.id,
                        created=self.created,
                        model=self.model_id,
                        choices=[],
                        usage=usage_of(delta.usage),
                    )
                )
        elif kind == "error":
            raise UpstreamError(
                f"Provider '{self.provider}' failed mid-stream{': ' + delta.error if delta.error else ''}.",
                status=502,
                code="upstream_generation_error",
                provider=self.provider,
            )
        return out

    def _tool_chunk(self, kind: str, index: int, call: CohereToolCall | None) -> list[ChatChunk]:
        call = call or CohereToolCall()
        function = call.function or CohereFunction()
        if kind == "tool-call-start" or index not in self._tool_index:
            position = self._tool_index.setdefault(index, len(self._tool_index))
            opening = ToolCallDelta(
                index=position,
                id=call.id or new_id("call"),
                type="function",
                function=FunctionCallDelta(name=function.name or "", arguments=function.arguments or ""),
            )
            return [self._chunk(Delta(tool_calls=[opening]))]
        if not function.arguments:
            return []
        fragment = ToolCallDelta(
            index=self._tool_index[index], function=FunctionCallDelta(arguments=function.arguments)
        )
        return [self._chunk(Delta(tool_calls=[fragment]))]


# --------------------------------------------------------------------------------------------------
# Errors


def parse_error(provider: str, response: UpstreamResponse, secret: str) -> UpstreamError:
    """A Cohere error (`{"message": ..., "id"?}`) → the gateway's error, classified by status."""
    upstream = response.status
    status = 400 if upstream == 498 else upstream_status_to_client(upstream)
    try:
        detail = msgspec.json.decode(response.body, type=CohereErrorBody)
    except msgspec.MsgspecError:
        detail = CohereErrorBody()
    if upstream == 401:
        message = f"Provider '{provider}' rejected the gateway's credentials."
    elif detail.message:
        message = detail.message.replace(secret, "****") if secret else detail.message
    else:
        message = f"Provider '{provider}' answered HTTP {upstream}."
    return UpstreamError(
        message,
        status=status,
        code=_CODE_BY_STATUS.get(upstream),
        retry_after=retry_after(response.headers),
        upstream_status=upstream,
        provider=provider,
    )
