"""Pure conversions between the gateway's OpenAI-shaped requests and Bedrock Runtime.

Chat → Converse body (`/model/{id}/converse[-stream]`), Converse response → ChatCompletion, Bedrock
error (HTTP status + `x-amzn-ErrorType` + `{"message"}`) or stream exception frame → UpstreamError,
InvokeModel bodies (embeddings, legacy completions) are in bedrock_invoke. No I/O here.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

import msgspec
from msgspec import UNSET

from modelyard.errors import ClientError, StreamError, UpstreamError, upstream_status_to_client
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
    ToolCall,
)
from modelyard.schema.common import PromptTokensDetails, Usage

JSON_TOOL = "json_response"
"""The forced tool that carries response_format json_object / json_schema."""
PASSED_EXTRAS = frozenset(
    {
        "guardrailConfig",
        "promptVariables",
        "additionalModelResponseFieldPaths",
        "requestMetadata",
        "performanceConfig",
        "serviceTier",
        "outputConfig",
    }
)
"""Converse top-level fields a client may send as extras; `additionalModelRequestFields` is merged;
any other extra goes into additionalModelRequestFields too (model-native parameters)."""
FINISH: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}
IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg", "image/gif": "gif"}
IMAGE_FORMATS["image/webp"] = "webp"
CREDENTIAL_ERRORS = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "IncompleteSignatureException",
        "ExpiredTokenException",
        "MissingAuthenticationTokenException",
    }
)
"""AWS answers 403 with these when the gateway's credentials (not its permissions) are wrong."""
STREAM_EXCEPTION_STATUS = {
    "throttlingException": 429,
    "validationException": 400,
    "modelStreamErrorException": 500,
    "internalServerException": 500,
    "serviceUnavailableException": 503,
    "modelTimeoutException": 408,
}


def unsupported_parameter(message: str, param: str = "messages") -> ClientError:
    return ClientError(message, status=400, param=param, code="unsupported_parameter")


# --------------------------------------------------------------------------------------------------
# Chat request


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(part.text for part in content if isinstance(part, TextPart))
    return ""


def image_block(url: str, provider: str) -> dict[str, Any]:
    if not url.startswith("data:"):
        raise unsupported_parameter(
            f"Provider '{provider}' (type bedrock) needs images inline: send a base64 data URL "
            "(image URLs are not fetched)."
        )
    header, sep, data = url[5:].partition(",")
    media_type, _, encoding = header.partition(";")
    if not sep or encoding != "base64" or media_type.lower() not in IMAGE_FORMATS:
        raise unsupported_parameter(
            f"Provider '{provider}' (type bedrock) accepts base64 data URLs of png, jpeg, gif or webp images."
        )
    return {"image": {"format": IMAGE_FORMATS[media_type.lower()], "source": {"bytes": data}}}


