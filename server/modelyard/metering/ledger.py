"""The usage ledger: one row per request, written off the request path in batches.

Requests only `put_nowait` into a bounded queue; a writer task drains it into SQLite in a thread.
When the queue is full the record is dropped and counted, and the count is itself written (as a
`dropped` row), so totals can be trusted or known to be short. The request never waits on the
database. On shutdown the queue is drained before the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

log = logging.getLogger("modelyard.ledger")

LEDGER_FILENAME = "usage.db"
BUSY_TIMEOUT_S = 30.0
FLUSH_INTERVAL_S = 0.25
"""How long the writer gathers records before a write: one transaction per interval, not per request."""


class UsageRecord(NamedTuple):
    at: float
    request_id: str
    tenant_id: str
    key_id: str
    model: str
    """The name the client asked for (alias, endpoint or route)."""
    provider: str
    deployment: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    latency_ms: float
    ttft_ms: float | None
    status: int
    attempts: int
    cost_usd: float
    operation: str
    """chat, completions or embeddings."""


_COLUMNS = UsageRecord._fields
_SCHEMA = (
    f"""CREATE TABLE IF NOT EXISTS usage (
        {", ".join(f"{name} {'TEXT' if name in ('request_id', 'tenant_id', 'key_id', 'model', 'provider', 'deployment', 'operation') else 'REAL'}" for name in _COLUMNS)}
    )""",
    "CREATE INDEX IF NOT EXISTS usage_tenant_at ON usage (tenant_id, at)",
    "CREATE TABLE IF NOT EXISTS dropped (at REAL NOT NULL, count INTEGER NOT NULL)",
)
_INSERT = f"INSERT INTO usage ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"


def open_ledger(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    for statement in _SCHEMA:
        conn.execute(statement)
    return conn


class LedgerWriter:
    """The database side: one connection, used from the writer's thread only."""

    def __init__(self, path: Path) -> None:
        self._conn = open_ledger(path)
        self._lock = threading.Lock()

    def write(self, records: Sequence[UsageRecord], dropped: int) -> None:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(_INSERT, records)
                if dropped:
                    self._conn.execute(
                        "INSERT INTO dropped (at, count) VALUES (?, ?)", (time.time(), dropped)
                    )
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class Ledger:
    def __init__(
        self, writer: LedgerWriter, queue_size: int, batch_size: int, flush_interval: float = FLUSH_INTERVAL_S
    ) -> None:
        self._writer = writer
        self._flush_interval = flush_interval
        self._queue: asyncio.Queue[UsageRecord] = asyncio.Queue(queue_size)
        self._batch_size = batch_size
        self._dropped = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    @property
    def dropped(self) -> int:
        return self._dropped

    def record(self, record: UsageRecord) -> bool:
        """Queue a record; False (and counted) when the queue is full."""
        try:
            self._queue.put_nowait(record)
        except asyncio.QueueFull:
            self._dropped += 1
            return False
        return True

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            if self._queue.qsize() < self._batch_size:
                await asyncio.sleep(self._flush_interval)
            await self._flush(batch)

    async def _flush(self, batch: list[UsageRecord]) -> None:
        while len(batch) < self._batch_size and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        dropped, self._dropped = self._dropped, 0
        try:
            await asyncio.to_thread(self._writer.write, batch, dropped)
        except Exception:
            log.exception("writing %d usage records failed; they are counted as dropped", len(batch))
            self._dropped += dropped + len(batch)

    async def close(self) -> None:
        """Stop the writer and write what is still queued."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while not self._queue.empty():
            await self._flush([self._queue.get_nowait()])
        if self._dropped:
            await asyncio.to_thread(self._writer.write, [], self._dropped)
            self._dropped = 0
        self._writer.close()
