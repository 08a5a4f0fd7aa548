"""Databricks Model Serving: pure conversions (request body, errors, responses), apart from I/O.

Responses are OpenAI's shapes and decode straight into the gateway's types; only when that fails
are they read as Databricks' reasoning-model shape, where ``content`` is a list of blocks
(``{"type": "text", "text": ...}`` and ``{"type": "reasoning", "summary": [...]}``): the text blocks
become the content and the reasoning blocks are dropped (OpenAI's chat shape has no place for them).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from msgspec import UNSET, UnsetType, field

from modelyard.errors import UpstreamError, upstream_status_to_client
from modelyard.providers.openai import decode_body, retry_after
from modelyard.providers.openai import parse_error as parse_openai_error
from modelyard.schema.chat import (
    ChatChunk,
    ChatCompletion,
    ChatRequest,
    Choice,
    ChunkChoice,
    Delta,
    FinishReason,
    ResponseMessage,
    ToolCall,
    ToolCallDelta,
)
from modelyard.schema.common import Base, Usage
from modelyard.schema.completions import CompletionRequest
from modelyard.schema.embeddings import Embedding, EmbeddingRequest, EmbeddingResponse, EmbeddingUsage
from modelyard.transport import UpstreamResponse

_ENCODER = msgspec.json.Encoder()


# ---- request ------------------------------------------------------------------------------


def build_body(request: ChatRequest | CompletionRequest | EmbeddingRequest, *, stream: bool | None) -> bytes:
    """The invocation body: the client's fields and extras, without `model` (it is in the URL)."""
    typed: dict[str, Any] = msgspec.to_builtins(msgspec.structs.replace(request, extras={}))
    typed.pop("$extras", None)
    fields = {**request.extras, **typed}
    for name in ("model", "stream_options"):
        fields.pop(name, None)
    if "max_completion_tokens" in fields:
        limit = fields.pop("max_completion_tokens")
        if fields.get("max_tokens") is None and limit is not None:
            fields["max_tokens"] = limit
    if stream:
        fields["stream"] = True
    else:
        fields.pop("stream", None)
    return _ENCODER.encode(fields)


class DatabricksErrorBody(msgspec.Struct):
    error_code: str | None = None
    message: str | None = None


