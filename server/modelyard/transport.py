"""The one HTTP client of the data path: pooled keep-alive aiohttp sessions, SSE framing.

Tuned for the hot path (no cookie jar, no automatic decompression, large read buffer); URLs never
appear in errors because some providers put credentials in them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import aiohttp

from modelyard.errors import UpstreamError
from modelyard.metering.tracing import NO_TRACING, Tracing

READ_BUFFER = 1 << 20


@dataclass(frozen=True)
class Timeouts:
    connect: float = 10.0
    first_byte: float = 300.0
    total: float | None = None


@dataclass(frozen=True)
class AttemptLimits:
    """The running attempt's limits, set by the router around each upstream attempt."""

    connect: float
    first_byte: float
    deadline: float
    """Monotonic time at which the whole attempt (a stream included) must be over."""

    def client_timeout(self) -> aiohttp.ClientTimeout:
        remaining = max(0.001, self.deadline - time.monotonic())
        return aiohttp.ClientTimeout(
            total=remaining,
            sock_connect=min(self.connect, remaining),
            sock_read=min(self.first_byte, remaining),
        )


attempt_limits: ContextVar[AttemptLimits | None] = ContextVar("attempt_limits", default=None)


@dataclass(frozen=True)
class UpstreamResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes


class HttpTransport:
    """One per worker process; opens its session lazily inside the running event loop."""

    def __init__(self, timeouts: Timeouts = Timeouts(), tracing: Tracing = NO_TRACING) -> None:
        self._tracing = tracing
        self._timeouts = timeouts
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=0, limit_per_host=512, ttl_dns_cache=300)
            timeout = aiohttp.ClientTimeout(
                total=self._timeouts.total,
                sock_connect=self._timeouts.connect,
                sock_read=self._timeouts.first_byte,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=timeout,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                read_bufsize=READ_BUFFER,
                skip_auto_headers=("Accept-Encoding",),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def post(
        self, provider: str, url: str, headers: Mapping[str, str], body: bytes
    ) -> UpstreamResponse:
        async with self._request(provider, url, headers, body) as response:
            try:
                data = await response.read()
            except (TimeoutError, aiohttp.ClientError) as exc:
                raise _transport_error(provider, exc) from None
            return UpstreamResponse(response.status, response.headers, data)

    @asynccontextmanager
    async def stream(
        self, provider: str, url: str, headers: Mapping[str, str], body: bytes
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """The open response; the connection is closed, not pooled, if the reader stops early."""
        async with self._request(provider, url, headers, body) as response:
            try:
                yield response
            except BaseException:
                response.close()
                raise

    @asynccontextmanager
    async def _request(
        self, provider: str, url: str, headers: Mapping[str, str], body: bytes
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        limits = attempt_limits.get()
        timeout = limits.client_timeout() if limits is not None else aiohttp.helpers.sentinel
        with self._tracing.http(provider, url) as trace_headers:
            sent = {**headers, **trace_headers} if trace_headers else headers
            try:
                async with self._client().post(url, data=body, headers=sent, timeout=timeout) as response:
                    yield response
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                raise _transport_error(provider, exc) from None


def _transport_error(provider: str, exc: BaseException) -> UpstreamError:
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return UpstreamError(
            f"Provider '{provider}' did not answer in time.",
            status=504,
            code="upstream_timeout",
            provider=provider,
        )
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ServerDisconnectedError):
        return UpstreamError(
            f"Provider '{provider}' closed the connection before the response was complete.",
            status=502,
            code="upstream_disconnected",
            provider=provider,
        )
    return UpstreamError(
        f"Could not reach provider '{provider}'.",
        status=502,
        code="upstream_unreachable",
        provider=provider,
    )


async def sse_events(response: aiohttp.ClientResponse, provider: str) -> AsyncIterator[tuple[str, bytes]]:
    """Yield (event name, data) per server-sent event; data lines of one event are joined by \\n."""
    event, data = "", bytearray()
    try:
        async for raw in response.content:
            line = raw.rstrip(b"\r\n")
            if not line:
                if data:
                    yield event, bytes(data)
                event, data = "", bytearray()
            elif line.startswith(b"data:"):
                if data:
                    data += b"\n"
                data += line[6:] if line[5:6] == b" " else line[5:]
            elif line.startswith(b"event:"):
                event = line[6:].strip().decode("utf-8", "replace")
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise _transport_error(provider, exc) from None
    if data:
        yield event, bytes(data)
