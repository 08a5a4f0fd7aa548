"""Routing under failure, end to end: real Envoy and worker, fake upstreams that misbehave on cue.

The fault matrix sends each fault, streaming and not, once to an alias whose only deployment has it
(the client must get the right error, promptly, within the attempt budget) and once to an alias
that falls back to a healthy deployment (the client must get an answer). A fault after a stream's
first chunk cannot be hidden: the client has seen text, so the stream ends with an error event.
"""

from __future__ import annotations

import json
import secrets
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import openai
import pytest
from modelyard.v1 import chat_pb2, inference_pb2_grpc

from tests.fakes.openai_upstream import FakeOpenAI
from tests.gateway_process import GatewayProcess, free_port

UPSTREAM_KEY = "sk-routing-" + secrets.token_hex(12)
BREAKER_OFF = {"consecutive_failures": 1000, "min_requests": 100000, "eject_on_429": False}
FIRST_TOKEN_TIMEOUT = 1.0
ATTEMPT_BUDGET = 2  # one deployment, plus the default single retry
CLIENT_ERRORS = (400, 401, 403, 404, 422)
SPLIT_REQUESTS = 2000


@dataclass(frozen=True)
class Fault:
    name: str
    provider: str
    model: str
    status: int
    """What the client gets when nothing else can answer."""
    codes: tuple[str | None, ...]
    stream_committed: bool = False
    """The fault strikes after a stream's first chunk."""


FAULTS = [
    Fault("500", "up", "error-500", 502, (None,)),
    Fault("503", "up", "error-503", 503, (None,)),
    Fault("429", "up", "error-429", 429, ("rate_limit_exceeded",)),
    Fault("connect-refused", "down", "gpt-4o-mini", 502, ("upstream_unreachable",)),
    Fault("timeout-before-headers", "up", "stall", 504, ("upstream_timeout",)),
    Fault("stall-before-first-token", "up", "stall-first-token", 504, ("upstream_timeout",)),
    Fault("reset-before-headers", "up", "reset", 502, ("upstream_disconnected", "upstream_unreachable")),
    Fault("reset-mid-stream", "up", "midstream-drop", 502, ("upstream_disconnected",), stream_committed=True),
    Fault("garbage-json", "up", "garbage", 502, ("bad_upstream_response",)),
]


def _routing_config(base_url: str) -> dict[str, object]:
    models: list[dict[str, object]] = [{"provider": "up", "id": "gpt-4o-mini", "alias": "healthy"}]
    policies: dict[str, object] = {}
    for fault in FAULTS:
        for prefix in ("bare", "safe"):
            models.append({"provider": fault.provider, "id": fault.model, "alias": f"{prefix}-{fault.name}"})
        policies[f"safe-{fault.name}"] = {"fallbacks": ["healthy"]}
    for status in CLIENT_ERRORS:
        models.append({"provider": "up", "id": f"error-{status}", "alias": f"client-{status}"})
        policies[f"client-{status}"] = {"fallbacks": ["healthy"]}
    models += [
        {
            "provider": "up",
            "id": "gpt-4o",
            "alias": "with-defaults",
            "defaults": {"temperature": 0.7, "top_p": 0.9},
        },
        {"provider": "up", "id": "gpt-4o", "alias": "split-a"},
        {"provider": "up", "id": "gpt-4.1", "alias": "split-b"},
    ]
    mlflow_config = {"openai_api_key": UPSTREAM_KEY, "openai_api_base": base_url}
    return {
        "endpoints": [
            {
                "name": "mlflow-chat",
                "endpoint_type": "llm/v1/chat",
                "model": {
                    "provider": "openai",
                    "name": "gpt-4o",
                    "config": {**mlflow_config, "temperature": 0.3},
                },
                "limit": {"renewal_period": "minute", "calls": 1000},
            },
            {
                "name": "mlflow-embeddings",
                "endpoint_type": "llm/v1/embeddings",
                "model": {"provider": "openai", "name": "text-embedding-3-small", "config": mlflow_config},
            },
        ],
        "routes": [
            {
                "name": "mlflow-route",
                "task_type": "llm/v1/chat",
                "destinations": [
                    {"name": "mlflow-chat", "traffic_percentage": 50},
                    {"name": "healthy", "traffic_percentage": 50},
                ],
            },
            {
                "name": "split",
                "task_type": "llm/v1/chat",
                "destinations": [
                    {"name": "split-a", "traffic_percentage": 80},
                    {"name": "split-b", "traffic_percentage": 20},
                ],
                "routing_strategy": "TRAFFIC_SPLIT",
            },
        ],
        "providers": [
            {"name": "up", "type": "openai", "data": {"apikey": UPSTREAM_KEY, "base_url": base_url}},
            {
                "name": "down",
                "type": "openai",
                "data": {"apikey": UPSTREAM_KEY, "base_url": f"http://127.0.0.1:{free_port()}/v1"},
            },
        ],
        "models": models,
        "routing": {
            "defaults": {
                "timeouts": {"connect": 1, "first_token": FIRST_TOKEN_TIMEOUT, "total": 10},
                "backoff": {"initial": 0.05, "max": 0.2},
            },
            "breaker": BREAKER_OFF,
            "policies": policies,
        },
    }


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=UPSTREAM_KEY) as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway(upstream: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    process = GatewayProcess(
        config=_routing_config(upstream.base_url),
        workdir=Path(tmp_path_factory.mktemp("routing")),
        admin_key="routing-admin-" + secrets.token_urlsafe(12),
    )
    process.start()
    yield process
    assert process.stop() == 0
    assert UPSTREAM_KEY not in process.log_path.read_text(errors="replace")


def _chat(gateway: GatewayProcess, model: str, stream: bool, **headers: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "Say hello"}], "stream": stream}
    return httpx.post(
        f"{gateway.base_url}/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {gateway.admin_key}", **headers},
        timeout=30,
    )


