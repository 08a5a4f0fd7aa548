"""A worker's reserves: units of the shared counters it charged ahead of its own next requests.

Going to the shared store on every request cost the worker more CPU than all the rest of the
metering (measured with `bench/run.py --metering both`). So when a counter is far from its limit,
a worker's admission charges a little more than it needs: a reserve of at most 1/SHARE of what is
left, and no more than the next RESERVE_REQUESTS requests like it need. The worker admits its next
requests from the reserve without touching the store, and gives back what it has not spent every
`DRAIN_INTERVAL_S` (the meter's drain).

Limits still hold as a whole: a reserve is charged to the shared counter before it is spent, so
the workers together never admit more than the limit. Near a limit (fewer than SHARE units left)
no reserve is taken and every admission is checked in the store, so the last units go to the
first requests that ask for them. What reserves can do is refuse a request early, for less than
one drain interval, while another worker holds units it will not spend (at most 1/SHARE of what
was left when it took them). The rate-limit headers report a worker's unspent reserve as unused.

Concurrency slots work the same way: a worker may hold a few free slots (only while the cap is far
from reached), and a finished request's slot goes back to that pool instead of to the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from modelyard.metering.counters import Check, Decision, Settlement, Slot

SHARE = 64
RESERVE_REQUESTS = 128
RESERVE_SLOTS = 32


@dataclass(slots=True)
class Reserve:
    """A worker's standing with one counter. The object lives as long as the worker uses the counter
    (budgets hold it), and a new window resets it in place."""

    check: Check
    window: int = -1
    until: float = 0.0
    """When `window` ends (Unix seconds): nothing is admitted from the reserve after that."""
    left: int = 0
    """Charged to the store and not spent yet."""
    seen: int = 0
    """The counter's value in the store after this worker's last charge to it."""


@dataclass(slots=True)
class Pool:
    slot: Slot
    free: int = 0
    """Slots this worker holds in the store and no request of its uses."""
    seen: int = 0
    """The slot's holders after this worker's last admission in the store."""
    pooling: bool = False
    """Whether finished requests' slots stay here (the cap was far from reached)."""
    known: bool = False
    """Whether `seen` was read from the store yet."""


class Reserves:
    def __init__(self) -> None:
        self._reserves: dict[str, Reserve] = {}
        self._pools: dict[str, Pool] = {}

    def reserve(self, check: Check) -> Reserve:
        reserve = self._reserves.get(check.name)
        if reserve is None:
            reserve = self._reserves[check.name] = Reserve(check)
        reserve.check = check  # a reload may change the limit of a counter this worker holds units of
        return reserve

    def pool(self, slot: Slot | None) -> Pool | None:
        if slot is None:
            return None
        pool = self._pools.get(slot.name)
        if pool is None:
            pool = self._pools[slot.name] = Pool(slot)
        return pool

    def forget_idle(self) -> None:
        """Drop the reserves and pools that hold nothing (when no budget refers to them any more)."""
        self._reserves = {name: r for name, r in self._reserves.items() if r.left}
        self._pools = {name: p for name, p in self._pools.items() if p.free}

    @staticmethod
    def take(
        reserves: Sequence[Reserve], costs: Sequence[int], at: float, pool: Pool | None
    ) -> list[int] | None:
        """Admit from this worker's reserves: each counter's value as the headers report it, or None
        when a reserve falls short or its window is over (nothing is taken then)."""
        for reserve, cost in zip(reserves, costs, strict=True):
            if reserve.left < cost or at >= reserve.until:
                return None
        if pool is not None:
            if pool.free < 1:
                return None
            pool.free -= 1
        shown = []
        for reserve, cost in zip(reserves, costs, strict=True):
            reserve.left -= cost
            shown.append(reserve.seen - reserve.left)
        return shown

    @staticmethod
    def top_ups(reserves: Sequence[Reserve], costs: Sequence[int], at: float) -> list[int]:
        """What to charge ahead, per counter: nothing until its value in this window is known."""
        top_ups = []
        for reserve, cost in zip(reserves, costs, strict=True):
            check = reserve.check
            if reserve.window != check.window(at):
                top_ups.append(0)
                continue
            top_ups.append(max(0, min((check.limit - reserve.seen) // SHARE, RESERVE_REQUESTS * cost)))
        return top_ups

    @staticmethod
    def slot_top_up(pool: Pool | None) -> int:
        if pool is None or not pool.known:
            return 0
        return max(0, min((pool.slot.limit - pool.seen) // SHARE, RESERVE_SLOTS))

    @staticmethod
    def charged(
        reserves: Sequence[Reserve],
        at: float,
        top_ups: Sequence[int],
        decision: Decision,
        pool: Pool | None,
        slot_top_up: int,
    ) -> list[int]:
        """Keep what an admission in the store charged ahead; the counters as the headers report them."""
        shown = []
        for reserve, top_up, used in zip(reserves, top_ups, decision.used, strict=True):
            check = reserve.check
            window = check.window(at)
            if reserve.window != window:
                reserve.window, reserve.until, reserve.left = window, float(check.ends(at)), 0
            reserve.left += top_up
            reserve.seen = used
            shown.append(used - reserve.left)
        if pool is not None:
            pool.free += slot_top_up
            pool.seen, pool.known = decision.held, True
            pool.pooling = pool.slot.limit - decision.held >= SHARE
        return shown

    def keep_slot(self, slot: Slot) -> bool:
        """Take back a finished request's slot into the pool; False when it must go to the store
        now (near the cap, or no pool)."""
        pool = self._pools.get(slot.name)
        if pool is None or not pool.pooling:
            return False
        pool.free += 1
        return True

    def give_back(self) -> tuple[list[Settlement], list[tuple[Slot, int]]]:
        """Every unspent unit and free slot, to return to the store."""
        settlements = []
        for reserve in self._reserves.values():
            if reserve.left:
                check = reserve.check
                settlements.append(Settlement((check,), reserve.window * check.seconds, -reserve.left))
                reserve.seen -= reserve.left
                reserve.left = 0
        slots = []
        for pool in self._pools.values():
            if pool.free:
                slots.append((pool.slot, pool.free))
                pool.seen -= pool.free
                pool.free = 0
        return settlements, slots
