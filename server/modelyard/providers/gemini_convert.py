"""Pure conversions between the gateway's OpenAI-shaped chat and Google's Gemini `generateContent`.

Shared by the Gemini API adapter (`gemini.py`) and Vertex AI (`vertex.py`): the request body,
the response, the `streamGenerateContent?alt=sse` events and Google's error body. No I/O here.

Mapping notes:
* system and developer messages → `systemInstruction`; assistant → role `model`; tool results →
  `functionResponse` parts of a user turn (the function name is found from the assistant's call);
  consecutive turns of the same role are merged (parallel tool results share one turn).
* images: base64 data URLs → `inlineData`; any other URL (gs://, https://) → `fileData` with a
  MIME type guessed from the extension (never fetched by the gateway).
* json_object → `responseMimeType: application/json`; json_schema → also `responseSchema` (the
  schema reduced to the OpenAPI subset Gemini accepts).
* dropped: `user`, `metadata`, `logit_bias`, `logprobs`/`top_logprobs`, `parallel_tool_calls`,
  `function.strict`; extras listed in PASSED_EXTRAS / GENERATION_EXTRAS pass, any other is dropped.
"""

from __future__ import annotations

import mimetypes
import re
import time
import uuid
from collections.abc import Mapping
from typing import Any

import msgspec
from msgspec import UNSET

from modelyard.errors import ClientError, UpstreamError, upstream_status_to_client
from modelyard.providers.openai import MAX_RETRY_AFTER, retry_after
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
from modelyard.schema.common import CompletionTokensDetails, PromptTokensDetails, Usage
from modelyard.transport import UpstreamResponse

SIGNATURE_SEPARATOR = "__thought__"
"""A functionCall's thoughtSignature travels in the OpenAI tool-call id (`call_…__thought__<sig>`)
and is put back on the functionCall part when the client sends the call back."""


def _words(text: str) -> list[str]:
    return text.split()


def _spellings(names: str) -> dict[str, str]:
    """Each camelCase name and its snake_case spelling → the camelCase name."""
    result = {}
    for name in names.split():
        result[name] = name
        result[re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name)] = name
    return result


FINISH: dict[str, FinishReason] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    **dict.fromkeys(
        _words("SAFETY RECITATION BLOCKLIST PROHIBITED_CONTENT SPII IMAGE_SAFETY LANGUAGE"), "content_filter"
    ),
}
"""Gemini finishReason → OpenAI finish_reason; any other reason (OTHER, MALFORMED_FUNCTION_CALL…)
becomes "stop"."""

STATUS_BY_GOOGLE_STATUS = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "ABORTED": 409,
    "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499,
    "INTERNAL": 500,
    "UNKNOWN": 500,
    "DATA_LOSS": 500,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}
"""Google's canonical status → HTTP status, used when no HTTP status is at hand (stream errors)."""

PASSED_EXTRAS = _spellings("safetySettings cachedContent labels")
"""Top-level generateContent fields a client may send as extras (either spelling)."""

GENERATION_EXTRAS = _spellings(
    "thinkingConfig responseModalities mediaResolution speechConfig responseJsonSchema"
)
"""generationConfig fields a client may send as top-level extras (either spelling)."""

_SCHEMA_KEYS = frozenset(
    _words(
        "type format title description nullable enum maxItems minItems properties required minProperties"
        " maxProperties minLength maxLength pattern example anyOf propertyOrdering default items minimum maximum"
    )
)


# --------------------------------------------------------------------------------------------------
# Request


def _bad(message: str, param: str = "messages") -> ClientError:
    return ClientError(message, status=400, param=param, code="unsupported_parameter")


def _plain(value: Any) -> Any:
    """An extras value as a plain Python value (REST extras are still-encoded JSON)."""
    return msgspec.json.decode(value) if isinstance(value, msgspec.Raw) else value


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(part.text for part in content if isinstance(part, TextPart))
    return ""


def image_part(url: str) -> dict[str, Any]:
    """A data URL → inlineData; any other URL → fileData (Google fetches gs:// and https URLs)."""
    if url.startswith("data:"):
        header, sep, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if not sep or encoding != "base64" or not media_type:
            raise _bad("Image data URLs must be base64 encoded (data:<media type>;base64,<data>).")
        return {"inlineData": {"mimeType": media_type, "data": data}}
    path = url.split("?", 1)[0].split("#", 1)[0]
    mime_type = mimetypes.guess_type(path)[0] or "image/jpeg"
    return {"fileData": {"mimeType": mime_type, "fileUri": url}}