def _events(response: httpx.Response) -> list[str]:
    return [line[6:] for line in response.text.split("\n") if line.startswith("data: ")]


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.name)
def test_with_a_healthy_fallback_the_client_gets_an_answer(
    gateway: GatewayProcess, fault: Fault, stream: bool
) -> None:
    response = _chat(gateway, f"safe-{fault.name}", stream)
    assert response.status_code == 200, response.text
    attempts = int(response.headers["x-modelyard-attempts"])
    assert 1 <= attempts <= ATTEMPT_BUDGET + 1
    if stream and fault.stream_committed:
        events = _events(response)
        assert events[-1] != "[DONE]"
        assert json.loads(events[-1])["error"]["code"] in fault.codes
        assert response.headers["x-modelyard-deployment"] == f"up/{fault.model}"
        return
    assert response.headers["x-modelyard-deployment"] == "up/gpt-4o-mini"
    assert response.headers["x-modelyard-provider"] == "up"
    assert attempts >= 2, "the faulty deployment was tried first"
    if stream:
        events = _events(response)
        assert events[-1] == "[DONE]"
        assert json.loads(events[0])["object"] == "chat.completion.chunk"
    else:
        assert response.json()["choices"][0]["message"]["content"]


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.name)
def test_without_a_fallback_the_client_gets_the_right_error_promptly(
    gateway: GatewayProcess, fault: Fault, stream: bool
) -> None:
    started = time.monotonic()
    response = _chat(gateway, f"bare-{fault.name}", stream)
    elapsed = time.monotonic() - started
    assert elapsed < ATTEMPT_BUDGET * FIRST_TOKEN_TIMEOUT + 2.0, "no attempt outlives its timeouts"
    if stream and fault.stream_committed:
        assert response.status_code == 200
        events = _events(response)
        assert json.loads(events[-1])["error"]["code"] in fault.codes
        return
    assert response.status_code == fault.status, response.text
    error = response.json()["error"]
    assert error["code"] in fault.codes
    assert UPSTREAM_KEY not in response.text
    attempts = int(response.headers["x-modelyard-attempts"])
    if fault.status == 429:
        assert attempts == 1, "a Retry-After longer than the backoff cap is handed to the client"
        assert response.headers["retry-after"] == "7"
    else:
        assert attempts == ATTEMPT_BUDGET


@pytest.mark.parametrize("status", CLIENT_ERRORS)
def test_an_upstream_client_error_is_neither_retried_nor_failed_over(
    gateway: GatewayProcess, upstream: FakeOpenAI, status: int
) -> None:
    model = f"error-{status}"
    before = _sent(upstream, model)
    response = _chat(gateway, f"client-{status}", False)
    assert response.status_code == status, response.text
    assert response.headers["x-modelyard-attempts"] == "1"
    assert _sent(upstream, model) - before == 1


def _sent(upstream: FakeOpenAI, model: str) -> int:
    return sum(
        1 for r in list(upstream.requests) if isinstance(r.json, dict) and r.json.get("model") == model
    )


def test_no_request_outlives_its_rest_deadline(gateway: GatewayProcess) -> None:
    started = time.monotonic()
    response = _chat(gateway, "bare-timeout-before-headers", False, **{"x-modelyard-timeout": "0.4"})
    elapsed = time.monotonic() - started
    assert response.status_code == 504, response.text
    assert elapsed < 1.5
    bad = _chat(gateway, "healthy", False, **{"x-modelyard-timeout": "soon"})
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "x-modelyard-timeout"


