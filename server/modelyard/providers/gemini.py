"""The Gemini API (Google AI Studio): chat, streaming, tools, vision, JSON mode and embeddings.

Calls `{base_url}/v1beta/models/{model}:generateContent`, `:streamGenerateContent?alt=sse`,
`:embedContent` (one input) and `:batchEmbedContents` (a list), authenticated with the
`x-goog-api-key` header — the key is never put in a URL. Bodies, responses, stream events and
errors are converted by `gemini_convert` (shared with Vertex AI). No legacy completions.

Chat extras passed: safetySettings, cachedContent, thinkingConfig, responseModalities, mediaResolution,
speechConfig, responseJsonSchema (camel or snake case); `labels` (Vertex only) and any other extra are
dropped. Dropped chat fields: user, metadata, logit_bias, logprobs, top_logprobs, parallel_tool_calls.

Embeddings: text inputs only (token ids answer a 400); `dimensions` → `outputDimensionality`;
extras `task_type`/`taskType` and `title` pass through; `user` is dropped.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import msgspec
from pydantic import SecretStr

from modelyard.errors import ClientError, UpstreamError
from modelyard.providers import gemini_convert, gemini_request
from modelyard.providers.base import Capability, Provider, ProviderSettings, ProviderSpec
from modelyard.providers.fields import arg, url
from modelyard.schema.chat import ChatChunk, ChatCompletion, ChatRequest
from modelyard.schema.embeddings import Embedding, EmbeddingRequest, EmbeddingResponse, EmbeddingUsage
from modelyard.transport import UpstreamResponse, sse_events

API_VERSION = "v1beta"
_ENCODER = msgspec.json.Encoder()


class GeminiSettings(ProviderSettings):
    apikey: SecretStr = arg("apikey", "apiKey", "api_key")
    base_url: str = url("base_url", "baseURL", "baseUrl", default="https://generativelanguage.googleapis.com")
    """The API host (a trailing /v1beta or /v1 is kept as the API version)."""


class _Values(msgspec.Struct):
    values: list[float]


class _EmbedUsage(msgspec.Struct):
    promptTokenCount: int = 0
    totalTokenCount: int = 0


class _EmbedResponse(msgspec.Struct):
    embedding: _Values
    usageMetadata: _EmbedUsage | None = None


class _BatchEmbedResponse(msgspec.Struct):
    embeddings: list[_Values]
    usageMetadata: _EmbedUsage | None = None


def model_name(model_id: str) -> str:
    """The resource name: `models/{id}` unless the id already names one (tunedModels/…)."""
    name = model_id if "/" in model_id else f"models/{model_id}"
    return quote(name, safe="/@-_.")


def _texts(provider: str, value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    raise ClientError(
        f"Provider '{provider}' (type gemini) embeds text only: send a string or a list of strings.",
        status=400,
        param="input",
        code="unsupported_parameter",
    )


def embed_payload(provider: str, request: EmbeddingRequest, model_id: str) -> tuple[str, dict[str, Any]]:
    """(method, body): `embedContent` for one string, `batchEmbedContents` for a list."""
    extras = {key: gemini_request.plain(value) for key, value in request.extras.items()}
    options: dict[str, Any] = {}
    if isinstance(request.dimensions, int):
        options["outputDimensionality"] = request.dimensions
    task = extras.get("taskType", extras.get("task_type"))
    if isinstance(task, str):
        options["taskType"] = task
    if isinstance(extras.get("title"), str):
        options["title"] = extras["title"]
    texts = _texts(provider, request.input)
    if isinstance(request.input, str):
        return "embedContent", {"content": {"parts": [{"text": texts[0]}]}, **options}
    name = model_name(model_id)
    requests = [{"model": name, "content": {"parts": [{"text": text}]}, **options} for text in texts]
    return "batchEmbedContents", {"requests": requests}


def embedding_result(
    provider: str, method: str, data: bytes, model_id: str, as_base64: bool
) -> EmbeddingResponse:
    try:
        if method == "embedContent":
            single = msgspec.json.decode(data, type=_EmbedResponse)
            vectors, usage = [single.embedding.values], single.usageMetadata
        else:
            batch = msgspec.json.decode(data, type=_BatchEmbedResponse)
            vectors, usage = [item.values for item in batch.embeddings], batch.usageMetadata
    except msgspec.MsgspecError:
        raise UpstreamError(
            f"Provider '{provider}' sent a response that is not valid {method} JSON.",
            status=502,
            code="bad_upstream_response",
            provider=provider,
        ) from None
    items = []
    for index, vector in enumerate(vectors):
        encoded: list[float] | str = (
            base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode() if as_base64 else vector
        )
        items.append(Embedding(index=index, embedding=encoded))
    # usageMetadata is reported by current embedding models; older ones send none (usage 0).
    prompt = usage.promptTokenCount if usage else 0
    total = (usage.totalTokenCount if usage else 0) or prompt
    return EmbeddingResponse(
        model=model_id, data=items, usage=EmbeddingUsage(prompt_tokens=prompt, total_tokens=total)
    )


class GeminiProvider(Provider):
    capabilities = frozenset(
        {
            Capability.CHAT,
            Capability.STREAM,
            Capability.TOOLS,
            Capability.VISION,
            Capability.JSON_MODE,
            Capability.EMBEDDINGS,
        }
    )
    settings: GeminiSettings

    def _secret(self) -> str:
        return self.settings.apikey.get_secret_value()

    def _headers(self, accept: str) -> dict[str, str]:
        return {"x-goog-api-key": self._secret(), "Content-Type": "application/json", "Accept": accept}

    def model_url(self, model_id: str, method: str) -> str:
        base = self.settings.base_url.rstrip("/")
        if not base.endswith(("/v1beta", "/v1")):
            base = f"{base}/{API_VERSION}"
        return f"{base}/{model_name(model_id)}:{method}"

    async def _post(self, model_id: str, method: str, body: dict[str, Any]) -> bytes:
        url_ = self.model_url(model_id, method)
        response = await self.transport.post(
            self.name, url_, self._headers("application/json"), _ENCODER.encode(body)
        )
        if response.status >= 400:
            raise gemini_convert.parse_error(self.name, response, self._secret())
        return response.body

    @staticmethod
    def _payload(request: ChatRequest) -> dict[str, Any]:
        body = gemini_convert.chat_payload(request)
        body.pop("labels", None)  # a Vertex-only field: the Gemini API rejects it
        return body

    async def chat(self, request: ChatRequest, model_id: str) -> ChatCompletion:
        data = await self._post(model_id, "generateContent", self._payload(request))
        return gemini_convert.chat_result(data, model_id, self.name)

    def stream_chat(self, request: ChatRequest, model_id: str) -> AsyncIterator[ChatChunk]:
        # Converted before the first await, so a bad request fails before the stream is committed.
        return self._stream(request, model_id, self._payload(request))

    async def _stream(
        self, request: ChatRequest, model_id: str, body: dict[str, Any]
    ) -> AsyncIterator[ChatChunk]:
        translator = gemini_convert.GeminiStream(model_id, request.include_usage, provider=self.name)
        url_ = self.model_url(model_id, "streamGenerateContent") + "?alt=sse"
        headers = self._headers("text/event-stream")
        async with self.transport.stream(self.name, url_, headers, _ENCODER.encode(body)) as response:
            if response.status >= 400:
                upstream = UpstreamResponse(response.status, response.headers, await response.read())
                raise gemini_convert.parse_error(self.name, upstream, self._secret())
            async for _event, data in sse_events(response, self.name):
                try:
                    event = msgspec.json.decode(data)
                except msgspec.MsgspecError:
                    event = None
                if not isinstance(event, dict):
                    raise UpstreamError(
                        f"Provider '{self.name}' sent a stream event that is not valid JSON.",
                        status=502,
                        code="bad_upstream_response",
                        provider=self.name,
                    )
                for chunk in translator.feed(event):
                    yield chunk
        for chunk in translator.finish():
            yield chunk

    async def embed(self, request: EmbeddingRequest, model_id: str) -> EmbeddingResponse:
        method, body = embed_payload(self.name, request, model_id)
        data = await self._post(model_id, method, body)
        return embedding_result(self.name, method, data, model_id, request.encoding_format == "base64")


GEMINI = ProviderSpec("gemini", GeminiSettings, GeminiProvider)
