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

import time
import uuid
from collections.abc import Mapping
from typing import Any

import msgspec
from msgspec import UNSET

from modelyard.errors import UpstreamError, upstream_status_to_client
from modelyard.providers.gemini_request import (  # the request half of this module's API
    SIGNATURE_SEPARATOR,
    chat_payload,
    words,
)
from modelyard.providers.openai import MAX_RETRY_AFTER, retry_after
from modelyard.schema.chat import (
    ChatChunk,
    ChatCompletion,
    Choice,
    ChunkChoice,
    Delta,
    FinishReason,
    FunctionCall,
    FunctionCallDelta,
    ResponseMessage,
    ToolCall,
    ToolCallDelta,
)
from modelyard.schema.common import CompletionTokensDetails, PromptTokensDetails, Usage
from modelyard.transport import UpstreamResponse

__all__ = ["GeminiStream", "chat_payload", "chat_result", "parse_error"]

FINISH: dict[str, FinishReason] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    **dict.fromkeys(
        words("SAFETY RECITATION BLOCKLIST PROHIBITED_CONTENT SPII IMAGE_SAFETY LANGUAGE"), "content_filter"
    ),
}

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
