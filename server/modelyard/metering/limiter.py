"""Rate limits: which counters a request is charged to, the admission, and OpenAI's headers.

A request is admitted when every rule that applies to it has room (one atomic check over the
shared counters); token rules are charged the prompt estimate and settled to the provider's
reported usage. Refusals are 429 with OpenAI's envelope, `Retry-After`, and the
`x-ratelimit-{limit,remaining,reset}-{requests,tokens}` headers, which admitted responses carry too.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from modelyard.errors import ClientError
from modelyard.metering.counters import Check, CounterStore, Settlement, Slot
from modelyard.metering.reserves import Pool, Reserve, Reserves
from modelyard.metering.settings import PERIOD_SECONDS, LimitRule, LimitsConfig
from modelyard.tenancy import Principal

log = logging.getLogger(__name__)

Header = tuple[str, str]
UNITS = ("requests", "tokens")
CONCURRENCY_RETRY_S = 1.0
BUDGET_CACHE_SIZE = 10_000


@dataclass
class RateLimited(ClientError):
    """429: a limit of the caller's is used up until `retry_after` seconds from now."""

    status: int = 429


@dataclass(slots=True)
class Admission:
    headers: tuple[Header, ...] = ()
    token_checks: tuple[Check, ...] = ()
    at: float = 0.0
    estimate: int = 0
    slot: Slot | None = None
    settled: bool = field(default=False, compare=False)
    released: bool = field(default=False, compare=False)


NO_LIMITS = Admission()


def reset_text(seconds: float) -> str:
    """OpenAI's spelling of a reset delay: `20ms`, `1s`, `1.5s`, `6m0s`, `1h2m3s`."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    return _tenths_text(math.ceil(seconds * 10))


@functools.lru_cache(maxsize=1 << 12)
def _tenths_text(tenths: int) -> str:
    whole = tenths / 10
    if whole < 60:
        return f"{whole:g}s"
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{int(minutes)}m{secs:g}s"
    return f"{int(hours)}h{text}" if hours else text


_HEADER_NAMES = {
    unit: (f"x-ratelimit-limit-{unit}", f"x-ratelimit-remaining-{unit}", f"x-ratelimit-reset-{unit}")
    for unit in UNITS
}
HeaderPlan = tuple[tuple[tuple[str, str, str], tuple[int, ...], tuple[Header, ...]], ...]
"""Per unit: its header names, which checks count it, and each check's limit header."""


def _header_plan(checks: Sequence[Check]) -> HeaderPlan:
    plan = []
    for unit, names in _HEADER_NAMES.items():
        indexes = tuple(i for i, check in enumerate(checks) if check.unit == unit)
        if indexes:
            plan.append((names, indexes, tuple((names[0], str(check.limit)) for check in checks)))
    return tuple(plan)


def _headers(
    checks: Sequence[Check], used: Sequence[int], ends: Sequence[float], at: float, plan: HeaderPlan
) -> tuple[Header, ...]:
    """Per unit, the tightest counter (least remaining, then soonest reset); `ends` are the checks'
    window ends."""
    headers: list[Header] = []
    for (_, remaining_name, reset_name), indexes, limits in plan:
        tightest = indexes[0]
        if len(indexes) > 1:
            tightest = min(indexes, key=lambda i: (checks[i].limit - used[i], ends[i]))
        headers += (
            limits[tightest],
            (remaining_name, str(max(0, checks[tightest].limit - used[tightest]))),
            (reset_name, reset_text(ends[tightest] - at)),
        )
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


class _Budget(NamedTuple):
    """What a key's requests on one model draw from."""

    checks: tuple[Check, ...]
    counts_tokens: tuple[bool, ...]
    """Per check: whether it counts tokens (else requests)."""
    token_checks: tuple[Check, ...]
    slot: Slot | None
    header_plan: HeaderPlan
    reserves: tuple[Reserve, ...]
    """This worker's reserve of each check."""
    pool: Pool | None