def _parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts: list[dict[str, Any]] = []
    for part in content if isinstance(content, list) else []:
        if isinstance(part, TextPart):
            if part.text:
                parts.append({"text": part.text})
        elif isinstance(part, ImageUrlPart):
            parts.append(image_part(part.image_url.url))
        elif isinstance(part, RefusalPart):
            parts.append({"text": part.refusal})
        else:
            kind = type(part).__name__.removesuffix("Part").lower()
            raise _bad(f"Gemini models do not accept {kind} content parts through this gateway.")
    return parts


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = msgspec.json.decode(text or "{}")
    except msgspec.DecodeError:
        raise _bad(f"{what} is not valid JSON.") from None
    if not isinstance(value, dict):
        raise _bad(f"{what} is not a JSON object.")
    return value


def _function_calls(message: Message, names: dict[str, str]) -> list[dict[str, Any]]:
    parts = []
    for call in message.tool_calls or []:
        names[call.id] = call.function.name
        args = _json_object(call.function.arguments, f"Tool call {call.id} arguments")
        part: dict[str, Any] = {"functionCall": {"name": call.function.name, "args": args}}
        _, sep, signature = call.id.partition(SIGNATURE_SEPARATOR)
        if sep and signature:
            part["thoughtSignature"] = signature  # Gemini 3 requires it back with the call
        parts.append(part)
    return parts


def _function_response(message: Message, names: dict[str, str]) -> dict[str, Any]:
    call_id = message.tool_call_id if isinstance(message.tool_call_id, str) else ""
    name = names.get(call_id) or (message.name if isinstance(message.name, str) else "")
    if not name:
        raise _bad(f"Tool message {call_id!r} answers no tool call of an earlier assistant message.")
    text = _text_of(message.content)
    try:
        value = msgspec.json.decode(text) if text else None
    except msgspec.DecodeError:
        value = None
    response = value if isinstance(value, dict) else {"content": text}
    return {"functionResponse": {"name": name, "response": response}}


def convert_messages(messages: list[Message]) -> tuple[list[str], list[dict[str, Any]]]:
    """(system texts, Gemini contents)."""
    system: list[str] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    for message in messages:
        if message.role in ("system", "developer"):
            text = _text_of(message.content)
            if text:
                system.append(text)
            continue
        if message.role == "tool":
            role, parts = "user", [_function_response(message, names)]
        elif message.role == "assistant":
            role, parts = "model", _parts(message.content) + _function_calls(message, names)
        else:
            role, parts = "user", _parts(message.content)
        if not parts:
            continue
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    return system, contents


