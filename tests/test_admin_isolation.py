"""Tenant isolation and key scopes over every Admin and Inference method, on a real gateway with two
workers (REST through Envoy lands on either; a revocation must reach both).

Isolation: tenants A and B each with a provider, models and keys. A's key on B's objects finds
nothing (NOT_FOUND / 404, never B's data), cannot name B with x-modelyard-tenant, cannot use B's
aliases, and no list shows the other tenant. The operator reaches B by header.
Scopes: inference-only keys cannot administer, admin-only keys cannot infer, tenant admins cannot
manage tenants, model-restricted keys keep to their aliases, revoked and expired keys are refused on
the very next request.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from modelyard.v1 import admin_pb2

from tests.admin_fixtures import (
    ADMIN_BY_NAME,
    ADMIN_METHODS,
    ADMIN_REST_NAMES,
    ID_TAKING_METHODS,
    INFERENCE_METHODS,
    INFERENCE_REST,
    Grpc,
    Ids,
    Rest,
    TenantAccess,
    chat,
    create_key,
    create_provider,
    create_tenant,
    enable_model,
    error_code,
    grpc_chat_request,
    ok,
    read_only_store,
    running_gateway,
    store_path,
)
from tests.fakes.openai_upstream import FakeOpenAI
from tests.gateway_process import GatewayProcess

KEY_A = "sk-tenant-a-" + secrets.token_hex(8)
KEY_B = "sk-tenant-b-" + secrets.token_hex(8)
CONFIG = {
    "providers": [{"name": "config-demo", "type": "demo"}],
    "models": [{"provider": "config-demo", "id": "demo-chat", "alias": "config/chat"}],
}


@pytest.fixture(scope="module")
def fake_a() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=KEY_A) as fake:
        yield fake


@pytest.fixture(scope="module")
def fake_b() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=KEY_B) as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with running_gateway(Path(tmp_path_factory.mktemp("isolation")), config=CONFIG, workers=2) as process:
        yield process


@pytest.fixture(scope="module")
def rest(gateway: GatewayProcess) -> Iterator[Rest]:
    client = Rest(gateway)
    yield client
    client.close()


@pytest.fixture(scope="module")
def rpc(gateway: GatewayProcess) -> Iterator[Grpc]:
    client = Grpc(gateway)
    yield client
    client.close()


@dataclass(frozen=True)
class TenantWorld:
    access: TenantAccess
    provider_uuid: str
    provider_name: str
    alias: str
    model_id: str
    inference_key_id: str
    inference_key: str

    @property
    def ids(self) -> Ids:
        return Ids(self.provider_uuid, self.model_id, self.inference_key_id, self.alias)

    def markers(self) -> list[str]:
        """Strings that only this tenant's objects carry."""
        return [
            self.access.id,
            self.provider_uuid,
            self.provider_name,
            self.alias,
            self.inference_key_id,
            self.access.key_id,
        ]


def build_tenant(rest: Rest, operator: str, label: str, fake: FakeOpenAI, api_key: str) -> TenantWorld:
    access = create_tenant(rest, operator, f"tenant-{label}")
    name = f"provider-of-{label}"
    provider = create_provider(
        rest, access.key, "openai", name, {"apikey": api_key, "base_url": fake.base_url}
    )
    alias, model_id = f"{label}/chat", f"model-of-{label}"
    enable_model(rest, access.key, provider["uuid"], model_id, alias)
    enable_model(rest, access.key, provider["uuid"], "gpt-4o", "shared/chat")
    key_id, key = create_key(rest, access.key, f"{label}-inference", ["inference"])
    return TenantWorld(access, provider["uuid"], name, alias, model_id, key_id, key)


