"""The processes a bench run measures: the fake upstream and `modelyard serve`, started and ready."""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from sessions import Session, free_port, start_session, stop_session
from wrkload import BenchError

REPO = Path(__file__).resolve().parent.parent
MODEL = "bench-model"
PROMPT = "Say hello to the benchmark"
STREAM_PROMPT = " ".join(f"word{i}" for i in range(20))
READY_TIMEOUT = 60.0


@dataclass(frozen=True)
class Target:
    name: str
    session: Session
    base_url: str
    key: str
    grpc: str | None = None

    @property
    def chat_url(self) -> str:
        return f"{self.base_url}/v1/chat/completions"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}


def chat_body(stream: bool) -> bytes:
    content = STREAM_PROMPT if stream else PROMPT
    body = {"model": MODEL, "messages": [{"role": "user", "content": content}], "stream": stream}
    return json.dumps(body, separators=(",", ":")).encode()


def _chat_once(target: Target) -> str | None:
    """None when a chat completion succeeds, else what went wrong."""
    request = urllib.request.Request(target.chat_url, chat_body(False), target.headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5.0) as response:
            reply = json.loads(response.read())
    except (OSError, ValueError) as exc:
        return str(exc)
    return None if reply.get("choices") else f"no choices in {reply!r:.200}"


def wait_ready(target: Target) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    problem: str | None = "not tried"
    while time.monotonic() < deadline:
        if target.session.process.poll() is not None:
            raise BenchError(
                f"{target.name} exited with code {target.session.process.returncode}:\n"
                f"{target.session.log_tail()}"
            )
        problem = _chat_once(target)
        if problem is None:
            return
        time.sleep(0.2)
    raise BenchError(
        f"{target.name}: no successful chat completion in {READY_TIMEOUT:.0f} s "
        f"(last: {problem})\n{target.session.log_tail()}"
    )


def ready_or_stopped(target: Target) -> Target:
    try:
        wait_ready(target)
    except BaseException:
        stop_session(target.session)
        raise
    return target


def start_upstream(out: Path, key: str, started: list[Session]) -> Target:
    if not (REPO / "tests" / "fakes" / "openai_upstream.py").exists():
        raise BenchError("tests/fakes/openai_upstream.py is missing: the fake upstream is needed")
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "tests.fakes.openai_upstream",
        "--port",
        str(port),
        "--api-key",
        key,
        "--quiet",
    ]
    session = start_session("upstream", argv, out / "upstream.log", cwd=REPO)
    started.append(session)
    return ready_or_stopped(Target("direct", session, f"http://127.0.0.1:{port}", key))


METERING_ON: dict[str, object] = {
    # limits that are checked on every request (shared counters, token settlement) but never refuse
    "limits": {
        "rules": [
            {"scope": "key", "requests": 10**12, "per": "minute"},
            {"scope": "key_model", "tokens": 10**14, "per": "minute"},
        ],
        "concurrent_per_key": 100_000,
    },
    "usage": {"enabled": True},
    "metrics": {"enabled": True},
}
METERING_OFF: dict[str, object] = {"usage": {"enabled": False}, "metrics": {"enabled": False}}
"""The access log stays on in both: the comparison is of limits, ledger and metrics."""


def gateway_config(upstream: Target, metering: bool = True) -> dict[str, object]:
    provider = {
        "name": "mock",
        "type": "openai",
        "data": {"apikey": upstream.key, "base_url": f"{upstream.base_url}/v1"},
    }
    return {
        "providers": [provider],
        "models": [{"provider": "mock", "id": MODEL, "alias": MODEL}],
        **(METERING_ON if metering else METERING_OFF),
    }


def start_gateway(
    workers: int, upstream: Target, out: Path, started: list[Session], metering: bool = True
) -> Target:
    name = f"modelyard-w{workers}" + ("" if metering else "-metering-off")
    workdir = out / name
    workdir.mkdir()
    config = workdir / "modelyard.yaml"
    config.write_text(json.dumps(gateway_config(upstream, metering), indent=2) + "\n")  # JSON is YAML
    http_port, grpc_port, key = free_port(), free_port(), "my-bench-" + secrets.token_hex(8)
    argv = [
        str(Path(sys.executable).parent / "modelyard"),
        "serve",
        "--config",
        str(config),
        "--http",
        f"127.0.0.1:{http_port}",
        "--grpc",
        f"127.0.0.1:{grpc_port}",
        "--workers",
        str(workers),
        "--data-dir",
        str(workdir / "data"),
        "--metrics",
        f"127.0.0.1:{free_port()}",
    ]
    env = {**os.environ, "MODELYARD_ADMIN_KEY": key}
    session = start_session(name, argv, workdir / "gateway.log", env=env)
    started.append(session)
    return ready_or_stopped(
        Target(name, session, f"http://127.0.0.1:{http_port}", key, f"127.0.0.1:{grpc_port}")
    )
