"""The supervisor's /metrics: every worker's prometheus_client files summed (multiprocess mode)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_metrics_dir(run_dir: Path) -> Path:
    """An empty directory for this run's metric files, named in the environment the workers inherit
    (prometheus_client reads it when a worker imports it)."""
    directory = run_dir / "metrics"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ[MULTIPROC_ENV] = str(directory)
    return directory


def serve_metrics(address: str, directory: Path) -> bool:
    """Serve /metrics from a daemon thread; False (with a warning) if the address cannot be bound."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    host, _, port = address.rpartition(":")
    try:
        start_http_server(int(port), addr=host.strip("[]"), registry=registry)
    except OSError as exc:
        print(f"modelyard: metrics not served on {address}: {exc.strerror}", file=sys.stderr, flush=True)
        return False
    return True


def forget_worker(pid: int) -> None:
    """A worker that exited: its live gauges (in-flight, queue depth) stop counting."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
