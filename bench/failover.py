"""What one failed attempt adds to a request, and how exact a traffic split is, in one run.

    .venv/bin/python bench/failover.py [--requests 400] [--split 2000]

Starts the fake OpenAI upstream and `modelyard serve` (one worker) with aliases that reach the same
healthy deployment directly, after an upstream 500, and after a refused connection (breaker off, so
every request pays the failed attempt). Requests are sent one at a time, interleaved across the
aliases, so the machine's noise hits all of them alike; the added latency is the difference of the
medians. Then an MLflow-style route split 80/20 gets `--split` requests and the share each
destination served (from `x-modelyard-deployment`) is reported. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fakes.openai_upstream import FakeOpenAI  # noqa: E402
from tests.gateway_process import GatewayProcess, free_port  # noqa: E402

ALIASES = ("direct", "after-500", "after-refused")


def config(base_url: str, key: str) -> dict[str, object]:
    openai = {"apikey": key, "base_url": base_url}
    return {
        "providers": [
            {"name": "up", "type": "openai", "data": openai},
            {
                "name": "down",
                "type": "openai",
                "data": {**openai, "base_url": f"http://127.0.0.1:{free_port()}/v1"},
            },
        ],
        "models": [
            {"provider": "up", "id": "gpt-4o-mini", "alias": "direct"},
            {"provider": "up", "id": "error-500", "alias": "after-500"},
            {"provider": "down", "id": "gpt-4o-mini", "alias": "after-refused"},
            {"provider": "up", "id": "gpt-4o", "alias": "split-a"},
            {"provider": "up", "id": "gpt-4.1", "alias": "split-b"},
        ],
        "routes": [
            {
                "name": "split",
                "task_type": "llm/v1/chat",
                "destinations": [
                    {"name": "split-a", "traffic_percentage": 80},
                    {"name": "split-b", "traffic_percentage": 20},
                ],
                "routing_strategy": "TRAFFIC_SPLIT",
            }
        ],
        "routing": {
            "breaker": {"consecutive_failures": 1000, "min_requests": 100000, "eject_on_429": False},
            "policies": {"after-500": {"fallbacks": ["direct"]}, "after-refused": {"fallbacks": ["direct"]}},
        },
    }


def _post(client: httpx.Client, url: str, model: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "Say hello"}]}
    response = client.post(url, json=body)
    response.raise_for_status()
    return response


def measure(gateway: GatewayProcess, requests: int, split: int) -> dict[str, object]:
    url = f"{gateway.base_url}/chat/completions"
    headers = {"Authorization": f"Bearer {gateway.admin_key}"}
    timings: dict[str, list[float]] = {alias: [] for alias in ALIASES}
    attempts: dict[str, Counter[str]] = {alias: Counter() for alias in ALIASES}
    with httpx.Client(headers=headers, timeout=30) as client:
        for alias in ALIASES:  # warm-up: connections, caches
            for _ in range(20):
                _post(client, url, alias)
        for _ in range(requests):
            for alias in ALIASES:
                started = time.perf_counter()
                response = _post(client, url, alias)
                timings[alias].append(time.perf_counter() - started)
                attempts[alias][response.headers["x-modelyard-attempts"]] += 1
        served = Counter(_post(client, url, "split").headers["x-modelyard-deployment"] for _ in range(split))
    median = {alias: statistics.median(values) * 1000 for alias, values in timings.items()}
    p90 = {alias: statistics.quantiles(values, n=10)[-1] * 1000 for alias, values in timings.items()}
    return {
        "requests_per_alias": requests,
        "median_ms": {k: round(v, 3) for k, v in median.items()},
        "p90_ms": {k: round(v, 3) for k, v in p90.items()},
        "added_by_one_failed_attempt_ms": {
            alias: round(median[alias] - median["direct"], 3) for alias in ALIASES[1:]
        },
        "attempts_seen": {alias: dict(counter) for alias, counter in attempts.items()},
        "split_requests": split,
        "split_share": {name: round(count / split, 4) for name, count in sorted(served.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--split", type=int, default=2000)
    args = parser.parse_args()
    key = "sk-bench-" + secrets.token_hex(8)
    with FakeOpenAI(api_key=key, record=False) as upstream, tempfile.TemporaryDirectory() as workdir:
        gateway = GatewayProcess(
            config=config(upstream.base_url, key),
            workdir=Path(workdir),
            admin_key="bench-" + secrets.token_urlsafe(12),
        )
        gateway.start()
        try:
            print(json.dumps(measure(gateway, args.requests, args.split), indent=2))
        finally:
            gateway.stop()


if __name__ == "__main__":
    main()
