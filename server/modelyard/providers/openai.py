"""OpenAI and every OpenAI-compatible server (vLLM, Ollama, Groq, Together, Mistral, Gemini's
OpenAI endpoint…), plus IBM's `cerebras` and `nim` types, which are presets of the same wire format.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Mapping
from typing import Any, TypeVar

import msgspec
from pydantic import AliasChoices, Field, SecretStr

from modelyard.errors import UpstreamError, upstream_status_to_client
from modelyard.providers.base import Capability, Provider, ProviderSettings, ProviderSpec
from modelyard.schema.chat import ChatChunk, ChatCompletion, ChatRequest
from modelyard.schema.completions import Completion, CompletionRequest
from modelyard.schema.embeddings import EmbeddingRequest, EmbeddingResponse
from modelyard.transport import UpstreamResponse, sse_events

R = TypeVar("R")
Request = ChatRequest | CompletionRequest | EmbeddingRequest

_ENCODER = msgspec.json.Encoder()
_DONE = b"[DONE]"


class OpenAISettings(ProviderSettings):
    apikey: SecretStr = Field(validation_alias=AliasChoices("apikey", "apiKey", "api_key"))
    base_url: str = Field(
        default="https://api.openai.com/v1",
        validation_alias=AliasChoices("base_url", "baseURL", "baseUrl", "api_base"),
        pattern=r"^https?://[^\s]+$",
    )
    organization: str | None = Field(default=None, validation_alias=AliasChoices("organization", "org"))


class OpenAIError(msgspec.Struct):
    message: str = ""
    type: str | None = None
    param: str | None = None
    code: str | int | None = None


class OpenAIErrorBody(msgspec.Struct):
    error: OpenAIError | None = None


def build_payload(request: Request, model_id: str, *, stream: bool | None) -> bytes:
    """The upstream body: the client's request with the deployment's model id and its extras."""
    typed: dict[str, Any] = msgspec.to_builtins(msgspec.structs.replace(request, extras={}))
    typed.pop("$extras", None)
    # Extras only add fields: they never replace a typed one, the model or the stream mode.
    fields = {**request.extras, **typed, "model": model_id}
    if stream:
        fields["stream"] = True
    else:
        fields.pop("stream", None)
        fields.pop("stream_options", None)
    return _ENCODER.encode(fields)


MAX_RETRY_AFTER = 86_400.0


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait, from `retry-after-ms` or else `retry-after` (seconds); capped at a day."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:
            continue
        if math.isfinite(seconds):
            return min(max(0.0, seconds), MAX_RETRY_AFTER)
    return None


def parse_error(provider: str, response: UpstreamResponse, secret: str) -> UpstreamError:
    """An OpenAI-shaped upstream error → the gateway's error, classified by status and code."""
    status = upstream_status_to_client(response.status)
    try:
        detail = msgspec.json.decode(response.body, type=OpenAIErrorBody).error
    except msgspec.MsgspecError:
        detail = None
    if response.status == 401:
        message = f"Provider '{provider}' rejected the gateway's credentials."
    elif detail and detail.message:
        message = detail.message.replace(secret, "****") if secret else detail.message
    else:
        message = f"Provider '{provider}' answered HTTP {response.status}."
    code = str(detail.code) if detail and detail.code is not None else None
    if response.status in (401, 403):
        # The provider refused the gateway's credential, not the client's key: say so distinctly.
        code = "provider_authentication_failed" if response.status == 401 else "provider_permission_denied"
    return UpstreamError(
        message,
        status=status,
        code=code,
        param=detail.param if detail and status < 500 else None,
        retry_after=retry_after(response.headers),
        error_type=detail.type if detail and status < 500 and detail.type else None,
        upstream_status=response.status,
        provider=provider,
    )


def decode_body(provider: str, body: bytes, kind: type[R]) -> R:
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.MsgspecError:
        raise UpstreamError(
            f"Provider '{provider}' sent a response that is not valid {kind.__name__} JSON.",
            status=502,
            code="bad_upstream_response",
            provider=provider,
        ) from None


class OpenAIProvider(Provider):
    capabilities = frozenset(Capability)
    settings: OpenAISettings

    def _headers(self) -> dict[str, str]:
        headers = {
            "Authorization": f"Bearer {self.settings.apikey.get_secret_value()}",
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        if self.settings.organization:
            headers["OpenAI-Organization"] = self.settings.organization
        return headers

    def _url(self, path: str) -> str:
        return self.settings.base_url.rstrip("/") + path

    async def _call(self, path: str, payload: bytes, kind: type[R]) -> R:
        response = await self.transport.post(self.name, self._url(path), self._headers(), payload)
        if response.status >= 400:
            raise parse_error(self.name, response, self.settings.apikey.get_secret_value())
        return decode_body(self.name, response.body, kind)

    async def _stream(self, path: str, payload: bytes, kind: type[R]) -> AsyncIterator[R]:
        headers = {**self._headers(), "Accept": "text/event-stream"}
        async with self.transport.stream(self.name, self._url(path), headers, payload) as response:
            if response.status >= 400:
                body = await response.read()
                upstream = UpstreamResponse(response.status, response.headers, body)
                raise parse_error(self.name, upstream, self.settings.apikey.get_secret_value())
            async for _event, data in sse_events(response, self.name):
                if data == _DONE:
                    return
                yield decode_body(self.name, data, kind)
        raise UpstreamError(
            f"Provider '{self.name}' ended the stream without [DONE].",
            status=502,
            code="upstream_disconnected",
            provider=self.name,
        )

    async def chat(self, request: ChatRequest, model_id: str) -> ChatCompletion:
        payload = build_payload(request, model_id, stream=False)
        return await self._call("/chat/completions", payload, ChatCompletion)

    def stream_chat(self, request: ChatRequest, model_id: str) -> AsyncIterator[ChatChunk]:
        payload = build_payload(request, model_id, stream=True)
        return self._stream("/chat/completions", payload, ChatChunk)

    async def complete(self, request: CompletionRequest, model_id: str) -> Completion:
        payload = build_payload(request, model_id, stream=False)
        return await self._call("/completions", payload, Completion)

    def stream_complete(self, request: CompletionRequest, model_id: str) -> AsyncIterator[Completion]:
        payload = build_payload(request, model_id, stream=True)
        return self._stream("/completions", payload, Completion)

    async def embed(self, request: EmbeddingRequest, model_id: str) -> EmbeddingResponse:
        payload = build_payload(request, model_id, stream=None)
        return await self._call("/embeddings", payload, EmbeddingResponse)


class CerebrasSettings(OpenAISettings):
    base_url: str = Field(
        default="https://api.cerebras.ai/v1",
        validation_alias=AliasChoices("base_url", "baseURL", "baseUrl", "api_base"),
        pattern=r"^https?://[^\s]+$",
    )


class NimSettings(OpenAISettings):
    base_url: str = Field(
        default="https://integrate.api.nvidia.com/v1",
        validation_alias=AliasChoices("base_url", "baseURL", "baseUrl", "api_base"),
        pattern=r"^https?://[^\s]+$",
    )


OPENAI = ProviderSpec("openai", OpenAISettings, OpenAIProvider)
CEREBRAS = ProviderSpec("cerebras", CerebrasSettings, OpenAIProvider)
NIM = ProviderSpec("nim", NimSettings, OpenAIProvider)
