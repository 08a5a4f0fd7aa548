"""One request's metering, from admission to its record: rate limits, the ledger, metrics and the
JSON access log. The gateway calls `begin` before the upstream call and `finish` exactly once after
(for streams: when the stream ends, fails or the client goes away).

Only what the answer depends on happens on the request: the admission (and its rate-limit
headers) and giving back a concurrency slot. The rest (token settlement, the ledger record,
metrics, the access-log line) is queued and done for every request of the last `DRAIN_INTERVAL_S`
at once: the same work, done in one tight loop instead of interleaved with everything else a
worker does, costs a fraction of the CPU."""

from __future__ import annotations

import asyncio
import contextlib
import logging
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
from modelyard.metering.tracing import NO_TRACING, Tracing
from modelyard.routing.call import CallRecord
from modelyard.tenancy import Principal

log = logging.getLogger("modelyard.metering")

CLIENT_CLOSED = GatewayError("The client closed the request.", status=499, code="client_closed_request")
INTERNAL = GatewayError("The gateway had an internal error.", status=500, code="internal_error")


_STATUS_CLASS = {n: f"{n}xx" for n in range(1, 6)}
DRAIN_INTERVAL_S = 0.05
DRAIN_BATCH = 512
"""Finished requests waiting for their accounting beyond this are accounted at once."""


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
    content: dict[str, Any] | None = None
    """Prompt and completion, kept only for a model whose contents are logged or traced."""
    streamed: list[str] | None = None
    """A stream's text as it passes, when contents are kept."""
    ended: float = 0.0
    error: GatewayError | None = None


@dataclass(frozen=True)
class AccessLog:
    """One JSON line per request on `out` (the worker's stdout, next to Envoy's access log),
    buffered: the worker flushes it every second and on exit."""

    out: IO[bytes] = field(default_factory=lambda: sys.stdout.buffer)
    content_for: frozenset[str] = frozenset()

    def write(self, entry: dict[str, Any]) -> None:
        self.out.write(orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE))

    def flush(self) -> None:
        self.out.flush()


