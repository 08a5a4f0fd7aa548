"""Modelyard's own benchmark: the gateway next to the fake OpenAI upstream it fronts.

    .venv/bin/python bench/run.py [--workers 1,2] [--duration 5]

Starts tests/fakes/openai_upstream.py, measures it directly, then `modelyard serve` (one run per
--workers value) in front of it: wrk non-streaming chat at each concurrency, a streaming probe,
gRPC CreateChatCompletion throughput, CPU per request and RSS of the gateway's process session.
Prints a markdown table and writes bench-results/<timestamp>/. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from interleave import compare_metering
from interleave import markdown as interleaved_markdown
from measure import RssSampler, cpu_usage, snapshot
from report import markdown
from sessions import (
    Session,
    children_cpu_seconds,
    label,
    machine_busy_seconds,
    rss_mb,
    session_pids,
    stop_session,
)
from streamprobe import probe
from targets import MODEL, REPO, Target, chat_body, start_gateway, start_upstream
from wrkload import BenchError, ensure_wrk, run_wrk, write_script


@dataclass(frozen=True)
class Settings:
    workers: list[int]
    concurrency: list[int]
    duration: float
    warmup: float
    stream_requests: int
    stream_max_s: float
    grpc_concurrency: int
    grpc_channels: int
    wait_idle: float
    out: Path
    metering: list[bool]
    ab_blocks: int
    ab_seconds: float


# ---------------------------------------------------------------------------- measurements


def measure_levels(target: Target, upstream: Target, settings: Settings, wrk: str) -> dict[str, object]:
    script = write_script(settings.out / f"{target.name}.wrk.lua", chat_body(False), target.headers)
    run_wrk(wrk, target.chat_url, script, 16, settings.warmup)
    levels: dict[str, object] = {}
    for connections in settings.concurrency:
        roles = {pid: label(pid) for pid in session_pids(target.session.sid)}
        before = snapshot(target.session.sid, upstream.session.sid)
        result = run_wrk(wrk, target.chat_url, script, connections, settings.duration)
        after = snapshot(target.session.sid, upstream.session.sid)
        cpu = cpu_usage(
            before, after, roles, result.requests, result.wrk_cpu_s, same_session=target is upstream
        )
        levels[str(connections)] = result.to_json() | {"cpu": cpu}
        print(
            f"  c{connections}: {result.rps:,.0f} req/s  p50 {result.p50_ms:.2f} ms  "
            f"p99 {result.p99_ms:.2f} ms  errors {result.errors}  "
            f"CPU {cpu['gateway_ms_per_req']} ms/req",
            flush=True,
        )
    return levels


def measure_grpc(target: Target, upstream: Target, settings: Settings) -> dict[str, object] | None:
    if target.grpc is None:
        return None
    argv = [
        sys.executable,
        str(Path(__file__).with_name("grpc_load.py")),
        "--target",
        target.grpc,
        "--key",
        target.key,
        "--model",
        MODEL,
        "--concurrency",
        str(settings.grpc_concurrency),
        "--channels",
        str(settings.grpc_channels),
        "--duration",
        str(settings.duration),
        "--warmup",
        str(settings.warmup),
    ]
    roles = {pid: label(pid) for pid in session_pids(target.session.sid)}
    before, client_before = snapshot(target.session.sid, upstream.session.sid), children_cpu_seconds()
    done = subprocess.run(
        argv, capture_output=True, text=True, check=False, timeout=settings.duration + settings.warmup + 60
    )
    after = snapshot(target.session.sid, upstream.session.sid)
    if done.returncode:
        return {"error": f"grpc_load.py exited {done.returncode}: {done.stderr.strip()[-800:]}"}
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    calls = result.pop("all_calls")
    assert isinstance(calls, int)
    result["cpu"] = cpu_usage(before, after, roles, calls, children_cpu_seconds() - client_before)
    print(
        f"  gRPC c{settings.grpc_concurrency}: {result['rps']} req/s  p50 {result['p50_ms']} ms  "
        f"errors {result['errors']}",
        flush=True,
    )
    return result


def rss_by_role(sid: int) -> dict[str, float]:
    totals: dict[str, float] = {}
    for pid in session_pids(sid):
        totals[label(pid)] = round(totals.get(label(pid), 0.0) + rss_mb(pid), 1)
    return totals


def measure(target: Target, upstream: Target, settings: Settings, wrk: str) -> dict[str, object]:
    print(f"== {target.name}", flush=True)
    with RssSampler(target.session.sid) as rss:
        levels = measure_levels(target, upstream, settings, wrk)
        stream = probe(
            target.chat_url, chat_body(True), target.headers, settings.stream_requests, settings.stream_max_s
        ).summary()
        print(
            f"  stream: TTFC p50 {stream['ttfc_ms_p50']} ms  total p50 {stream['total_ms_p50']} ms  "
            f"ok {stream['ok']}/{stream['requests']}",
            flush=True,
        )
        grpc = measure_grpc(target, upstream, settings)
    return {
        "name": target.name,
        "levels": levels,
        "stream": stream,
        "grpc": grpc,
        "rss_mb_peak": round(rss.peak_mb, 1),
        "rss_mb_by_role_end": rss_by_role(target.session.sid),
        "max_procs": rss.max_procs,
    }


# ---------------------------------------------------------------------------- orchestration


def _csv_ints(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def parse_args(argv: list[str] | None) -> Settings:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=_csv_ints, default=[1], help="worker counts to run, e.g. 1,2")
    parser.add_argument("--concurrency", type=_csv_ints, default=[1, 16, 64], help="wrk connection counts")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per load level (and gRPC run)")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds before measuring")
    parser.add_argument("--stream-requests", type=int, default=30, help="sequential streaming requests")
    parser.add_argument("--stream-max-s", type=float, default=15.0, help="time cap of the streaming probe")
    parser.add_argument("--grpc-concurrency", type=int, default=16, help="concurrent gRPC callers")
    parser.add_argument("--grpc-channels", type=int, default=4, help="gRPC connections the callers share")
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="S",
        help="first wait up to S seconds for the machine to be idle (others' load)",
    )
    parser.add_argument("--out", type=Path, help="results directory (default bench-results/<timestamp>)")
    parser.add_argument(
        "--metering",
        choices=("on", "off", "both"),
        default="both",
        help="gateway runs with limits, ledger and metrics on, off, or both side by side",
    )
    parser.add_argument(
        "--ab-blocks",
        type=int,
        default=10,
        help="with --metering both: ABBA blocks per start order of the interleaved on/off comparison (0: skip it)",
    )
    parser.add_argument(
        "--ab-seconds", type=float, default=1.0, help="seconds per phase of the interleaved comparison"
    )
    args = parser.parse_args(argv)
    out = args.out or REPO / "bench-results" / time.strftime("%Y%m%d-%H%M%S")
    return Settings(
        args.workers,
        args.concurrency,
        args.duration,
        args.warmup,
        args.stream_requests,
        args.stream_max_s,
        args.grpc_concurrency,
        args.grpc_channels,
        args.wait_idle,
        out,
        {"on": [True], "off": [False], "both": [True, False]}[args.metering],
        args.ab_blocks if args.metering == "both" else 0,
        args.ab_seconds,
    )


def _command_output(argv: list[str]) -> str:
    """What a command prints (stdout, else stderr), or "unknown" when it cannot run."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False, cwd=REPO)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (done.stdout or done.stderr).strip() or "unknown"


