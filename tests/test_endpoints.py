"""Databricks-style serving endpoints and secret scopes through the real gateway (REST via Envoy,
and gRPC), against the fake OpenAI upstream: the 80/20 split, `{{secrets/scope/key}}` resolution,
ownership of credentials, config replacement and deletion, and the errors of each call."""

from __future__ import annotations

import secrets
import sqlite3
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from modelyard.v1 import endpoints_pb2, endpoints_pb2_grpc

from tests.admin_fixtures import Recorder, Rest, error_code, ok, running_gateway, store_path
from tests.fakes.openai_upstream import FakeOpenAI

UPSTREAM_KEY = "sk-endpoints-" + secrets.token_hex(16)
WRONG_KEY = "sk-wrong-" + secrets.token_hex(16)
REQUESTS = 2000
CONCURRENCY = 8


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=UPSTREAM_KEY, record=False) as fake:
        yield fake


@pytest.fixture(scope="module")
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture(scope="module")
def rest(tmp_path_factory: pytest.TempPathFactory, recorder: Recorder) -> Iterator[Rest]:
    config = {
        "routing": {"seed": 7},
        "providers": [{"name": "demo", "type": "demo"}],
        "models": [{"provider": "demo", "id": "echo", "alias": "taken"}],
    }
    with running_gateway(Path(tmp_path_factory.mktemp("endpoints")), config=config) as gateway:
        with Rest(gateway, recorder) as client:
            yield client
        log = gateway.log_path.read_text()
    for value in (UPSTREAM_KEY, WRONG_KEY):
        assert value not in log
        assert recorder.containing(value) == []


def _entity(name: str, model: str, base_url: str, credential: dict[str, str]) -> dict[str, Any]:
    config = {"openai_api_base": base_url, **credential}
    return {
        "name": name,
        "external_model": {
            "name": model,
            "provider": "openai",
            "task": "llm/v1/chat",
            "openai_config": config,
        },
    }


def _split_config(base_url: str) -> dict[str, Any]:
    return {
        "served_entities": [
            _entity("main", "gpt-4o", base_url, {"openai_api_key": "{{secrets/team/openai}}"}),
            _entity("canary", "gpt-4.1", base_url, {"openai_api_key_plaintext": UPSTREAM_KEY}),
        ],
        "traffic_config": {
            "routes": [
                {"served_model_name": "main", "traffic_percentage": 80},
                {"served_model_name": "canary", "traffic_percentage": 20},
            ]
        },
    }


