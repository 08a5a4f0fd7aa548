"""Anthropic Messages API (`POST {base_url}/v1/messages`): chat, streaming, tools, vision, JSON.

Request, response and error conversions live in `anthropic_convert`; this module holds the stream
translator (pure: one event in, chunks out) and the adapter, which does the I/O through the shared
transport.
JSON mode: `json_object` is emulated (a system instruction plus a `{` assistant prefill that is put
back in front of the reply); `json_schema` maps to Anthropic's native `output_config.format`.
No completions and no embeddings (the base class answers a clear 400).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import msgspec
from msgspec import UNSET
from pydantic import Field, SecretStr

from modelyard.errors import UpstreamError
from modelyard.providers.anthropic_convert import (
    AnthropicMessage,
    AnthropicUsage,
    Block,
    ErrorDetail,
    build_body,
    finish_reason,
    json_prefill,
    parse_error,
    stream_error,
    to_completion,
    to_usage,
)
from modelyard.providers.base import Capability, Provider, ProviderSettings, ProviderSpec
from modelyard.providers.fields import arg, url
from modelyard.providers.openai import decode_body
from modelyard.schema.chat import (
    ChatChunk,
    ChatCompletion,
    ChatRequest,
    ChunkChoice,
    Delta,
    FinishReason,
    FunctionCallDelta,
    ToolCallDelta,
)
from modelyard.transport import sse_events

_ENCODER = msgspec.json.Encoder()


class AnthropicSettings(ProviderSettings):
    apikey: SecretStr = arg("apikey", "apiKey", "api_key")
    base_url: str = url("base_url", "baseURL", default="https://api.anthropic.com")
    anthropic_version: str = arg("anthropic_version", "anthropicVersion", default="2023-06-01")
    default_max_tokens: int = Field(default=4096, ge=1, validation_alias="default_max_tokens")
    """Anthropic requires max_tokens; sent when the client gives neither max_tokens nor
    max_completion_tokens."""


class StreamEvent(msgspec.Struct):
    type: str
    message: AnthropicMessage | None = None
    index: int = 0
    content_block: Block | None = None
    delta: dict[str, Any] | None = None
    usage: AnthropicUsage | None = None
    error: ErrorDetail | None = None


class StreamTranslator:
    """Anthropic stream events → ChatChunks, one event at a time (no buffering)."""

    def __init__(
        self, provider: str, model_id: str, *, include_usage: bool, prefill: str = "", secret: str = ""
    ) -> None:
        self.provider = provider
        self.secret = secret
        self.model = model_id
        self.include_usage = include_usage
        self.prefill = prefill
        self.id = ""
        self.created = int(time.time())
        self.usage = AnthropicUsage()
        self.stop_reason: str | None = None
        self.tool_index: dict[int, int] = {}
        self.started = False
        self.done = False

    def _chunk(self, delta: Delta, finish: FinishReason | None = None) -> ChatChunk:
        return ChatChunk(
            id=self.id,
            created=self.created,
            model=self.model,
            choices=[ChunkChoice(index=0, delta=delta, finish_reason=finish)],
            usage=None if self.include_usage else UNSET,
        )

    def feed(self, data: bytes) -> list[ChatChunk]:
        try:
            event = msgspec.json.decode(data, type=StreamEvent)
        except msgspec.MsgspecError:
            raise UpstreamError(
                f"Provider '{self.provider}' sent a stream event that is not valid JSON.",
                status=502,
                code="bad_upstream_response",
                provider=self.provider,
            ) from None
        chunks = self._translate(event)
        if chunks and not self.started:
            # The role chunk goes out with the first real output, not on message_start: an error
            # event right after message_start then fails the stream before it is committed, so the
            # router can still fall back (nothing the client could use is held back).
            self.started = True
            chunks.insert(0, self._chunk(Delta(role="assistant", content=self.prefill)))
        return chunks

    def _translate(self, event: StreamEvent) -> list[ChatChunk]:
        kind = event.type
        if kind == "message_start" and event.message is not None:
            self.id = event.message.id
            self.model = event.message.model or self.model
            self._merge_usage(event.message.usage)
            return []
        if kind == "content_block_start" and event.content_block is not None:
            return self._block_start(event.index, event.content_block)
        if kind == "content_block_delta" and event.delta is not None:
            return self._block_delta(event.index, event.delta)
        if kind == "message_delta":
            self.stop_reason = (event.delta or {}).get("stop_reason") or self.stop_reason
            self._merge_usage(event.usage)
            return []
        if kind == "message_stop":
            self.done = True
            closing = [self._chunk(Delta(), finish_reason(self.stop_reason))]
            if self.include_usage:
                closing.append(
                    ChatChunk(
                        id=self.id,
                        created=self.created,
                        model=self.model,
                        choices=[],
                        usage=to_usage(self.usage),
                    )
                )
            return closing
        if kind == "error":
            raise stream_error(self.provider, event.error or ErrorDetail(), self.secret)
        return []  # ping, content_block_stop, and event types this version does not translate

    def _merge_usage(self, usage: AnthropicUsage | None) -> None:
        if usage is None:
            return
        for field in AnthropicUsage.__struct_fields__:
            value = getattr(usage, field)
            if value is not None:
                setattr(self.usage, field, value)

    def _block_start(self, index: int, block: Block) -> list[ChatChunk]:
        if block.type == "text":
            return [self._chunk(Delta(content=block.text))] if block.text else []
        if block.type != "tool_use":
            return []
        position = self.tool_index[index] = len(self.tool_index)
        opening = ToolCallDelta(
            index=position,
            id=block.id or "",
            type="function",
            function=FunctionCallDelta(name=block.name or "", arguments=""),
        )
        return [self._chunk(Delta(tool_calls=[opening]))]

    def _block_delta(self, index: int, delta: Mapping[str, Any]) -> list[ChatChunk]:
        kind = delta.get("type")
        if kind == "text_delta" and delta.get("text"):
            return [self._chunk(Delta(content=delta["text"]))]
        if kind == "input_json_delta" and delta.get("partial_json") and index in self.tool_index:
            fragment = ToolCallDelta(
                index=self.tool_index[index], function=FunctionCallDelta(arguments=delta["partial_json"])
            )
            return [self._chunk(Delta(tool_calls=[fragment]))]
        return []  # thinking_delta, signature_delta, citations_delta


class AnthropicProvider(Provider):
    capabilities = frozenset(
        {Capability.CHAT, Capability.STREAM, Capability.TOOLS, Capability.VISION, Capability.JSON_MODE}
    )
    settings: AnthropicSettings

    def _headers(self, stream: bool) -> dict[str, str]:
        return {
            "x-api-key": self.settings.apikey.get_secret_value(),
            "anthropic-version": self.settings.anthropic_version,
            "content-type": "application/json",
            "accept": "text/event-stream" if stream else "application/json",
        }

    def _url(self) -> str:
        return self.settings.base_url.rstrip("/") + "/v1/messages"

    def _payload(self, request: ChatRequest, model_id: str, stream: bool) -> bytes:
        body = build_body(
            request,
            model_id,
            stream=stream,
            provider=self.name,
            default_max_tokens=self.settings.default_max_tokens,
        )
        return _ENCODER.encode(body)

    async def chat(self, request: ChatRequest, model_id: str) -> ChatCompletion:
        payload = self._payload(request, model_id, stream=False)
        response = await self.transport.post(self.name, self._url(), self._headers(False), payload)
        secret = self.settings.apikey.get_secret_value()
        if response.status >= 400:
            raise parse_error(self.name, response.status, response.headers, response.body, secret)
        message = decode_body(self.name, response.body, AnthropicMessage)
        return to_completion(message, model_id, json_prefill(request))

    def stream_chat(self, request: ChatRequest, model_id: str) -> AsyncIterator[ChatChunk]:
        payload = self._payload(request, model_id, stream=True)
        return self._stream(request, model_id, payload)

    async def _stream(self, request: ChatRequest, model_id: str, payload: bytes) -> AsyncIterator[ChatChunk]:
        secret = self.settings.apikey.get_secret_value()
        translator = StreamTranslator(
            self.name,
            model_id,
            include_usage=request.include_usage,
            prefill=json_prefill(request),
            secret=secret,
        )
        async with self.transport.stream(self.name, self._url(), self._headers(True), payload) as response:
            if response.status >= 400:
                body = await response.read()
                raise parse_error(self.name, response.status, response.headers, body, secret)
            async for _event, data in sse_events(response, self.name):
                for chunk in translator.feed(data):
                    yield chunk
                if translator.done:
                    return
        raise UpstreamError(
            f"Provider '{self.name}' ended the stream before message_stop.",
            status=502,
            code="upstream_disconnected",
            provider=self.name,
        )


ANTHROPIC = ProviderSpec("anthropic", AnthropicSettings, AnthropicProvider)
