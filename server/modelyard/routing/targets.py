"""Names → targets → the ordered deployments one request may try.

A `Pool` is an alias or endpoint: deployments under one name, ordered by its balancing strategy.
A `Split` is a route: destinations (pools) chosen at random by percentage. A request's plan is the
chosen deployment, then the rest of its pool or split, then each fallback name's deployments.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from modelyard.errors import ClientError, model_not_found
from modelyard.routing.deployment import Deployment
from modelyard.routing.policy import DEFAULT_POLICY, Policy
from modelyard.routing.strategies import Balancer

TASKS = ("chat", "completions", "embeddings")


class Target(Protocol):
    name: str

    def tasks(self) -> tuple[str, ...]: ...

    def order(self, task: str) -> list[Deployment]:
        """Best first; [] when the target does not serve the task."""
        ...

    def deployments(self) -> list[Deployment]: ...


class Pool:
    def __init__(self, name: str, balancer: Balancer) -> None:
        self.name = name
        self._all = list(balancer.deployments)
        self._by_task: dict[str, Balancer] = {}
        for task in TASKS:
            serving = [d for d in self._all if d.serves(task)]
            if len(serving) == len(self._all):
                self._by_task[task] = balancer
            elif serving:
                self._by_task[task] = balancer.subset(serving)

    def tasks(self) -> tuple[str, ...]:
        return tuple(self._by_task)

    def order(self, task: str) -> list[Deployment]:
        balancer = self._by_task.get(task)
        return balancer.order() if balancer is not None else []

    def deployments(self) -> list[Deployment]:
        return list(self._all)


class Split:
    def __init__(self, name: str, destinations: Sequence[tuple[Target, int]], rng: random.Random) -> None:
        self.name = name
        self._destinations = [target for target, _ in destinations]
        self._weights = [percentage for _, percentage in destinations]
        self._rng = rng

    def tasks(self) -> tuple[str, ...]:
        return tuple(t for t in TASKS if any(t in d.tasks() for d in self._destinations))

    def order(self, task: str) -> list[Deployment]:
        serving = [
            (d, w) for d, w in zip(self._destinations, self._weights, strict=True) if task in d.tasks()
        ]
        if not serving:
            return []
        chosen = self._rng.choices(range(len(serving)), weights=[w for _, w in serving])[0]
        ranked = [serving[chosen][0], *(d for i, (d, _) in enumerate(serving) if i != chosen)]
        return [deployment for target in ranked for deployment in target.order(task)]

    def deployments(self) -> list[Deployment]:
        return _unique(d for target in self._destinations for d in target.deployments())


@dataclass(frozen=True)
class Plan:
    name: str
    policy: Policy
    deployments: list[Deployment]


class Router:
    def __init__(
        self,
        targets: Mapping[str, Target],
        policies: Mapping[str, Policy] | None = None,
        default_policy: Policy = DEFAULT_POLICY,
    ) -> None:
        self._targets = dict(targets)
        self._policies = dict(policies or {})
        self._default_policy = default_policy

    def policy(self, name: str) -> Policy:
        return self._policies.get(name, self._default_policy)

    def plan(self, name: str, task: str) -> Plan:
        target = self._targets.get(name)
        if target is None:
            raise model_not_found(name)
        primary = target.order(task)
        if not primary:
            served = ", ".join(target.tasks())
            raise ClientError(
                f"The model '{name}' serves {served}; it does not support {task}.",
                status=400,
                param="model",
                code="unsupported_task",
            )
        policy = self.policy(name)
        chain = [primary]
        for fallback in policy.fallbacks:
            if (other := self._targets.get(fallback)) is not None:
                chain.append(other.order(task))
        return Plan(name, policy, _unique(d for step in chain for d in step))

    def pick(self, name: str, task: str) -> Deployment:
        return self.plan(name, task).deployments[0]

    def models(self) -> dict[str, list[Deployment]]:
        return {name: target.deployments() for name, target in self._targets.items()}


def _unique(deployments: Iterable[Deployment]) -> list[Deployment]:
    seen: set[str] = set()
    result = []
    for deployment in deployments:
        if deployment.key not in seen:
            seen.add(deployment.key)
            result.append(deployment)
    return result