def _chat(rest: Rest, model: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return rest.call("POST", "/v1/chat/completions", rest.gateway.admin_key, json_body=body)


def _admin(rest: Rest, method: str, path: str, body: Any = None) -> httpx.Response:
    return rest.call(method, path, rest.gateway.admin_key, json_body=body)


def _provider_ids(rest: Rest) -> set[str]:
    return {p["uuid"] for p in ok(_admin(rest, "GET", "/v1/providers")) if p["name"].startswith("split/")}


def test_secret_scopes_store_values_sealed_and_show_them_masked(rest: Rest) -> None:
    put = ok(
        _admin(rest, "POST", "/v1/secrets", {"scope": "team", "key": "openai", "string_value": WRONG_KEY})
    )
    assert put == {
        "scope": "team",
        "key": "openai",
        "masked_value": "****" + WRONG_KEY[-4:],
        "updated_at": put["updated_at"],
    }
    listed = ok(_admin(rest, "GET", "/v1/secrets"))["secrets"]
    assert [(s["scope"], s["key"]) for s in listed] == [("team", "openai")]
    assert (
        ok(
            rest.client.get(
                "/v1/secrets",
                params={"scope": "other"},
                headers={"Authorization": f"Bearer {rest.gateway.admin_key}"},
            )
        )["secrets"]
        == []
    )
    bad = _admin(rest, "POST", "/v1/secrets", {"scope": "team space", "key": "k", "string_value": "v"})
    assert bad.status_code == 400 and error_code(bad) is None and "'scope'" in bad.json()["error"]["message"]
    empty = _admin(rest, "POST", "/v1/secrets", {"scope": "team", "key": "k", "string_value": ""})
    assert empty.status_code == 400 and empty.json()["error"]["param"] == "string_value"
    missing = _admin(rest, "DELETE", "/v1/secrets/team/nothing")
    assert missing.status_code == 404 and error_code(missing) == "secret_not_found"
    with sqlite3.connect(store_path(rest.gateway)) as conn:
        stored = conn.execute("SELECT ciphertext, hint FROM scoped_secrets").fetchall()
    assert len(stored) == 1 and WRONG_KEY.encode() not in stored[0][0]


def test_an_endpoint_splits_80_20_and_resolves_its_secret_reference(rest: Rest, upstream: FakeOpenAI) -> None:
    ok(_admin(rest, "POST", "/v1/secrets", {"scope": "team", "key": "openai", "string_value": WRONG_KEY}))
    created = ok(
        _admin(rest, "POST", "/v1/endpoints", {"name": "split", "config": _split_config(upstream.base_url)})
    )
    assert created["state"] == {"ready": "READY", "config_update": "NOT_UPDATING"}
    main, canary = (e["external_model"]["openai_config"] for e in created["config"]["served_entities"])
    assert main["openai_api_key"] == "{{secrets/team/openai}}"
    assert canary["openai_api_key_plaintext"] == "****" + UPSTREAM_KEY[-4:]
    assert ok(_admin(rest, "GET", "/v1/endpoints/split")) == created
    assert [e["name"] for e in ok(_admin(rest, "GET", "/v1/endpoints"))["endpoints"]] == ["split"]

    # the scope holds a wrong key: the entity that references it is refused upstream
    refused = _chat(rest, "split/main")
    assert refused.status_code == 401, refused.text
    ok(_admin(rest, "POST", "/v1/secrets", {"scope": "team", "key": "openai", "string_value": UPSTREAM_KEY}))
    assert ok(_chat(rest, "split/main"))["model"] == "gpt-4o"

    def served(_: int) -> str:
        response = _chat(rest, "split")
        assert response.status_code == 200, response.text
        return response.headers["x-modelyard-deployment"]

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        counts = Counter(pool.map(served, range(REQUESTS)))
    assert set(counts) == {"split/main/gpt-4o", "split/canary/gpt-4.1"}
    share = counts["split/main/gpt-4o"] / REQUESTS
    print(f"endpoint split over {REQUESTS}: {dict(counts)} main={share:.4f}")
    assert abs(share - 0.80) <= 0.03, counts

    ok(_admin(rest, "DELETE", "/v1/secrets/team/openai"))
    gone = _chat(rest, "split/main")
    assert gone.status_code == 503 and error_code(gone) == "provider_credentials_unavailable"
    ok(_admin(rest, "POST", "/v1/secrets", {"scope": "team", "key": "openai", "string_value": UPSTREAM_KEY}))
    assert ok(_chat(rest, "split/main"))["model"] == "gpt-4o"


@pytest.mark.parametrize(
    ("change", "status", "fragment"),
    [
        (lambda c: c["traffic_config"]["routes"][1].update(traffic_percentage=10), 400, "sum to 90, not 100"),
        (
            lambda c: c["traffic_config"]["routes"][1].update(served_model_name="nope"),
            400,
            "names no served entity",
        ),
        (
            lambda c: c["served_entities"][0]["external_model"].update(provider="palm"),
            400,
            "unsupported provider",
        ),
        (
            lambda c: c["served_entities"][0]["external_model"].update(task="llm/v1/images"),
            400,
            "task: must be one of",
        ),
        (
            lambda c: c["served_entities"][1]["external_model"]["openai_config"].update(openai_api_key="x"),
            400,
            "give exactly one of openai_api_key or openai_api_key_plaintext",
        ),
        (lambda c: c.pop("traffic_config"), 400, "traffic_config: required with more than one"),
        (
            lambda c: c["served_entities"][0]["external_model"]["openai_config"].update(
                openai_api_key="{{secrets/bad scope/k}}"
            ),
            400,
            "not a valid reference",
        ),
    ],
)
def test_an_invalid_endpoint_config_is_refused_with_the_problem_named(
    rest: Rest, upstream: FakeOpenAI, change: Any, status: int, fragment: str
) -> None:
    config = _split_config(upstream.base_url)
    change(config)
    response = _admin(rest, "POST", "/v1/endpoints", {"name": "broken", "config": config})
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]["message"]
    assert UPSTREAM_KEY not in response.text
    assert _admin(rest, "GET", "/v1/endpoints/broken").status_code == 404


def test_names_are_one_namespace(rest: Rest, upstream: FakeOpenAI) -> None:
    single = {
        "served_entities": [
            _entity("only", "gpt-4o", upstream.base_url, {"openai_api_key_plaintext": UPSTREAM_KEY})
        ]
    }
    clash = _admin(rest, "POST", "/v1/endpoints", {"name": "taken", "config": single})
    assert clash.status_code == 409 and error_code(clash) == "conflict"
    bad = _admin(rest, "POST", "/v1/endpoints", {"name": "has/slash", "config": single})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "name"
    ok(_admin(rest, "POST", "/v1/endpoints", {"name": "twice", "config": single}))
    again = _admin(rest, "POST", "/v1/endpoints", {"name": "twice", "config": single})
    assert again.status_code == 409
    ok(_admin(rest, "DELETE", "/v1/endpoints/twice"))