def test_grpc_deadline_caps_the_attempts_and_trailers_name_the_deployment(gateway: GatewayProcess) -> None:
    metadata = (("authorization", f"Bearer {gateway.admin_key}"),)
    request = chat_pb2.ChatCompletionRequest(
        model="safe-500", messages=[chat_pb2.ChatMessage(role=chat_pb2.ROLE_USER, content="hi")]
    )
    with grpc.insecure_channel(gateway.grpc_target) as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        response, call = stub.CreateChatCompletion.with_call(request, metadata=metadata, timeout=10)
        assert response.choices[0].message.content
        trailers = dict(call.trailing_metadata())
        assert trailers["x-modelyard-deployment"] == "up/gpt-4o-mini"
        assert int(trailers["x-modelyard-attempts"]) >= 2
        assert float(trailers["x-modelyard-overhead-ms"]) >= 0
        started = time.monotonic()
        slow = chat_pb2.ChatCompletionRequest(model="bare-timeout-before-headers", messages=request.messages)
        with pytest.raises(grpc.RpcError) as caught:
            stub.CreateChatCompletion(slow, metadata=metadata, timeout=0.5)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 1.5


def test_response_headers_report_provider_deployment_attempts_and_overhead(gateway: GatewayProcess) -> None:
    response = _chat(gateway, "healthy", False)
    assert response.status_code == 200
    assert response.headers["x-modelyard-provider"] == "up"
    assert response.headers["x-modelyard-deployment"] == "up/gpt-4o-mini"
    assert response.headers["x-modelyard-attempts"] == "1"
    assert 0 <= float(response.headers["x-modelyard-overhead-ms"]) < 1000
    streamed = _chat(gateway, "healthy", True)
    assert streamed.headers["x-modelyard-deployment"] == "up/gpt-4o-mini"
    assert streamed.headers["content-type"].startswith("text/event-stream")


def test_a_route_splits_traffic_within_3_percent_over_2000_requests(gateway: GatewayProcess) -> None:
    served: Counter[str] = Counter()
    body = {"model": "split", "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(headers={"Authorization": f"Bearer {gateway.admin_key}"}, timeout=10) as client:
        for _ in range(SPLIT_REQUESTS):
            response = client.post(f"{gateway.base_url}/chat/completions", json=body)
            assert response.status_code == 200
            served[response.headers["x-modelyard-deployment"]] += 1
    share = served["up/gpt-4o"] / SPLIT_REQUESTS
    assert set(served) == {"up/gpt-4o", "up/gpt-4.1"}
    assert abs(share - 0.80) <= 0.03, served


def test_default_parameters_apply_only_where_the_client_sent_none(
    gateway: GatewayProcess, upstream: FakeOpenAI
) -> None:
    headers = {"Authorization": f"Bearer {gateway.admin_key}"}
    url = f"{gateway.base_url}/chat/completions"
    sent = []
    for extra in ({}, {"temperature": 0.1}):
        body = {"model": "with-defaults", "messages": [{"role": "user", "content": "hi"}], **extra}
        before = len(upstream.requests)
        assert httpx.post(url, json=body, headers=headers, timeout=10).status_code == 200
        sent.append(upstream.requests[before].json)
    assert (sent[0]["temperature"], sent[0]["top_p"]) == (0.7, 0.9)
    assert (sent[1]["temperature"], sent[1]["top_p"]) == (0.1, 0.9)


def test_mlflow_endpoints_and_routes_serve_through_the_openai_sdk(
    gateway: GatewayProcess, upstream: FakeOpenAI
) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key=gateway.admin_key, max_retries=0)
    before = len(upstream.requests)
    raw = client.chat.completions.with_raw_response.create(
        model="mlflow-chat", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["x-modelyard-deployment"] == "endpoint:mlflow-chat/gpt-4o"
    assert raw.parse().choices[0].message.content
    sent = upstream.requests[before].json
    assert (sent["model"], sent["temperature"]) == ("gpt-4o", 0.3), "the endpoint's default parameters"
    embedding = client.embeddings.create(model="mlflow-embeddings", input="hello")
    assert len(embedding.data[0].embedding) > 0
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="mlflow-chat", input="hello")
    assert caught.value.code == "unsupported_task"
    served = Counter(
        client.chat.completions.with_raw_response.create(
            model="mlflow-route", messages=[{"role": "user", "content": "hi"}]
        ).headers["x-modelyard-deployment"]
        for _ in range(40)
    )
    assert set(served) == {"endpoint:mlflow-chat/gpt-4o", "up/gpt-4o-mini"}
    listed = {m.id for m in client.models.list().data}
    assert {"mlflow-chat", "mlflow-embeddings", "mlflow-route", "split"} <= listed
