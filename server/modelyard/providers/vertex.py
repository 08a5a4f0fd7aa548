"""Google Vertex AI: Gemini, Claude (Anthropic's models on Vertex) and text embeddings.

Every call goes to `{base_url}/v1/projects/{project}/locations/{region}/publishers/{publisher}/
models/{model}:{method}` with a service-account bearer token (`google_auth`):

* Gemini (publisher google): `:generateContent` and `:streamGenerateContent?alt=sse`, bodies and
  errors from `gemini_convert` (shared with the Gemini API adapter).
* Claude (model ids starting with "claude", publisher anthropic): `:rawPredict` and
  `:streamRawPredict` with the Messages body of `anthropic_convert` minus `model`, plus
  `anthropic_version: vertex-2023-10-16`; the stream is translated by the Anthropic adapter's
  `StreamTranslator`. Vertex's own front end may still answer in Google's error shape. Claude on
  Vertex refuses URL image sources, so a non-data image URL is a 400 here (never fetched).
* Embeddings (publisher google): `:predict` with `instances [{content}]` (see `vertex_convert`).

A 401 from the data plane drops the cached token and retries once with a fresh one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import msgspec
from pydantic import SecretStr

from modelyard.errors import ClientError, UpstreamError
from modelyard.providers import anthropic_convert, gemini_convert
from modelyard.providers.anthropic import StreamTranslator
from modelyard.providers.base import Capability, Provider, ProviderSettings, ProviderSpec
from modelyard.providers.fields import arg, url
from modelyard.providers.google_auth import GoogleTokenClient
from modelyard.providers.openai import decode_body
from modelyard.providers.vertex_convert import build_predict, embedding_response
from modelyard.schema.chat import ChatChunk, ChatCompletion, ChatRequest, ImageUrlPart
from modelyard.schema.embeddings import EmbeddingRequest, EmbeddingResponse
from modelyard.transport import HttpTransport, UpstreamResponse, sse_events

ANTHROPIC_VERSION = "vertex-2023-10-16"
CLAUDE_DEFAULT_MAX_TOKENS = 4096
"""Claude requires max_tokens; sent when the client gives neither max_tokens nor
max_completion_tokens."""

_ENCODER = msgspec.json.Encoder()


class VertexSettings(ProviderSettings):
    private_key: SecretStr = arg("private_key", "privateKey")
    """The service-account key file's JSON (or a reference to it)."""
    region: str = arg("region", pattern=r"^[a-z]+(-[a-z0-9]+)+$")
    project_id: str = arg("project_id", "projectID", "projectId", pattern=r"^[a-z][a-z0-9-]{4,61}[a-z0-9]$")
    base_url: str | None = url("base_url", "baseURL", "baseUrl", default=None)
    """The API host; https://{region}-aiplatform.googleapis.com when not set."""


def is_claude(model_id: str) -> bool:
    return model_id.startswith("claude")


def _refuse_url_images(request: ChatRequest, provider: str) -> None:
    """Claude on Vertex takes inline (base64) images only; this version does not fetch URLs."""
    for message in request.messages:
        for part in message.content if isinstance(message.content, list) else []:
            if isinstance(part, ImageUrlPart) and not part.image_url.url.startswith("data:"):
                raise ClientError(
                    f"Provider '{provider}' (type google-cloud-vertex-ai) accepts Claude images only as "
                    "base64 data URLs (data:<media type>;base64,<data>), not as links.",
                    status=400,
                    param="messages",
                    code="unsupported_parameter",
                )


def claude_body(request: ChatRequest, model_id: str, *, stream: bool, provider: str) -> dict[str, Any]:
    """The `:rawPredict` / `:streamRawPredict` body: Anthropic's Messages body, the model in the URL."""
    _refuse_url_images(request, provider)
    body = anthropic_convert.build_body(
        request, model_id, stream=stream, provider=provider, default_max_tokens=CLAUDE_DEFAULT_MAX_TOKENS
    )
    body.pop("model", None)
    return {"anthropic_version": ANTHROPIC_VERSION, **body}


def _is_google_error(body: bytes) -> bool:
    try:
        value = msgspec.json.decode(body)
    except msgspec.MsgspecError:
        return False
    error = value.get("error") if isinstance(value, dict) else None
    return isinstance(error, dict) and "status" in error


