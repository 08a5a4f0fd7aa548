"""The one error of the secrets package."""

from __future__ import annotations

from dataclasses import dataclass

from modelyard.errors import GatewayError


@dataclass
class SecretError(GatewayError):
    """A secret could not be sealed, opened or resolved.

    The message names the secret id or the reference (neither is secret) and never holds a
    plaintext, a key or a value read from a reference's source. The default status is 500: a
    credential the gateway cannot open is the operator's problem, not the caller's. Malformed
    references given by an admin are raised with status 400 and code "invalid_secret_reference".
    """

    code: str | None = "secret_unavailable"
