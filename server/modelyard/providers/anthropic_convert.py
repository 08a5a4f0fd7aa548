"""Pure conversions between the gateway's OpenAI-shaped chat and Anthropic's Messages API.

Request → `/v1/messages` body, Messages response → ChatCompletion, Anthropic error body or
stream error event → UpstreamError. No I/O here: the adapter in `anthropic.py` sends what these
functions build (and translates stream events with its `StreamTranslator`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import msgspec
from msgspec import UNSET

from modelyard.errors import ClientError, UpstreamError, upstream_status_to_client
from modelyard.providers.openai import retry_after
from modelyard.schema.chat import (
    ChatCompletion,
    ChatRequest,
    Choice,
    FinishReason,
    FunctionCall,
    ImageUrlPart,
    JsonObjectFormat,
    JsonSchemaFormat,
    Message,
    NamedToolChoice,
    RefusalPart,
    ResponseMessage,
    TextPart,
    Tool,
    ToolCall,
)
from modelyard.schema.common import CompletionTokensDetails, PromptTokensDetails, Usage

JSON_PREFILL = "{"
JSON_INSTRUCTION = "Respond with a single valid JSON object and nothing else: no prose, no code fences."
PASSED_EXTRAS = frozenset(
    {
        "thinking",
        "service_tier",
        "output_config",
        "container",
        "mcp_servers",
        "context_management",
        "inference_geo",
        "cache_control",
        "speed",
    }
)
"""Anthropic-native fields a client may send as extras; any other extra is dropped (Anthropic
rejects unknown fields with a 400)."""

FINISH: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

STATUS_BY_ERROR_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


# --------------------------------------------------------------------------------------------------
# Request


def _bad(message: str, param: str = "messages") -> ClientError:
    return ClientError(message, status=400, param=param, code="unsupported_parameter")


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(part.text for part in content if isinstance(part, TextPart))
    return ""


def image_block(url: str) -> dict[str, Any]:
    """An image part: a base64 data URL becomes an inline source, any other URL a url source."""
    if url.startswith("data:"):
        header, sep, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if not sep or encoding != "base64" or not media_type:
            raise _bad("Image data URLs must be base64 encoded (data:<media type>;base64,<data>).")
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _content_blocks(content: Any, provider: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content if isinstance(content, list) else []:
        if isinstance(part, TextPart):
            if part.text:
                blocks.append({"type": "text", "text": part.text})
        elif isinstance(part, ImageUrlPart):
            blocks.append(image_block(part.image_url.url))
        elif isinstance(part, RefusalPart):
            blocks.append({"type": "text", "text": part.refusal})
        else:
            kind = type(part).__name__.removesuffix("Part").lower()
            raise _bad(f"Provider '{provider}' (type anthropic) does not accept {kind} content parts.")
    return blocks


def _tool_use_blocks(message: Message) -> list[dict[str, Any]]:
    blocks = []
    for call in message.tool_calls or []:
        try:
            arguments = msgspec.json.decode(call.function.arguments or "{}")
        except msgspec.DecodeError:
            raise _bad(f"Tool call {call.id} has arguments that are not valid JSON.") from None
        if not isinstance(arguments, dict):
            raise _bad(f"Tool call {call.id} has arguments that are not a JSON object.")
        blocks.append({"type": "tool_use", "id": call.id, "name": call.function.name, "input": arguments})
    return blocks


def convert_messages(messages: list[Message], provider: str) -> tuple[str, list[dict[str, Any]]]:
    """(system text, Anthropic messages). Consecutive same-role turns are merged, tool results
    become tool_result blocks of a user turn."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.role in ("system", "developer"):
            text = _text_of(message.content)
            if text:
                system.append(text)
            continue
        if message.role == "tool":
            role = "user"
            blocks = [
                {
                    "type": "tool_result",
                    "tool_use_id": message.tool_call_id or "",
                    "content": message.content
                    if isinstance(message.content, str)
                    else _content_blocks(message.content, provider),
                }
            ]
        elif message.role == "assistant":
            role = "assistant"
            blocks = _content_blocks(message.content, provider) + _tool_use_blocks(message)
        else:
            role = "user"
            blocks = _content_blocks(message.content, provider)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return "\n\n".join(system), turns