def gemini_schema(schema: Any) -> Any:
    """A JSON Schema reduced to the OpenAPI subset of Gemini's `Schema` (unknown keys dropped,
    `type: [T, "null"]` → `type: T, nullable: true`)."""
    if isinstance(schema, list):
        return [gemini_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "type" and isinstance(value, list):
            kinds = [kind for kind in value if kind != "null"]
            if len(kinds) < len(value):
                result["nullable"] = True
            if kinds:
                result["type"] = kinds[0]
        elif key == "properties" and isinstance(value, dict):
            result[key] = {name: gemini_schema(sub) for name, sub in value.items()}
        elif key == "anyOf" and isinstance(value, list):
            result[key] = [gemini_schema(sub) for sub in value]
        elif key == "items":
            result[key] = gemini_schema(value)
        elif key in _SCHEMA_KEYS:
            result[key] = value
    return result


def _tools(request: ChatRequest) -> list[dict[str, Any]]:
    declarations = []
    for tool in request.tools or []:
        function = tool.function
        declaration: dict[str, Any] = {"name": function.name}
        if isinstance(function.description, str):
            declaration["description"] = function.description
        if isinstance(function.parameters, dict) and function.parameters.get("properties"):
            declaration["parameters"] = gemini_schema(function.parameters)
        declarations.append(declaration)
    return [{"functionDeclarations": declarations}] if declarations else []


def _tool_config(request: ChatRequest) -> dict[str, Any] | None:
    choice = request.tool_choice
    if isinstance(choice, NamedToolChoice):
        config: dict[str, Any] = {"mode": "ANY", "allowedFunctionNames": [choice.function.name]}
    elif choice in ("auto", "none", "required"):
        config = {"mode": {"auto": "AUTO", "none": "NONE", "required": "ANY"}[str(choice)]}
    else:
        return None
    return {"functionCallingConfig": config}


def _generation_config(request: ChatRequest) -> dict[str, Any]:
    config: dict[str, Any] = {}
    max_tokens = request.max_completion_tokens
    if not isinstance(max_tokens, int):
        max_tokens = request.max_tokens
    simple = {
        "temperature": request.temperature,
        "topP": request.top_p,
        "topK": request.top_k,
        "maxOutputTokens": max_tokens,
        "candidateCount": request.n,
        "seed": request.seed,
        "presencePenalty": request.presence_penalty,
        "frequencyPenalty": request.frequency_penalty,
    }
    for key, value in simple.items():
        if value is not None and value is not UNSET:
            config[key] = value
    stop = request.stop
    if isinstance(stop, str):
        config["stopSequences"] = [stop]
    elif isinstance(stop, list) and stop:
        config["stopSequences"] = list(stop)
    response_format = request.response_format
    if isinstance(response_format, JsonObjectFormat | JsonSchemaFormat):
        config["responseMimeType"] = "application/json"
    if isinstance(response_format, JsonSchemaFormat) and isinstance(response_format.json_schema.schema, dict):
        config["responseSchema"] = gemini_schema(response_format.json_schema.schema)
    return config


def chat_payload(request: ChatRequest) -> dict[str, Any]:
    """The generateContent / streamGenerateContent body for a chat request."""
    system, contents = convert_messages(request.messages)
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
    tools = _tools(request)
    if tools:
        body["tools"] = tools
        tool_config = _tool_config(request)
        if tool_config:
            body["toolConfig"] = tool_config
    generation = _generation_config(request)
    for key, value in request.extras.items():
        if key in PASSED_EXTRAS:
            body[PASSED_EXTRAS[key]] = _plain(value)
        elif key in GENERATION_EXTRAS:
            generation.setdefault(GENERATION_EXTRAS[key], _plain(value))
    if generation:
        body["generationConfig"] = generation
    return body


# --------------------------------------------------------------------------------------------------
# Response


def _bad_response(provider: str, what: str = "generateContent") -> UpstreamError:
    return UpstreamError(
        f"Provider '{provider}' sent a response that is not valid {what} JSON.",
        status=502,
        code="bad_upstream_response",
        provider=provider,
    )


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0


def to_usage(metadata: Any) -> Usage:
    meta = metadata if isinstance(metadata, dict) else {}
    prompt = _int(meta.get("promptTokenCount"))
    thoughts = _int(meta.get("thoughtsTokenCount"))
    completion = _int(meta.get("candidatesTokenCount")) + thoughts
    usage = Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=_int(meta.get("totalTokenCount")) or prompt + completion,
    )
    if "cachedContentTokenCount" in meta:
        usage.prompt_tokens_details = PromptTokensDetails(cached_tokens=_int(meta["cachedContentTokenCount"]))
    if "thoughtsTokenCount" in meta:
        usage.completion_tokens_details = CompletionTokensDetails(reasoning_tokens=thoughts)
    return usage


def new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def _call(part: dict[str, Any]) -> tuple[str, str, str] | None:
    """(id, name, JSON arguments) of a functionCall part."""
    call = part.get("functionCall")
    if not isinstance(call, dict):
        return None
    given = call.get("id")
    call_id = given if isinstance(given, str) and given else new_call_id()
    signature = part.get("thoughtSignature")
    if isinstance(signature, str) and signature:
        call_id += SIGNATURE_SEPARATOR + signature
    arguments = msgspec.json.encode(call.get("args") or {}).decode()
    return call_id, str(call.get("name") or ""), arguments


def _finish(reason: Any, has_calls: bool) -> FinishReason:
    if has_calls:
        return "tool_calls"
    return FINISH.get(reason, "stop") if isinstance(reason, str) else "stop"


