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
    unit: str = "requests"
    """requests (each admission costs 1) or tokens (it costs the request's token estimate)."""

    def window(self, at: float) -> int:
        return int(at // self.seconds)

    def ends(self, at: float) -> int:
        """When the window of `at` ends (Unix seconds)."""
        return (int(at // self.seconds) + 1) * self.seconds


class Decision(NamedTuple):
    admitted: bool
    used: tuple[int, ...] = ()
    """Admitted: each check's count after its charge. Refused by a check: that check's count (the
    only element). Refused for a full slot: empty."""
    refused: Check | None = None
    held: int = 0
    """The slot's holders after the admission (before it, when the slot refused it)."""


class Settlement(NamedTuple):
    """A correction of charges: `delta` to each check's window of `at`."""

    checks: Sequence[Check]
    at: float
    delta: int


@dataclass(frozen=True)
class Slot:
    """A concurrency cap: at most `limit` holders of `name` at once, over every process."""

    name: str
    limit: int


class CounterStore(Protocol):
    def admit(
        self,
        checks: Sequence[Check],
        at: float,
        costs: Sequence[int],
        slot: Slot | None = None,
        slots: int = 1,
    ) -> Decision:
        """Atomically: take `slots` of the slot (if any) and charge `costs[i]` to `checks[i]` in its
        window of `at`, or change nothing."""
        ...

    def settle(self, settlements: Sequence[Settlement], slots: Sequence[tuple[Slot, int]] = ()) -> None:
        """In one transaction: add each settlement's delta (negative to give back) to its checks'
        windows, and free slots."""
        ...

    def close(self) -> None: ...
