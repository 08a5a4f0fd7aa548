"""Balancing strategies and route splits over deployments (integration-level checks are in
tests/test_routing.py)."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from modelyard.providers.base import Provider
from modelyard.routing.deployment import Deployment
from modelyard.routing.health import HealthBoard
from modelyard.routing.policy import BreakerConfig, Policy
from modelyard.routing.strategies import LeastInFlight, LowestLatency, TrafficSplit, make_balancer
from modelyard.routing.targets import Pool, Router, Split

PROVIDER = Provider("p", "demo", None, None)  # type: ignore[arg-type]


def _deployments(weights: dict[str, int]) -> list[Deployment]:
    return [Deployment(alias="a", model_id=name, provider=PROVIDER, weight=w) for name, w in weights.items()]


def test_least_in_flight_prefers_the_idle_and_rotates_ties() -> None:
    board = HealthBoard(BreakerConfig())
    balancer = LeastInFlight(_deployments({"a": 1, "b": 1, "c": 1}), board)
    assert Counter(balancer.order()[0].model_id for _ in range(30)) == {"a": 10, "b": 10, "c": 10}
    board.get("p/a").in_flight = 3
    board.get("p/b").in_flight = 1
    assert {balancer.order()[0].model_id for _ in range(10)} == {"c"}
    assert [d.model_id for d in balancer.order()] == ["c", "b", "a"]


def test_least_in_flight_weighs_capacity() -> None:
    board = HealthBoard(BreakerConfig())
    balancer = LeastInFlight(_deployments({"big": 4, "small": 1}), board)
    board.get("p/big").in_flight = 3
    board.get("p/small").in_flight = 1
    assert balancer.order()[0].model_id == "big"


def test_lowest_latency_measures_everyone_first_then_prefers_the_fastest() -> None:
    board = HealthBoard(BreakerConfig())
    balancer = LowestLatency(_deployments({"slow": 1, "fast": 1, "mid": 1}), board, random.Random(3))
    assert balancer.order()[0].model_id in {"slow", "fast", "mid"}
    for key, ttft in (("p/slow", 0.5), ("p/fast", 0.05)):
        entry = board.get(key)
        entry.succeed(0, ttft, entry.begin())
    assert balancer.order()[0].model_id == "mid", "unmeasured goes first"
    entry = board.get("p/mid")
    entry.succeed(0, 0.2, entry.begin())
    picks = Counter(balancer.order()[0].model_id for _ in range(1000))
    assert picks["fast"] >= 900
    assert picks["slow"] + picks["mid"] > 0, "some exploration keeps the others measured"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_traffic_split_is_within_3_percent_over_2000_and_replays_under_a_seed(seed: int) -> None:
    deployments = _deployments({"a": 80, "b": 20})
    picks = [TrafficSplit(deployments, random.Random(seed)).order()[0].model_id for _ in range(1)]
    balancer = TrafficSplit(deployments, random.Random(seed))
    first = [balancer.order()[0].model_id for _ in range(2000)]
    share = first.count("a") / 2000
    assert abs(share - 0.8) <= 0.03, share
    again = TrafficSplit(deployments, random.Random(seed))
    assert [again.order()[0].model_id for _ in range(2000)] == first
    assert picks[0] == first[0]


def test_traffic_split_orders_the_rest_by_weight_for_failover() -> None:
    balancer = TrafficSplit(_deployments({"a": 10, "b": 60, "c": 30}), random.Random(5))
    for _ in range(50):
        order = [d.model_id for d in balancer.order()]
        rest = [name for name in ("b", "c", "a") if name != order[0]]
        assert order[1:] == rest


def test_route_split_picks_destinations_by_percentage_then_fails_over_to_the_others() -> None:
    board = HealthBoard(BreakerConfig())
    rng = random.Random(11)
    chat1 = Pool("chat1", make_balancer("round_robin", _deployments({"gpt-5": 1}), board, rng))
    chat2 = Pool(
        "chat2", make_balancer("round_robin", [Deployment("chat2", "gpt-4.1", PROVIDER)], board, rng)
    )
    route = Split("chat-route", [(chat1, 80), (chat2, 20)], rng)
    router = Router({"chat1": chat1, "chat2": chat2, "chat-route": route})
    plans = [router.plan("chat-route", "chat").deployments for _ in range(2000)]
    share = sum(plan[0].model_id == "gpt-5" for plan in plans) / 2000
    assert abs(share - 0.8) <= 0.03
    assert all(len(plan) == 2 for plan in plans)


def test_fallbacks_follow_the_primary_without_duplicates() -> None:
    board = HealthBoard(BreakerConfig())
    rng = random.Random(1)
    shared = Deployment("x", "m", PROVIDER)
    primary = Pool("primary", make_balancer("round_robin", [shared], board, rng))
    backup = Pool(
        "backup", make_balancer("round_robin", [shared, Deployment("y", "n", PROVIDER)], board, rng)
    )
    router = Router({"primary": primary, "backup": backup}, {"primary": Policy(fallbacks=("backup", "gone"))})
    assert [d.model_id for d in router.plan("primary", "chat").deployments] == ["m", "n"]
