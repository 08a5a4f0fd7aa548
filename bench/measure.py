"""CPU and memory accounting over process sessions while a load runs."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import dataclass

from sessions import machine_busy_seconds, session_cpu, session_pids, session_rss_mb


@dataclass(frozen=True)
class CpuSnapshot:
    at: float
    machine_s: float
    softirq_steal_s: float
    gateway: dict[int, float]
    upstream: dict[int, float]


def snapshot(gateway_sid: int, upstream_sid: int) -> CpuSnapshot:
    busy, softirq_steal = machine_busy_seconds()
    return CpuSnapshot(
        time.monotonic(), busy, softirq_steal, session_cpu(gateway_sid), session_cpu(upstream_sid)
    )


def _delta(before: dict[int, float], after: dict[int, float]) -> dict[int, float]:
    return {pid: seconds - before.get(pid, 0.0) for pid, seconds in after.items()}


def cpu_usage(
    before: CpuSnapshot,
    after: CpuSnapshot,
    roles: dict[int, str],
    requests: int,
    client_s: float,
    same_session: bool = False,
) -> dict[str, object]:
    """CPU of the gateway's session (split by process role), the upstream, the load client (wrk or
    grpc_load.py) and everything else on the machine (other processes, softirq, steal).

    `same_session` is the direct run, where the measured target is the upstream itself.
    """
    wall = after.at - before.at
    gateway = _delta(before.gateway, after.gateway)
    by_role: dict[str, float] = defaultdict(float)
    for pid, seconds in gateway.items():
        by_role[roles.get(pid, "other")] += seconds
    gateway_s = sum(gateway.values())
    upstream_s = 0.0 if same_session else sum(_delta(before.upstream, after.upstream).values())
    other_s = (after.machine_s - before.machine_s) - gateway_s - upstream_s - client_s
    kernel_s = after.softirq_steal_s - before.softirq_steal_s
    per_request = 1000 / requests if requests else 0.0
    return {
        "wall_s": round(wall, 3),
        "gateway_ms_per_req": round(gateway_s * per_request, 3),
        "gateway_ms_per_req_by_role": {k: round(v * per_request, 3) for k, v in sorted(by_role.items())},
        "upstream_ms_per_req": round(upstream_s * per_request, 3),
        "pct_of_core": {
            name: round(100 * value / wall, 1) if wall else 0.0
            for name, value in (
                ("gateway", gateway_s),
                ("upstream", upstream_s),
                ("client", client_s),
                ("other", max(0.0, other_s)),
                ("softirq_steal", kernel_s),
            )
        },
    }


class RssSampler:
    """Peak summed RSS and process count of one session, sampled in a thread every 200 ms."""

    def __init__(self, sid: int, interval: float = 0.2) -> None:
        self._sid = sid
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"rss-{sid}", daemon=True)
        self.peak_mb = 0.0
        self.max_procs = 0

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, session_rss_mb(self._sid))
            self.max_procs = max(self.max_procs, len(session_pids(self._sid)))
            self._stop.wait(self._interval)
