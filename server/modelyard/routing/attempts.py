"""Running one request over its plan: failover, retries with backoff, timeouts, breaker bookkeeping.

Each deployment of the plan is tried in order (skipping ejected ones) until one answers; then the
plan is walked again, after an exponential backoff with full jitter that is never shorter than the
failed attempt's Retry-After, until the attempt budget or the deadline runs out. Only trigger errors
(the policy's `fallback_on`) move on; anything else (the client's own 4xx) is returned at once.
A stream is committed when its first chunk arrives; failures before that fall over invisibly.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from modelyard.errors import ClientError, GatewayError, UpstreamError
from modelyard.metering.tracing import NO_TRACING, Tracing
from modelyard.routing.call import CallRecord
from modelyard.routing.deployment import Deployment
from modelyard.routing.health import DeploymentHealth, HealthBoard
from modelyard.routing.policy import Policy
from modelyard.routing.targets import Plan
from modelyard.transport import AttemptLimits, attempt_limits

T = TypeVar("T")
CONNECTION_CODES = frozenset({"upstream_unreachable", "upstream_disconnected"})
Sleep = Callable[[float], Awaitable[None]]


def trigger_of(error: GatewayError) -> str | None:
    """Which `fallback_on` class an error belongs to; None for errors never worth another attempt."""
    if isinstance(error, ClientError):
        return None
    if error.code == "upstream_timeout":
        return "timeout"
    if error.code in CONNECTION_CODES:
        return "connection"
    if error.status == 429:
        return "429"
    if error.status >= 500:
        return "5xx"
    return str(error.status) if error.status in (401, 403, 404, 408) else None


def _timeout_error(deployment: Deployment, what: str) -> UpstreamError:
    return UpstreamError(
        f"Provider '{deployment.provider.name}' did not answer {what} in time.",
        status=504,
        code="upstream_timeout",
        provider=deployment.provider.name,
    )


def _deadline_error() -> GatewayError:
    return GatewayError(
        "The request's deadline passed before an upstream answered.", status=504, code="deadline_exceeded"
    )


def _ejected_error(name: str, wait: float, rate_limited: bool) -> GatewayError:
    if rate_limited:
        return GatewayError(
            f"Every deployment of '{name}' is rate limited by its provider; retry after {wait:.0f} s.",
            status=429,
            code="upstream_rate_limited",
            retry_after=max(1.0, wait),
        )
    return GatewayError(
        f"Every deployment of '{name}' is cooling down after failures; retry later.",
        status=503,
        code="no_healthy_deployment",
        retry_after=max(1.0, wait),
    )


@dataclass
class _Run:
    """One request's walk over its plan."""

    plan: Plan
    record: CallRecord
    board: HealthBoard
    rng: random.Random
    sleep: Sleep
    tried: dict[str, int] = field(default_factory=dict)
    last_error: GatewayError | None = None
    retry_after: dict[str, float] = field(default_factory=dict)

    @property
    def policy(self) -> Policy:
        return self.plan.policy

    @property
    def budget(self) -> int:
        """The policy's attempt budget; by default every deployment of the plan once, plus one retry."""
        return self.policy.max_attempts or len(self.plan.deployments) + 1

    async def next(self) -> Deployment | None:
        """The next deployment to try (after any backoff), or None when the request must give up."""
        while self.record.attempts < self.budget:
            now = self.board.clock()
            remaining = self.record.remaining(now)
            if remaining is not None and remaining <= 0:
                return None
            fresh = [d for d in self.plan.deployments if d.key not in self.tried]
            candidates = fresh or self._by_fewest_tries()
            available = [d for d in candidates if self.board.get(d.key).available(now)]
            if not available:
                if not await self._wait_for_cooldown(candidates, now, remaining):
                    return None
                continue
            deployment = available[0]
            if not fresh and not await self._backoff(deployment, remaining):
                return None
            return deployment
        return None

    def _by_fewest_tries(self) -> list[Deployment]:
        return sorted(self.plan.deployments, key=lambda d: self.tried.get(d.key, 0))

    async def _backoff(self, deployment: Deployment, remaining: float | None) -> bool:
        retry = self.tried.get(deployment.key, 0)
        retry_after = self.retry_after.get(deployment.key, 0.0)
        if retry_after > self.policy.backoff.max:
            return False  # longer than the gateway waits: the client gets the error and its Retry-After
        delay = max(retry_after, self.rng.uniform(0, self.policy.backoff.delay(retry)))
        if remaining is not None and delay >= remaining:
            return False
        if delay > 0:
            await self.sleep(delay)
        return True

    async def _wait_for_cooldown(
        self, candidates: list[Deployment], now: float, remaining: float | None
    ) -> bool:
        wait = min(self.board.get(d.key).remaining_cooldown(now) for d in candidates)
        if wait > self.policy.backoff.max or (remaining is not None and wait >= remaining):
            if self.last_error is None:
                rate_limited = all(self.board.get(d.key).rate_limited for d in candidates)
                self.last_error = _ejected_error(self.plan.name, wait, rate_limited)
            return False
        await self.sleep(max(wait, 0.001))
        return True

    def start(self, deployment: Deployment) -> tuple[DeploymentHealth, bool, AttemptLimits]:
        self.record.attempts += 1
        self.tried[deployment.key] = self.tried.get(deployment.key, 0) + 1
        health = self.board.get(deployment.key)
        now = self.board.clock()
        timeouts = self.policy.timeouts
        total = timeouts.total
        remaining = self.record.remaining(now)
        if remaining is not None:
            total = min(total, remaining)
        limits = AttemptLimits(timeouts.connect, min(timeouts.first_token, total), now + total)
        return health, health.begin(), limits

    def failed(
        self, deployment: Deployment, health: DeploymentHealth, probe: bool, error: GatewayError
    ) -> None:
        """Book the failure; re-raise it unless it is worth another attempt."""
        trigger = trigger_of(error)
        if trigger in ("429", "5xx", "timeout", "connection"):
            health.fail(self.board.clock(), error.retry_after if error.status == 429 else None, probe)
        else:
            health.release(probe)
        if trigger is None or trigger not in self.policy.fallback_on:
            raise error
        self.last_error = error
        if error.retry_after:
            self.retry_after[deployment.key] = error.retry_after

    def give_up(self) -> GatewayError:
        if self.last_error is not None:
            return self.last_error
        return _deadline_error()


