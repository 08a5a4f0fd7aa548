"""Rate limits through the real gateway with four worker processes: exact under a concurrent burst,
token budgets settled to the provider's reported usage (streams included), per-key concurrency,
MLflow's endpoint `limit`, the 429 shape checked with the OpenAI SDK, and gRPC's QuotaFailure."""

from __future__ import annotations

import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import openai
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from modelyard.metering.meter import DRAIN_INTERVAL_S
from modelyard.metering.shm_counters import COUNTERS_FILENAME, ShmCounters
from modelyard.v1 import chat_pb2, inference_pb2_grpc

from tests.admin_fixtures import Rest, create_key, running_gateway
from tests.fakes.openai_upstream import FakeOpenAI

UPSTREAM_KEY = "sk-limits-" + secrets.token_hex(12)
BURST_LIMIT = 20
TOKEN_LIMIT = 400
CONCURRENT = 3
MLFLOW_CALLS = 5


def _config(base_url: str) -> dict[str, Any]:
    return {
        "providers": [
            {"name": "demo", "type": "demo"},
            {"name": "up", "type": "openai", "data": {"apikey": UPSTREAM_KEY, "base_url": base_url}},
        ],
        "models": [
            {"provider": "demo", "id": "burst", "alias": "burst"},
            {"provider": "demo", "id": "sdk", "alias": "sdk"},
            {"provider": "up", "id": "gpt-4o", "alias": "tokens"},
            {"provider": "up", "id": "latency-1500", "alias": "slow"},
        ],
        "endpoints": [
            {
                "name": "mlflow-limited",
                "endpoint_type": "llm/v1/chat",
                "model": {
                    "provider": "openai",
                    "name": "gpt-4o-mini",
                    "config": {"openai_api_key": UPSTREAM_KEY, "openai_api_base": base_url},
                },
                "limit": {"renewal_period": "hour", "calls": MLFLOW_CALLS},
            }
        ],
        "limits": {
            "rules": [
                {"scope": "key_model", "model": "burst", "requests": BURST_LIMIT, "per": "hour"},
                {"scope": "key_model", "model": "sdk", "requests": 1, "per": "second"},
                {"scope": "key_model", "model": "tokens", "tokens": TOKEN_LIMIT, "per": "hour"},
            ],
            "concurrent_per_key": CONCURRENT,
        },
    }


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=UPSTREAM_KEY, record=False) as fake:
        yield fake


@pytest.fixture(scope="module")
def rest(upstream: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rest]:
    workdir = Path(tmp_path_factory.mktemp("limits"))
    with (
        running_gateway(workdir, config=_config(upstream.base_url), workers=4) as gateway,
        Rest(gateway) as client,
    ):
        yield client


def _key(rest: Rest, name: str) -> str:
    """A fresh inference key: its own budgets."""
    return create_key(rest, rest.gateway.admin_key, f"{name}-{secrets.token_hex(3)}", ["inference"])[1]