def test_owned_providers_change_only_with_their_endpoint(rest: Rest, upstream: FakeOpenAI) -> None:
    owned = _provider_ids(rest)
    assert len(owned) == 2
    some = sorted(owned)[0]
    refused = _admin(rest, "DELETE", f"/v1/providers/{some}")
    assert refused.status_code == 409 and error_code(refused) == "owned_by_endpoint"
    patched = _admin(rest, "PATCH", f"/v1/providers/{some}", {"name": "mine-now"})
    assert patched.status_code == 409

    single = {
        "served_entities": [
            _entity("only", "gpt-4o-mini", upstream.base_url, {"openai_api_key_plaintext": UPSTREAM_KEY})
        ]
    }
    updated = ok(_admin(rest, "PUT", "/v1/endpoints/split/config", single))
    assert updated["config"]["traffic_config"]["routes"] == [
        {"served_model_name": "only", "traffic_percentage": 100}
    ]
    assert updated["created_at"] <= updated["updated_at"]
    assert _provider_ids(rest).isdisjoint(owned) and len(_provider_ids(rest)) == 1
    assert ok(_chat(rest, "split"))["model"] == "gpt-4o-mini"
    assert _chat(rest, "split/canary").status_code == 404
    with sqlite3.connect(store_path(rest.gateway)) as conn:
        placeholders = ",".join("?" * len(owned))
        left = conn.execute(
            f"SELECT COUNT(*) FROM secrets WHERE provider_id IN ({placeholders})", sorted(owned)
        )
        assert left.fetchone()[0] == 0

    ok(_admin(rest, "DELETE", "/v1/endpoints/split"))
    assert _provider_ids(rest) == set()
    with sqlite3.connect(store_path(rest.gateway)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM secrets").fetchone()[0] == 0
        actions = [row[0] for row in conn.execute("SELECT action FROM audit WHERE action LIKE 'endpoints.%'")]
    assert {"endpoints.create", "endpoints.update", "endpoints.delete"} <= set(actions)
    gone = _chat(rest, "split")
    assert gone.status_code == 404 and error_code(gone) == "model_not_found"
    assert _admin(rest, "DELETE", "/v1/endpoints/split").status_code == 404


def test_the_grpc_service_speaks_the_same_contract(rest: Rest, upstream: FakeOpenAI) -> None:
    metadata = (("authorization", f"Bearer {rest.gateway.admin_key}"),)
    config = endpoints_pb2.EndpointConfig()
    entity = config.served_entities.add(name="only")
    entity.external_model.name, entity.external_model.provider = "gpt-4o", "openai"
    entity.external_model.task = "llm/v1/chat"
    entity.external_model.openai_config.update(
        {"openai_api_base": upstream.base_url, "openai_api_key_plaintext": UPSTREAM_KEY, "temperature": 0.5}
    )
    with grpc.insecure_channel(rest.gateway.grpc_target) as channel:
        stub = endpoints_pb2_grpc.EndpointsStub(channel)
        created = stub.CreateEndpoint(
            endpoints_pb2.CreateEndpointRequest(name="grpc-ep", config=config), metadata=metadata, timeout=15
        )
        assert created.config.traffic_config.routes[0].traffic_percentage == 100
        shown = dict(created.config.served_entities[0].external_model.openai_config)
        assert shown["openai_api_key_plaintext"] == "****" + UPSTREAM_KEY[-4:] and shown["temperature"] == 0.5
        assert ok(_chat(rest, "grpc-ep"))["model"] == "gpt-4o"
        with pytest.raises(grpc.RpcError) as refused:
            stub.CreateEndpoint(
                endpoints_pb2.CreateEndpointRequest(name="grpc-ep", config=config),
                metadata=metadata,
                timeout=15,
            )
        assert refused.value.code() == grpc.StatusCode.ABORTED  # 409, as every Admin conflict
        assert "an endpoint named 'grpc-ep' already exists" in (refused.value.details() or "")
        with pytest.raises(grpc.RpcError) as anonymous:
            stub.ListEndpoints(endpoints_pb2.ListEndpointsRequest(), timeout=15)
        assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
        stub.DeleteEndpoint(
            endpoints_pb2.DeleteEndpointRequest(name="grpc-ep"), metadata=metadata, timeout=15
        )
