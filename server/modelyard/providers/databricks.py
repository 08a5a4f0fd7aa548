"""Databricks Model Serving: OpenAI-shaped chat, completions and embeddings on per-endpoint URLs.

Requests go to ``{host}/serving-endpoints/{endpoint}/invocations`` with a bearer token; the model id
is the serving endpoint's name, carried in the URL and not in the body (as the official SDK's
``serving_endpoints.query`` does). Bodies and responses are OpenAI's shapes, so OpenAI's response
types and body decoder are reused; Databricks' own error bodies (``{"error_code", "message"}``) are
classified by HTTP status, refined by ``error_code`` when the status is generic, and reasoning
models' block-list ``content`` is read as text (see ``databricks_convert``).

Streams: ``stream_options`` is not sent (Databricks does not document it); the usage the endpoint
reports on its chunks is collected and, when the client asked for it, sent as OpenAI's final
usage-only chunk. Every other field, extras included, passes through unchanged;
``max_completion_tokens`` is sent as ``max_tokens``, the field Databricks documents.

The pure conversions are in ``databricks_convert``. The SSE loop and the stream normaliser below are
provider-neutral; ``ai21`` reuses them.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from typing import TypeVar
from urllib.parse import quote

import msgspec
from msgspec import UNSET
from pydantic import SecretStr

from modelyard.errors import UpstreamError
from modelyard.providers.base import Capability, Provider, ProviderSettings, ProviderSpec
from modelyard.providers.databricks_convert import (
    DatabricksEmbeddings,
    build_body,
    decode_chat,
    decode_chat_chunk,
    parse_error,
    stream_error,
    to_embedding_response,
)
from modelyard.providers.fields import arg, url
from modelyard.providers.openai import decode_body
from modelyard.schema.chat import ChatChunk, ChatCompletion, ChatRequest
from modelyard.schema.common import Usage
from modelyard.schema.completions import Completion, CompletionRequest
from modelyard.schema.embeddings import EmbeddingRequest, EmbeddingResponse
from modelyard.transport import HttpTransport, UpstreamResponse, sse_events

R = TypeVar("R")
Chunk = TypeVar("Chunk", ChatChunk, Completion)

_DONE = b"[DONE]"


class DatabricksSettings(ProviderSettings):
    host: str = url("host", "workspace_url", "databricks_workspace_url")
    token: SecretStr = arg("token", "databricks_api_token")


# ---- provider-neutral streaming helpers (candidates for openai.py) ---------------------------------


async def sse_data(
    transport: HttpTransport,
    provider: str,
    endpoint: str,
    headers: dict[str, str],
    payload: bytes,
    on_error: Callable[[UpstreamResponse], UpstreamError],
) -> AsyncGenerator[bytes, None]:
    """The data of each SSE event up to `[DONE]`; an error status or a stream cut short raises."""
    async with transport.stream(provider, endpoint, headers, payload) as response:
        if response.status >= 400:
            body = await response.read()
            raise on_error(UpstreamResponse(response.status, response.headers, body))
        async for _event, data in sse_events(response, provider):
            if data == _DONE:
                return
            yield data
    raise UpstreamError(
        f"Provider '{provider}' ended the stream without [DONE].",
        status=502,
        code="upstream_disconnected",
        provider=provider,
    )


async def relay_stream(chunks: AsyncGenerator[Chunk, None], include_usage: bool) -> AsyncIterator[Chunk]:
    """OpenAI's stream contract over chunks that may carry usage anywhere.

    Chunks are passed on as they arrive: the first one with choices carries the assistant role,
    usage is taken off every chunk (``None`` on each when the client asked for usage) and, when
    asked for, sent once at the end in a chunk with no choices, as OpenAI does.
    """
    usage: Usage | None = None
    last: Chunk | None = None
    first = True
    async with aclosing(chunks):  # closing the relay closes the upstream stream
        async for chunk in chunks:
            if isinstance(chunk.usage, Usage):
                usage = chunk.usage
            last = chunk
            if not chunk.choices:
                continue
            if first and isinstance(chunk, ChatChunk):
                for choice in chunk.choices:
                    if choice.delta.role is UNSET:
                        choice.delta.role = "assistant"
            first = False
            chunk.usage = None if include_usage else UNSET
            yield chunk
    if include_usage and usage is not None and last is not None:
        yield msgspec.structs.replace(last, choices=[], usage=usage)


# ---- the adapter -----------------------------------------------------------------------------------


class DatabricksProvider(Provider):
    capabilities = frozenset(Capability)
    settings: DatabricksSettings

    @property
    def _secret(self) -> str:
        return self.settings.token.get_secret_value()

    def _headers(self, accept: str = "application/json") -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self._secret}",
            "Content-Type": "application/json",
            "Accept": accept,
        }

    def _url(self, model_id: str) -> str:
        endpoint = quote(model_id, safe="")
        return f"{self.settings.host.rstrip('/')}/serving-endpoints/{endpoint}/invocations"

    def _error(self, response: UpstreamResponse) -> UpstreamError:
        return parse_error(self.name, response, self._secret)

    async def _post(self, model_id: str, payload: bytes) -> UpstreamResponse:
        response = await self.transport.post(self.name, self._url(model_id), self._headers(), payload)
        if response.status >= 400:
            raise self._error(response)
        return response

    async def _call(self, model_id: str, payload: bytes, kind: type[R]) -> R:
        return decode_body(self.name, (await self._post(model_id, payload)).body, kind)

    async def _stream(
        self, model_id: str, payload: bytes, decode: Callable[[bytes], Chunk]
    ) -> AsyncGenerator[Chunk, None]:
        headers = self._headers("text/event-stream")
        events = sse_data(self.transport, self.name, self._url(model_id), headers, payload, self._error)
        async with aclosing(events):  # closing this stream closes the upstream connection at once
            async for data in events:
                yield decode(data)

    def _completion_chunk(self, data: bytes) -> Completion:
        try:
            return msgspec.json.decode(data, type=Completion)
        except msgspec.MsgspecError:
            raise stream_error(self.name, data, self._secret) from None

    def _chat_chunk(self, data: bytes) -> ChatChunk:
        return decode_chat_chunk(self.name, data, self._secret)

    async def chat(self, request: ChatRequest, model_id: str) -> ChatCompletion:
        response = await self._post(model_id, build_body(request, stream=False))
        return decode_chat(self.name, response.body)

    def stream_chat(self, request: ChatRequest, model_id: str) -> AsyncIterator[ChatChunk]:
        chunks = self._stream(model_id, build_body(request, stream=True), self._chat_chunk)
        return relay_stream(chunks, request.include_usage)

    async def complete(self, request: CompletionRequest, model_id: str) -> Completion:
        return await self._call(model_id, build_body(request, stream=False), Completion)

    def stream_complete(self, request: CompletionRequest, model_id: str) -> AsyncIterator[Completion]:
        chunks = self._stream(model_id, build_body(request, stream=True), self._completion_chunk)
        return relay_stream(chunks, request.include_usage)

    async def embed(self, request: EmbeddingRequest, model_id: str) -> EmbeddingResponse:
        native = await self._call(model_id, build_body(request, stream=None), DatabricksEmbeddings)
        return to_embedding_response(native, model_id)


DATABRICKS = ProviderSpec("databricks-model-serving", DatabricksSettings, DatabricksProvider)