def _decode(data: bytes, provider: str) -> dict[str, Any]:
    try:
        value = msgspec.json.decode(data)
    except msgspec.MsgspecError:
        raise _bad_response(provider) from None
    if not isinstance(value, dict):
        raise _bad_response(provider)
    return value


def _candidates(value: dict[str, Any]) -> list[dict[str, Any]]:
    candidates = value.get("candidates")
    return [c for c in candidates if isinstance(c, dict)] if isinstance(candidates, list) else []


def _index(candidate: dict[str, Any], position: int) -> int:
    index = candidate.get("index")
    return index if isinstance(index, int) else position


def _content_parts(candidate: dict[str, Any]) -> list[dict[str, Any]]:
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    return [p for p in parts if isinstance(p, dict)] if isinstance(parts, list) else []


def _blocked(value: dict[str, Any]) -> bool:
    feedback = value.get("promptFeedback")
    return isinstance(feedback, dict) and bool(feedback.get("blockReason"))


def chat_result(data: bytes, model_id: str, provider: str) -> ChatCompletion:
    value = _decode(data, provider)
    choices = []
    for position, candidate in enumerate(_candidates(value)):
        texts: list[str] = []
        calls: list[ToolCall] = []
        for part in _content_parts(candidate):
            if part.get("thought") is True:
                continue
            if isinstance(part.get("text"), str):
                texts.append(part["text"])
            call = _call(part)
            if call:
                calls.append(ToolCall(id=call[0], function=FunctionCall(name=call[1], arguments=call[2])))
        message = ResponseMessage(content="".join(texts) if texts or not calls else None)
        if calls:
            message.tool_calls = calls
        index = _index(candidate, position)
        choices.append(
            Choice(
                index=index,
                message=message,
                finish_reason=_finish(candidate.get("finishReason"), bool(calls)),
            )
        )
    if not choices:
        if not _blocked(value) and "usageMetadata" not in value:
            raise _bad_response(provider)
        reason: FinishReason = "content_filter" if _blocked(value) else "stop"
        choices.append(Choice(index=0, message=ResponseMessage(content=None), finish_reason=reason))
    response_id = value.get("responseId")
    return ChatCompletion(
        id=f"chatcmpl-{response_id}" if isinstance(response_id, str) and response_id else _chat_id(),
        created=int(time.time()),
        model=model_id,
        choices=choices,
        usage=to_usage(value.get("usageMetadata")),
    )


def _chat_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex


class GeminiStream:
    """streamGenerateContent?alt=sse events (each a GenerateContentResponse) → ChatChunks."""

    def __init__(self, model_id: str, include_usage: bool, *, provider: str = "") -> None:
        self.model = model_id
        self.include_usage = include_usage
        self.provider = provider
        self.id = ""
        self.created = int(time.time())
        self.usage: Any = None
        self.started: set[int] = set()
        self.tool_counts: dict[int, int] = {}
        self.finished: set[int] = set()

    def _chunk(self, index: int, delta: Delta, finish: FinishReason | None = None) -> ChatChunk:
        return ChatChunk(
            id=self.id,
            created=self.created,
            model=self.model,
            choices=[ChunkChoice(index=index, delta=delta, finish_reason=finish)],
            usage=None if self.include_usage else UNSET,
        )

    def feed(self, event: dict[str, Any]) -> list[ChatChunk]:
        if isinstance(event.get("error"), dict):
            raise google_error(self.provider, event["error"], None, {}, "")
        if not self.id:
            response_id = event.get("responseId")
            self.id = (
                f"chatcmpl-{response_id}" if isinstance(response_id, str) and response_id else _chat_id()
            )
        if isinstance(event.get("usageMetadata"), dict):
            self.usage = event["usageMetadata"]
        chunks: list[ChatChunk] = []
        candidates = _candidates(event)
        if not candidates and _blocked(event) and not self.finished:
            candidates = [{"index": 0, "finishReason": "SAFETY"}]
        for position, candidate in enumerate(candidates):
            index = _index(candidate, position)
            if index in self.finished:
                continue
            deltas: list[Delta] = []
            for part in _content_parts(candidate):
                if part.get("thought") is True:
                    continue
                if isinstance(part.get("text"), str) and part["text"]:
                    deltas.append(Delta(content=part["text"]))
                call = _call(part)
                if call:
                    tool_index = self.tool_counts.get(index, 0)
                    self.tool_counts[index] = tool_index + 1
                    function = FunctionCallDelta(name=call[1], arguments=call[2])
                    deltas.append(
                        Delta(
                            tool_calls=[
                                ToolCallDelta(
                                    index=tool_index, id=call[0], type="function", function=function
                                )
                            ]
                        )
                    )
            reason = candidate.get("finishReason")
            if (deltas or reason) and index not in self.started:
                self.started.add(index)
                chunks.append(self._chunk(index, Delta(role="assistant", content="")))
            chunks.extend(self._chunk(index, delta) for delta in deltas)
            if reason:
                self.finished.add(index)
                chunks.append(self._chunk(index, Delta(), _finish(reason, index in self.tool_counts)))
        return chunks

    def finish(self) -> list[ChatChunk]:
        if not self.finished:
            who = f"Provider '{self.provider}'" if self.provider else "The Gemini provider"
            raise UpstreamError(
                f"{who} ended the stream before the answer was complete.",
                status=502,
                code="upstream_disconnected",
                provider=self.provider,
            )
        if not self.include_usage:
            return []
        usage = to_usage(self.usage)
        return [ChatChunk(id=self.id, created=self.created, model=self.model, choices=[], usage=usage)]


