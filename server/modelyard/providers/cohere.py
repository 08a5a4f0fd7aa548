"""Cohere: chat (`/v2/chat`, SSE stream), embeddings (`/v2/embed`) and legacy completions
(`/v1/generate`, newline-delimited JSON stream).

Chat conversions live in `cohere_convert.py`; the (smaller) embeddings and completions conversions
are the pure functions below, kept apart from `CohereProvider`, which only does I/O.
"""

from __future__ import annotations

import base64
import struct
import time
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import aiohttp
import msgspec
from msgspec import UNSET
from pydantic import SecretStr

from modelyard.errors import UpstreamError
from modelyard.providers.base import Capability, Provider, ProviderSettings, ProviderSpec
from modelyard.providers.cohere_convert import (
    ChatStreamTranslator,
    CohereChatResponse,
    CohereMeta,
    CohereStreamEvent,
    add_extras,
    build_chat,
    chat_completion,
    finish_reason,
    is_set,
    new_id,
    parse_error,
    refused,
    stop_list,
    usage_of,
)
from modelyard.providers.fields import arg, url
from modelyard.providers.openai import decode_body
from modelyard.schema.chat import ChatChunk, ChatCompletion, ChatRequest
from modelyard.schema.common import Usage
from modelyard.schema.completions import Completion, CompletionChoice, CompletionRequest
from modelyard.schema.embeddings import Embedding, EmbeddingRequest, EmbeddingResponse, EmbeddingUsage
from modelyard.transport import UpstreamResponse, _transport_error, sse_events

R = TypeVar("R")

_ENCODER = msgspec.json.Encoder()
_DONE = b"[DONE]"


# --------------------------------------------------------------------------------------------------
# Embeddings and completions conversions (pure)

EMBED_EXTRAS = frozenset({"input_type", "truncate", "max_tokens", "priority"})
GENERATE_EXTRAS = frozenset(
    {"truncate", "return_likelihoods", "raw_prompting", "preset", "end_sequences", "priority"}
)

DEFAULT_INPUT_TYPE = "search_document"


class CohereEmbeddings(msgspec.Struct):
    floats: list[list[float]] | None = msgspec.field(default=None, name="float")


class CohereEmbedResponse(msgspec.Struct):
    embeddings: CohereEmbeddings
    id: str = ""
    meta: CohereMeta | None = None


class CohereGeneration(msgspec.Struct):
    text: str = ""
    index: int | None = None
    finish_reason: str | None = None


class CohereGenerateResponse(msgspec.Struct):
    id: str = ""
    generations: list[CohereGeneration] = []
    meta: CohereMeta | None = None


class CohereGenerateEvent(msgspec.Struct):
    event_type: str = ""
    text: str | None = None
    index: int | None = None
    finish_reason: str | None = None
    err: str | None = None
    response: CohereGenerateResponse | None = None


# --------------------------------------------------------------------------------------------------
# Embeddings


def _texts(provider: str, value: Any, what: str, param: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise refused(provider, f"token-id {what} (text only)", param)


def build_embed(provider: str, request: EmbeddingRequest, model_id: str) -> dict[str, Any]:
    """The `/v2/embed` body; `input_type` defaults to search_document (override with the extra)."""
    payload: dict[str, Any] = {
        "model": model_id,
        "texts": _texts(provider, request.input, "input", "input"),
        "embedding_types": ["float"],
    }
    if isinstance(request.dimensions, int):
        payload["output_dimension"] = request.dimensions
    add_extras(request.extras, EMBED_EXTRAS, payload)
    payload.setdefault("input_type", DEFAULT_INPUT_TYPE)
    return payload


def embedding_response(
    provider: str, response: CohereEmbedResponse, model_id: str, as_base64: bool
) -> EmbeddingResponse:
    vectors = response.embeddings.floats
    if vectors is None:
        raise UpstreamError(
            f"Provider '{provider}' sent no float embeddings.",
            status=502,
            code="bad_upstream_response",
            provider=provider,
        )
    data = [
        Embedding(
            index=i,
            embedding=base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode() if as_base64 else v,
        )
        for i, v in enumerate(vectors)
    ]
    tokens = usage_of(response.meta).prompt_tokens
    return EmbeddingResponse(
        model=model_id, data=data, usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens)
    )


