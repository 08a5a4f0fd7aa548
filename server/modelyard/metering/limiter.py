"""Rate limits: which counters a request is charged to, the admission, and OpenAI's headers.

A request is admitted when every rule that applies to it has room (one atomic check over the
shared counters); token rules are charged the prompt estimate and settled to the provider's
reported usage. Refusals are 429 with OpenAI's envelope, `Retry-After`, and the
`x-ratelimit-{limit,remaining,reset}-{requests,tokens}` headers, which admitted responses carry too.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from modelyard.errors import ClientError
from modelyard.metering.counters import Check, CounterStore, Slot, Standing
from modelyard.metering.settings import PERIOD_SECONDS, LimitRule, LimitsConfig
from modelyard.tenancy import Principal

Header = tuple[str, str]
UNITS = ("requests", "tokens")
CONCURRENCY_RETRY_S = 1.0
BUDGET_CACHE_SIZE = 10_000


@dataclass
class RateLimited(ClientError):
    """429: a limit of the caller's is used up until `retry_after` seconds from now."""

    status: int = 429


@dataclass
class Admission:
    headers: tuple[Header, ...] = ()
    token_standings: tuple[Standing, ...] = ()
    estimate: int = 0
    slot: Slot | None = None
    settled: bool = field(default=False, compare=False)


NO_LIMITS = Admission()


def reset_text(seconds: float) -> str:
    """OpenAI's spelling of a reset delay: `20ms`, `1s`, `1.5s`, `6m0s`, `1h2m3s`."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    whole = math.ceil(seconds * 10) / 10
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{secs:g}s"
    if minutes or hours:
        text = f"{int(minutes)}m{text}"
    if hours:
        text = f"{int(hours)}h{text}"
    return text


_HEADER_NAMES = {
    unit: (f"x-ratelimit-limit-{unit}", f"x-ratelimit-remaining-{unit}", f"x-ratelimit-reset-{unit}")
    for unit in UNITS
}


def _headers(standings: Sequence[Standing], now: float) -> tuple[Header, ...]:
    """Per unit, the tightest counter (least remaining, then soonest reset)."""
    tightest: dict[str, Standing] = {}
    for standing in standings:
        unit = standing.check.unit
        best = tightest.get(unit)
        if best is None or (standing.remaining, standing.ends) < (best.remaining, best.ends):
            tightest[unit] = standing
    headers: list[Header] = []
    for unit, standing in tightest.items():
        limit, remaining, reset = _HEADER_NAMES[unit]
        headers += [
            (limit, str(standing.check.limit)),
            (remaining, str(standing.remaining)),
            (reset, reset_text(standing.reset_in(now))),
        ]
    return tuple(headers)


@dataclass(frozen=True)
class Rule:
    """A configured rule, or an MLflow endpoint's `limit` (a requests rule on one model name)."""

    scope: str
    unit: str
    amount: int
    seconds: int
    key: str | None = None
    tenant: str | None = None
    model: str | None = None

    @classmethod
    def of(cls, rule: LimitRule) -> Rule:
        return cls(rule.scope, rule.unit, rule.amount, rule.seconds, rule.key, rule.tenant, rule.model)

    def subject(self, principal: Principal, model: str) -> str | None:
        """The budget this request draws from, or None when the rule does not apply to it."""
        if self.key is not None and self.key != principal.key_id:
            return None
        if self.tenant is not None and self.tenant != principal.tenant_id:
            return None
        if self.model is not None and self.model != model:
            return None
        tenant, key = principal.tenant_id, principal.key_id
        return {
            "key": f"key:{tenant}/{key}",
            "tenant": f"tenant:{tenant}",
            "model": f"model:{tenant}/{model}",
            "key_model": f"key_model:{tenant}/{key}/{model}",
        }[self.scope]


@dataclass(frozen=True)
class LimitPlan:
    rules: tuple[Rule, ...] = ()
    concurrent_per_key: int | None = None


def limit_plan(config: LimitsConfig, model_limits: Sequence[tuple[str, int, int]] = ()) -> LimitPlan:
    """`model_limits`: (model name, calls, seconds) of MLflow endpoints, which belong to the default
    tenant (the config file's)."""
    rules = [Rule.of(rule) for rule in config.rules]
    rules += [
        Rule("model", "requests", calls, seconds, tenant="default", model=name)
        for name, calls, seconds in model_limits
    ]
    return LimitPlan(tuple(rules), config.concurrent_per_key)


