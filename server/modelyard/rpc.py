"""One interceptor for every RPC: authenticate, then turn domain errors into gRPC statuses.

gRPC callers get the status code with google.rpc details (ErrorInfo, BadRequest, RetryInfo).
Calls that arrive through Envoy (REST) also carry the OpenAI error envelope and HTTP status in metadata,
which Envoy's Lua filter turns into the HTTP response.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from modelyard.errors import ClientError, GatewayError
from modelyard.metering.tracing import TRACE_HEADERS
from modelyard.routing.call import TIMEOUT_HEADER, CallRecord, current_call
from modelyard.tenancy import TENANT_HEADER, Authenticator, current_principal

log = logging.getLogger("modelyard.rpc")

PUBLIC_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")
SCOPE_BY_SERVICE = {
    "/modelyard.v1.Admin/": "admin",
    "/modelyard.v1.AdminRest/": "admin",
    "/modelyard.v1.Routing/": "admin",
    "/modelyard.v1.Inference/": "inference",
    "/modelyard.v1.OpenAI/": "inference",
}
EDGE_HEADER = "x-modelyard-edge"
"""Set by Envoy's route on every call it transcodes from REST: errors then carry OpenAI's envelope."""
ERROR_DOMAIN = "modelyard.dev"
ERROR_BODY_HEADER = "x-modelyard-error"
ERROR_STATUS_HEADER = "x-modelyard-status"
REQUEST_ID_HEADER = "x-request-id"


def openai_envelope(error: GatewayError) -> str:
    body = {"error": {"message": error.message, "type": error.type, "param": error.param, "code": error.code}}
    return json.dumps(body, ensure_ascii=True, separators=(",", ":"))


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def rich_status(error: GatewayError) -> status_pb2.Status:
    info = error_details_pb2.ErrorInfo(
        reason=(error.code or error.type).upper(),
        domain=ERROR_DOMAIN,
        metadata={
            "type": error.type,
            "http_status": str(error.status),
            **({"param": error.param} if error.param else {}),
            **({"code": error.code} if error.code else {}),
        },
    )
    details = [_pack(info)]
    if error.param and error.status < 500:
        violation = error_details_pb2.BadRequest.FieldViolation(field=error.param, description=error.message)
        details.append(_pack(error_details_pb2.BadRequest(field_violations=[violation])))
    if error.quota_subject:
        violation = error_details_pb2.QuotaFailure.Violation(
            subject=error.quota_subject, description=error.message
        )
        details.append(_pack(error_details_pb2.QuotaFailure(violations=[violation])))
    if error.retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(error.retry_after * 1e9))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    return status_pb2.Status(code=error.grpc_code.value[0], message=error.message, details=details)


def error_metadata(error: GatewayError, rest: bool) -> tuple[tuple[str, str | bytes], ...]:
    metadata: list[tuple[str, str | bytes]] = [
        ("grpc-status-details-bin", rich_status(error).SerializeToString())
    ]
    if error.retry_after is not None:
        metadata.append(("retry-after", str(max(0, round(error.retry_after)))))
    metadata.extend(error.headers)
    if rest:
        metadata.append((ERROR_BODY_HEADER, openai_envelope(error)))
        metadata.append((ERROR_STATUS_HEADER, str(error.status)))
    return tuple(metadata)


def internal_error() -> GatewayError:
    return GatewayError(
        "The gateway had an internal error while handling your request.", status=500, code="internal_error"
    )


class GatewayInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc ships no stubs
    def __init__(self, authenticator: Authenticator) -> None:
        self._authenticator = authenticator

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method: str = details.method
        if handler is None or method.startswith(PUBLIC_PREFIXES):
            return handler
        scope = next((s for prefix, s in SCOPE_BY_SERVICE.items() if method.startswith(prefix)), "admin")
        metadata = dict(details.invocation_metadata or ())
        rest = metadata.get(EDGE_HEADER) == "rest"
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(handler.unary_unary, scope, rest),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(handler.unary_stream, scope, rest),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    def _begin(self, context: grpc.aio.ServicerContext, scope: str) -> CallRecord:
        """Authenticate the caller and open the call's record (with the client's deadline)."""
        metadata = dict(context.invocation_metadata() or ())
        record = CallRecord(request_id=str(metadata.get(REQUEST_ID_HEADER) or uuid.uuid4()))
        if "traceparent" in metadata:
            record.trace_headers = {h: str(metadata[h]) for h in TRACE_HEADERS if h in metadata}
        current_call.set(record)
        principal = self._authenticator.authenticate(
            metadata.get("authorization"), metadata.get(TENANT_HEADER)
        )
        principal.require(scope)
        current_principal.set(principal)
        record.deadline = _deadline(record.started, context.time_remaining(), metadata.get(TIMEOUT_HEADER))
        return record

    def _wrap_unary(self, behavior: Any, scope: str, rest: bool) -> Any:
        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
            record: CallRecord | None = None
            try:
                record = self._begin(context, scope)
                response = await behavior(request, context)
                await _announce(context, record, rest)
                return response
            except GatewayError as error:
                await _abort(context, error, rest, record)
            except Exception:
                log.exception("unhandled error in %s", type(behavior).__qualname__)
                await _abort(context, internal_error(), rest, record)

        return wrapped

    def _wrap_stream(self, behavior: Any, scope: str, rest: bool) -> Any:
        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            record: CallRecord | None = None
            try:
                record = self._begin(context, scope)
                announced = False
                async for item in behavior(request, context):
                    if not announced:
                        await _announce(context, record, rest)
                        announced = True
                    yield item
                if not announced:
                    await _announce(context, record, rest)
            except GatewayError as error:
                await _abort(context, error, rest, record)
            except Exception:
                log.exception("unhandled error in a streaming call")
                await _abort(context, internal_error(), rest, record)

        return wrapped


def _deadline(started: float, grpc_remaining: float | None, header: str | None) -> float | None:
    """The earlier of the gRPC deadline and the REST timeout header, as a monotonic time."""
    limits = [grpc_remaining] if grpc_remaining is not None else []
    if header is not None:
        try:
            seconds = float(header)
        except ValueError:
            seconds = math.nan
        if not (0 < seconds <= 86400):
            raise ClientError(
                f"The {TIMEOUT_HEADER} header must be a number of seconds between 0 and 86400.",
                param=TIMEOUT_HEADER,
                code="invalid_timeout",
            )
        limits.append(seconds)
    return started + min(limits) if limits else None


async def _announce(context: grpc.aio.ServicerContext, record: CallRecord, rest: bool) -> None:
    """Which deployment served the call: response headers on REST (initial metadata, which costs a
    send of its own), trailing metadata on gRPC."""
    if record.attempts:
        metadata = record.metadata()
        if rest:
            await context.send_initial_metadata(metadata)
        else:
            context.set_trailing_metadata(metadata)


async def _abort(
    context: grpc.aio.ServicerContext, error: GatewayError, rest: bool, record: CallRecord | None
) -> None:
    served = record.metadata() if record is not None and record.attempts else ()
    await context.abort(
        error.grpc_code, error.message, trailing_metadata=(*error_metadata(error, rest), *served)
    )
