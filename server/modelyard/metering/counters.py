"""Shared counters for rate limits: one store that every worker process of a host updates atomically.

`CounterStore` is the contract; `modelyard.metering.shm_counters.ShmCounters` keeps it in shared
memory (a memory-mapped file of the data directory), so N workers enforce one limit, not N. A Redis
implementation can keep the same semantics with one Lua script per call (check all, then add all).

Windows are fixed and aligned to the epoch (`window = floor(now / seconds)`), the same on every
worker. A check passes only if every counter it names has room; then all of them are charged in
the same transaction. Token charges are settled later by the difference between the estimate and
what the provider reported, in the window that was charged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol


class Check(NamedTuple):
    name: str
    """The counter: scope, subject and unit (never a secret)."""
    seconds: int
    limit: int
    cost: int
    unit: str = "requests"
    """requests or tokens."""


class Standing(NamedTuple):
    """A counter after an admission: what the rate-limit headers report."""

    check: Check
    window: int
    used: int

    @property
    def ends(self) -> int:
        return (self.window + 1) * self.check.seconds

    @property
    def remaining(self) -> int:
        return max(0, self.check.limit - self.used)

    def reset_in(self, now: float) -> float:
        return self.ends - now


@dataclass(frozen=True)
class Decision:
    admitted: bool
    standings: tuple[Standing, ...]
    """Every counter checked, charged when admitted; the first one without room when refused."""


@dataclass(frozen=True)
class Slot:
    """A concurrency cap: at most `limit` holders of `name` at once, over every process."""

    name: str
    limit: int


class CounterStore(Protocol):
    def admit(self, checks: Sequence[Check], now: float, slot: Slot | None = None) -> Decision:
        """Atomically: take the slot (if any) and charge every check, or change nothing. A refused
        slot is reported as a refusal with no standings."""
        ...

    def finish(self, standings: Sequence[Standing], delta: int, slot: Slot | None = None) -> None:
        """Add `delta` (negative to refund) to these counters' charged windows and free the slot."""
        ...

    def close(self) -> None: ...
