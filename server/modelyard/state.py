"""Each tenant's routing view: providers and aliases from the config file (the `default` tenant,
read-only) and from the store, rebuilt lazily when the store changes."""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from modelyard.config import GatewayConfig, ModelEntry, RouteEntry, expand
from modelyard.errors import GatewayError
from modelyard.providers.base import Provider
from modelyard.providers.registry import PROVIDER_TYPES
from modelyard.routing.deployment import Deployment
from modelyard.routing.health import HealthBoard
from modelyard.routing.policy import Policy
from modelyard.routing.strategies import make_balancer
from modelyard.routing.targets import Pool, Router, Split, Target
from modelyard.store.base import Store
from modelyard.store.records import SECRET_MARKER, EndpointRecord, ProviderRecord, SecretRecord
from modelyard.tenancy import DEFAULT_TENANT_ID
from modelyard.transport import HttpTransport

log = logging.getLogger("modelyard.state")
CONFIG_NAMESPACE = uuid.UUID("6f1b3c5e-3a2d-4c61-9d0e-6a8f0b2c9e11")


class SecretRevealer(Protocol):
    async def reveal(self, record: SecretRecord) -> str: ...


def config_provider_id(name: str) -> str:
    """Stable ids for providers declared in the config file."""
    return str(uuid.uuid5(CONFIG_NAMESPACE, f"provider:{name}"))


@dataclass(frozen=True)
class TenantView:
    router: Router
    created: int
    providers: dict[str, Provider] = field(default_factory=dict)


class UnavailableProvider(Provider):
    """A stored provider whose credentials could not be resolved: answers 503 until they can."""

    async def chat(self, *args: Any, **kwargs: Any) -> Any:
        raise GatewayError(
            f"Provider '{self.name}' is unavailable: its credentials could not be resolved.",
            status=503,
            code="provider_credentials_unavailable",
        )

    stream_chat = complete = stream_complete = embed = chat  # type: ignore[assignment]


@dataclass(frozen=True)
class ConfigState:
    """One generation of the config file, with its adapters built; swapped whole on reload."""

    generation: int
    config: GatewayConfig
    providers: Mapping[str, Provider]
    deployments: tuple[Deployment, ...]
    routes: tuple[RouteEntry, ...]
    default_policy: Policy


