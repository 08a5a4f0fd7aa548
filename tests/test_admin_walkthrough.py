"""IBM's model-gateway walkthrough end to end against a real gateway (Envoy + worker): a tenant, every
provider type with its documented arguments (snake_case and IBM's camelCase spellings), models
enabled under IBM's example aliases, the listings, chat through an alias with the OpenAI SDK, one
alias spread over two providers; the key parts again over gRPC and with the `modelyard` CLI; and
hostile strings (SQL injection, 10 000 characters) in every string field.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import openai
import orjson
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from modelyard.v1 import admin_pb2, inference_pb2

from tests.admin_fixtures import (
    INJECTIONS,
    OVERSIZED,
    Grpc,
    Rest,
    TenantAccess,
    as_dict,
    chat,
    cli_json,
    create_provider,
    create_tenant,
    data_dir,
    enable_model,
    error_code,
    grpc_chat_request,
    masked,
    ok,
    read_only_store,
    run_cli,
    running_gateway,
    store_path,
    struct,
)
from tests.fakes.openai_upstream import FakeOpenAI
from tests.gateway_process import GatewayProcess

KEY_A = "sk-walkthrough-a-" + secrets.token_hex(8)
KEY_B = "sk-walkthrough-b-" + secrets.token_hex(8)
SECRETS_MANAGER = "https://0a1b2c3d.ca-tor.secrets-manager.appdomain.cloud"
NOWHERE = "http://127.0.0.1:9"
"""A loopback URL nothing listens on, for the types whose adapter is not there yet (never called)."""
CONFIG = {
    "providers": [{"name": "demo", "type": "demo"}],
    "models": [{"provider": "demo", "id": "demo-chat", "alias": "demo/chat"}],
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
    # MODELYARD_MASTER_KEY unset: the gateway generates DATA_DIR/master.key.
    with running_gateway(Path(tmp_path_factory.mktemp("walkthrough")), config=CONFIG) as process:
        assert (data_dir(process) / "master.key").is_file()
        yield process
    log = process.log_path.read_text(errors="replace")
    for secret in (KEY_A, KEY_B, process.admin_key):
        assert secret not in log


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


def upstream_chats(fake: FakeOpenAI) -> list[Any]:
    return [r for r in fake.requests if r.path.endswith("/chat/completions")]


def header(request: Any, name: str) -> str | None:
    return next((v for k, v in request.headers.items() if k.lower() == name), None)


# --------------------------------------------------------------------------------------------------
# The walkthrough over REST, as the README's curl does it


@dataclass(frozen=True)
class Registration:
    type: str
    name: str
    data: dict[str, Any]
    shown: dict[str, Any]
    """What reads show: canonical argument names, secrets masked."""


def registrations(fake_a: FakeOpenAI, fake_b: FakeOpenAI) -> list[Registration]:
    wx_key, az_key, ant_key = (
        "wx-" + secrets.token_hex(8),
        "az-" + secrets.token_hex(8),
        "ant-" + secrets.token_hex(8),
    )
    aws_secret, vertex_key = (
        "aws/" + secrets.token_hex(12),
        '{"type": "service_account", "k": "' + secrets.token_hex(8) + '"}',
    )
    other = "oth-" + secrets.token_hex(8)
    return [
        # IBM's body for OpenAI-compatible endpoints: {name, data: {apikey, base_url}}
        Registration(
            "openai",
            "my-openai-provider",
            {"apikey": KEY_A, "base_url": fake_a.base_url},
            {"apikey": masked(KEY_A), "base_url": fake_a.base_url},
        ),
        # the argument table's spellings: apiKey, baseURL
        Registration(
            "openai",
            "my-gemini-provider",
            {"apiKey": KEY_B, "baseURL": fake_b.base_url},
            {"apikey": masked(KEY_B), "base_url": fake_b.base_url},
        ),
        Registration(
            "watsonxai",
            "my-watsonxai-provider",
            {"apikey": wx_key, "project_id": "0f8e2d3c-project"},
            {"apikey": masked(wx_key), "project_id": "0f8e2d3c-project"},
        ),
        Registration(
            "watsonxai",
            "my-watsonxai-space-provider",
            {
                "apiKey": wx_key,
                "spaceID": "space-42",
                "baseURL": NOWHERE,
                "authURL": NOWHERE + "/token",
                "apiVersion": "2024-05-01",
            },
            {
                "apikey": masked(wx_key),
                "space_id": "space-42",
                "base_url": NOWHERE,
                "auth_url": NOWHERE + "/token",
                "api_version": "2024-05-01",
            },
        ),
        Registration(
            "azure-openai",
            "my-azure-openai-provider",
            {"apikey": az_key, "resource_name": "scribeflow"},
            {"apikey": masked(az_key), "resource_name": "scribeflow"},
        ),
        Registration(
            "azure-openai",
            "my-azure-camel-provider",
            {
                "apiKey": az_key,
                "resourceName": "scribeflow-eu",
                "subscriptionID": "sub-1",
                "resourceGroupName": "rg-1",
                "accountName": "acct-1",
                "apiVersion": "2024-10-21",
            },
            {
                "apikey": masked(az_key),
                "resource_name": "scribeflow-eu",
                "subscription_id": "sub-1",
                "resource_group_name": "rg-1",
                "account_name": "acct-1",
                "api_version": "2024-10-21",
            },
        ),
        Registration("anthropic", "my-anthropic-provider", {"apikey": ant_key}, {"apikey": masked(ant_key)}),
        Registration(
            "bedrock",
            "my-bedrock-provider",
            {"access_key_id": "AKIAIOSFODNN7EXAMPLE", "secret_access_key": aws_secret, "region": "us-east-1"},
            {
                "access_key_id": "AKIAIOSFODNN7EXAMPLE",
                "secret_access_key": masked(aws_secret),
                "region": "us-east-1",
            },
        ),
        Registration(
            "bedrock",
            "my-bedrock-camel-provider",
            {"accessKeyId": "AKIAI44QH8DHBEXAMPLE", "secretAccessKey": aws_secret, "region": "eu-west-1"},
            {
                "access_key_id": "AKIAI44QH8DHBEXAMPLE",
                "secret_access_key": masked(aws_secret),
                "region": "eu-west-1",
            },
        ),
        Registration(
            "cerebras",
            "my-cerebras-provider",
            {"apikey": KEY_A, "base_url": fake_a.base_url},
            {"apikey": masked(KEY_A), "base_url": fake_a.base_url},
        ),
        Registration(
            "nim",
            "my-nim-provider",
            {"apiKey": KEY_B, "baseURL": fake_b.base_url},
            {"apikey": masked(KEY_B), "base_url": fake_b.base_url},
        ),
        Registration(
            "cohere",
            "my-cohere-provider",
            {"apiKey": other, "baseURL": NOWHERE},
            {"apikey": masked(other), "base_url": NOWHERE},
        ),
        Registration(
            "google-cloud-vertex-ai",
            "my-vertex-provider",
            {"privateKey": vertex_key, "region": "us-central1", "projectID": "my-project-42"},
            {"private_key": masked(vertex_key), "region": "us-central1", "project_id": "my-project-42"},
        ),
        Registration(
            "databricks-model-serving",
            "my-databricks-provider",
            {"host": NOWHERE, "token": other},
            {"host": NOWHERE, "token": masked(other)},
        ),
        Registration("ai21labs", "my-ai21-provider", {"apikey": other}, {"apikey": masked(other)}),
        Registration("demo", "my-demo-provider", {}, {}),
    ]


# (provider name, model id, alias): IBM's examples first.
ENABLED = [
    ("my-azure-openai-provider", "scribeflowgpt4o", "azure/gpt-4o"),
    ("my-bedrock-provider", "anthropic.claude-3-7-sonnet-20250219-v1:0", "aws/claude-3-sonnet"),
    ("my-openai-provider", "gpt-4o", "openai/gpt-4o"),
    ("my-gemini-provider", "gpt-4o", "openai/gpt-4o"),
    ("my-openai-provider", "text-embedding-3-large", "text-embedding-3-large"),
    ("my-watsonxai-provider", "meta-llama/llama-3-3-70b-instruct", "ibm/llama-3-3-70b-instruct"),
    ("my-cerebras-provider", "llama-3.3-70b", "cerebras/llama-3.3-70b"),
    ("my-nim-provider", "meta/llama-3.1-8b-instruct", "nim/llama-3.1-8b"),
    ("my-demo-provider", "demo-chat", "demo/assistant"),
]


def test_ibm_walkthrough_over_rest(
    gateway: GatewayProcess, rest: Rest, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    # 1. The tenant, with the operator key; its first admin key comes back once.
    tenant = create_tenant(rest, gateway.admin_key, "test", SECRETS_MANAGER)
    key = tenant.key
    shown = ok(rest.call("GET", "/v1/tenant", key))
    assert shown == {
        "id": tenant.id,
        "name": "test",
        "secrets_manager": SECRETS_MANAGER,
        "created_at": shown["created_at"],
    }

    # 2. Every provider type with its documented arguments; reads show canonical names, secrets masked.
    regs = registrations(fake_a, fake_b)
    created: dict[str, dict[str, Any]] = {}
    for reg in regs:
        body = create_provider(rest, key, reg.type, reg.name, reg.data)
        uuid.UUID(body["uuid"])
        assert body["data"] == reg.shown, reg.name
        created[reg.name] = body

    # 3. GET /v1/providers: a bare array; IBM's `jq '.[] | select(.name == $name) | .uuid'` works.
    listed = ok(rest.call("GET", "/v1/providers", key))
    assert isinstance(listed, list)
    assert [p["name"] for p in listed] == [r.name for r in regs]
    uuids = {p["name"]: p["uuid"] for p in listed}
    for p in listed:
        assert p == created[p["name"]]
    assert "demo" not in uuids, "the default tenant's config provider is not the tenant's"
    for reg in regs:
        assert ok(rest.call("GET", f"/v1/providers/{uuids[reg.name]}", key))["data"] == reg.shown

    # 4. Models enabled under aliases (IBM's examples: azure/gpt-4o, aws/claude-3-sonnet).
    for provider, model_id, alias in ENABLED:
        enable_model(rest, key, uuids[provider], model_id, alias)

    # 5. Models per provider.
    azure_models = ok(rest.call("GET", f"/v1/providers/{uuids['my-azure-openai-provider']}/models", key))
    assert [(m["id"], m["alias"], m["provider_uuid"]) for m in azure_models] == [
        ("scribeflowgpt4o", "azure/gpt-4o", uuids["my-azure-openai-provider"])
    ]
    bedrock_models = ok(rest.call("GET", f"/v1/providers/{uuids['my-bedrock-provider']}/models", key))
    assert [(m["id"], m["alias"]) for m in bedrock_models] == [
        ("anthropic.claude-3-7-sonnet-20250219-v1:0", "aws/claude-3-sonnet")
    ]
    openai_models = ok(rest.call("GET", f"/v1/providers/{uuids['my-openai-provider']}/models", key))
    assert sorted(m["alias"] for m in openai_models) == ["openai/gpt-4o", "text-embedding-3-large"]
    assert ok(rest.call("GET", f"/v1/providers/{uuids['my-anthropic-provider']}/models", key)) == []

    # 6. All models of all providers (OpenAI's list shape).
    models = ok(rest.call("GET", "/v1/models", key))
    assert models["object"] == "list"
    by_id = {m["id"]: m for m in models["data"]}
    assert set(by_id) == {alias for _, _, alias in ENABLED}
    assert by_id["openai/gpt-4o"]["providers"] == ["my-gemini-provider", "my-openai-provider"]
    assert by_id["azure/gpt-4o"]["providers"] == ["my-azure-openai-provider"]
    assert "demo/chat" not in by_id

    with openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0, timeout=30) as sdk:
        assert {m.id for m in sdk.models.list()} == set(by_id)

        # 7. Chat through an alias with the OpenAI SDK (IBM's Python example).
        completion = sdk.chat.completions.create(
            model="openai/gpt-4o",
            messages=[
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "Hello!"},
            ],
        )
        assert completion.choices[0].message.content == "Echo: Hello!"
        assert completion.model == "gpt-4o"
        for alias, fake, model_id, api_key in (
            ("cerebras/llama-3.3-70b", fake_a, "llama-3.3-70b", KEY_A),
            ("nim/llama-3.1-8b", fake_b, "meta/llama-3.1-8b-instruct", KEY_B),
        ):
            reply = sdk.chat.completions.create(model=alias, messages=[{"role": "user", "content": alias}])
            assert reply.choices[0].message.content == f"Echo: {alias}"
            last = upstream_chats(fake)[-1]
            assert last.json["model"] == model_id
            assert header(last, "authorization") == f"Bearer {api_key}"
        embedding = sdk.embeddings.create(
            model="text-embedding-3-large",
            input="The food was delicious and the waiter...",
            encoding_format="float",
        )
        assert len(embedding.data[0].embedding) > 0
        demo = sdk.chat.completions.create(
            model="demo/assistant", messages=[{"role": "user", "content": "Hi"}]
        )
        assert demo.choices[0].message.content == "You said: Hi"

        # IBM's chat example on azure/gpt-4o: registered and routed to Azure, which this sandbox
        # cannot reach (no network): a gateway error, never a client one.
        with pytest.raises(openai.APIStatusError) as unavailable:
            sdk.chat.completions.create(
                model="azure/gpt-4o",
                messages=[
                    {
                        "role": "system",
                        "content": "Please explain everything in a way a 5th grader could understand.",
                    },
                    {"role": "user", "content": "Can you explain what TLS is and how I can use it?"},
                ],
            )
        assert unavailable.value.status_code in (502, 503, 504)
        with pytest.raises(openai.APIStatusError) as legacy:
            sdk.completions.create(
                model="ibm/llama-3-3-70b-instruct", prompt="Say this is a test", max_tokens=7
            )
        assert legacy.value.status_code in (502, 503, 504)
        with pytest.raises(openai.NotFoundError):
            sdk.chat.completions.create(model="demo/chat", messages=[{"role": "user", "content": "x"}])

        # 8. One alias on two providers: calls are spread round-robin over both.
        before_a, before_b = len(upstream_chats(fake_a)), len(upstream_chats(fake_b))
        for i in range(20):
            reply = sdk.chat.completions.create(
                model="openai/gpt-4o", messages=[{"role": "user", "content": f"call {i}"}]
            )
            assert reply.choices[0].message.content == f"Echo: call {i}"
    new_a, new_b = upstream_chats(fake_a)[before_a:], upstream_chats(fake_b)[before_b:]
    assert (len(new_a), len(new_b)) == (10, 10)
    assert all(r.json["model"] == "gpt-4o" for r in new_a + new_b)
    assert {header(r, "authorization") for r in new_a} == {f"Bearer {KEY_A}"}
    assert {header(r, "authorization") for r in new_b} == {f"Bearer {KEY_B}"}

    # Disabling a model by its alias (a path with slashes) takes it out of routing.
    nim = uuids["my-nim-provider"]
    assert ok(rest.call("DELETE", f"/v1/providers/{nim}/models/nim/llama-3.1-8b", key)) == {"deleted": True}
    assert ok(rest.call("GET", f"/v1/providers/{nim}/models", key)) == []
    missing = chat(rest, key, "nim/llama-3.1-8b")
    assert missing.status_code == 404 and error_code(missing) == "model_not_found"


# --------------------------------------------------------------------------------------------------
# The same over gRPC with the generated stubs


def test_key_steps_over_grpc(gateway: GatewayProcess, rpc: Grpc, rest: Rest, fake_a: FakeOpenAI) -> None:
    op = gateway.admin_key
    created = rpc.call(
        rpc.admin.CreateTenant,
        admin_pb2.CreateTenantRequest(name="test-grpc", secrets_manager=SECRETS_MANAGER),
        op,
    )
    assert created.tenant.name == "test-grpc" and created.admin_key.scopes == ["admin", "inference"]
    key = created.secret
    assert rpc.call(rpc.admin.GetTenant, admin_pb2.GetTenantRequest(), key).id == created.tenant.id
    tenants = rpc.call(rpc.admin.ListTenants, admin_pb2.ListTenantsRequest(), op)
    assert {"default", created.tenant.id} <= {t.id for t in tenants.tenants}

    bodies = {
        "openai": ("grpc-openai", {"apiKey": KEY_A, "baseURL": fake_a.base_url}),
        "azure-openai": ("grpc-azure", {"apiKey": "az-" + "1" * 12, "resourceName": "scribeflow"}),
        "bedrock": (
            "grpc-bedrock",
            {
                "accessKeyId": "AKIAIOSFODNN7EXAMPLE",
                "secretAccessKey": "s" * 16 + "wxyz",
                "region": "us-east-1",
            },
        ),
        "watsonxai": ("grpc-watsonx", {"apikey": "w" * 12, "projectID": "p-1"}),
    }
    uuids: dict[str, str] = {}
    for type_, (name, data) in bodies.items():
        provider = rpc.call(
            rpc.admin.CreateProvider,
            admin_pb2.CreateProviderRequest(type=type_, name=name, data=struct(data)),
            key,
        )
        assert (provider.name, provider.type, provider.source) == (name, type_, "api")
        uuids[type_] = provider.uuid
    openai_data = as_dict(
        rpc.call(rpc.admin.GetProvider, admin_pb2.GetProviderRequest(uuid=uuids["openai"]), key)
    )["data"]
    assert openai_data == {"apikey": masked(KEY_A), "base_url": fake_a.base_url}
    bedrock_data = as_dict(
        rpc.call(rpc.admin.GetProvider, admin_pb2.GetProviderRequest(uuid=uuids["bedrock"]), key)
    )["data"]
    assert bedrock_data == {
        "access_key_id": "AKIAIOSFODNN7EXAMPLE",
        "secret_access_key": "****wxyz",
        "region": "us-east-1",
    }

    for type_, model_id, alias in (
        ("azure-openai", "scribeflowgpt4o", "azure/gpt-4o"),
        ("bedrock", "anthropic.claude-3-7-sonnet-20250219-v1:0", "aws/claude-3-sonnet"),
        ("openai", "gpt-4o", "openai/gpt-4o"),
    ):
        model = rpc.call(
            rpc.admin.EnableModel,
            admin_pb2.EnableModelRequest(provider_uuid=uuids[type_], id=model_id, alias=alias),
            key,
        )
        assert (model.id, model.alias, model.provider_uuid) == (model_id, alias, uuids[type_])

    providers = rpc.call(rpc.admin.ListProviders, admin_pb2.ListProvidersRequest(), key)
    assert [p.name for p in providers.providers] == [name for name, _ in bodies.values()]
    # AdminRest answers the same list as REST's bare array.
    body = rpc.call(rpc.admin_rest.ListProviders, admin_pb2.ListProvidersRequest(), key)
    assert body.content_type == "application/json"
    assert orjson.loads(body.data) == ok(rest.call("GET", "/v1/providers", key))
    azure_models = rpc.call(
        rpc.admin.ListProviderModels,
        admin_pb2.ListProviderModelsRequest(provider_uuid=uuids["azure-openai"]),
        key,
    )
    assert [(m.id, m.alias) for m in azure_models.models] == [("scribeflowgpt4o", "azure/gpt-4o")]
    listed = rpc.call(rpc.inference.ListModels, inference_pb2.ListModelsRequest(), key)
    assert {m.id for m in listed.data} == {"azure/gpt-4o", "aws/claude-3-sonnet", "openai/gpt-4o"}

    reply = rpc.call(
        rpc.inference.CreateChatCompletion, grpc_chat_request("openai/gpt-4o", "typed hello"), key
    )
    assert reply.choices[0].message.content == "Echo: typed hello"
    chunks = rpc.stream(
        rpc.inference.StreamChatCompletion, grpc_chat_request("openai/gpt-4o", "streamed hello"), key
    )
    assert "".join(c.choices[0].delta.content for c in chunks if c.choices) == "Echo: streamed hello"
    with pytest.raises(grpc.RpcError) as unavailable:
        rpc.call(rpc.inference.CreateChatCompletion, grpc_chat_request("aws/claude-3-sonnet"), key)
    # Bedrock is served now, but unreachable from this sandbox (no network).
    assert unavailable.value.code() == grpc.StatusCode.UNAVAILABLE
    status = rpc_status.from_call(unavailable.value)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert info.reason == "UPSTREAM_UNREACHABLE"

    deleted = rpc.call(
        rpc.admin.DisableModel,
        admin_pb2.DisableModelRequest(provider_uuid=uuids["azure-openai"], id="azure/gpt-4o"),
        key,
    )
    assert deleted.deleted
    assert rpc.call(
        rpc.admin.DeleteProvider, admin_pb2.DeleteProviderRequest(uuid=uuids["watsonxai"]), key
    ).deleted
    with pytest.raises(grpc.RpcError) as gone:
        rpc.call(rpc.admin.GetProvider, admin_pb2.GetProviderRequest(uuid=uuids["watsonxai"]), key)
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND


# --------------------------------------------------------------------------------------------------
# The CLI against the real gateway


def test_cli_against_the_gateway(gateway: GatewayProcess, rest: Rest, fake_a: FakeOpenAI) -> None:
    target = gateway.grpc_target
    outputs: list[str] = []

    def cli(args: list[str], key: str) -> Any:
        result = run_cli(args, key, target)
        outputs.append(result.stdout + result.stderr)
        for secret in (key, KEY_A):
            assert secret not in result.stdout + result.stderr, f"{args[:2]} printed a secret"
        return result

    created = cli_json(
        cli(
            ["tenant", "create", "cli-tenant", "--secrets-manager", SECRETS_MANAGER, "--json"],
            gateway.admin_key,
        )
    )
    assert created["tenant"]["name"] == "cli-tenant"
    assert created["tenant"]["secrets_manager"] == SECRETS_MANAGER
    tenant_key = created["secret"]
    assert tenant_key.startswith(created["admin_key"]["prefix"])

    provider = cli_json(
        cli(
            [
                "providers",
                "add",
                "openai",
                "--name",
                "cli-openai",
                "--data",
                f"apikey={KEY_A}",
                "--data",
                f"base_url={fake_a.base_url}",
                "--json",
            ],
            tenant_key,
        )
    )
    assert provider["name"] == "cli-openai" and provider["type"] == "openai"
    assert provider["data"] == {"apikey": masked(KEY_A), "base_url": fake_a.base_url}
    model = cli_json(
        cli(["models", "add", provider["uuid"], "gpt-4o", "--alias", "cli/gpt-4o", "--json"], tenant_key)
    )
    assert (model["id"], model["alias"], model["provider_uuid"]) == ("gpt-4o", "cli/gpt-4o", provider["uuid"])
    new_key = cli_json(
        cli(
            ["keys", "create", "cli-chat", "--scope", "inference", "--model", "cli/gpt-4o", "--json"],
            tenant_key,
        )
    )
    assert new_key["key"]["scopes"] == ["inference"] and new_key["key"]["models"] == ["cli/gpt-4o"]

    providers = cli_json(cli(["providers", "list", "--json"], tenant_key))
    assert [(p["uuid"], p["name"]) for p in providers] == [(provider["uuid"], "cli-openai")]
    assert providers[0]["data"]["apikey"] == masked(KEY_A)
    models = cli_json(cli(["models", "list", "--json"], tenant_key))
    assert [(m["alias"], m["id"]) for m in models] == [("cli/gpt-4o", "gpt-4o")]
    keys = cli_json(cli(["keys", "list", "--json"], tenant_key))
    assert {k["name"] for k in keys} == {"cli-tenant-admin", "cli-chat"}
    assert new_key["secret"] not in orjson.dumps(keys).decode()
    table = cli(["providers", "list"], tenant_key)
    assert table.returncode == 0
    header_line, row = table.stdout.splitlines()
    assert header_line.split() == ["UUID", "NAME", "TYPE", "SOURCE", "CREATED"]
    assert row.split()[:4] == [provider["uuid"], "cli-openai", "openai", "api"]

    # What the CLI set up serves requests, and the tenant's operator view agrees with it.
    reply = chat(rest, new_key["secret"], "cli/gpt-4o", "from the cli")
    assert ok(reply)["choices"][0]["message"]["content"] == "Echo: from the cli"
    assert ok(rest.call("GET", "/v1/providers", gateway.admin_key, tenant="cli-tenant")) == providers

    # A refused command: exit 1, the gateway's message, still no key.
    refused = cli(
        ["providers", "add", "openai", "--name", "cli-bad", "--data", f"apikey={KEY_A}", "--data", "bogus=1"],
        tenant_key,
    )
    assert refused.returncode == 1 and "INVALID_ARGUMENT" in refused.stderr and "bogus" in refused.stderr
    # Only `tenant create` shows the new tenant's key (once, by design); nothing prints the caller's.
    assert tenant_key in outputs[0]
    assert all(gateway.admin_key not in out for out in outputs)
    assert all(tenant_key not in out for out in outputs[1:])


# --------------------------------------------------------------------------------------------------
# Hostile strings in every string field

LONG_ID = "x" * 2_100
"""Over the store's 2 048-character text limit, under gRPC's 8 KiB metadata limit (paths travel in
the transcoded call's metadata: see test_oversized_url_path_is_a_clean_4xx)."""
VALUES = {"inj1": INJECTIONS[0], "inj2": INJECTIONS[1], "big": OVERSIZED, "long": LONG_ID}


@dataclass
class Target:
    operator: str
    tenant: TenantAccess
    provider_uuid: str
    """An openai provider of the tenant, with a model enabled."""
    empty_provider_uuid: str
    """A demo provider without models."""


@pytest.fixture(scope="module")
def target(gateway: GatewayProcess, rest: Rest, fake_a: FakeOpenAI) -> Target:
    tenant = create_tenant(rest, gateway.admin_key, "hostile")
    provider = create_provider(
        rest, tenant.key, "openai", "target", {"apikey": KEY_A, "base_url": fake_a.base_url}
    )
    enable_model(rest, tenant.key, provider["uuid"], "gpt-4o", "hostile/chat")
    empty = create_provider(rest, tenant.key, "demo", "empty", {})
    return Target(gateway.admin_key, tenant, provider["uuid"], empty["uuid"])


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def send(rest: Rest, t: Target, probe: str, value: str) -> httpx.Response:
    key = t.tenant.key
    p = t.provider_uuid
    requests: dict[str, tuple[str, str, Any, str, str | None]] = {
        # probe: (method, path, body, key, x-modelyard-tenant)
        "tenant.name": ("POST", "/v1/tenant", {"name": value}, t.operator, None),
        "tenant.secrets_manager": (
            "POST",
            "/v1/tenant",
            {"name": unique("sm"), "secrets_manager": value},
            t.operator,
            None,
        ),
        "tenant.update.name": ("PATCH", "/v1/tenant", {"name": value}, key, None),
        "tenant.update.secrets_manager": ("PATCH", "/v1/tenant", {"secrets_manager": value}, key, None),
        "header.x-modelyard-tenant": ("GET", "/v1/tenant", None, t.operator, value),
        "provider.type": ("POST", f"/v1/providers/{value}", {"name": unique("p"), "data": {}}, key, None),
        "provider.name": ("POST", "/v1/providers/demo", {"name": value, "data": {}}, key, None),
        "provider.data.argument_name": (
            "POST",
            "/v1/providers/demo",
            {"name": unique("p"), "data": {value: "1"}},
            key,
            None,
        ),
        "provider.data.value": (
            "POST",
            "/v1/providers/openai",
            {"name": unique("p"), "data": {"apikey": "sk-" + "k" * 12, "organization": value}},
            key,
            None,
        ),
        "provider.data.secret": (
            "POST",
            "/v1/providers/openai",
            {"name": unique("p"), "data": {"apikey": value}},
            key,
            None,
        ),
        "provider.update.name": ("PATCH", f"/v1/providers/{p}", {"name": value}, key, None),
        "provider.update.value": (
            "PATCH",
            f"/v1/providers/{p}",
            {"data": {"organization": value}},
            key,
            None,
        ),
        "GetProvider.uuid": ("GET", f"/v1/providers/{value}", None, key, None),
        "UpdateProvider.uuid": ("PATCH", f"/v1/providers/{value}", {"name": "renamed"}, key, None),
        "DeleteProvider.uuid": ("DELETE", f"/v1/providers/{value}", None, key, None),
        "EnableModel.provider_uuid": (
            "POST",
            f"/v1/providers/{value}/models",
            {"id": "m", "alias": "a"},
            key,
            None,
        ),
        "EnableModel.id": (
            "POST",
            f"/v1/providers/{p}/models",
            {"id": value, "alias": unique("alias")},
            key,
            None,
        ),
        "EnableModel.alias": (
            "POST",
            f"/v1/providers/{p}/models",
            {"id": "gpt-4o", "alias": value},
            key,
            None,
        ),
        "ListProviderModels.provider_uuid": ("GET", f"/v1/providers/{value}/models", None, key, None),
        "DisableModel.id": (
            "DELETE",
            f"/v1/providers/{t.empty_provider_uuid}/models/{value}",
            None,
            key,
            None,
        ),
        "CreateKey.name": ("POST", "/v1/keys", {"name": value, "scopes": ["inference"]}, key, None),
        "CreateKey.scopes": ("POST", "/v1/keys", {"name": unique("k"), "scopes": [value]}, key, None),
        "CreateKey.models": (
            "POST",
            "/v1/keys",
            {"name": unique("k"), "scopes": ["inference"], "models": [value]},
            key,
            None,
        ),
        "DeleteKey.id": ("DELETE", f"/v1/keys/{value}", None, key, None),
        "ListAudit.limit": ("GET", f"/v1/audit?limit={value}", None, key, None),
        "chat.model": (
            "POST",
            "/v1/chat/completions",
            {"model": value, "messages": [{"role": "user", "content": "x"}]},
            key,
            None,
        ),
        "RetrieveModel.model": ("GET", f"/v1/models/{value}", None, key, None),
    }
    method, path, body, caller, tenant = requests[probe]
    return rest.call(method, path, caller, json_body=body, tenant=tenant)


def read_back(rest: Rest, t: Target, probe: str, value: str, response: httpx.Response) -> None:
    """The value was legal: it was stored verbatim and reads give it back identically."""
    key = t.tenant.key
    if probe == "tenant.secrets_manager":
        tenant_key = response.json()["secret"]
        assert ok(rest.call("GET", "/v1/tenant", tenant_key))["secrets_manager"] == value
    elif probe == "tenant.update.secrets_manager":
        assert ok(rest.call("GET", "/v1/tenant", key))["secrets_manager"] == value
    elif probe in ("provider.data.value", "provider.update.value"):
        uuid_ = response.json()["uuid"]
        assert ok(rest.call("GET", f"/v1/providers/{uuid_}", key))["data"]["organization"] == value
        listed = {p["uuid"]: p for p in ok(rest.call("GET", "/v1/providers", key))}
        assert listed[uuid_]["data"]["organization"] == value
    elif probe == "provider.data.secret":
        uuid_ = response.json()["uuid"]
        assert ok(rest.call("GET", f"/v1/providers/{uuid_}", key))["data"] == {"apikey": masked(value)}
    elif probe == "EnableModel.id":
        models = ok(rest.call("GET", f"/v1/providers/{t.provider_uuid}/models", key))
        assert [m["id"] for m in models if m["alias"] == response.json()["alias"]] == [value]
    else:
        raise AssertionError(f"no read-back for {probe}")


# (probe, value, expected status: an int, or "stored" = 200 and read back identically)
CASES: list[Any] = [
    *[("tenant.name", v, 400) for v in ("inj1", "inj2", "big")],
    ("tenant.secrets_manager", "inj1", "stored"),
    ("tenant.secrets_manager", "inj2", "stored"),
    ("tenant.secrets_manager", "big", 400),
    *[("tenant.update.name", v, 400) for v in ("inj1", "inj2", "big")],
    ("tenant.update.secrets_manager", "inj1", "stored"),
    ("tenant.update.secrets_manager", "big", 400),
    *[("header.x-modelyard-tenant", v, 404) for v in ("inj1", "inj2", "long")],
    *[("provider.type", v, 400) for v in ("inj1", "inj2", "long")],
    *[("provider.name", v, 400) for v in ("inj1", "inj2", "big")],
    *[("provider.data.argument_name", v, 400) for v in ("inj1", "inj2", "big")],
    *[("provider.data.value", v, "stored") for v in ("inj1", "inj2", "big")],
    *[("provider.data.secret", v, "stored") for v in ("inj1", "inj2", "big")],
    *[("provider.update.name", v, 400) for v in ("inj1", "inj2", "big")],
    ("provider.update.value", "inj2", "stored"),
    *[("GetProvider.uuid", v, 404) for v in ("inj1", "inj2", "long")],
    *[(probe, v, 404) for probe in ("UpdateProvider.uuid", "DeleteProvider.uuid") for v in ("inj1", "inj2")],
    *[("EnableModel.provider_uuid", v, 404) for v in ("inj1", "inj2")],
    ("EnableModel.id", "inj1", "stored"),
    ("EnableModel.id", "inj2", "stored"),
    *[("EnableModel.alias", v, 400) for v in ("inj1", "inj2", "big")],
    *[("ListProviderModels.provider_uuid", v, 404) for v in ("inj1", "inj2", "long")],
    *[("DisableModel.id", v, 404) for v in ("inj1", "inj2")],
    *[("CreateKey.name", v, 400) for v in ("inj1", "inj2")],
    *[("CreateKey.scopes", v, 400) for v in ("inj1", "big")],
    *[("CreateKey.models", v, 400) for v in ("inj1", "big")],
    *[("DeleteKey.id", v, 404) for v in ("inj1", "inj2")],
    ("ListAudit.limit", "inj1", 400),
    *[("chat.model", v, 404) for v in ("inj1", "inj2", "big")],
    *[("RetrieveModel.model", v, 404) for v in ("inj1", "inj2")],
    # Over-long ids of refused writes: bounded in errors and audit entries, never a 500.
    *[
        pytest.param(probe, value, status)
        for probe, value, status in (
            ("EnableModel.id", "big", 400),
            ("CreateKey.name", "big", 400),
            ("UpdateProvider.uuid", "long", 404),
            ("DeleteProvider.uuid", "long", 404),
            ("EnableModel.provider_uuid", "long", 404),
            ("DisableModel.id", "long", 404),
            ("DeleteKey.id", "long", 404),
        )
    ],
]


@pytest.mark.parametrize(("probe", "value_name", "expected"), CASES)
def test_hostile_strings_are_refused_or_stored_verbatim(
    rest: Rest, target: Target, probe: str, value_name: str, expected: int | str
) -> None:
    value = VALUES[value_name]
    response = send(rest, target, probe, value)
    if expected == "stored":
        assert response.status_code == 200, response.text[:300]
        read_back(rest, target, probe, value, response)
    else:
        assert response.status_code == expected, response.text[:300]
        error_code(response)


def test_the_store_keeps_working_after_hostile_input(
    gateway: GatewayProcess, rest: Rest, target: Target
) -> None:
    key = target.tenant.key
    provider = create_provider(rest, key, "demo", "after-hostile", {})
    enable_model(rest, key, provider["uuid"], "demo-chat", "after/hostile")
    assert (
        ok(chat(rest, key, "after/hostile", "still here"))["choices"][0]["message"]["content"]
        == "You said: still here"
    )
    names = [p["name"] for p in ok(rest.call("GET", "/v1/providers", key))]
    assert {"target", "empty", "after-hostile"} <= set(names)
    assert (
        ok(chat(rest, key, "hostile/chat", "and here"))["choices"][0]["message"]["content"]
        == "Echo: and here"
    )
    tenants = {t["name"] for t in ok(rest.call("GET", "/v1/tenants", gateway.admin_key))}
    assert {"default", "hostile"} <= tenants
    with read_only_store(store_path(gateway)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"tenants", "providers", "secrets", "models", "api_keys", "audit"} <= tables
        assert conn.execute("SELECT count(*) FROM providers").fetchone()[0] >= len(names)


@pytest.mark.parametrize("path", ["/v1/providers/{id}", "/v1/keys/{id}"])
def test_oversized_url_path_is_a_clean_4xx(rest: Rest, target: Target, path: str) -> None:
    method = "GET" if path.startswith("/v1/providers") else "DELETE"
    response = rest.call(method, path.format(id="x" * 20_000), target.tenant.key)
    assert response.status_code in (400, 404, 414), response.text[:200]
    error_code(response)


def test_oversized_id_over_grpc_is_not_found(rpc: Grpc, target: Target) -> None:
    with pytest.raises(grpc.RpcError) as error:
        rpc.call(rpc.admin.GetProvider, admin_pb2.GetProviderRequest(uuid=OVERSIZED), target.tenant.key)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
