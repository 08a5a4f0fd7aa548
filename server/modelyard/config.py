"""The YAML config file: typed, strict, and reported with the file and key path when wrong."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from modelyard.dialects.external import TASKS, Task, parameter_problem, serves
from modelyard.dialects.mlflow import MlflowEndpoint, MlflowRoute
from modelyard.metering.settings import (
    AccessLogConfig,
    LimitsConfig,
    MetricsConfig,
    TracingConfig,
    UsageConfig,
)
from modelyard.providers.base import argument_problems
from modelyard.providers.registry import PROVIDER_TYPES
from modelyard.routing.policy import RoutingConfig

_ENV_REF = re.compile(r"^\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))$")
_ADDRESS = re.compile(r"^(?P<host>\[[0-9a-fA-F:]+\]|[A-Za-z0-9.\-]+):(?P<port>\d{1,5})$")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._\-/:]{0,127}$"


class ConfigError(Exception):
    """A config problem, phrased for the person who wrote the file."""


class Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _check_address(value: str) -> str:
    match = _ADDRESS.match(value)
    if not match or not 0 < int(match.group("port")) < 65536:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return value


class ListenConfig(Strict):
    http: str = "127.0.0.1:8080"
    grpc: str = "127.0.0.1:50051"

    _validate = field_validator("http", "grpc")(_check_address)


class ProviderEntry(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    type: str
    data: dict[str, Any] = Field(default_factory=dict)

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in PROVIDER_TYPES:
            known = ", ".join(sorted(PROVIDER_TYPES))
            raise ValueError(f"unknown provider type {value!r} (known: {known})")
        return value

    @field_validator("data")
    @classmethod
    def _valid_for_type(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        provider_type = info.data.get("type")
        spec = PROVIDER_TYPES.get(provider_type) if isinstance(provider_type, str) else None
        if spec is not None:
            try:
                spec.settings.model_validate(value)
            except ValidationError as exc:
                raise ValueError(f"{provider_type} provider: {argument_problems(exc)}") from None
        return value


@dataclass(frozen=True)
class RouteEntry:
    name: str
    task: str
    """chat, completions or embeddings."""
    destinations: tuple[tuple[str, int], ...]
    """(alias or endpoint name, traffic percentage), the percentages summing to 100."""


@dataclass(frozen=True)
class LimitEntry:
    name: str
    """The endpoint (alias) limited."""
    calls: int
    seconds: int
    """At most `calls` calls per `seconds` (MLflow's renewal_period)."""


class ModelEntry(Strict):
    provider: str
    id: str = Field(min_length=1, max_length=256)
    alias: str | None = Field(default=None, pattern=NAME_PATTERN)
    weight: int = Field(default=1, ge=1, le=1000)
    tasks: tuple[Task, ...] | None = Field(default=None, min_length=1)
    """What the model serves; None means whatever its provider supports."""
    defaults: dict[str, Any] = Field(default_factory=dict)
    """Request parameters applied when the client does not send them."""

    @field_validator("defaults")
    @classmethod
    def _known_defaults(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key, item in value.items():
            if (problem := parameter_problem(key, item)) is not None:
                raise ValueError(problem)
        return value

    @property
    def name(self) -> str:
        return self.alias or self.id


class GatewayConfig(Strict):
    listen: ListenConfig = Field(default_factory=ListenConfig)
    workers: int = Field(default=1, ge=1, le=64)
    data_dir: str = ".modelyard"
    max_request_mb: int = Field(default=32, ge=1, le=512)
    providers: list[ProviderEntry] = Field(default_factory=list)
    models: list[ModelEntry] = Field(default_factory=list)
    endpoints: list[MlflowEndpoint] = Field(default_factory=list)
    """MLflow AI Gateway endpoints: each becomes a provider and a model aliased by its name."""
    routes: list[MlflowRoute] = Field(default_factory=list)
    """MLflow AI Gateway routes: traffic splits over endpoints and aliases."""
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    usage: UsageConfig = Field(default_factory=UsageConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    tracing: TracingConfig = Field(default_factory=TracingConfig)
    access_log: AccessLogConfig = Field(default_factory=AccessLogConfig)

    @field_validator("providers")
    @classmethod
    def _unique_names(cls, providers: list[ProviderEntry]) -> list[ProviderEntry]:
        first: dict[str, int] = {}
        for index, provider in enumerate(providers):
            if provider.name in first:
                raise ValueError(
                    f"providers[{index}].name: {provider.name!r} is already the name of providers[{first[provider.name]}]"
                )
            first[provider.name] = index
        return providers

    @model_validator(mode="after")
    def _references_resolve(self) -> GatewayConfig:
        for check in (_provider_problem, _name_problem, _route_problem, _policy_problem):
            if (problem := check(self)) is not None:
                raise ValueError(problem)
        return self


def _provider_problem(config: GatewayConfig) -> str | None:
    """Every model names a provider; no endpoint's generated provider takes a provider's name."""
    names = {p.name: index for index, p in enumerate(config.providers)}
    for index, model in enumerate(config.models):
        if model.provider not in names:
            return f"models[{index}].provider: no provider named {model.provider!r}"
    for index, endpoint in enumerate(config.endpoints):
        if endpoint.provider_name in names:
            taken = names[endpoint.provider_name]
            return (
                f"endpoints[{index}].name: its provider {endpoint.provider_name!r} is already the name of "
                f"providers[{taken}]"
            )
    return None


def _name_problem(config: GatewayConfig) -> str | None:
    """Model aliases, endpoint names and route names share one namespace (several models may share
    an alias: they are balanced)."""
    owners = {m.name: "a model alias" for m in config.models}
    sections = (
        ("endpoints", [e.name for e in config.endpoints]),
        ("routes", [r.name for r in config.routes]),
    )
    for section, names in sections:
        for index, name in enumerate(names):
            if name in owners:
                return f"{section}[{index}].name: {name!r} is already {owners[name]}"
            owners[name] = f"the name of {section}[{index}]"
    return None


def _served_tasks(config: GatewayConfig) -> dict[str, set[str]]:
    """Each alias and endpoint → the tasks it serves (a model without `tasks`: its provider's)."""
    types = {p.name: p.type for p in config.providers}
    served: dict[str, set[str]] = {}
    for model in config.models:
        tasks = model.tasks or tuple(t for t in TASKS.values() if serves(types[model.provider], t))
        served.setdefault(model.name, set()).update(tasks)
    for endpoint in config.endpoints:
        served[endpoint.name] = {endpoint.task}
    return served


def _route_problem(config: GatewayConfig) -> str | None:
    """Every destination is an endpoint or alias (not a route: one level) serving the route's task."""
    served = _served_tasks(config)
    routes = {r.name for r in config.routes}
    for index, route in enumerate(config.routes):
        for number, destination in enumerate(route.destinations):
            where, name = f"routes[{index}].destinations[{number}].name", destination.name
            if name in routes:
                return f"{where}: {name!r} is a route; a route's destinations are endpoints or aliases"
            if name not in served:
                return f"{where}: no endpoint or alias named {name!r}"
            if route.task not in served[name]:
                return f"{where}: {name!r} does not serve {route.task_type}, the task of route {route.name!r}"
    return None


def _policy_problem(config: GatewayConfig) -> str | None:
    known = set(_served_tasks(config)) | {r.name for r in config.routes}
    for name, policy in config.routing.policies.items():
        if name not in known:
            return f"routing.policies.{name}: no alias, endpoint or route of that name"
        for fallback in policy.fallbacks or ():
            if fallback not in known:
                return f"routing.policies.{name}.fallbacks: no alias, endpoint or route named {fallback!r}"
    return None


@dataclass(frozen=True)
class Expanded:
    providers: tuple[ProviderEntry, ...]
    """The config's providers, then one per MLflow endpoint, named `endpoint:{endpoint name}`."""
    models: tuple[ModelEntry, ...]
    """The config's models, then one per endpoint: aliased by its name, serving its task only."""
    routes: tuple[RouteEntry, ...]
    limits: tuple[LimitEntry, ...] = ()
    """The endpoints' `limit`s, by endpoint name."""


def expand(config: GatewayConfig) -> Expanded:
    """The config as the router builds it: every dialect turned into providers, models and routes."""
    providers, models = list(config.providers), list(config.models)
    for endpoint in config.endpoints:
        translated = endpoint.model.translated
        providers.append(
            ProviderEntry(name=endpoint.provider_name, type=translated.type_name, data=translated.data)
        )
        models.append(
            ModelEntry(
                provider=endpoint.provider_name,
                id=translated.upstream_model(endpoint.model.name),
                alias=endpoint.name,
                tasks=(endpoint.task,),
                defaults=translated.defaults,
            )
        )
    routes = tuple(
        RouteEntry(r.name, r.task, tuple((d.name, d.traffic_percentage) for d in r.destinations))
        for r in config.routes
    )
    limits = tuple(
        LimitEntry(e.name, e.limit.calls, e.limit.seconds) for e in config.endpoints if e.limit is not None
    )
    return Expanded(tuple(providers), tuple(models), routes, limits)


def _resolve_env(value: Any, path: str, env: Mapping[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: _resolve_env(v, f"{path}.{k}", env) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_env(v, f"{path}[{i}]", env) for i, v in enumerate(value)]
    if isinstance(value, str) and (match := _ENV_REF.match(value)):
        name = match.group("braced") or match.group("plain")
        if name not in env:
            raise ConfigError(f"{path}: environment variable {name} is not set")
        return env[name]
    return value


def _endpoint_env(endpoint: Any, index: int, env: Mapping[str, str]) -> Any:
    """An MLflow endpoint with `$NAME` strings in its `model.config` (nested ones too) resolved."""
    model = endpoint.get("model") if isinstance(endpoint, dict) else None
    if not isinstance(model, dict) or "config" not in model:
        return endpoint
    config = _resolve_env(model["config"], f"endpoints[{index}].model.config", env)
    return {**endpoint, "model": {**model, "config": config}}


def _location(loc: Sequence[int | str]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors(include_input=False, include_url=False):
        where = _location(item["loc"]) or "(top level)"
        lines.append(f"  {where}: {item['msg']}")
    return "\n".join(lines)


def parse_config(raw: Any, env: Mapping[str, str] | None = None) -> GatewayConfig:
    """Validate an already-parsed document; `$NAME` strings in provider data and in MLflow
    endpoints' `model.config` come from `env`."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("the top level must be a mapping")
    env = os.environ if env is None else env
    providers = raw.get("providers")
    if isinstance(providers, list):
        raw = {
            **raw,
            "providers": [
                {**p, "data": _resolve_env(p.get("data", {}), f"providers[{i}].data", env)}
                if isinstance(p, dict)
                else p
                for i, p in enumerate(providers)
            ],
        }
    endpoints = raw.get("endpoints")
    if isinstance(endpoints, list):
        raw = {**raw, "endpoints": [_endpoint_env(e, i, env) for i, e in enumerate(endpoints)]}
    try:
        return GatewayConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError("invalid configuration:\n" + _describe(exc)) from None


def load_config(path: Path, env: Mapping[str, str] | None = None) -> GatewayConfig:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    try:
        return parse_config(raw, env)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