_STATUS_BY_CODE: dict[str, int] = {
    "BAD_REQUEST": 400,
    "INVALID_PARAMETER_VALUE": 400,
    "MALFORMED_REQUEST": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "RESOURCE_DOES_NOT_EXIST": 404,
    "NOT_FOUND": 404,
    "ENDPOINT_NOT_FOUND": 404,
    "ABORTED": 409,
    "ALREADY_EXISTS": 409,
    "RESOURCE_ALREADY_EXISTS": 409,
    "RESOURCE_CONFLICT": 409,
    "REQUEST_LIMIT_EXCEEDED": 429,
    "RESOURCE_EXHAUSTED": 429,
    "TOO_MANY_REQUESTS": 429,
    "INTERNAL_ERROR": 500,
    "TEMPORARILY_UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}


def effective_status(http_status: int, error_code: str | None) -> int:
    """The HTTP status, unless it is a generic 400/500 and the error code names a specific one."""
    by_code = _STATUS_BY_CODE.get(error_code or "")
    if by_code is not None and http_status in (400, 500):
        return by_code
    return http_status


def parse_error(provider: str, response: UpstreamResponse, secret: str) -> UpstreamError:
    """A Databricks error body → the gateway's error (OpenAI-shaped bodies are parsed as OpenAI's)."""
    try:
        detail = msgspec.json.decode(response.body, type=DatabricksErrorBody)
    except msgspec.MsgspecError:
        detail = DatabricksErrorBody()
    if detail.error_code is None and detail.message is None:
        return parse_openai_error(provider, response, secret)
    upstream = effective_status(response.status, detail.error_code)
    status = upstream_status_to_client(upstream)
    if upstream == 401:
        message = f"Provider '{provider}' rejected the gateway's credentials."
    elif detail.message:
        message = detail.message.replace(secret, "****") if secret else detail.message
    else:
        message = f"Provider '{provider}' answered HTTP {response.status}."
    code = detail.error_code.lower() if detail.error_code else None
    if upstream in (401, 403):
        code = "provider_authentication_failed" if upstream == 401 else "provider_permission_denied"
    return UpstreamError(
        message,
        status=status,
        code=code,
        retry_after=retry_after(response.headers),
        upstream_status=response.status,
        provider=provider,
    )


def stream_error(provider: str, data: bytes, secret: str) -> UpstreamError:
    """An event that is not a chunk: an error the endpoint sent mid-stream, or garbage (502)."""
    try:
        detail = msgspec.json.decode(data, type=DatabricksErrorBody)
    except msgspec.MsgspecError:
        detail = DatabricksErrorBody()
    if detail.error_code is None and detail.message is None and not data.startswith(b'{"error"'):
        return decode_error(provider)
    status = _STATUS_BY_CODE.get(detail.error_code or "", 502)
    return parse_error(provider, UpstreamResponse(status, {}, data), secret)


def decode_error(provider: str) -> UpstreamError:
    return UpstreamError(
        f"Provider '{provider}' sent a stream event that is not valid JSON of the expected shape.",
        status=502,
        code="bad_upstream_response",
        provider=provider,
    )


class DatabricksEmbeddings(Base):
    data: list[Embedding]
    model: str = ""
    usage: EmbeddingUsage = field(default_factory=EmbeddingUsage)


def to_embedding_response(native: DatabricksEmbeddings, model_id: str) -> EmbeddingResponse:
    return EmbeddingResponse(model=native.model or model_id, data=native.data, usage=native.usage)


# ---- reasoning models: content as a list of blocks -------------------------------------------------


class ContentBlock(Base):
    type: str = ""
    text: str | None = None


BlockContent = str | list[ContentBlock] | None


def block_text(content: BlockContent) -> str | None:
    """The text of a content that may be a list of blocks (reasoning blocks are left out)."""
    if content is None or isinstance(content, str):
        return content
    texts = [block.text for block in content if block.type == "text" and block.text is not None]
    return "".join(texts) if texts else None


class _BlockMessage(Base):
    content: BlockContent = None
    refusal: str | None = None
    tool_calls: list[ToolCall] | UnsetType = UNSET


class _BlockChoice(Base):
    message: _BlockMessage
    index: int = 0
    finish_reason: FinishReason | None = None


class BlockCompletion(Base):
    id: str
    created: int
    model: str
    choices: list[_BlockChoice]
    usage: Usage | UnsetType = UNSET


class _BlockDelta(Base):
    role: Literal["assistant"] | UnsetType = UNSET
    content: BlockContent | UnsetType = UNSET
    tool_calls: list[ToolCallDelta] | UnsetType = UNSET


class _BlockChunkChoice(Base):
    index: int = 0
    delta: _BlockDelta = field(default_factory=_BlockDelta)
    finish_reason: FinishReason | None = None


class BlockChunk(Base):
    id: str
    created: int
    model: str
    choices: list[_BlockChunkChoice]
    usage: Usage | UnsetType | None = UNSET


def decode_chat(provider: str, body: bytes) -> ChatCompletion:
    try:
        return msgspec.json.decode(body, type=ChatCompletion)
    except msgspec.MsgspecError:
        native = decode_body(provider, body, BlockCompletion)
    choices = [
        Choice(
            index=c.index,
            message=ResponseMessage(
                content=block_text(c.message.content),
                refusal=c.message.refusal,
                tool_calls=c.message.tool_calls,
            ),
            finish_reason=c.finish_reason,
        )
        for c in native.choices
    ]
    return ChatCompletion(
        id=native.id, created=native.created, model=native.model, choices=choices, usage=native.usage
    )


def decode_chat_chunk(provider: str, data: bytes, secret: str) -> ChatChunk:
    try:
        return msgspec.json.decode(data, type=ChatChunk)
    except msgspec.MsgspecError:
        pass
    try:
        native = msgspec.json.decode(data, type=BlockChunk)
    except msgspec.MsgspecError:
        raise stream_error(provider, data, secret) from None
    choices = []
    for c in native.choices:
        delta = Delta(role=c.delta.role, tool_calls=c.delta.tool_calls)
        if c.delta.content is not UNSET:
            text = block_text(c.delta.content)
            if text is not None:
                delta.content = text
        choices.append(ChunkChoice(index=c.index, delta=delta, finish_reason=c.finish_reason))
    return ChatChunk(
        id=native.id, created=native.created, model=native.model, choices=choices, usage=native.usage
    )