def _chat(client: httpx.Client, base: str, key: str, model: str, **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "count these words please"}], **extra}
    return client.post(f"{base}/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})


def _hour_window_is_safe() -> None:
    """The burst must fall in one hour-long window: wait out the last seconds of an hour."""
    left = 3600 - time.time() % 3600
    if left < 30:
        time.sleep(left + 0.5)


def test_a_burst_over_four_workers_admits_exactly_the_limit(rest: Rest) -> None:
    key = _key(rest, "burst")
    _hour_window_is_safe()
    with httpx.Client(timeout=30) as client, ThreadPoolExecutor(12) as pool:
        responses = list(
            pool.map(lambda _: _chat(client, rest.gateway.base_url, key, "burst"), range(5 * BURST_LIMIT))
        )
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {200: BURST_LIMIT, 429: 4 * BURST_LIMIT}
    refused = next(r for r in responses if r.status_code == 429)
    error = refused.json()["error"]
    assert (error["type"], error["code"]) == ("rate_limit_error", "rate_limit_exceeded")
    assert f"limit {BURST_LIMIT}" in error["message"] and "per hour" in error["message"]
    assert refused.headers["x-ratelimit-limit-requests"] == str(BURST_LIMIT)
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert 1 <= int(refused.headers["retry-after"]) <= 3600
    admitted = sorted(
        int(r.headers["x-ratelimit-remaining-requests"]) for r in responses if r.status_code == 200
    )
    assert admitted == list(range(BURST_LIMIT))  # each admission saw the shared count


def test_the_openai_sdk_reads_the_429_and_its_retry_honours_retry_after(rest: Rest) -> None:
    key = _key(rest, "sdk")
    strict = openai.OpenAI(base_url=rest.gateway.base_url, api_key=key, max_retries=0)
    messages: Any = [{"role": "user", "content": "hi"}]
    while time.time() % 1 > 0.7:  # both calls in one second-long window
        time.sleep(0.05)
    first = strict.chat.completions.with_raw_response.create(model="sdk", messages=messages)
    assert first.headers["x-ratelimit-remaining-requests"] == "0"
    with pytest.raises(openai.RateLimitError) as refused:
        strict.chat.completions.create(model="sdk", messages=messages)
    assert refused.value.status_code == 429
    assert refused.value.code == "rate_limit_exceeded"
    assert refused.value.response.headers["retry-after"] == "1"
    assert refused.value.response.headers["x-ratelimit-reset-requests"].endswith("ms")
    patient = openai.OpenAI(base_url=rest.gateway.base_url, api_key=key, max_retries=3)
    started = time.monotonic()
    raw = patient.chat.completions.with_raw_response.create(model="sdk", messages=messages)
    assert raw.parse().choices[0].message.content
    assert raw.retries_taken >= 1 or time.monotonic() - started < 1  # a new window may have begun already


def _token_counter(rest: Rest, key_id: str) -> int:
    """The key's token counter in the gateway's shared counters, read the way a worker reads it."""
    counters = ShmCounters(rest.gateway.workdir / "data" / COUNTERS_FILENAME)
    try:
        window = int(time.time() // 3600)
        return counters.used(f"key_model:default/{key_id}/tokens|tokens|3600", window)
    finally:
        counters.close()


def _settled_token_counter(rest: Rest, key_id: str, expected: int) -> int:
    """The token counter once settlements have been applied (workers settle every DRAIN_INTERVAL_S,
    after the answers left): its value when it reaches `expected`, or after 2 s."""
    deadline = time.monotonic() + 2.0
    while (value := _token_counter(rest, key_id)) != expected and time.monotonic() < deadline:
        time.sleep(DRAIN_INTERVAL_S)
    return value


def test_token_budgets_settle_to_the_reported_usage_streams_included(rest: Rest) -> None:
    key_id, key = create_key(rest, rest.gateway.admin_key, f"tokens-{secrets.token_hex(3)}", ["inference"])
    _hour_window_is_safe()
    client = openai.OpenAI(base_url=rest.gateway.base_url, api_key=key, max_retries=0)
    messages: Any = [{"role": "user", "content": "one two three four five six"}]
    reported = 0
    unary = client.chat.completions.create(model="tokens", messages=messages)
    assert unary.usage is not None
    reported += unary.usage.total_tokens
    chunks = list(client.chat.completions.create(model="tokens", messages=messages, stream=True))
    assert all(chunk.usage is None for chunk in chunks), "usage the client did not ask for is stripped"
    assert all(chunk.choices for chunk in chunks)
    asked = list(
        client.chat.completions.create(
            model="tokens", messages=messages, stream=True, stream_options={"include_usage": True}
        )
    )
    assert asked[-1].usage is not None and not asked[-1].choices
    reported += asked[-1].usage.total_tokens
    reported += unary.usage.total_tokens  # the stripped stream reported what the same unary call did
    assert _settled_token_counter(rest, key_id, reported) == reported
    while _token_counter(rest, key_id) + 50 <= TOKEN_LIMIT:
        client.chat.completions.create(model="tokens", messages=messages)
    with pytest.raises(openai.RateLimitError) as refused:
        for _ in range(5):
            client.chat.completions.create(model="tokens", messages=messages)
    headers = refused.value.response.headers
    assert headers["x-ratelimit-limit-tokens"] == str(TOKEN_LIMIT)
    assert "tokens per hour" in refused.value.message


def test_concurrent_requests_of_one_key_are_capped_over_all_workers(rest: Rest) -> None:
    key = _key(rest, "slow")
    barrier = threading.Barrier(2 * CONCURRENT)

    def call(_: int) -> httpx.Response:
        with httpx.Client(timeout=30) as client:
            barrier.wait()
            return _chat(client, rest.gateway.base_url, key, "slow")

    with ThreadPoolExecutor(2 * CONCURRENT) as pool:
        responses = list(pool.map(call, range(2 * CONCURRENT)))
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {200: CONCURRENT, 429: CONCURRENT}, statuses
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.json()["error"]["code"] == "concurrency_limit_exceeded"
    assert refused.headers["retry-after"] == "1"
    with httpx.Client(timeout=30) as client:
        assert _chat(client, rest.gateway.base_url, key, "slow").status_code == 200  # slots were given back


def test_an_mlflow_endpoint_limit_holds_for_every_key(rest: Rest) -> None:
    keys = [_key(rest, "mlflow-a"), _key(rest, "mlflow-b")]
    _hour_window_is_safe()
    with httpx.Client(timeout=30) as client:
        statuses = [
            _chat(client, rest.gateway.base_url, keys[i % 2], "mlflow-limited").status_code
            for i in range(MLFLOW_CALLS + 3)
        ]
    assert statuses == [200] * MLFLOW_CALLS + [429] * 3


def test_grpc_callers_get_resource_exhausted_with_quota_failure(rest: Rest) -> None:
    key = _key(rest, "grpc")
    _hour_window_is_safe()
    request = chat_pb2.ChatCompletionRequest(
        model="burst",
        messages=[chat_pb2.ChatMessage(role=chat_pb2.ROLE_USER, content="hi")],
    )
    metadata = (("authorization", f"Bearer {key}"),)
    with grpc.insecure_channel(rest.gateway.grpc_target) as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        for _ in range(BURST_LIMIT):
            stub.CreateChatCompletion(request, metadata=metadata, timeout=15)
        with pytest.raises(grpc.RpcError) as refused:
            stub.CreateChatCompletion(request, metadata=metadata, timeout=15)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    status = rpc_status.from_call(refused.value)
    assert status is not None
    kinds = {detail.TypeName(): detail for detail in status.details}
    quota = error_details_pb2.QuotaFailure()
    kinds["google.rpc.QuotaFailure"].Unpack(quota)
    assert quota.violations[0].subject.startswith("key_model:default/")
    assert quota.violations[0].subject.endswith("/burst|requests")
    assert "google.rpc.RetryInfo" in kinds
    trailing = dict(refused.value.trailing_metadata() or ())
    assert trailing["x-ratelimit-remaining-requests"] == "0"