def _compact(message: dict[str, Any]) -> dict[str, Any]:
    """A turn of one text block is sent with string content, as the SDK does."""
    blocks = message["content"]
    if len(blocks) == 1 and blocks[0]["type"] == "text":
        return {"role": message["role"], "content": blocks[0]["text"]}
    return message


def _tool(tool: Tool) -> dict[str, Any]:
    function = tool.function
    schema = function.parameters if isinstance(function.parameters, dict) else {}
    native: dict[str, Any] = {"name": function.name}
    if function.description:
        native["description"] = function.description
    native["input_schema"] = {"type": "object", **schema} if "type" not in schema else schema
    if function.strict is True:
        native["strict"] = True
    return native


def _tool_choice(request: ChatRequest) -> dict[str, Any] | None:
    choice = request.tool_choice
    if isinstance(choice, NamedToolChoice):
        result: dict[str, Any] = {"type": "tool", "name": choice.function.name}
    elif choice == "required":
        result = {"type": "any"}
    elif choice == "none":
        return {"type": "none"}
    else:
        result = {"type": "auto"}
    if request.parallel_tool_calls is False:
        result["disable_parallel_tool_use"] = True
    elif choice is UNSET:
        return None
    return result


def json_prefill(request: ChatRequest) -> str:
    """The assistant prefill that emulates response_format json_object ("" when not asked)."""
    if not isinstance(request.response_format, JsonObjectFormat):
        return ""
    # A conversation that already ends with an assistant turn is the client's own prefill.
    return "" if request.messages and request.messages[-1].role == "assistant" else JSON_PREFILL


def build_body(
    request: ChatRequest, model_id: str, *, stream: bool, provider: str, default_max_tokens: int = 4096
) -> dict[str, Any]:
    """The `/v1/messages` body for a chat request (raises ClientError for what Anthropic cannot do)."""
    if isinstance(request.n, int) and request.n > 1:
        raise _bad(f"Provider '{provider}' (type anthropic) does not support n > 1.", "n")
    system, messages = convert_messages(request.messages, provider)
    max_tokens = request.max_completion_tokens
    if not isinstance(max_tokens, int):
        max_tokens = request.max_tokens if isinstance(request.max_tokens, int) else default_max_tokens
    body: dict[str, Any] = {"model": model_id, "max_tokens": max_tokens}
    format_ = request.response_format
    if isinstance(format_, JsonObjectFormat):
        system = f"{system}\n\n{JSON_INSTRUCTION}" if system else JSON_INSTRUCTION
        if json_prefill(request):
            messages.append({"role": "assistant", "content": [{"type": "text", "text": JSON_PREFILL}]})
    elif isinstance(format_, JsonSchemaFormat):
        schema = format_.json_schema.schema if isinstance(format_.json_schema.schema, dict) else {}
        body["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
    if system:
        body["system"] = system
    body["messages"] = [_compact(message) for message in messages]
    if isinstance(request.tools, list) and request.tools:
        body["tools"] = [_tool(tool) for tool in request.tools]
        choice = _tool_choice(request)
        if choice is not None:
            body["tool_choice"] = choice
    stop = request.stop
    if isinstance(stop, str) and stop:
        body["stop_sequences"] = [stop]
    elif isinstance(stop, list) and stop:
        body["stop_sequences"] = stop
    for name in ("temperature", "top_p", "top_k"):
        value = getattr(request, name)
        if value is not None and value is not UNSET:
            body[name] = value
    if isinstance(request.user, str) and request.user:
        body["metadata"] = {"user_id": request.user}
    if stream:
        body["stream"] = True
    for name, value in request.extras.items():
        if name in PASSED_EXTRAS and name not in body:
            body[name] = value
    return body


# --------------------------------------------------------------------------------------------------
# Response


class Block(msgspec.Struct):
    type: str
    text: str | None = None
    id: str | None = None
    name: str | None = None
    input: Any = None
    partial_json: str | None = None


class OutputDetails(msgspec.Struct):
    thinking_tokens: int | None = None


class AnthropicUsage(msgspec.Struct):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    output_tokens_details: OutputDetails | None = None


class AnthropicMessage(msgspec.Struct):
    id: str
    content: list[Block] = []
    model: str | None = None
    stop_reason: str | None = None
    usage: AnthropicUsage | None = None


def to_usage(usage: AnthropicUsage | None) -> Usage:
    """OpenAI usage: prompt tokens include cache reads and writes, as OpenAI counts cached input."""
    usage = usage or AnthropicUsage()
    cached = usage.cache_read_input_tokens or 0
    prompt = (usage.input_tokens or 0) + cached + (usage.cache_creation_input_tokens or 0)
    completion = usage.output_tokens or 0
    details = usage.output_tokens_details
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=cached),
        completion_tokens_details=CompletionTokensDetails(reasoning_tokens=details.thinking_tokens)
        if details and details.thinking_tokens is not None
        else UNSET,
    )