@pytest.fixture(scope="module")
def world(
    gateway: GatewayProcess, rest: Rest, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> tuple[TenantWorld, TenantWorld]:
    return (
        build_tenant(rest, gateway.admin_key, "a", fake_a, KEY_A),
        build_tenant(rest, gateway.admin_key, "b", fake_b, KEY_B),
    )


def upstream_chats(fake: FakeOpenAI) -> int:
    return sum(1 for r in fake.requests if r.path.endswith("/chat/completions"))


# --------------------------------------------------------------------------------------------------
# Isolation


@pytest.mark.parametrize("method", ID_TAKING_METHODS)
def test_foreign_ids_are_not_found_over_grpc(
    rpc: Grpc, world: tuple[TenantWorld, TenantWorld], method: str
) -> None:
    a, b = world
    spec = ADMIN_BY_NAME[method]
    with pytest.raises(grpc.RpcError) as error:
        rpc.call(spec.stub(rpc), spec.request(b.ids), a.access.key)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    for marker in (b.provider_name, b.alias, KEY_B, b.access.id):
        assert marker not in error.value.details()


@pytest.mark.parametrize("method", [m for m in ID_TAKING_METHODS if ADMIN_BY_NAME[m].rest is not None])
def test_foreign_ids_are_not_found_over_rest(
    rest: Rest, world: tuple[TenantWorld, TenantWorld], method: str
) -> None:
    a, b = world
    spec = ADMIN_BY_NAME[method]
    assert spec.rest is not None
    verb, path, body = spec.rest(b.ids)
    response = rest.call(verb, path, a.access.key, json_body=body)
    assert response.status_code == 404, response.text
    assert error_code(response) in ("provider_not_found", "key_not_found")
    for marker in (b.provider_name, b.alias, KEY_B, b.access.id):
        assert marker not in response.text


@pytest.mark.parametrize("method", [m.name for m in ADMIN_METHODS])
def test_naming_another_tenant_is_not_found_over_grpc(
    rpc: Grpc, world: tuple[TenantWorld, TenantWorld], method: str
) -> None:
    a, b = world
    spec = ADMIN_BY_NAME[method]
    with pytest.raises(grpc.RpcError) as error:
        rpc.call(spec.stub(rpc), spec.request(b.ids), a.access.key, tenant=b.access.id)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("method", ADMIN_REST_NAMES)
def test_naming_another_tenant_is_not_found_over_rest(
    rest: Rest, world: tuple[TenantWorld, TenantWorld], method: str
) -> None:
    a, b = world
    spec = ADMIN_BY_NAME[method]
    assert spec.rest is not None
    verb, path, body = spec.rest(b.ids)
    response = rest.call(verb, path, a.access.key, json_body=body, tenant=b.access.name)
    assert response.status_code == 404, response.text
    assert error_code(response) == "tenant_not_found"


def test_the_other_tenant_is_untouched(
    rest: Rest, rpc: Grpc, world: tuple[TenantWorld, TenantWorld], fake_b: FakeOpenAI
) -> None:
    """After every attempt above (updates, deletes, enables, revocations aimed at B)."""
    a, b = world
    provider = ok(rest.call("GET", f"/v1/providers/{b.provider_uuid}", b.access.key))
    assert provider["name"] == b.provider_name and provider["data"]["base_url"] == fake_b.base_url
    models = ok(rest.call("GET", f"/v1/providers/{b.provider_uuid}/models", b.access.key))
    assert sorted(m["alias"] for m in models) == sorted([b.alias, "shared/chat"])
    keys = ok(rest.call("GET", "/v1/keys", b.access.key))
    assert {k["id"] for k in keys} == {b.access.key_id, b.inference_key_id}
    tenant = ok(rest.call("GET", "/v1/tenant", b.access.key))
    assert (tenant["name"], tenant["secrets_manager"]) == (b.access.name, "")
    assert ok(chat(rest, b.inference_key, b.alias))["choices"][0]["message"]["content"] == "Echo: hello there"
    audit = ok(rest.call("GET", "/v1/audit", b.access.key, params={"limit": 1000}))
    assert {entry["key_id"] for entry in audit} <= {"operator", b.access.key_id}
    # A's tenant still exists too (DeleteTenant naming B was refused before it could act on A).
    assert ok(rest.call("GET", "/v1/tenant", a.access.key))["id"] == a.access.id


def test_lists_never_show_the_other_tenant(
    rest: Rest, rpc: Grpc, world: tuple[TenantWorld, TenantWorld]
) -> None:
    for me, other in (world, world[::-1]):
        key = me.access.key
        texts = [
            rest.call("GET", path, key).text
            for path in (
                "/v1/providers",
                "/v1/keys",
                "/v1/models",
                f"/v1/providers/{me.provider_uuid}/models",
            )
        ]
        texts += [
            str(rpc.call(rpc.admin.ListProviders, admin_pb2.ListProvidersRequest(), key)),
            str(rpc.call(rpc.admin.ListKeys, admin_pb2.ListKeysRequest(), key)),
            str(rpc.call(rpc.admin.GetTenant, admin_pb2.GetTenantRequest(), key)),
        ]
        # The audit trail holds this tenant's own actions only: refused attempts on the other
        # tenant's ids are recorded with the id the caller sent, never as a success.
        audit = ok(rest.call("GET", "/v1/audit", key, params={"limit": 1000}))
        assert audit and {e["key_id"] for e in audit} <= {"operator", me.access.key_id}
        assert not [
            e for e in audit if e["result"] == "ok" and any(m in e["target"] for m in other.markers())
        ]
        grpc_audit = rpc.call(rpc.admin.ListAudit, admin_pb2.ListAuditRequest(limit=1000), key)
        assert [e.sequence for e in grpc_audit.entries] == [e["sequence"] for e in audit]
        everything = "\n".join(texts)
        assert me.provider_uuid in everything and me.alias in everything and me.inference_key_id in everything
        for marker in [*other.markers(), "config-demo", "config/chat"]:
            assert marker not in everything, f"{me.access.name} sees {marker!r}"
        models = ok(rest.call("GET", "/v1/models", key))
        assert sorted(m["id"] for m in models["data"]) == sorted([me.alias, "shared/chat"])


def test_aliases_are_per_tenant(
    rest: Rest, rpc: Grpc, world: tuple[TenantWorld, TenantWorld], fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    a, b = world
    for key in (a.access.key, a.inference_key):
        refused = chat(rest, key, b.alias)
        assert refused.status_code == 404 and error_code(refused) == "model_not_found"
        streamed = rest.call(
            "POST",
            "/v1/chat/completions",
            key,
            json_body={"model": b.alias, "stream": True, "messages": [{"role": "user", "content": "x"}]},
        )
        assert streamed.status_code == 404 and error_code(streamed) == "model_not_found"
        card = rest.call("GET", f"/v1/models/{b.alias}", key)
        assert card.status_code == 404 and error_code(card) == "model_not_found"
        for method in (rpc.inference.CreateChatCompletion, rpc.inference.StreamChatCompletion):
            assert rpc.code(method, grpc_chat_request(b.alias), key) == grpc.StatusCode.NOT_FOUND
    # The same alias in both tenants: each tenant's calls reach only its own provider.
    for me, mine, theirs in ((a, fake_a, fake_b), (b, fake_b, fake_a)):
        before_mine, before_theirs = upstream_chats(mine), upstream_chats(theirs)
        for _ in range(4):
            ok(chat(rest, me.inference_key, "shared/chat"))
        assert (upstream_chats(mine) - before_mine, upstream_chats(theirs) - before_theirs) == (4, 0)


@pytest.mark.parametrize("by", ["id", "name"])
def test_operator_reaches_a_tenant_by_header(
    gateway: GatewayProcess,
    rest: Rest,
    rpc: Grpc,
    world: tuple[TenantWorld, TenantWorld],
    fake_b: FakeOpenAI,
    by: str,
) -> None:
    a, b = world
    op, tenant = gateway.admin_key, (b.access.id if by == "id" else b.access.name)
    assert ok(rest.call("GET", "/v1/tenant", op, tenant=tenant))["id"] == b.access.id
    providers = ok(rest.call("GET", "/v1/providers", op, tenant=tenant))
    assert [p["uuid"] for p in providers] == [b.provider_uuid]
    assert (
        ok(rest.call("GET", f"/v1/providers/{b.provider_uuid}", op, tenant=tenant))["name"] == b.provider_name
    )
    keys = ok(rest.call("GET", "/v1/keys", op, tenant=tenant))
    assert {k["id"] for k in keys} == {b.access.key_id, b.inference_key_id}
    models = ok(rest.call("GET", "/v1/models", op, tenant=tenant))
    assert sorted(m["id"] for m in models["data"]) == sorted([b.alias, "shared/chat"])
    before = upstream_chats(fake_b)
    ok(
        rest.call(
            "POST",
            "/v1/chat/completions",
            op,
            json_body={"model": b.alias, "messages": [{"role": "user", "content": "op"}]},
            tenant=tenant,
        )
    )
    assert upstream_chats(fake_b) == before + 1
    listed = rpc.call(
        rpc.admin.ListProviderModels,
        admin_pb2.ListProviderModelsRequest(provider_uuid=b.provider_uuid),
        op,
        tenant=tenant,
    )
    assert sorted(m.alias for m in listed.models) == sorted([b.alias, "shared/chat"])
    # Without the header the operator acts on `default`: B's objects are not there, the config's are.
    missing = rest.call("GET", f"/v1/providers/{b.provider_uuid}", op)
    assert missing.status_code == 404
    default = [p["name"] for p in ok(rest.call("GET", "/v1/providers", op))]
    assert default == ["config-demo"]
    assert (
        rpc.code(rpc.admin.GetProvider, admin_pb2.GetProviderRequest(uuid=a.provider_uuid), op, tenant=tenant)
        == grpc.StatusCode.NOT_FOUND
    )
    unknown = rest.call("GET", "/v1/providers", op, tenant="no-such-tenant")
    assert unknown.status_code == 404 and error_code(unknown) == "tenant_not_found"


# --------------------------------------------------------------------------------------------------
# Scopes


@dataclass(frozen=True)
class ScopedKeys:
    tenant: TenantAccess
    ids: Ids
    inference_only: str
    admin_only: str
    restricted: str
    """Inference on `scope/allowed` only."""


@pytest.fixture(scope="module")
def scoped(gateway: GatewayProcess, rest: Rest) -> ScopedKeys:
    tenant = create_tenant(rest, gateway.admin_key, "tenant-scopes")
    provider = create_provider(rest, tenant.key, "demo", "scope-demo", {})
    enable_model(rest, tenant.key, provider["uuid"], "demo-chat", "scope/allowed")
    enable_model(rest, tenant.key, provider["uuid"], "demo-chat", "scope/other")
    enable_model(rest, tenant.key, provider["uuid"], "demo-embed", "scope/embed")
    victim_id, _ = create_key(rest, tenant.key, "victim", ["inference"])
    _, inference_only = create_key(rest, tenant.key, "inference-only", ["inference"])
    _, admin_only = create_key(rest, tenant.key, "admin-only", ["admin"])
    _, restricted = create_key(rest, tenant.key, "restricted", ["inference"], models=["scope/allowed"])
    ids = Ids(provider["uuid"], "demo-chat", victim_id, "scope/allowed")
    return ScopedKeys(tenant, ids, inference_only, admin_only, restricted)


@pytest.mark.parametrize("method", [m.name for m in ADMIN_METHODS])
def test_inference_key_cannot_call_admin_over_grpc(rpc: Grpc, scoped: ScopedKeys, method: str) -> None:
    spec = ADMIN_BY_NAME[method]
    with pytest.raises(grpc.RpcError) as error:
        rpc.call(spec.stub(rpc), spec.request(scoped.ids), scoped.inference_only)
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize("method", ADMIN_REST_NAMES)
def test_inference_key_cannot_call_admin_over_rest(rest: Rest, scoped: ScopedKeys, method: str) -> None:
    spec = ADMIN_BY_NAME[method]
    assert spec.rest is not None
    verb, path, body = spec.rest(scoped.ids)
    response = rest.call(verb, path, scoped.inference_only, json_body=body)
    assert response.status_code == 403, response.text
    assert error_code(response) == "insufficient_scope"


def test_refused_admin_calls_changed_nothing(rest: Rest, scoped: ScopedKeys) -> None:
    key = scoped.tenant.key
    assert ok(rest.call("GET", "/v1/tenant", key))["secrets_manager"] == ""
    assert [p["name"] for p in ok(rest.call("GET", "/v1/providers", key))] == ["scope-demo"]
    assert len(ok(rest.call("GET", f"/v1/providers/{scoped.ids.provider_uuid}/models", key))) == 3
    assert scoped.ids.key_id in {k["id"] for k in ok(rest.call("GET", "/v1/keys", key))}


@pytest.mark.parametrize("method", [m.method for m in INFERENCE_METHODS])
def test_admin_key_cannot_call_inference_over_grpc(rpc: Grpc, scoped: ScopedKeys, method: str) -> None:
    spec = next(m for m in INFERENCE_METHODS if m.method == method)
    alias = "scope/embed" if "Embedding" in method else "scope/allowed"
    stub = getattr(rpc.inference, method)
    assert rpc.code(stub, spec.request(alias), scoped.admin_only) == grpc.StatusCode.PERMISSION_DENIED
    assert rpc.code(stub, spec.request(alias), scoped.inference_only) == grpc.StatusCode.OK


@pytest.mark.parametrize("call", list(INFERENCE_REST))
def test_admin_key_cannot_call_inference_over_rest(rest: Rest, scoped: ScopedKeys, call: str) -> None:
    alias = "scope/embed" if "embeddings" in call else "scope/allowed"
    verb, path, body = INFERENCE_REST[call](alias)
    refused = rest.call(verb, path, scoped.admin_only, json_body=body)
    assert refused.status_code == 403, refused.text
    assert error_code(refused) == "insufficient_scope"
    assert rest.call(verb, path, scoped.inference_only, json_body=body).status_code == 200


TENANT_MANAGEMENT = [
    (name, transport)
    for name in ("Admin.CreateTenant", "Admin.ListTenants", "AdminRest.ListTenants")
    for transport in ("grpc", "rest")
    if transport == "grpc" or ADMIN_BY_NAME[name].rest is not None
]


@pytest.mark.parametrize(("method", "transport"), TENANT_MANAGEMENT)
def test_only_the_operator_manages_tenants(
    gateway: GatewayProcess, rest: Rest, rpc: Grpc, scoped: ScopedKeys, method: str, transport: str
) -> None:
    spec = ADMIN_BY_NAME[method]
    if transport == "grpc":
        with pytest.raises(grpc.RpcError) as error:
            rpc.call(spec.stub(rpc), spec.request(scoped.ids), scoped.tenant.key)
        assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
        rpc.call(spec.stub(rpc), spec.request(scoped.ids), gateway.admin_key)
        return
    assert spec.rest is not None
    verb, path, body = spec.rest(scoped.ids)
    response = rest.call(verb, path, scoped.tenant.key, json_body=body)
    assert response.status_code == 403 and error_code(response) == "operator_only"
    assert rest.call(verb, path, gateway.admin_key, json_body=body).status_code == 200


def test_model_restricted_key_keeps_to_its_aliases(rest: Rest, rpc: Grpc, scoped: ScopedKeys) -> None:
    key = scoped.restricted
    assert (
        ok(chat(rest, key, "scope/allowed", "allowed"))["choices"][0]["message"]["content"]
        == "You said: allowed"
    )
    for alias in ("scope/other", "scope/embed", "tenant-a-only/never-enabled"):
        refused = chat(rest, key, alias)
        assert refused.status_code == 403 and error_code(refused) == "model_not_allowed", alias
        assert (
            rpc.code(rpc.inference.CreateChatCompletion, grpc_chat_request(alias), key)
            == grpc.StatusCode.PERMISSION_DENIED
        )
    embed = rest.call("POST", "/v1/embeddings", key, json_body={"model": "scope/embed", "input": "x"})
    assert embed.status_code == 403 and error_code(embed) == "model_not_allowed"
    assert [m["id"] for m in ok(rest.call("GET", "/v1/models", key))["data"]] == ["scope/allowed"]
    assert rest.call("GET", "/v1/models/scope/other", key).status_code == 404


@pytest.fixture(scope="module")
def single_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with running_gateway(Path(tmp_path_factory.mktemp("isolation-1w")), workers=1) as process:
        yield process


@pytest.mark.parametrize("workers", [1, 2])
def test_revoked_key_fails_on_the_very_next_request(
    request: pytest.FixtureRequest, gateway: GatewayProcess, workers: int
) -> None:
    process = gateway if workers == 2 else request.getfixturevalue("single_worker")
    assert process.workers == workers
    rest = Rest(process)
    try:
        tenant = create_tenant(rest, process.admin_key, f"revocation-{workers}")
        provider = create_provider(rest, tenant.key, "demo", "revoke-demo", {})
        enable_model(rest, tenant.key, provider["uuid"], "demo-chat", "revoke/chat")
        key_id, key = create_key(rest, tenant.key, "soon-revoked", ["inference"])
        admin_id, admin_key = create_key(rest, tenant.key, "soon-revoked-admin", ["admin"])
        # Warm every worker's key cache: Envoy spreads REST calls over the workers, gRPC channels too.
        channels = [Grpc(process) for _ in range(2 * workers)]
        for _ in range(3 * workers):
            ok(chat(rest, key, "revoke/chat"))
            ok(rest.call("GET", "/v1/keys", admin_key))
        for channel in channels:
            assert (
                channel.code(channel.inference.ListModels, INFERENCE_METHODS[-1].request(""), key)
                == grpc.StatusCode.OK
            )
        assert ok(rest.call("DELETE", f"/v1/keys/{key_id}", tenant.key)) == {"deleted": True}
        assert ok(rest.call("DELETE", f"/v1/keys/{admin_id}", tenant.key)) == {"deleted": True}
        for _ in range(3 * workers):
            refused = chat(rest, key, "revoke/chat")
            assert refused.status_code == 401, refused.text
            assert error_code(refused) == "invalid_api_key"
            assert rest.call("GET", "/v1/keys", admin_key).status_code == 401
        for channel in channels:
            assert (
                channel.code(channel.inference.CreateChatCompletion, grpc_chat_request("revoke/chat"), key)
                == grpc.StatusCode.UNAUTHENTICATED
            )
            assert (
                channel.code(channel.admin.ListKeys, admin_pb2.ListKeysRequest(), admin_key)
                == grpc.StatusCode.UNAUTHENTICATED
            )
            channel.close()
        # The tenant's other keys are unaffected; revoking again is idempotent and changes nothing.
        assert ok(chat(rest, tenant.key, "revoke/chat"))["object"] == "chat.completion"
        assert ok(rest.call("DELETE", f"/v1/keys/{key_id}", tenant.key)) == {"deleted": True}
        assert chat(rest, key, "revoke/chat").status_code == 401
    finally:
        rest.close()


def test_expired_key_is_refused(rest: Rest, rpc: Grpc, scoped: ScopedKeys) -> None:
    in_the_past = rest.call(
        "POST",
        "/v1/keys",
        scoped.tenant.key,
        json_body={"name": "stale", "scopes": ["inference"], "expires_at": int(time.time()) - 5},
    )
    assert in_the_past.status_code == 400 and in_the_past.json()["error"]["param"] == "expires_at"
    expires_at = int(time.time()) + 2
    _, key = create_key(rest, scoped.tenant.key, "short-lived", ["inference"], expires_at=expires_at)
    assert ok(chat(rest, key, "scope/allowed"))["object"] == "chat.completion"
    assert rpc.code(rpc.inference.ListModels, INFERENCE_METHODS[-1].request(""), key) == grpc.StatusCode.OK
    deadline = time.monotonic() + 10
    while time.time() < expires_at + 0.2 and time.monotonic() < deadline:
        time.sleep(0.1)
    for _ in range(4):
        refused = chat(rest, key, "scope/allowed")
        assert refused.status_code == 401, refused.text
    assert (
        rpc.code(rpc.inference.ListModels, INFERENCE_METHODS[-1].request(""), key)
        == grpc.StatusCode.UNAUTHENTICATED
    )
    listed = {k["name"]: k for k in ok(rest.call("GET", "/v1/keys", scoped.tenant.key))}
    assert listed["short-lived"]["expires_at"] == expires_at


def test_deleting_a_tenant_takes_its_keys_and_objects_along(gateway: GatewayProcess, rest: Rest) -> None:
    tenant = create_tenant(rest, gateway.admin_key, "tenant-doomed")
    provider = create_provider(rest, tenant.key, "openai", "doomed-openai", {"apikey": "sk-doomed-12345678"})
    enable_model(rest, tenant.key, provider["uuid"], "gpt-4o", "doomed/chat")
    _, inference = create_key(rest, tenant.key, "doomed-inference", ["inference"])
    clients = [Grpc(gateway) for _ in range(4)]
    try:
        for client in clients:  # every worker has the keys cached
            assert (
                client.code(client.inference.ListModels, INFERENCE_METHODS[-1].request(""), inference)
                == grpc.StatusCode.OK
            )
        assert ok(rest.call("DELETE", "/v1/tenant", tenant.key)) == {"deleted": True}
        for _ in range(4):
            assert rest.call("GET", "/v1/tenant", tenant.key).status_code == 401
            assert chat(rest, inference, "doomed/chat").status_code == 401
        for client in clients:
            assert (
                client.code(client.inference.ListModels, INFERENCE_METHODS[-1].request(""), inference)
                == grpc.StatusCode.UNAUTHENTICATED
            )
    finally:
        for client in clients:
            client.close()
    gone = rest.call("GET", "/v1/providers", gateway.admin_key, tenant=tenant.name)
    assert gone.status_code == 404 and error_code(gone) == "tenant_not_found"
    assert tenant.id not in {t["id"] for t in ok(rest.call("GET", "/v1/tenants", gateway.admin_key))}
    with read_only_store(store_path(gateway)) as conn:
        for table in ("providers", "secrets", "models", "api_keys"):
            count = conn.execute(
                f"SELECT count(*) FROM {table} WHERE tenant_id = ?", (tenant.id,)
            ).fetchone()[0]
            assert count == 0, f"{table} keeps rows of the deleted tenant"
    # The name is free again; the new tenant starts empty.
    again = create_tenant(rest, gateway.admin_key, "tenant-doomed")
    assert ok(rest.call("GET", "/v1/providers", again.key)) == []


def test_revoked_keys_are_not_listed_as_active(rest: Rest, scoped: ScopedKeys) -> None:
    key_id, _ = create_key(rest, scoped.tenant.key, "listed-then-revoked", ["inference"])
    assert ok(rest.call("DELETE", f"/v1/keys/{key_id}", scoped.tenant.key)) == {"deleted": True}
    listed = {k["id"]: k for k in ok(rest.call("GET", "/v1/keys", scoped.tenant.key))}
    assert key_id not in listed or listed[key_id].get("revoked_at"), listed.get(key_id)
