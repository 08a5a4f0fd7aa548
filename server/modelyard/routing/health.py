"""Per-deployment health in this worker: in-flight count, time-to-first-token EWMA, circuit breaker.

Breaker: closed → open after `consecutive_failures` failures in a row, or when at least
`min_requests` outcomes in the last `window` seconds failed at `failure_ratio` or more; a 429 opens
it at once for its Retry-After. Open lasts `cooldown`, doubling on each re-ejection up to
`max_cooldown`; then half-open lets exactly one probe through: success closes it, failure re-opens.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from modelyard.routing.policy import BreakerConfig

EWMA_ALPHA = 0.3


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass
class DeploymentHealth:
    key: str
    config: BreakerConfig
    state: BreakerState = BreakerState.CLOSED
    in_flight: int = 0
    ewma_ttft: float | None = None
    consecutive_failures: int = 0
    ejections: int = 0
    open_until: float = 0.0
    probing: bool = False
    rate_limited: bool = False
    """Whether the last ejection came from a 429 (all-ejected answers are then 429s too)."""
    successes: int = 0
    failures: int = 0
    outcomes: deque[tuple[float, bool]] = field(default_factory=deque)

    def available(self, now: float) -> bool:
        if self.state is BreakerState.OPEN and now >= self.open_until:
            self.state = BreakerState.HALF_OPEN
        if self.state is BreakerState.HALF_OPEN:
            return not self.probing
        return self.state is BreakerState.CLOSED

    def begin(self) -> bool:
        """Count an attempt in; True when it is the half-open probe."""
        self.in_flight += 1
        if self.state is BreakerState.HALF_OPEN:
            self.probing = True
            return True
        return False

    def succeed(self, now: float, ttft: float, probe: bool = False) -> None:
        self._end(probe)
        self.successes += 1
        self.ewma_ttft = (
            ttft if self.ewma_ttft is None else EWMA_ALPHA * ttft + (1 - EWMA_ALPHA) * self.ewma_ttft
        )
        self.consecutive_failures = 0
        if self.state is not BreakerState.CLOSED:
            self.state, self.ejections = BreakerState.CLOSED, 0
            self.outcomes.clear()
        self._remember(now, ok=True)

    def fail(self, now: float, retry_after: float | None, probe: bool = False) -> None:
        self._end(probe)
        self.failures += 1
        self.consecutive_failures += 1
        self._remember(now, ok=False)
        if retry_after is not None and retry_after > 0 and self.config.eject_on_429:
            self._open(now, max(retry_after, self._cooldown() if self.state is BreakerState.HALF_OPEN else 0))
            self.rate_limited = True
        elif self.state is BreakerState.HALF_OPEN or (self.state is BreakerState.CLOSED and self._tripped()):
            self._open(now, self._cooldown())
            self.rate_limited = False

    def release(self, probe: bool = False) -> None:
        """An attempt that says nothing about the deployment's health (the client's mistake, a cancel)."""
        self._end(probe)

    def remaining_cooldown(self, now: float) -> float:
        return max(0.0, self.open_until - now) if self.state is BreakerState.OPEN else 0.0

    def _end(self, probe: bool) -> None:
        self.in_flight -= 1
        if probe:
            self.probing = False

    def _cooldown(self) -> float:
        return float(min(self.config.max_cooldown, self.config.cooldown * 2**self.ejections))

    def _open(self, now: float, seconds: float) -> None:
        self.state, self.open_until = BreakerState.OPEN, now + seconds
        self.ejections += 1
        self.outcomes.clear()

    def _remember(self, now: float, ok: bool) -> None:
        self.outcomes.append((now, ok))
        horizon = now - self.config.window
        while self.outcomes and self.outcomes[0][0] < horizon:
            self.outcomes.popleft()

    def _tripped(self) -> bool:
        if self.consecutive_failures >= self.config.consecutive_failures:
            return True
        total = len(self.outcomes)
        if total < self.config.min_requests:
            return False
        failed = sum(1 for _, ok in self.outcomes if not ok)
        return failed / total >= self.config.failure_ratio


@dataclass(frozen=True)
class HealthSnapshot:
    key: str
    state: str
    in_flight: int
    consecutive_failures: int
    ejections: int
    cooldown_remaining: float
    ewma_ttft: float | None
    successes: int
    failures: int


class HealthBoard:
    """Every deployment's health in this process, keyed by deployment key; survives config reloads."""

    def __init__(self, config: BreakerConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self._entries: dict[str, DeploymentHealth] = {}

    def get(self, key: str) -> DeploymentHealth:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = DeploymentHealth(key, self.config)
        return entry

    def use_config(self, config: BreakerConfig) -> None:
        self.config = config
        for entry in self._entries.values():
            entry.config = config

    def snapshot(self, keys: Iterable[str]) -> list[HealthSnapshot]:
        now = self.clock()
        result = []
        for key in keys:
            entry = self.get(key)
            entry.available(now)  # an expired cooldown shows as half-open
            result.append(
                HealthSnapshot(
                    key=key,
                    state=entry.state.value,
                    in_flight=entry.in_flight,
                    consecutive_failures=entry.consecutive_failures,
                    ejections=entry.ejections,
                    cooldown_remaining=entry.remaining_cooldown(now),
                    ewma_ttft=entry.ewma_ttft,
                    successes=entry.successes,
                    failures=entry.failures,
                )
            )
        return result
