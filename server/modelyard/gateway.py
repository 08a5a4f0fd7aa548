"""The domain core both surfaces call: the caller's tenant view, a plan of deployments, the attempts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

import msgspec

from modelyard.errors import ClientError, GatewayError, model_not_found
from modelyard.metering.limiter import RateLimited
from modelyard.metering.meter import CLIENT_CLOSED, Meter, Ticket, metered_stream
from modelyard.metering.tokens import chat_tokens, completion_tokens, embedding_tokens
from modelyard.routing.attempts import Attempts
from modelyard.routing.call import CallRecord, call_record
from modelyard.routing.deployment import Deployment
from modelyard.routing.health import HealthSnapshot
from modelyard.routing.targets import Plan
from modelyard.schema.chat import ChatChunk, ChatCompletion, ChatRequest
from modelyard.schema.common import StreamOptions
from modelyard.schema.completions import Completion, CompletionRequest
from modelyard.schema.embeddings import EmbeddingRequest, EmbeddingResponse
from modelyard.schema.models import ModelCard, ModelList
from modelyard.state import TenantStates
from modelyard.tenancy import Principal

R = TypeVar("R", bound=msgspec.Struct)
U = TypeVar("U")
S = TypeVar("S", ChatRequest, CompletionRequest)


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
    def __init__(self, states: TenantStates, meter: Meter) -> None:
        self._states = states
        self._attempts = Attempts(states.board, states.rng, tracing=meter.tracing)
        self._meter = meter

    async def _plan(self, principal: Principal, model: str, task: str) -> Plan:
        if not principal.may_use(model):
            raise ClientError(
                f"This key may not use the model '{model}'.",
                status=403,
                param="model",
                code="model_not_allowed",
            )
        view = await self._states.view(principal.tenant_id)
        plan = view.router.plan(model, task)
        call_record().target = plan.name
        return plan

    async def _unary(
        self,
        principal: Principal,
        model: str,
        task: str,
        tokens: int,
        call: Callable[[Deployment], Awaitable[U]],
        prompt: Any = None,
    ) -> U:
        record = call_record()
        ticket: Ticket | None = None
        try:
            plan = await self._plan(principal, model, task)
            ticket = self._meter.begin(principal, model, task, tokens, record, stream=False)
            result = await self._attempts.unary(plan, record, call)
            if self._meter.keeps_content(plan.name):
                ticket.content = {
                    "prompt": _text(prompt),
                    "completion": _text(getattr(result, "choices", None)),
                }
        except GatewayError as error:
            self._finish_refused(principal, model, task, record, ticket, error)
            raise
        except BaseException:
            if ticket is not None:
                self._meter.finish(ticket, CLIENT_CLOSED)
            raise
        self._meter.finish(ticket, None, getattr(result, "usage", None))
        return result

    def _finish_refused(
        self,
        principal: Principal,
        model: str,
        task: str,
        record: CallRecord,
        ticket: Ticket | None,
        error: GatewayError,
    ) -> None:
        """Failures before admission (unknown model, forbidden) are metered too; a rate-limit
        refusal was already recorded by the meter."""
        if ticket is None and not isinstance(error, RateLimited):
            ticket = self._meter.begin_unlimited(principal, model, task, record, stream=False)
        if ticket is not None:
            self._meter.finish(ticket, error)

    async def _stream(
        self,
        principal: Principal,
        request: S,
        task: str,
        tokens: int,
        open_stream: Callable[[Deployment, S], AsyncIterator[Any]],
    ) -> AsyncIterator[Any]:
        record = call_record()
        ticket: Ticket | None = None
        wants_usage = request.include_usage
        if self._meter.wants_usage and not wants_usage:
            request = msgspec.structs.replace(request, stream_options=StreamOptions(include_usage=True))
        try:
            plan = await self._plan(principal, request.model, task)
            ticket = self._meter.begin(principal, request.model, task, tokens, record, stream=True)
            if self._meter.keeps_content(plan.name):
                sent = request.messages if isinstance(request, ChatRequest) else request.prompt
                ticket.content, ticket.streamed = {"prompt": _text(sent)}, []
            chunks = await self._attempts.stream(plan, record, lambda d: open_stream(d, request))
        except GatewayError as error:
            self._finish_refused(principal, request.model, task, record, ticket, error)
            raise
        except BaseException:
            if ticket is not None:
                self._meter.finish(ticket, CLIENT_CLOSED)
            raise
        return metered_stream(self._meter, ticket, chunks, wants_usage)

    async def chat(self, principal: Principal, request: ChatRequest) -> ChatCompletion:
        async def call(d: Deployment) -> ChatCompletion:
            return await d.provider.chat(with_defaults(request, d.defaults), d.model_id)

        return await self._unary(
            principal, request.model, "chat", chat_tokens(request), call, request.messages
        )

    async def open_chat_stream(self, principal: Principal, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        def open_stream(d: Deployment, sent: ChatRequest) -> AsyncIterator[ChatChunk]:
            return d.provider.stream_chat(with_defaults(sent, d.defaults), d.model_id)

        return await self._stream(principal, request, "chat", chat_tokens(request), open_stream)

    async def complete(self, principal: Principal, request: CompletionRequest) -> Completion:
        async def call(d: Deployment) -> Completion:
            return await d.provider.complete(with_defaults(request, d.defaults), d.model_id)

        return await self._unary(
            principal, request.model, "completions", completion_tokens(request), call, request.prompt
        )

    async def open_completion_stream(
        self, principal: Principal, request: CompletionRequest
    ) -> AsyncIterator[Completion]:
        def open_stream(d: Deployment, sent: CompletionRequest) -> AsyncIterator[Completion]:
            return d.provider.stream_complete(with_defaults(sent, d.defaults), d.model_id)

        return await self._stream(principal, request, "completions", completion_tokens(request), open_stream)

    async def embed(self, principal: Principal, request: EmbeddingRequest) -> EmbeddingResponse:
        async def call(d: Deployment) -> EmbeddingResponse:
            return await d.provider.embed(request, d.model_id)

        return await self._unary(
            principal, request.model, "embeddings", embedding_tokens(request), call, request.input
        )

    def breaker_states(self) -> list[tuple[str, str]]:
        """(deployment label, breaker state) of every deployment this worker has routed to."""
        deployments = self._states.cached_deployments()
        snapshots = self._states.board.snapshot(d.key for d in deployments)
        return [(d.label, snapshot.state) for d, snapshot in zip(deployments, snapshots, strict=True)]

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


_JSON = msgspec.json.Encoder()


def _text(value: Any) -> str:
    """Contents as JSON text, for the access log and traces (only where they are switched on)."""
    return value if isinstance(value, str) else _JSON.encode(value).decode()


def _card(alias: str, deployments: list[Deployment], created: int) -> ModelCard:
    providers = sorted({d.provider.name for d in deployments})
    return ModelCard(id=alias, created=created, owned_by="modelyard", providers=providers)
