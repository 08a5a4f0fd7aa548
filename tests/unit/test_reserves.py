"""Reserves: far from a limit a worker admits from units it charged ahead; the limit still holds
as a whole, near it every admission goes to the store, and unspent units go back."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from modelyard.metering.counters import Check, Decision, Settlement, Slot
from modelyard.metering.limiter import RateLimited, RateLimiter, limit_plan
from modelyard.metering.meter import AccessLog, Meter
from modelyard.metering.prices import PriceTable
from modelyard.metering.settings import LimitsConfig
from modelyard.metering.shm_counters import ShmCounters
from modelyard.routing.call import CallRecord
from modelyard.tenancy import Principal

NOW = 1_800_000_030.0
ALICE = Principal("alice", "t1", frozenset({"inference"}))
WINDOW = int(NOW // 60)


class CountingStore:
    """The shared counters, counting how often a worker goes to them."""

    def __init__(self, store: ShmCounters) -> None:
        self.store = store
        self.admissions = 0

    def admit(
        self,
        checks: Sequence[Check],
        at: float,
        costs: Sequence[int],
        slot: Slot | None = None,
        slots: int = 1,
    ) -> Decision:
        self.admissions += 1
        return self.store.admit(checks, at, costs, slot, slots)

    def settle(self, settlements: Sequence[Settlement], slots: Sequence[tuple[Slot, int]] = ()) -> None:
        self.store.settle(settlements, slots)

    def close(self) -> None:
        self.store.close()


def _workers(
    tmp_path: Path, count: int, **limits: object
) -> tuple[ShmCounters, list[RateLimiter], list[CountingStore]]:
    """`count` limiters over one counters file, as the workers of one host have."""
    plan = limit_plan(LimitsConfig.model_validate(limits))
    stores = [CountingStore(ShmCounters(tmp_path / "c.shm")) for _ in range(count)]
    return ShmCounters(tmp_path / "c.shm"), [RateLimiter(s, plan, clock=lambda: NOW) for s in stores], stores


def test_far_from_the_limit_most_admissions_skip_the_store_and_unspent_units_go_back(tmp_path: Path) -> None:
    shared, (limiter,), (store,) = _workers(
        tmp_path, 1, rules=[{"scope": "key", "requests": 1_000_000, "per": "minute"}]
    )
    admissions = [limiter.admit(ALICE, "m", 10) for _ in range(1000)]
    assert store.admissions < 20, "reserves should serve most admissions"
    remaining = [int(dict(a.headers)["x-ratelimit-remaining-requests"]) for a in admissions]
    assert remaining == list(range(999_999, 998_999, -1)), "headers count only what was spent"
    assert shared.used("key:t1/alice|requests|60", WINDOW) > 1000, "units were charged ahead"
    limiter.settle([(a, None) for a in admissions])
    assert shared.used("key:t1/alice|requests|60", WINDOW) == 1000, "unspent units went back"


def test_two_workers_admit_exactly_a_limit_their_reserves_could_share(tmp_path: Path) -> None:
    shared, workers, _ = _workers(tmp_path, 2, rules=[{"scope": "key", "requests": 5000, "per": "minute"}])
    admitted = refused = 0
    for turn in range(20_000):
        worker = workers[turn % 2]
        try:
            worker.admit(ALICE, "m", 1)
            admitted += 1
        except RateLimited:
            refused += 1
        if turn % 500 == 499:  # the meter's drain, once per interval
            for each in workers:
                each.settle([])
    assert admitted == 5000 and shared.used("key:t1/alice|requests|60", WINDOW) == 5000


def test_a_reload_lowering_a_limit_is_not_overrun_from_units_charged_ahead(tmp_path: Path) -> None:
    shared, (limiter,), _ = _workers(
        tmp_path, 1, rules=[{"scope": "key", "requests": 1_000_000, "per": "minute"}]
    )
    for _ in range(100):
        limiter.admit(ALICE, "m", 1)
    assert shared.used("key:t1/alice|requests|60", WINDOW) > 100, "units were charged ahead"
    limiter.use_plan(
        limit_plan(
            LimitsConfig.model_validate({"rules": [{"scope": "key", "requests": 150, "per": "minute"}]})
        )
    )
    assert shared.used("key:t1/alice|requests|60", WINDOW) == 100, "the reserve went back on reload"
    admitted = 0
    for _ in range(100):
        try:
            limiter.admit(ALICE, "m", 1)
            admitted += 1
        except RateLimited:
            pass
    assert admitted == 50 and shared.used("key:t1/alice|requests|60", WINDOW) == 150


def test_near_the_limit_every_admission_is_checked_in_the_store(tmp_path: Path) -> None:
    _, workers, stores = _workers(tmp_path, 2, rules=[{"scope": "key", "requests": 40, "per": "minute"}])
    results = []
    for turn in range(60):
        try:
            workers[turn % 2].admit(ALICE, "m", 1)
            results.append(True)
        except RateLimited:
            results.append(False)
    assert results == [True] * 40 + [False] * 20, "the first 40 to ask get the 40 units, whoever asks"
    assert sum(store.admissions for store in stores) >= 60


def test_slots_pool_only_far_from_the_cap_and_go_back_to_the_store(tmp_path: Path) -> None:
    slot = Slot("concurrency:t1/alice", 3)
    shared, (first, second), _ = _workers(tmp_path, 2, rules=[], concurrent_per_key=3)
    held = [first.admit(ALICE, "m", 1) for _ in range(3)]
    with pytest.raises(RateLimited):
        second.admit(ALICE, "m", 1)
    first.release(held[0])  # a small cap: the slot goes straight back, for any worker to take
    second.admit(ALICE, "m", 1)
    assert not shared.admit([], NOW, [], slot).admitted

    big = Slot("concurrency:t1/bob", 100_000)
    bob = Principal("bob", "t1", frozenset())
    (tmp_path / "big").mkdir()
    _, (pooled,), _ = _workers(tmp_path / "big", 1, rules=[], concurrent_per_key=100_000)
    admissions = [pooled.admit(bob, "m", 1) for _ in range(50)]
    for admission in admissions:
        pooled.release(admission)
    pooled.settle([])
    big_store = ShmCounters(tmp_path / "big" / "c.shm")
    assert big_store.admit([], NOW, [], big, 100_000).admitted, "every slot came back to the store"


class BrokenStore(CountingStore):
    def settle(self, settlements: Sequence[Settlement], slots: Sequence[tuple[Slot, int]] = ()) -> None:
        raise OSError("the counters file went away")


def test_a_failing_settlement_loses_no_record_and_stops_no_drain(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    plan = limit_plan(
        LimitsConfig.model_validate({"rules": [{"scope": "key", "tokens": 10**9, "per": "hour"}]})
    )
    limiter = RateLimiter(BrokenStore(ShmCounters(tmp_path / "c.shm")), plan)
    out = io.BytesIO()
    meter = Meter(limiter, None, PriceTable({}), metrics_on=False, access_log=AccessLog(out))
    for request_id in ("r1", "r2"):
        ticket = meter.begin(ALICE, "m", "chat", 10, CallRecord(request_id=request_id), stream=False)
        meter.finish(ticket)
        meter.drain()
    assert [json.loads(line)["request_id"] for line in out.getvalue().splitlines()] == ["r1", "r2"]
    assert caplog.text.count("settling rate-limit charges failed") == 2
