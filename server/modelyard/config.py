"""The YAML config file: typed, strict, and reported with the file and key path when wrong."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
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


class ModelEntry(Strict):
    provider: str
    id: str = Field(min_length=1, max_length=256)
    alias: str | None = Field(default=None, pattern=NAME_PATTERN)
    weight: int = Field(default=1, ge=1, le=1000)
    tasks: tuple[Task, ...] | None = Field(default=None, min_length=1)
    """What the model serves; None means whatever its provider supports."""

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
        return self


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