def _content(content: Any, provider: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content if isinstance(content, list) else []:
        if isinstance(part, TextPart):
            if part.text:
                blocks.append({"text": part.text})
        elif isinstance(part, ImageUrlPart):
            blocks.append(image_block(part.image_url.url, provider))
        elif isinstance(part, RefusalPart):
            blocks.append({"text": part.refusal})
        else:
            kind = type(part).__name__.removesuffix("Part").lower()
            raise unsupported_parameter(
                f"Provider '{provider}' (type bedrock) does not accept {kind} content parts."
            )
    return blocks


def _tool_uses(message: Message) -> list[dict[str, Any]]:
    blocks = []
    for call in message.tool_calls or []:
        try:
            arguments = msgspec.json.decode(call.function.arguments or "{}")
        except msgspec.DecodeError:
            raise unsupported_parameter(
                f"Tool call {call.id} has arguments that are not valid JSON."
            ) from None
        if not isinstance(arguments, dict):
            raise unsupported_parameter(f"Tool call {call.id} has arguments that are not a JSON object.")
        blocks.append({"toolUse": {"toolUseId": call.id, "name": call.function.name, "input": arguments}})
    return blocks


def convert_messages(messages: list[Message], provider: str) -> tuple[list[dict[str, Any]], list[Any]]:
    """(system blocks, Converse messages): same-role turns merged, tool results in user turns."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.role in ("system", "developer"):
            text = _text_of(message.content)
            if text:
                system.append({"text": text})
            continue
        if message.role == "tool":
            role = "user"
            text = _text_of(message.content)
            blocks = [{"toolResult": {"toolUseId": message.tool_call_id or "", "content": [{"text": text}]}}]
        elif message.role == "assistant":
            role = "assistant"
            blocks = _content(message.content, provider) + _tool_uses(message)
        else:
            role = "user"
            blocks = _content(message.content, provider)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return system, turns


def _has_tool_blocks(turns: list[dict[str, Any]]) -> bool:
    return any("toolUse" in b or "toolResult" in b for turn in turns for b in turn["content"])


def _tool_config(request: ChatRequest, turns: list[dict[str, Any]]) -> dict[str, Any] | None:
    format_ = request.response_format
    if isinstance(format_, JsonObjectFormat | JsonSchemaFormat):
        if isinstance(request.tools, list) and request.tools:
            raise unsupported_parameter(
                "response_format cannot be combined with tools on bedrock.", "response_format"
            )
        schema: Any = {"type": "object"}
        if isinstance(format_, JsonSchemaFormat) and isinstance(format_.json_schema.schema, dict):
            schema = format_.json_schema.schema
        forced = {
            "name": JSON_TOOL,
            "description": "Answer with a JSON value.",
            "inputSchema": {"json": schema},
        }
        return {"tools": [{"toolSpec": forced}], "toolChoice": {"tool": {"name": JSON_TOOL}}}
    if not isinstance(request.tools, list) or not request.tools:
        return None
    choice = request.tool_choice
    if choice == "none" and not _has_tool_blocks(turns):
        return None  # Converse has no "none": the tools are left out (kept when history needs them)
    tools = []
    for tool in request.tools:
        function = tool.function
        spec: dict[str, Any] = {"name": function.name}
        if function.description:
            spec["description"] = function.description
        parameters = function.parameters if isinstance(function.parameters, dict) else {}
        spec["inputSchema"] = {"json": parameters or {"type": "object", "properties": {}}}
        tools.append({"toolSpec": spec})
    config: dict[str, Any] = {"tools": tools}
    if isinstance(choice, NamedToolChoice):
        config["toolChoice"] = {"tool": {"name": choice.function.name}}
    elif choice == "required":
        config["toolChoice"] = {"any": {}}
    elif choice == "auto":
        config["toolChoice"] = {"auto": {}}
    return config


def json_mode(request: ChatRequest) -> bool:
    return isinstance(request.response_format, JsonObjectFormat | JsonSchemaFormat)


def build_converse(request: ChatRequest, provider: str) -> dict[str, Any]:
    """The Converse body (the model id travels in the path)."""
    if isinstance(request.n, int) and request.n > 1:
        raise unsupported_parameter(f"Provider '{provider}' (type bedrock) does not support n > 1.", "n")
    system, messages = convert_messages(request.messages, provider)
    body: dict[str, Any] = {"messages": messages}
    if system:
        body["system"] = system
    inference: dict[str, Any] = {}
    max_tokens = request.max_completion_tokens
    if not isinstance(max_tokens, int):
        max_tokens = request.max_tokens
    if isinstance(max_tokens, int):
        inference["maxTokens"] = max_tokens
    for name, native in (("temperature", "temperature"), ("top_p", "topP")):
        value = getattr(request, name)
        if isinstance(value, int | float):
            inference[native] = value
    stop = request.stop
    if isinstance(stop, str) and stop:
        inference["stopSequences"] = [stop]
    elif isinstance(stop, list) and stop:
        inference["stopSequences"] = stop
    if inference:
        body["inferenceConfig"] = inference
    config = _tool_config(request, messages)
    if config is not None:
        body["toolConfig"] = config
    additional: dict[str, Any] = {}
    if isinstance(request.top_k, int):
        additional["top_k"] = request.top_k
    for name, value in request.extras.items():
        plain = msgspec.json.decode(value) if isinstance(value, msgspec.Raw) else value
        if name == "additionalModelRequestFields" and isinstance(plain, dict):
            additional.update(plain)
        elif name in PASSED_EXTRAS:
            body.setdefault(name, plain)
        else:
            additional.setdefault(name, plain)
    if additional:
        body["additionalModelRequestFields"] = additional
    return body


# --------------------------------------------------------------------------------------------------
# Chat response


class TokenUsage(msgspec.Struct):
    inputTokens: int = 0
    outputTokens: int = 0
    totalTokens: int = 0
    cacheReadInputTokens: int | None = None
    cacheWriteInputTokens: int | None = None


class ConverseMessage(msgspec.Struct):
    role: str = "assistant"
    content: list[dict[str, Any]] = []


class ConverseOutput(msgspec.Struct):
    message: ConverseMessage | None = None


class ConverseResponse(msgspec.Struct):
    output: ConverseOutput
    stopReason: str = "end_turn"
    usage: TokenUsage | None = None


def to_usage(usage: TokenUsage | None) -> Usage:
    usage = usage or TokenUsage()
    cached = usage.cacheReadInputTokens or 0
    prompt = usage.inputTokens + cached + (usage.cacheWriteInputTokens or 0)
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=usage.outputTokens,
        total_tokens=prompt + usage.outputTokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=cached),
    )


def finish_reason(stop_reason: str | None, json_mode: bool = False) -> FinishReason:
    reason = FINISH.get(stop_reason or "end_turn", "stop")
    return "stop" if json_mode and reason == "tool_calls" else reason


def arguments(value: Any) -> str:
    return msgspec.json.encode(value if value is not None else {}).decode()


def completion_id(request_id: str | None) -> str:
    return "chatcmpl-" + (request_id or uuid.uuid4().hex)


def to_completion(
    response: ConverseResponse, model_id: str, request_id: str | None, json_mode: bool = False
) -> ChatCompletion:
    blocks = response.output.message.content if response.output.message else []
    texts = [b["text"] for b in blocks if isinstance(b.get("text"), str)]
    uses = [b["toolUse"] for b in blocks if isinstance(b.get("toolUse"), dict)]
    calls = [
        ToolCall(
            id=use.get("toolUseId", ""),
            function=FunctionCall(name=use.get("name", ""), arguments=arguments(use.get("input"))),
        )
        for use in uses
    ]
    if json_mode:
        texts, calls = [call.function.arguments for call in calls] or texts, []
    reply = ResponseMessage(content="".join(texts) if texts else None, tool_calls=calls or UNSET)
    return ChatCompletion(
        id=completion_id(request_id),
        created=int(time.time()),
        model=model_id,
        choices=[Choice(index=0, message=reply, finish_reason=finish_reason(response.stopReason, json_mode))],
        usage=to_usage(response.usage),
    )


# --------------------------------------------------------------------------------------------------
# Errors


class ErrorBody(msgspec.Struct):
    message: str | None = None
    Message: str | None = None


def _message(body: bytes) -> str:
    try:
        detail = msgspec.json.decode(body, type=ErrorBody)
    except msgspec.MsgspecError:
        return ""
    return detail.message or detail.Message or ""


def error_type(headers: Mapping[str, str], body: bytes = b"") -> str | None:
    """`ThrottlingException` from `x-amzn-ErrorType: ThrottlingException:http://…` (or `__type`)."""
    raw = headers.get("x-amzn-ErrorType") or headers.get("x-amzn-errortype")
    if not raw:
        try:
            raw = msgspec.json.decode(body, type=dict[str, Any]).get("__type")
        except msgspec.MsgspecError:
            raw = None
    if not isinstance(raw, str) or not raw:
        return None
    return raw.split(":", 1)[0].rsplit("#", 1)[-1] or None


def _error(
    provider: str, upstream_status: int, kind: str | None, text: str, secrets: list[str], retry: float | None
) -> UpstreamError:
    status = upstream_status_to_client(upstream_status)
    credentials = upstream_status == 401 or (upstream_status == 403 and kind in CREDENTIAL_ERRORS)
    if credentials:
        message = f"Provider '{provider}' rejected the gateway's credentials."
    elif text:
        message = text
        for secret in secrets:
            if secret:
                message = message.replace(secret, "****")
    else:
        message = f"Provider '{provider}' answered HTTP {upstream_status}."
    code = kind
    if upstream_status in (401, 403):
        code = "provider_authentication_failed" if credentials else "provider_permission_denied"
    return UpstreamError(
        message,
        status=status,
        code=code,
        retry_after=retry,
        upstream_status=upstream_status,
        provider=provider,
    )


def parse_error(
    provider: str, status: int, headers: Mapping[str, str], body: bytes, secrets: list[str]
) -> UpstreamError:
    return _error(provider, status, error_type(headers, body), _message(body), secrets, retry_after(headers))


def stream_exception(provider: str, kind: str, payload: bytes, secrets: list[str]) -> StreamError:
    """An exception frame inside a 200 event stream."""
    base = _error(provider, STREAM_EXCEPTION_STATUS.get(kind, 500), kind, _message(payload), secrets, None)
    return StreamError(
        base.message, status=base.status, code=kind, upstream_status=base.upstream_status, provider=provider
    )