class TenantStates:
    def __init__(
        self, config: GatewayConfig, store: Store, secrets: SecretRevealer, transport: HttpTransport
    ):
        self._store = store
        self._secrets = secrets
        self._transport = transport
        self._views: dict[str, tuple[tuple[int, int], TenantView]] = {}
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.board = HealthBoard(config.routing.breaker)
        self.rng = random.Random(config.routing.seed)
        self._current = self._load(config, generation=1)

    @property
    def generation(self) -> int:
        return self._current.generation

    def use_config(self, config: GatewayConfig) -> None:
        """Serve `config` from the next request on; requests in flight keep what they hold."""
        self._current = self._load(config, self._current.generation + 1)
        self.board.use_config(config.routing.breaker)

    def _load(self, config: GatewayConfig, generation: int) -> ConfigState:
        expanded = expand(config)
        providers = {
            config_provider_id(p.name): PROVIDER_TYPES[p.type].create(p.name, p.data, self._transport)
            for p in expanded.providers
        }
        deployments = tuple(
            _config_deployment(model, providers[config_provider_id(model.provider)])
            for model in expanded.models
        )
        return ConfigState(
            generation, config, providers, deployments, expanded.routes, config.routing.resolve("")
        )

    def cached_deployments(self) -> list[Deployment]:
        """The deployments of every tenant view built so far, once each."""
        found: dict[str, Deployment] = {}
        for _, view in list(self._views.values()):
            for group in view.router.models().values():
                for deployment in group:
                    found.setdefault(deployment.key, deployment)
        return list(found.values())

    async def view(self, tenant_id: str) -> TenantView:
        version = (self._store.version(), self._current.generation)
        cached = self._views.get(tenant_id)
        if cached is not None and cached[0] == version:
            return cached[1]
        async with self._locks[tenant_id]:
            cached = self._views.get(tenant_id)
            if cached is None or cached[0] != version:
                cached = (version, await self._build(tenant_id, self._current))
                self._views[tenant_id] = cached
        return cached[1]

    async def _build(self, tenant_id: str, current: ConfigState) -> TenantView:
        providers: dict[str, Provider] = {}
        deployments: list[Deployment] = []
        routes: tuple[RouteEntry, ...] = ()
        if tenant_id == DEFAULT_TENANT_ID:
            providers.update(current.providers)
            deployments.extend(current.deployments)
            routes = current.routes
        for record in self._store.list_providers(tenant_id):
            providers[record.id] = await self._provider(record)
        for model in self._store.list_models(tenant_id):
            provider = providers.get(model.provider_id)
            if provider is not None:
                key = f"{tenant_id}/{model.provider_id}/{model.model_id}"
                deployments.append(Deployment(model.alias, model.model_id, provider, model.weight, key=key))
        for endpoint in self._store.list_endpoints(tenant_id):
            deployments.extend(_endpoint_deployments(endpoint, providers))
            routes = (*routes, _endpoint_route(endpoint))
        policy_source = current.config.routing if tenant_id == DEFAULT_TENANT_ID else None
        router = self._router(deployments, routes, policy_source, current.default_policy)
        return TenantView(router=router, created=int(time.time()), providers=providers)

    def _router(
        self,
        deployments: list[Deployment],
        routes: tuple[RouteEntry, ...],
        routing: Any,
        default_policy: Policy,
    ) -> Router:
        grouped: defaultdict[str, list[Deployment]] = defaultdict(list)
        for deployment in deployments:
            grouped[deployment.alias].append(deployment)
        names = [*grouped, *(route.name for route in routes)]
        policies = {name: routing.resolve(name) for name in names} if routing is not None else {}
        targets: dict[str, Target] = {}
        for alias, group in grouped.items():
            strategy = policies.get(alias, default_policy).strategy
            targets[alias] = Pool(alias, make_balancer(strategy, group, self.board, self.rng))
        for route in routes:
            destinations = [(targets[name], pct) for name, pct in route.destinations if name in targets]
            targets[route.name] = Split(route.name, destinations, self.rng)
        return Router(targets, policies, default_policy)

    async def _provider(self, record: ProviderRecord) -> Provider:
        spec = PROVIDER_TYPES[record.type]
        try:
            data = await self._reveal(record.data)
            return spec.create(record.name, data, self._transport)
        except Exception as exc:  # a bad reference must not take the tenant's other providers down
            log.warning("provider %s (%s) unavailable: %s", record.name, record.id, type(exc).__name__)
            return UnavailableProvider(record.name, record.type, None, self._transport)

    async def _reveal(self, data: dict[str, Any]) -> dict[str, Any]:
        refs = {k: v[SECRET_MARKER] for k, v in data.items() if isinstance(v, dict) and SECRET_MARKER in v}
        records = self._store.get_secrets(list(refs.values()))
        revealed = {name: await self._secrets.reveal(records[secret_id]) for name, secret_id in refs.items()}
        return {**data, **revealed}


def _config_deployment(model: ModelEntry, provider: Provider) -> Deployment:
    tasks = frozenset(model.tasks) if model.tasks else None
    key = f"{DEFAULT_TENANT_ID}/{config_provider_id(model.provider)}/{model.id}"
    return Deployment(model.name, model.id, provider, model.weight, tasks, key, dict(model.defaults))


def endpoint_entity_alias(endpoint: str, entity: str) -> str:
    """Each served entity is also callable on its own, as ENDPOINT/ENTITY."""
    return f"{endpoint}/{entity}"


def _endpoint_deployments(endpoint: EndpointRecord, providers: Mapping[str, Provider]) -> list[Deployment]:
    return [
        Deployment(
            endpoint_entity_alias(endpoint.name, entity.name),
            entity.model_id,
            providers[entity.provider_id],
            tasks=frozenset({entity.task}),
            key=f"{endpoint.tenant_id}/{entity.provider_id}/{entity.model_id}",
            defaults=dict(entity.defaults),
        )
        for entity in endpoint.entities
        if entity.provider_id in providers
    ]


def _endpoint_route(endpoint: EndpointRecord) -> RouteEntry:
    task = endpoint.entities[0].task if endpoint.entities else "chat"
    destinations = tuple(
        (endpoint_entity_alias(endpoint.name, name), share) for name, share in endpoint.routes
    )
    return RouteEntry(endpoint.name, task, destinations)
