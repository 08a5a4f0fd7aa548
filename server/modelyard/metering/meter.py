"""One request's metering, from admission to its record: rate limits, the ledger, metrics and the
JSON access log. The gateway calls `begin` before the upstream call and `finish` exactly once after
(for streams: when the stream ends, fails or the client goes away)."""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import IO, Any

import msgspec
import orjson

from modelyard.errors import GatewayError
from modelyard.metering import metrics
from modelyard.metering.ledger import Ledger, UsageRecord
from modelyard.metering.limiter import NO_LIMITS, Admission, RateLimited, RateLimiter
from modelyard.metering.prices import PriceTable
from modelyard.routing.call import CallRecord
from modelyard.tenancy import Principal

CLIENT_CLOSED = GatewayError("The client closed the request.", status=499, code="client_closed_request")
INTERNAL = GatewayError("The gateway had an internal error.", status=500, code="internal_error")


@dataclass
class Ticket:
    principal: Principal
    model: str
    operation: str
    stream: bool
    record: CallRecord
    at: float = field(default_factory=time.time)
    admission: Admission = field(default_factory=lambda: NO_LIMITS)
    first_chunk_at: float | None = None
    usage: Any = None
    done: bool = False


@dataclass(frozen=True)
class AccessLog:
    """One JSON line per request on `out` (the worker's stdout, next to Envoy's access log)."""

    out: IO[str] = field(default_factory=lambda: sys.stdout)
    content_for: frozenset[str] = frozenset()

    def write(self, entry: dict[str, Any]) -> None:
        self.out.write(orjson.dumps(entry).decode() + "\n")
        self.out.flush()


def _tokens(usage: Any) -> tuple[int, int, int]:
    """(prompt, completion, cached) of a chat/completions Usage or an embeddings usage."""
    if usage is None:
        return 0, 0, 0
    details = getattr(usage, "prompt_tokens_details", None)
    cached = details.cached_tokens if details and isinstance(details.cached_tokens, int) else 0
    return usage.prompt_tokens, getattr(usage, "completion_tokens", 0), cached


