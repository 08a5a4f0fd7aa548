"""Run a real `modelyard serve` (Envoy + workers) for tests, on free loopback ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]

SINGLE_ATTEMPT: dict[str, Any] = {
    "defaults": {"max_attempts": 1},
    "breaker": {"consecutive_failures": 1000, "min_requests": 100000, "eject_on_429": False},
}
"""A `routing:` section for tests that check one upstream answer's mapping each: no retry, no
ejection (tests/test_routing.py covers those, which would turn a repeated scenario into another
answer)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class GatewayProcess:
    config: dict[str, Any]
    workdir: Path
    admin_key: str
    env: dict[str, str] = field(default_factory=dict)
    workers: int = 1
    http_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def base_url(self) -> str:
        return f"{self.rest_url}/v1"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "gateway.log"

    def start(self, timeout: float = 60.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config_path = self.workdir / "modelyard.yaml"
        config_path.write_text(yaml.safe_dump(self.config))
        command = [
            sys.executable,
            "-m",
            "modelyard",
            "serve",
            "--config",
            str(config_path),
            "--http",
            f"127.0.0.1:{self.http_port}",
            "--grpc",
            self.grpc_target,
            "--data-dir",
            str(self.workdir / "data"),
            "--workers",
            str(self.workers),
            "--metrics",
            f"127.0.0.1:{self.metrics_port}",
        ]
        env = {**os.environ, **self.env, "MODELYARD_ADMIN_KEY": self.admin_key}
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        headers = {"Authorization": f"Bearer {self.admin_key}"}
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"gateway exited ({self.process.returncode}):\n{self.log_path.read_text()}"
                )
            try:
                if httpx.get(f"{self.base_url}/models", headers=headers, timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"gateway did not become ready:\n{self.log_path.read_text()}")

    def stop(self, timeout: float = 40.0) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            code = self.process.wait()
        return code

    def session_pids(self) -> list[int]:
        """Processes still alive in the gateway's session (supervisor, workers, Envoy)."""
        if self.process is None:
            return []
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if os.getsid(int(entry.name)) == self.process.pid:
                        pids.append(int(entry.name))
                except (ProcessLookupError, PermissionError):
                    continue
        return pids
