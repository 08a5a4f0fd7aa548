"""One worker process: a grpc.aio server with the Inference and OpenAI services, health and
reflection. Envoy reaches it on a private unix socket; gRPC clients on the shared public port."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from modelyard.admin_endpoints import ServingAdmin
from modelyard.config import GatewayConfig, load_config
from modelyard.facade.service import OpenAIFacade
from modelyard.gateway import Gateway
from modelyard.metering import metrics
from modelyard.metering.ledger import LEDGER_FILENAME
from modelyard.metering.setup import Metering, build_metering, plan_of
from modelyard.metering.tracing import Tracing
from modelyard.metering.usage_query import UsageReader
from modelyard.reload import ConfigWatcher, reload_interval
from modelyard.rpc import GatewayInterceptor
from modelyard.secrets.keys import MasterKey
from modelyard.secrets.vault import SecretVault
from modelyard.service.admin import AdminRestService, AdminService
from modelyard.service.endpoints import EndpointsService
from modelyard.service.inference import InferenceService
from modelyard.service.routing import RoutingService
from modelyard.service.usage import MeteringRestService, MeteringService
from modelyard.state import TenantStates
from modelyard.store.sqlite import STORE_FILENAME, SqliteStore
from modelyard.tenancy import Authenticator
from modelyard.transport import HttpTransport
from modelyard.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    endpoints_pb2,
    endpoints_pb2_grpc,
    inference_pb2,
    inference_pb2_grpc,
    openai_pb2,
    openai_pb2_grpc,
    routing_pb2,
    routing_pb2_grpc,
    usage_pb2,
    usage_pb2_grpc,
)

log = logging.getLogger("modelyard.worker")

SERVICE_NAMES = (
    inference_pb2.DESCRIPTOR.services_by_name["Inference"].full_name,
    openai_pb2.DESCRIPTOR.services_by_name["OpenAI"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["Admin"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["AdminRest"].full_name,
    routing_pb2.DESCRIPTOR.services_by_name["Routing"].full_name,
    endpoints_pb2.DESCRIPTOR.services_by_name["Endpoints"].full_name,
    usage_pb2.DESCRIPTOR.services_by_name["Metering"].full_name,
    usage_pb2.DESCRIPTOR.services_by_name["MeteringRest"].full_name,
)
DRAIN_SECONDS = 20.0
GAUGE_REFRESH_S = 1.0
ACCESS_LOG_FLUSH_S = 1.0
MAX_METADATA_BYTES = 128 * 1024


@dataclass(frozen=True)
class WorkerOptions:
    config: GatewayConfig
    private_address: str
    public_grpc: str
    admin_key_hash: str
    data_dir: Path
    config_path: Path | None = None
    reload_interval: float = 0.0


def server_options(config: GatewayConfig) -> list[tuple[str, int]]:
    limit = (config.max_request_mb + 1) << 20
    return [
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
        ("grpc.so_reuseport", 1),
        # Above Envoy's own request-header limit, so an over-long path or header gets Envoy's
        # 431 (in OpenAI's envelope) rather than a raw gRPC RESOURCE_EXHAUSTED.
        ("grpc.max_metadata_size", MAX_METADATA_BYTES),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ]


@dataclass(frozen=True)
class Services:
    gateway: Gateway
    admin: ServingAdmin
    authenticator: Authenticator
    states: TenantStates
    metering: Metering
    usage: UsageReader


def build_services(
    options: WorkerOptions, store: SqliteStore, transport: HttpTransport, tracing: Tracing
) -> Services:
    vault = SecretVault(MasterKey.load(options.data_dir), store)
    states = TenantStates(options.config, store, vault, transport)
    metering = build_metering(options.config, options.data_dir, tracing)
    return Services(
        gateway=Gateway(states, metering.meter),
        admin=ServingAdmin(store, vault, options.config),
        authenticator=Authenticator(options.admin_key_hash, store),
        states=states,
        metering=metering,
        usage=UsageReader(options.data_dir / LEDGER_FILENAME),
    )


def build_server(
    options: WorkerOptions, services: Services
) -> tuple[grpc.aio.Server, health.aio.HealthServicer]:
    server = grpc.aio.server(
        interceptors=[GatewayInterceptor(services.authenticator)],
        options=server_options(options.config),
    )
    inference_pb2_grpc.add_InferenceServicer_to_server(InferenceService(services.gateway), server)
    openai_pb2_grpc.add_OpenAIServicer_to_server(OpenAIFacade(services.gateway), server)
    admin = AdminService(services.admin)
    admin_pb2_grpc.add_AdminServicer_to_server(admin, server)
    admin_pb2_grpc.add_AdminRestServicer_to_server(AdminRestService(admin), server)
    routing_pb2_grpc.add_RoutingServicer_to_server(RoutingService(services.gateway), server)
    endpoints_pb2_grpc.add_EndpointsServicer_to_server(EndpointsService(services.admin), server)
    metering = MeteringService(services.usage)
    usage_pb2_grpc.add_MeteringServicer_to_server(metering, server)
    usage_pb2_grpc.add_MeteringRestServicer_to_server(MeteringRestService(metering), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    server.add_insecure_port(options.private_address)
    server.add_insecure_port(options.public_grpc)
    return server, health_servicer


def _watch_config(options: WorkerOptions, services: Services) -> asyncio.Task[None] | None:
    if options.config_path is None or options.reload_interval <= 0:
        return None

    def apply(config: GatewayConfig) -> None:
        services.states.use_config(config)
        services.admin.use_config(config)
        services.metering.limiter.use_plan(plan_of(config))

    watcher = ConfigWatcher(options.config_path, options.config, apply)
    return asyncio.get_running_loop().create_task(watcher.run(options.reload_interval))


async def _refresh_gauges(services: Services) -> None:
    """Metrics the requests gathered, and gauges that change without a request: breaker states
    (cooldowns end) and the ledger queue."""
    while True:
        await asyncio.sleep(GAUGE_REFRESH_S)
        services.metering.meter.flush_metrics()
        metrics.set_breakers(services.gateway.breaker_states())
        if services.metering.ledger is not None:
            metrics.ledger_queue.set(services.metering.ledger.depth)


async def _flush_access_log(services: Services) -> None:
    while True:
        await asyncio.sleep(ACCESS_LOG_FLUSH_S)
        services.metering.meter.flush_log()


async def serve(options: WorkerOptions, ready_fd: int | None) -> None:
    tracing = Tracing.from_config(options.config.tracing)
    transport = HttpTransport(tracing=tracing)
    store = SqliteStore(options.data_dir / STORE_FILENAME)
    services = build_services(options, store, transport, tracing)
    server, health_servicer = build_server(options, services)
    await server.start()
    watching = _watch_config(options, services)
    services.metering.meter.start()
    if services.metering.ledger is not None:
        services.metering.ledger.start()
    flushing = asyncio.get_running_loop().create_task(_flush_access_log(services))
    refreshing = (
        asyncio.get_running_loop().create_task(_refresh_gauges(services))
        if options.config.metrics.enabled
        else None
    )
    for name in ("", *SERVICE_NAMES):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if ready_fd is not None:
        os.write(ready_fd, b"ready\n")
        os.close(ready_fd)
    await stop.wait()
    for task in (watching, refreshing, flushing):
        if task is not None:
            task.cancel()
    await health_servicer.enter_graceful_shutdown()
    await server.stop(DRAIN_SECONDS)
    await services.metering.meter.stop()
    if services.metering.ledger is not None:
        await services.metering.ledger.close()
    services.metering.counters.close()
    services.usage.close()
    services.metering.meter.flush_log()
    services.metering.meter.flush_metrics()
    tracing.shutdown()
    await transport.close()
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="modelyard-worker")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--private", required=True, help="address Envoy connects to")
    parser.add_argument("--grpc", required=True, help="public gRPC address (shared via SO_REUSEPORT)")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--ready-fd", type=int)
    args = parser.parse_args()
    logging.basicConfig(
        level=os.environ.get("MODELYARD_LOG_LEVEL", "INFO"),
        format="%(asctime)s worker[%(process)d] %(levelname)s %(name)s: %(message)s",
    )
    admin_hash = os.environ.pop("MODELYARD_ADMIN_KEY_SHA256")
    options = WorkerOptions(
        load_config(args.config),
        args.private,
        args.grpc,
        admin_hash,
        args.data_dir,
        config_path=args.config,
        reload_interval=reload_interval(),
    )
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(options, args.ready_fd))
    else:
        uvloop.run(serve(options, args.ready_fd))


if __name__ == "__main__":
    main()