class RateLimiter:
    def __init__(
        self, counters: CounterStore, plan: LimitPlan, clock: Callable[[], float] = time.time
    ) -> None:
        self._counters = counters
        self._plan = plan
        self._clock = clock
        self._cache: dict[tuple[str, str, str], _Budget] = {}
        self._reserves = Reserves()

    def use_plan(self, plan: LimitPlan) -> None:
        """Units charged ahead under the old limits go back first: a lowered limit must not be
        overrun from a reserve."""
        self._plan = plan
        try:
            self.settle(())
        except Exception:  # the units stay charged: the limits are tighter, never looser
            log.exception("giving back rate-limit reserves on reload failed")
        self._forget_budgets()

    def _forget_budgets(self) -> None:
        self._cache.clear()
        self._reserves.forget_idle()

    def _budget(self, tenant: str, key: str, model: str) -> _Budget:
        """Worked out once per (tenant, key, model) and plan."""
        plan = self._plan
        principal = Principal(key, tenant, frozenset())
        checks = tuple(
            Check(f"{subject}|{rule.unit}|{rule.seconds}", rule.seconds, rule.amount, rule.unit)
            for rule in plan.rules
            if (subject := rule.subject(principal, model)) is not None
        )
        limit = plan.concurrent_per_key
        slot = Slot(f"concurrency:{tenant}/{key}", limit) if limit is not None else None
        if len(self._cache) >= BUDGET_CACHE_SIZE:
            self._forget_budgets()
        counts_tokens = tuple(check.unit == "tokens" for check in checks)
        token_checks = tuple(check for check in checks if check.unit == "tokens")
        reserves = tuple(self._reserves.reserve(check) for check in checks)
        budget = self._cache[(tenant, key, model)] = _Budget(
            checks,
            counts_tokens,
            token_checks,
            slot,
            _header_plan(checks),
            reserves,
            self._reserves.pool(slot),
        )
        return budget

    @property
    def counts_tokens(self) -> bool:
        return any(rule.unit == "tokens" for rule in self._plan.rules)

    def admit(self, principal: Principal, model: str, tokens: int) -> Admission:
        tenant, key = principal.tenant_id, principal.key_id
        budget = self._cache.get((tenant, key, model)) or self._budget(tenant, key, model)
        checks, slot = budget.checks, budget.slot
        if not checks and slot is None:
            return NO_LIMITS
        at = self._clock()
        tokens = max(tokens, 1)
        costs = [tokens if counts_tokens else 1 for counts_tokens in budget.counts_tokens]
        shown = Reserves.take(budget.reserves, costs, at, budget.pool)
        if shown is None:
            shown = self._admit_in_store(budget, costs, at)
        ends = [reserve.until for reserve in budget.reserves]
        return Admission(
            _headers(checks, shown, ends, at, budget.header_plan), budget.token_checks, at, tokens, slot
        )

    def _admit_in_store(self, budget: _Budget, costs: Sequence[int], at: float) -> list[int]:
        checks, slot, reserves, pool = budget.checks, budget.slot, budget.reserves, budget.pool
        top_ups, slot_top_up = Reserves.top_ups(reserves, costs, at), Reserves.slot_top_up(pool)
        ahead = [cost + top_up for cost, top_up in zip(costs, top_ups, strict=True)]
        decision = self._counters.admit(checks, at, ahead, slot, 1 + slot_top_up)
        if not decision.admitted and (any(top_ups) or slot_top_up):
            top_ups, slot_top_up = [0] * len(costs), 0
            decision = self._counters.admit(checks, at, costs, slot, 1)
        if not decision.admitted:
            if decision.refused is None:
                assert slot is not None, "a refusal without a check is a full concurrency slot"
                raise _busy(slot)
            refused = decision.refused
            raise _refusal(refused, decision.used[0], costs[checks.index(refused)], at)
        return Reserves.charged(reserves, at, top_ups, decision, pool, slot_top_up)

    def release(self, admission: Admission) -> None:
        """Give back the concurrency slot, to this worker's pool or to the store (before the answer
        leaves: a client that waits for it and sends the next request must find its slot free).
        Idempotent."""
        slot = admission.slot
        if slot is not None and not admission.released:
            admission.released = True
            if not self._reserves.keep_slot(slot):
                self._counters.settle((), ((slot, 1),))

    def settle(self, reports: Sequence[tuple[Admission, int | None]]) -> None:
        """Settle token charges to the providers' usage (a failed call without usage is refunded)
        and give back this worker's reserves, all in one transaction. Idempotent."""
        settlements, slots = self._reserves.give_back()
        settlements += _token_settlements(reports)
        if settlements or slots:
            self._counters.settle(settlements, slots)

    def finish(self, admission: Admission, reported_tokens: int | None) -> None:
        self.release(admission)
        self.settle(((admission, reported_tokens),))


def _token_settlements(reports: Sequence[tuple[Admission, int | None]]) -> list[Settlement]:
    """The token charges' corrections, summed per budget and second: admissions of the same second
    were charged to the same windows (windows are whole seconds long)."""
    deltas: dict[tuple[tuple[Check, ...], int], int] = {}
    for admission, reported_tokens in reports:
        if admission.token_checks and not admission.settled:
            admission.settled = True
            delta = (reported_tokens if reported_tokens is not None else 0) - admission.estimate
            group = (admission.token_checks, int(admission.at))
            deltas[group] = deltas.get(group, 0) + delta
    return [Settlement(checks, second, delta) for (checks, second), delta in deltas.items() if delta]


def _busy(slot: Slot) -> RateLimited:
    return RateLimited(
        f"Too many concurrent requests for this API key: at most {slot.limit} may be in flight.",
        code="concurrency_limit_exceeded",
        retry_after=CONCURRENCY_RETRY_S,
        quota_subject=slot.name,
    )


def _refusal(check: Check, used: int, requested: int, at: float) -> RateLimited:
    scope, _, rest = check.name.partition(":")
    subject, unit, _ = rest.split("|")
    period = next(
        (name for name, seconds in PERIOD_SECONDS.items() if seconds == check.seconds), f"{check.seconds}s"
    )
    wait = check.ends(at) - at
    what = {
        "key": "this API key",
        "tenant": "this tenant",
        "model": f"the model '{subject.split('/', 1)[-1]}'",
        "key_model": f"this API key on the model '{subject.split('/', 2)[-1]}'",
    }[scope]
    message = (
        f"Rate limit reached for {unit} per {period} on {what}: limit {check.limit}, used {used}, "
        f"requested {requested}. Please try again in {reset_text(wait)}."
    )
    return RateLimited(
        message,
        code="rate_limit_exceeded",
        retry_after=max(1.0, math.ceil(wait)),
        quota_subject=check.name.rsplit("|", 1)[0],
        headers=_headers((check,), (used,), (check.ends(at),), at, _header_plan((check,))),
    )
