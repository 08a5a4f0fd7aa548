"""Prometheus metrics, named after the OpenTelemetry GenAI conventions where they have a name.

Workers run prometheus_client in multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set by the
supervisor, which serves /metrics summed over workers). Labels hold only bounded values: names
from the config or the store (models, providers, deployments), operations, status classes;
never a client's raw input, a key or a secret.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)
"""OpenTelemetry's advised buckets for gen_ai.client.token.usage."""
SECONDS_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
"""OpenTelemetry's advised buckets for gen_ai durations."""
BREAKER_VALUES = {"closed": 0, "half_open": 1, "open": 2}
NO_MODEL = "(none)"

GENAI = ("gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model")

token_usage = Histogram(
    "gen_ai_client_token_usage",
    "Tokens used per request (gen_ai.client.token.usage), by token type.",
    [*GENAI, "gen_ai_token_type"],
    buckets=TOKEN_BUCKETS,
)
operation_duration = Histogram(
    "gen_ai_client_operation_duration_seconds",
    "Whole request duration at the gateway (gen_ai.client.operation.duration).",
    [*GENAI, "error_type"],
    buckets=SECONDS_BUCKETS,
)
time_to_first_token = Histogram(
    "gen_ai_server_time_to_first_token_seconds",
    "Time to the first chunk of a stream (gen_ai.server.time_to_first_token).",
    list(GENAI),
    buckets=SECONDS_BUCKETS,
)
requests = Counter(
    "modelyard_requests_total",
    "Requests answered, by model name and status class.",
    ["model", "operation", "status_class"],
)
errors = Counter("modelyard_errors_total", "Failed requests by error class.", ["error_class"])
in_flight = Gauge("modelyard_in_flight_requests", "Requests in flight.", multiprocess_mode="livesum")
upstream_attempts = Counter(
    "modelyard_upstream_attempts_total",
    "Upstream attempts made (retries and failovers included).",
    ["provider"],
)
rate_limited = Counter(
    "modelyard_rate_limit_rejections_total", "Requests refused by a rate limit.", ["scope"]
)
breaker_state = Gauge(
    "modelyard_circuit_breaker_state",
    "Circuit breaker per deployment: 0 closed, 1 half-open, 2 open (the worst over workers).",
    ["deployment"],
    multiprocess_mode="max",
)
ledger_queue = Gauge(
    "modelyard_ledger_queue_depth", "Usage records waiting for the database.", multiprocess_mode="livesum"
)
ledger_dropped = Counter(
    "modelyard_ledger_dropped_total", "Usage records dropped because the queue was full."
)


def error_class(status: int, code: str | None) -> str:
    if status == 429:
        return (
            "rate_limited"
            if code in ("rate_limit_exceeded", "concurrency_limit_exceeded")
            else "upstream_rate_limited"
        )
    if status in (408, 504):
        return "timeout"
    if status == 499:
        return "cancelled"
    if status < 500:
        return "client_error"
    return "internal" if status == 500 else "upstream_error"


def set_breakers(states: Iterable[tuple[str, str]]) -> None:
    for deployment, state in states:
        breaker_state.labels(deployment).set(BREAKER_VALUES.get(state, 0))


class MetricsBuffer:
    """What requests add to the metrics, gathered in plain dicts and written to the shared metric
    files by `flush` (once a second): the request path does no locking and no mmap writes."""

    def __init__(self) -> None:
        self.in_flight = 0
        self._counts: defaultdict[tuple[Counter, tuple[str, ...]], float] = defaultdict(float)
        self._histograms: dict[tuple[Histogram, tuple[str, ...]], _Buckets] = {}

    def count(self, counter: Counter, labels: tuple[str, ...], amount: float = 1.0) -> None:
        self._counts[(counter, labels)] += amount

    def observe(self, histogram: Histogram, labels: tuple[str, ...], value: float) -> None:
        buckets = self._histograms.get((histogram, labels))
        if buckets is None:
            buckets = self._histograms[(histogram, labels)] = _Buckets(histogram.labels(*labels))
        buckets.add(value)

    def flush(self) -> None:
        counts, self._counts = self._counts, defaultdict(float)
        for (counter, labels), amount in counts.items():
            counter.labels(*labels).inc(amount)
        for buckets in self._histograms.values():
            buckets.flush()
        in_flight.set(self.in_flight)


class _Buckets:
    """One histogram child's observations since the last flush, as bucket counts and a sum."""

    def __init__(self, child: Any) -> None:
        self._child = child
        self._bounds: list[float] = list(getattr(child, "_upper_bounds", ()))
        self._counts = [0] * len(self._bounds)
        self._values: list[float] = []
        self._sum = 0.0

    def add(self, value: float) -> None:
        if self._bounds:
            self._counts[bisect.bisect_left(self._bounds, value)] += 1
            self._sum += value
        else:
            self._values.append(value)

    def flush(self) -> None:
        if not self._bounds:  # a prometheus_client without the internals used below
            for value in self._values:
                self._child.observe(value)
            self._values.clear()
            return
        if not any(self._counts):
            return
        # prometheus_client's Histogram keeps a value per bucket and one for the sum; adding to
        # them in bulk is what `observe` does one observation at a time
        for index, count in enumerate(self._counts):
            if count:
                self._child._buckets[index].inc(count)
        self._child._sum.inc(self._sum)
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0