def finish_reason(stop_reason: str | None) -> FinishReason:
    return FINISH.get(stop_reason or "end_turn", "stop")


def _arguments(value: Any) -> str:
    return msgspec.json.encode(value if value is not None else {}).decode()


def to_completion(message: AnthropicMessage, model_id: str, prefill: str = "") -> ChatCompletion:
    texts = [block.text or "" for block in message.content if block.type == "text"]
    calls = [
        ToolCall(
            id=block.id or "", function=FunctionCall(name=block.name or "", arguments=_arguments(block.input))
        )
        for block in message.content
        if block.type == "tool_use"
    ]
    content = prefill + "".join(texts) if texts or prefill else None
    reply = ResponseMessage(content=content, tool_calls=calls if calls else UNSET)
    return ChatCompletion(
        id=message.id,
        created=int(time.time()),
        model=message.model or model_id,
        choices=[Choice(index=0, message=reply, finish_reason=finish_reason(message.stop_reason))],
        usage=to_usage(message.usage),
    )


# --------------------------------------------------------------------------------------------------
# Streaming


class ErrorDetail(msgspec.Struct):
    type: str = "api_error"
    message: str = ""


class ErrorBody(msgspec.Struct):
    error: ErrorDetail | None = None


# --------------------------------------------------------------------------------------------------
# Errors


def _error(
    provider: str, upstream_status: int, detail: ErrorDetail | None, secret: str, retry: float | None
) -> UpstreamError:
    status = upstream_status_to_client(upstream_status)
    if upstream_status == 401:
        message = f"Provider '{provider}' rejected the gateway's credentials."
    elif detail and detail.message:
        message = detail.message.replace(secret, "****") if secret else detail.message
    else:
        message = f"Provider '{provider}' answered HTTP {upstream_status}."
    code = detail.type if detail else None
    if upstream_status in (401, 403):
        code = "provider_authentication_failed" if upstream_status == 401 else "provider_permission_denied"
    return UpstreamError(
        message,
        status=status,
        code=code,
        retry_after=retry,
        upstream_status=upstream_status,
        provider=provider,
    )


def parse_error(
    provider: str, status: int, headers: Mapping[str, str], body: bytes, secret: str
) -> UpstreamError:
    """An Anthropic error response → the gateway's error, classified by HTTP status and error type."""
    try:
        detail = msgspec.json.decode(body, type=ErrorBody).error
    except msgspec.MsgspecError:
        detail = None
    return _error(provider, status, detail, secret, retry_after(headers))


def stream_error(provider: str, detail: ErrorDetail, secret: str = "") -> UpstreamError:
    """An `error` event inside a 200 stream: its type gives the status (overloaded_error → 503)."""
    return _error(provider, STATUS_BY_ERROR_TYPE.get(detail.type, 500), detail, secret, None)