class Attempts:
    """The router's executor; one per process, sharing the health board."""

    def __init__(
        self,
        board: HealthBoard,
        rng: random.Random,
        sleep: Sleep = asyncio.sleep,
        tracing: Tracing = NO_TRACING,
    ) -> None:
        self._board = board
        self._rng = rng
        self._sleep = sleep
        self._tracing = tracing

    def _span(self, record: CallRecord, deployment: Deployment) -> AbstractContextManager[None]:
        return self._tracing.attempt(
            record.span, record.attempts, deployment.label, deployment.provider.type_name
        )

    def _run(self, plan: Plan, record: CallRecord) -> _Run:
        return _Run(plan, record, self._board, self._rng, self._sleep)

    async def unary(self, plan: Plan, record: CallRecord, call: Callable[[Deployment], Awaitable[T]]) -> T:
        run = self._run(plan, record)
        while (deployment := await run.next()) is not None:
            health, probe, limits = run.start(deployment)
            started = self._board.clock()
            token = attempt_limits.set(limits)
            try:
                with self._span(record, deployment):
                    async with asyncio.timeout(limits.deadline - started):
                        result = await call(deployment)
            except TimeoutError:
                run.failed(deployment, health, probe, _timeout_error(deployment, "in full"))
                continue
            except GatewayError as error:
                run.failed(deployment, health, probe, error)
                continue
            except BaseException:
                health.release(probe)
                raise
            finally:
                attempt_limits.reset(token)
                record.upstream_seconds += self._board.clock() - started
            elapsed = self._board.clock() - started
            health.succeed(self._board.clock(), elapsed, probe)
            record.deployment, record.answered_at = deployment, time.monotonic()
            return result
        raise run.give_up()

    async def stream(
        self, plan: Plan, record: CallRecord, open_stream: Callable[[Deployment], AsyncIterator[T]]
    ) -> AsyncIterator[T]:
        """Wait for a first chunk from some deployment, then return the committed stream."""
        run = self._run(plan, record)
        while (deployment := await run.next()) is not None:
            health, probe, limits = run.start(deployment)
            started = self._board.clock()
            token = attempt_limits.set(limits)
            iterator: AsyncIterator[T] = _EMPTY
            try:
                with self._span(record, deployment):
                    iterator = aiter(open_stream(deployment))
                    async with asyncio.timeout(limits.first_byte):
                        first = await anext(iterator)
            except StopAsyncIteration:
                first, empty = None, True
            except TimeoutError:
                await _close(iterator)
                run.failed(deployment, health, probe, _timeout_error(deployment, "a first chunk"))
                continue
            except GatewayError as error:
                await _close(iterator)
                run.failed(deployment, health, probe, error)
                continue
            except BaseException:
                await _close(iterator)
                health.release(probe)
                raise
            else:
                empty = False
            finally:
                attempt_limits.reset(token)
                record.upstream_seconds += self._board.clock() - started
            ttft = self._board.clock() - started
            record.deployment, record.answered_at = deployment, time.monotonic()
            return self._committed(iterator, first, empty, health, probe, ttft)
        raise run.give_up()

    async def _committed(
        self,
        iterator: AsyncIterator[T],
        first: T | None,
        empty: bool,
        health: DeploymentHealth,
        probe: bool,
        ttft: float,
    ) -> AsyncIterator[T]:
        try:
            if not empty:
                yield first  # type: ignore[misc]
                async for item in iterator:
                    yield item
        except GatewayError as error:
            if trigger_of(error) in ("429", "5xx", "timeout", "connection"):
                health.fail(self._board.clock(), None, probe)
            else:
                health.release(probe)
            raise
        except BaseException:
            health.release(probe)
            await _close(iterator)
            raise
        health.succeed(self._board.clock(), ttft, probe)


async def _nothing() -> AsyncIterator[Any]:
    return
    yield


_EMPTY: AsyncIterator[Any] = _nothing()


async def _close(iterator: AsyncIterator[object]) -> None:
    closer = getattr(iterator, "aclose", None)
    if closer is not None:
        with contextlib.suppress(Exception):
            await closer()
