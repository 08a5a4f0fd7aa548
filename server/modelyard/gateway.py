"""The domain core both surfaces call: resolve the model, pick a deployment, run the adapter."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import TypeVar

from modelyard.config import GatewayConfig
from modelyard.errors import ClientError
from modelyard.providers.base import Provider
from modelyard.providers.registry import PROVIDER_TYPES
from modelyard.router import Deployment, Router, WeightedRoundRobin
from modelyard.schema.chat import ChatChunk, ChatCompletion, ChatRequest
from modelyard.schema.completions import Completion, CompletionRequest
from modelyard.schema.embeddings import EmbeddingRequest, EmbeddingResponse
from modelyard.schema.models import ModelCard, ModelList
from modelyard.transport import HttpTransport

T = TypeVar("T")


async def prime(stream: AsyncIterator[T]) -> AsyncIterator[T]:
    """Wait for the first item before committing to a stream, so early failures are plain errors.

    Returns an iterator that yields that first item and then the rest.
    """
    iterator = aiter(stream)
    try:
        first = await anext(iterator)
    except StopAsyncIteration:
        first = None
        empty = True
    else:
        empty = False

    async def committed() -> AsyncIterator[T]:
        if empty:
            return
        yield first  # type: ignore[misc]
        async for item in iterator:
            yield item

    return committed()


class Gateway:
    def __init__(self, router: Router, providers: list[Provider], started: int) -> None:
        self.router = router
        self.providers = providers
        self._started = started

    async def chat(self, request: ChatRequest) -> ChatCompletion:
        deployment = self.router.pick(request.model, "chat")
        return await deployment.provider.chat(request, deployment.model_id)

    async def open_chat_stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        deployment = self.router.pick(request.model, "chat")
        return await prime(deployment.provider.stream_chat(request, deployment.model_id))

    async def complete(self, request: CompletionRequest) -> Completion:
        deployment = self.router.pick(request.model, "completions")
        return await deployment.provider.complete(request, deployment.model_id)

    async def open_completion_stream(self, request: CompletionRequest) -> AsyncIterator[Completion]:
        deployment = self.router.pick(request.model, "completions")
        return await prime(deployment.provider.stream_complete(request, deployment.model_id))

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        deployment = self.router.pick(request.model, "embeddings")
        return await deployment.provider.embed(request, deployment.model_id)

    def list_models(self) -> ModelList:
        cards = [self._card(alias, deployments) for alias, deployments in self.router.models().items()]
        return ModelList(data=cards)

    def model(self, alias: str) -> ModelCard:
        deployments = self.router.models().get(alias)
        if deployments is None:
            raise ClientError(
                f"The model '{alias}' does not exist.", status=404, param="model", code="model_not_found"
            )
        return self._card(alias, deployments)

    def _card(self, alias: str, deployments: list[Deployment]) -> ModelCard:
        providers = sorted({d.provider.name for d in deployments})
        return ModelCard(id=alias, created=self._started, owned_by="modelyard", providers=providers)


def build_gateway(config: GatewayConfig, transport: HttpTransport) -> Gateway:
    providers = {
        entry.name: PROVIDER_TYPES[entry.type].create(entry.name, entry.data, transport)
        for entry in config.providers
    }
    grouped: dict[str, list[Deployment]] = defaultdict(list)
    for model in config.models:
        grouped[model.name].append(
            Deployment(
                alias=model.name,
                model_id=model.id,
                provider=providers[model.provider],
                weight=model.weight,
                tasks=frozenset(model.tasks) if model.tasks else None,
            )
        )
    router = Router({alias: WeightedRoundRobin(group) for alias, group in grouped.items()})
    return Gateway(router, list(providers.values()), int(time.time()))
