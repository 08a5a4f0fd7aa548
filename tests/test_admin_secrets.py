"""Provider credentials end to end: sealed at rest, masked on every read, never echoed; references
(env:, vault:) resolved when used; KEK rotation under traffic; a SIGKILL mid-write.

One credential is planted for the whole module (the fake upstream's key, so the providers holding it
really serve requests) and every response body and header, gRPC status and trailer, CLI output,
log line and byte the gateways write under their work directories is kept: the last test scans them
all. (The gateway has no metrics or trace exporter: its log is its only telemetry.)
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from modelyard.store.records import SECRET_MARKER
from modelyard.v1 import admin_pb2

from tests.admin_fixtures import (
    MASTER_KEY_ENV,
    Grpc,
    Recorder,
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
    new_admin_key,
    new_master_key,
    ok,
    read_only_store,
    run_cli,
    running_gateway,
    sealed_kek_versions,
    store_path,
    struct,
    tail,
)
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.vault import FakeVault
from tests.gateway_process import ROOT, GatewayProcess

PLANTED = "sk-PLANTED-" + secrets.token_hex(16)
PLANTED_CORE = PLANTED[:-4]
"""All but the last four characters, which reads may show ("****" + last 4)."""
VAULT_TOKEN = "hvs.fake-" + secrets.token_urlsafe(16)
VAULT_PATH = ("secret", "modelyard/openai")
WRONG_KEY = PLANTED + "-revoked"
"""Contains the planted value: an upstream refusing it must not make the gateway repeat it."""


@pytest.fixture(scope="module")
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture(scope="module")
def module_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(tmp_path_factory.mktemp("secrets"))


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=PLANTED) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def vault() -> Iterator[FakeVault]:
    with FakeVault(token=VAULT_TOKEN) as server:
        server.put(*VAULT_PATH, {"apikey": PLANTED, "other": "unused"})
        yield server


@pytest.fixture(scope="module")
def master_key() -> str:
    return new_master_key()


@pytest.fixture(scope="module")
def gateway(
    module_dir: Path, fake: FakeOpenAI, vault: FakeVault, master_key: str, recorder: Recorder
) -> Iterator[GatewayProcess]:
    """MODELYARD_MASTER_KEY set (the kill -9 test runs one with a generated key file instead).
    After the last stop, everything the module recorded and every file written is scanned."""
    config = {
        "providers": [
            {
                "name": "config-openai",
                "type": "openai",
                "data": {"apikey": "$PLANTED_FOR_CONFIG", "base_url": fake.base_url},
            }
        ],
        "models": [{"provider": "config-openai", "id": "gpt-4o", "alias": "config/gpt-4o"}],
    }
    env = {
        "PLANTED_FOR_CONFIG": PLANTED,
        "UPSTREAM_KEY_REF": PLANTED,
        "VAULT_ADDR": vault.url,
        "VAULT_TOKEN": VAULT_TOKEN,
    }
    with running_gateway(module_dir / "main", config=config, env=env, master_key=master_key) as process:
        assert not (data_dir(process) / "master.key").exists(), "the master key came from the environment"
        yield process
    assert leaks(recorder, module_dir, (process.admin_key,)) == []


@pytest.fixture(scope="module")
def rest(gateway: GatewayProcess, recorder: Recorder) -> Iterator[Rest]:
    client = Rest(gateway, recorder)
    yield client
    client.close()


@pytest.fixture(scope="module")
def rpc(gateway: GatewayProcess, recorder: Recorder) -> Iterator[Grpc]:
    client = Grpc(gateway, recorder)
    yield client
    client.close()


@pytest.fixture(scope="module")
def tenant(gateway: GatewayProcess, rest: Rest) -> TenantAccess:
    return create_tenant(rest, gateway.admin_key, "secrets-tenant")


def last_auth(fake: FakeOpenAI) -> str | None:
    request = fake.requests[-1]
    return next((v for k, v in request.headers.items() if k.lower() == "authorization"), None)


def reply_text(response: httpx.Response) -> str:
    return str(ok(response)["choices"][0]["message"]["content"])


# --------------------------------------------------------------------------------------------------
# References


def test_references_resolve_when_used_and_read_back_as_given(
    rest: Rest, rpc: Grpc, tenant: TenantAccess, fake: FakeOpenAI, vault: FakeVault
) -> None:
    key = tenant.key
    references = {
        "by-env": "env:UPSTREAM_KEY_REF",
        "by-vault": f"vault:{VAULT_PATH[0]}/{VAULT_PATH[1]}#apikey",
    }
    for name, reference in references.items():
        provider = create_provider(rest, key, "openai", name, {"apiKey": reference, "baseURL": fake.base_url})
        assert provider["data"] == {"apikey": reference, "base_url": fake.base_url}
        assert ok(rest.call("GET", f"/v1/providers/{provider['uuid']}", key))["data"]["apikey"] == reference
        shown = rpc.call(rpc.admin.GetProvider, admin_pb2.GetProviderRequest(uuid=provider["uuid"]), key)
        assert as_dict(shown)["data"]["apikey"] == reference
        enable_model(rest, key, provider["uuid"], "gpt-4o", f"ref/{name}")

    reads_before = vault.reads(*VAULT_PATH)
    for name in references:
        assert reply_text(chat(rest, key, f"ref/{name}", f"through {name}")) == f"Echo: through {name}"
        assert last_auth(fake) == f"Bearer {PLANTED}"
    assert vault.reads(*VAULT_PATH) > reads_before
    vault_request = next(r for r in reversed(vault.requests) if r.path.endswith(VAULT_PATH[1]))
    assert vault_request.headers.get("X-Vault-Token") == VAULT_TOKEN

    # A reference that cannot be resolved: stored, and the provider answers 503 naming no value.
    dangling = create_provider(
        rest,
        key,
        "openai",
        "dangling",
        {"apikey": "env:MODELYARD_TEST_UNSET_VARIABLE", "base_url": fake.base_url},
    )
    enable_model(rest, key, dangling["uuid"], "gpt-4o", "ref/dangling")
    unavailable = chat(rest, key, "ref/dangling")
    assert unavailable.status_code == 503 and error_code(unavailable) == "provider_credentials_unavailable"
    # The others keep serving.
    assert reply_text(chat(rest, key, "ref/by-env", "still")) == "Echo: still"


# --------------------------------------------------------------------------------------------------
# Sealed credentials of every type: masked on every read


SEALED: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    # (type, data, its secret arguments (canonical names))
    ("openai", {"apikey": PLANTED, "base_url": "{fake}"}, ("apikey",)),
    ("cerebras", {"apiKey": PLANTED, "baseURL": "{fake}"}, ("apikey",)),
    ("nim", {"api_key": PLANTED, "base_url": "{fake}"}, ("apikey",)),
    ("watsonxai", {"apikey": PLANTED, "project_id": "proj-1"}, ("apikey",)),
    ("azure-openai", {"apiKey": PLANTED, "resourceName": "scribeflow"}, ("apikey",)),
    ("anthropic", {"apikey": PLANTED}, ("apikey",)),
    (
        "bedrock",
        {
            "accessKeyId": "AKIAIOSFODNN7EXAMPLE",
            "secretAccessKey": PLANTED,
            "sessionToken": PLANTED,
            "region": "us-east-1",
        },
        ("secret_access_key", "session_token"),
    ),
    ("cohere", {"apikey": PLANTED}, ("apikey",)),
    (
        "google-cloud-vertex-ai",
        {"private_key": PLANTED, "region": "us-central1", "project_id": "my-project-1"},
        ("private_key",),
    ),
    ("databricks-model-serving", {"host": "http://127.0.0.1:9", "token": PLANTED}, ("token",)),
    ("ai21labs", {"apiKey": PLANTED}, ("apikey",)),
]
SERVING_TYPES = ("openai", "cerebras", "nim")


def unserved_statuses(type_: str) -> set[int]:
    """What a type not pointed at a fake answers: its upstream is unreachable from this sandbox
    (502, or 503 when a token endpoint is), or the planted value is not a usable credential of
    that kind (401, e.g. a service-account key that is not JSON)."""
    return {401, 502, 503}


def test_sealed_credentials_are_masked_on_every_read(
    gateway: GatewayProcess, rest: Rest, rpc: Grpc, tenant: TenantAccess, fake: FakeOpenAI
) -> None:
    key = tenant.key
    uuids: dict[str, str] = {}
    for index, (type_, raw, secret_names) in enumerate(SEALED):
        data = {k: (fake.base_url if v == "{fake}" else v) for k, v in raw.items()}
        if index % 2:
            created = as_dict(
                rpc.call(
                    rpc.admin.CreateProvider,
                    admin_pb2.CreateProviderRequest(type=type_, name=f"sealed-{type_}", data=struct(data)),
                    key,
                )
            )
        else:
            created = create_provider(rest, key, type_, f"sealed-{type_}", data)
        for name in secret_names:
            assert created["data"][name] == masked(PLANTED) == "****" + PLANTED[-4:]
        uuids[type_] = created["uuid"]
        enable_model(rest, key, created["uuid"], "gpt-4o", f"sealed/{type_}")

    listed = {p["name"]: p for p in ok(rest.call("GET", "/v1/providers", key))}
    via_grpc = {
        p.name: as_dict(p)
        for p in rpc.call(rpc.admin.ListProviders, admin_pb2.ListProvidersRequest(), key).providers
    }
    for type_, _, secret_names in SEALED:
        one = ok(rest.call("GET", f"/v1/providers/{uuids[type_]}", key))
        for view in (one, listed[f"sealed-{type_}"], via_grpc[f"sealed-{type_}"]):
            for name in secret_names:
                assert view["data"][name] == masked(PLANTED)

    # The config file's provider (the default tenant's, read-only) is masked alike.
    config_view = ok(rest.call("GET", "/v1/providers", gateway.admin_key))
    assert [(p["name"], p["source"], p["data"]["apikey"]) for p in config_view] == [
        ("config-openai", "config", masked(PLANTED))
    ]
    assert reply_text(chat(rest, gateway.admin_key, "config/gpt-4o", "from config")) == "Echo: from config"

    # Inference through every type: the OpenAI-compatible ones serve with the credential, the
    # others answer 501; neither repeats it.
    for type_, _, _ in SEALED:
        response = chat(rest, key, f"sealed/{type_}", f"to {type_}")
        if type_ in SERVING_TYPES:
            assert reply_text(response) == f"Echo: to {type_}"
            assert last_auth(fake) == f"Bearer {PLANTED}"
        else:
            assert response.status_code in unserved_statuses(type_), response.text
            assert PLANTED not in response.text
        stream = rest.call(
            "POST",
            "/v1/chat/completions",
            key,
            json_body={
                "model": f"sealed/{type_}",
                "stream": True,
                "messages": [{"role": "user", "content": "s"}],
            },
        )
        assert stream.status_code in ({200} if type_ in SERVING_TYPES else unserved_statuses(type_))
        grpc_code = rpc.code(rpc.inference.CreateChatCompletion, grpc_chat_request(f"sealed/{type_}"), key)
        if type_ in SERVING_TYPES:
            assert grpc_code == grpc.StatusCode.OK
        else:
            pending = unserved_statuses(type_) == {501}
            expected = (
                {grpc.StatusCode.UNIMPLEMENTED}
                if pending
                else {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAUTHENTICATED}
            )
            assert grpc_code in expected


def test_updates_keep_or_replace_the_sealed_credential(
    rest: Rest, rpc: Grpc, tenant: TenantAccess, fake: FakeOpenAI
) -> None:
    key = tenant.key
    provider = create_provider(
        rest, key, "openai", "rotating", {"apikey": PLANTED, "base_url": fake.base_url}
    )
    uuid_ = provider["uuid"]
    enable_model(rest, key, uuid_, "gpt-4o", "rotating/chat")

    # Another argument changes: the sealed key is kept (still masked, still working).
    renamed = ok(
        rest.call(
            "PATCH",
            f"/v1/providers/{uuid_}",
            key,
            json_body={"name": "rotating-2", "data": {"organization": "org-1"}},
        )
    )
    assert renamed["data"] == {"apikey": masked(PLANTED), "base_url": fake.base_url, "organization": "org-1"}
    assert reply_text(chat(rest, key, "rotating/chat", "kept")) == "Echo: kept"

    # A wrong key: the upstream refuses it; the gateway's error does not repeat it.
    wrong = ok(rest.call("PATCH", f"/v1/providers/{uuid_}", key, json_body={"data": {"apikey": WRONG_KEY}}))
    assert wrong["data"]["apikey"] == masked(WRONG_KEY)
    refused = chat(rest, key, "rotating/chat")
    assert refused.status_code == 401, refused.text  # the upstream's 4xx is passed on...
    error_code(refused)
    assert "rejected the gateway's credentials" in refused.json()["error"]["message"]  # ...without its text
    assert (
        rpc.code(rpc.inference.CreateChatCompletion, grpc_chat_request("rotating/chat"), key)
        != grpc.StatusCode.OK
    )
    stream = rest.call(
        "POST",
        "/v1/chat/completions",
        key,
        json_body={"model": "rotating/chat", "stream": True, "messages": [{"role": "user", "content": "s"}]},
    )
    assert stream.status_code >= 400

    # Back to the right key over gRPC; null removes an optional argument.
    back = rpc.call(
        rpc.admin.UpdateProvider,
        admin_pb2.UpdateProviderRequest(uuid=uuid_, data=struct({"apikey": PLANTED, "organization": None})),
        key,
    )
    assert as_dict(back)["data"] == {"apikey": masked(PLANTED), "base_url": fake.base_url}
    assert reply_text(chat(rest, key, "rotating/chat", "replaced")) == "Echo: replaced"


@pytest.mark.parametrize(
    ("type_", "data", "change", "shown"),
    [
        (
            "openai",
            {"apikey": PLANTED, "base_url": "http://127.0.0.1:9"},
            {"apiKey": PLANTED + "-v2"},
            {"apikey": masked(PLANTED + "-v2")},
        ),
        (
            "openai",
            {"apikey": PLANTED, "base_url": "http://127.0.0.1:9"},
            {"baseURL": "http://127.0.0.1:8"},
            {"base_url": "http://127.0.0.1:8"},
        ),
        (
            "azure-openai",
            {"apikey": PLANTED, "resource_name": "one"},
            {"resourceName": "two"},
            {"resource_name": "two"},
        ),
    ],
)
def test_updates_accept_ibm_spellings(
    rest: Rest,
    tenant: TenantAccess,
    type_: str,
    data: dict[str, Any],
    change: dict[str, Any],
    shown: dict[str, Any],
) -> None:
    provider = create_provider(rest, tenant.key, type_, "spelled-" + secrets.token_hex(4), data)
    response = rest.call("PATCH", f"/v1/providers/{provider['uuid']}", tenant.key, json_body={"data": change})
    assert response.status_code == 200, response.text
    assert response.json()["data"].items() >= shown.items()


REFUSED_BODIES: list[tuple[str, dict[str, Any]]] = [
    ("openai", {"apikey": PLANTED, "unknown_argument": PLANTED}),
    ("openai", {"apikey": PLANTED, "base_url": PLANTED}),
    ("openai", {"apikey": "env:" + PLANTED}),
    ("openai", {"apikey": "vault:" + PLANTED}),
    ("openai", {"apikey": "file:" + PLANTED}),
    ("openai", {"apikey": {"value": PLANTED}}),
    ("openai", {"apikey": [PLANTED]}),
    ("openai", {"organization": PLANTED}),
    ("bedrock", {"access_key_id": PLANTED, "secret_access_key": PLANTED, "region": PLANTED}),
    ("watsonxai", {"apikey": PLANTED}),
    ("watsonxai", {"apikey": PLANTED, "project_id": PLANTED, "space_id": PLANTED}),
    ("google-cloud-vertex-ai", {"private_key": PLANTED, "region": PLANTED, "project_id": PLANTED}),
    ("no-such-type", {"apikey": PLANTED}),
]


@pytest.mark.parametrize(("type_", "data"), REFUSED_BODIES)
def test_refused_writes_do_not_echo_the_credential(
    rest: Rest, rpc: Grpc, tenant: TenantAccess, type_: str, data: dict[str, Any]
) -> None:
    response = rest.call(
        "POST", f"/v1/providers/{type_}", tenant.key, json_body={"name": "refused", "data": data}
    )
    assert response.status_code == 400, response.text
    error_code(response)
    assert PLANTED_CORE not in response.text
    with pytest.raises(grpc.RpcError) as error:
        rpc.call(
            rpc.admin.CreateProvider,
            admin_pb2.CreateProviderRequest(type=type_, name="refused", data=struct(data)),
            tenant.key,
        )
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert PLANTED_CORE not in error.value.details()


def test_refused_updates_and_conflicts_do_not_echo_the_credential(
    rest: Rest, tenant: TenantAccess, fake: FakeOpenAI
) -> None:
    key = tenant.key
    existing = create_provider(
        rest, key, "openai", "conflicting", {"apikey": PLANTED, "base_url": fake.base_url}
    )
    duplicate = rest.call(
        "POST", "/v1/providers/openai", key, json_body={"name": "conflicting", "data": {"apikey": PLANTED}}
    )
    assert duplicate.status_code == 409 and error_code(duplicate) == "conflict"
    for change in (
        {"apikey": PLANTED, "bogus": PLANTED},
        {"base_url": PLANTED},
        {"apikey": "env:" + PLANTED},
    ):
        refused = rest.call("PATCH", f"/v1/providers/{existing['uuid']}", key, json_body={"data": change})
        assert refused.status_code == 400, refused.text
        error_code(refused)
    assert ok(rest.call("GET", f"/v1/providers/{existing['uuid']}", key))["data"] == {
        "apikey": masked(PLANTED),
        "base_url": fake.base_url,
    }
    audit = ok(rest.call("GET", "/v1/audit", key, params={"limit": 5}))
    assert [e["result"] for e in audit[:3]] == [
        "invalid_secret_reference",
        "invalid_request_error",
        "invalid_request_error",
    ]


def test_deleting_a_provider_deletes_its_sealed_secrets(
    gateway: GatewayProcess, rest: Rest, tenant: TenantAccess, fake: FakeOpenAI
) -> None:
    provider = create_provider(
        rest,
        tenant.key,
        "bedrock",
        "short-lived",
        {
            "access_key_id": "AKIAIOSFODNN7EXAMPLE",
            "secret_access_key": PLANTED,
            "session_token": PLANTED,
            "region": "us-east-1",
        },
    )
    query = "SELECT count(*) FROM secrets WHERE provider_id = ?"
    with read_only_store(store_path(gateway)) as conn:
        assert conn.execute(query, (provider["uuid"],)).fetchone()[0] == 2
    assert ok(rest.call("DELETE", f"/v1/providers/{provider['uuid']}", tenant.key)) == {"deleted": True}
    with read_only_store(store_path(gateway)) as conn:
        assert conn.execute(query, (provider["uuid"],)).fetchone()[0] == 0
    assert rest.call("GET", f"/v1/providers/{provider['uuid']}", tenant.key).status_code == 404


def test_cli_never_prints_credentials(
    gateway: GatewayProcess, recorder: Recorder, tenant: TenantAccess, fake: FakeOpenAI
) -> None:
    target = gateway.grpc_target
    added = run_cli(
        [
            "providers",
            "add",
            "openai",
            "--name",
            "cli-sealed",
            "--data",
            f"apikey={PLANTED}",
            "--data",
            f"base_url={fake.base_url}",
            "--json",
        ],
        tenant.key,
        target,
        recorder,
    )
    provider = cli_json(added)
    assert provider["data"]["apikey"] == masked(PLANTED)
    shown = run_cli(["providers", "show", provider["uuid"]], tenant.key, target, recorder)
    assert shown.returncode == 0
    assert re.search(
        r"^data\.apikey\s+\*\*\*\*" + re.escape(PLANTED[-4:]) + "$", shown.stdout, re.MULTILINE
    ), shown.stdout
    listed = cli_json(run_cli(["providers", "list", "--json"], tenant.key, target, recorder))
    assert {p["name"]: p["data"].get("apikey") for p in listed}["cli-sealed"] == masked(PLANTED)
    table = run_cli(["providers", "list"], tenant.key, target, recorder)
    assert table.returncode == 0 and "cli-sealed" in table.stdout
    updated = run_cli(
        ["providers", "update", provider["uuid"], "--data", f"apikey={PLANTED}", "--json"],
        tenant.key,
        target,
        recorder,
    )
    assert cli_json(updated)["data"]["apikey"] == masked(PLANTED)
    refused = run_cli(
        [
            "providers",
            "add",
            "openai",
            "--name",
            "cli-refused",
            "--data",
            f"apikey={PLANTED}",
            "--data",
            f"base_url={PLANTED}",
        ],
        tenant.key,
        target,
        recorder,
    )
    assert refused.returncode == 1 and "INVALID_ARGUMENT" in refused.stderr
    for label, text in recorder.entries:
        if label.startswith("CLI"):
            assert PLANTED_CORE not in text and tenant.key not in text, label


# --------------------------------------------------------------------------------------------------
# KEK rotation under traffic, then a restart


@dataclass
class Traffic:
    done: int = 0
    failures: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop_creating: threading.Event = field(default_factory=threading.Event)
    rotations_done: threading.Event = field(default_factory=threading.Event)

    def count(self, failure: str | None = None) -> None:
        with self.lock:
            self.done += 1
            if failure is not None:
                self.failures.append(failure)


MIN_REQUESTS, MAX_REQUESTS, CONCURRENCY = 300, 3000, 4


def rotate_kek(gateway: GatewayProcess, master_key: str | None, recorder: Recorder) -> str:
    env = {k: v for k, v in os.environ.items() if k != MASTER_KEY_ENV}
    if master_key is not None:
        env[MASTER_KEY_ENV] = master_key
    result = subprocess.run(
        [sys.executable, "-m", "modelyard", "secrets", "rotate-kek", "--data-dir", str(data_dir(gateway))],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    recorder.add(f"CLI secrets rotate-kek -> {result.returncode}", result.stdout + result.stderr)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip()


def test_kek_rotation_under_traffic_loses_no_request(
    gateway: GatewayProcess,
    rest: Rest,
    recorder: Recorder,
    tenant: TenantAccess,
    fake: FakeOpenAI,
    master_key: str,
) -> None:
    key = tenant.key
    for name, alias in (("rot-1", "rot/chat"), ("rot-2", "rot/chat"), ("rot-new-0", "rot/new")):
        provider = create_provider(rest, key, "openai", name, {"apikey": PLANTED, "base_url": fake.base_url})
        enable_model(rest, key, provider["uuid"], "gpt-4o", alias)
    start_version, versions = sealed_kek_versions(store_path(gateway))
    assert versions and set(versions) == {start_version}
    traffic = Traffic()
    deadline = time.monotonic() + 45

    def chats(worker: int) -> None:
        with Rest(gateway, recorder) as client:
            i = 0
            while time.monotonic() < deadline:
                with traffic.lock:
                    enough = traffic.done >= MIN_REQUESTS and traffic.rotations_done.is_set()
                    if enough or traffic.done >= MAX_REQUESTS:
                        return
                alias = ("rot/chat", "rot/new")[i % 2]
                text = f"w{worker} call {i}"
                try:
                    response = chat(client, key, alias, text)
                    body = response.json()
                    failure = (
                        None
                        if response.status_code == 200
                        and body["choices"][0]["message"]["content"] == f"Echo: {text}"
                        else f"{alias}: {response.status_code} {response.text[:200]}"
                    )
                except (httpx.HTTPError, ValueError, KeyError) as exc:
                    failure = f"{alias}: {type(exc).__name__}: {exc}"
                traffic.count(failure)
                i += 1

    def creator() -> None:
        with Rest(gateway, recorder) as client:
            for i in range(1, 41):
                if traffic.stop_creating.is_set() or time.monotonic() > deadline:
                    return
                try:
                    created = client.call(
                        "POST",
                        "/v1/providers/openai",
                        key,
                        json_body={
                            "name": f"rot-new-{i}",
                            "data": {"apikey": PLANTED, "base_url": fake.base_url},
                        },
                    )
                    model = None
                    if created.status_code == 200:
                        model = client.call(
                            "POST",
                            f"/v1/providers/{created.json()['uuid']}/models",
                            key,
                            json_body={"id": "gpt-4o", "alias": "rot/new"},
                        )
                    if created.status_code != 200 or model is None or model.status_code != 200:
                        traffic.count(f"create rot-new-{i}: {created.status_code} {created.text[:200]}")
                        return
                    traffic.created.append(created.json()["uuid"])
                    traffic.count()
                except httpx.HTTPError as exc:
                    traffic.count(f"create rot-new-{i}: {type(exc).__name__}")
                    return
                time.sleep(0.01)

    def wait_for(count: int) -> None:
        while traffic.done < count and time.monotonic() < deadline:
            time.sleep(0.01)

    with ThreadPoolExecutor(CONCURRENCY + 1) as pool:
        futures = [pool.submit(chats, w) for w in range(CONCURRENCY)] + [pool.submit(creator)]
        try:
            wait_for(40)
            during: list[tuple[int, int]] = []
            before = traffic.done
            first = rotate_kek(gateway, master_key, recorder)
            during.append((before, traffic.done))
            traffic.stop_creating.set()
            futures[-1].result(timeout=30)
            wait_for(traffic.done + 40)
            before = traffic.done
            second = rotate_kek(gateway, master_key, recorder)
            during.append((before, traffic.done))
        finally:
            traffic.stop_creating.set()
            traffic.rotations_done.set()
        for future in futures:
            future.result(timeout=60)

    assert traffic.failures == [], traffic.failures[:5]
    assert all(after > before for before, after in during), (
        f"requests completed during each rotation: {during}"
    )
    assert traffic.done >= MIN_REQUESTS
    assert traffic.created, "providers were created while the KEK rotated"
    match = re.fullmatch(rf"KEK v{start_version} -> v{start_version + 1}: (\d+) secrets re-wrapped", first)
    assert match and int(match.group(1)) >= len(versions), first
    match = re.fullmatch(
        rf"KEK v{start_version + 1} -> v{start_version + 2}: (\d+) secrets re-wrapped", second
    )
    assert match and int(match.group(1)) >= len(versions) + len(traffic.created), second
    current, versions = sealed_kek_versions(store_path(gateway))
    assert current == start_version + 2
    assert versions and set(versions) == {current}, "every sealed secret is at the new KEK version"

    # A restart with the same data dir and MODELYARD_MASTER_KEY: everything still opens and serves.
    assert gateway.stop() == 0
    gateway.start()
    for alias in ("rot/chat", "rot/new", "config/gpt-4o"):
        caller = gateway.admin_key if alias.startswith("config/") else key
        for _ in range(2):
            assert (
                reply_text(chat(rest, caller, alias, f"after restart {alias}"))
                == f"Echo: after restart {alias}"
            )
    listed = {p["uuid"]: p for p in ok(rest.call("GET", "/v1/providers", key))}
    for uuid_ in traffic.created:
        assert listed[uuid_]["data"]["apikey"] == masked(PLANTED)


# --------------------------------------------------------------------------------------------------
# kill -9 mid-write


def test_kill_9_mid_write_loses_no_committed_object(
    module_dir: Path, recorder: Recorder, fake: FakeOpenAI
) -> None:
    """A thread creates providers (each with a sealed key and a model) while the gateway's whole
    process group is SIGKILLed; after a restart on the same data dir (master key from the generated
    key file) every acknowledged provider is there with its masked key and its model."""
    workdir = module_dir / "crash"
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(MASTER_KEY_ENV, raising=False)
        process = GatewayProcess(
            config={"providers": [], "models": []}, workdir=workdir, admin_key=new_admin_key()
        )
        process.start()
        try:
            key_file = data_dir(process) / "master.key"
            assert key_file.is_file() and stat.S_IMODE(key_file.stat().st_mode) == 0o600
            setup = Rest(process, recorder)
            crash_tenant = create_tenant(setup, process.admin_key, "crash")
            setup.close()
            acknowledged: dict[str, str | None] = {}
            stop = threading.Event()

            def writer() -> None:
                with Rest(process, recorder) as client:
                    for i in range(400):
                        if stop.is_set():
                            return
                        try:
                            created = client.call(
                                "POST",
                                "/v1/providers/openai",
                                crash_tenant.key,
                                json_body={
                                    "name": f"crash-{i}",
                                    "data": {"apikey": PLANTED, "base_url": fake.base_url},
                                },
                            )
                            if created.status_code != 200:
                                return
                            uuid_ = created.json()["uuid"]
                            acknowledged[uuid_] = None
                            model = client.call(
                                "POST",
                                f"/v1/providers/{uuid_}/models",
                                crash_tenant.key,
                                json_body={"id": f"model-{i}", "alias": "crash/chat"},
                            )
                            if model.status_code != 200:
                                return
                            acknowledged[uuid_] = f"model-{i}"
                        except httpx.HTTPError:
                            return

            thread = threading.Thread(target=writer, name="crash-writer", daemon=True)
            thread.start()
            deadline = time.monotonic() + 20
            while len(acknowledged) < 25 and thread.is_alive() and time.monotonic() < deadline:
                time.sleep(0.005)
            assert process.process is not None
            os.killpg(process.process.pid, signal.SIGKILL)
            process.process.wait(timeout=10)
            stop.set()
            thread.join(timeout=30)
            assert not thread.is_alive()
            assert len(acknowledged) >= 25, "the writer made progress before the kill"
            while process.session_pids() and time.monotonic() < deadline + 10:
                time.sleep(0.05)
            assert process.session_pids() == [], "SIGKILL to the group leaves no process behind"

            process.start()
            after = Rest(process, recorder)
            try:
                listed = {p["uuid"]: p for p in ok(after.call("GET", "/v1/providers", crash_tenant.key))}
                for uuid_, model_id in acknowledged.items():
                    assert uuid_ in listed, f"acknowledged provider {uuid_} was lost"
                    shown = ok(after.call("GET", f"/v1/providers/{uuid_}", crash_tenant.key))
                    assert shown["data"] == {"apikey": masked(PLANTED), "base_url": fake.base_url}
                    if model_id is not None:
                        models = ok(after.call("GET", f"/v1/providers/{uuid_}/models", crash_tenant.key))
                        assert [(m["id"], m["alias"]) for m in models] == [(model_id, "crash/chat")]
                # Nothing half-written: every provider that exists (acknowledged or not) has its secret.
                for provider in listed.values():
                    assert provider["data"]["apikey"] == masked(PLANTED), provider
                assert (
                    reply_text(chat(after, crash_tenant.key, "crash/chat", "after the crash"))
                    == "Echo: after the crash"
                )
            finally:
                after.close()
            with read_only_store(store_path(process)) as conn:
                assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
                assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
                secret_ids = {row[0] for row in conn.execute("SELECT id FROM secrets")}
                for provider_id, data in conn.execute("SELECT id, data FROM providers"):
                    refs = [
                        v[SECRET_MARKER]
                        for v in json.loads(data).values()
                        if isinstance(v, dict) and SECRET_MARKER in v
                    ]
                    assert refs and set(refs) <= secret_ids, f"provider {provider_id} without its secret"
        finally:
            code = process.stop()
        assert code == 0, tail(process.log_path)


# --------------------------------------------------------------------------------------------------
# The scan: last in the module


def test_planted_credential_appears_nowhere(
    gateway: GatewayProcess, recorder: Recorder, module_dir: Path, tenant: TenantAccess, fake: FakeOpenAI
) -> None:
    """Scans everything recorded so far (the module fixture scans again after the last stop)."""
    key = tenant.key
    with Rest(gateway, recorder) as client:
        data = {"apikey": PLANTED, "base_url": fake.base_url}
        provider = create_provider(client, key, "openai", "scanned", data)
        shown = ok(client.call("GET", f"/v1/providers/{provider['uuid']}", key))
        assert shown["data"]["apikey"] == masked(PLANTED)
        # The whole audit trail of both tenants is part of what clients can read.
        for caller in (gateway.admin_key, key):
            ok(client.call("GET", "/v1/audit", caller, params={"limit": 1000}))
    rpc = Grpc(gateway, recorder)
    try:
        rpc.call(rpc.admin.ListAudit, admin_pb2.ListAuditRequest(limit=1000), key)
        rpc.call(rpc.admin.ListProviders, admin_pb2.ListProvidersRequest(), key)
    finally:
        rpc.close()
    assert any(masked(PLANTED) in text for _, text in recorder.entries), "masked reads were recorded"
    files = {p.name for p in module_dir.rglob("*") if p.is_file()}
    assert {"gateway.log", "modelyard.db"} <= files
    assert "modelyard.db-wal" in files, "the running gateway's WAL is scanned too"
    assert leaks(recorder, module_dir, (gateway.admin_key, key)) == []


def leaks(recorder: Recorder, root: Path, keys: tuple[str, ...] = ()) -> list[str]:
    """Where the planted credential (or the Vault token, or a gateway key) shows up: any response,
    status, header or CLI output recorded, and any file the gateways wrote under `root` (logs, the
    store with its WAL, Envoy's generated config...)."""
    found = [
        f"{label}: {needle[:14]}..."
        for needle in (PLANTED, PLANTED_CORE, VAULT_TOKEN)
        for label in recorder.containing(needle)
    ]
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        content = path.read_bytes()
        for needle in (PLANTED_CORE, VAULT_TOKEN, *keys):
            if needle.encode() in content:
                found.append(f"{path.relative_to(root)}: {needle[:14]}...")
    return found