def _first_line(text: str) -> str:
    return text.splitlines()[0]


def metadata(settings: Settings, wrk: str) -> dict[str, object]:
    bin_dir = Path(sys.executable).parent
    return {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": {k: v for k, v in vars(settings).items() if k != "out"},
        "git": _first_line(_command_output(["git", "rev-parse", "--short", "HEAD"])),
        "git_changed_files": len(_command_output(["git", "status", "--porcelain"]).splitlines()),
        "modelyard": _first_line(_command_output([str(bin_dir / "modelyard"), "--version"])),
        "envoy": _first_line(_command_output([str(bin_dir / "envoy"), "--version"])),
        "wrk": _first_line(_command_output([wrk, "-v"])),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg_before": os.getloadavg(),
    }


def _raise_interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def stopped_at_exit(started: list[Session]) -> Iterator[None]:
    """Stop every session started inside the block (again), also on errors, Ctrl-C and SIGTERM."""
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        for session in reversed(started):
            stop_session(session)
        signal.signal(signal.SIGTERM, previous)


def measure_gateway(
    workers: int, upstream: Target, settings: Settings, wrk: str, started: list[Session], metering: bool
) -> dict[str, object]:
    """One gateway run; a failure is recorded in the results and the next run still happens."""
    try:
        gateway = start_gateway(workers, upstream, settings.out, started, metering)
    except BenchError as exc:
        print(f"  FAILED: {exc}", file=sys.stderr)
        return {"name": f"modelyard-w{workers}", "error": str(exc)}
    try:
        return measure(gateway, upstream, settings, wrk)
    except BenchError as exc:
        print(f"  FAILED: {exc}", file=sys.stderr)
        return {"name": gateway.name, "error": str(exc)}
    finally:
        stop_session(gateway.session)


