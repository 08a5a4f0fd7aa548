"""Renders Envoy's bootstrap for the edge: OpenAI REST → transcoder → worker sockets.

Facts this relies on (verified with Envoy 1.40): HttpBody requests reach the worker as raw bytes,
trailers-only gRPC errors expose their metadata as response headers (used by the Lua filter), and
Envoy's own replies are reshaped by `local_reply_config`.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

ACCESS_LOG_FORMAT = {
    "time": "%START_TIME%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "status": "%RESPONSE_CODE%",
    "grpc_status": "%GRPC_STATUS%",
    "bytes_in": "%BYTES_RECEIVED%",
    "bytes_out": "%BYTES_SENT%",
    "duration_ms": "%DURATION%",
    "upstream_ms": "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    "flags": "%RESPONSE_FLAGS%",
}
_HUGE = 1_000_000


@dataclass(frozen=True)
class EdgeSettings:
    http_host: str
    http_port: int
    worker_sockets: tuple[str, ...]
    descriptor: Path
    max_request_bytes: int
    access_log: str | None = None
    """A file path, or None for Envoy's stdout."""


def package_file(name: str) -> Path:
    return Path(str(resources.files("modelyard.edge") / name))


def descriptor_path() -> Path:
    return Path(str(resources.files("modelyard.v1") / "modelyard.pb"))


def _openai_error(message: str, error_type: str, code: str | None) -> dict[str, Any]:
    return {
        "content_type": "application/json",
        "json_format": {"error": {"message": message, "type": error_type, "param": None, "code": code}},
    }


def _reply_mapper(status: int, message: str, error_type: str, code: str | None) -> dict[str, Any]:
    return {
        "filter": {
            "status_code_filter": {
                "comparison": {
                    "op": "EQ",
                    "value": {"default_value": status, "runtime_key": f"modelyard.reply_{status}"},
                }
            }
        },
        "body_format_override": _openai_error(message, error_type, code),
    }


def local_reply_config() -> dict[str, Any]:
    """Envoy's own rejections in OpenAI's envelope."""
    return {
        "mappers": [
            _reply_mapper(
                404,
                "Invalid URL (%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH):200%)",
                "invalid_request_error",
                "unknown_url",
            ),
            _reply_mapper(
                413,
                "The request body is larger than this gateway accepts.",
                "invalid_request_error",
                "request_too_large",
            ),
            _reply_mapper(
                431,
                "The request's headers or URL are too large.",
                "invalid_request_error",
                "headers_too_large",
            ),
            _reply_mapper(
                503,
                "The gateway has no worker available to serve this request right now.",
                "server_error",
                "service_unavailable",
            ),
            _reply_mapper(400, "%LOCAL_REPLY_BODY%", "invalid_request_error", "invalid_request"),
        ],
        "body_format": _openai_error("%LOCAL_REPLY_BODY%", "server_error", None),
    }


def _filters(settings: EdgeSettings) -> list[dict[str, Any]]:
    return [
        {
            "name": "envoy.filters.http.lua",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
                "default_source_code": {"filename": str(package_file("openai_errors.lua"))},
            },
        },
        {
            "name": "envoy.filters.http.grpc_json_transcoder",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder",
                "proto_descriptor": str(settings.descriptor),
                "services": [
                    "modelyard.v1.OpenAI",
                    "modelyard.v1.Admin",
                    "modelyard.v1.AdminRest",
                    "modelyard.v1.Routing",
                    "modelyard.v1.Endpoints",
                    "modelyard.v1.MeteringRest",
                ],
                "convert_grpc_status": True,
                "max_request_body_size": settings.max_request_bytes,
                "max_response_body_size": settings.max_request_bytes,
                "print_options": {"always_print_primitive_fields": True, "preserve_proto_field_names": True},
            },
        },
        {
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
        },
    ]


def _routes() -> dict[str, Any]:
    return {
        "virtual_hosts": [
            {
                "name": "modelyard",
                "domains": ["*"],
                "routes": [
                    {
                        "match": {"prefix": "/modelyard.v1."},
                        # Tells the worker the call came through the REST edge (OpenAI error envelopes).
                        "request_headers_to_add": [
                            {
                                "header": {"key": "x-modelyard-edge", "value": "rest"},
                                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                            }
                        ],
                        "route": {
                            "cluster": "workers",
                            "timeout": "0s",
                            # Only failures where the worker never saw the request are retried, on
                            # another worker: a dead or restarting worker costs no client request.
                            "retry_policy": {
                                "retry_on": "connect-failure,refused-stream,reset-before-request",
                                "num_retries": 3,
                                "retry_host_predicate": [
                                    {
                                        "name": "envoy.retry_host_predicates.previous_hosts",
                                        "typed_config": {
                                            "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
                                        },
                                    }
                                ],
                                "host_selection_retry_max_attempts": 5,
                            },
                        },
                    },
                    {"match": {"prefix": "/"}, "direct_response": {"status": 404}},
                ],
            }
        ],
    }


def _access_log(path: str | None) -> dict[str, Any]:
    """To a file, or (None) to Envoy's inherited stdout: re-opening /dev/stdout would give Envoy its
    own file offset and overwrite the supervisor's output when stdout is a regular file."""
    log_format = {"json_format": ACCESS_LOG_FORMAT}
    if path is None:
        return {
            "name": "envoy.access_loggers.stdout",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
                "log_format": log_format,
            },
        }
    return {
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": path,
            "log_format": log_format,
        },
    }


def _listener(settings: EdgeSettings) -> dict[str, Any]:
    buffer_limit = settings.max_request_bytes + (1 << 20)
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "edge",
        "max_request_headers_kb": 60,
        "codec_type": "AUTO",
        "generate_request_id": True,
        "stream_idle_timeout": "3600s",
        "request_headers_timeout": "30s",
        "route_config": _routes(),
        "local_reply_config": local_reply_config(),
        "http_filters": _filters(settings),
        "access_log": [_access_log(settings.access_log)],
    }
    return {
        "name": "http",
        "address": {"socket_address": {"address": settings.http_host, "port_value": settings.http_port}},
        "per_connection_buffer_limit_bytes": buffer_limit,
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}]}
        ],
    }


def _cluster(settings: EdgeSettings) -> dict[str, Any]:
    endpoints = [{"endpoint": {"address": {"pipe": {"path": path}}}} for path in settings.worker_sockets]
    thresholds = {
        "max_connections": _HUGE,
        "max_pending_requests": _HUGE,
        "max_requests": _HUGE,
        "max_retries": 64,
    }
    return {
        "name": "workers",
        "type": "STATIC",
        "lb_policy": "LEAST_REQUEST",
        "connect_timeout": "2s",
        "per_connection_buffer_limit_bytes": settings.max_request_bytes + (1 << 20),
        "circuit_breakers": {"thresholds": [thresholds]},
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {"max_concurrent_streams": 10_000}},
            },
        },
        "load_assignment": {"cluster_name": "workers", "endpoints": [{"lb_endpoints": endpoints}]},
    }


def render(settings: EdgeSettings) -> dict[str, Any]:
    return {
        "static_resources": {"listeners": [_listener(settings)], "clusters": [_cluster(settings)]},
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.resource_monitors."
                        "downstream_connections.v3.DownstreamConnectionsConfig",
                        "max_active_downstream_connections": 50_000,
                    },
                }
            ],
        },
    }
