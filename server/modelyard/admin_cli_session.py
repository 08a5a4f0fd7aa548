"""One admin subcommand's connection to the gateway, and how its failures are reported.

The key travels only in the `authorization` metadata: it is never printed, and any text that would
reach the terminal (a status message included) has it blotted out.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from modelyard.admin_cli_output import Output
from modelyard.v1 import admin_pb2_grpc

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_TIMEOUT = 10.0
TARGET_ENV = "MODELYARD_GRPC"
KEY_ENV = "MODELYARD_KEY"
TENANT_HEADER = "x-modelyard-tenant"
"""The operator key's tenant selector (modelyard.tenancy.TENANT_HEADER; not imported to keep the
client free of server modules)."""
REDACTED = "[redacted]"
_TRANSPORT_FAILURES = ("failed to connect", "errors resolving", "dns resolution failed", "connection refused")


class UsageError(Exception):
    """A command line the gateway need not see: reported as `error: ...`, exit status 2."""


@dataclass(frozen=True)
class Connection:
    target: str
    key: str
    tenant: str | None
    timeout: float

    @classmethod
    def from_args(cls, args: argparse.Namespace, env: Mapping[str, str]) -> Connection:
        key = (getattr(args, "key", None) or env.get(KEY_ENV) or "").strip()
        if not key:
            raise UsageError(f"no API key: set {KEY_ENV} (or pass --key)")
        if not all("!" <= c <= "~" for c in key):
            raise UsageError("the API key has characters that cannot be sent in a header")
        target = getattr(args, "target", None) or env.get(TARGET_ENV) or DEFAULT_TARGET
        timeout = getattr(args, "timeout", None) or DEFAULT_TIMEOUT
        return cls(target.strip(), key, getattr(args, "tenant", None) or None, timeout)

    def metadata(self) -> tuple[tuple[str, str], ...]:
        tenant = ((TENANT_HEADER, self.tenant),) if self.tenant else ()
        return (("authorization", f"Bearer {self.key}"), *tenant)

    def redact(self, text: str) -> str:
        return text.replace(self.key, REDACTED)


class Session:
    """What a command gets: the typed stub, a call helper carrying metadata and deadline, output."""

    def __init__(
        self, connection: Connection, admin: admin_pb2_grpc.AdminStub, out: Output, channel: grpc.Channel
    ) -> None:
        self.connection = connection
        self.admin = admin
        self.out = out
        self.channel = channel
        """For the stubs of the other services (usage)."""

    def call(self, rpc: Callable[..., Any], request: Any) -> Any:
        return rpc(request, metadata=self.connection.metadata(), timeout=self.connection.timeout)


Command = Callable[[Session, argparse.Namespace], None]


def violated_fields(error: grpc.RpcError) -> list[str]:
    """The fields named by a google.rpc.BadRequest in the status details, if the gateway sent one."""
    try:
        status = rpc_status.from_call(error)
    except (ValueError, AttributeError):
        return []
    fields: list[str] = []
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            fields += [violation.field for violation in bad_request.field_violations if violation.field]
    return fields


def describe_rpc_error(error: grpc.RpcError, target: str) -> str:
    code: grpc.StatusCode = error.code()
    details: str = error.details() or ""
    lowered = details.lower()
    if code == grpc.StatusCode.UNAVAILABLE and any(text in lowered for text in _TRANSPORT_FAILURES):
        reason = "connection refused" if "connection refused" in lowered else details
        return f"error: cannot reach the gateway at {target}: {reason}"
    fields = violated_fields(error)
    suffix = f" (field: {', '.join(fields)})" if fields else ""
    return f"error: {code.name}: {details}{suffix}"


def _fail(message: str, status: int) -> int:
    print("".join(c if c.isprintable() else "?" for c in message), file=sys.stderr)
    return status


def run(command: Command, args: argparse.Namespace, env: Mapping[str, str] | None = None) -> int:
    """Run one command against the gateway; the exit status: 0, 1 (gateway error) or 2 (usage)."""
    try:
        connection = Connection.from_args(args, os.environ if env is None else env)
    except UsageError as error:
        return _fail(f"error: {error}", 2)
    try:
        with grpc.insecure_channel(connection.target) as channel:
            session = Session(
                connection,
                admin_pb2_grpc.AdminStub(channel),
                Output(bool(getattr(args, "json", False))),
                channel,
            )
            command(session, args)
    except UsageError as error:
        return _fail(connection.redact(f"error: {error}"), 2)
    except grpc.RpcError as error:
        return _fail(connection.redact(describe_rpc_error(error, connection.target)), 1)
    return 0
