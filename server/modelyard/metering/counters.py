"""Shared counters for rate limits: one store that every worker process of a host updates atomically.

`CounterStore` is the contract; `SqliteCounters` keeps it in a SQLite file of the data directory
(WAL, one short IMMEDIATE transaction per admission), so N workers enforce one limit, not N. A Redis
implementation can keep the same semantics with one Lua script per call (check all, then add all).

Windows are fixed and aligned to the epoch (`window = floor(now / seconds)`), the same on every
worker. A check passes only if every counter it names has room; then all of them are charged in
the same transaction. Token charges are settled later by the difference between the estimate and
what the provider reported, in the window that was charged.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

COUNTERS_FILENAME = "limits.db"
BUSY_TIMEOUT_S = 5.0
CLEANUP_EVERY = 1000
"""Admissions between deletions of windows that have ended."""


@dataclass(frozen=True)
class Check:
    name: str
    """The counter: scope, subject and unit (never a secret)."""
    seconds: int
    limit: int
    cost: int


@dataclass(frozen=True)
class Standing:
    """A counter after an admission: what the rate-limit headers report."""

    check: Check
    window: int
    used: int

    @property
    def key(self) -> tuple[str, int]:
        return (self.check.name, self.window)

    @property
    def ends(self) -> int:
        return (self.window + 1) * self.check.seconds

    @property
    def remaining(self) -> int:
        return max(0, self.check.limit - self.used)

    def reset_in(self, now: float) -> float:
        return self.ends - now


@dataclass(frozen=True)
class Decision:
    admitted: bool
    standings: tuple[Standing, ...]
    """Every counter checked, charged when admitted; the first one without room when refused."""


class CounterStore(Protocol):
    def admit(self, checks: Sequence[Check], now: float) -> Decision: ...
    def settle(self, standings: Sequence[Standing], delta: int) -> None:
        """Add `delta` (negative to refund) to these counters' charged windows."""
        ...

    def enter(self, name: str, limit: int) -> bool:
        """Take one of `limit` concurrency slots of `name`; False when all are taken."""
        ...

    def leave(self, name: str) -> None: ...
    def close(self) -> None: ...


_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS windows (
        name TEXT NOT NULL, window INTEGER NOT NULL, used INTEGER NOT NULL, ends INTEGER NOT NULL,
        PRIMARY KEY (name, window)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS in_flight (
        name TEXT NOT NULL, pid INTEGER NOT NULL, used INTEGER NOT NULL,
        PRIMARY KEY (name, pid)) WITHOUT ROWID""",
)
_USED = "SELECT used FROM windows WHERE name = ? AND window = ?"
_CHARGE = (
    "INSERT INTO windows (name, window, used, ends) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (name, window) DO UPDATE SET used = used + excluded.used"
)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SqliteCounters:
    """Counters in one SQLite file shared by the workers of a host. Counters are not durable state:
    the file is opened with synchronous=OFF (a crash of the host may forget the current windows)."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._admissions = 0
        self._conn = sqlite3.connect(
            path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=OFF")
        for statement in _SCHEMA:
            self._conn.execute(statement)
        self._forget_dead_processes()

    def _forget_dead_processes(self) -> None:
        """Slots held by workers that died (a crash never released them)."""
        pids = [row[0] for row in self._conn.execute("SELECT DISTINCT pid FROM in_flight")]
        dead = [(pid,) for pid in pids if pid != self._pid and not _pid_alive(pid)]
        if dead:
            self._conn.executemany("DELETE FROM in_flight WHERE pid = ?", dead)

    def admit(self, checks: Sequence[Check], now: float) -> Decision:
        windows = [int(now // check.seconds) for check in checks]
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                standings = []
                for check, window in zip(checks, windows, strict=True):
                    row = conn.execute(_USED, (check.name, window)).fetchone()
                    used = row[0] if row else 0
                    if used + check.cost > check.limit:
                        conn.execute("ROLLBACK")
                        return Decision(False, (Standing(check, window, used),))
                    standings.append(Standing(check, window, used + check.cost))
                conn.executemany(_CHARGE, [(*s.key, s.check.cost, s.ends) for s in standings])
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            self._admissions += 1
            if self._admissions % CLEANUP_EVERY == 0:
                self._cleanup(now)
        return Decision(True, tuple(standings))

    def _cleanup(self, now: float) -> None:
        # a minute of grace: a late settlement of an ended window finds its row and changes nothing
        self._conn.execute("DELETE FROM windows WHERE ends < ?", (int(now) - 60,))

    def settle(self, standings: Sequence[Standing], delta: int) -> None:
        if not standings or delta == 0:
            return
        with self._lock:
            self._conn.executemany(_CHARGE, [(*s.key, delta, s.ends) for s in standings])

    def enter(self, name: str, limit: int) -> bool:
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute(
                    "SELECT COALESCE(SUM(used), 0) FROM in_flight WHERE name = ?", (name,)
                ).fetchone()
                if row[0] >= limit:
                    conn.execute("ROLLBACK")
                    return False
                conn.execute(
                    "INSERT INTO in_flight (name, pid, used) VALUES (?, ?, 1) "
                    "ON CONFLICT (name, pid) DO UPDATE SET used = used + 1",
                    (name, self._pid),
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return True

    def leave(self, name: str) -> None:
        with self._lock:
            self._conn.execute(
                "UPDATE in_flight SET used = MAX(used - 1, 0) WHERE name = ? AND pid = ?", (name, self._pid)
            )

    def close(self) -> None:
        with self._lock:
            self._conn.execute("DELETE FROM in_flight WHERE pid = ?", (self._pid,))
            self._conn.close()
