"""OpenTelemetry traces: a span per request, one per upstream attempt, and one per adapter HTTP call.

Off unless `tracing.otlp_endpoint` is set: then spans go to that OTLP/gRPC collector in batches.
The client's trace context (W3C `traceparent`/`tracestate`, REST headers or gRPC metadata) is the
request span's parent, and the adapter span's context is sent upstream. Span names and attributes
follow the GenAI semantic conventions; prompts and completions are recorded only with
`capture_content: true`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from modelyard.metering.settings import TracingConfig

PROPAGATOR = TraceContextTextMapPropagator()
TRACE_HEADERS = ("traceparent", "tracestate")


def otlp_processor(endpoint: str) -> SpanProcessor:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    insecure = not endpoint.startswith("https://")
    return BatchSpanProcessor(
        OTLPSpanExporter(endpoint=endpoint, insecure=insecure), schedule_delay_millis=500
    )


class Tracing:
    """The worker's tracer, or nothing at all when tracing is off (no span objects are made)."""

    def __init__(self, processor: SpanProcessor | None, capture_content: bool = False) -> None:
        self._provider: TracerProvider | None = None
        self._tracer: trace.Tracer | None = None
        self.capture_content = capture_content
        if processor is not None:
            self._provider = TracerProvider(resource=Resource.create({"service.name": "modelyard"}))
            self._provider.add_span_processor(processor)
            self._tracer = self._provider.get_tracer("modelyard")

    @classmethod
    def from_config(cls, config: TracingConfig) -> Tracing:
        if not config.otlp_endpoint:
            return cls(None)
        return cls(otlp_processor(config.otlp_endpoint), config.capture_content)

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    def start_request(self, carrier: Mapping[str, str], operation: str, model: str, started: float) -> Any:
        """The request span, child of the client's trace context (`carrier`: its trace headers)."""
        if self._tracer is None:
            return None
        parent = PROPAGATOR.extract(carrier) if carrier else None
        start_ns = time.time_ns() - int((time.monotonic() - started) * 1e9)
        return self._tracer.start_span(
            f"{operation} {model}",
            context=parent,
            kind=SpanKind.SERVER,
            start_time=start_ns,
            attributes={"gen_ai.operation.name": operation, "gen_ai.request.model": model},
        )

    @staticmethod
    def end_request(span: Any, attributes: Mapping[str, Any], error: str | None) -> None:
        if span is None:
            return
        span.set_attributes({k: v for k, v in attributes.items() if v is not None})
        if error is not None:
            span.set_attribute("error.type", error)
            span.set_status(Status(StatusCode.ERROR))
        span.end()

    @contextmanager
    def attempt(self, request_span: Any, number: int, deployment: str, provider: str) -> Iterator[None]:
        """An upstream attempt; the adapter's HTTP span (and the upstream) inherit it."""
        if self._tracer is None or request_span is None:
            yield
            return
        span = self._tracer.start_span(
            f"attempt {deployment}",
            context=trace.set_span_in_context(request_span),
            kind=SpanKind.INTERNAL,
            attributes={
                "modelyard.attempt": number,
                "modelyard.deployment": deployment,
                "gen_ai.provider.name": provider,
            },
        )
        with trace.use_span(span, end_on_exit=True, record_exception=False, set_status_on_exception=False):
            try:
                yield
            except BaseException as exc:
                span.set_attribute("error.type", getattr(exc, "code", None) or type(exc).__name__)
                span.set_status(Status(StatusCode.ERROR))
                raise

    @contextmanager
    def http(self, provider: str, url: str) -> Iterator[dict[str, str]]:
        """The adapter's upstream call (only inside an attempt); yields the trace headers to send."""
        current = trace.get_current_span()
        if self._tracer is None or not current.get_span_context().is_valid:
            yield {}
            return
        host = url.split("://", 1)[-1].split("/", 1)[0]
        span = self._tracer.start_span(
            f"POST {host}",
            kind=SpanKind.CLIENT,
            attributes={
                "http.request.method": "POST",
                "server.address": host,
                "modelyard.provider": provider,
            },
        )
        with trace.use_span(span, end_on_exit=True, record_exception=False, set_status_on_exception=False):
            headers: dict[str, str] = {}
            PROPAGATOR.inject(headers)
            try:
                yield headers
            except BaseException as exc:
                span.set_attribute("error.type", getattr(exc, "code", None) or type(exc).__name__)
                span.set_status(Status(StatusCode.ERROR))
                raise

    def shutdown(self) -> None:
        if self._provider is not None:
            self._provider.shutdown()


NO_TRACING = Tracing(None)
