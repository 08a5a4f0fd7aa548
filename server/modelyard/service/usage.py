"""The Metering gRPC service (usage reports), and its REST twin with plain JSON numbers."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Any, TypeAlias

import grpc
import orjson
from google.api import httpbody_pb2

from modelyard.metering.usage_query import GROUPS, UsageQuery, UsageReader, UsageReport, UsageRow
from modelyard.tenancy import caller
from modelyard.v1 import usage_pb2 as pb
from modelyard.v1 import usage_pb2_grpc

Context: TypeAlias = grpc.aio.ServicerContext


def _query(request: pb.GetUsageRequest) -> UsageQuery:
    principal = caller()
    if request.all_tenants:
        principal.require_operator()
    group_by = tuple(part for item in request.group_by for part in item.split(",") if part) or ("model",)
    return UsageQuery(
        None if request.all_tenants else principal.tenant_id,
        group_by,
        request.bucket or "day",
        float(request.start),
        float(request.end),
    )


def _bucket(row: UsageRow) -> dict[str, Any]:
    """A report row as the fields of a UsageBucket."""
    totals = {k: v for k, v in asdict(row).items() if k != "groups"}
    return {**totals, **{GROUPS[k]: v for k, v in row.groups.items()}}


def report_pb(report: UsageReport) -> pb.UsageReport:
    buckets = [pb.UsageBucket(**_bucket(row)) for row in report.rows]
    return pb.UsageReport(buckets=buckets, dropped_records=report.dropped)


def report_json(report: UsageReport) -> bytes:
    buckets = [_bucket(row) for row in report.rows]
    return orjson.dumps({"buckets": buckets, "dropped_records": report.dropped})


class MeteringService(usage_pb2_grpc.MeteringServicer):
    def __init__(self, reader: UsageReader) -> None:
        self._reader = reader

    async def report(self, request: pb.GetUsageRequest) -> UsageReport:
        return await asyncio.to_thread(self._reader.report, _query(request))

    async def GetUsage(self, request: pb.GetUsageRequest, context: Context) -> pb.UsageReport:
        return report_pb(await self.report(request))


class MeteringRestService(usage_pb2_grpc.MeteringRestServicer):
    def __init__(self, metering: MeteringService) -> None:
        self._metering = metering

    async def GetUsage(self, request: pb.GetUsageRequest, context: Context) -> httpbody_pb2.HttpBody:
        report = await self._metering.report(request)
        return httpbody_pb2.HttpBody(content_type="application/json", data=report_json(report))
