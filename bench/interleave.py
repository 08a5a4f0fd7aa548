"""Metering on against metering off, interleaved: both gateways run at once (one loaded at a time),
and short REST and gRPC runs alternate between them, round after round, in alternating order.

The machine is shared and its speed drifts by more than the difference being measured; measured
one after the other, whichever gateway ran in the faster minute won. Interleaved, both see the same
drift, and the median over rounds of the per-round ratio is the figure to read. Which gateway was
started first also showed (up to 10 % in favour of the second, on this 2-core machine), so half the
rounds run with each start order.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

from sessions import Session, stop_session
from targets import MODEL, Target, chat_body, start_gateway
from wrkload import BenchError, run_wrk, write_script

REST_CONNECTIONS = 16
GRPC_CONCURRENCY = 16
GRPC_CHANNELS = 4


def _grpc_rps(target: Target, seconds: float) -> float:
    argv = [
        sys.executable,
        str(Path(__file__).with_name("grpc_load.py")),
        "--target",
        str(target.grpc),
        "--key",
        target.key,
        "--model",
        MODEL,
        "--concurrency",
        str(GRPC_CONCURRENCY),
        "--channels",
        str(GRPC_CHANNELS),
        "--duration",
        str(seconds),
        "--warmup",
        "0.5",
    ]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=seconds + 60)
    if done.returncode:
        raise BenchError(f"grpc_load.py exited {done.returncode}: {done.stderr.strip()[-400:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["errors"]:
        raise BenchError(f"gRPC errors against {target.name}: {result['errors']}")
    return float(result["rps"])


def _summary(on: list[float], off: list[float]) -> dict[str, object]:
    """The per-round ratios' geometric mean is the figure: the two start orders' rounds weigh the
    same, so the start-order effect cancels (a median would pick one side of it)."""
    ratios = [a / b for a, b in zip(on, off, strict=True)]
    half = len(ratios) // 2
    return {
        "on_rps": on,
        "off_rps": off,
        "on_median": round(statistics.median(on), 1),
        "off_median": round(statistics.median(off), 1),
        "ratio_mean": round(statistics.geometric_mean(ratios), 3),
        "ratio_on_started_first": round(statistics.geometric_mean(ratios[:half]), 3),
        "ratio_off_started_first": round(statistics.geometric_mean(ratios[half:]), 3),
        "ratio_min": round(min(ratios), 3),
        "ratio_max": round(max(ratios), 3),
    }


def compare_metering(
    upstream: Target, out: Path, wrk: str, started: list[Session], rounds: int, seconds: float
) -> dict[str, object]:
    """REST chat (wrk, 16 connections) and gRPC CreateChatCompletion (16 callers) RPS of one worker
    with metering on and off, `rounds` times each, interleaved; half the rounds with the metering-on
    gateway started first, half with it started second."""
    out.mkdir()
    rest: dict[bool, list[float]] = {True: [], False: []}
    grpc: dict[bool, list[float]] = {True: [], False: []}
    for half, start_order in enumerate(((True, False), (False, True))):
        half_out = out / f"start-{'on' if start_order[0] else 'off'}-first"
        half_out.mkdir()
        gateways = {
            metering: start_gateway(1, upstream, half_out, started, metering) for metering in start_order
        }
        try:
            numbers = range(rounds // 2) if half == 0 else range(rounds // 2, rounds)
            for round_number in numbers:
                _round(gateways, half_out, wrk, seconds, round_number, rest, grpc)
        finally:
            for gateway in gateways.values():
                stop_session(gateway.session)
    return {
        "rounds": rounds,
        "seconds": seconds,
        "rest_c16": _summary(rest[True], rest[False]),
        "grpc_c16": _summary(grpc[True], grpc[False]),
    }


def _round(
    gateways: dict[bool, Target],
    out: Path,
    wrk: str,
    seconds: float,
    round_number: int,
    rest: dict[bool, list[float]],
    grpc: dict[bool, list[float]],
) -> None:
    order = (True, False) if round_number % 2 == 0 else (False, True)
    for metering in order:
        gateway = gateways[metering]
        script = write_script(out / f"{gateway.name}.wrk.lua", chat_body(False), gateway.headers)
        run_wrk(wrk, gateway.chat_url, script, REST_CONNECTIONS, 1)  # warm-up
        result = run_wrk(wrk, gateway.chat_url, script, REST_CONNECTIONS, seconds)
        if result.errors:
            raise BenchError(f"{result.errors} failed REST requests against {gateway.name}")
        rest[metering].append(result.rps)
        grpc[metering].append(_grpc_rps(gateway, seconds))
    print(
        f"  round {round_number + 1}: REST on/off {rest[True][-1]:,.0f} / {rest[False][-1]:,.0f}  "
        f"gRPC on/off {grpc[True][-1]:,.0f} / {grpc[False][-1]:,.0f}",
        flush=True,
    )


def markdown(summary: dict[str, object]) -> str:
    lines = [
        f"Metering on vs off, interleaved ({summary['rounds']} rounds of {summary['seconds']:g} s, one worker, "
        "half of them with each gateway started first):",
        "",
        "| measure | on (median RPS) | off (median RPS) | on / off (mean of rounds) "
        "| on started first / second | range |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for title, key in (("REST chat @c16", "rest_c16"), ("gRPC CreateChatCompletion @c16", "grpc_c16")):
        row = summary[key]
        assert isinstance(row, dict)
        lines.append(
            f"| {title} | {row['on_median']:,.0f} | {row['off_median']:,.0f} | {row['ratio_mean']:.3f} | "
            f"{row['ratio_on_started_first']:.3f} / {row['ratio_off_started_first']:.3f} | "
            f"{row['ratio_min']:.3f} to {row['ratio_max']:.3f} |"
        )
    return "\n".join(lines) + "\n"
