"""Streaming probe: sequential `"stream": true` chat requests over one keep-alive connection."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import httpx


@dataclass
class StreamResult:
    requests: int = 0
    ok: int = 0
    missing_done: int = 0
    bad_status: dict[str, int] = field(default_factory=dict)
    chunks_min: int = 0
    ttfc_ms: list[float] = field(default_factory=list)
    total_ms: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        data = asdict(self)
        for name in ("ttfc_ms", "total_ms"):
            values = data.pop(name)
            data[f"{name}_p50"] = round(statistics.median(values), 2) if values else None
            data[f"{name}_p90"] = round(_percentile(values, 0.9), 2) if values else None
        return data


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass(frozen=True)
class _One:
    status: int
    ttfc_ms: float
    total_ms: float
    content_chunks: int
    done: bool


def _content_of(line: str) -> str:
    try:
        choices = json.loads(line[5:]).get("choices") or [{}]
    except ValueError:
        return ""
    return str((choices[0].get("delta") or {}).get("content") or "")


def _one(client: httpx.Client, url: str, body: bytes, headers: Mapping[str, str]) -> _One:
    started = time.perf_counter()
    first = 0.0
    chunks, done = 0, False
    with client.stream("POST", url, content=body, headers=headers) as response:
        for line in response.iter_lines():
            if not line.startswith("data:"):
                continue
            first = first or time.perf_counter()
            if line.strip() == "data: [DONE]":
                done = True
            elif _content_of(line):
                chunks += 1
    ended = time.perf_counter()
    return _One(
        response.status_code, ((first or ended) - started) * 1000, (ended - started) * 1000, chunks, done
    )


def probe(url: str, body: bytes, headers: Mapping[str, str], count: int, max_s: float) -> StreamResult:
    """`count` sequential streams (after 2 unmeasured ones), stopping early after `max_s` seconds."""
    result = StreamResult()
    all_headers = {"Content-Type": "application/json", **headers}
    with httpx.Client(timeout=10.0) as client:
        for _ in range(2):
            _one(client, url, body, all_headers)
        deadline = time.monotonic() + max_s
        while result.requests < count and time.monotonic() < deadline:
            _record(result, _one(client, url, body, all_headers))
    return result


def _record(result: StreamResult, one: _One) -> None:
    result.requests += 1
    if one.status != 200:
        result.bad_status[str(one.status)] = result.bad_status.get(str(one.status), 0) + 1
        return
    result.missing_done += not one.done
    result.ok += one.done and one.content_chunks > 0
    result.chunks_min = min(result.chunks_min or one.content_chunks, one.content_chunks)
    result.ttfc_ms.append(one.ttfc_ms)
    result.total_ms.append(one.total_ms)
