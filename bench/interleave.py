"""Metering on against metering off, interleaved: both gateways run at once (one loaded at a time)
and short phases alternate between them in ABBA blocks, REST first, then gRPC.

The machine is shared and its speed drifts by more than the difference being measured: measured
one after the other, whichever gateway ran in the faster minute won. In a block both gateways see
the same few seconds, and each goes first as often as second. Which gateway was started first also
showed (3 to 10 % in favour of the second, with identical configurations too), so half the blocks
run with each start order. The figure to read is the geometric mean of the per-block on/off ratios,
with its 95 % confidence interval: when the interval is wide, the machine was too noisy to tell.
"""

from __future__ import annotations

import json
import math
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
ABBA = (True, False, False, True)
"""Metering on, off, off, on: a block's phases."""
_T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26, 10: 2.23}
"""Student's t, two-sided 95 %, by degrees of freedom."""
_Z95 = 1.96


def _t95(freedom: int) -> float:
    """Student's t quantile: the table, then the Cornish-Fisher term (within about 1 % beyond 10)."""
    return _T95.get(freedom) or _Z95 + (_Z95**3 + _Z95) / (4 * freedom)


def _rest_blocks(
    gateways: dict[bool, Target], out: Path, wrk: str, blocks: int, seconds: float
) -> list[float]:
    scripts = {
        metering: write_script(out / f"{gateway.name}.wrk.lua", chat_body(False), gateway.headers)
        for metering, gateway in gateways.items()
    }
    for metering, gateway in gateways.items():
        run_wrk(wrk, gateway.chat_url, scripts[metering], REST_CONNECTIONS, 1)  # warm-up
    ratios = []
    for _ in range(blocks):
        rates: dict[bool, list[float]] = {True: [], False: []}
        for metering in ABBA:
            result = run_wrk(wrk, gateways[metering].chat_url, scripts[metering], REST_CONNECTIONS, seconds)
            if result.errors:
                raise BenchError(f"{result.errors} failed REST requests against {gateways[metering].name}")
            rates[metering].append(result.rps)
        ratios.append(sum(rates[True]) / sum(rates[False]))
    return ratios


def _grpc_blocks(gateways: dict[bool, Target], blocks: int, seconds: float) -> list[float]:
    on, off = gateways[True], gateways[False]
    argv = [
        sys.executable,
        str(Path(__file__).with_name("grpc_alternate.py")),
        *("--a", str(on.grpc), "--key-a", on.key, "--b", str(off.grpc), "--key-b", off.key),
        *("--model", MODEL, "--concurrency", str(GRPC_CONCURRENCY), "--channels", str(GRPC_CHANNELS)),
        *("--blocks", str(blocks), "--phase", str(seconds)),
    ]
    timeout = blocks * 4 * seconds + 60
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout)
    if done.returncode:
        raise BenchError(f"grpc_alternate.py exited {done.returncode}: {done.stderr.strip()[-400:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return [on_rps / off_rps for on_rps, off_rps in result["blocks"]]


def _geometric(ratios: list[float]) -> float:
    return round(statistics.geometric_mean(ratios), 3)


def _summary(first: list[float], second: list[float]) -> dict[str, object]:
    """`first`: the blocks with the metering-on gateway started first; `second`: started second."""
    ratios = first + second
    logs = [math.log(ratio) for ratio in ratios]
    half_width = _t95(len(logs) - 1) * statistics.stdev(logs) / math.sqrt(len(logs))
    mean = statistics.mean(logs)
    return {
        "ratios": [round(ratio, 4) for ratio in ratios],
        "ratio_mean": round(math.exp(mean), 3),
        "ci95": [round(math.exp(mean - half_width), 3), round(math.exp(mean + half_width), 3)],
        "ratio_on_started_first": _geometric(first),
        "ratio_off_started_first": _geometric(second),
        "ratio_min": round(min(ratios), 3),
        "ratio_max": round(max(ratios), 3),
    }


def compare_metering(
    upstream: Target, out: Path, wrk: str, started: list[Session], blocks: int, seconds: float
) -> dict[str, object]:
    """REST chat (wrk, 16 connections) and gRPC CreateChatCompletion (16 callers) of one worker with
    metering on and off: `blocks` ABBA blocks of `seconds`-long phases per start order."""
    out.mkdir()
    rest: dict[bool, list[float]] = {}
    grpc: dict[bool, list[float]] = {}
    for start_order in ((True, False), (False, True)):
        half_out = out / f"start-{'on' if start_order[0] else 'off'}-first"
        half_out.mkdir()
        gateways = {
            metering: start_gateway(1, upstream, half_out, started, metering) for metering in start_order
        }
        try:
            rest[start_order[0]] = _rest_blocks(gateways, half_out, wrk, blocks, seconds)
            grpc[start_order[0]] = _grpc_blocks(gateways, blocks, seconds)
        finally:
            for gateway in gateways.values():
                stop_session(gateway.session)
        print(
            f"  {'on' if start_order[0] else 'off'} started first: on/off REST "
            f"{_geometric(rest[start_order[0]]):.3f}, gRPC {_geometric(grpc[start_order[0]]):.3f}",
            flush=True,
        )
    return {
        "blocks_per_start_order": blocks,
        "phase_seconds": seconds,
        "rest_c16": _summary(rest[True], rest[False]),
        "grpc_c16": _summary(grpc[True], grpc[False]),
    }


def markdown(summary: dict[str, object]) -> str:
    lines = [
        f"Metering on vs off, interleaved ({summary['blocks_per_start_order']} ABBA blocks of "
        f"{summary['phase_seconds']:g} s phases per start order, one worker):",
        "",
        "| measure | on / off (geometric mean of blocks) | 95 % interval | on started first / second | range |",
        "| --- | --- | --- | --- | --- |",
    ]
    for title, key in (
        ("REST chat RPS @c16", "rest_c16"),
        ("gRPC CreateChatCompletion RPS @c16", "grpc_c16"),
    ):
        row = summary[key]
        assert isinstance(row, dict)
        low, high = row["ci95"]
        lines.append(
            f"| {title} | {row['ratio_mean']:.3f} | {low:.3f} to {high:.3f} | "
            f"{row['ratio_on_started_first']:.3f} / {row['ratio_off_started_first']:.3f} | "
            f"{row['ratio_min']:.3f} to {row['ratio_max']:.3f} |"
        )
    return "\n".join(lines) + "\n"
