"""Closed-loop gRPC load on Inference.CreateChatCompletion, printed as one JSON line.

    .venv/bin/python bench/grpc_load.py --target 127.0.0.1:50051 --key KEY --model bench-model \
        --concurrency 16 --channels 4 --duration 5

`--channels` separate HTTP/2 connections (callers are spread over them round-robin), so that
several workers sharing the port through SO_REUSEPORT all get traffic.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import resource
import statistics
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field

import grpc
from modelyard.v1 import chat_pb2, inference_pb2_grpc

PROMPT = "Say hello to the benchmark"


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)


def build_request(model: str) -> chat_pb2.ChatCompletionRequest:
    message = chat_pb2.ChatMessage(role=chat_pb2.ROLE_USER, content=PROMPT)
    return chat_pb2.ChatCompletionRequest(model=model, messages=[message])


async def caller(
    stub: inference_pb2_grpc.InferenceStub,
    request: chat_pb2.ChatCompletionRequest,
    metadata: tuple[tuple[str, str], ...],
    until: float,
    tally: Tally,
) -> None:
    while time.perf_counter() < until:
        started = time.perf_counter()
        try:
            await stub.CreateChatCompletion(request, metadata=metadata, timeout=5.0)
        except grpc.aio.AioRpcError as exc:
            tally.errors[exc.code().name] += 1
            continue
        tally.latencies.append(time.perf_counter() - started)


async def check(
    stub: inference_pb2_grpc.InferenceStub,
    request: chat_pb2.ChatCompletionRequest,
    metadata: tuple[tuple[str, str], ...],
) -> str:
    reply = await stub.CreateChatCompletion(request, metadata=metadata, timeout=10.0)
    content: str = reply.choices[0].message.content
    return content


@dataclass(frozen=True)
class Phase:
    tally: Tally
    seconds: float
    client_cpu_s: float

    @property
    def calls(self) -> int:
        return len(self.tally.latencies) + sum(self.tally.errors.values())


async def phase(
    stubs: list[inference_pb2_grpc.InferenceStub],
    request: chat_pb2.ChatCompletionRequest,
    metadata: tuple[tuple[str, str], ...],
    concurrency: int,
    seconds: float,
) -> Phase:
    tally = Tally()
    cpu_before, started = _own_cpu(), time.perf_counter()
    await asyncio.gather(
        *(
            caller(stubs[i % len(stubs)], request, metadata, started + seconds, tally)
            for i in range(concurrency)
        )
    )
    return Phase(tally, time.perf_counter() - started, _own_cpu() - cpu_before)


async def run(args: argparse.Namespace) -> dict[str, object]:
    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [grpc.aio.insecure_channel(args.target, options=options) for _ in range(args.channels)]
    stubs = [inference_pb2_grpc.InferenceStub(channel) for channel in channels]
    request = build_request(args.model)
    metadata = (("authorization", f"Bearer {args.key}"),)
    try:
        reply = await check(stubs[0], request, metadata)
        warm = await phase(stubs, request, metadata, args.concurrency, args.warmup)
        measured = await phase(stubs, request, metadata, args.concurrency, args.duration)
    finally:
        await asyncio.gather(*(channel.close() for channel in channels))
    return _summary(args, measured, reply) | {"all_calls": 1 + warm.calls + measured.calls}


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _summary(args: argparse.Namespace, measured: Phase, reply: str) -> dict[str, object]:
    ordered = sorted(measured.tally.latencies)
    count, elapsed = len(ordered), measured.seconds
    return {
        "concurrency": args.concurrency,
        "channels": args.channels,
        "requests": count,
        "seconds": round(elapsed, 3),
        "rps": round(count / elapsed, 1) if elapsed else 0.0,
        "p50_ms": round(statistics.median(ordered) * 1000, 3) if ordered else None,
        "p99_ms": round(ordered[min(count - 1, int(0.99 * count))] * 1000, 3) if ordered else None,
        "errors": dict(measured.tally.errors),
        "client_cpu_ms_per_req": round(measured.client_cpu_s * 1000 / count, 3) if count else None,
        "sample_reply": reply,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--target", required=True, help="HOST:PORT of the gateway's gRPC listener")
    parser.add_argument("--key", required=True, help="API key, sent as `authorization: Bearer KEY`")
    parser.add_argument("--model", default="bench-model")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    print_result(run(parser.parse_args()))


def print_result(load: Coroutine[None, None, dict[str, object]]) -> None:
    """Run a load on uvloop when it is installed and print its result as one JSON line."""
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(load)
    else:
        result = uvloop.run(load)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
