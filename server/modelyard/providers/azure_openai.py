"""Azure OpenAI: OpenAI's wire format on per-deployment URLs, with an API key or Microsoft Entra ID.

Requests go to ``{endpoint}/openai/deployments/{deployment}/{operation}?api-version=...``; the
deployment is the model id (it is also sent as ``model`` in the body, as the official SDK does;
Azure ignores it). Bodies, responses and errors are OpenAI's, so the payload builder, the error
parser and the streaming loop are OpenAI's own, reused by composition; Azure's additions are
handled here: ``prompt_filter_results`` chunks (no choices) and content-filter annotation chunks
(no delta) are dropped from streams, ``content_filter`` finish reasons and errors pass through, and
Azure's numeric error codes ("429") are not passed on as codes; `top_k`, which Azure lacks, is dropped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, TypeVar
from urllib.parse import quote

import msgspec
from msgspec import UNSET, UnsetType, field
from pydantic import SecretStr, model_validator

from modelyard.errors import UpstreamError
from modelyard.providers.azure_auth import EntraCredentials, EntraTokenClient
from modelyard.providers.base import Capability, Provider, ProviderSettings, ProviderSpec
from modelyard.providers.fields import arg, url
from modelyard.providers.openai import OpenAIProvider, OpenAISettings, build_payload
from modelyard.schema.chat import (
    ChatChunk,
    ChatCompletion,
    ChatRequest,
    ChoiceLogprobs,
    ChunkChoice,
    Delta,
    FinishReason,
)
from modelyard.schema.common import Base, Usage
from modelyard.schema.completions import Completion, CompletionChoice, CompletionLogprobs, CompletionRequest
from modelyard.schema.embeddings import EmbeddingRequest, EmbeddingResponse
from modelyard.transport import HttpTransport

R = TypeVar("R")
Q = TypeVar("Q", ChatRequest, CompletionRequest)

DEFAULT_AUTHORITY = "https://login.microsoftonline.com"


class AzureOpenAISettings(ProviderSettings):
    apikey: SecretStr | None = arg("apikey", "apiKey", "api_key", default=None)
    resource_name: str = arg("resource_name", "resourceName", pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$")
    subscription_id: str | None = arg("subscription_id", "subscriptionID", "subscriptionId", default=None)
    resource_group_name: str | None = arg("resource_group_name", "resourceGroupName", default=None)
    account_name: str | None = arg("account_name", "accountName", default=None)
    api_version: str = arg("api_version", "apiVersion", default="2024-10-21", pattern=r"^[A-Za-z0-9.-]+$")
    base_url: str | None = url("base_url", "baseURL", "baseUrl", "endpoint", "azure_endpoint", default=None)
    """The resource endpoint; `https://{resource_name}.openai.azure.com` when not given."""
    entra_tenant_id: str | None = arg(
        "entra_tenant_id", "entraTenantId", "tenant_id", "tenantId", default=None, pattern=r"^[A-Za-z0-9.-]+$"
    )
    entra_client_id: str | None = arg(
        "entra_client_id", "entraClientId", "client_id", "clientId", default=None
    )
    entra_client_secret: SecretStr | None = arg(
        "entra_client_secret", "entraClientSecret", "client_secret", "clientSecret", default=None
    )
    entra_authority: str = url("entra_authority", "entraAuthority", "authority", default=DEFAULT_AUTHORITY)

    @model_validator(mode="after")
    def _exactly_one_auth_method(self) -> AzureOpenAISettings:
        entra = (self.entra_tenant_id, self.entra_client_id, self.entra_client_secret)
        if any(v is not None for v in entra) and not all(v is not None for v in entra):
            raise ValueError(
                "Microsoft Entra ID needs all of entra_tenant_id, entra_client_id and entra_client_secret"
            )
        if (self.apikey is None) == (self.entra_client_secret is None):
            raise ValueError(
                "give exactly one authentication method: apikey, or entra_tenant_id + entra_client_id + "
                "entra_client_secret"
            )
        return self

    @property
    def endpoint(self) -> str:
        return (self.base_url or f"https://{self.resource_name}.openai.azure.com").rstrip("/")


# ---- pure conversions: Azure's streamed chunks → the gateway's -------------------------------------


class _AzureChoice(Base):
    index: int = 0
    delta: Delta | UnsetType = UNSET
    finish_reason: FinishReason | None = None
    logprobs: ChoiceLogprobs | UnsetType | None = UNSET


class AzureChatChunk(Base):
    """A chat chunk as Azure streams it: the prompt-filter chunk has empty id/object and no choices."""

    id: str = ""
    created: int = 0
    model: str = ""
    choices: list[_AzureChoice] = field(default_factory=list)
    usage: Usage | UnsetType | None = UNSET
    system_fingerprint: str | UnsetType | None = UNSET


class _AzureTextChoice(Base):
    index: int = 0
    text: str | UnsetType = UNSET
    finish_reason: FinishReason | None = None
    logprobs: CompletionLogprobs | None = None


class AzureCompletionChunk(Base):
    id: str = ""
    created: int = 0
    model: str = ""
    choices: list[_AzureTextChoice] = field(default_factory=list)
    usage: Usage | UnsetType | None = UNSET
    system_fingerprint: str | UnsetType | None = UNSET


def chat_chunk(chunk: AzureChatChunk) -> ChatChunk | None:
    """The gateway chunk for an Azure chunk; None for content-filter-only chunks (nothing to relay)."""
    choices = [
        ChunkChoice(
            index=c.index,
            delta=c.delta if isinstance(c.delta, Delta) else Delta(),
            finish_reason=c.finish_reason,
            logprobs=c.logprobs,
        )
        for c in chunk.choices
        if c.delta is not UNSET or c.finish_reason is not None
    ]
    if not choices and not isinstance(chunk.usage, Usage):
        return None
    return ChatChunk(
        id=chunk.id,
        created=chunk.created,
        model=chunk.model,
        choices=choices,
        usage=chunk.usage,
        system_fingerprint=chunk.system_fingerprint,
    )


def completion_chunk(chunk: AzureCompletionChunk) -> Completion | None:
    choices = [
        CompletionChoice(
            index=c.index,
            text=c.text if isinstance(c.text, str) else "",
            finish_reason=c.finish_reason,
            logprobs=c.logprobs,
        )
        for c in chunk.choices
        if c.text is not UNSET or c.finish_reason is not None
    ]
    if not choices and not isinstance(chunk.usage, Usage):
        return None
    return Completion(
        id=chunk.id,
        created=chunk.created,
        model=chunk.model,
        choices=choices,
        usage=chunk.usage,
        system_fingerprint=chunk.system_fingerprint,
    )


def deployment_path(deployment: str, operation: str) -> str:
    return f"/openai/deployments/{quote(deployment, safe='')}{operation}"


def auth_header(settings: AzureOpenAISettings, token: str | None) -> tuple[str, str]:
    if token is not None:
        return "Authorization", f"Bearer {token}"
    assert settings.apikey is not None  # the settings validator guarantees one method
    return "api-key", settings.apikey.get_secret_value()


def request_headers(settings: AzureOpenAISettings, token: str | None) -> dict[str, str]:
    name, value = auth_header(settings, token)
    return {name: value, "Content-Type": "application/json", "Accept": "application/json"}


def without_top_k(request: Q) -> Q:
    """Azure OpenAI has no `top_k` and refuses unknown arguments: it is dropped, not sent."""
    return msgspec.structs.replace(request, top_k=UNSET) if request.top_k is not UNSET else request


def azure_error(error: UpstreamError) -> UpstreamError:
    """Azure sends the HTTP status as `code` ("429", "401"): that is no error code, drop it."""
    if error.code is not None and error.code.isdigit():
        error.code = None
    return error


# ---- I/O ------------------------------------------------------------------------------------------------


class _Wire(OpenAIProvider):
    """OpenAI's request and streaming loop with one fixed Azure credential and Azure's URLs."""

    def __init__(self, owner: AzureOpenAIProvider, token: str | None) -> None:
        settings: AzureOpenAISettings = owner.settings
        secret = auth_header(settings, token)[1].removeprefix("Bearer ")
        wire_settings = OpenAISettings.model_construct(
            apikey=SecretStr(secret), base_url=settings.endpoint, organization=None
        )
        super().__init__(owner.name, owner.type_name, wire_settings, owner.transport)
        self.token = token
        self._fixed_headers = request_headers(settings, token)
        self._query = "?api-version=" + quote(settings.api_version, safe="")

    def _headers(self) -> dict[str, str]:
        return self._fixed_headers

    def _url(self, path: str) -> str:
        return self.settings.base_url + path + self._query


class AzureOpenAIProvider(Provider):
    capabilities = frozenset(Capability)
    settings: AzureOpenAISettings

    def __init__(self, name: str, type_name: str, settings: Any, transport: HttpTransport) -> None:
        super().__init__(name, type_name, settings, transport)
        self._wire: _Wire | None = None
        self.entra: EntraTokenClient | None = None
        if settings.entra_client_secret is not None:
            self.entra = EntraTokenClient(
                name,
                EntraCredentials(
                    authority=settings.entra_authority,
                    tenant_id=settings.entra_tenant_id,
                    client_id=settings.entra_client_id,
                    client_secret=settings.entra_client_secret.get_secret_value(),
                ),
            )

    async def _current_wire(self) -> _Wire:
        token = await self.entra.token() if self.entra is not None else None
        wire = self._wire
        if wire is None or wire.token != token:
            wire = self._wire = _Wire(self, token)
        return wire

    def _failed(self, wire: _Wire, error: UpstreamError) -> UpstreamError:
        if error.upstream_status == 401 and self.entra is not None and wire.token is not None:
            self.entra.invalidate(wire.token)
        return azure_error(error)

    async def _call(self, deployment: str, operation: str, payload: bytes, kind: type[R]) -> R:
        wire = await self._current_wire()
        try:
            return await wire._call(deployment_path(deployment, operation), payload, kind)
        except UpstreamError as error:
            raise self._failed(wire, error) from None

    async def _chunks(
        self, deployment: str, operation: str, payload: bytes, kind: type[R]
    ) -> AsyncIterator[R]:
        wire = await self._current_wire()
        try:
            async for chunk in wire._stream(deployment_path(deployment, operation), payload, kind):
                yield chunk
        except UpstreamError as error:
            raise self._failed(wire, error) from None

    async def chat(self, request: ChatRequest, model_id: str) -> ChatCompletion:
        payload = build_payload(without_top_k(request), model_id, stream=False)
        return await self._call(model_id, "/chat/completions", payload, ChatCompletion)

    async def stream_chat(self, request: ChatRequest, model_id: str) -> AsyncIterator[ChatChunk]:
        payload = build_payload(without_top_k(request), model_id, stream=True)
        async for raw in self._chunks(model_id, "/chat/completions", payload, AzureChatChunk):
            chunk = chat_chunk(raw)
            if chunk is not None:
                yield chunk

    async def complete(self, request: CompletionRequest, model_id: str) -> Completion:
        payload = build_payload(without_top_k(request), model_id, stream=False)
        return await self._call(model_id, "/completions", payload, Completion)

    async def stream_complete(self, request: CompletionRequest, model_id: str) -> AsyncIterator[Completion]:
        payload = build_payload(without_top_k(request), model_id, stream=True)
        async for raw in self._chunks(model_id, "/completions", payload, AzureCompletionChunk):
            chunk = completion_chunk(raw)
            if chunk is not None:
                yield chunk

    async def embed(self, request: EmbeddingRequest, model_id: str) -> EmbeddingResponse:
        payload = build_payload(request, model_id, stream=None)
        return await self._call(model_id, "/embeddings", payload, EmbeddingResponse)


AZURE_OPENAI = ProviderSpec("azure-openai", AzureOpenAISettings, AzureOpenAIProvider)
