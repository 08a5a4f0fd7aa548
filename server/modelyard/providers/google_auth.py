"""Google service-account OAuth: a self-signed RS256 JWT exchanged for a short-lived access token.

The key file's JSON gives `client_email`, `private_key` (PEM), `private_key_id` and `token_uri`. The
assertion (iss = client_email, scope = cloud-platform, aud = https://oauth2.googleapis.com/token, one hour) is POSTed to
`token_uri` with the jwt-bearer grant; the token is cached until shortly before it expires and
fetched once however many requests need it at the same moment. Errors never carry the key, the
assertion or the token.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable, Mapping
from urllib.parse import urlencode

import msgspec
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from modelyard.errors import UpstreamError, upstream_status_to_client
from modelyard.providers.openai import retry_after
from modelyard.transport import HttpTransport

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
SCOPE = "https://www.googleapis.com/auth/cloud-platform"
DEFAULT_TOKEN_URI = "https://oauth2.googleapis.com/token"
AUDIENCE = DEFAULT_TOKEN_URI
"""The assertion's `aud`: always Google's token endpoint, whatever `token_uri` the key names (as
Google documents for the jwt-bearer grant and as google-auth sends it)."""
ASSERTION_LIFETIME_S = 3600
EARLY_REFRESH_S = 300.0
EARLY_REFRESH_SHARE = 0.1


class ServiceAccountKey(msgspec.Struct):
    client_email: str
    private_key: str
    private_key_id: str = ""
    token_uri: str = DEFAULT_TOKEN_URI
    project_id: str | None = None
    type: str = "service_account"


class GoogleToken(msgspec.Struct):
    access_token: str
    expires_in: float = 3600.0
    token_type: str = "Bearer"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _key_error(provider: str, what: str) -> UpstreamError:
    return UpstreamError(
        f"Provider '{provider}': the service-account key {what}.",
        status=401,
        code="provider_authentication_failed",
        provider=provider,
    )


def parse_key(provider: str, key_json: str) -> tuple[ServiceAccountKey, rsa.RSAPrivateKey]:
    """The key file's fields and its RSA private key (UpstreamError 401 when unusable)."""
    try:
        key = msgspec.json.decode(key_json, type=ServiceAccountKey)
    except msgspec.MsgspecError:
        raise _key_error(provider, "is not a service-account key file's JSON") from None
    try:
        private = serialization.load_pem_private_key(key.private_key.encode(), password=None)
    except (ValueError, TypeError):
        raise _key_error(provider, "has a private_key that is not a PEM RSA key") from None
    if not isinstance(private, rsa.RSAPrivateKey):
        raise _key_error(provider, "has a private_key that is not an RSA key")
    return key, private


def signed_assertion(key: ServiceAccountKey, private: rsa.RSAPrivateKey, now: int) -> str:
    """The RS256 JWT that asks `token_uri` for a cloud-platform access token."""
    header = {"alg": "RS256", "typ": "JWT", "kid": key.private_key_id}
    claims = {
        "iss": key.client_email,
        "scope": SCOPE,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + ASSERTION_LIFETIME_S,
    }
    signing_input = f"{_b64url(msgspec.json.encode(header))}.{_b64url(msgspec.json.encode(claims))}"
    signature = private.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64url(signature)}"


class GoogleTokenClient:
    """One per provider instance; `token()` is safe to call from any number of concurrent tasks."""

    def __init__(
        self,
        transport: HttpTransport,
        provider: str,
        key_json: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._transport = transport
        self._provider = provider
        self._key_json = key_json
        self._clock = clock
        self._key: tuple[ServiceAccountKey, rsa.RSAPrivateKey] | None = None
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

    def secrets(self) -> list[str]:
        """What must never appear in a message: the cached token."""
        return [self._token] if self._token else []

    async def _fetch(self) -> str:
        self.fetches += 1
        if self._key is None:
            self._key = parse_key(self._provider, self._key_json)
        key, private = self._key
        assertion = signed_assertion(key, private, int(time.time()))
        body = urlencode({"grant_type": GRANT_TYPE, "assertion": assertion}).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
        started = self._clock()
        try:
            response = await self._transport.post(self._provider, key.token_uri, headers, body)
        except UpstreamError as exc:
            raise UpstreamError(
                f"Provider '{self._provider}': Google's token endpoint could not be reached.",
                status=503,
                code="provider_token_unavailable",
                provider=self._provider,
            ) from exc
        if response.status >= 400:
            raise self._error(response.status, response.headers)
        try:
            token = msgspec.json.decode(response.body, type=GoogleToken)
        except msgspec.MsgspecError:
            raise UpstreamError(
                f"Provider '{self._provider}': Google's token endpoint sent a response that is not "
                "valid token JSON.",
                status=502,
                code="bad_upstream_response",
                provider=self._provider,
            ) from None
        lifetime = max(0.0, token.expires_in)
        self._token = token.access_token
        self._refresh_at = started + lifetime - min(EARLY_REFRESH_S, lifetime * EARLY_REFRESH_SHARE)
        return token.access_token

    def _error(self, status: int, headers: Mapping[str, str]) -> UpstreamError:
        if status in (400, 401, 403):
            # invalid_grant / invalid_client / unauthorized_client: the gateway's credential failed.
            return UpstreamError(
                f"Provider '{self._provider}': Google rejected the gateway's service-account key.",
                status=401,
                code="provider_authentication_failed",
                upstream_status=status,
                provider=self._provider,
            )
        return UpstreamError(
            f"Provider '{self._provider}': Google's token endpoint answered HTTP {status}.",
            status=503 if status >= 500 else upstream_status_to_client(status),
            code="provider_token_unavailable",
            retry_after=retry_after(headers),
            upstream_status=status,
            provider=self._provider,
        )
