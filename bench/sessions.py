"""Processes the bench starts: each in its own session, so it is measured and stopped as a whole."""

from __future__ import annotations

import contextlib
import os
import re
import resource
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Session:
    """A process started with `start_new_session=True`: its pid is also its session id."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def sid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_session(
    name: str,
    argv: Sequence[str],
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Session:
    with log_path.open("ab") as log:  # append: children that reopen /dev/stdout share the end
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=None if env is None else dict(env),
            cwd=cwd,
            start_new_session=True,
        )
    return Session(name, process, log_path)


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name: [0] is field 3 (state)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2 :].split()


def session_pids(sid: int) -> list[int]:
    """Live (non-zombie) processes whose session id is `sid`."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))) and fields[3] == str(sid) and fields[0] != "Z":
            pids.append(int(entry))
    return pids


def cpu_seconds(pid: int) -> float:
    fields = _stat(pid)
    return 0.0 if fields is None else (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mb(pid: int) -> float:
    fields = _stat(pid)
    return 0.0 if fields is None else int(fields[21]) * PAGE_BYTES / 2**20


_ROLES = (("modelyard.worker", "worker"), ("modelyard serve", "supervisor"), ("upstream", "upstream"))


def label(pid: int) -> str:
    """A short role name for a process of a session: envoy, worker, supervisor, upstream, other."""
    try:
        argv = [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")]
    except OSError:
        return "gone"
    if os.path.basename(argv[0]) == "envoy":
        return "envoy"
    text = " ".join(argv)
    role = next((role for needle, role in _ROLES if needle in text), "other")
    if role == "worker" and (index := re.search(r"unix-abstract:\S*-(\d+)\b", text)):
        role += index.group(1)
    return role


def session_cpu(sid: int) -> dict[int, float]:
    return {pid: cpu_seconds(pid) for pid in session_pids(sid)}


def session_rss_mb(sid: int) -> float:
    return sum(rss_mb(pid) for pid in session_pids(sid))


def machine_busy_seconds() -> tuple[float, float]:
    """Busy CPU time of the whole machine (all cores), and its softirq + steal part, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / CLOCK_TICKS, (values[6] + values[7]) / CLOCK_TICKS


def children_cpu_seconds() -> float:
    """CPU used so far by this process's reaped children (wrk, grpc_load.py)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _signal_all(pids: Sequence[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


def _wait_gone(session: Session, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        session.process.poll()
        if not session_pids(session.sid):
            return True
        time.sleep(0.05)
    return False


def stop_session(session: Session, grace: float = 10.0) -> None:
    """SIGTERM to every process of the session, then SIGKILL to whatever is left after `grace`."""
    _signal_all(session_pids(session.sid), signal.SIGTERM)
    if not _wait_gone(session, grace):
        _signal_all(session_pids(session.sid), signal.SIGKILL)
        _wait_gone(session, 5.0)
    with contextlib.suppress(subprocess.TimeoutExpired):
        session.process.wait(timeout=5.0)
