"""Model name → deployment. Several deployments under one alias are balanced by a strategy object."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from modelyard.errors import ClientError, model_not_found
from modelyard.providers.base import Provider


@dataclass(frozen=True)
class Deployment:
    """One model id on one provider, reachable under an alias."""

    alias: str
    model_id: str
    provider: Provider
    weight: int = 1
    tasks: frozenset[str] | None = None


class Balancer(Protocol):
    deployments: Sequence[Deployment]

    def pick(self) -> Deployment: ...

    def subset(self, deployments: Sequence[Deployment]) -> Balancer:
        """The same strategy over fewer deployments."""
        ...


class WeightedRoundRobin:
    """Smooth weighted round-robin (nginx's): exact proportions, evenly interleaved, deterministic."""

    def __init__(self, deployments: Sequence[Deployment]) -> None:
        if not deployments:
            raise ValueError("a balancer needs at least one deployment")
        self.deployments: Sequence[Deployment] = tuple(deployments)
        self._current = [0] * len(deployments)
        self._total = sum(d.weight for d in deployments)

    def pick(self) -> Deployment:
        if len(self.deployments) == 1:
            return self.deployments[0]
        best = 0
        for index, deployment in enumerate(self.deployments):
            self._current[index] += deployment.weight
            if self._current[index] > self._current[best]:
                best = index
        self._current[best] -= self._total
        return self.deployments[best]

    def subset(self, deployments: Sequence[Deployment]) -> WeightedRoundRobin:
        return WeightedRoundRobin(deployments)


TASKS = ("chat", "completions", "embeddings")


def _serves(deployment: Deployment, task: str) -> bool:
    return deployment.tasks is None or task in deployment.tasks


def _by_task(balancer: Balancer) -> dict[str, Balancer]:
    """One balancer per task, over the deployments that serve it (the same one when all do)."""
    routes: dict[str, Balancer] = {}
    for task in TASKS:
        serving = [d for d in balancer.deployments if _serves(d, task)]
        if len(serving) == len(balancer.deployments):
            routes[task] = balancer
        elif serving:
            routes[task] = balancer.subset(serving)
    return routes


class Router:
    def __init__(self, routes: Mapping[str, Balancer]) -> None:
        self._routes = dict(routes)
        self._by_task = {alias: _by_task(balancer) for alias, balancer in routes.items()}

    def pick(self, model: str, task: str) -> Deployment:
        routes = self._by_task.get(model)
        if routes is None:
            raise model_not_found(model)
        balancer = routes.get(task)
        if balancer is None:
            served = ", ".join(t for t in TASKS if t in routes)
            raise ClientError(
                f"The model '{model}' serves {served}; it does not support {task}.",
                status=400,
                param="model",
                code="unsupported_task",
            )
        return balancer.pick()

    def models(self) -> dict[str, list[Deployment]]:
        return {alias: list(b.deployments) for alias, b in self._routes.items()}
