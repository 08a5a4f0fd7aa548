"""What one gateway call did, for its response headers (REST) and trailing metadata (gRPC)."""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from modelyard.routing.deployment import Deployment

PROVIDER_HEADER = "x-modelyard-provider"
DEPLOYMENT_HEADER = "x-modelyard-deployment"
ATTEMPTS_HEADER = "x-modelyard-attempts"
OVERHEAD_HEADER = "x-modelyard-overhead-ms"
TIMEOUT_HEADER = "x-modelyard-timeout"
"""REST clients' deadline in seconds (gRPC clients set a gRPC deadline instead)."""


def _ascii(value: str) -> str:
    return value.encode("ascii", "backslashreplace").decode("ascii")


@dataclass
class CallRecord:
    started: float = field(default_factory=time.monotonic)
    deadline: float | None = None
    """Monotonic time by which the client wants an answer."""
    deployment: Deployment | None = None
    attempts: int = 0
    upstream_seconds: float = 0.0
    """Time spent waiting on upstreams, until the answer or a stream's first chunk, over all attempts."""
    answered_at: float | None = None
    request_id: str = ""
    """Envoy's x-request-id (or one made up for direct gRPC calls): ties the access logs together."""
    target: str | None = None
    """The model name the call resolved to (an alias, endpoint or route), once it did."""
    limit_headers: tuple[tuple[str, str], ...] = ()
    """OpenAI's x-ratelimit-* headers of the limits the call was admitted under."""
    trace_headers: dict[str, str] = field(default_factory=dict)
    """The client's W3C trace context (traceparent, tracestate), if it sent one."""
    span: Any = None
    """The request's trace span, when tracing is on."""

    def remaining(self, now: float) -> float | None:
        return None if self.deadline is None else self.deadline - now

    def metadata(self) -> tuple[tuple[str, str], ...]:
        items = [(ATTEMPTS_HEADER, str(self.attempts))]
        if self.deployment is not None:
            items.append((PROVIDER_HEADER, _ascii(self.deployment.provider.name)))
            items.append((DEPLOYMENT_HEADER, _ascii(self.deployment.label)))
        if self.answered_at is not None:
            overhead = max(0.0, self.answered_at - self.started - self.upstream_seconds)
            items.append((OVERHEAD_HEADER, f"{overhead * 1000:.2f}"))
        items.extend(self.limit_headers)
        return tuple(items)


current_call: ContextVar[CallRecord | None] = ContextVar("current_call", default=None)


def call_record() -> CallRecord:
    """The running call's record (set by the RPC interceptor), or a fresh one outside a call."""
    record = current_call.get()
    return record if record is not None else CallRecord()
