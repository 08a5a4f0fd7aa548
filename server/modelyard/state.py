"""Each tenant's routing view: providers and aliases from the config file (the `default` tenant,
read-only) and from the store, rebuilt lazily when the store changes."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from modelyard.config import GatewayConfig, ModelEntry
from modelyard.errors import GatewayError
from modelyard.providers.base import Provider
from modelyard.providers.registry import PROVIDER_TYPES
from modelyard.router import Deployment, Router, WeightedRoundRobin
from modelyard.store.base import Store
from modelyard.store.records import SECRET_MARKER, ProviderRecord, SecretRecord
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


class TenantStates:
    def __init__(
        self, config: GatewayConfig, store: Store, secrets: SecretRevealer, transport: HttpTransport
    ):
        self._config = config
        self._store = store
        self._secrets = secrets
        self._transport = transport
        self._views: dict[str, tuple[int, TenantView]] = {}
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._config_providers = {
            config_provider_id(p.name): PROVIDER_TYPES[p.type].create(p.name, p.data, transport)
            for p in config.providers
        }

    async def view(self, tenant_id: str) -> TenantView:
        version = self._store.version()
        cached = self._views.get(tenant_id)
        if cached is not None and cached[0] == version:
            return cached[1]
        async with self._locks[tenant_id]:
            cached = self._views.get(tenant_id)
            if cached is None or cached[0] != version:
                cached = (version, await self._build(tenant_id))
                self._views[tenant_id] = cached
        return cached[1]

    async def _build(self, tenant_id: str) -> TenantView:
        providers: dict[str, Provider] = {}
        if tenant_id == DEFAULT_TENANT_ID:
            providers.update(self._config_providers)
        for record in self._store.list_providers(tenant_id):
            providers[record.id] = await self._provider(record)
        deployments = list(self._config_deployments(tenant_id))
        for model in self._store.list_models(tenant_id):
            provider = providers.get(model.provider_id)
            if provider is not None:
                deployments.append(Deployment(model.alias, model.model_id, provider, model.weight))
        return TenantView(router=_router(deployments), created=int(time.time()), providers=providers)

    def _config_deployments(self, tenant_id: str) -> Iterable[Deployment]:
        if tenant_id != DEFAULT_TENANT_ID:
            return
        for model in self._config.models:
            provider = self._config_providers[config_provider_id(model.provider)]
            yield _config_deployment(model, provider)

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
    return Deployment(model.name, model.id, provider, model.weight, tasks)


def _router(deployments: list[Deployment]) -> Router:
    grouped: defaultdict[str, list[Deployment]] = defaultdict(list)
    for deployment in deployments:
        grouped[deployment.alias].append(deployment)
    return Router({alias: WeightedRoundRobin(group) for alias, group in grouped.items()})
