"""The usage ledger, metrics and access log through the real gateway: totals equal the requests
made (REST, gRPC and the CLI agree), across a restart; a stalled database neither slows requests
nor loses records (until the queue is full, and then the drops are counted); /metrics parses with
Prometheus' own parser; the access log lines up with Envoy's by request id."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import openai
import pytest
from modelyard.v1 import usage_pb2, usage_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from tests.admin_fixtures import Rest, create_tenant, running_gateway
from tests.fakes.openai_upstream import FakeOpenAI

UPSTREAM_KEY = "sk-ledger-" + os.urandom(8).hex()
GPT_4O = (2.5, 10.0)
"""The built-in price of gpt-4o, US dollars per million input and output tokens."""
STALL_S = 3.0


def _config(base_url: str, **extra: Any) -> dict[str, Any]:
    return {
        "providers": [
            {"name": "demo", "type": "demo"},
            {"name": "up", "type": "openai", "data": {"apikey": UPSTREAM_KEY, "base_url": base_url}},
        ],
        "models": [
            {"provider": "up", "id": "gpt-4o", "alias": "gpt"},
            {"provider": "demo", "id": "demo-embed", "alias": "embed", "tasks": ["embeddings"]},
        ],
        **extra,
    }


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=UPSTREAM_KEY, record=False) as fake:
        yield fake


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(tmp_path_factory.mktemp("ledger"))


@pytest.fixture(scope="module")
def rest(upstream: FakeOpenAI, workdir: Path) -> Iterator[Rest]:
    with running_gateway(workdir, config=_config(upstream.base_url)) as gateway, Rest(gateway) as client:
        yield client


def _usage(rest: Rest, key: str | None = None, **params: Any) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key or rest.gateway.admin_key}"}
    response = rest.client.get("/v1/usage", params={"bucket": "none", **params}, headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


def _totals(rest: Rest, **params: Any) -> dict[str, dict[str, Any]]:
    return {bucket["model"]: bucket for bucket in _usage(rest, group_by="model", **params)["buckets"]}


def _settled(rest: Rest, expected: int, timeout: float = 15.0) -> dict[str, dict[str, Any]]:
    """The totals once the ledger holds `expected` requests (it is written off the request path)."""
    deadline = time.monotonic() + timeout
    while True:
        totals = _totals(rest)
        if sum(t["requests"] for t in totals.values()) >= expected or time.monotonic() > deadline:
            return totals
        time.sleep(0.1)


@pytest.fixture(scope="module")
def made(rest: Rest) -> dict[str, Any]:
    """A mix of requests, with the usage each answer reported."""
    client = openai.OpenAI(base_url=rest.gateway.base_url, api_key=rest.gateway.admin_key, max_retries=0)
    messages: Any = [{"role": "user", "content": "the quick brown fox jumps"}]
    prompt = completion = 0
    for _ in range(5):
        answer = client.chat.completions.create(model="gpt", messages=messages)
        assert answer.usage is not None
        prompt, completion = prompt + answer.usage.prompt_tokens, completion + answer.usage.completion_tokens
    for _ in range(3):
        chunks = list(
            client.chat.completions.create(
                model="gpt", messages=messages, stream=True, stream_options={"include_usage": True}
            )
        )
        usage = chunks[-1].usage
        assert usage is not None
        prompt, completion = prompt + usage.prompt_tokens, completion + usage.completion_tokens
    embedded = 0
    for _ in range(2):
        result = client.embeddings.create(model="embed", input=["alpha beta", "gamma"])
        embedded += result.usage.prompt_tokens
    for _ in range(2):
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="no-such-model", messages=messages)
    return {"gpt": (8, prompt, completion), "embed": (2, embedded, 0), "errors": 2, "total": 12}


def test_ledger_totals_equal_the_requests_made(rest: Rest, made: dict[str, Any]) -> None:
    totals = _settled(rest, made["total"])
    requests, prompt, completion = made["gpt"]
    gpt = totals["gpt"]
    assert (gpt["requests"], gpt["errors"], gpt["prompt_tokens"], gpt["completion_tokens"]) == (
        requests,
        0,
        prompt,
        completion,
    )
    assert gpt["cost_usd"] == pytest.approx((prompt * GPT_4O[0] + completion * GPT_4O[1]) / 1e6, abs=1e-8)
    assert (totals["embed"]["requests"], totals["embed"]["prompt_tokens"]) == made["embed"][:2]
    assert totals["no-such-model"]["errors"] == made["errors"]
    assert sum(t["requests"] for t in totals.values()) == made["total"]


def test_grpc_and_the_cli_report_the_same_totals(rest: Rest, made: dict[str, Any]) -> None:
    rest_totals = _settled(rest, made["total"])
    metadata = (("authorization", f"Bearer {rest.gateway.admin_key}"),)
    with grpc.insecure_channel(rest.gateway.grpc_target) as channel:
        report = usage_pb2_grpc.MeteringStub(channel).GetUsage(
            usage_pb2.GetUsageRequest(group_by=["model"], bucket="none"), metadata=metadata, timeout=15
        )
    assert {b.model: b.requests for b in report.buckets} == {m: t["requests"] for m, t in rest_totals.items()}
    env = {**os.environ, "MODELYARD_KEY": rest.gateway.admin_key, "MODELYARD_GRPC": rest.gateway.grpc_target}
    cli = subprocess.run(
        [sys.executable, "-m", "modelyard", "usage", "--bucket", "none", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    printed = json.loads(cli.stdout)
    assert {row["model"]: int(row["requests"]) for row in printed} == {
        m: t["requests"] for m, t in rest_totals.items()
    }
    table = subprocess.run(
        [sys.executable, "-m", "modelyard", "usage", "--group-by", "model,provider", "--bucket", "day"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert table.splitlines()[0].split()[:3] == ["START", "MODEL", "PROVIDER"]
    assert any(line.split()[1:3] == ["gpt", "up"] for line in table.splitlines()[1:])


def test_a_tenant_sees_only_its_own_usage(rest: Rest, made: dict[str, Any]) -> None:
    tenant = create_tenant(rest, rest.gateway.admin_key, f"ledger-{os.urandom(3).hex()}")
    assert _usage(rest, tenant.key, group_by="model")["buckets"] == []
    refused = rest.client.get(
        "/v1/usage", params={"all_tenants": "true"}, headers={"Authorization": f"Bearer {tenant.key}"}
    )
    assert refused.status_code == 403
    bad = rest.client.get(
        "/v1/usage",
        params={"group_by": "secret"},
        headers={"Authorization": f"Bearer {rest.gateway.admin_key}"},
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "group_by"


def test_metrics_parse_and_count_what_happened(rest: Rest, made: dict[str, Any]) -> None:
    _settled(rest, made["total"])
    deadline = time.monotonic() + 10  # workers write their metrics once a second
    while True:
        text = httpx.get(rest.gateway.metrics_url, timeout=10).text
        families = {family.name: family for family in text_string_to_metric_families(text)}
        tokens = families.get("gen_ai_client_token_usage")
        counts = {
            sample.labels["gen_ai_token_type"]: sample.value
            for sample in (tokens.samples if tokens else [])
            if sample.name.endswith("_count") and sample.labels["gen_ai_request_model"] == "gpt"
        }
        if counts == {"input": 8, "output": 8} or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert tokens is not None
    assert counts == {"input": 8, "output": 8}
    sums = {
        sample.labels["gen_ai_token_type"]: sample.value
        for sample in tokens.samples
        if sample.name.endswith("_sum") and sample.labels["gen_ai_request_model"] == "gpt"
    }
    assert sums == {"input": made["gpt"][1], "output": made["gpt"][2]}
    requests = {
        (s.labels["model"], s.labels["status_class"]): s.value
        for s in families["modelyard_requests"].samples
        if s.name == "modelyard_requests_total"
    }
    assert requests[("gpt", "2xx")] >= 8 and requests[("(none)", "4xx")] >= 2
    ttft = [
        s for s in families["gen_ai_server_time_to_first_token_seconds"].samples if s.name.endswith("_count")
    ]
    assert sum(s.value for s in ttft) >= 3
    assert any(
        s.labels["deployment"] == "up/gpt-4o" for s in families["modelyard_circuit_breaker_state"].samples
    )
    assert "modelyard_ledger_queue_depth" in families and "modelyard_in_flight_requests" in families
    assert UPSTREAM_KEY not in text and rest.gateway.admin_key not in text


def _log_lines(rest: Rest) -> list[dict[str, Any]]:
    return [
        json.loads(line) for line in rest.gateway.log_path.read_text().splitlines() if line.startswith("{")
    ]


def test_the_access_log_lines_up_with_envoys(rest: Rest, made: dict[str, Any]) -> None:
    deadline = time.monotonic() + 15  # Envoy flushes its access log about once a second
    while True:
        lines = _log_lines(rest)
        ours = [line for line in lines if line.get("log") == "modelyard.access"]
        envoy = {line["request_id"]: line for line in lines if "grpc_status" in line}
        if all(entry["request_id"] in envoy for entry in ours) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(ours) >= made["total"]
    for entry in ours:
        assert entry["request_id"] in envoy, entry
        assert envoy[entry["request_id"]]["status"] == entry["status"]
    failed = [entry for entry in ours if entry["status"] == 404]
    assert failed and all(entry["error_code"] == "model_not_found" for entry in failed)
    assert "the quick brown fox" not in rest.gateway.log_path.read_text(), (
        "contents are not logged by default"
    )


def _stall(path: Path, seconds: float, locked: threading.Event) -> None:
    with sqlite3.connect(path, timeout=30) as conn:
        conn.execute("BEGIN EXCLUSIVE")
        locked.set()
        time.sleep(seconds)
        conn.execute("ROLLBACK")


def test_a_stalled_database_slows_no_request_and_loses_nothing(rest: Rest, made: dict[str, Any]) -> None:
    before = sum(t["requests"] for t in _settled(rest, made["total"]).values())
    locked = threading.Event()
    staller = threading.Thread(
        target=_stall, args=(rest.gateway.workdir / "data" / "usage.db", STALL_S, locked)
    )
    staller.start()
    assert locked.wait(10)
    stall_ends = time.monotonic() + STALL_S
    client = openai.OpenAI(base_url=rest.gateway.base_url, api_key=rest.gateway.admin_key, max_retries=0)
    slowest = 0.0
    sent = 0
    while time.monotonic() < stall_ends - 1.0 and sent < 200:
        started = time.monotonic()
        client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "hi"}])
        slowest = max(slowest, time.monotonic() - started)
        sent += 1
    during = sum(t["requests"] for t in _totals(rest).values())
    staller.join()
    assert sent >= 10
    assert during == before, "the ledger was really stalled: nothing was written meanwhile"
    assert slowest < STALL_S / 2, f"a request waited {slowest:.2f}s on the stalled ledger"
    after = _settled(rest, before + sent, timeout=30)
    assert sum(t["requests"] for t in after.values()) == before + sent


def test_totals_survive_a_restart(rest: Rest, made: dict[str, Any]) -> None:
    totals = _settled(rest, made["total"])
    gateway = rest.gateway
    assert gateway.stop() == 0
    gateway.start()
    assert _totals(rest) == totals


def test_a_full_queue_drops_records_and_counts_them(upstream: FakeOpenAI, tmp_path: Path) -> None:
    config = _config(upstream.base_url, usage={"queue_size": 5, "batch_size": 5})
    with running_gateway(tmp_path / "small-queue", config=config) as gateway, Rest(gateway) as rest:
        locked = threading.Event()
        staller = threading.Thread(
            target=_stall, args=(gateway.workdir / "data" / "usage.db", STALL_S, locked)
        )
        staller.start()
        assert locked.wait(10)
        client = openai.OpenAI(base_url=gateway.base_url, api_key=gateway.admin_key, max_retries=0)
        sent = 0
        while staller.is_alive() and sent < 100:
            client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "hi"}])
            sent += 1
        staller.join()
        deadline = time.monotonic() + 15
        while True:
            report = _usage(rest, group_by="model")
            kept = sum(b["requests"] for b in report["buckets"])
            if kept + report["dropped_records"] >= sent or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert report["dropped_records"] > 0
    assert kept + report["dropped_records"] == sent
