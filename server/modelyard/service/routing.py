"""The Routing service: deployments' health as this worker sees it."""

from __future__ import annotations

import os

import grpc

from modelyard.gateway import Gateway
from modelyard.tenancy import caller
from modelyard.v1 import routing_pb2, routing_pb2_grpc

UINT32_MAX = 2**32 - 1


class RoutingService(routing_pb2_grpc.RoutingServicer):
    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    async def ListDeployments(
        self, request: routing_pb2.ListDeploymentsRequest, context: grpc.aio.ServicerContext
    ) -> routing_pb2.ListDeploymentsResponse:
        statuses = []
        for deployment, health in await self._gateway.deployment_health(caller()):
            status = routing_pb2.DeploymentStatus(
                name=deployment.alias,
                provider=deployment.provider.name,
                model=deployment.model_id,
                state=health.state,
                in_flight=health.in_flight,
                consecutive_failures=health.consecutive_failures,
                ejections=health.ejections,
                cooldown_remaining_seconds=round(health.cooldown_remaining, 3),
                successes=min(health.successes, UINT32_MAX),
                failures=min(health.failures, UINT32_MAX),
            )
            if health.ewma_ttft is not None:
                status.ttft_ewma_ms = round(health.ewma_ttft * 1000, 3)
            statuses.append(status)
        return routing_pb2.ListDeploymentsResponse(data=statuses, worker_pid=os.getpid())
