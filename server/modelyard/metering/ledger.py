"""The usage ledger: one row per request, written off the request path in batches.

Requests only append to a bounded buffer; every `flush_interval` the worker writes what has
gathered in one short transaction that never waits for a lock: if the database is busy (another
worker writing, a stalled reader, a backup), the records stay buffered and the next interval
tries again. When the buffer is full a record is dropped and counted, and the count is itself
written (a `dropped` row), so totals can be trusted or known to be short. The request never waits
on the database. Workers do not checkpoint the WAL (that would fsync on the event loop): the
supervisor does, in the background. On shutdown the buffer is written before the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import sqlite3
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

log = logging.getLogger("modelyard.ledger")

LEDGER_FILENAME = "usage.db"
BUSY_TIMEOUT_S = 30.0
FLUSH_INTERVAL_S = 0.25
CLOSE_PATIENCE_S = 10.0
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


def open_ledger(path: Path, busy_timeout: float = BUSY_TIMEOUT_S) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    for statement in _SCHEMA:
        conn.execute(statement)
    return conn


def checkpoint(path: Path) -> None:
    """Fold the WAL back into the database without blocking writers (the supervisor's job)."""
    if not path.exists():
        return
    conn = sqlite3.connect(path, timeout=1.0, isolation_level=None)
    try:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    except sqlite3.OperationalError as exc:
        log.warning("usage ledger checkpoint skipped: %s", exc)
    finally:
        conn.close()


class LedgerBusy(Exception):
    """The database is locked by someone else right now; try again later."""


class LedgerWriter:
    """The database side: one connection that never waits for a lock (busy timeout 0) and never
    checkpoints (a checkpoint fsyncs)."""

    def __init__(self, path: Path) -> None:
        self._conn = open_ledger(path, busy_timeout=0.0)
        self._conn.execute("PRAGMA wal_autocheckpoint=0")

    def write(self, records: Sequence[UsageRecord], dropped: int) -> None:
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise LedgerBusy from None
            raise
        try:
            self._conn.executemany(_INSERT, records)
            if dropped:
                self._conn.execute("INSERT INTO dropped (at, count) VALUES (?, ?)", (time.time(), dropped))
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self._conn.close()


class Ledger:
    def __init__(
        self, writer: LedgerWriter, queue_size: int, batch_size: int, flush_interval: float = FLUSH_INTERVAL_S
    ) -> None:
        self._writer = writer
        self._flush_interval = flush_interval
        self._buffer: deque[UsageRecord] = deque()
        self._queue_size = queue_size
        self._batch_size = batch_size
        self._dropped = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def depth(self) -> int:
        return len(self._buffer)

    @property
    def dropped(self) -> int:
        return self._dropped

    def record(self, record: UsageRecord) -> bool:
        """Buffer a record; False (and counted) when the buffer is full."""
        if len(self._buffer) >= self._queue_size:
            self._dropped += 1
            return False
        self._buffer.append(record)
        return True

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._flush_interval)
            while self._buffer or self._dropped:
                if not self.flush():
                    break

    def flush(self) -> bool:
        """Write one batch; False when the database was busy (nothing is lost: it stays buffered)."""
        batch = list(itertools.islice(self._buffer, self._batch_size))
        dropped = self._dropped
        try:
            self._writer.write(batch, dropped)
        except LedgerBusy:
            return False
        except Exception:
            log.exception("writing %d usage records failed; they are counted as dropped", len(batch))
            self._dropped += len(batch)
            for _ in batch:
                self._buffer.popleft()
            return False
        for _ in batch:
            self._buffer.popleft()
        self._dropped -= dropped
        return True

    async def close(self, patience: float = CLOSE_PATIENCE_S) -> None:
        """Stop the writer and write what is still buffered (waiting up to `patience` for a busy
        database)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        deadline = time.monotonic() + patience
        while (self._buffer or self._dropped) and time.monotonic() < deadline:
            if not self.flush():
                await asyncio.sleep(0.05)
        if self._buffer:
            log.error("%d usage records could not be written before exit", len(self._buffer))
        self._writer.close()
