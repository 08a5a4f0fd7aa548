"""Rate-limit counters in shared memory: one memory-mapped file that every worker of a host maps.

A fixed open-addressing table of fixed-size rows (name digest, window, used, end, holder pid),
changed only under the process-shared mutex in the file's header (`shm_lock`), so each admission
(check every counter, then charge all of them) is atomic across processes. An uncontended
admission makes no system call: a few struct reads and writes, where a SQLite transaction cost an
order of magnitude more on the request path.

Rows of ended windows are reused. Concurrency slots keep a total row plus one row per holding
process, so the slots of a worker that died are given back when the next worker starts. If the
table were ever full of live rows, admissions fail open (and say so in the log) rather than
refuse traffic the limits would allow.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import functools
import hashlib
import logging
import mmap
import os
import struct
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from modelyard.metering.counters import Check, Decision, Settlement, Slot
from modelyard.metering.shm_lock import MUTEX_BYTES, PTHREAD, FlockLock, ProcessLock, RobustMutex

log = logging.getLogger("modelyard.limits")

COUNTERS_FILENAME = "limits.shm"
MAGIC = b"modelyard-lim-v2"
"""The file's first bytes (its layout's version), then the mutex at MUTEX_AT, then the rows."""
MUTEX_AT = 64
ROWS_AT = MUTEX_AT + MUTEX_BYTES
ROW = struct.Struct("<16sqqqq")
"""Digest of the counter name, window, used, end (Unix seconds), holder pid. A concurrency slot has
a total row (window 0, pid 0) and a row per holding process (window and pid: the process id)."""
SLOTS = 1 << 16
PROBES = 64
GRACE_S = 60
"""An ended window's row stays this long (a late settlement still finds it), then it is reused."""
HEAD = struct.Struct("<16sqq")
"""A row's digest, window and used: what a lookup reads."""
USED_AT = 24
USED = struct.Struct("<q")
HOLDER = struct.Struct("<qqq")
"""used, end and holder pid: what taking a slot writes to the process's own row."""
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
    def __init__(self, path: Path, slots: int = SLOTS, *, use_flock: bool = False) -> None:
        """`use_flock`: lock with `flock` even where robust mutexes exist (how other platforms run)."""
        self._slots = slots
        self._pid = os.getpid()
        self._full_logged = False
        self._rows: dict[tuple[str, int], tuple[int, bytes]] = {}
        """Where each counter's row was last found (checked on use: rows are reused when windows end)."""
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        size = ROWS_AT + slots * ROW.size
        fcntl.flock(self._fd, fcntl.LOCK_EX)  # only while the file is made or checked
        try:
            fresh = os.fstat(self._fd).st_size != size or os.pread(self._fd, len(MAGIC), 0) != MAGIC
            if fresh:  # new, or laid out by another version or table size: start from zero
                os.ftruncate(self._fd, 0)
                os.ftruncate(self._fd, size)
            self._map = mmap.mmap(self._fd, size)
            self._lock = self._make_lock(fresh, use_flock)
            if fresh:
                self._map[: len(MAGIC)] = MAGIC
            with self._locked():
                self._forget_dead_holders()
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _make_lock(self, fresh: bool, use_flock: bool) -> ProcessLock:
        self._mutex_memory: ctypes.c_char | None = None
        if PTHREAD is None or use_flock:
            return FlockLock(self._fd)
        self._mutex_memory = ctypes.c_char.from_buffer(self._map, MUTEX_AT)
        address = ctypes.addressof(self._mutex_memory)
        return RobustMutex.initialize(PTHREAD, address) if fresh else RobustMutex(PTHREAD, address)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self._lock.acquire()
        try:
            yield
        finally:
            self._lock.release()

    # rows

    def _read(self, index: int) -> tuple[bytes, int, int, int, int]:
        return ROW.unpack_from(self._map, ROWS_AT + index * ROW.size)

    def _write(self, index: int, digest: bytes, window: int, used: int, ends: int, pid: int) -> None:
        ROW.pack_into(self._map, ROWS_AT + index * ROW.size, digest, window, used, ends, pid)

    def _find(self, name: str, window: int, now: int, ends: int) -> tuple[int, int]:
        """(byte offset, used) of the counter's row, claiming a free row for it if it has none."""
        cached = self._rows.get((name, window))
        if cached is not None:
            offset, digest = cached
            found, found_window, used = HEAD.unpack_from(self._map, offset)
            if found == digest and found_window == window:
                return offset, used
        digest = _digest(name)
        index, used = self._probe(digest, window, now, ends)
        if len(self._rows) > self._slots:
            self._rows.clear()
        offset = ROWS_AT + index * ROW.size
        self._rows[(name, window)] = (offset, digest)
        return offset, used

    def _probe(self, digest: bytes, window: int, now: int, ends: int) -> tuple[int, int]:
        start = int.from_bytes(digest[:8], "little") % self._slots
        free = -1
        for probe in range(PROBES):
            index = (start + probe) % self._slots
            found, found_window, used, found_ends, _ = self._read(index)
            if found == digest and found_window == window:
                return index, used
            if free < 0 and (found == EMPTY or found_ends < now - GRACE_S):
                free = index
        if free < 0:
            raise TableFull
        self._write(free, digest, window, 0, ends, 0)
        return free, 0

    # the CounterStore contract

    def admit(
        self,
        checks: Sequence[Check],
        at: float,
        costs: Sequence[int],
        slot: Slot | None = None,
        slots: int = 1,
    ) -> Decision:
        self._lock.acquire()
        try:
            return self._admit(checks, at, costs, slot, slots)
        except TableFull:
            self._table_full()
            return Decision(True, tuple(0 for _ in checks))
        finally:
            self._lock.release()

    def _admit(
        self, checks: Sequence[Check], at: float, costs: Sequence[int], slot: Slot | None, slots: int
    ) -> Decision:
        second = int(at)
        rows = []
        for check, cost in zip(checks, costs, strict=True):
            window = check.window(at)
            offset, used = self._find(check.name, window, second, check.ends(at))
            if used + cost > check.limit:
                return Decision(False, (used,), check)
            rows.append((offset, used + cost))
        held = 0
        if slot is not None:
            total, held = self._find(slot.name, 0, second, FOREVER)
            if held + slots > slot.limit:
                return Decision(False, (), None, held)
            mine, mine_held = self._find(slot.name, self._pid, second, FOREVER)
            held += slots
            USED.pack_into(self._map, total + USED_AT, held)
            HOLDER.pack_into(self._map, mine + USED_AT, mine_held + slots, FOREVER, self._pid)
        for offset, used in rows:
            USED.pack_into(self._map, offset + USED_AT, used)
        return Decision(True, tuple(used for _, used in rows), None, held)

    def settle(self, settlements: Sequence[Settlement], slots: Sequence[tuple[Slot, int]] = ()) -> None:
        if not settlements and not slots:
            return
        second = int(time.time())
        self._lock.acquire()
        try:
            for checks, at, delta in settlements:
                for check in checks if delta else ():
                    self._bump(check.name, check.window(at), delta, second, check.ends(at))
            for slot, count in slots:
                self._bump(slot.name, 0, -count, second)
                self._bump(slot.name, self._pid, -count, second)
        except TableFull:
            self._table_full()
        finally:
            self._lock.release()

    def _bump(self, name: str, window: int, delta: int, now: int, ends: int = FOREVER) -> None:
        """Add to a counter's row (never below zero)."""
        offset, used = self._find(name, window, now, ends)
        USED.pack_into(self._map, offset + USED_AT, max(used + delta, 0))

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
        now = int(time.time())
        for index in range(self._slots):
            digest, window, used, ends, pid = self._read(index)
            if pid and pid != self._pid and used and not _pid_alive(pid):
                self._write(index, digest, window, 0, ends, pid)
                with contextlib.suppress(TableFull):
                    total, held = self._probe(digest, 0, now, FOREVER)
                    USED.pack_into(self._map, ROWS_AT + total * ROW.size + USED_AT, max(held - used, 0))

    def _table_full(self) -> None:
        if not self._full_logged:
            log.error("the rate-limit table is full of live counters; admitting without limits")
            self._full_logged = True

    def close(self) -> None:
        self._mutex_memory = None  # the mapping cannot close while ctypes points into it
        self._map.close()
        os.close(self._fd)
