"""wrk: installing it if missing, writing its Lua script, running one closed-loop level."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from sessions import children_cpu_seconds

_MARK = "BENCH_JSON "
_LUA = """-- written by bench/run.py: one POST, then a JSON summary line (latencies in microseconds)
wrk.method = "POST"
wrk.body = [=[{body}]=]
{headers}
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{mark}{{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,' ..
    '"write":%d,"status":%d,"timeout":%d,"p50":%d,"p90":%d,"p99":%d,"max":%d}}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


class BenchError(Exception):
    """A step of the bench failed; the message says which and why."""


@dataclass(frozen=True)
class WrkResult:
    connections: int
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    socket_errors: int
    non_2xx: int
    wrk_cpu_s: float

    @property
    def errors(self) -> int:
        return self.socket_errors + self.non_2xx

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "errors": self.errors}


def ensure_wrk() -> str:
    """The wrk binary; installed with apt-get when missing (needs root), else a clear failure."""
    found = shutil.which("wrk")
    if found:
        return found
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "wrk"]):
        print("+ " + " ".join(command), flush=True)
        try:
            code = subprocess.run(command, check=False, timeout=600).returncode
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BenchError(f"wrk is not installed and `{' '.join(command)}` failed: {exc}") from None
        if code:
            raise BenchError(
                f"wrk is not installed and `{' '.join(command)}` exited {code}; "
                "install it yourself (sudo apt-get install -y wrk)"
            )
    found = shutil.which("wrk")
    if not found:
        raise BenchError("apt-get reported success but wrk is still not on PATH")
    return found


def write_script(path: Path, body: bytes, headers: Mapping[str, str]) -> Path:
    lines = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
    path.write_text(_LUA.format(body=body.decode(), headers=lines, mark=_MARK))
    return path


def _parse(output: str, connections: int, cpu: float) -> WrkResult:
    line = next((x for x in output.splitlines() if x.startswith(_MARK)), None)
    if line is None:
        raise BenchError(f"wrk printed no summary:\n{output[-2000:]}")
    raw = json.loads(line[len(_MARK) :])
    seconds = raw["duration_us"] / 1e6
    return WrkResult(
        connections=connections,
        requests=raw["requests"],
        seconds=round(seconds, 3),
        rps=round(raw["requests"] / seconds, 1) if seconds else 0.0,
        p50_ms=raw["p50"] / 1000,
        p90_ms=raw["p90"] / 1000,
        p99_ms=raw["p99"] / 1000,
        max_ms=raw["max"] / 1000,
        socket_errors=raw["connect"] + raw["read"] + raw["write"] + raw["timeout"],
        non_2xx=raw["status"],
        wrk_cpu_s=round(cpu, 3),
    )


def run_wrk(wrk: str, url: str, script: Path, connections: int, seconds: float) -> WrkResult:
    """One closed-loop run: 1 wrk thread, `connections` keep-alive connections, bounded duration."""
    command = [
        wrk,
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "5s",
        "-s",
        str(script),
        url,
    ]
    before = children_cpu_seconds()
    started = time.monotonic()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30, check=False)
    except subprocess.TimeoutExpired:
        raise BenchError(f"wrk did not finish within {seconds + 30:.0f} s") from None
    if done.returncode:
        raise BenchError(f"wrk exited {done.returncode}: {done.stderr.strip() or done.stdout[-500:]}")
    if time.monotonic() - started > seconds + 10:
        print(f"  (wrk took {time.monotonic() - started:.1f} s for a {seconds} s run)", file=sys.stderr)
    return _parse(done.stdout, connections, children_cpu_seconds() - before)
