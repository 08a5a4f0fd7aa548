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
class _Reserve:
    check: Check
    window: int
    left: int = 0
    """Charged to the store and not spent yet."""
    seen: int = 0
    """The counter's value in the store after this worker's last charge to it."""


@dataclass(slots=True)
class _Pool:
    slot: Slot
    free: int = 0
    """Slots this worker holds in the store and no request of its uses."""
    seen: int = 0
    """The slot's holders after this worker's last admission in the store."""
    pooling: bool = False
    """Whether finished requests' slots stay here (the cap was far from reached)."""


class Reserves:
    def __init__(self) -> None:
        self._reserves: dict[str, _Reserve] = {}
        self._pools: dict[str, _Pool] = {}

    def take(
        self, checks: Sequence[Check], costs: Sequence[int], at: float, slot: Slot | None
    ) -> tuple[int, ...] | None:
        """Admit from this worker's reserves: each counter's value as the headers report it, or None
        when a reserve falls short (nothing is taken then)."""
        found = []
        for check, cost in zip(checks, costs, strict=True):
            reserve = self._reserves.get(check.name)
            if reserve is None or reserve.left < cost or reserve.window != check.window(at):
                return None
            found.append(reserve)
        if slot is not None:
            pool = self._pools.get(slot.name)
            if pool is None or pool.free < 1:
                return None
            pool.free -= 1
        for reserve, cost in zip(found, costs, strict=True):
            reserve.left -= cost
        return tuple(reserve.seen - reserve.left for reserve in found)

    def top_ups(self, checks: Sequence[Check], costs: Sequence[int], at: float) -> list[int]:
        """What to charge ahead, per counter: nothing until its value in this window is known."""
        top_ups = []
        for check, cost in zip(checks, costs, strict=True):
            reserve = self._reserves.get(check.name)
            if reserve is None or reserve.window != check.window(at):
                top_ups.append(0)
                continue
            top_ups.append(max(0, min((check.limit - reserve.seen) // SHARE, RESERVE_REQUESTS * cost)))
        return top_ups

    def slot_top_up(self, slot: Slot | None) -> int:
        pool = self._pools.get(slot.name) if slot is not None else None
        if slot is None or pool is None:
            return 0
        return max(0, min((slot.limit - pool.seen) // SHARE, RESERVE_SLOTS))

    def charged(
        self,
        checks: Sequence[Check],
        at: float,
        top_ups: Sequence[int],
        decision: Decision,
        slot: Slot | None,
        slot_top_up: int,
    ) -> tuple[int, ...]:
        """Keep what an admission in the store charged ahead; the counters as the headers report them."""
        shown = []
        for check, top_up, used in zip(checks, top_ups, decision.used, strict=True):
            window = check.window(at)
            reserve = self._reserves.get(check.name)
            if reserve is None or reserve.window != window:
                reserve = self._reserves[check.name] = _Reserve(check, window)
            reserve.left += top_up
            reserve.seen = used
            shown.append(used - reserve.left)
        if slot is not None:
            pool = self._pools.get(slot.name)
            if pool is None:
                pool = self._pools[slot.name] = _Pool(slot)
            pool.free += slot_top_up
            pool.seen = decision.held
            pool.pooling = slot.limit - decision.held >= SHARE
        return tuple(shown)

    def keep_slot(self, slot: Slot) -> bool:
        """Take back a finished request's slot into the pool; False when it must go to the store
        now (near the cap, or no pool)."""
        pool = self._pools.get(slot.name)
        if pool is None or not pool.pooling:
            return False
        pool.free += 1
        return True

    def give_back(self, now: float) -> tuple[list[Settlement], list[tuple[Slot, int]]]:
        """Every unspent unit and free slot, to return to the store; reserves of ended windows are
        forgotten."""
        settlements = []
        for name, reserve in list(self._reserves.items()):
            check = reserve.check
            if reserve.left:
                settlements.append(Settlement((check,), reserve.window * check.seconds, -reserve.left))
                reserve.seen -= reserve.left
                reserve.left = 0
            if reserve.window != check.window(now):
                del self._reserves[name]
        slots = []
        for pool in self._pools.values():
            if pool.free:
                slots.append((pool.slot, pool.free))
                pool.seen -= pool.free
                pool.free = 0
        return settlements, slots
