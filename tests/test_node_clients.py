"""Polyglot client tests: Node clients against a real gateway.

- tests/node/grpc_client.mjs: @grpc/grpc-js + @grpc/proto-loader on the typed modelyard.v1.Inference API.
- tests/node/openai_client.mjs: the official `openai` Node SDK on the OpenAI-compatible REST API (Envoy).

The scripts make their own checks with node:assert/strict, print one JSON line of results and exit
non-zero on a failed assertion; this module runs them and checks that JSON again, so a failure
shows the script's stderr. The npm packages (pinned in tests/node/package.json and
package-lock.json) are installed once with `npm ci` when tests/node/node_modules is missing or stale.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.gateway_process import GatewayProcess

NODE_DIR = Path(__file__).resolve().parent / "node"
MODEL = "demo/chat"
SCRIPT_TIMEOUT = 60
INSTALL_TIMEOUT = 300

USER_TEXT = "hello from node"
SYSTEM_TEXT = "You are a terse assistant."
REPLY = f"You said: {USER_TEXT}"
USAGE = {
    "prompt_tokens": len(SYSTEM_TEXT.split()) + len(USER_TEXT.split()),
    "completion_tokens": len(REPLY.split()),
    "total_tokens": len(SYSTEM_TEXT.split()) + len(USER_TEXT.split()) + len(REPLY.split()),
}


@contextmanager
def _install_lock() -> Iterator[None]:
    """An exclusive flock shared by all pytest(-xdist) processes, held while installing.

    The lock is taken on the tests/node directory itself, so no lock file is left in the repo and
    `npm ci` (which deletes and recreates node_modules) cannot swap the locked inode away.
    """
    fd = os.open(NODE_DIR, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _installed() -> bool:
    """Every pinned dependency is in node_modules at its pinned version, and npm finished writing."""
    modules = NODE_DIR / "node_modules"
    if not (modules / ".package-lock.json").is_file():
        return False
    wanted: dict[str, str] = json.loads((NODE_DIR / "package.json").read_text())["dependencies"]
    for name, version in wanted.items():
        manifest = modules / name / "package.json"
        if not manifest.is_file() or json.loads(manifest.read_text()).get("version") != version:
            return False
    return True


def _npm(npm: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "npm_config_update_notifier": "false",
        "npm_config_fund": "false",
        "npm_config_audit": "false",
    }
    return subprocess.run(
        [npm, *args],
        cwd=NODE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
        check=False,
    )


@pytest.fixture(scope="session")
def node() -> str:
    """The node executable, with tests/node's npm packages installed."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("Node.js polyglot client tests need `node` and `npm` on PATH")
    if _installed():
        return node
    with _install_lock():
        if not _installed():  # another process may have installed while we waited
            result = _npm(npm, "ci", "--no-audit", "--no-fund")
            if result.returncode != 0 or not _installed():
                fallback = _npm(npm, "install", "--no-audit", "--no-fund")
                if fallback.returncode != 0 or not _installed():
                    pytest.fail(
                        "could not install the Node test packages in tests/node\n"
                        f"npm ci ({result.returncode}):\n{result.stdout}\n{result.stderr}\n"
                        f"npm install ({fallback.returncode}):\n{fallback.stdout}\n{fallback.stderr}"
                    )
    return node


def run_script(node: str, script: str, gateway: GatewayProcess, api_key: str | None = None) -> dict[str, Any]:
    env = {
        **os.environ,
        "MODELYARD_GRPC_TARGET": gateway.grpc_target,
        "MODELYARD_BASE_URL": gateway.base_url,
        "MODELYARD_API_KEY": api_key or gateway.admin_key,
        "MODELYARD_MODEL": MODEL,
        "NO_COLOR": "1",
    }
    result = subprocess.run(
        [node, str(NODE_DIR / script)],
        cwd=NODE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, (
        f"{script} exited {result.returncode}\n--- stderr ---\n{result.stderr}\n--- stdout ---\n{result.stdout}"
    )
    lines = result.stdout.strip().splitlines()
    assert lines, f"{script} printed nothing\n--- stderr ---\n{result.stderr}"
    output: dict[str, Any] = json.loads(lines[-1])
    assert output["ok"] is True
    return output


def test_grpc_js_client(node: str, gateway: GatewayProcess) -> None:
    output = run_script(node, "grpc_client.mjs", gateway)

    assert output["unary"] == {"text": REPLY, "finish_reason": "FINISH_REASON_STOP", "usage": USAGE}
    stream = output["stream"]
    assert stream["text"] == REPLY == "".join(stream["deltas"])
    assert stream["finish_reason"] == "FINISH_REASON_STOP"
    assert stream["usage"] == USAGE

    errors = output["errors"]
    for case in ("unknown_model_unary", "unknown_model_stream"):
        assert errors[case]["code"] == 5, errors[case]  # NOT_FOUND
        assert errors[case]["reason"] == "MODEL_NOT_FOUND"
        assert "no-such/model-from-node" in errors[case]["details"]
    for case in ("missing_key_unary", "missing_key_stream", "wrong_key_unary"):
        assert errors[case]["code"] == 16, errors[case]  # UNAUTHENTICATED
        assert errors[case]["reason"] == "INVALID_API_KEY"
        assert errors[case]["type"] == "invalid_request_error"
    assert gateway.admin_key not in json.dumps(output)


def test_openai_node_sdk(node: str, gateway: GatewayProcess) -> None:
    output = run_script(node, "openai_client.mjs", gateway)

    assert output["chat"] == {"text": REPLY, "finish_reason": "stop", "usage": USAGE}
    stream = output["stream"]
    assert stream["text"] == REPLY == "".join(stream["deltas"])
    assert stream["finish_reason"] == "stop"
    assert stream["usage"] == USAGE
    assert stream["usage_chunks"] == 1

    errors = output["errors"]
    for case in ("unknown_model", "unknown_model_stream"):
        assert errors[case]["class"] == "NotFoundError", errors[case]
        assert errors[case]["status"] == 404
        assert errors[case]["code"] == "model_not_found"
    assert errors["unknown_model"]["param"] == "model"
    for case in ("wrong_key", "wrong_key_stream"):
        assert errors[case]["class"] == "AuthenticationError", errors[case]
        assert errors[case]["status"] == 401
        assert errors[case]["code"] == "invalid_api_key"
    assert gateway.admin_key not in json.dumps(output)
