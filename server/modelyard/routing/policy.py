"""How traffic to a name (alias, endpoint or route) is steered: the `routing:` section of the config.

```yaml
routing:
  defaults: {strategy: round_robin, max_attempts: 3, timeouts: {connect: 10, first_token: 120, total: 600}}
  breaker: {consecutive_failures: 5, cooldown: 5}
  policies:
    chat: {strategy: least_in_flight, fallbacks: [chat-backup]}
```
A policy names only what it changes; the rest comes from `defaults` (timeouts field by field).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Strategy = Literal["round_robin", "least_in_flight", "lowest_latency", "traffic_split"]
Trigger = Literal["429", "5xx", "timeout", "connection", "401", "403", "404", "408"]
DEFAULT_TRIGGERS: tuple[Trigger, ...] = ("429", "5xx", "timeout", "connection")


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TimeoutsConfig(_Strict):
    """Seconds. `first_token` bounds the wait for response headers and a stream's first chunk, and any
    later silence of the upstream connection; `total` bounds the whole attempt."""

    connect: float | None = Field(default=None, gt=0, le=600)
    first_token: float | None = Field(default=None, gt=0, le=3600)
    total: float | None = Field(default=None, gt=0, le=86400)


class BackoffConfig(_Strict):
    """Exponential backoff with full jitter between attempts on the same deployment."""

    initial: float = Field(default=0.1, ge=0, le=60)
    max: float = Field(default=2.0, ge=0, le=300)
    multiplier: float = Field(default=2.0, ge=1, le=10)


class PolicyConfig(_Strict):
    strategy: Strategy | None = None
    """How the deployments of one alias are balanced (traffic_split: random by weight)."""
    fallbacks: tuple[str, ...] | None = None
    """Names tried in order when the primary's deployments fail with a trigger error."""
    fallback_on: tuple[Trigger, ...] | None = Field(default=None, min_length=1)
    max_attempts: int | None = Field(default=None, ge=1, le=20)
    """Upstream attempts per request, across deployments, retries and fallbacks (default: each
    deployment of the request's plan once, plus one retry)."""
    backoff: BackoffConfig | None = None
    timeouts: TimeoutsConfig | None = None


class BreakerConfig(_Strict):
    """Per deployment: eject after N consecutive failures or a failure ratio over a window."""

    consecutive_failures: int = Field(default=5, ge=1, le=1000)
    failure_ratio: float = Field(default=0.5, gt=0, le=1)
    window: float = Field(default=30.0, gt=0, le=3600)
    min_requests: int = Field(default=10, ge=1, le=100000)
    cooldown: float = Field(default=5.0, gt=0, le=3600)
    max_cooldown: float = Field(default=300.0, gt=0, le=86400)
    eject_on_429: bool = True
    """Cool a deployment down for its Retry-After as soon as its provider answers 429."""

    @model_validator(mode="after")
    def _ordered(self) -> BreakerConfig:
        if self.max_cooldown < self.cooldown:
            raise ValueError("max_cooldown must be at least cooldown")
        return self


class RoutingConfig(_Strict):
    defaults: PolicyConfig = Field(default_factory=PolicyConfig)
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    policies: dict[str, PolicyConfig] = Field(default_factory=dict)
    seed: int | None = None
    """Seeds the random choices (traffic split, exploration, jitter) so tests can replay them."""

    def resolve(self, name: str) -> Policy:
        return resolve_policy(self.defaults, self.policies.get(name))


@dataclass(frozen=True)
class Timeouts:
    connect: float = 10.0
    first_token: float = 120.0
    total: float = 600.0


@dataclass(frozen=True)
class Backoff:
    initial: float = 0.1
    max: float = 2.0
    multiplier: float = 2.0

    def delay(self, retry: int) -> float:
        """The upper bound of the jittered delay before the `retry`-th retry (1-based)."""
        return min(self.max, self.initial * self.multiplier ** (retry - 1))


@dataclass(frozen=True)
class Policy:
    """A name's resolved policy: plain values, read on the hot path."""

    strategy: Strategy = "round_robin"
    fallbacks: tuple[str, ...] = ()
    fallback_on: frozenset[str] = frozenset(DEFAULT_TRIGGERS)
    max_attempts: int | None = None
    backoff: Backoff = Backoff()
    timeouts: Timeouts = Timeouts()


DEFAULT_POLICY = Policy()


def _timeouts(*layers: TimeoutsConfig | None) -> Timeouts:
    values = {"connect": Timeouts.connect, "first_token": Timeouts.first_token, "total": Timeouts.total}
    for layer in layers:
        if layer is not None:
            values.update({k: v for k, v in layer.model_dump().items() if v is not None})
    return Timeouts(**values)


def resolve_policy(defaults: PolicyConfig, override: PolicyConfig | None) -> Policy:
    layers = (defaults, override) if override is not None else (defaults,)

    def pick(field: str) -> object:
        value = None
        for layer in layers:
            if getattr(layer, field) is not None:
                value = getattr(layer, field)
        return value

    backoff = pick("backoff")
    return Policy(
        strategy=pick("strategy") or DEFAULT_POLICY.strategy,  # type: ignore[arg-type]
        fallbacks=pick("fallbacks") or (),  # type: ignore[arg-type]
        fallback_on=frozenset(pick("fallback_on") or DEFAULT_TRIGGERS),  # type: ignore[call-overload]
        max_attempts=pick("max_attempts"),  # type: ignore[arg-type]
        backoff=Backoff(**backoff.model_dump()) if isinstance(backoff, BackoffConfig) else Backoff(),
        timeouts=_timeouts(*(layer.timeouts for layer in layers)),
    )