# --------------------------------------------------------------------------------------------------
# Completions (v1 generate)


def build_generate(
    provider: str, request: CompletionRequest, model_id: str, *, stream: bool
) -> dict[str, Any]:
    prompts = _texts(provider, request.prompt, "prompts", "prompt")
    if len(prompts) != 1:
        raise refused(provider, "more than one prompt per request", "prompt")
    payload: dict[str, Any] = {"model": model_id, "prompt": prompts[0], "stream": stream}
    if stop := stop_list(request.stop):
        payload["stop_sequences"] = stop
    for key, value in (
        ("max_tokens", request.max_tokens),
        ("temperature", request.temperature),
        ("p", request.top_p),
        ("k", request.top_k),
        ("num_generations", request.n),
        ("seed", request.seed),
        ("frequency_penalty", request.frequency_penalty),
        ("presence_penalty", request.presence_penalty),
    ):
        if is_set(value):
            payload[key] = value
    add_extras(request.extras, GENERATE_EXTRAS, payload)
    return payload


def completion(provider: str, response: CohereGenerateResponse, model_id: str) -> Completion:
    choices = [
        CompletionChoice(
            index=g.index if g.index is not None else i,
            text=g.text,
            finish_reason=finish_reason(provider, g.finish_reason),
        )
        for i, g in enumerate(response.generations)
    ]
    return Completion(
        id=response.id or new_id("cmpl"),
        created=int(time.time()),
        model=model_id,
        choices=choices,
        usage=usage_of(response.meta),
    )


class GenerateStreamTranslator:
    """Cohere v1 generate stream events → Completion chunks."""

    def __init__(self, provider: str, model_id: str, include_usage: bool) -> None:
        self.provider = provider
        self.model_id = model_id
        self.include_usage = include_usage
        self.id = new_id("cmpl")
        self.created = int(time.time())
        self.finished = False

    def _chunk(self, choices: list[CompletionChoice], usage: Usage | None = None) -> Completion:
        return Completion(
            id=self.id,
            created=self.created,
            model=self.model_id,
            choices=choices,
            usage=usage if usage is not None else (None if self.include_usage else UNSET),
        )

    def translate(self, event: CohereGenerateEvent) -> list[Completion]:
        if event.event_type == "text-generation":
            if not event.text:
                return []
            return [self._chunk([CompletionChoice(index=event.index or 0, text=event.text)])]
        if event.event_type == "stream-error":
            finish_reason(self.provider, event.finish_reason or "ERROR", event.err)
            return []
        if event.event_type != "stream-end":
            return []
        self.finished = True
        response = event.response or CohereGenerateResponse()
        if response.id:
            self.id = response.id
        generations = response.generations or [CohereGeneration(finish_reason=event.finish_reason)]
        out = [
            self._chunk(
                [
                    CompletionChoice(
                        index=g.index if g.index is not None else i,
                        text="",
                        finish_reason=finish_reason(self.provider, g.finish_reason or event.finish_reason),
                    )
                ]
            )
            for i, g in enumerate(generations)
        ]
        if self.include_usage:
            out.append(self._chunk([], usage_of(response.meta)))
        return out


# --------------------------------------------------------------------------------------------------
# The adapter


class CohereSettings(ProviderSettings):
    apikey: SecretStr = arg("apikey", "apiKey", "api_key")
    base_url: str = url("base_url", "baseURL", default="https://api.cohere.com")


