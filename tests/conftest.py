"""Session fixtures: one fake OpenAI upstream and one real gateway (Envoy + worker) per test
session (per xdist worker), shared by every test that does not need its own."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.openai_upstream import FakeOpenAI
from tests.gateway_process import SINGLE_ATTEMPT, GatewayProcess

UPSTREAM_KEY = "sk-upstream-" + "x" * 8 + secrets.token_hex(8)
"""The provider credential the gateway holds; tests check it never reaches a client."""

ERROR_SCENARIOS = ("400", "401", "403", "404", "409", "422", "429", "500", "503")


def gateway_config(upstream_base_url: str) -> dict[str, object]:
    models: list[dict[str, object]] = [
        {"provider": "demo", "id": "demo-chat", "alias": "demo/chat", "tasks": ["chat", "completions"]},
        {"provider": "demo", "id": "demo-embed", "alias": "demo/embed", "tasks": ["embeddings"]},
        {"provider": "fake-openai", "id": "gpt-4o-mini", "alias": "gpt-4o-mini"},
        {"provider": "fake-openai", "id": "text-embedding-3-small", "alias": "text-embedding-3-small"},
        {"provider": "fake-openai", "id": "gpt-3.5-turbo-instruct", "alias": "gpt-3.5-turbo-instruct"},
        {"provider": "fake-openai", "id": "slow-stream", "alias": "scenario/slow-stream"},
        {"provider": "fake-openai", "id": "stall", "alias": "scenario/stall"},
        {"provider": "fake-openai", "id": "garbage", "alias": "scenario/garbage"},
        {"provider": "fake-openai", "id": "midstream-drop", "alias": "scenario/midstream-drop"},
        {"provider": "down", "id": "gpt-4o", "alias": "scenario/down"},
    ]
    models += [
        {"provider": "fake-openai", "id": f"error-{status}", "alias": f"scenario/error-{status}"}
        for status in ERROR_SCENARIOS
    ]
    return {
        "providers": [
            {"name": "demo", "type": "demo"},
            {
                "name": "fake-openai",
                "type": "openai",
                "data": {"apikey": "$FAKE_OPENAI_API_KEY", "base_url": upstream_base_url},
            },
            {
                "name": "down",
                "type": "openai",
                "data": {"apiKey": "$FAKE_OPENAI_API_KEY", "baseURL": "http://127.0.0.1:9/v1"},
            },
        ],
        "models": models,
        "routing": SINGLE_ATTEMPT,
    }


@pytest.fixture(scope="session")
def fake_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=UPSTREAM_KEY) as fake:
        yield fake


@pytest.fixture(scope="session")
def gateway(fake_openai: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    process = GatewayProcess(
        config=gateway_config(fake_openai.base_url),
        workdir=Path(tmp_path_factory.mktemp("gateway")),
        admin_key="my-test-" + secrets.token_urlsafe(16),
        env={"FAKE_OPENAI_API_KEY": UPSTREAM_KEY},
    )
    process.start()
    yield process
    assert process.stop() == 0, "the gateway exits cleanly on SIGTERM"
    log = process.log_path.read_text(errors="replace")
    assert UPSTREAM_KEY not in log, "the provider credential leaked into the gateway's output"
    assert process.admin_key not in log, "the gateway's own key leaked into its output"
