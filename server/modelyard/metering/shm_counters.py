"""Rate-limit counters in shared memory: one memory-mapped file that every worker of a host maps.

A fixed open-addressing table of fixed-size rows (name digest, window, used, end, holder pid),
changed only under an exclusive `flock` of the file, so each admission (check every counter, then
charge all of them) is atomic across processes. It costs two system calls and a few struct reads,
where a SQLite transaction cost an order of magnitude more on the request path.

Rows of ended windows are reused. Concurrency slots keep a total row plus one row per holding
process, so the slots of a worker that died are given back when the next worker starts. If the
table were ever full of live rows, admissions fail open (and say so in the log) rather than
refuse traffic the limits would allow.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import logging
import mmap
import os
import struct
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from modelyard.metering.counters import Check, Decision, Slot, Standing

log = logging.getLogger("modelyard.limits")

COUNTERS_FILENAME = "limits.shm"
ROW = struct.Struct("<16sqqqq")
"""Digest of the counter name, window, used, end (Unix seconds), holder pid. A concurrency slot has
a total row (window 0, pid 0) and a row per holding process (window and pid: the process id)."""
SLOTS = 1 << 16
PROBES = 64
GRACE_S = 60
"""An ended window's row stays this long (a late settlement still finds it), then it is reused."""
FOREVER = 1 << 62
EMPTY = bytes(16)


@functools.lru_cache(maxsize=1 << 16)
def _digest(name: str) -> bytes:
    return hashlib.blake2b(name.encode(), digest_size=16).digest()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class TableFull(Exception):
    pass


class ShmCounters:
    def __init__(self, path: Path, slots: int = SLOTS) -> None:
        self._slots = slots
        self._pid = os.getpid()
        self._thread_lock = threading.Lock()
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        size = slots * ROW.size
        with self._locked():
            if os.fstat(self._fd).st_size < size:
                os.ftruncate(self._fd, size)
        self._map = mmap.mmap(self._fd, size)
        self._full_logged = False
        self._rows: dict[tuple[bytes, int], int] = {}
        """Where each counter's row was last found (checked on use: rows are reused when windows end)."""
        with self._locked():
            self._forget_dead_holders()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self._thread_lock:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    # rows

    def _read(self, index: int) -> tuple[bytes, int, int, int, int]:
        return ROW.unpack_from(self._map, index * ROW.size)

    def _write(self, index: int, digest: bytes, window: int, used: int, ends: int, pid: int) -> None:
        ROW.pack_into(self._map, index * ROW.size, digest, window, used, ends, pid)

    def _find(self, digest: bytes, window: int, now: int) -> tuple[int, int]:
        """(row index, used) of the counter, claiming a free row for it if it has none."""
        cached = self._rows.get((digest, window))
        if cached is not None:
            found, found_window, used, _, _ = self._read(cached)
            if found == digest and found_window == window:
                return cached, used
        index, used = self._probe(digest, window, now)
        if len(self._rows) > self._slots:
            self._rows.clear()
        self._rows[(digest, window)] = index
        return index, used

    def _probe(self, digest: bytes, window: int, now: int) -> tuple[int, int]:
        start = int.from_bytes(digest[:8], "little") % self._slots
        free = -1
        for probe in range(PROBES):
            index = (start + probe) % self._slots
            found, found_window, used, ends, _ = self._read(index)
            if found == digest and found_window == window:
                return index, used
            if free < 0 and (found == EMPTY or ends < now - GRACE_S):
                free = index
        if free < 0:
            raise TableFull
        self._write(free, digest, window, 0, FOREVER, 0)
        return free, 0

    # the CounterStore contract

    def admit(self, checks: Sequence[Check], now: float, slot: Slot | None = None) -> Decision:
        second = int(now)
        with self._locked():
            try:
                return self._admit(checks, now, second, slot)
            except TableFull:
                self._table_full()
                return Decision(True, ())

    def _admit(self, checks: Sequence[Check], now: float, second: int, slot: Slot | None) -> Decision:
        rows = []
        for check in checks:
            window = int(now // check.seconds)
            digest = _digest(check.name)
            index, used = self._find(digest, window, second)
            if used + check.cost > check.limit:
                return Decision(False, (Standing(check, window, used),))
            rows.append((index, digest, window, used, check))
        if slot is not None:
            digest = _digest(slot.name)
            total, held = self._find(digest, 0, second)
            if held >= slot.limit:
                return Decision(False, ())
            mine, mine_held = self._find(digest, self._pid, second)
            self._write(total, digest, 0, held + 1, FOREVER, 0)
            self._write(mine, digest, self._pid, mine_held + 1, FOREVER, self._pid)
        standings = []
        for index, digest, window, used, check in rows:
            self._write(index, digest, window, used + check.cost, (window + 1) * check.seconds, 0)
            standings.append(Standing(check, window, used + check.cost))
        return Decision(True, tuple(standings))

    def finish(self, standings: Sequence[Standing], delta: int, slot: Slot | None = None) -> None:
        if not delta and slot is None:
            return
        second = int(time.time())
        with self._locked():
            try:
                if delta:
                    for standing in standings:
                        self._bump(_digest(standing.check.name), standing.window, delta, second)
                if slot is not None:
                    digest = _digest(slot.name)
                    self._bump(digest, 0, -1, second)
                    self._bump(digest, self._pid, -1, second)
            except TableFull:
                self._table_full()

    def _bump(self, digest: bytes, window: int, delta: int, now: int) -> None:
        """Add to a counter's row, keeping its end and holder (never below zero)."""
        index, _ = self._find(digest, window, now)
        _, _, used, ends, pid = self._read(index)
        self._write(index, digest, window, max(used + delta, 0), ends, pid)

    def used(self, name: str, window: int) -> int:
        """A counter's current value (for diagnostics and tests)."""
        digest = _digest(name)
        start = int.from_bytes(digest[:8], "little") % self._slots
        with self._locked():
            for probe in range(PROBES):
                found, found_window, used, _, _ = self._read((start + probe) % self._slots)
                if found == digest and found_window == window:
                    return used
        return 0

    def _forget_dead_holders(self) -> None:
        """Give back the concurrency slots of workers that died holding them."""
        for index in range(self._slots):
            digest, window, used, ends, pid = self._read(index)
            if pid and pid != self._pid and used and not _pid_alive(pid):
                self._write(index, digest, window, 0, ends, pid)
                with contextlib.suppress(TableFull):
                    self._bump(digest, 0, -used, int(time.time()))

    def _table_full(self) -> None:
        if not self._full_logged:
            log.error("the rate-limit table is full of live counters; admitting without limits")
            self._full_logged = True

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)
