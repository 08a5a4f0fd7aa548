"""Balancing and circuit breaking through the real gateway, against fakes that slow down or fail.

One gateway (one worker, so one set of breakers and measurements) with three aliases over three
deployments each: least in-flight, lowest latency, and a breaker-watched one whose first
deployment a test makes fail and recover at runtime.
"""

from __future__ import annotations

import secrets
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from modelyard.v1 import routing_pb2, routing_pb2_grpc

from tests.fakes.openai_upstream import FakeOpenAI
from tests.gateway_process import GatewayProcess

UPSTREAM_KEY = "sk-strategies-" + secrets.token_hex(12)
SLOW, FAST = "latency-300", "latency-5"
COOLDOWN = 0.5


def _config(base_url: str) -> dict[str, Any]:
    models = []
    for alias in ("least", "latency"):
        models += [
            {"provider": "up", "id": SLOW, "alias": alias},
            {"provider": "up", "id": FAST, "alias": alias},
            {"provider": "up", "id": "latency-6", "alias": alias},
        ]
    models += [
        {"provider": "up", "id": "gpt-4o", "alias": "watched"},
        {"provider": "up", "id": "gpt-4.1", "alias": "watched"},
    ]
    return {
        "providers": [
            {"name": "up", "type": "openai", "data": {"apikey": UPSTREAM_KEY, "base_url": base_url}}
        ],
        "models": models,
        "routing": {
            "seed": 42,
            "breaker": {"consecutive_failures": 3, "cooldown": COOLDOWN, "max_cooldown": 4 * COOLDOWN},
            "policies": {
                "least": {"strategy": "least_in_flight"},
                "latency": {"strategy": "lowest_latency"},
            },
        },
    }


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=UPSTREAM_KEY, record=False) as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway(upstream: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    process = GatewayProcess(
        config=_config(upstream.base_url),
        workdir=Path(tmp_path_factory.mktemp("strategies")),
        admin_key="strategies-" + secrets.token_urlsafe(12),
    )
    process.start()
    yield process
    assert process.stop() == 0


def _served(gateway: GatewayProcess, model: str, count: int, concurrency: int) -> Counter[str]:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"Authorization": f"Bearer {gateway.admin_key}"}
    with httpx.Client(headers=headers, timeout=30) as client:

        def one(_: int) -> str:
            response = client.post(f"{gateway.base_url}/chat/completions", json=body)
            assert response.status_code == 200, response.text
            return response.headers["x-modelyard-deployment"].removeprefix("up/")

        with ThreadPoolExecutor(concurrency) as pool:
            return Counter(pool.map(one, range(count)))


def test_least_in_flight_steers_away_from_the_slow_deployment(gateway: GatewayProcess) -> None:
    served = _served(gateway, "least", count=90, concurrency=6)
    assert served[SLOW] < served[FAST] / 3, served
    assert served[FAST] > 0 and served["latency-6"] > 0


def test_lowest_latency_prefers_the_fast_deployment(gateway: GatewayProcess) -> None:
    served = _served(gateway, "latency", count=60, concurrency=1)
    assert served[SLOW] <= 6, served
    assert served[FAST] + served["latency-6"] >= 54


def _deployments(gateway: GatewayProcess) -> dict[str, dict[str, Any]]:
    response = httpx.get(
        f"{gateway.base_url}/deployments", headers={"Authorization": f"Bearer {gateway.admin_key}"}, timeout=5
    )
    assert response.status_code == 200, response.text
    return {f"{d['name']}:{d['model']}": d for d in response.json()["data"]}


def test_the_breaker_opens_cools_down_half_opens_and_closes_under_concurrency(
    gateway: GatewayProcess, upstream: FakeOpenAI
) -> None:
    upstream.set_override("gpt-4o", "error-500")
    try:
        served = _served(gateway, "watched", count=40, concurrency=4)
        assert served == {"gpt-4.1": 40}, "every request is answered, by failover first, then directly"
        state = _deployments(gateway)["watched:gpt-4o"]
        assert state["state"] == "open"
        assert state["failures"] >= 3 and state["ejections"] >= 1
        assert 0 < state["cooldown_remaining_seconds"] <= 4 * COOLDOWN
        time.sleep(4 * COOLDOWN + 0.1)
        assert _deployments(gateway)["watched:gpt-4o"]["state"] == "half_open"
        _served(gateway, "watched", count=8, concurrency=4)
        after_probe = _deployments(gateway)["watched:gpt-4o"]
        assert after_probe["state"] == "open" and after_probe["failures"] == state["failures"] + 1, (
            "exactly one probe went to the failing deployment, and it re-opened the breaker"
        )
    finally:
        upstream.set_override("gpt-4o", None)
    time.sleep(4 * COOLDOWN + 0.1)
    served = _served(gateway, "watched", count=20, concurrency=4)
    healed = _deployments(gateway)["watched:gpt-4o"]
    assert healed["state"] == "closed" and healed["ejections"] == 0
    assert served["gpt-4o"] >= 5, served


def test_deployment_health_over_grpc_needs_an_admin_key(gateway: GatewayProcess) -> None:
    with grpc.insecure_channel(gateway.grpc_target) as channel:
        stub = routing_pb2_grpc.RoutingStub(channel)
        response = stub.ListDeployments(
            routing_pb2.ListDeploymentsRequest(), metadata=(("authorization", f"Bearer {gateway.admin_key}"),)
        )
        names = {(d.name, d.model) for d in response.data}
        assert ("watched", "gpt-4o") in names and ("least", SLOW) in names
        assert response.worker_pid > 0
        with pytest.raises(grpc.RpcError) as caught:
            stub.ListDeployments(routing_pb2.ListDeploymentsRequest())
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
