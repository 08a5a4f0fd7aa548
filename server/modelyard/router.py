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


class Router:
    def __init__(self, routes: Mapping[str, Balancer]) -> None:
        self._routes = dict(routes)

    def pick(self, model: str, task: str) -> Deployment:
        balancer = self._routes.get(model)
        if balancer is None:
            raise model_not_found(model)
        deployment = balancer.pick()
        if deployment.tasks is not None and task not in deployment.tasks:
            served = ", ".join(sorted(deployment.tasks))
            raise ClientError(
                f"The model '{model}' serves {served}; it does not support {task}.",
                status=400,
                param="model",
                code="unsupported_task",
            )
        return deployment

    def models(self) -> dict[str, list[Deployment]]:
        return {alias: list(b.deployments) for alias, b in self._routes.items()}
