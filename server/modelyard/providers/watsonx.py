"""IBM watsonx.ai: chat, streaming, tools, vision and JSON mode on `/ml/v1/text/chat`, completions
on `/ml/v1/text/generation`, embeddings on `/ml/v1/text/embeddings`; an IAM bearer token (cached,
see `iam.py`) on every call, `?version=` on every URL and the project or space in every body.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from pydantic import SecretStr, model_validator

from modelyard.errors import UpstreamError, upstream_status_to_client
from modelyard.providers import watsonx_convert as convert
from modelyard.providers.base import Capability, Provider, ProviderSettings, ProviderSpec
from modelyard.providers.fields import arg, url
from modelyard.providers.iam import IamTokenClient
from modelyard.providers.openai import retry_after
from modelyard.schema.chat import ChatChunk, ChatCompletion, ChatRequest
from modelyard.schema.common import Usage
from modelyard.schema.completions import Completion, CompletionChoice, CompletionRequest
from modelyard.schema.embeddings import EmbeddingRequest, EmbeddingResponse
from modelyard.transport import HttpTransport, UpstreamResponse, sse_events

_ENCODER = msgspec.json.Encoder()


class WatsonxSettings(ProviderSettings):
    apikey: SecretStr = arg("apikey", "apiKey", "api_key")
    project_id: str | None = arg("project_id", "projectID", "projectId", default=None)
    space_id: str | None = arg("space_id", "spaceID", "spaceId", default=None)
    base_url: str = url("base_url", "baseURL", default="https://us-south.ml.cloud.ibm.com")
    auth_url: str = url("auth_url", "authURL", default="https://iam.cloud.ibm.com/identity/token")
    api_version: str = arg("api_version", "apiVersion", default="2024-10-17")

    @model_validator(mode="after")
    def _one_scope(self) -> WatsonxSettings:
        if (self.project_id is None) == (self.space_id is None):
            raise ValueError("exactly one of project_id or space_id is required")
        return self

    @property
    def scope(self) -> dict[str, str]:
        return {"project_id": self.project_id} if self.project_id else {"space_id": self.space_id or ""}


class WatsonxError(msgspec.Struct):
    code: str | None = None
    message: str | None = None
    more_info: str | None = None


class WatsonxErrorBody(msgspec.Struct):
    errors: list[WatsonxError] = msgspec.field(default_factory=list)
    trace: str | None = None
    status_code: int | None = None


def parse_error(provider: str, status: int, body: bytes, headers: Any, secret: str) -> UpstreamError:
    """A watsonx error body ({"errors": [{code, message, more_info}], trace, status_code}) → ours."""
    try:
        errors = msgspec.json.decode(body, type=WatsonxErrorBody).errors
    except msgspec.MsgspecError:
        errors = []
    detail = errors[0] if errors else None
    code = detail.code if detail else None
    if status == 401:
        message = f"Provider '{provider}' rejected the gateway's credentials."
        code = "provider_authentication_failed"
    elif status == 403:
        message = f"Provider '{provider}' denied the gateway's credentials access to this resource."
        if detail and detail.message:
            message = detail.message.replace(secret, "****") if secret else detail.message
        code = "provider_permission_denied"
    elif detail and detail.message:
        message = detail.message.replace(secret, "****") if secret else detail.message
    else:
        message = f"Provider '{provider}' answered HTTP {status}."
    return UpstreamError(
        message,
        status=upstream_status_to_client(status),
        code=code,
        retry_after=retry_after(headers),
        upstream_status=status,
        provider=provider,
    )


def _bad_body(provider: str, what: str) -> UpstreamError:
    return UpstreamError(
        f"Provider '{provider}' sent a response that is not valid {what} JSON.",
        status=502,
        code="bad_upstream_response",
        provider=provider,
    )


def _decode(provider: str, data: bytes, what: str) -> dict[str, Any]:
    try:
        value = msgspec.json.decode(data)
    except msgspec.MsgspecError:
        raise _bad_body(provider, what) from None
    if not isinstance(value, dict):
        raise _bad_body(provider, what)
    return value


class WatsonxProvider(Provider):
    capabilities = frozenset(Capability)
    settings: WatsonxSettings

    def __init__(self, name: str, type_name: str, settings: Any, transport: HttpTransport) -> None:
        super().__init__(name, type_name, settings, transport)
        self.iam = IamTokenClient(
            transport, name, self.settings.auth_url, self.settings.apikey.get_secret_value()
        )

    def _url(self, path: str) -> str:
        return f"{self.settings.base_url.rstrip('/')}/ml/v1/text/{path}?version={self.settings.api_version}"

    def _error(self, status: int, body: bytes, headers: Any) -> UpstreamError:
        return parse_error(self.name, status, body, headers, self.settings.apikey.get_secret_value())

    async def _headers(self, accept: str) -> tuple[str, dict[str, str]]:
        token = await self.iam.token()
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json", "Accept": accept}
        return token, headers

    async def _call(self, path: str, body: dict[str, Any], what: str) -> dict[str, Any]:
        payload = _ENCODER.encode(body)
        for attempt in range(2):
            token, headers = await self._headers("application/json")
            response = await self.transport.post(self.name, self._url(path), headers, payload)
            if response.status == 401 and attempt == 0:
                self.iam.invalidate(token)  # revoked or expired early: one retry with a fresh token
                continue
            if response.status >= 400:
                raise self._error(response.status, response.body, response.headers)
            return _decode(self.name, response.body, what)
        raise AssertionError("unreachable")

    async def _events(self, path: str, body: dict[str, Any], what: str) -> AsyncIterator[dict[str, Any]]:
        """The data of each SSE event; `event: error` raises; a stream cut short raises."""
        payload = _ENCODER.encode(body)
        for attempt in range(2):
            token, headers = await self._headers("text/event-stream")
            async with self.transport.stream(self.name, self._url(path), headers, payload) as response:
                if response.status == 401 and attempt == 0:
                    await response.read()
                    self.iam.invalidate(token)
                    continue
                if response.status >= 400:
                    upstream = UpstreamResponse(response.status, response.headers, await response.read())
                    raise self._error(upstream.status, upstream.body, upstream.headers)
                async for event, data in sse_events(response, self.name):
                    if event == "error":
                        status = _decode(self.name, data, "error").get("status_code")
                        raise self._error(status if isinstance(status, int) else 500, data, {})
                    if event in ("", "message"):
                        yield _decode(self.name, data, what)
                return

    async def chat(self, request: ChatRequest, model_id: str) -> ChatCompletion:
        body = convert.chat_payload(request, model_id, self.settings.scope, self.name)
        answer = await self._call("chat", body, "chat")
        try:
            return convert.chat_completion(answer, model_id)
        except (msgspec.MsgspecError, TypeError, ValueError, AttributeError):
            raise _bad_body(self.name, "chat") from None

    async def stream_chat(self, request: ChatRequest, model_id: str) -> AsyncIterator[ChatChunk]:
        body = convert.chat_payload(request, model_id, self.settings.scope, self.name)
        include_usage = request.include_usage
        chunk_id, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        usage: Usage | None = None
        started = finished = False
        async for event in self._events("chat_stream", body, "chat stream"):
            chunk_id = str(event.get("id") or chunk_id)
            created = int(event.get("created") or created)
            usage = convert.usage(event.get("usage")) or usage
            try:
                choices = convert.chat_chunk_choices(event)
            except (msgspec.MsgspecError, TypeError, ValueError, AttributeError):
                raise _bad_body(self.name, "chat stream") from None
            finished = finished or any(c.finish_reason for c in choices)
            if choices and not started:
                started = True  # OpenAI clients expect the role on the first delta
                for choice in choices:
                    choice.delta.role = "assistant"
            if choices:
                yield convert.chat_chunk(chunk_id, created, model_id, choices, include_usage)
        if not finished:
            raise self._cut_short()
        if include_usage:
            yield ChatChunk(id=chunk_id, created=created, model=model_id, choices=[], usage=usage or Usage())

    def _cut_short(self) -> UpstreamError:
        return UpstreamError(
            f"Provider '{self.name}' ended the stream before it finished.",
            status=502,
            code="upstream_disconnected",
            provider=self.name,
        )

    async def complete(self, request: CompletionRequest, model_id: str) -> Completion:
        body = convert.generation_payload(request, model_id, self.settings.scope, self.name)
        answer = await self._call("generation", body, "generation")
        return convert.completion(
            answer, model_id, int(time.time()), f"cmpl-{uuid.uuid4().hex[:24]}", request.echo is True
        )

    async def stream_complete(self, request: CompletionRequest, model_id: str) -> AsyncIterator[Completion]:
        body = convert.generation_payload(request, model_id, self.settings.scope, self.name)
        completion_id, created = f"cmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        include_usage, echo = request.include_usage, request.echo is True
        prompt = generated = 0
        finish: str | None = None
        async for event in self._events("generation_stream", body, "generation stream"):
            results = event.get("results") or []
            if not results:
                continue
            result = results[0]
            prompt = int(result.get("input_token_count") or prompt)
            generated = int(result.get("generated_token_count") or generated)
            finish = convert.finish_reason(result.get("stop_reason")) or finish
            text = convert.generation_text(result, echo)
            echo = False  # the input text comes once, in the first event that carries it
            yield Completion(
                id=completion_id,
                created=created,
                model=model_id,
                choices=[CompletionChoice(index=0, text=text, finish_reason=finish)],  # type: ignore[arg-type]
                usage=None if include_usage else msgspec.UNSET,
            )
        if finish is None:
            raise self._cut_short()
        if include_usage:
            yield Completion(
                id=completion_id,
                created=created,
                model=model_id,
                choices=[],
                usage=Usage(
                    prompt_tokens=prompt, completion_tokens=generated, total_tokens=prompt + generated
                ),
            )

    async def embed(self, request: EmbeddingRequest, model_id: str) -> EmbeddingResponse:
        body = convert.embedding_payload(request, model_id, self.settings.scope, self.name)
        answer = await self._call("embeddings", body, "embeddings")
        try:
            return convert.embedding_response(answer, model_id, request.encoding_format == "base64")
        except (TypeError, ValueError, AttributeError):
            raise _bad_body(self.name, "embeddings") from None


WATSONX = ProviderSpec("watsonxai", WatsonxSettings, WatsonxProvider)
