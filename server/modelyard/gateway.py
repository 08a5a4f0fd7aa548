"""The domain core both surfaces call: the caller's tenant view, a plan of deployments, the attempts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, TypeVar

import msgspec

from modelyard.errors import ClientError, model_not_found
from modelyard.routing.attempts import Attempts
from modelyard.routing.call import call_record
from modelyard.routing.deployment import Deployment
from modelyard.routing.health import HealthSnapshot
from modelyard.routing.targets import Plan
from modelyard.schema.chat import ChatChunk, ChatCompletion, ChatRequest
from modelyard.schema.completions import Completion, CompletionRequest
from modelyard.schema.embeddings import EmbeddingRequest, EmbeddingResponse
from modelyard.schema.models import ModelCard, ModelList
from modelyard.state import TenantStates
from modelyard.tenancy import Principal

R = TypeVar("R", bound=msgspec.Struct)


def with_defaults(request: R, defaults: Mapping[str, Any]) -> R:
    """The request with the deployment's default parameters filled in where the client sent none."""
    if not defaults:
        return request
    fields = request.__struct_fields__
    missing = {k: v for k, v in defaults.items() if k in fields and _unset(getattr(request, k))}
    return msgspec.structs.replace(request, **missing) if missing else request


def _unset(value: object) -> bool:
    return value is None or value is msgspec.UNSET


class Gateway:
    def __init__(self, states: TenantStates) -> None:
        self._states = states
        self._attempts = Attempts(states.board, states.rng)

    async def _plan(self, principal: Principal, model: str, task: str) -> Plan:
        if not principal.may_use(model):
            raise ClientError(
                f"This key may not use the model '{model}'.",
                status=403,
                param="model",
                code="model_not_allowed",
            )
        view = await self._states.view(principal.tenant_id)
        return view.router.plan(model, task)

    async def chat(self, principal: Principal, request: ChatRequest) -> ChatCompletion:
        plan = await self._plan(principal, request.model, "chat")

        async def call(d: Deployment) -> ChatCompletion:
            return await d.provider.chat(with_defaults(request, d.defaults), d.model_id)

        return await self._attempts.unary(plan, call_record(), call)

    async def open_chat_stream(self, principal: Principal, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        plan = await self._plan(principal, request.model, "chat")
        return await self._attempts.stream(
            plan,
            call_record(),
            lambda d: d.provider.stream_chat(with_defaults(request, d.defaults), d.model_id),
        )

    async def complete(self, principal: Principal, request: CompletionRequest) -> Completion:
        plan = await self._plan(principal, request.model, "completions")

        async def call(d: Deployment) -> Completion:
            return await d.provider.complete(with_defaults(request, d.defaults), d.model_id)

        return await self._attempts.unary(plan, call_record(), call)

    async def open_completion_stream(
        self, principal: Principal, request: CompletionRequest
    ) -> AsyncIterator[Completion]:
        plan = await self._plan(principal, request.model, "completions")
        return await self._attempts.stream(
            plan,
            call_record(),
            lambda d: d.provider.stream_complete(with_defaults(request, d.defaults), d.model_id),
        )

    async def embed(self, principal: Principal, request: EmbeddingRequest) -> EmbeddingResponse:
        plan = await self._plan(principal, request.model, "embeddings")

        async def call(d: Deployment) -> EmbeddingResponse:
            return await d.provider.embed(request, d.model_id)

        return await self._attempts.unary(plan, call_record(), call)

    async def deployment_health(self, principal: Principal) -> list[tuple[Deployment, HealthSnapshot]]:
        """Each alias's deployments (a deployment under two aliases is listed twice, with one health)."""
        view = await self._states.view(principal.tenant_id)
        pools = [d for group in view.router.models().values() for d in group]
        deployments = list({(d.alias, d.key): d for d in pools}.values())
        snapshots = self._states.board.snapshot(d.key for d in deployments)
        return list(zip(deployments, snapshots, strict=True))

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
