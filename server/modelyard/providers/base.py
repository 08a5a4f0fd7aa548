"""The contract every provider adapter fulfils.

An adapter turns the gateway's OpenAI-shaped requests into its provider's wire format and back.
Capabilities it lacks answer a 400 that names the provider and the capability; the conversion
functions are pure and live beside the adapter, I/O goes through the shared transport.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from modelyard.errors import ClientError
from modelyard.schema.chat import ChatChunk, ChatCompletion, ChatRequest
from modelyard.schema.completions import Completion, CompletionRequest
from modelyard.schema.embeddings import EmbeddingRequest, EmbeddingResponse
from modelyard.transport import HttpTransport


class Capability(StrEnum):
    CHAT = "chat"
    STREAM = "stream"
    TOOLS = "tools"
    VISION = "vision"
    JSON_MODE = "json_mode"
    COMPLETIONS = "completions"
    EMBEDDINGS = "embeddings"


class ProviderSettings(BaseModel):
    """Base of each provider type's `data` arguments: strict, frozen, IBM's spellings accepted."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


def argument_problems(error: ValidationError) -> str:
    """Which argument is missing, unknown or malformed (never its value: it may be a secret)."""
    problems = []
    for item in error.errors(include_input=False, include_url=False):
        argument = ".".join(str(part) for part in item["loc"]) or "(data)"
        kind = {"missing": "missing", "extra_forbidden": "unknown argument"}.get(item["type"], item["msg"])
        problems.append(f"{argument}: {kind}")
    return "; ".join(problems)


def unsupported(provider: Provider, capability: Capability) -> ClientError:
    return ClientError(
        f"Provider '{provider.name}' (type {provider.type_name}) does not support {capability.value}.",
        status=400,
        code="unsupported_capability",
    )


class Provider:
    """Base adapter: every operation is unsupported until a subclass provides it."""

    capabilities: ClassVar[frozenset[Capability]] = frozenset()

    def __init__(self, name: str, type_name: str, settings: Any, transport: HttpTransport) -> None:
        self.name = name
        self.type_name = type_name
        self.settings = settings
        self.transport = transport

    async def chat(self, request: ChatRequest, model_id: str) -> ChatCompletion:
        raise unsupported(self, Capability.CHAT)

    def stream_chat(self, request: ChatRequest, model_id: str) -> AsyncIterator[ChatChunk]:
        raise unsupported(self, Capability.STREAM)

    async def complete(self, request: CompletionRequest, model_id: str) -> Completion:
        raise unsupported(self, Capability.COMPLETIONS)

    def stream_complete(self, request: CompletionRequest, model_id: str) -> AsyncIterator[Completion]:
        raise unsupported(self, Capability.COMPLETIONS)

    async def embed(self, request: EmbeddingRequest, model_id: str) -> EmbeddingResponse:
        raise unsupported(self, Capability.EMBEDDINGS)


@dataclass(frozen=True)
class ProviderSpec:
    """What the registry knows of a provider type: its settings model and its adapter class."""

    type_name: str
    settings: type[ProviderSettings]
    adapter: type[Provider]

    def create(self, name: str, data: dict[str, Any], transport: HttpTransport) -> Provider:
        return self.adapter(name, self.type_name, self.settings.model_validate(data), transport)
