"""Reading the ledger back: totals grouped by tenant, key, model, provider or deployment, per time
bucket. Runs on its own read connection (WAL: readers never wait on the writers)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from modelyard.errors import invalid_request
from modelyard.metering.ledger import open_ledger

GROUPS = MappingProxyType(
    {
        "tenant": "tenant_id",
        "key": "key_id",
        "model": "model",
        "provider": "provider",
        "deployment": "deployment",
    }
)
BUCKETS = MappingProxyType({"none": 0, "minute": 60, "hour": 3600, "day": 86400})
MAX_ROWS = 10_000


@dataclass(frozen=True)
class UsageQuery:
    tenant_id: str | None
    """None: every tenant (the operator's view)."""
    group_by: tuple[str, ...] = ("model",)
    bucket: str = "day"
    start: float = 0.0
    end: float = 0.0
    """0: no bound."""


@dataclass(frozen=True)
class UsageRow:
    start: int
    groups: dict[str, str]
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost_usd: float
    mean_latency_ms: float


@dataclass(frozen=True)
class UsageReport:
    rows: list[UsageRow]
    dropped: int
    """Records the ledger could not keep (its queue was full) in the period: the totals are short by it."""


def check_query(group_by: Sequence[str], bucket: str) -> None:
    for name in group_by:
        if name not in GROUPS:
            raise invalid_request(
                f"Invalid 'group_by': {name[:40]!r} is not one of {', '.join(GROUPS)}.", param="group_by"
            )
    if bucket not in BUCKETS:
        raise invalid_request(f"Invalid 'bucket': use one of {', '.join(BUCKETS)}.", param="bucket")


class UsageReader:
    def __init__(self, path: Path) -> None:
        self._conn = open_ledger(path)
        self._lock = threading.Lock()

    def report(self, query: UsageQuery) -> UsageReport:
        check_query(query.group_by, query.bucket)
        seconds = BUCKETS[query.bucket]
        start_expr = f"CAST(at / {seconds} AS INTEGER) * {seconds}" if seconds else "0"
        columns = [GROUPS[name] for name in query.group_by]
        where, params = self._where(query)
        group = ", ".join(["bucket_start", *columns])
        sql = (
            f"SELECT {start_expr} AS bucket_start{''.join(', ' + c for c in columns)}, COUNT(*), "
            "SUM(status >= 400), SUM(prompt_tokens), SUM(completion_tokens), SUM(cached_tokens), "
            f"SUM(cost_usd), AVG(latency_ms) FROM usage {where} GROUP BY {group} ORDER BY {group} LIMIT {MAX_ROWS}"
        )
        with self._lock:
            found = self._conn.execute(sql, params).fetchall()
            dropped = self._dropped(query)
        rows = [_row(row, query.group_by) for row in found]
        return UsageReport(rows, dropped)

    @staticmethod
    def _where(query: UsageQuery) -> tuple[str, list[object]]:
        clauses: list[str] = []
        params: list[object] = []
        if query.tenant_id is not None:
            clauses.append("tenant_id = ?")
            params.append(query.tenant_id)
        if query.start:
            clauses.append("at >= ?")
            params.append(query.start)
        if query.end:
            clauses.append("at < ?")
            params.append(query.end)
        return ("WHERE " + " AND ".join(clauses)) if clauses else "", params

    def _dropped(self, query: UsageQuery) -> int:
        sql = "SELECT COALESCE(SUM(count), 0) FROM dropped WHERE at >= ?"
        params: list[object] = [query.start]
        if query.end:
            sql += " AND at < ?"
            params.append(query.end)
        return int(self._conn.execute(sql, params).fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _row(row: tuple[object, ...], group_by: Sequence[str]) -> UsageRow:
    start, *rest = row
    groups = dict(zip(group_by, (str(v) for v in rest[: len(group_by)]), strict=True))
    requests, errors, prompt, completion, cached, cost, latency = rest[len(group_by) :]
    return UsageRow(
        int(start),  # type: ignore[call-overload]
        groups,
        int(requests),  # type: ignore[call-overload]
        int(errors or 0),  # type: ignore[call-overload]
        int(prompt or 0),  # type: ignore[call-overload]
        int(completion or 0),  # type: ignore[call-overload]
        int(cached or 0),  # type: ignore[call-overload]
        round(float(cost or 0.0), 8),  # type: ignore[arg-type]
        round(float(latency or 0.0), 3),  # type: ignore[arg-type]
    )
