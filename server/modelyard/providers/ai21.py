"""AI21 Labs (Jamba): chat and streamed chat on ``{base_url}/chat/completions`` with a bearer key.

The request conversion (what is mapped, refused and dropped) is in ``ai21_convert``; AI21 has no
completions or embeddings endpoint in its current API, so those answer the base class's 400.
Errors are FastAPI-shaped (``{"detail": "..."}`` or a list of validation items) with no error
code: they are classified by HTTP status alone. Streams are OpenAI-like SSE chunks ending with
``[DONE]``, with usage on the last chunk; the SSE loop and usage handling are shared with the
Databricks adapter.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any

import msgspec
from pydantic import SecretStr

from modelyard.errors import UpstreamError, upstream_status_to_client
from modelyard.providers.ai21_convert import (
    AI21Chunk,
    AI21Response,
    StreamState,
    build_body,
    to_chat_completion,
)
from modelyard.providers.base import Capability, Provider, ProviderSettings, ProviderSpec
from modelyard.providers.databricks import relay_stream, sse_data
from modelyard.providers.fields import arg, url
from modelyard.providers.openai import decode_body, retry_after
from modelyard.providers.openai import parse_error as parse_openai_error
from modelyard.schema.chat import ChatChunk, ChatCompletion, ChatRequest
from modelyard.transport import UpstreamResponse

_ENCODER = msgspec.json.Encoder()


class AI21Settings(ProviderSettings):
    apikey: SecretStr = arg("apikey", "apiKey", "api_key")
    base_url: str = url("base_url", "baseURL", default="https://api.ai21.com/studio/v1")


def _detail_message(detail: Any) -> str | None:
    if isinstance(detail, str):
        return detail or None
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict) and isinstance(item.get("msg"), str):
                where = ".".join(str(p) for p in item.get("loc") or [] if p != "body")
                parts.append(f"{where}: {item['msg']}" if where else item["msg"])
        return "; ".join(parts) or None
    return None


def parse_error(provider: str, response: UpstreamResponse, secret: str) -> UpstreamError:
    """An AI21 error (`{"detail": ...}`, or OpenAI's shape) → the gateway's error, by HTTP status."""
    try:
        parsed = msgspec.json.decode(response.body)
    except msgspec.MsgspecError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        return parse_openai_error(provider, response, secret)
    detail = _detail_message(parsed.get("detail")) if isinstance(parsed, dict) else None
    if response.status == 401:
        message = f"Provider '{provider}' rejected the gateway's credentials."
    elif detail:
        message = detail.replace(secret, "****") if secret else detail
    else:
        message = f"Provider '{provider}' answered HTTP {response.status}."
    code = {401: "provider_authentication_failed", 403: "provider_permission_denied"}.get(response.status)
    return UpstreamError(
        message,
        status=upstream_status_to_client(response.status),
        code=code,
        retry_after=retry_after(response.headers),
        upstream_status=response.status,
        provider=provider,
    )


class AI21Provider(Provider):
    capabilities = frozenset({Capability.CHAT, Capability.STREAM, Capability.TOOLS, Capability.JSON_MODE})
    settings: AI21Settings

    @property
    def _secret(self) -> str:
        return self.settings.apikey.get_secret_value()

    def _headers(self, accept: str = "application/json") -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self._secret}",
            "Content-Type": "application/json",
            "Accept": accept,
        }

    @property
    def _url(self) -> str:
        return self.settings.base_url.rstrip("/") + "/chat/completions"

    def _error(self, response: UpstreamResponse) -> UpstreamError:
        return parse_error(self.name, response, self._secret)

    def _payload(self, request: ChatRequest, model_id: str, stream: bool) -> bytes:
        return _ENCODER.encode(build_body(request, model_id, stream=stream, provider=self.name))

    async def chat(self, request: ChatRequest, model_id: str) -> ChatCompletion:
        payload = self._payload(request, model_id, stream=False)
        response = await self.transport.post(self.name, self._url, self._headers(), payload)
        if response.status >= 400:
            raise self._error(response)
        return to_chat_completion(decode_body(self.name, response.body, AI21Response), model_id)

    def stream_chat(self, request: ChatRequest, model_id: str) -> AsyncIterator[ChatChunk]:
        payload = self._payload(request, model_id, stream=True)  # refusals raise before streaming
        return relay_stream(self._chunks(payload, model_id), request.include_usage)

    async def _chunks(self, payload: bytes, model_id: str) -> AsyncGenerator[ChatChunk, None]:
        state = StreamState(model_id)
        headers = self._headers("text/event-stream")
        events = sse_data(self.transport, self.name, self._url, headers, payload, self._error)
        async with aclosing(events):  # closing this stream closes the upstream connection at once
            async for data in events:
                yield state.chunk(decode_body(self.name, data, AI21Chunk))


AI21 = ProviderSpec("ai21labs", AI21Settings, AI21Provider)
