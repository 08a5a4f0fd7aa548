"""The attempt loop: failover order, retry budget, backoff and Retry-After, deadlines, streams."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable

import pytest
from modelyard.errors import ClientError, GatewayError, UpstreamError
from modelyard.providers.base import Provider
from modelyard.routing.attempts import Attempts, trigger_of
from modelyard.routing.call import CallRecord
from modelyard.routing.deployment import Deployment
from modelyard.routing.health import BreakerState, HealthBoard
from modelyard.routing.policy import DEFAULT_POLICY, BreakerConfig, Policy, PolicyConfig, RoutingConfig
from modelyard.routing.targets import Plan

PROVIDER = Provider("p", "demo", None, None)  # type: ignore[arg-type]


def _deployments(*names: str) -> list[Deployment]:
    return [Deployment(alias="a", model_id=name, provider=PROVIDER) for name in names]


def _upstream(status: int, retry_after: float | None = None, code: str | None = None) -> UpstreamError:
    return UpstreamError("upstream failed", status=status, retry_after=retry_after, code=code, provider="p")


class Harness:
    """Attempts over scripted deployments; sleeping advances a fake breaker clock."""

    def __init__(self, policy: Policy = DEFAULT_POLICY, **breaker: float) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self.board = HealthBoard(BreakerConfig(**breaker), lambda: self.now)  # type: ignore[arg-type]
        self.attempts = Attempts(self.board, random.Random(7), self._sleep)
        self.policy = policy
        self.calls: list[str] = []

    async def _sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def plan(self, *names: str) -> Plan:
        return Plan("a", self.policy, _deployments(*names))

    def run(self, plan: Plan, script: dict[str, list[object]], record: CallRecord | None = None) -> object:
        async def call(deployment: Deployment) -> object:
            self.calls.append(deployment.model_id)
            step = script[deployment.model_id].pop(0)
            if isinstance(step, BaseException):
                raise step
            return step

        return asyncio.run(self.attempts.unary(plan, record or CallRecord(), call))


def test_fails_over_in_plan_order_and_reports_the_serving_deployment() -> None:
    harness = Harness()
    record = CallRecord()
    result = harness.run(
        harness.plan("a", "b", "c"), {"a": [_upstream(500)], "b": [_upstream(503)], "c": ["ok"]}, record
    )
    assert result == "ok"
    assert harness.calls == ["a", "b", "c"]
    assert record.attempts == 3 and record.deployment is not None and record.deployment.model_id == "c"
    assert harness.sleeps == [], "moving to another deployment does not back off"


@pytest.mark.parametrize(
    "error",
    [
        ClientError("bad", status=400),
        _upstream(400),
        _upstream(401),
        _upstream(403),
        _upstream(404),
        _upstream(413),
        _upstream(422),
    ],
    ids=lambda e: f"{type(e).__name__}-{e.status}",
)
def test_client_mistakes_are_returned_at_once(error: GatewayError) -> None:
    harness = Harness()
    with pytest.raises(GatewayError) as caught:
        harness.run(harness.plan("a", "b"), {"a": [error], "b": ["ok"]})
    assert caught.value is error
    assert harness.calls == ["a"]
    assert harness.board.get(PROVIDER.name + "/a").failures == 0, "not held against the deployment"


def test_the_attempt_budget_bounds_every_request() -> None:
    harness = Harness(Policy(max_attempts=2))
    with pytest.raises(UpstreamError):
        harness.run(harness.plan("a", "b", "c"), {n: [_upstream(500)] * 3 for n in "abc"})
    assert harness.calls == ["a", "b"]


def test_default_budget_is_each_deployment_once_plus_one_retry_with_jittered_backoff() -> None:
    harness = Harness()
    with pytest.raises(UpstreamError) as caught:
        harness.run(harness.plan("a", "b"), {n: [_upstream(502)] * 3 for n in "ab"})
    assert caught.value.status == 502
    assert harness.calls == ["a", "b", "a"]
    assert len(harness.sleeps) == 1 and 0 <= harness.sleeps[0] <= Policy().backoff.delay(1)


def test_a_single_flaky_deployment_is_retried_after_backoff() -> None:
    harness = Harness(Policy(max_attempts=4))
    assert harness.run(harness.plan("a"), {"a": [_upstream(503), _upstream(503), "ok"]}) == "ok"
    assert harness.calls == ["a", "a", "a"]
    backoff = Policy().backoff
    assert [s <= backoff.delay(i) for i, s in enumerate(harness.sleeps, start=1)] == [True, True]


def test_retry_after_is_honoured_before_the_same_deployment_is_tried_again() -> None:
    harness = Harness(Policy(max_attempts=3))
    assert harness.run(harness.plan("a"), {"a": [_upstream(429, retry_after=1.5), "ok"]}) == "ok"
    assert harness.calls == ["a", "a"]
    assert sum(harness.sleeps) >= 1.5


def test_a_retry_after_longer_than_the_backoff_cap_returns_the_429_with_it() -> None:
    harness = Harness(Policy(max_attempts=3))
    with pytest.raises(UpstreamError) as caught:
        harness.run(harness.plan("a"), {"a": [_upstream(429, retry_after=7), "ok"]})
    assert (caught.value.status, caught.value.retry_after) == (429, 7)
    assert harness.calls == ["a"]
    assert harness.board.get("p/a").state is BreakerState.OPEN


def test_a_429_moves_on_to_the_next_deployment_at_once() -> None:
    harness = Harness()
    assert harness.run(harness.plan("a", "b"), {"a": [_upstream(429, retry_after=30)], "b": ["ok"]}) == "ok"
    assert harness.sleeps == []


def test_ejected_deployments_are_skipped_and_all_ejected_answers_503_with_retry_after() -> None:
    harness = Harness(consecutive_failures=1, cooldown=30)
    with pytest.raises(UpstreamError):
        harness.run(harness.plan("a", "b"), {n: [_upstream(500)] * 2 for n in "ab"})
    harness.calls.clear()
    with pytest.raises(GatewayError) as caught:
        harness.run(harness.plan("a", "b"), {n: ["ok"] for n in "ab"})
    assert harness.calls == []
    assert (caught.value.status, caught.value.code) == (503, "no_healthy_deployment")
    assert caught.value.retry_after == pytest.approx(30)


def test_fallback_on_limits_which_errors_move_on() -> None:
    policy = RoutingConfig(defaults=PolicyConfig(fallback_on=("5xx",))).resolve("a")
    harness = Harness(policy)
    with pytest.raises(UpstreamError) as caught:
        harness.run(harness.plan("a", "b"), {"a": [_upstream(429)], "b": ["ok"]})
    assert caught.value.status == 429 and harness.calls == ["a"]


@pytest.mark.parametrize(
    ("error", "trigger"),
    [
        (_upstream(429), "429"),
        (_upstream(500), "5xx"),
        (_upstream(502), "5xx"),
        (_upstream(503), "5xx"),
        (_upstream(504, code="upstream_timeout"), "timeout"),
        (_upstream(502, code="upstream_unreachable"), "connection"),
        (_upstream(502, code="upstream_disconnected"), "connection"),
        (GatewayError("creds", status=503), "5xx"),
        (_upstream(401), "401"),
        (_upstream(400), None),
        (ClientError("x", status=429), None),
    ],
)
def test_trigger_classes(error: GatewayError, trigger: str | None) -> None:
    assert trigger_of(error) == trigger


def test_the_deadline_caps_a_hanging_attempt_and_nothing_waits_past_it() -> None:
    board = HealthBoard(BreakerConfig())
    attempts = Attempts(board, random.Random(1))
    plan = Plan("a", Policy(), _deployments("slow", "slower"))
    record = CallRecord(deadline=time.monotonic() + 0.2)

    async def hang(deployment: Deployment) -> object:
        await asyncio.sleep(30)
        return None

    started = time.monotonic()
    with pytest.raises(GatewayError) as caught:
        asyncio.run(attempts.unary(plan, record, hang))
    assert time.monotonic() - started < 1.0
    assert caught.value.status == 504


def test_first_token_timeout_fails_over_a_stalled_stream() -> None:
    board = HealthBoard(BreakerConfig())
    attempts = Attempts(board, random.Random(1))
    policy = RoutingConfig(defaults=PolicyConfig(timeouts={"first_token": 0.1})).resolve("a")  # type: ignore[arg-type]
    plan = Plan("a", policy, _deployments("stall", "fine"))
    record = CallRecord()

    def open_stream(deployment: Deployment) -> AsyncIterator[str]:
        async def chunks() -> AsyncIterator[str]:
            if deployment.model_id == "stall":
                await asyncio.sleep(30)
            for word in ("a", "b"):
                yield word

        return chunks()

    async def consume() -> list[str]:
        return [chunk async for chunk in await attempts.stream(plan, record, open_stream)]

    assert asyncio.run(consume()) == ["a", "b"]
    assert record.attempts == 2 and record.deployment is not None and record.deployment.model_id == "fine"
    assert board.get("p/stall").failures == 1 and board.get("p/fine").successes == 1


def _stream_of(steps: list[object]) -> Callable[[Deployment], AsyncIterator[object]]:
    def open_stream(deployment: Deployment) -> AsyncIterator[object]:
        async def chunks() -> AsyncIterator[object]:
            for step in steps:
                if isinstance(step, BaseException):
                    raise step
                yield step

        return chunks()

    return open_stream


def test_a_failure_after_the_first_chunk_is_not_retried() -> None:
    harness = Harness()
    plan = harness.plan("a", "b")

    async def consume() -> list[object]:
        seen: list[object] = []
        stream = await harness.attempts.stream(plan, CallRecord(), _stream_of(["x", _upstream(502)]))
        with pytest.raises(UpstreamError):
            async for chunk in stream:
                seen.append(chunk)
        return seen

    assert asyncio.run(consume()) == ["x"]
    assert harness.board.get("p/a").failures == 1 and harness.board.get("p/b").in_flight == 0


def test_least_in_flight_tracks_open_streams() -> None:
    harness = Harness()
    plan = harness.plan("a")

    async def scenario() -> tuple[int, int]:
        stream = await harness.attempts.stream(plan, CallRecord(), _stream_of(["x", "y"]))
        during = harness.board.get("p/a").in_flight
        _ = [chunk async for chunk in stream]
        return during, harness.board.get("p/a").in_flight

    assert asyncio.run(scenario()) == (1, 0)


def test_client_disconnect_releases_the_deployment_without_blame() -> None:
    harness = Harness()

    async def scenario() -> None:
        stream = await harness.attempts.stream(harness.plan("a"), CallRecord(), _stream_of(["x", "y", "z"]))
        async for _ in stream:
            break
        await stream.aclose()  # type: ignore[attr-defined]

    asyncio.run(scenario())
    entry = harness.board.get("p/a")
    assert (entry.in_flight, entry.failures, entry.successes) == (0, 0, 0)


def test_failures_spread_over_requests_open_the_breaker_and_traffic_moves() -> None:
    harness = Harness(consecutive_failures=3, cooldown=60)
    served = Counter()
    for _ in range(20):
        result = harness.run(harness.plan("bad", "good"), {"bad": [_upstream(500)], "good": ["good"]})
        served[result] += 1
    assert served == {"good": 20}
    assert harness.calls.count("bad") == 3, "ejected after 3 failures, then skipped"


def test_while_every_deployment_cools_down_from_a_429_clients_get_a_429_with_the_remaining_wait() -> None:
    harness = Harness()
    with pytest.raises(UpstreamError):
        harness.run(harness.plan("a"), {"a": [_upstream(429, retry_after=20)]})
    harness.now += 5
    with pytest.raises(GatewayError) as caught:
        harness.run(harness.plan("a"), {"a": ["ok"]})
    assert (caught.value.status, caught.value.code) == (429, "upstream_rate_limited")
    assert caught.value.retry_after == pytest.approx(15)
    assert caught.value.type == "rate_limit_error"


def test_eject_on_429_can_be_switched_off() -> None:
    harness = Harness(eject_on_429=False)  # type: ignore[arg-type]
    with pytest.raises(UpstreamError):
        harness.run(harness.plan("a"), {"a": [_upstream(429, retry_after=20)]})
    assert harness.run(harness.plan("a"), {"a": ["ok"]}) == "ok"


def test_a_stream_refused_before_it_starts_leaves_nothing_in_flight() -> None:
    harness = Harness()

    def refuse(deployment: Deployment) -> AsyncIterator[object]:
        raise ClientError("Provider 'p' does not support stream.", status=400)

    with pytest.raises(ClientError):
        asyncio.run(harness.attempts.stream(harness.plan("a", "b"), CallRecord(), refuse))
    assert [harness.board.get(k).in_flight for k in ("p/a", "p/b")] == [0, 0]
