"""Traces through the real gateway to a collector speaking OTLP/gRPC (an in-process fake with the
official proto stubs): one trace per request with the request, attempt and upstream-call spans,
the client's trace context as parent, the context sent on upstream, and no contents by default."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from tests.admin_fixtures import running_gateway
from tests.fakes.openai_upstream import FakeOpenAI
from tests.gateway_process import free_port

UPSTREAM_KEY = "sk-trace-" + secrets.token_hex(12)
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
PROMPT = "a very private prompt"


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans: list[Any] = []
        self._lock = threading.Lock()

    def Export(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self._lock:
            for resource in request.resource_spans:
                for scope in resource.scope_spans:
                    self.spans.extend(scope.spans)
        return trace_service_pb2.ExportTraceServiceResponse()

    def trace(self, trace_id: str) -> list[Any]:
        with self._lock:
            return [span for span in self.spans if span.trace_id.hex() == trace_id]


@pytest.fixture(scope="module")
def collector() -> Iterator[tuple[Collector, str]]:
    server = grpc.server(futures.ThreadPoolExecutor(4))
    servicer = Collector()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)
    address = f"127.0.0.1:{free_port()}"
    server.add_insecure_port(address)
    server.start()
    yield servicer, address
    server.stop(0)


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=UPSTREAM_KEY) as fake:
        yield fake


@pytest.fixture(scope="module")
def base_url(
    collector: tuple[Collector, str], upstream: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    config = {
        "providers": [
            {"name": "up", "type": "openai", "data": {"apikey": UPSTREAM_KEY, "base_url": upstream.base_url}}
        ],
        "models": [
            {"provider": "up", "id": "gpt-4o", "alias": "chat"},
            {"provider": "up", "id": "error-500", "alias": "flaky"},
            {"provider": "up", "id": "gpt-4o-mini", "alias": "flaky"},
        ],
        "routing": {"policies": {"flaky": {"strategy": "round_robin"}}, "seed": 1},
        "tracing": {"otlp_endpoint": f"http://{collector[1]}"},
    }
    with running_gateway(Path(tmp_path_factory.mktemp("tracing")), config=config) as gateway:
        yield gateway.base_url, gateway.admin_key


def _spans(collector: Collector, trace_id: str, count: int) -> list[Any]:
    deadline = time.monotonic() + 15  # spans are exported in batches
    while len(collector.trace(trace_id)) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    return collector.trace(trace_id)


def _call(base_url: tuple[str, str], model: str, trace_id: str, span_id: str) -> httpx.Response:
    url, key = base_url
    headers = {"Authorization": f"Bearer {key}", "traceparent": f"00-{trace_id}-{span_id}-01"}
    body = {"model": model, "messages": [{"role": "user", "content": PROMPT}]}
    return httpx.post(f"{url}/chat/completions", json=body, headers=headers, timeout=30)


def test_one_trace_per_request_with_its_spans_under_the_clients_context(
    base_url: tuple[str, str], collector: tuple[Collector, str], upstream: FakeOpenAI
) -> None:
    response = _call(base_url, "chat", CLIENT_TRACE, CLIENT_SPAN)
    assert response.status_code == 200, response.text
    spans = _spans(collector[0], CLIENT_TRACE, 3)
    by_name = {span.name: span for span in spans}
    request = by_name["chat chat"]
    assert request.parent_span_id.hex() == CLIENT_SPAN
    attempt = by_name["attempt up/gpt-4o"]
    assert attempt.parent_span_id == request.span_id
    upstream_call = next(span for span in spans if span.name.startswith("POST "))
    assert upstream_call.parent_span_id == attempt.span_id
    attributes = {a.key: a.value for a in request.attributes}
    assert attributes["gen_ai.operation.name"].string_value == "chat"
    assert attributes["gen_ai.provider.name"].string_value == "openai"
    assert attributes["gen_ai.usage.input_tokens"].int_value > 0
    assert attributes["modelyard.attempts"].int_value == 1
    sent = upstream.requests[-1].headers
    assert sent["traceparent"].split("-")[1] == CLIENT_TRACE
    assert sent["traceparent"].split("-")[2] == upstream_call.span_id.hex()
    assert all(PROMPT not in str(span) for span in spans), "contents are not traced unless switched on"


def test_a_failed_attempt_is_its_own_span(
    base_url: tuple[str, str], collector: tuple[Collector, str]
) -> None:
    traces = []
    for _ in range(2):  # round robin: one of the two starts on the failing deployment
        trace_id = secrets.token_hex(16)
        assert _call(base_url, "flaky", trace_id, secrets.token_hex(8)).status_code == 200
        traces.append(trace_id)
    spans = [_spans(collector[0], trace_id, 3) for trace_id in traces]
    failed_over = next(trace for trace in spans if sum(s.name.startswith("attempt ") for s in trace) == 2)
    attempts = sorted(
        (s for s in failed_over if s.name.startswith("attempt ")), key=lambda s: s.start_time_unix_nano
    )
    assert attempts[0].name == "attempt up/error-500" and attempts[0].status.code == 2  # STATUS_CODE_ERROR
    assert attempts[1].name == "attempt up/gpt-4o-mini" and attempts[1].status.code != 2
    request = next(s for s in failed_over if s.name == "chat flaky")
    assert {a.key: a.value for a in request.attributes}["modelyard.attempts"].int_value == 2
