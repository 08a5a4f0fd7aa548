"""The shared-memory counters: atomic across processes, windows, slots, and dead holders."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

from modelyard.metering.counters import Check, Slot
from modelyard.metering.shm_counters import ShmCounters

LIMIT = 50
NOW = 1_800_000_000.0


def _hammer(path: str, attempts: int, admitted: multiprocessing.Queue[int]) -> None:
    counters = ShmCounters(Path(path))
    count = 0
    for _ in range(attempts):
        if counters.admit([Check("key:t/k|requests|60", 60, LIMIT, 1)], NOW).admitted:
            count += 1
    admitted.put(count)
    counters.close()


def test_four_processes_admit_exactly_the_limit(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    admitted: multiprocessing.Queue[int] = ctx.Queue()
    procs = [ctx.Process(target=_hammer, args=(str(tmp_path / "c.shm"), LIMIT, admitted)) for _ in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
    assert sum(admitted.get(timeout=5) for _ in procs) == LIMIT


def test_every_check_or_none_is_charged_and_windows_roll_over(tmp_path: Path) -> None:
    counters = ShmCounters(tmp_path / "c.shm")
    loose, tight = Check("a|requests|60", 60, 10, 1), Check("b|tokens|60", 60, 100, 60)
    first = counters.admit([loose, tight], NOW)
    assert first.admitted and [s.used for s in first.standings] == [1, 60]
    refused = counters.admit([loose, tight], NOW)
    assert not refused.admitted and refused.standings[0].check == tight
    assert counters.used("a|requests|60", int(NOW // 60)) == 1, "a refused admission charges nothing"
    counters.finish(first.standings[1:], -50)
    assert counters.admit([loose, tight], NOW).admitted, "a settlement below the estimate gives tokens back"
    assert counters.admit([tight], NOW + 60).standings[0].used == 60, "a new window starts from zero"


def test_slots_are_capped_given_back_and_recovered_from_dead_holders(tmp_path: Path) -> None:
    path = tmp_path / "c.shm"
    counters = ShmCounters(path)
    slot = Slot("concurrency:t/k", 2)
    assert counters.admit([], NOW, slot).admitted and counters.admit([], NOW, slot).admitted
    full = counters.admit([], NOW, slot)
    assert not full.admitted and full.standings == ()
    counters.finish([], 0, slot)
    assert counters.admit([], NOW, slot).admitted
    counters.finish([], 0, slot)
    counters.finish([], 0, slot)
    # a worker that dies holding both slots: the next one to start gives them back
    ctx = multiprocessing.get_context("spawn")
    holder = ctx.Process(target=_hold_and_die, args=(str(path), slot))
    holder.start()
    holder.join(60)
    assert holder.exitcode == 0
    assert not counters.admit([], NOW, slot).admitted, "the dead holder's slots are still taken"
    counters.close()
    fresh = ShmCounters(path)
    assert fresh.admit([], NOW, slot).admitted
    fresh.close()


def _hold_and_die(path: str, slot: Slot) -> None:
    counters = ShmCounters(Path(path))
    taken = [counters.admit([], NOW, slot).admitted for _ in range(2)]
    os._exit(0 if all(taken) else 1)  # no finish, no close: a crash
