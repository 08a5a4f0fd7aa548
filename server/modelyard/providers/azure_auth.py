"""Microsoft Entra ID client-credentials tokens for Azure OpenAI (control plane, not the hot path).

One `EntraTokenClient` per provider: it caches the access token and fetches a new one shortly
before expiry; concurrent requests that find no valid token share a single fetch. Failures become
`UpstreamError`s (401 when the tenant refuses the credentials, 503 when it cannot be reached or
answers garbage) whose messages never hold the client secret, the token or the token URL.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import msgspec

from modelyard.errors import UpstreamError
from modelyard.providers.openai import retry_after

SCOPE = "https://cognitiveservices.azure.com/.default"
REFRESH_MARGIN_S = 300.0
"""Fetch a new token this long before the current one expires (less for very short-lived tokens)."""
TIMEOUT = aiohttp.ClientTimeout(total=30, sock_connect=10)


class _TokenAnswer(msgspec.Struct):
    access_token: str | None = None
    expires_in: int | float | str | None = None
    error: str | None = None


@dataclass(frozen=True)
class EntraCredentials:
    authority: str
    tenant_id: str
    client_id: str
    client_secret: str


def refresh_delay(expires_in: float) -> float:
    """Seconds after issue at which to replace a token valid for `expires_in` seconds."""
    return max(0.0, expires_in - min(REFRESH_MARGIN_S, expires_in * 0.1))


class EntraTokenClient:
    def __init__(
        self, provider: str, credentials: EntraCredentials, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._provider = provider
        self._credentials = credentials
        self._clock = clock
        self._token: str | None = None
        self._refresh_at = 0.0
        self._pending: asyncio.Future[str] | None = None
        self.fetches = 0
        """How many times a token was requested from the tenant (observability and tests)."""

    @property
    def token_url(self) -> str:
        creds = self._credentials
        return f"{creds.authority.rstrip('/')}/{creds.tenant_id}/oauth2/v2.0/token"

    def invalidate(self, token: str) -> None:
        """Forget `token` (the data plane refused it); the next call fetches a new one."""
        if self._token == token:
            self._token = None

    async def token(self) -> str:
        cached = self._token
        if cached is not None and self._clock() < self._refresh_at:
            return cached
        # Every caller that finds no valid token awaits the same fetch, and shares its failure too.
        # The fetch is shielded: one client going away does not cancel it for the others.
        pending = self._pending
        if pending is None:
            pending = self._pending = asyncio.ensure_future(self._refresh())
            pending.add_done_callback(self._fetched)
        return await asyncio.shield(pending)

    def _fetched(self, task: asyncio.Future[str]) -> None:
        self._pending = None
        if not task.cancelled():
            task.exception()  # retrieved here, so a failure nobody awaited any more is not logged

    async def _refresh(self) -> str:
        issued = self._clock()
        token, expires_in = await self._fetch()
        self._token, self._refresh_at = token, issued + refresh_delay(expires_in)
        return token

    async def _fetch(self) -> tuple[str, float]:
        self.fetches += 1
        creds = self._credentials
        form = {
            "grant_type": "client_credentials",
            "client_id": creds.client_id,
            "client_secret": creds.client_secret,
            "scope": SCOPE,
        }
        try:
            async with (
                aiohttp.ClientSession(timeout=TIMEOUT, cookie_jar=aiohttp.DummyCookieJar()) as session,
                session.post(self.token_url, data=form, headers={"Accept": "application/json"}) as response,
            ):
                status, headers, body = response.status, dict(response.headers), await response.read()
        except (TimeoutError, aiohttp.ClientError, OSError):
            raise self._unavailable("could not be reached") from None
        try:
            answer = msgspec.json.decode(body, type=_TokenAnswer)
        except msgspec.MsgspecError:
            answer = None
        if status >= 400 or answer is None or not answer.access_token:
            if 400 <= status < 500 and status != 429:
                reason = (
                    f" ({answer.error})" if answer and answer.error and answer.error.isidentifier() else ""
                )
                raise UpstreamError(
                    f"Provider '{self._provider}': Microsoft Entra ID refused the gateway's client "
                    f"credentials{reason}.",
                    status=401,
                    code="provider_authentication_failed",
                    upstream_status=status,
                    provider=self._provider,
                )
            error = self._unavailable(f"answered HTTP {status}" if status >= 400 else "sent no access token")
            error.retry_after = retry_after(headers)
            error.upstream_status = status
            raise error
        try:
            expires_in = float(answer.expires_in) if answer.expires_in is not None else 3600.0
        except ValueError:
            expires_in = 3600.0
        return answer.access_token, expires_in

    def _unavailable(self, what: str) -> UpstreamError:
        return UpstreamError(
            f"Provider '{self._provider}': the Microsoft Entra ID token endpoint {what}.",
            status=503,
            code="provider_token_unavailable",
            provider=self._provider,
        )
