"""README.md stays true: its examples run against the quickstart, started the way `make run` does."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from modelyard.config import expand, parse_config

from tests.gateway_process import free_port

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCK = re.compile(r"```(?P<lang>\w+)\n(?P<code>.*?)```", re.DOTALL)


def blocks(lang: str) -> list[str]:
    return [m.group("code") for m in BLOCK.finditer(README) if m.group("lang") == lang]


@dataclass
class Quickstart:
    cwd: Path
    env: dict[str, str]
    http: str
    grpc: str
    metrics: str

    def localize(self, code: str) -> str:
        return (
            code.replace("127.0.0.1:8080", self.http)
            .replace("127.0.0.1:50051", self.grpc)
            .replace("127.0.0.1:9464", self.metrics)
        )


def make_run_command() -> list[str]:
    """The serve command `make run` executes (dry run), so this test follows the Makefile."""
    dry = subprocess.run(["make", "-n", "-s", "run"], cwd=ROOT, capture_output=True, text=True, check=True)
    line = next(line for line in dry.stdout.splitlines() if " serve " in line)
    command = shlex.split(line)
    command[0] = str(Path(sys.executable).parent / "modelyard")
    return [c if not c.startswith("examples/") else str(ROOT / c) for c in command]


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Quickstart]:
    cwd = tmp_path_factory.mktemp("newcomer")
    http, grpc_address, metrics = (f"127.0.0.1:{free_port()}" for _ in range(3))
    env = {k: v for k, v in os.environ.items() if k not in ("MODELYARD_ADMIN_KEY", "MODELYARD_KEY")}
    command = [*make_run_command(), "--http", http, "--grpc", grpc_address, "--metrics", metrics]
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert process.stdout is not None
    output = ""
    deadline = time.monotonic() + 60
    while "Modelyard is serving" not in output and time.monotonic() < deadline and process.poll() is None:
        output += process.stdout.readline()
    assert "Modelyard is serving" in output, output
    export = next(code for code in blocks("bash") if "export MODELYARD_KEY" in code)
    key = subprocess.run(
        ["bash", "-c", f"{export}\necho $MODELYARD_KEY"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert key and key in output, "the generated key is printed once at first start"
    yield Quickstart(cwd, {**env, "MODELYARD_KEY": key}, http, grpc_address, metrics)
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0


CURL_EXPECTATIONS = [
    ("Hello, gateway", '"content":"You said: Hello, gateway"'),
    ('"stream": true', "data: [DONE]"),
    ("/v1/embeddings", '"object":"embedding"'),
]


@pytest.mark.parametrize(("marker", "expected"), CURL_EXPECTATIONS)
def test_curl_examples(quickstart: Quickstart, marker: str, expected: str) -> None:
    code = next(code for code in blocks("bash") if marker in code and "curl" in code)
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", quickstart.localize(code)],
        cwd=quickstart.cwd,
        env=quickstart.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert expected in result.stdout, result.stdout
    assert '"error"' not in result.stdout


@pytest.mark.parametrize(
    ("marker", "expected"),
    [
        ("from openai import OpenAI", ["You said: Hello from the SDK", "You said: Stream please"]),
        ("inference_pb2_grpc", ["You said: Hello over gRPC", "You said: Hello over gRPC"]),
    ],
)
def test_python_examples(quickstart: Quickstart, marker: str, expected: list[str]) -> None:
    code = next(code for code in blocks("python") if marker in code)
    result = subprocess.run(
        [sys.executable, "-c", quickstart.localize(code)],
        cwd=quickstart.cwd,
        env=quickstart.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == expected


def test_models_example_lists_the_quickstart_aliases(quickstart: Quickstart) -> None:
    response = httpx.get(
        f"http://{quickstart.http}/v1/models",
        headers={"Authorization": f"Bearer {quickstart.env['MODELYARD_KEY']}"},
    )
    assert {m["id"] for m in response.json()["data"]} == {"demo/chat", "demo/embed"}


def section(title: str) -> str:
    start = README.index(f"## {title}")
    return README[start : README.index("\n## ", start + 1)]


def test_admin_walkthrough(quickstart: Quickstart) -> None:
    """The administration section's commands, run in order in one shell, as a reader would."""
    text = section("Administration")
    script = "\n".join(m.group("code") for m in BLOCK.finditer(text) if m.group("lang") == "bash")
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", quickstart.localize(script)],
        cwd=quickstart.cwd,
        env=quickstart.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert '"apikey":"****1234"' in out and "sk-example-not-a-real-key-1234" not in out
    assert '"alias":"demo/assistant"' in out and '"id":"demo/assistant"' in out
    assert '"content":"You said: Hello, tenant"' in out
    assert '"scopes":["inference"]' in out and '"action":"keys.create"' in out
    assert '"error"' not in out


def test_configuration_example_is_valid() -> None:
    example = next(code for code in blocks("yaml") if "providers:" in code)
    config = parse_config(yaml.safe_load(example), env={"OPENAI_API_KEY": "sk-example"})
    assert [p.type for p in config.providers] == ["openai", "demo"]
    assert config.models[1].tasks == ("embeddings",)