# --------------------------------------------------------------------------------------------------
# Errors


def _retry_delay(details: Any) -> float | None:
    """RetryInfo's retryDelay ("7s", "1.5s") in seconds."""
    for detail in details if isinstance(details, list) else []:
        if not isinstance(detail, dict) or not str(detail.get("@type", "")).endswith("RetryInfo"):
            continue
        delay = detail.get("retryDelay")
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return min(max(0.0, float(delay[:-1])), MAX_RETRY_AFTER)
            except ValueError:
                return None
    return None


AUTH_REASONS = frozenset({"API_KEY_INVALID", "API_KEY_EXPIRED"})


def _error_reason(details: Any) -> str | None:
    """ErrorInfo's `reason` (e.g. API_KEY_INVALID)."""
    for detail in details if isinstance(details, list) else []:
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("ErrorInfo"):
            reason = detail.get("reason")
            return reason if isinstance(reason, str) else None
    return None


def google_error(
    provider: str, error: Mapping[str, Any], http_status: int | None, headers: Mapping[str, str], secret: str
) -> UpstreamError:
    """Google's `{"error": {code, message, status, details}}` (the inner object) → UpstreamError."""
    google_status = error.get("status") if isinstance(error.get("status"), str) else None
    if _error_reason(error.get("details")) in AUTH_REASONS:
        http_status = 401  # the Gemini API answers a bad API key with 400 INVALID_ARGUMENT
    if http_status is None:
        code = error.get("code")
        http_status = code if isinstance(code, int) and 400 <= code < 600 else None
        http_status = http_status or STATUS_BY_GOOGLE_STATUS.get(google_status or "", 502)
    status = upstream_status_to_client(http_status)
    who = provider or "Gemini"
    raw = error.get("message")
    if http_status == 401 or google_status == "UNAUTHENTICATED":
        message = f"Provider '{who}' rejected the gateway's credentials."
    elif isinstance(raw, str) and raw:
        message = raw.replace(secret, "****") if secret else raw
    else:
        message = f"Provider '{who}' answered HTTP {http_status}."
    code_name = google_status.lower() if google_status else None
    if http_status == 401:
        code_name = "provider_authentication_failed"
    elif http_status == 403:
        code_name = "provider_permission_denied"
    delay = retry_after(headers)
    return UpstreamError(
        message,
        status=status,
        code=code_name,
        retry_after=delay if delay is not None else _retry_delay(error.get("details")),
        upstream_status=http_status,
        provider=provider,
    )


def parse_error(provider: str, response: UpstreamResponse, secret: str) -> UpstreamError:
    """A Google error response → the gateway's error, by HTTP status and Google `status`."""
    try:
        value = msgspec.json.decode(response.body)
    except msgspec.MsgspecError:
        value = None
    if isinstance(value, list) and value and isinstance(value[0], dict):
        value = value[0]  # streamGenerateContent without alt=sse wraps errors in an array
    error = value.get("error") if isinstance(value, dict) else None
    return google_error(
        provider, error if isinstance(error, dict) else {}, response.status, response.headers, secret
    )
