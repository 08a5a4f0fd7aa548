"""Hot reload under load: the config file changes 20 times (some changes invalid) while clients
keep sending unary and streamed requests to two workers.

Every generation N maps the alias `live` to the demo model id `gen-N`, and the demo provider
answers with the model id it was called with, so each response says which config served it.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.gateway_process import GatewayProcess

REWRITES = 20
INVALID = {4, 9, 14, 19}
"""Generations written broken: their model id must never be served."""
CLIENTS = 4
WRITE_PAUSE_S = 0.3


def _document(generation: int, keep_stable: bool = True) -> dict[str, Any]:
    models = [{"provider": "demo", "id": f"gen-{generation}", "alias": "live"}]
    if keep_stable:
        models.append({"provider": "demo", "id": "stable", "alias": "stable"})
    return {
        "providers": [{"name": "demo", "type": "demo", "data": {"word_delay_ms": 20}}],
        "models": models,
    }


def _broken(generation: int) -> str:
    """Four different ways to get a config wrong, each caught before it serves anything."""
    document = _document(generation)
    kind = generation % 4
    if kind == 0:
        document["models"][0]["provider"] = "nowhere"
    elif kind == 1:
        document["routes"] = [
            {
                "name": "split",
                "task_type": "llm/v1/chat",
                "destinations": [{"name": "live", "traffic_percentage": 70}],
                "routing_strategy": "TRAFFIC_SPLIT",
            }
        ]
    elif kind == 2:
        document["providers"][0]["data"]["word_delay_ms"] = -5
    else:
        return yaml.safe_dump(document) + "models: [unclosed\n"
    return yaml.safe_dump(document)


def _write(path: Path, text: str) -> None:
    staged = path.with_suffix(".staged")
    staged.write_text(text)
    os.replace(staged, path)


@dataclass
class Written:
    """The newest valid generation the writer has put on disk (set just before the rename, so that
    it is never behind the file)."""

    valid: int = 0
    done: bool = False


@dataclass(frozen=True)
class Outcome:
    valid_at_end: int
    """The newest valid generation written when the answer had arrived: the served one cannot be newer
    (the client's own start time is no bound: the request reaches a worker some time later)."""
    status: int
    models: tuple[str, ...]
    error: str = ""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    process = GatewayProcess(
        config=_document(0),
        workdir=Path(tmp_path_factory.mktemp("hot-reload")),
        admin_key="reload-" + secrets.token_urlsafe(12),
        env={"MODELYARD_RELOAD_INTERVAL": "0.05"},
        workers=2,
    )
    process.start()
    yield process
    assert process.stop() == 0


def _request(client: httpx.Client, gateway: GatewayProcess, stream: bool, written: Written) -> Outcome:
    body = {
        "model": "live",
        "messages": [{"role": "user", "content": "one two three four"}],
        "stream": stream,
    }
    try:
        if not stream:
            response = client.post(f"{gateway.base_url}/chat/completions", json=body)
            models = (response.json().get("model", ""),) if response.status_code == 200 else ()
            return Outcome(written.valid, response.status_code, models, "" if models else response.text)
        with client.stream("POST", f"{gateway.base_url}/chat/completions", json=body) as response:
            seen: list[str] = []
            for line in response.iter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    event = json.loads(line[6:])
                    seen.append(event.get("model", f"error:{event.get('error')}"))
            return Outcome(written.valid, response.status_code, tuple(seen))
    except httpx.HTTPError as exc:
        return Outcome(written.valid, 0, (), repr(exc))


def _client_loop(gateway: GatewayProcess, written: Written, outcomes: list[Outcome], stream: bool) -> None:
    headers = {"Authorization": f"Bearer {gateway.admin_key}"}
    with httpx.Client(headers=headers, timeout=30) as client:
        while not written.done:
            outcomes.append(_request(client, gateway, stream, written))


def _generation(model: str) -> int:
    assert model.startswith("gen-"), model
    return int(model.removeprefix("gen-"))


def test_twenty_rewrites_under_load_lose_no_request_and_serve_only_valid_configs(
    gateway: GatewayProcess,
) -> None:
    path = gateway.workdir / "modelyard.yaml"
    written, outcomes = Written(), [list[Outcome]() for _ in range(CLIENTS)]
    threads = [
        threading.Thread(target=_client_loop, args=(gateway, written, outcomes[i], i % 2 == 1))
        for i in range(CLIENTS)
    ]
    for thread in threads:
        thread.start()
    try:
        for generation in range(1, REWRITES + 1):
            time.sleep(WRITE_PAUSE_S)
            if generation in INVALID:
                _write(path, _broken(generation))
            else:
                text = yaml.safe_dump(_document(generation))
                written.valid = generation
                _write(path, text)
        time.sleep(WRITE_PAUSE_S)
    finally:
        written.done = True
        for thread in threads:
            thread.join(timeout=60)
    results = [outcome for per_client in outcomes for outcome in per_client]
    failed = [o for o in results if o.status != 200 or not o.models]
    assert failed == []
    assert len(results) > 100
    served: set[int] = set()
    for outcome in results:
        generations = {_generation(model) for model in outcome.models}
        assert len(generations) == 1, outcome  # a stream stays on the config it started with
        (generation,) = generations
        assert generation not in INVALID
        assert generation <= outcome.valid_at_end, outcome
        served.add(generation)
    assert len(served) >= REWRITES // 2  # the changes took effect while the load ran
    log = gateway.log_path.read_text()
    assert log.count("config reload rejected, keeping the last good config") == 2 * len(INVALID)
    for problem in ("no provider named 'nowhere'", "sum to 70, not 100", "word_delay_ms", "not valid YAML"):
        assert problem in log


def test_a_final_rewrite_applies_to_the_next_requests_and_a_removed_alias_is_gone(
    gateway: GatewayProcess,
) -> None:
    path = gateway.workdir / "modelyard.yaml"
    _write(path, yaml.safe_dump(_document(99, keep_stable=False)))
    headers = {"Authorization": f"Bearer {gateway.admin_key}"}
    body = {"messages": [{"role": "user", "content": "hi"}]}
    deadline = time.monotonic() + 10
    with httpx.Client(headers=headers, timeout=30) as client:
        while True:
            answers = [
                client.post(f"{gateway.base_url}/chat/completions", json={**body, "model": "live"}).json()
                for _ in range(6)
            ]
            if all(answer["model"] == "gen-99" for answer in answers) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert [answer["model"] for answer in answers] == ["gen-99"] * 6
        gone = client.post(f"{gateway.base_url}/chat/completions", json={**body, "model": "stable"})
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "model_not_found"