class Meter:
    def __init__(
        self,
        limiter: RateLimiter | None,
        ledger: Ledger | None,
        prices: PriceTable,
        *,
        metrics_on: bool = True,
        access_log: AccessLog | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limiter = limiter
        self._ledger = ledger
        self._prices = prices
        self._metrics = metrics_on
        self._access_log = access_log
        self._clock = clock

    @property
    def wants_usage(self) -> bool:
        """Whether streams should ask their upstream for usage even when the client did not."""
        counts_tokens = self._limiter is not None and self._limiter.counts_tokens
        return self._ledger is not None or self._metrics or counts_tokens

    def begin(
        self, principal: Principal, model: str, operation: str, tokens: int, record: CallRecord, stream: bool
    ) -> Ticket:
        """Admit the request under its limits (RateLimited otherwise, recorded like any failure)."""
        ticket = Ticket(principal, model, operation, stream, record)
        if self._metrics:
            metrics.in_flight.inc()
        if self._limiter is not None:
            try:
                ticket.admission = self._limiter.admit(principal, model, tokens)
            except RateLimited as refusal:
                if self._metrics:
                    metrics.rate_limited.labels(refusal.quota_subject.split(":", 1)[0]).inc()
                self.finish(ticket, refusal)
                raise
            record.limit_headers = ticket.admission.headers
        return ticket

    def begin_unlimited(
        self, principal: Principal, model: str, operation: str, record: CallRecord, stream: bool
    ) -> Ticket:
        """A ticket for a request refused before admission (its failure is still recorded)."""
        if self._metrics:
            metrics.in_flight.inc()
        return Ticket(principal, model, operation, stream, record)

    def chunk(self, ticket: Ticket, usage: Any) -> None:
        if ticket.first_chunk_at is None:
            ticket.first_chunk_at = self._clock()
        if usage is not None and usage is not msgspec.UNSET:
            ticket.usage = usage

    def finish(self, ticket: Ticket, error: GatewayError | None = None, usage: Any = None) -> None:
        if ticket.done:
            return
        ticket.done = True
        usage = usage or ticket.usage
        prompt, completion, cached = _tokens(usage)
        if self._limiter is not None:
            self._limiter.finish(ticket.admission, prompt + completion if usage is not None else None)
        record = ticket.record
        deployment = record.deployment
        status = error.status if error is not None else 200
        latency = self._clock() - record.started
        ttft = ticket.first_chunk_at - record.started if ticket.first_chunk_at is not None else None
        model_id = deployment.model_id if deployment is not None else ""
        cost = self._prices.cost(model_id, prompt, completion, cached) if usage is not None else 0.0
        if self._metrics:
            self._observe(ticket, status, error, latency, ttft, (prompt, completion) if usage else None)
        if self._ledger is not None:
            self._ledger.record(
                UsageRecord(
                    ticket.at,
                    record.request_id,
                    ticket.principal.tenant_id,
                    ticket.principal.key_id,
                    record.target or ticket.model[:256],
                    deployment.provider.name if deployment is not None else "",
                    deployment.label if deployment is not None else "",
                    prompt,
                    completion,
                    cached,
                    round(latency * 1000, 3),
                    round(ttft * 1000, 3) if ttft is not None else None,
                    status,
                    record.attempts,
                    cost,
                    ticket.operation,
                )
            )
            if self._metrics:
                metrics.ledger_queue.set(self._ledger.depth)
        if self._access_log is not None:
            self._log(ticket, status, error, latency, ttft, (prompt, completion, cached))

    def _observe(
        self,
        ticket: Ticket,
        status: int,
        error: GatewayError | None,
        latency: float,
        ttft: float | None,
        tokens: tuple[int, int] | None,
    ) -> None:
        record = ticket.record
        model = record.target or metrics.NO_MODEL
        provider = record.deployment.provider.type_name if record.deployment is not None else metrics.NO_MODEL
        genai = (ticket.operation, provider, model)
        metrics.in_flight.dec()
        metrics.requests.labels(model, ticket.operation, f"{status // 100}xx").inc()
        error_type = metrics.error_class(status, error.code) if error is not None else ""
        metrics.operation_duration.labels(*genai, error_type).observe(latency)
        if error is not None:
            metrics.errors.labels(error_type).inc()
        if tokens is not None:
            metrics.token_usage.labels(*genai, "input").observe(tokens[0])
            metrics.token_usage.labels(*genai, "output").observe(tokens[1])
        if ttft is not None:
            metrics.time_to_first_token.labels(*genai).observe(ttft)
        if record.attempts:
            metrics.upstream_attempts.labels(provider).inc(record.attempts)

    def _log(
        self,
        ticket: Ticket,
        status: int,
        error: GatewayError | None,
        latency: float,
        ttft: float | None,
        tokens: tuple[int, int, int],
    ) -> None:
        assert self._access_log is not None
        record = ticket.record
        deployment = record.deployment
        self._access_log.write(
            {
                "log": "modelyard.access",
                "time": round(ticket.at, 3),
                "request_id": record.request_id,
                "tenant_id": ticket.principal.tenant_id,
                "key_id": ticket.principal.key_id,
                "operation": ticket.operation,
                "stream": ticket.stream,
                "model": record.target,
                "provider": deployment.provider.name if deployment is not None else None,
                "deployment": deployment.label if deployment is not None else None,
                "status": status,
                "error_code": error.code if error is not None else None,
                "attempts": record.attempts,
                "prompt_tokens": tokens[0],
                "completion_tokens": tokens[1],
                "cached_tokens": tokens[2],
                "latency_ms": round(latency * 1000, 3),
                "ttft_ms": round(ttft * 1000, 3) if ttft is not None else None,
            }
        )


async def metered_stream(
    meter: Meter, ticket: Ticket, chunks: AsyncIterator[Any], client_wants_usage: bool
) -> AsyncIterator[Any]:
    """Pass a stream's chunks on while metering it; usage the client did not ask for is stripped
    (the final usage-only chunk dropped, the `usage` field of the others removed)."""
    error: GatewayError | None = None
    try:
        async for chunk in chunks:
            usage = chunk.usage
            meter.chunk(ticket, usage)
            if not client_wants_usage and usage is not msgspec.UNSET:
                if not chunk.choices and usage is not None:
                    continue
                chunk = msgspec.structs.replace(chunk, usage=msgspec.UNSET)
            yield chunk
    except GatewayError as failure:
        error = failure
        raise
    except Exception:
        error = INTERNAL
        raise
    except BaseException:  # the client went away: GeneratorExit or cancellation
        error = CLIENT_CLOSED
        raise
    finally:
        meter.finish(ticket, error)
