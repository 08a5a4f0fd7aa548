"""The YAML config file: typed, strict, and reported with the file and key path when wrong."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

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


Task = Literal["chat", "completions", "embeddings"]
TASK_TYPES: dict[str, Task] = {
    "llm/v1/chat": "chat",
    "llm/v1/completions": "completions",
    "llm/v1/embeddings": "embeddings",
}
DEFAULT_PARAMETERS: dict[str, tuple[type, ...]] = {
    "temperature": (int, float),
    "top_p": (int, float),
    "top_k": (int,),
    "max_tokens": (int,),
    "max_completion_tokens": (int,),
    "stop": (str, list),
    "presence_penalty": (int, float),
    "frequency_penalty": (int, float),
    "seed": (int,),
}


class Destination(Strict):
    name: str
    traffic_percentage: int = Field(ge=0, le=100)


class RouteConfig(Strict):
    """An MLflow AI Gateway route: a traffic split over endpoints or aliases."""

    name: str = Field(pattern=NAME_PATTERN)
    task_type: Literal["llm/v1/chat", "llm/v1/completions", "llm/v1/embeddings"]
    destinations: list[Destination] = Field(min_length=1)
    routing_strategy: Literal["TRAFFIC_SPLIT"] = "TRAFFIC_SPLIT"

    @model_validator(mode="after")
    def _sums_to_100(self) -> RouteConfig:
        total = sum(d.traffic_percentage for d in self.destinations)
        if total != 100:
            raise ValueError(f"route {self.name!r}: traffic percentages sum to {total}, not 100")
        return self


@dataclass(frozen=True)
class RouteEntry:
    name: str
    task: str
    destinations: tuple[tuple[str, int], ...]


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
            kinds = DEFAULT_PARAMETERS.get(key)
            if kinds is None:
                raise ValueError(
                    f"unknown default parameter {key!r} (known: {', '.join(DEFAULT_PARAMETERS)})"
                )
            if isinstance(item, bool) or not isinstance(item, kinds):
                raise ValueError(f"default parameter {key!r} has the wrong type")
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
    routes: list[RouteConfig] = Field(default_factory=list)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)

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
        names = [p.name for p in self.providers]
        for index, model in enumerate(self.models):
            if model.provider not in names:
                raise ValueError(f"models[{index}].provider: no provider named {model.provider!r}")
        aliases = {m.name for m in self.models}
        for index, route in enumerate(self.routes):
            if route.name in aliases:
                raise ValueError(f"routes[{index}].name: {route.name!r} is already a model alias")
            for number, destination in enumerate(route.destinations):
                if destination.name not in aliases:
                    raise ValueError(
                        f"routes[{index}].destinations[{number}].name: no endpoint or alias named {destination.name!r}"
                    )
        known = aliases | {r.name for r in self.routes}
        for name, policy in self.routing.policies.items():
            if name not in known:
                raise ValueError(f"routing.policies.{name}: no alias, endpoint or route of that name")
            for fallback in policy.fallbacks or ():
                if fallback not in known:
                    raise ValueError(
                        f"routing.policies.{name}.fallbacks: no alias, endpoint or route named {fallback!r}"
                    )
        return self


@dataclass(frozen=True)
class Expanded:
    providers: tuple[ProviderEntry, ...]
    models: tuple[ModelEntry, ...]
    routes: tuple[RouteEntry, ...]


def expand(config: GatewayConfig) -> Expanded:
    """The config as the router builds it: every dialect turned into providers, models and routes."""
    routes = tuple(
        RouteEntry(
            r.name, TASK_TYPES[r.task_type], tuple((d.name, d.traffic_percentage) for d in r.destinations)
        )
        for r in config.routes
    )
    return Expanded(tuple(config.providers), tuple(config.models), routes)


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
    """Validate an already-parsed document; `$NAME` strings in provider data come from `env`."""
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