def busy_percent(seconds: float = 2.0) -> float:
    """Machine-wide busy CPU, in % of one core, over the next `seconds`."""
    before = machine_busy_seconds()[0]
    time.sleep(seconds)
    return 100 * (machine_busy_seconds()[0] - before) / seconds


def wait_for_idle(limit_s: float, threshold: float = 20.0) -> float:
    """Wait (bounded) until the machine is nearly idle; the last busy % seen."""
    deadline = time.monotonic() + limit_s
    busy = busy_percent()
    while busy > threshold and time.monotonic() < deadline:
        print(f"  machine busy ({busy:.0f}% of a core by others); waiting for it to calm down", flush=True)
        busy = busy_percent(5.0)
    if busy > threshold:
        print(
            f"WARNING: the machine is busy ({busy:.0f}% of a core) before the bench starts; "
            "results will be disturbed (see the `other` CPU row)",
            file=sys.stderr,
            flush=True,
        )
    return round(busy, 1)


def run(settings: Settings) -> dict[str, object]:
    wrk = ensure_wrk()
    idle_check = wait_for_idle(settings.wait_idle)
    settings.out.mkdir(parents=True, exist_ok=False)
    results: dict[str, object] = {
        "meta": metadata(settings, wrk) | {"busy_pct_before": idle_check},
        "targets": {},
    }
    targets: dict[str, object] = {}
    started: list[Session] = []
    with stopped_at_exit(started):
        upstream = start_upstream(settings.out, "sk-bench-" + secrets.token_hex(8), started)
        targets["direct"] = measure(upstream, upstream, settings, wrk)
        for workers in settings.workers:
            for metering in settings.metering:
                result = measure_gateway(workers, upstream, settings, wrk, started, metering)
                targets[str(result["name"])] = result
        results["targets"] = targets
        if settings.ab_blocks:
            print("== metering on vs off, interleaved", flush=True)
            results["interleaved"] = compare_metering(
                upstream, settings.out / "interleaved", wrk, started, settings.ab_blocks, settings.ab_seconds
            )
    return results


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    try:
        results = run(settings)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted; everything it started has been stopped", file=sys.stderr)
        return 130
    table = markdown(results)
    if "interleaved" in results:
        table += "\n" + interleaved_markdown(results["interleaved"])
    (settings.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (settings.out / "results.md").write_text(table)
    print("\n" + table)
    print(f"results: {settings.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
