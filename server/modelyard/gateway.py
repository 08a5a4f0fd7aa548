"""The domain core both surfaces call: the caller's tenant view, a deployment, the adapter."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TypeVar

from modelyard.errors import ClientError, model_not_found
from modelyard.router import Deployment
from modelyard.schema.chat import ChatChunk, ChatCompletion, ChatRequest
from modelyard.schema.completions import Completion, CompletionRequest
from modelyard.schema.embeddings import EmbeddingRequest, EmbeddingResponse
from modelyard.schema.models import ModelCard, ModelList
from modelyard.state import TenantStates
from modelyard.tenancy import Principal

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
    def __init__(self, states: TenantStates) -> None:
        self._states = states

    async def _pick(self, principal: Principal, model: str, task: str) -> Deployment:
        if not principal.may_use(model):
            raise ClientError(
                f"This key may not use the model '{model}'.",
                status=403,
                param="model",
                code="model_not_allowed",
            )
        view = await self._states.view(principal.tenant_id)
        return view.router.pick(model, task)

    async def chat(self, principal: Principal, request: ChatRequest) -> ChatCompletion:
        deployment = await self._pick(principal, request.model, "chat")
        return await deployment.provider.chat(request, deployment.model_id)

    async def open_chat_stream(self, principal: Principal, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        deployment = await self._pick(principal, request.model, "chat")
        return await prime(deployment.provider.stream_chat(request, deployment.model_id))

    async def complete(self, principal: Principal, request: CompletionRequest) -> Completion:
        deployment = await self._pick(principal, request.model, "completions")
        return await deployment.provider.complete(request, deployment.model_id)

    async def open_completion_stream(
        self, principal: Principal, request: CompletionRequest
    ) -> AsyncIterator[Completion]:
        deployment = await self._pick(principal, request.model, "completions")
        return await prime(deployment.provider.stream_complete(request, deployment.model_id))

    async def embed(self, principal: Principal, request: EmbeddingRequest) -> EmbeddingResponse:
        deployment = await self._pick(principal, request.model, "embeddings")
        return await deployment.provider.embed(request, deployment.model_id)

    async def list_models(self, principal: Principal) -> ModelList:
        view = await self._states.view(principal.tenant_id)
        cards = [
            _card(alias, deployments, view.created)
            for alias, deployments in view.router.models().items()
            if principal.may_use(alias)
        ]
        return ModelList(data=cards)

    async def model(self, principal: Principal, alias: str) -> ModelCard:
        for card in (await self.list_models(principal)).data:
            if card.id == alias:
                return card
        raise model_not_found(alias)


def _card(alias: str, deployments: list[Deployment], created: int) -> ModelCard:
    providers = sorted({d.provider.name for d in deployments})
    return ModelCard(id=alias, created=created, owned_by="modelyard", providers=providers)
