"""The circuit breaker's state machine, on a fake clock."""

from __future__ import annotations

import pytest
from modelyard.routing.health import BreakerState, HealthBoard
from modelyard.routing.policy import BreakerConfig


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _board(**settings: float) -> tuple[HealthBoard, Clock]:
    clock = Clock()
    return HealthBoard(BreakerConfig(**settings), clock), clock  # type: ignore[arg-type]


def _fail(board: HealthBoard, clock: Clock, times: int, retry_after: float | None = None) -> None:
    entry = board.get("d")
    for _ in range(times):
        probe = entry.begin()
        entry.fail(clock(), retry_after, probe)


def _succeed(board: HealthBoard, clock: Clock) -> None:
    entry = board.get("d")
    probe = entry.begin()
    entry.succeed(clock(), 0.01, probe)


def test_opens_after_consecutive_failures_cools_down_half_opens_and_closes() -> None:
    board, clock = _board(consecutive_failures=3, cooldown=5)
    entry = board.get("d")
    _fail(board, clock, 2)
    assert entry.available(clock()) and entry.state is BreakerState.CLOSED
    _fail(board, clock, 1)
    assert entry.state is BreakerState.OPEN and not entry.available(clock())
    clock.now += 4.9
    assert not entry.available(clock())
    clock.now += 0.2
    assert entry.available(clock()) and entry.state is BreakerState.HALF_OPEN
    _succeed(board, clock)
    assert entry.state is BreakerState.CLOSED and entry.consecutive_failures == 0


def test_a_success_resets_the_consecutive_count() -> None:
    board, clock = _board(consecutive_failures=3, min_requests=100)
    _fail(board, clock, 2)
    _succeed(board, clock)
    _fail(board, clock, 2)
    assert board.get("d").state is BreakerState.CLOSED


def test_half_open_lets_exactly_one_probe_through_under_concurrency() -> None:
    board, clock = _board(consecutive_failures=1, cooldown=1)
    entry = board.get("d")
    _fail(board, clock, 1)
    clock.now += 1.5
    admitted = []
    for _ in range(10):
        if entry.available(clock()):
            admitted.append(entry.begin())
    assert admitted == [True]
    entry.fail(clock(), None, probe=True)
    assert entry.state is BreakerState.OPEN


def test_cooldown_doubles_on_each_reejection_up_to_the_maximum() -> None:
    board, clock = _board(consecutive_failures=1, cooldown=2, max_cooldown=7)
    entry = board.get("d")
    expected = [2, 4, 7, 7]
    for cooldown in expected:
        _fail(board, clock, 1)
        assert entry.remaining_cooldown(clock()) == pytest.approx(cooldown)
        clock.now += cooldown
        assert entry.available(clock()) and entry.state is BreakerState.HALF_OPEN
    _succeed(board, clock)
    _fail(board, clock, 1)
    assert entry.remaining_cooldown(clock()) == pytest.approx(2), "a close resets the growth"


def test_failure_ratio_over_the_window_opens_it() -> None:
    board, clock = _board(consecutive_failures=100, failure_ratio=0.5, min_requests=10, window=30)
    entry = board.get("d")
    for _ in range(5):
        _succeed(board, clock)
        _fail(board, clock, 1)
        clock.now += 1
    assert entry.state is BreakerState.OPEN


def test_old_outcomes_leave_the_window() -> None:
    board, clock = _board(consecutive_failures=100, failure_ratio=0.5, min_requests=10, window=30)
    entry = board.get("d")
    _fail(board, clock, 4)
    clock.now += 31
    for _ in range(4):
        _succeed(board, clock)
        _fail(board, clock, 1)
    _succeed(board, clock)
    _succeed(board, clock)
    assert entry.state is BreakerState.CLOSED


def test_a_429_cools_down_at_once_for_its_retry_after() -> None:
    board, clock = _board(consecutive_failures=5, cooldown=1)
    entry = board.get("d")
    _fail(board, clock, 1, retry_after=7)
    assert entry.state is BreakerState.OPEN
    assert entry.remaining_cooldown(clock()) == pytest.approx(7)


def test_release_neither_counts_nor_keeps_the_probe() -> None:
    board, clock = _board(consecutive_failures=1, cooldown=1)
    entry = board.get("d")
    _fail(board, clock, 1)
    clock.now += 1
    assert entry.available(clock())
    entry.release(entry.begin())
    assert entry.state is BreakerState.HALF_OPEN and entry.available(clock()) and entry.in_flight == 0


def test_snapshot_reports_state_counts_and_cooldown() -> None:
    board, clock = _board(consecutive_failures=2, cooldown=3)
    _succeed(board, clock)
    _fail(board, clock, 2)
    (snapshot,) = board.snapshot(["d"])
    assert (snapshot.state, snapshot.successes, snapshot.failures, snapshot.ejections) == ("open", 1, 2, 1)
    assert snapshot.cooldown_remaining == pytest.approx(3)
    assert snapshot.ewma_ttft == pytest.approx(0.01)
