"""Process lifecycle: start-up errors, the generated admin key, draining on SIGTERM, worker restart,
and no orphan processes, each with a gateway of its own."""

from __future__ import annotations

import os
import secrets
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.gateway_process import GatewayProcess, free_port

SLOW_DEMO = {
    "providers": [{"name": "demo", "type": "demo", "data": {"word_delay_ms": 50}}],
    "models": [{"provider": "demo", "id": "demo-chat", "alias": "demo/slow"}],
}


def _alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split()[2]
        except OSError:
            continue
        if state != "Z":
            alive.append(pid)
    return alive


def _wait_gone(pids: list[int], timeout: float = 15.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while _alive(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return _alive(pids)


@pytest.fixture
def slow_gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    process = GatewayProcess(
        config=SLOW_DEMO, workdir=tmp_path, admin_key="my-" + secrets.token_hex(8), workers=2
    )
    process.start()
    yield process
    process.stop()


def _stream_words(gateway: GatewayProcess, words: int, result: dict[str, object]) -> None:
    body = {
        "model": "demo/slow",
        "stream": True,
        "messages": [{"role": "user", "content": " ".join(["w"] * words)}],
    }
    headers = {"Authorization": f"Bearer {gateway.admin_key}"}
    try:
        response = httpx.post(f"{gateway.base_url}/chat/completions", json=body, headers=headers, timeout=30)
        result["status"], result["text"] = response.status_code, response.text
    except httpx.HTTPError as exc:
        result["error"] = repr(exc)


def test_sigterm_drains_in_flight_streams_and_leaves_no_process(slow_gateway: GatewayProcess) -> None:
    pids = slow_gateway.session_pids()
    assert len(pids) >= 4, "supervisor, two workers and Envoy"
    result: dict[str, object] = {}
    thread = threading.Thread(target=_stream_words, args=(slow_gateway, 40, result))
    thread.start()
    time.sleep(0.6)  # the stream is under way (~2 s long)
    assert slow_gateway.process is not None
    slow_gateway.process.send_signal(signal.SIGTERM)
    thread.join(30)
    assert result.get("status") == 200, result
    assert str(result["text"]).endswith("data: [DONE]\n\n")
    assert str(result["text"]).count('"content":" w"') == 40
    assert slow_gateway.process.wait(30) == 0
    assert _wait_gone(pids) == []


def test_supervisor_killed_takes_its_children_along(slow_gateway: GatewayProcess) -> None:
    assert slow_gateway.process is not None
    children = [p for p in slow_gateway.session_pids() if p != slow_gateway.process.pid]
    assert len(children) >= 3
    slow_gateway.process.kill()
    slow_gateway.process.wait(10)
    assert _wait_gone(children) == []


def test_a_dead_worker_is_restarted(slow_gateway: GatewayProcess) -> None:
    workers = [
        pid
        for pid in slow_gateway.session_pids()
        if "modelyard.worker" in Path(f"/proc/{pid}/cmdline").read_text()
    ]
    assert len(workers) == 2
    os.kill(workers[0], signal.SIGKILL)
    headers = {"Authorization": f"Bearer {slow_gateway.admin_key}"}
    body = {"model": "demo/slow", "messages": [{"role": "user", "content": "still there"}]}
    deadline = time.monotonic() + 30
    replaced = False
    while time.monotonic() < deadline and not replaced:
        time.sleep(0.2)
        now = [
            pid
            for pid in slow_gateway.session_pids()
            if "modelyard.worker" in Path(f"/proc/{pid}/cmdline").read_text()
        ]
        replaced = len(_alive(now)) == 2 and workers[0] not in now
    assert replaced, "the supervisor did not start a new worker"
    statuses = {
        httpx.post(
            f"{slow_gateway.base_url}/chat/completions", json=body, headers=headers, timeout=10
        ).status_code
        for _ in range(6)
    }
    assert statuses == {200}


def _serve(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "modelyard", "serve", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _read_until(process: subprocess.Popen[str], marker: str, timeout: float = 60) -> str:
    assert process.stdout is not None
    seen = ""
    deadline = time.monotonic() + timeout
    while marker not in seen and time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen += line
    assert marker in seen, seen
    return seen


def test_generated_admin_key_is_printed_once_and_stored_as_hash(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(SLOW_DEMO))
    env = {k: v for k, v in os.environ.items() if k != "MODELYARD_ADMIN_KEY"}
    http_port = free_port()
    args = [
        "--config",
        str(config),
        "--http",
        f"127.0.0.1:{http_port}",
        "--grpc",
        f"127.0.0.1:{free_port()}",
        "--data-dir",
        str(tmp_path / "data"),
    ]
    first = _serve(args, env, tmp_path)
    try:
        output = _read_until(first, "Modelyard is serving")
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(30)
    key_file = tmp_path / "data" / "admin.key"
    key = key_file.read_text().strip()
    assert key in output
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key not in (tmp_path / "data" / "admin_key.sha256").read_text()
    second = _serve(args, env, tmp_path)
    try:
        output = _read_until(second, "Modelyard is serving")
        assert "Generated" not in output and key not in output
        ok = httpx.get(f"http://127.0.0.1:{http_port}/v1/models", headers={"Authorization": f"Bearer {key}"})
        assert ok.status_code == 200
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0


BROKEN_CONFIGS = [
    ({"providers": [{"name": "p", "type": "nosuch"}]}, "providers[0]", "unknown provider type"),
    (
        {"providers": [{"name": "p", "type": "openai", "data": {}}]},
        "providers[0].data",
        "openai provider: apikey: missing",
    ),
    (
        {"providers": [{"name": "p", "type": "openai", "data": {"apikey": "$UNSET_VAR_FOR_TEST"}}]},
        "providers[0].data.apikey",
        "UNSET_VAR_FOR_TEST",
    ),
    ({"models": [{"provider": "ghost", "id": "m"}]}, "models[0].provider", "ghost"),
    ({"listen": {"http": "nowhere"}}, "listen.http", "HOST:PORT"),
    ({"workers": 0}, "workers", "greater than or equal to 1"),
]


@pytest.mark.parametrize(("config", "where", "what"), BROKEN_CONFIGS)
def test_invalid_config_fails_at_start_naming_file_and_key(
    tmp_path: Path, config: dict[str, object], where: str, what: str
) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if k != "UNSET_VAR_FOR_TEST"}
    result = subprocess.run(
        [sys.executable, "-m", "modelyard", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert str(path) in result.stderr and where in result.stderr and what in result.stderr, result.stderr
    assert not (tmp_path / ".modelyard").exists(), "nothing is started or written for a broken config"


def test_busy_port_is_a_clear_start_error(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(SLOW_DEMO))
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "modelyard",
                "serve",
                "--config",
                str(config),
                "--http",
                f"127.0.0.1:{port}",
                "--grpc",
                f"127.0.0.1:{free_port()}",
                "--data-dir",
                str(tmp_path / "data"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "MODELYARD_ADMIN_KEY": "my-k"},
        )
    assert result.returncode == 1
    assert f"127.0.0.1:{port}" in result.stderr