class VertexProvider(Provider):
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
    settings: VertexSettings

    def __init__(self, name: str, type_name: str, settings: Any, transport: HttpTransport) -> None:
        super().__init__(name, type_name, settings, transport)
        self.auth = GoogleTokenClient(transport, name, self.settings.private_key.get_secret_value())

    # ---- plumbing ---------------------------------------------------------------------------------

    def model_url(self, publisher: str, model_id: str, method: str) -> str:
        settings = self.settings
        base = settings.base_url or f"https://{settings.region}-aiplatform.googleapis.com"
        return (
            f"{base.rstrip('/')}/v1/projects/{settings.project_id}/locations/{settings.region}"
            f"/publishers/{publisher}/models/{quote(model_id, safe='@')}:{method}"
        )

    def _error(self, response: UpstreamResponse, token: str, claude: bool) -> UpstreamError:
        if claude and not _is_google_error(response.body):
            return anthropic_convert.parse_error(
                self.name, response.status, response.headers, response.body, token
            )
        return gemini_convert.parse_error(self.name, response, token)

    async def _headers(self, accept: str) -> tuple[str, dict[str, str]]:
        token = await self.auth.token()
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json", "Accept": accept}
        return token, headers

    async def _post(self, url: str, body: dict[str, Any], claude: bool = False) -> bytes:
        payload = _ENCODER.encode(body)
        for attempt in range(2):
            token, headers = await self._headers("application/json")
            response = await self.transport.post(self.name, url, headers, payload)
            if response.status == 401 and attempt == 0:
                self.auth.invalidate(token)  # revoked or expired early: one retry with a fresh token
                continue
            if response.status >= 400:
                raise self._error(response, token, claude)
            return response.body
        raise AssertionError("unreachable")

    async def _events(self, url: str, body: dict[str, Any], claude: bool = False) -> AsyncIterator[bytes]:
        """The data of each SSE event of a streamed answer (an error status raises)."""
        payload = _ENCODER.encode(body)
        for attempt in range(2):
            token, headers = await self._headers("text/event-stream")
            async with self.transport.stream(self.name, url, headers, payload) as response:
                if response.status == 401 and attempt == 0:
                    await response.read()
                    self.auth.invalidate(token)
                    continue
                if response.status >= 400:
                    upstream = UpstreamResponse(response.status, response.headers, await response.read())
                    raise self._error(upstream, token, claude)
                async for _event, data in sse_events(response, self.name):
                    yield data
                return

    def _truncated(self) -> UpstreamError:
        return UpstreamError(
            f"Provider '{self.name}' ended the stream before the answer was complete.",
            status=502,
            code="upstream_disconnected",
            provider=self.name,
        )

    # ---- chat ---------------------------------------------------------------------------------------

    async def chat(self, request: ChatRequest, model_id: str) -> ChatCompletion:
        if is_claude(model_id):
            body = claude_body(request, model_id, stream=False, provider=self.name)
            data = await self._post(self.model_url("anthropic", model_id, "rawPredict"), body, claude=True)
            message = decode_body(self.name, data, anthropic_convert.AnthropicMessage)
            return anthropic_convert.to_completion(message, model_id, anthropic_convert.json_prefill(request))
        url = self.model_url("google", model_id, "generateContent")
        data = await self._post(url, gemini_convert.chat_payload(request))
        return gemini_convert.chat_result(data, model_id, self.name)

    def stream_chat(self, request: ChatRequest, model_id: str) -> AsyncIterator[ChatChunk]:
        if is_claude(model_id):
            body = claude_body(request, model_id, stream=True, provider=self.name)
            return self._stream_claude(request, model_id, body)
        return self._stream_gemini(request, model_id, gemini_convert.chat_payload(request))

    async def _stream_claude(
        self, request: ChatRequest, model_id: str, body: dict[str, Any]
    ) -> AsyncIterator[ChatChunk]:
        translator = StreamTranslator(
            self.name,
            model_id,
            include_usage=request.include_usage,
            prefill=anthropic_convert.json_prefill(request),
            secret=self.auth.secrets()[0] if self.auth.secrets() else "",
        )
        url = self.model_url("anthropic", model_id, "streamRawPredict")
        async for data in self._events(url, body, claude=True):
            for chunk in translator.feed(data):
                yield chunk
            if translator.done:
                return
        raise self._truncated()

    async def _stream_gemini(
        self, request: ChatRequest, model_id: str, body: dict[str, Any]
    ) -> AsyncIterator[ChatChunk]:
        translator = gemini_convert.GeminiStream(model_id, request.include_usage, provider=self.name)
        url = self.model_url("google", model_id, "streamGenerateContent") + "?alt=sse"
        async for data in self._events(url, body):
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

    # ---- embeddings ---------------------------------------------------------------------------------

    async def embed(self, request: EmbeddingRequest, model_id: str) -> EmbeddingResponse:
        body = build_predict(self.name, request)
        data = await self._post(self.model_url("google", model_id, "predict"), body)
        return embedding_response(self.name, data, model_id, request.encoding_format == "base64")


VERTEX = ProviderSpec("google-cloud-vertex-ai", VertexSettings, VertexProvider)