def _reported(usage: Any) -> int | None:
    """The tokens a call used by its provider's report (None without a report)."""
    if usage is None:
        return None
    prompt, completion, _ = _tokens(usage)
    return prompt + completion


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
        tracing: Tracing = NO_TRACING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tracing = tracing
        self._limiter = limiter
        self._ledger = ledger
        self._prices = prices
        self._buffer = metrics.MetricsBuffer() if metrics_on else None
        self._access_log = access_log
        self._clock = clock
        self._finished: list[Ticket] = []
        self._draining: asyncio.Task[None] | None = None

    @property
    def wants_usage(self) -> bool:
        """Whether streams should ask their upstream for usage even when the client did not."""
        counts_tokens = self._limiter is not None and self._limiter.counts_tokens
        return self._ledger is not None or self._buffer is not None or counts_tokens

    def begin(
        self, principal: Principal, model: str, operation: str, tokens: int, record: CallRecord, stream: bool
    ) -> Ticket:
        """Admit the request under its limits (RateLimited otherwise, recorded like any failure)."""
        ticket = self._ticket(principal, model, operation, record, stream)
        if self._limiter is not None:
            try:
                ticket.admission = self._limiter.admit(principal, model, tokens)
            except RateLimited as refusal:
                if self._buffer is not None:
                    self._buffer.count(metrics.rate_limited, (refusal.quota_subject.split(":", 1)[0],))
                self.finish(ticket, refusal)
                raise
            record.limit_headers = ticket.admission.headers
        return ticket

    def begin_unlimited(
        self, principal: Principal, model: str, operation: str, record: CallRecord, stream: bool
    ) -> Ticket:
        """A ticket for a request refused before admission (its failure is still recorded)."""
        return self._ticket(principal, model, operation, record, stream)

    def _ticket(
        self, principal: Principal, model: str, operation: str, record: CallRecord, stream: bool
    ) -> Ticket:
        if self._buffer is not None:
            self._buffer.in_flight += 1
        if self.tracing.enabled:
            record.span = self.tracing.start_request(
                record.trace_headers, operation, record.target or "unknown", record.started
            )
        return Ticket(principal, model, operation, stream, record)

    def flush_log(self) -> None:
        if self._access_log is not None:
            self._access_log.flush()

    def flush_metrics(self) -> None:
        if self._buffer is not None:
            self._buffer.flush()

    def keeps_content(self, model: str) -> bool:
        """Whether this model's prompts and completions go to the access log or to traces."""
        logged = self._access_log is not None and model in self._access_log.content_for
        return logged or self.tracing.capture_content

    def chunk(self, ticket: Ticket, usage: Any) -> None:
        if ticket.first_chunk_at is None:
            ticket.first_chunk_at = self._clock()
        if usage is not None and usage is not msgspec.UNSET:
            ticket.usage = usage

    def finish(self, ticket: Ticket, error: GatewayError | None = None, usage: Any = None) -> None:
        if ticket.done:
            return
        ticket.done = True
        ticket.ended = self._clock()
        ticket.error = error
        if usage is not None:
            ticket.usage = usage
        if self._limiter is not None:
            self._limiter.release(ticket.admission)
        if ticket.streamed is not None and ticket.content is not None:
            ticket.content["completion"] = "".join(ticket.streamed)
        if ticket.record.span is not None:
            tokens = _tokens(ticket.usage)[:2] if ticket.usage is not None else None
            self._end_span(ticket, error.status if error is not None else 200, error, tokens)
        self._finished.append(ticket)
        if len(self._finished) >= DRAIN_BATCH:
            self.drain()

    def start(self) -> None:
        """Account finished requests every DRAIN_INTERVAL_S (on the running event loop)."""
        self._draining = asyncio.get_running_loop().create_task(self._drain_every(DRAIN_INTERVAL_S))

    async def _drain_every(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                self.drain()
            except Exception:  # one bad drain must not end the accounting of every later request
                log.exception("accounting finished requests failed")

    async def stop(self) -> None:
        if self._draining is not None:
            self._draining.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._draining
        self.drain()

    def drain(self) -> None:
        """Settle, record, observe and log every request finished since the last drain, and give
        back the limiter's reserves."""
        finished, self._finished = self._finished, []
        if self._limiter is not None:
            try:
                self._limiter.settle([(t.admission, _reported(t.usage)) for t in finished])
            except Exception:  # the requests are still recorded and logged
                log.exception("settling rate-limit charges failed; the counters keep the estimates")
        for ticket in finished:
            self._account(ticket)

    def _account(self, ticket: Ticket) -> None:
        usage, error, record = ticket.usage, ticket.error, ticket.record
        prompt, completion, cached = _tokens(usage)
        deployment = record.deployment
        status = error.status if error is not None else 200
        latency = ticket.ended - record.started
        ttft = ticket.first_chunk_at - record.started if ticket.first_chunk_at is not None else None
        if self._buffer is not None:
            self._observe(ticket, status, error, latency, ttft, (prompt, completion) if usage else None)
        if self._ledger is not None:
            model_id = deployment.model_id if deployment is not None else ""
            cost = self._prices.cost(model_id, prompt, completion, cached) if usage is not None else 0.0
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
        if self._access_log is not None:
            self._log(ticket, status, error, latency, ttft, (prompt, completion, cached))

    def _end_span(
        self, ticket: Ticket, status: int, error: GatewayError | None, tokens: tuple[int, int] | None
    ) -> None:
        record, deployment = ticket.record, ticket.record.deployment
        span = record.span
        if self.tracing.capture_content and ticket.content is not None:
            span.add_event("gen_ai.content", {k: str(v) for k, v in ticket.content.items()})
        attributes = {
            "gen_ai.provider.name": deployment.provider.type_name if deployment is not None else None,
            "gen_ai.response.model": deployment.model_id if deployment is not None else None,
            "gen_ai.usage.input_tokens": tokens[0] if tokens else None,
            "gen_ai.usage.output_tokens": tokens[1] if tokens else None,
            "modelyard.deployment": deployment.label if deployment is not None else None,
            "modelyard.attempts": record.attempts,
            "modelyard.request_id": record.request_id,
            "rpc.response.status_code": status,
        }
        self.tracing.end_request(span, attributes, (error.code or error.type) if error is not None else None)

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
        buffer = self._buffer
        assert buffer is not None
        buffer.in_flight -= 1
        buffer.count(metrics.requests, (model, ticket.operation, _STATUS_CLASS[status // 100]))
        error_type = metrics.error_class(status, error.code) if error is not None else ""
        buffer.observe(metrics.operation_duration, (*genai, error_type), latency)
        if error is not None:
            buffer.count(metrics.errors, (error_type,))
        if tokens is not None:
            buffer.observe(metrics.token_usage, (*genai, "input"), tokens[0])
            buffer.observe(metrics.token_usage, (*genai, "output"), tokens[1])
        if ttft is not None:
            buffer.observe(metrics.time_to_first_token, genai, ttft)
        if record.attempts:
            buffer.count(metrics.upstream_attempts, (provider,), record.attempts)

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
                **(
                    ticket.content
                    if ticket.content is not None and record.target in self._access_log.content_for
                    else {}
                ),
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
            if ticket.streamed is not None:
                ticket.streamed.extend(_chunk_text(chunk))
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


def _chunk_text(chunk: Any) -> list[str]:
    """The text a chat or completions chunk adds."""
    texts = []
    for choice in chunk.choices:
        delta = getattr(choice, "delta", None)
        text = getattr(delta, "content", None) if delta is not None else getattr(choice, "text", None)
        if isinstance(text, str):
            texts.append(text)
    return texts