def test_routing_examples_are_valid_and_route_as_described() -> None:
    """Each dialect's example in the Routing section parses; together they make one valid file."""
    examples = [
        yaml.safe_load(m.group("code"))
        for m in BLOCK.finditer(section("Routing"))
        if m.group("lang") == "yaml"
    ]
    env = {"OPENAI_API_KEY": "sk-example", "AZURE_OPENAI_API_KEY": "az-example"}
    native, mlflow = (parse_config(example, env=env) for example in examples)
    assert native.routing.resolve("chat").strategy == "least_in_flight"
    assert native.routing.resolve("chat").fallbacks == ("chat-small",)
    assert native.models[2].defaults == {"temperature": 0.2}
    routes = expand(mlflow).routes
    assert [(r.name, r.destinations) for r in routes] == [("chat-route", (("chat1", 80), ("chat2", 20)))]
    combined = parse_config({**examples[0], **examples[1]}, env=env)
    assert {m.name for m in expand(combined).models} >= {"chat", "chat-small", "chat1", "chat2"}


def test_the_databricks_endpoint_example_runs_as_written(quickstart: Quickstart) -> None:
    """The console example of the Routing section, run with curl against `make run`'s gateway."""
    example = next(
        m.group("code") for m in BLOCK.finditer(section("Routing")) if m.group("lang") == "console"
    )
    base = f"http://{quickstart.http}"
    env = {**quickstart.env, "BASE": base, "ADMIN_KEY": quickstart.env["MODELYARD_KEY"]}
    subprocess.run(
        ["bash", "-euo", "pipefail", "-c", example], env=env, check=True, capture_output=True, timeout=60
    )
    headers = {"Authorization": f"Bearer {env['ADMIN_KEY']}"}
    endpoint = httpx.get(f"{base}/v1/endpoints/claude-chat", headers=headers, timeout=15).json()
    claude, gpt = endpoint["config"]["served_entities"]
    assert claude["external_model"]["anthropic_config"] == {
        "anthropic_api_key": "{{secrets/my_scope/anthropic_api_key}}"
    }
    assert gpt["external_model"]["openai_config"]["openai_api_key_plaintext"] == "****"
    assert endpoint["config"]["traffic_config"]["routes"] == [
        {"served_model_name": "claude", "traffic_percentage": 80},
        {"served_model_name": "gpt", "traffic_percentage": 20},
    ]
    secrets = httpx.get(f"{base}/v1/secrets", headers=headers, timeout=15).json()["secrets"]
    assert [(s["scope"], s["key"]) for s in secrets] == [("my_scope", "anthropic_api_key")]
    for path in ("/v1/endpoints/claude-chat", "/v1/secrets/my_scope/anthropic_api_key"):
        assert httpx.delete(f"{base}{path}", headers=headers, timeout=15).status_code == 200


def test_limits_example_is_valid() -> None:
    example = next(m.group("code") for m in BLOCK.finditer(section("Limits")) if m.group("lang") == "yaml")
    config = parse_config(yaml.safe_load(example))
    assert config.limits.concurrent_per_key == 16
    assert [(r.scope, r.unit, r.per) for r in config.limits.rules] == [
        ("key", "requests", "minute"),
        ("key_model", "tokens", "hour"),
        ("tenant", "requests", "day"),
        ("model", "requests", "second"),
    ]
    assert config.usage.prices["my-finetune"].output == 4.0
    assert config.tracing.otlp_endpoint == "http://127.0.0.1:4317"


def test_usage_and_metrics_examples_run_against_make_run(quickstart: Quickstart) -> None:
    """The usage commands and the metrics curl of the Limits section, after a request was made."""
    headers = {"Authorization": f"Bearer {quickstart.env['MODELYARD_KEY']}"}
    body = {"model": "demo/chat", "messages": [{"role": "user", "content": "count me"}]}
    assert (
        httpx.post(f"http://{quickstart.http}/v1/chat/completions", json=body, headers=headers).status_code
        == 200
    )
    script = next(m.group("code") for m in BLOCK.finditer(section("Limits")) if m.group("lang") == "bash")
    env = {
        **quickstart.env,
        "MODELYARD_GRPC": quickstart.grpc,
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
    }
    deadline = time.monotonic() + 15  # the ledger is written in batches
    while True:
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", quickstart.localize(script)],
            cwd=quickstart.cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        if result.stdout.count("demo/chat") >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    printed, _, table = result.stdout.partition("START")  # curl prints no newline after the JSON
    assert '"model":"demo/chat"' in printed and '"provider":"demo"' in printed
    assert table.split()[:2] == ["MODEL", "PROVIDER"] and "demo/chat" in table
    metrics_command = re.search(r"`(curl -s http://127\.0\.0\.1:9464/metrics)`", section("Limits"))
    assert metrics_command is not None
    deadline = time.monotonic() + 15  # workers write their metrics once a second
    while True:
        metrics = subprocess.run(
            ["bash", "-c", quickstart.localize(metrics_command.group(1))],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
        if 'gen_ai_request_model="demo/chat"' in metrics or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert "gen_ai_client_token_usage_bucket" in metrics and 'gen_ai_request_model="demo/chat"' in metrics
