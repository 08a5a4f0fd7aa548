"""The config sections of metering: `limits`, `usage`, `metrics`, `tracing` and `access_log`."""

from __future__ import annotations

from types import MappingProxyType
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Period = Literal["second", "minute", "hour", "day"]
PERIOD_SECONDS = MappingProxyType({"second": 1, "minute": 60, "hour": 3600, "day": 86400})
Scope = Literal["key", "tenant", "model", "key_model"]


class Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LimitRule(Strict):
    """At most `requests` calls, or `tokens` tokens (prompt + completion), per `per`.

    `scope` says whose use is counted: each API key's, each tenant's, each model name's (alias,
    endpoint or route: MLflow's `limit`), or each key's on each model. `key`, `tenant` and
    `model` narrow a rule to one key name, tenant name or model name; otherwise every one gets
    its own budget.
    """

    scope: Scope
    requests: int | None = Field(default=None, ge=1, le=10**12)
    tokens: int | None = Field(default=None, ge=1, le=10**15)
    per: Period = "minute"
    key: str | None = None
    tenant: str | None = None
    model: str | None = None

    @model_validator(mode="after")
    def _one_unit(self) -> LimitRule:
        if (self.requests is None) == (self.tokens is None):
            raise ValueError("give exactly one of requests or tokens")
        if self.key is not None and self.scope not in ("key", "key_model"):
            raise ValueError("key applies only to the key and key_model scopes")
        if self.model is not None and self.scope not in ("model", "key_model"):
            raise ValueError("model applies only to the model and key_model scopes")
        return self

    @property
    def unit(self) -> Literal["requests", "tokens"]:
        return "requests" if self.requests is not None else "tokens"

    @property
    def amount(self) -> int:
        return self.requests if self.requests is not None else (self.tokens or 0)

    @property
    def seconds(self) -> int:
        return PERIOD_SECONDS[self.per]


class LimitsConfig(Strict):
    rules: tuple[LimitRule, ...] = ()
    concurrent_per_key: int | None = Field(default=None, ge=1, le=100_000)
    """At most this many requests of one API key in flight at once, over every worker."""


class Price(Strict):
    """US dollars per million tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached: float | None = Field(default=None, ge=0)
    """Cached prompt tokens; the input price when not given."""


class UsageConfig(Strict):
    enabled: bool = True
    queue_size: int = Field(default=10_000, ge=1, le=10_000_000)
    """Records waiting for the database; beyond it records are dropped (and the drops counted)."""
    batch_size: int = Field(default=500, ge=1, le=100_000)
    prices: dict[str, Price] = Field(default_factory=dict)
    """Upstream model id → price, over the built-in table."""


class MetricsConfig(Strict):
    enabled: bool = True
    listen: str = "127.0.0.1:9464"
    """Where the supervisor serves Prometheus' /metrics, summed over every worker."""


class TracingConfig(Strict):
    otlp_endpoint: str | None = None
    """An OTLP/gRPC collector (host:port or http://host:port); traces are off without one."""
    capture_content: bool = False
    """Record prompts and completions on spans (off: they may hold personal data)."""


class AccessLogConfig(Strict):
    enabled: bool = True
    content_for: tuple[str, ...] = ()
    """Model names whose prompts and completions the access log includes (none by default)."""
