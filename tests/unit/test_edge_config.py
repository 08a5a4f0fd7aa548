"""Envoy's bootstrap as rendered for the edge, checked structurally and, when Envoy is here, for real."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from modelyard.edge.config import EdgeSettings, descriptor_path, package_file, render

ENVOY = Path(sys.executable).parent / "envoy"
ENVOY_BIN = str(ENVOY) if ENVOY.exists() else shutil.which("envoy")

SETTINGS = [
    pytest.param(
        EdgeSettings(
            http_host="127.0.0.1",
            http_port=8080,
            worker_sockets=("/tmp/modelyard/w0.sock",),
            descriptor=descriptor_path(),
            max_request_bytes=32 << 20,
        ),
        id="one-worker",
    ),
    pytest.param(
        EdgeSettings(
            http_host="0.0.0.0",
            http_port=18123,
            worker_sockets=tuple(f"/run/modelyard/worker-{i}.sock" for i in range(4)),
            descriptor=descriptor_path(),
            max_request_bytes=1 << 20,
            access_log="/dev/null",
        ),
        id="four-workers",
    ),
]


def _manager(config: dict[str, Any]) -> dict[str, Any]:
    (listener,) = config["static_resources"]["listeners"]
    (chain,) = listener["filter_chains"]
    (network_filter,) = chain["filters"]
    assert network_filter["name"] == "envoy.filters.network.http_connection_manager"
    return network_filter["typed_config"]


def _filter(manager: dict[str, Any], name: str) -> tuple[int, dict[str, Any]]:
    names = [f["name"] for f in manager["http_filters"]]
    index = names.index(name)
    return index, manager["http_filters"][index]["typed_config"]


@pytest.mark.parametrize("settings", SETTINGS)
def test_listener_address(settings: EdgeSettings) -> None:
    (listener,) = render(settings)["static_resources"]["listeners"]
    assert listener["address"]["socket_address"] == {
        "address": settings.http_host,
        "port_value": settings.http_port,
    }
    assert listener["per_connection_buffer_limit_bytes"] > settings.max_request_bytes


@pytest.mark.parametrize("settings", SETTINGS)
def test_transcoder(settings: EdgeSettings) -> None:
    _, transcoder = _filter(_manager(render(settings)), "envoy.filters.http.grpc_json_transcoder")
    assert transcoder["convert_grpc_status"] is True
    assert transcoder["services"] == [
        "modelyard.v1.OpenAI",
        "modelyard.v1.Admin",
        "modelyard.v1.AdminRest",
        "modelyard.v1.Routing",
        "modelyard.v1.Endpoints",
        "modelyard.v1.MeteringRest",
    ]
    assert transcoder["max_request_body_size"] == settings.max_request_bytes
    assert transcoder["proto_descriptor"] == str(settings.descriptor)


@pytest.mark.parametrize("settings", SETTINGS)
def test_lua_filter_runs_before_the_transcoder_and_router_is_last(settings: EdgeSettings) -> None:
    manager = _manager(render(settings))
    lua_index, lua = _filter(manager, "envoy.filters.http.lua")
    transcoder_index, _ = _filter(manager, "envoy.filters.http.grpc_json_transcoder")
    assert lua_index < transcoder_index
    assert manager["http_filters"][-1]["name"] == "envoy.filters.http.router"
    lua_file = Path(lua["default_source_code"]["filename"])
    assert lua_file == package_file("openai_errors.lua")
    assert lua_file.is_file()
    assert "envoy_on_response" in lua_file.read_text()


@pytest.mark.parametrize("settings", SETTINGS)
def test_routes(settings: EdgeSettings) -> None:
    (host,) = _manager(render(settings))["route_config"]["virtual_hosts"]
    assert host["domains"] == ["*"]
    routes = host["routes"]
    worker_routes = [r for r in routes if r.get("route", {}).get("cluster") == "workers"]
    assert worker_routes
    for route in worker_routes:
        assert route["route"]["timeout"] == "0s"
        assert route["match"]["prefix"].startswith("/modelyard.v1.")
    catch_all = routes[-1]
    assert catch_all["match"] == {"prefix": "/"}
    assert catch_all["direct_response"]["status"] == 404


@pytest.mark.parametrize("status", [404, 413, 503])
def test_local_replies_use_openai_envelope(status: int) -> None:
    reply = _manager(render(SETTINGS[0].values[0]))["local_reply_config"]  # type: ignore[index]
    mappers = {
        m["filter"]["status_code_filter"]["comparison"]["value"]["default_value"]: m for m in reply["mappers"]
    }
    mapper = mappers[status]
    assert mapper["filter"]["status_code_filter"]["comparison"]["op"] == "EQ"
    body = mapper["body_format_override"]
    assert body["content_type"] == "application/json"
    error = body["json_format"]["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    assert error["type"] == ("server_error" if status >= 500 else "invalid_request_error")
    assert error["param"] is None
    assert set(reply["body_format"]["json_format"]) == {"error"}


@pytest.mark.parametrize("settings", SETTINGS)
def test_cluster_has_one_pipe_endpoint_per_worker(settings: EdgeSettings) -> None:
    (cluster,) = render(settings)["static_resources"]["clusters"]
    assert cluster["name"] == "workers"
    assert cluster["load_assignment"]["cluster_name"] == "workers"
    (group,) = cluster["load_assignment"]["endpoints"]
    paths = [e["endpoint"]["address"]["pipe"]["path"] for e in group["lb_endpoints"]]
    assert paths == list(settings.worker_sockets)
    options = cluster["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]
    assert "http2_protocol_options" in options["explicit_http_config"]


def test_render_is_json_serialisable_and_deterministic() -> None:
    settings = SETTINGS[1].values[0]  # type: ignore[index]
    assert json.dumps(render(settings), sort_keys=True) == json.dumps(render(settings), sort_keys=True)


def test_descriptor_exists() -> None:
    assert descriptor_path().is_file()
    assert descriptor_path().stat().st_size > 0


def _validate(config: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "envoy.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    assert ENVOY_BIN is not None
    return subprocess.run(
        [ENVOY_BIN, "--mode", "validate", "-c", str(path), "--log-level", "error"],
        capture_output=True,
        text=True,
        timeout=60,
    )


needs_envoy = pytest.mark.skipif(ENVOY_BIN is None, reason="no envoy binary")


@needs_envoy
@pytest.mark.parametrize("settings", SETTINGS)
def test_envoy_accepts_the_rendered_config(settings: EdgeSettings, tmp_path: Path) -> None:
    result = _validate(render(settings), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout


@needs_envoy
def test_envoy_validation_is_not_vacuous(tmp_path: Path) -> None:
    """The same check fails when the transcoder names a service the descriptor lacks."""
    config = render(SETTINGS[0].values[0])  # type: ignore[index]
    _, transcoder = _filter(_manager(config), "envoy.filters.http.grpc_json_transcoder")
    transcoder["services"] = ["modelyard.v1.NoSuchService"]
    result = _validate(config, tmp_path)
    assert result.returncode != 0
