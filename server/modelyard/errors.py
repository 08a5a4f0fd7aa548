"""The gateway's error tree.

Every error knows its HTTP status, OpenAI error `type` and `code`, and whether a router may retry
it elsewhere. Surfaces render them (OpenAI envelope on REST, gRPC status with details on gRPC);
nothing classifies errors by matching message text.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

_GRPC_BY_HTTP: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    409: grpc.StatusCode.ABORTED,
    413: grpc.StatusCode.OUT_OF_RANGE,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    500: grpc.StatusCode.INTERNAL,
    501: grpc.StatusCode.UNIMPLEMENTED,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}

_TYPE_BY_HTTP: dict[int, str] = {
    401: "invalid_request_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    409: "conflict_error",
    429: "rate_limit_error",
}


def grpc_code_for(http_status: int) -> grpc.StatusCode:
    if http_status in _GRPC_BY_HTTP:
        return _GRPC_BY_HTTP[http_status]
    return grpc.StatusCode.INVALID_ARGUMENT if http_status < 500 else grpc.StatusCode.UNAVAILABLE


def error_type_for(http_status: int) -> str:
    if http_status in _TYPE_BY_HTTP:
        return _TYPE_BY_HTTP[http_status]
    return "invalid_request_error" if http_status < 500 else "server_error"


@dataclass
class GatewayError(Exception):
    """Base of the tree. `message` is safe to show a client: it never holds a secret."""

    message: str
    status: int = 500
    code: str | None = None
    param: str | None = None
    retry_after: float | None = None
    error_type: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    """Response headers the error comes with (REST headers; gRPC trailing metadata)."""
    quota_subject: str = ""
    """The budget a rate-limit refusal ran out of (gRPC's QuotaFailure subject); never a secret."""

    retryable = False

    def __post_init__(self) -> None:
        super().__init__(self.message)

    @property
    def type(self) -> str:
        return self.error_type or error_type_for(self.status)

    @property
    def grpc_code(self) -> grpc.StatusCode:
        return grpc_code_for(self.status)


@dataclass
class ClientError(GatewayError):
    """The caller's own mistake: never retried, never a reason to fail over."""

    status: int = 400


@dataclass
class UpstreamError(GatewayError):
    """A provider failed or refused. 429, 5xx, timeouts and connection errors are retryable."""

    status: int = 502
    upstream_status: int | None = None
    provider: str = ""

    @property
    def retryable(self) -> bool:  # type: ignore[override]
        return self.status in (408, 429) or self.status >= 500


@dataclass
class StreamError(UpstreamError):
    """A failure after a stream was committed: the client has seen output already."""


def invalid_request(message: str, param: str | None = None, code: str | None = None) -> ClientError:
    return ClientError(message, status=400, param=param, code=code)


def unauthenticated(message: str = "Invalid or missing API key.") -> ClientError:
    return ClientError(message, status=401, code="invalid_api_key")


def model_not_found(model: str) -> ClientError:
    return ClientError(
        f"The model '{model}' does not exist or you do not have access to it.",
        status=404,
        param="model",
        code="model_not_found",
    )


def upstream_status_to_client(upstream_status: int) -> int:
    """The status a client sees for an upstream HTTP status: 4xx pass on, 5xx become gateway errors."""
    if 400 <= upstream_status < 500:
        return upstream_status
    if upstream_status in (503, 529):
        return 503
    if upstream_status == 504:
        return 504
    return 502
