"""Provider types whose settings the gateway already validates and stores, but whose adapter is
not part of this version: every call answers 501 naming the type, never a silent failure."""

from __future__ import annotations

from collections.abc import AsyncIterator

from modelyard.errors import GatewayError
from modelyard.providers.base import Provider
from modelyard.schema.chat import ChatChunk, ChatCompletion, ChatRequest
from modelyard.schema.completions import Completion, CompletionRequest
from modelyard.schema.embeddings import EmbeddingRequest, EmbeddingResponse


class PendingAdapter(Provider):
    def _unavailable(self) -> GatewayError:
        return GatewayError(
            f"Provider '{self.name}' has type {self.type_name}, whose adapter is not available in this "
            "version of the gateway.",
            status=501,
            code="provider_type_not_available",
        )

    async def chat(self, request: ChatRequest, model_id: str) -> ChatCompletion:
        raise self._unavailable()

    def stream_chat(self, request: ChatRequest, model_id: str) -> AsyncIterator[ChatChunk]:
        raise self._unavailable()

    async def complete(self, request: CompletionRequest, model_id: str) -> Completion:
        raise self._unavailable()

    def stream_complete(self, request: CompletionRequest, model_id: str) -> AsyncIterator[Completion]:
        raise self._unavailable()

    async def embed(self, request: EmbeddingRequest, model_id: str) -> EmbeddingResponse:
        raise self._unavailable()
