"""IBM Cloud IAM: an API key exchanged for a short-lived bearer token, cached until shortly before
it expires and fetched once however many requests need it at the same moment.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from urllib.parse import urlencode

import msgspec

from modelyard.errors import UpstreamError, upstream_status_to_client
from modelyard.providers.openai import retry_after
from modelyard.transport import HttpTransport

GRANT_TYPE = "urn:ibm:params:oauth:grant-type:apikey"
EARLY_REFRESH_S = 60.0
EARLY_REFRESH_SHARE = 0.1


class IamToken(msgspec.Struct):
    access_token: str
    expires_in: float | None = None
    expiration: float | None = None
    token_type: str = "Bearer"


class IamErrorBody(msgspec.Struct, rename="camel"):
    error_code: str | None = None
    error_message: str | None = None


def refresh_at(token: IamToken, now: float) -> float:
    """When to fetch a new token: 60 s or 10 % of the lifetime (the smaller) before it expires."""
    if token.expires_in is not None:
        lifetime = max(0.0, token.expires_in)
    elif token.expiration is not None:
        lifetime = max(0.0, token.expiration - time.time())
    else:
        lifetime = 0.0
    return now + lifetime - min(EARLY_REFRESH_S, lifetime * EARLY_REFRESH_SHARE)


class IamTokenClient:
    """One per provider instance; `token()` is safe to call from any number of concurrent tasks."""

    def __init__(
        self,
        transport: HttpTransport,
        provider: str,
        auth_url: str,
        apikey: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._transport = transport
        self._provider = provider
        self._auth_url = auth_url
        self._apikey = apikey
        self._clock = clock
        self._token: str | None = None
        self._refresh_at = 0.0
        self._pending: asyncio.Future[str] | None = None
        self.fetches = 0

    async def token(self) -> str:
        if self._token is not None and self._clock() < self._refresh_at:
            return self._token
        if self._pending is None or self._pending.done():
            # One fetch, shared by every caller that arrives while it runs.
            self._pending = asyncio.ensure_future(self._fetch())
        return await asyncio.shield(self._pending)

    def invalidate(self, token: str) -> None:
        """Forget `token` (the data plane refused it), unless a newer one has replaced it already."""
        if self._token == token:
            self._token = None

    async def _fetch(self) -> str:
        self.fetches += 1
        form = {"grant_type": GRANT_TYPE, "apikey": self._apikey, "response_type": "cloud_iam"}
        body = urlencode(form).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
        started = self._clock()
        response = await self._transport.post(self._provider, self._auth_url, headers, body)
        if response.status >= 400:
            raise self._error(response.status, response.body, response.headers)
        try:
            token = msgspec.json.decode(response.body, type=IamToken)
        except msgspec.MsgspecError:
            raise UpstreamError(
                f"Provider '{self._provider}': IBM Cloud IAM sent a token response that is not valid JSON.",
                status=502,
                code="bad_upstream_response",
                provider=self._provider,
            ) from None
        self._token = token.access_token
        self._refresh_at = refresh_at(token, started)
        return token.access_token

    def _error(self, status: int, body: bytes, headers: Mapping[str, str]) -> UpstreamError:
        try:
            detail = msgspec.json.decode(body, type=IamErrorBody)
        except msgspec.MsgspecError:
            detail = IamErrorBody()
        if status in (400, 401, 403):
            # IAM answers 400 (BXNIM0415E) for an unknown API key: the gateway's credential failed.
            return UpstreamError(
                f"Provider '{self._provider}': IBM Cloud IAM rejected the gateway's API key.",
                status=401,
                code="provider_authentication_failed",
                upstream_status=status,
                provider=self._provider,
            )
        return UpstreamError(
            f"Provider '{self._provider}': IBM Cloud IAM answered HTTP {status}.",
            status=upstream_status_to_client(status),
            code=detail.error_code,
            retry_after=retry_after(headers),
            upstream_status=status,
            provider=self._provider,
        )
