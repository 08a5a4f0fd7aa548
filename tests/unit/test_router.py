"""Smooth weighted round-robin and alias routing."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import pytest
from modelyard.errors import ClientError
from modelyard.providers.base import Provider
from modelyard.routing.deployment import Deployment
from modelyard.routing.strategies import Balancer, WeightedRoundRobin
from modelyard.routing.targets import Pool, Router

PROVIDER = Provider("p", "demo", None, None)  # type: ignore[arg-type]


def _router(balancers: dict[str, Balancer]) -> Router:
    return Router({name: Pool(name, balancer) for name, balancer in balancers.items()})


def _balancer(weights: tuple[int, ...]) -> WeightedRoundRobin:
    return WeightedRoundRobin(
        [Deployment(alias="a", model_id=f"d{i}", provider=PROVIDER, weight=w) for i, w in enumerate(weights)]
    )


def _picks(weights: tuple[int, ...], count: int) -> list[int]:
    balancer = _balancer(weights)
    return [int(balancer.pick().model_id[1:]) for _ in range(count)]


WEIGHTS = [(1, 1), (3, 1), (5, 2, 1), (1, 3), (2, 2, 2), (1, 2, 5), (7, 1, 1, 1)]


@pytest.mark.parametrize("weights", WEIGHTS)
def test_every_full_cycle_has_exact_proportions(weights: tuple[int, ...]) -> None:
    total = sum(weights)
    picks = _picks(weights, total * 4)
    for cycle in range(4):
        counts = Counter(picks[cycle * total : (cycle + 1) * total])
        assert counts == {i: w for i, w in enumerate(weights)}


@pytest.mark.parametrize("weights", WEIGHTS)
def test_picks_stay_within_one_of_the_ideal_share(weights: tuple[int, ...]) -> None:
    """Smoothness: after any k picks, deployment i has been picked within 1 of k·w_i/W times."""
    total = sum(weights)
    picks = _picks(weights, total * 3)
    for index, weight in enumerate(weights):
        count = 0
        for k, picked in enumerate(picks, start=1):
            count += picked == index
            assert abs(count - k * weight / total) <= 1, (index, k, count)


@pytest.mark.parametrize("weights", WEIGHTS)
def test_picks_interleave(weights: tuple[int, ...]) -> None:
    """Over three consecutive cycles (runs across cycle boundaries count): no deployment is picked more
    than ceil(w_max / w_min) + 1 times in a row, and a run of deployment i is at most 2·W / (W - w_i)
    long (what the smoothness bound above allows)."""
    total = sum(weights)
    picks = _picks(weights, total * 3)
    longest = dict.fromkeys(range(len(weights)), 0)
    for key, run in itertools.groupby(picks):
        longest[key] = max(longest[key], len(list(run)))
    assert max(longest.values()) <= math.ceil(max(weights) / min(weights)) + 1
    for index, weight in enumerate(weights):
        assert longest[index] <= 2 * total / (total - weight)


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        ((1, 1), [0, 1, 0, 1]),
        ((3, 1), [0, 0, 1, 0]),
        ((5, 1, 1), [0, 0, 1, 0, 2, 0, 0]),  # nginx's documented sequence: a a b a c a a
        ((5, 2, 1), [0, 1, 0, 0, 2, 0, 1, 0]),
    ],
)
def test_sequence_is_nginx_smooth_and_deterministic(weights: tuple[int, ...], expected: list[int]) -> None:
    assert _picks(weights, len(expected)) == expected
    assert _picks(weights, len(expected) * 2) == expected * 2


def test_single_deployment_is_always_picked() -> None:
    assert set(_picks((4,), 10)) == {0}


def test_balancer_needs_a_deployment() -> None:
    with pytest.raises(ValueError):
        WeightedRoundRobin([])


def test_router_picks_by_alias_and_lists_models() -> None:
    chat = _balancer((1, 1))
    embed = _balancer((1,))
    router = _router({"chat": chat, "embed": embed})
    assert [router.pick("chat", "chat").model_id for _ in range(4)] == ["d0", "d1", "d0", "d1"]
    assert router.pick("embed", "embeddings").model_id == "d0"
    assert {alias: [d.model_id for d in group] for alias, group in router.models().items()} == {
        "chat": ["d0", "d1"],
        "embed": ["d0"],
    }


@pytest.mark.parametrize("alias", ["unknown", "", "CHAT", "chat ", "openai/gpt-4o"])
@pytest.mark.parametrize("task", ["chat", "completions", "embeddings"])
def test_unknown_alias_is_404_model_not_found(alias: str, task: str) -> None:
    router = _router({"chat": _balancer((1,))})
    with pytest.raises(ClientError) as caught:
        router.pick(alias, task)
    error = caught.value
    assert error.status == 404
    assert error.code == "model_not_found"
    assert error.param == "model"
    assert f"'{alias}'" in error.message
    assert error.type == "invalid_request_error"


def _deployment(model_id: str, tasks: frozenset[str] | None, weight: int = 1) -> Deployment:
    return Deployment(alias="a", model_id=model_id, provider=PROVIDER, weight=weight, tasks=tasks)


@pytest.mark.parametrize(
    ("tasks", "task", "allowed"),
    [
        (None, "chat", True),
        (None, "embeddings", True),
        (frozenset({"chat", "completions"}), "chat", True),
        (frozenset({"chat", "completions"}), "completions", True),
        (frozenset({"chat", "completions"}), "embeddings", False),
        (frozenset({"embeddings"}), "chat", False),
    ],
)
def test_deployment_tasks_gate_the_pick(tasks: frozenset[str] | None, task: str, allowed: bool) -> None:
    router = _router({"m": WeightedRoundRobin([_deployment("d0", tasks)])})
    if allowed:
        assert router.pick("m", task).model_id == "d0"
        return
    with pytest.raises(ClientError) as caught:
        router.pick("m", task)
    assert (caught.value.status, caught.value.code, caught.value.param) == (400, "unsupported_task", "model")
    assert task in caught.value.message


def test_mixed_task_alias_routes_each_task_to_a_deployment_that_serves_it() -> None:
    router = _router(
        {
            "m": WeightedRoundRobin(
                [_deployment("chat", frozenset({"chat"})), _deployment("emb", frozenset({"embeddings"}))]
            )
        }
    )
    assert [router.pick("m", "chat").model_id for _ in range(4)] == ["chat"] * 4
    assert [router.pick("m", "embeddings").model_id for _ in range(4)] == ["emb"] * 4
