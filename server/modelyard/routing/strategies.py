"""Balancing strategies: each orders one name's deployments, best first, for one request.

The first is the choice; the rest are where that request goes if the first fails. Strategies are
objects over a fixed set of deployments (`subset` makes the same strategy over fewer).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from modelyard.routing.deployment import Deployment
from modelyard.routing.health import HealthBoard

EXPLORE_EVERY = 20
"""Lowest-latency sends about one request in this many to another deployment, to keep its EWMA fresh."""


class Balancer(Protocol):
    deployments: Sequence[Deployment]

    def order(self) -> list[Deployment]: ...

    def subset(self, deployments: Sequence[Deployment]) -> Balancer: ...


def _rotated(deployments: Sequence[Deployment], first: int) -> list[Deployment]:
    return [*deployments[first:], *deployments[:first]]


class WeightedRoundRobin:
    """Smooth weighted round-robin (nginx's): exact proportions, evenly interleaved, deterministic."""

    def __init__(self, deployments: Sequence[Deployment]) -> None:
        if not deployments:
            raise ValueError("a balancer needs at least one deployment")
        self.deployments: Sequence[Deployment] = tuple(deployments)
        self._current = [0] * len(deployments)
        self._total = sum(d.weight for d in deployments)

    def pick(self) -> Deployment:
        return self.deployments[self._pick_index()]

    def order(self) -> list[Deployment]:
        return _rotated(self.deployments, self._pick_index())

    def _pick_index(self) -> int:
        if len(self.deployments) == 1:
            return 0
        best = 0
        for index, deployment in enumerate(self.deployments):
            self._current[index] += deployment.weight
            if self._current[index] > self._current[best]:
                best = index
        self._current[best] -= self._total
        return best

    def subset(self, deployments: Sequence[Deployment]) -> WeightedRoundRobin:
        return WeightedRoundRobin(deployments)


class LeastInFlight:
    """Fewest requests in flight per unit of weight; ties rotate so idle deployments share the load."""

    def __init__(self, deployments: Sequence[Deployment], board: HealthBoard) -> None:
        self.deployments: Sequence[Deployment] = tuple(deployments)
        self._board = board
        self._turn = 0

    def order(self) -> list[Deployment]:
        self._turn = (self._turn + 1) % len(self.deployments)
        rotated = _rotated(self.deployments, self._turn)
        return sorted(rotated, key=lambda d: self._board.get(d.key).in_flight / d.weight)

    def subset(self, deployments: Sequence[Deployment]) -> LeastInFlight:
        return LeastInFlight(deployments, self._board)


class LowestLatency:
    """Lowest EWMA of time to first token; unmeasured deployments first, and some exploration."""

    def __init__(self, deployments: Sequence[Deployment], board: HealthBoard, rng: random.Random) -> None:
        self.deployments: Sequence[Deployment] = tuple(deployments)
        self._board = board
        self._rng = rng

    def order(self) -> list[Deployment]:
        def latency(deployment: Deployment) -> float:
            ewma = self._board.get(deployment.key).ewma_ttft
            return -1.0 if ewma is None else ewma

        ranked = sorted(self.deployments, key=latency)
        if len(ranked) > 1 and self._rng.randrange(EXPLORE_EVERY) == 0:
            ranked.insert(0, ranked.pop(self._rng.randrange(1, len(ranked))))
        return ranked

    def subset(self, deployments: Sequence[Deployment]) -> LowestLatency:
        return LowestLatency(deployments, self._board, self._rng)


class TrafficSplit:
    """Random by weight (percentages); the others follow by weight, for failover."""

    def __init__(self, deployments: Sequence[Deployment], rng: random.Random) -> None:
        self.deployments: Sequence[Deployment] = tuple(deployments)
        self._rng = rng
        self._weights = [d.weight for d in self.deployments]
        self._by_weight = sorted(range(len(self.deployments)), key=lambda i: -self._weights[i])

    def order(self) -> list[Deployment]:
        chosen = self._rng.choices(range(len(self.deployments)), weights=self._weights)[0]
        return [self.deployments[chosen], *(self.deployments[i] for i in self._by_weight if i != chosen)]

    def subset(self, deployments: Sequence[Deployment]) -> TrafficSplit:
        return TrafficSplit(deployments, self._rng)


Factory = Callable[[Sequence[Deployment], HealthBoard, random.Random], Balancer]
STRATEGIES: Mapping[str, Factory] = {
    "round_robin": lambda deployments, board, rng: WeightedRoundRobin(deployments),
    "least_in_flight": lambda deployments, board, rng: LeastInFlight(deployments, board),
    "lowest_latency": LowestLatency,
    "traffic_split": lambda deployments, board, rng: TrafficSplit(deployments, rng),
}


def make_balancer(
    strategy: str, deployments: Sequence[Deployment], board: HealthBoard, rng: random.Random
) -> Balancer:
    return STRATEGIES[strategy](deployments, board, rng)