class RateLimiter:
    def __init__(
        self, counters: CounterStore, plan: LimitPlan, clock: Callable[[], float] = time.time
    ) -> None:
        self._counters = counters
        self._plan = plan
        self._clock = clock
        self._cache: dict[
            tuple[str, str, str], tuple[tuple[tuple[str, int, int, str], ...], Slot | None]
        ] = {}

    def use_plan(self, plan: LimitPlan) -> None:
        self._plan = plan
        self._cache.clear()

    def _budgets(
        self, plan: LimitPlan, tenant: str, key: str, model: str
    ) -> tuple[tuple[tuple[str, int, int, str], ...], Slot | None]:
        """The counters (name, seconds, amount, unit) and slot a key's request on a model draws
        from, worked out once per (tenant, key, model)."""
        cache_key = (tenant, key, model)
        found = self._cache.get(cache_key)
        if found is None:
            principal = Principal(key, tenant, frozenset())
            budgets = tuple(
                (f"{subject}|{rule.unit}|{rule.seconds}", rule.seconds, rule.amount, rule.unit)
                for rule in plan.rules
                if (subject := rule.subject(principal, model)) is not None
            )
            limit = plan.concurrent_per_key
            slot = Slot(f"concurrency:{tenant}/{key}", limit) if limit is not None else None
            if len(self._cache) >= BUDGET_CACHE_SIZE:
                self._cache.clear()
            found = self._cache[cache_key] = (budgets, slot)
        return found

    @property
    def counts_tokens(self) -> bool:
        return any(rule.unit == "tokens" for rule in self._plan.rules)

    def admit(self, principal: Principal, model: str, tokens: int) -> Admission:
        plan = self._plan
        if not plan.rules and plan.concurrent_per_key is None:
            return NO_LIMITS
        budgets, slot = self._budgets(plan, principal.tenant_id, principal.key_id, model)
        checks = [
            Check(name, seconds, amount, 1 if unit == "requests" else max(tokens, 1), unit)
            for name, seconds, amount, unit in budgets
        ]
        if not checks and slot is None:
            return NO_LIMITS
        now = self._clock()
        decision = self._counters.admit(checks, now, slot)
        if not decision.admitted:
            if not decision.standings:
                assert slot is not None, "a refusal without standings is a full concurrency slot"
                raise _busy(slot)
            raise _refusal(decision.standings[0], now)
        token_standings = tuple(s for s in decision.standings if s.check.unit == "tokens")
        return Admission(_headers(decision.standings, now), token_standings, tokens, slot)

    def finish(self, admission: Admission, reported_tokens: int | None) -> None:
        """Settle token charges to the provider's usage (a failed call without usage is refunded)
        and give back the concurrency slot. Idempotent."""
        if admission.settled or admission is NO_LIMITS:
            return
        admission.settled = True
        delta = 0
        if admission.token_standings:
            delta = (reported_tokens if reported_tokens is not None else 0) - admission.estimate
        self._counters.finish(admission.token_standings, delta, admission.slot)


def _busy(slot: Slot) -> RateLimited:
    return RateLimited(
        f"Too many concurrent requests for this API key: at most {slot.limit} may be in flight.",
        code="concurrency_limit_exceeded",
        retry_after=CONCURRENCY_RETRY_S,
        quota_subject=slot.name,
    )


def _refusal(standing: Standing, now: float) -> RateLimited:
    check = standing.check
    scope, _, rest = check.name.partition(":")
    subject, unit, _ = rest.split("|")
    period = next(
        (name for name, seconds in PERIOD_SECONDS.items() if seconds == check.seconds), f"{check.seconds}s"
    )
    wait = standing.reset_in(now)
    what = {
        "key": "this API key",
        "tenant": "this tenant",
        "model": f"the model '{subject.split('/', 1)[-1]}'",
        "key_model": f"this API key on the model '{subject.split('/', 2)[-1]}'",
    }[scope]
    message = (
        f"Rate limit reached for {unit} per {period} on {what}: limit {check.limit}, used {standing.used}, "
        f"requested {check.cost}. Please try again in {reset_text(wait)}."
    )
    headers = _headers([standing], now)
    return RateLimited(
        message,
        code="rate_limit_exceeded",
        retry_after=max(1.0, math.ceil(wait)),
        quota_subject=check.name.rsplit("|", 1)[0],
        headers=headers,
    )
