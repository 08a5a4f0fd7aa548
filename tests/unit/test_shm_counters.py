"""The shared-memory counters: atomic across processes, windows, slots, and dead holders."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest
from modelyard.metering.counters import Check, Settlement, Slot
from modelyard.metering.shm_counters import ShmCounters

LIMIT = 50
NOW = 1_800_000_000.0


def _hammer(path: str, attempts: int, admitted: multiprocessing.Queue[int], use_flock: bool) -> None:
    counters = ShmCounters(Path(path), use_flock=use_flock)
    count = 0
    for _ in range(attempts):
        if counters.admit([Check("key:t/k|requests|60", 60, LIMIT)], NOW, [1]).admitted:
            count += 1
    admitted.put(count)
    counters.close()


@pytest.mark.parametrize("use_flock", [False, True], ids=["robust-mutex", "flock"])
def test_four_processes_admit_exactly_the_limit(tmp_path: Path, use_flock: bool) -> None:
    ctx = multiprocessing.get_context("spawn")
    admitted: multiprocessing.Queue[int] = ctx.Queue()
    path = str(tmp_path / "c.shm")
    procs = [ctx.Process(target=_hammer, args=(path, LIMIT, admitted, use_flock)) for _ in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
    assert sum(admitted.get(timeout=5) for _ in procs) == LIMIT


def test_every_check_or_none_is_charged_and_windows_roll_over(tmp_path: Path) -> None:
    counters = ShmCounters(tmp_path / "c.shm")
    loose, tight = Check("a|requests|60", 60, 10), Check("b|tokens|60", 60, 100, "tokens")
    first = counters.admit([loose, tight], NOW, [1, 60])
    assert first.admitted and first.used == (1, 60)
    refused = counters.admit([loose, tight], NOW, [1, 60])
    assert not refused.admitted and refused.refused == tight and refused.used == (60,)
    assert counters.used("a|requests|60", int(NOW // 60)) == 1, "a refused admission charges nothing"
    counters.settle([Settlement([tight], NOW, -50)])
    assert counters.admit([loose, tight], NOW, [1, 60]).admitted, (
        "a settlement below the estimate gives tokens back"
    )
    assert counters.used("b|tokens|60", int(NOW // 60)) == 70
    assert counters.admit([tight], NOW + 60, [60]).used == (60,), "a new window starts from zero"


def test_slots_are_capped_given_back_and_recovered_from_dead_holders(tmp_path: Path) -> None:
    path = tmp_path / "c.shm"
    counters = ShmCounters(path)
    slot = Slot("concurrency:t/k", 2)
    assert counters.admit([], NOW, [], slot).admitted and counters.admit([], NOW, [], slot).admitted
    full = counters.admit([], NOW, [], slot)
    assert not full.admitted and full.refused is None
    counters.settle([], [(slot, 1)])
    assert counters.admit([], NOW, [], slot).admitted
    counters.settle([], [(slot, 1)])
    counters.settle([], [(slot, 1)])
    # a worker that dies holding both slots: the next one to start gives them back
    ctx = multiprocessing.get_context("spawn")
    holder = ctx.Process(target=_hold_and_die, args=(str(path), slot))
    holder.start()
    holder.join(60)
    assert holder.exitcode == 0
    assert not counters.admit([], NOW, [], slot).admitted, "the dead holder's slots are still taken"
    counters.close()
    fresh = ShmCounters(path)
    assert fresh.admit([], NOW, [], slot).admitted
    fresh.close()


def _hold_and_die(path: str, slot: Slot) -> None:
    counters = ShmCounters(Path(path))
    taken = [counters.admit([], NOW, [], slot).admitted for _ in range(2)]
    os._exit(0 if all(taken) else 1)  # no finish, no close: a crash


def _lock_and_die(path: str) -> None:
    counters = ShmCounters(Path(path))
    counters._lock.acquire()
    os._exit(0)  # killed inside a critical section


def _admit_once(path: str, result: multiprocessing.Queue[bool]) -> None:
    counters = ShmCounters(Path(path))
    result.put(counters.admit([Check("a|requests|60", 60, 10)], NOW, [1]).admitted)


def test_a_process_that_dies_holding_the_lock_does_not_wedge_the_others(tmp_path: Path) -> None:
    path = str(tmp_path / "c.shm")
    ctx = multiprocessing.get_context("spawn")
    dying = ctx.Process(target=_lock_and_die, args=(path,))
    dying.start()
    dying.join(60)
    result: multiprocessing.Queue[bool] = ctx.Queue()
    survivor = ctx.Process(target=_admit_once, args=(path, result))  # a hang fails the join below
    survivor.start()
    survivor.join(60)
    alive = survivor.is_alive()
    if alive:
        survivor.kill()
    assert not alive, "the lock of a dead process was never given back"
    assert result.get(timeout=5) is True