class CohereProvider(Provider):
    capabilities = frozenset(Capability)
    settings: CohereSettings

    def _secret(self) -> str:
        return self.settings.apikey.get_secret_value()

    def _headers(self, accept: str = "application/json") -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self._secret()}",
            "Content-Type": "application/json",
            "Accept": accept,
        }

    def _url(self, path: str) -> str:
        return self.settings.base_url.rstrip("/") + path

    async def _call(self, path: str, payload: dict[str, Any], kind: type[R]) -> R:
        body = _ENCODER.encode(payload)
        response = await self.transport.post(self.name, self._url(path), self._headers(), body)
        if response.status >= 400:
            raise parse_error(self.name, response, self._secret())
        return decode_body(self.name, response.body, kind)

    def _ended_early(self) -> UpstreamError:
        return UpstreamError(
            f"Provider '{self.name}' ended the stream before its final event.",
            status=502,
            code="upstream_disconnected",
            provider=self.name,
        )

    async def chat(self, request: ChatRequest, model_id: str) -> ChatCompletion:
        payload = build_chat(self.name, request, model_id, stream=False)
        response = await self._call("/v2/chat", payload, CohereChatResponse)
        return chat_completion(self.name, response, model_id)

    def stream_chat(self, request: ChatRequest, model_id: str) -> AsyncIterator[ChatChunk]:
        payload = build_chat(self.name, request, model_id, stream=True)
        return self._stream_chat(payload, ChatStreamTranslator(self.name, model_id, request.include_usage))

    async def _stream_chat(
        self, payload: dict[str, Any], translator: ChatStreamTranslator
    ) -> AsyncIterator[ChatChunk]:
        body = _ENCODER.encode(payload)
        headers = self._headers("text/event-stream")
        async with self.transport.stream(self.name, self._url("/v2/chat"), headers, body) as response:
            if response.status >= 400:
                upstream = UpstreamResponse(response.status, response.headers, await response.read())
                raise parse_error(self.name, upstream, self._secret())
            async for _event, data in sse_events(response, self.name):
                if data == _DONE:
                    break
                for chunk in translator.translate(decode_body(self.name, data, CohereStreamEvent)):
                    yield chunk
                if translator.finished:
                    return
        raise self._ended_early()

    async def complete(self, request: CompletionRequest, model_id: str) -> Completion:
        payload = build_generate(self.name, request, model_id, stream=False)
        response = await self._call("/v1/generate", payload, CohereGenerateResponse)
        return completion(self.name, response, model_id)

    def stream_complete(self, request: CompletionRequest, model_id: str) -> AsyncIterator[Completion]:
        payload = build_generate(self.name, request, model_id, stream=True)
        translator = GenerateStreamTranslator(self.name, model_id, request.include_usage)
        return self._stream_generate(payload, translator)

    async def _stream_generate(
        self, payload: dict[str, Any], translator: GenerateStreamTranslator
    ) -> AsyncIterator[Completion]:
        body = _ENCODER.encode(payload)
        url = self._url("/v1/generate")
        async with self.transport.stream(self.name, url, self._headers(), body) as response:
            if response.status >= 400:
                upstream = UpstreamResponse(response.status, response.headers, await response.read())
                raise parse_error(self.name, upstream, self._secret())
            async for line in ndjson_lines(response, self.name):
                for chunk in translator.translate(decode_body(self.name, line, CohereGenerateEvent)):
                    yield chunk
                if translator.finished:
                    return
        raise self._ended_early()

    async def embed(self, request: EmbeddingRequest, model_id: str) -> EmbeddingResponse:
        payload = build_embed(self.name, request, model_id)
        response = await self._call("/v2/embed", payload, CohereEmbedResponse)
        return embedding_response(self.name, response, model_id, request.encoding_format == "base64")


async def ndjson_lines(response: aiohttp.ClientResponse, provider: str) -> AsyncIterator[bytes]:
    """Each non-empty line of a newline-delimited JSON stream, as it arrives."""
    try:
        async for raw in response.content:
            line = raw.strip()
            if line:
                yield line
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise _transport_error(provider, exc) from None


COHERE = ProviderSpec("cohere", CohereSettings, CohereProvider)
