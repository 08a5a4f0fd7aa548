"""Closed-loop gRPC load alternating between two gateways, printed as one JSON line.

    .venv/bin/python bench/grpc_alternate.py --a 127.0.0.1:50051 --key-a KEY --b 127.0.0.1:50052 \
        --key-b KEY --blocks 8 --phase 1

Each block loads A, B, B, A for `--phase` seconds each (the same callers, switched over at once),
so both gateways see the same minute of a shared machine and neither always goes first. One
process for both: a separate load process per run would cost a start-up per phase.
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass

import grpc
from grpc_load import build_request, phase, print_result
from modelyard.v1 import chat_pb2, inference_pb2_grpc

ABBA = (0, 1, 1, 0)


@dataclass(frozen=True)
class Side:
    stubs: list[inference_pb2_grpc.InferenceStub]
    metadata: tuple[tuple[str, str], ...]
    channels: list[grpc.aio.Channel]


def _side(target: str, key: str, channels: int) -> Side:
    options = [("grpc.use_local_subchannel_pool", 1)]
    opened = [grpc.aio.insecure_channel(target, options=options) for _ in range(channels)]
    stubs = [inference_pb2_grpc.InferenceStub(channel) for channel in opened]
    return Side(stubs, (("authorization", f"Bearer {key}"),), opened)


async def _rate(side: Side, request: chat_pb2.ChatCompletionRequest, args: argparse.Namespace) -> float:
    measured = await phase(side.stubs, request, side.metadata, args.concurrency, args.phase)
    if measured.tally.errors:
        raise SystemExit(f"gRPC errors: {dict(measured.tally.errors)}")
    return len(measured.tally.latencies) / measured.seconds


async def run(args: argparse.Namespace) -> dict[str, object]:
    sides = (_side(args.a, args.key_a, args.channels), _side(args.b, args.key_b, args.channels))
    request = build_request(args.model)
    try:
        for side in sides:
            await phase(side.stubs, request, side.metadata, args.concurrency, args.warmup)
        blocks = []
        for _ in range(args.blocks):
            rates: tuple[list[float], list[float]] = ([], [])
            for index in ABBA:
                rates[index].append(await _rate(sides[index], request, args))
            blocks.append([round(sum(rates[0]) / 2, 1), round(sum(rates[1]) / 2, 1)])
    finally:
        await asyncio.gather(*(channel.close() for side in sides for channel in side.channels))
    return {"concurrency": args.concurrency, "phase_s": args.phase, "blocks": blocks}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--a", required=True, help="HOST:PORT of the first gateway's gRPC listener")
    parser.add_argument("--key-a", required=True)
    parser.add_argument("--b", required=True, help="HOST:PORT of the second gateway's gRPC listener")
    parser.add_argument("--key-b", required=True)
    parser.add_argument("--model", default="bench-model")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--phase", type=float, default=1.0, help="seconds per gateway per turn")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per gateway first")
    print_result(run(parser.parse_args()))


if __name__ == "__main__":
    main()
