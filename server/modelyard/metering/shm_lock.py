"""The lock that makes each rate-limit admission atomic across the worker processes of a host.

A robust, process-shared pthread mutex kept in the counters file itself. Taking it when nobody
holds it is one atomic instruction in user space, and the call keeps the GIL: a lock that releases
the GIL on every request (`flock` does, being a system call made without it) hands the interpreter
to gRPC's poller thread each time and costs the worker several percent of its throughput. Only a
contended lock waits without the GIL. A process that dies holding the mutex does not wedge the
others: the next one to take it is told so and marks it consistent (robust mutexes).

Where glibc's robust mutexes are not available, `FlockLock` keeps the same contract with `flock`.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import sys
import threading
from typing import Protocol

log = logging.getLogger("modelyard.limits")

MUTEX_BYTES = 64
"""Room for a pthread_mutex_t (40 bytes on x86-64 glibc, 48 on arm64)."""
_ATTR_BYTES = 16
_PTHREAD_PROCESS_SHARED = 1
_PTHREAD_MUTEX_ROBUST = 1


class ProcessLock(Protocol):
    def acquire(self) -> None: ...

    def release(self) -> None: ...


class _Pthread:
    """glibc's mutex functions twice over: called with the GIL held (`PyDLL`) for the calls that
    never wait, and without it (`CDLL`) for the one that may."""

    def __init__(self) -> None:
        holding, waiting = ctypes.PyDLL("libc.so.6", use_errno=True), ctypes.CDLL("libc.so.6")
        self.trylock = holding.pthread_mutex_trylock
        self.unlock = holding.pthread_mutex_unlock
        self.consistent = holding.pthread_mutex_consistent
        self.lock = waiting.pthread_mutex_lock
        self.attr_init = holding.pthread_mutexattr_init
        self.attr_setpshared = holding.pthread_mutexattr_setpshared
        self.attr_setrobust = holding.pthread_mutexattr_setrobust
        self.init = holding.pthread_mutex_init
        for function in (self.trylock, self.unlock, self.consistent, self.lock, self.init):
            function.argtypes = [ctypes.c_void_p] if function is not self.init else [ctypes.c_void_p] * 2
            function.restype = ctypes.c_int


def _pthread() -> _Pthread | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return _Pthread()
    except (OSError, AttributeError):  # not glibc, or too old for robust mutexes
        return None


class RobustMutex:
    def __init__(self, pthread: _Pthread, address: int) -> None:
        self._pthread = pthread
        self._address = address

    @classmethod
    def initialize(cls, pthread: _Pthread, address: int) -> RobustMutex:
        """Make a new mutex at `address` (once, by whoever creates the file, under `flock`)."""
        attr = ctypes.create_string_buffer(_ATTR_BYTES)
        failed = (
            pthread.attr_init(attr)
            or pthread.attr_setpshared(attr, _PTHREAD_PROCESS_SHARED)
            or pthread.attr_setrobust(attr, _PTHREAD_MUTEX_ROBUST)
            or pthread.init(address, ctypes.addressof(attr))
        )
        if failed:
            raise OSError(failed, "cannot make a process-shared robust mutex")
        return cls(pthread, address)

    def acquire(self) -> None:
        result = self._pthread.trylock(self._address)
        if result == errno.EBUSY:
            result = self._pthread.lock(self._address)
        if result == errno.EOWNERDEAD:
            log.warning("a worker died holding the rate-limit lock; its last change may be partial")
            self._pthread.consistent(self._address)
        elif result:
            raise OSError(result, "cannot take the rate-limit lock")

    def release(self) -> None:
        self._pthread.unlock(self._address)


class FlockLock:
    """`flock` of the counters file, plus a thread lock (`flock` does not exclude the threads of
    one process, which share the file description)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._threads = threading.Lock()

    def acquire(self) -> None:
        self._threads.acquire()
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def release(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._threads.release()


PTHREAD = _pthread()
"""The process's handle on glibc's mutex functions, or None where they are missing."""
