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
from modelyard.metering.counters import Check, CounterStore, Standing
from modelyard.metering.settings import PERIOD_SECONDS, LimitRule, LimitsConfig
from modelyard.tenancy import Principal

Header = tuple[str, str]
UNITS = ("requests", "tokens")
CONCURRENCY_RETRY_S = 1.0


@dataclass
class RateLimited(ClientError):
    """429: a limit of the caller's is used up until `retry_after` seconds from now."""

    status: int = 429


@dataclass
class Admission:
    headers: tuple[Header, ...] = ()
    token_standings: tuple[Standing, ...] = ()
    estimate: int = 0
    slot: str | None = None
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


def _headers(standings: Sequence[Standing], now: float) -> tuple[Header, ...]:
    """Per unit, the tightest counter (least remaining)."""
    headers: list[Header] = []
    for unit in UNITS:
        mine = [s for s in standings if s.check.name.endswith(f"|{unit}|{s.check.seconds}")]
        if not mine:
            continue
        tightest = min(mine, key=lambda s: (s.remaining, s.reset_in(now)))
        headers += [
            (f"x-ratelimit-limit-{unit}", str(tightest.check.limit)),
            (f"x-ratelimit-remaining-{unit}", str(tightest.remaining)),
            (f"x-ratelimit-reset-{unit}", reset_text(tightest.reset_in(now))),
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

    def use_plan(self, plan: LimitPlan) -> None:
        self._plan = plan

    @property
    def counts_tokens(self) -> bool:
        return any(rule.unit == "tokens" for rule in self._plan.rules)

    def admit(self, principal: Principal, model: str, tokens: int) -> Admission:
        plan = self._plan
        if not plan.rules and plan.concurrent_per_key is None:
            return NO_LIMITS
        slot = self._enter(principal, plan.concurrent_per_key)
        try:
            return self._charge(principal, model, tokens, plan.rules, slot)
        except BaseException:
            if slot is not None:
                self._counters.leave(slot)
            raise

    def _enter(self, principal: Principal, limit: int | None) -> str | None:
        if limit is None:
            return None
        slot = f"concurrency:{principal.tenant_id}/{principal.key_id}"
        if not self._counters.enter(slot, limit):
            raise RateLimited(
                f"Too many concurrent requests for this API key: at most {limit} may be in flight.",
                code="concurrency_limit_exceeded",
                retry_after=CONCURRENCY_RETRY_S,
                quota_subject=slot,
            )
        return slot

    def _charge(
        self, principal: Principal, model: str, tokens: int, rules: Sequence[Rule], slot: str | None
    ) -> Admission:
        checks = []
        for rule in rules:
            subject = rule.subject(principal, model)
            if subject is not None:
                cost = 1 if rule.unit == "requests" else max(tokens, 1)
                checks.append(Check(f"{subject}|{rule.unit}|{rule.seconds}", rule.seconds, rule.amount, cost))
        if not checks:
            return Admission(slot=slot)
        now = self._clock()
        decision = self._counters.admit(checks, now)
        if not decision.admitted:
            raise _refusal(decision.standings[0], now)
        token_standings = tuple(
            s for s in decision.standings if s.check.name.endswith(f"|tokens|{s.check.seconds}")
        )
        return Admission(_headers(decision.standings, now), token_standings, tokens, slot)

    def finish(self, admission: Admission, reported_tokens: int | None) -> None:
        """Settle token charges to the provider's usage (a failed call without usage is refunded)
        and give back the concurrency slot. Idempotent."""
        if admission.settled or admission is NO_LIMITS:
            return
        admission.settled = True
        if admission.token_standings:
            actual = reported_tokens if reported_tokens is not None else 0
            self._counters.settle(admission.token_standings, actual - admission.estimate)
        if admission.slot is not None:
            self._counters.leave(admission.slot)


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
