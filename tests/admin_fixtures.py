"""Helpers shared by the Admin API end-to-end tests (test_admin_walkthrough, test_admin_isolation,
test_admin_secrets): a real gateway per module, REST (httpx, as the README's curl) and gRPC (generated
stubs) clients that can record everything they receive, the CLI as a subprocess, the store read-only.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import json_format, struct_pb2
from google.protobuf.message import Message
from modelyard.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    chat_pb2,
    completions_pb2,
    embeddings_pb2,
    inference_pb2,
    inference_pb2_grpc,
)

from tests.gateway_process import ROOT, GatewayProcess

MASTER_KEY_ENV = "MODELYARD_MASTER_KEY"
EMPTY_CONFIG: dict[str, Any] = {"providers": [], "models": []}
INJECTIONS = ("'; DROP TABLE providers; --", '" OR 1=1 --')
OVERSIZED = "x" * 10_000
CALL_TIMEOUT = 15.0


def new_admin_key() -> str:
    return "my-operator-" + secrets.token_urlsafe(18)


def new_master_key() -> str:
    """A MODELYARD_MASTER_KEY value: 64 hex digits."""
    return secrets.token_hex(32)


# --------------------------------------------------------------------------------------------------
# The gateway


@contextmanager
def running_gateway(
    workdir: Path,
    *,
    config: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    workers: int = 1,
    master_key: str | None = None,
) -> Iterator[GatewayProcess]:
    """A started gateway; `master_key=None` leaves MODELYARD_MASTER_KEY unset (the gateway then
    generates DATA_DIR/master.key). Stopped (and required to exit cleanly) on the way out."""
    extra = dict(env or {})
    if master_key is not None:
        extra[MASTER_KEY_ENV] = master_key
    with pytest.MonkeyPatch.context() as patch:
        # GatewayProcess passes os.environ on: make "unset" mean unset, also for restarts.
        patch.delenv(MASTER_KEY_ENV, raising=False)
        gateway = GatewayProcess(
            config=dict(config or EMPTY_CONFIG),
            workdir=workdir,
            admin_key=new_admin_key(),
            env=extra,
            workers=workers,
        )
        gateway.start()
        try:
            yield gateway
        finally:
            code = gateway.stop()
        assert code == 0, f"the gateway exited with {code}:\n{tail(gateway.log_path)}"


def data_dir(gateway: GatewayProcess) -> Path:
    return gateway.workdir / "data"


def store_path(gateway: GatewayProcess) -> Path:
    return data_dir(gateway) / "modelyard.db"


def tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --------------------------------------------------------------------------------------------------
# Recording what clients receive (for the secret-hygiene scan)


class Recorder:
    """Every response body, header, status message and CLI output seen by a test module."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, str]] = []

    def add(self, label: str, text: str) -> None:
        self.entries.append((label, text))

    def containing(self, needle: str) -> list[str]:
        return [label for label, text in self.entries if needle in text]


# --------------------------------------------------------------------------------------------------
# REST through Envoy


def bearer(key: str, tenant: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {key}"}
    if tenant is not None:
        headers["x-modelyard-tenant"] = tenant
    return headers


class Rest:
    """httpx against the gateway's REST edge; records every response when given a Recorder."""

    def __init__(self, gateway: GatewayProcess, recorder: Recorder | None = None) -> None:
        self.gateway = gateway
        self.recorder = recorder
        hooks = {"response": [self._record]} if recorder is not None else {}
        self.client = httpx.Client(base_url=gateway.rest_url, timeout=CALL_TIMEOUT, event_hooks=hooks)

    def _record(self, response: httpx.Response) -> None:
        assert self.recorder is not None
        response.read()
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        label = f"REST {response.request.method} {response.request.url.path[:80]} -> {response.status_code}"
        self.recorder.add(label, f"{headers}\n\n{response.text}")

    def call(
        self,
        method: str,
        path: str,
        key: str,
        *,
        json_body: Any = None,
        tenant: str | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> httpx.Response:
        return self.client.request(method, path, headers=bearer(key, tenant), json=json_body, params=params)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Rest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, (
        f"{response.request.method} {response.request.url.path[:120]}: "
        f"{response.status_code} {response.text[:500]}"
    )
    return response.json()


def error_code(response: httpx.Response) -> str | None:
    """The OpenAI envelope's error.code (the envelope itself is required)."""
    body = response.json()
    assert set(body) == {"error"}, f"not OpenAI's error envelope: {response.text[:300]}"
    assert set(body["error"]) >= {"message", "type", "param", "code"}, response.text[:300]
    code = body["error"]["code"]
    assert code is None or isinstance(code, str)
    return code


@dataclass(frozen=True)
class TenantAccess:
    id: str
    name: str
    key: str
    """The tenant's first admin key (scopes admin + inference)."""
    key_id: str


def create_tenant(rest: Rest, operator_key: str, name: str, secrets_manager: str = "") -> TenantAccess:
    body = ok(
        rest.call(
            "POST", "/v1/tenant", operator_key, json_body={"name": name, "secrets_manager": secrets_manager}
        )
    )
    assert body["tenant"]["name"] == name
    assert body["admin_key"]["scopes"] == ["admin", "inference"]
    assert body["secret"].startswith(body["admin_key"]["prefix"])
    return TenantAccess(body["tenant"]["id"], name, body["secret"], body["admin_key"]["id"])


def create_provider(
    rest: Rest, key: str, type_: str, name: str, data: Mapping[str, Any], tenant: str | None = None
) -> dict[str, Any]:
    body = ok(
        rest.call(
            "POST", f"/v1/providers/{type_}", key, json_body={"name": name, "data": dict(data)}, tenant=tenant
        )
    )
    assert body["name"] == name and body["type"] == type_ and body["source"] == "api", body
    return dict(body)


def enable_model(
    rest: Rest, key: str, provider_uuid: str, model_id: str, alias: str, tenant: str | None = None
) -> dict[str, Any]:
    body = ok(
        rest.call(
            "POST",
            f"/v1/providers/{provider_uuid}/models",
            key,
            json_body={"alias": alias, "id": model_id},
            tenant=tenant,
        )
    )
    assert body == {
        "id": model_id,
        "alias": alias,
        "provider_uuid": provider_uuid,
        "source": "api",
        "created_at": body["created_at"],
    }
    return dict(body)


def create_key(
    rest: Rest,
    key: str,
    name: str,
    scopes: Sequence[str],
    models: Sequence[str] = (),
    expires_at: int = 0,
) -> tuple[str, str]:
    """A new API key of the caller's tenant: (id, secret)."""
    body = ok(
        rest.call(
            "POST",
            "/v1/keys",
            key,
            json_body={
                "name": name,
                "scopes": list(scopes),
                "models": list(models),
                "expires_at": expires_at,
            },
        )
    )
    assert body["key"]["scopes"] == list(scopes) and body["key"]["models"] == list(models)
    return body["key"]["id"], body["secret"]


def chat_body(model: str, text: str = "hello there") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}]}


def chat(rest: Rest, key: str, model: str, text: str = "hello there") -> httpx.Response:
    return rest.call("POST", "/v1/chat/completions", key, json_body=chat_body(model, text))


def masked(value: str) -> str:
    """What reads show of a sealed secret value."""
    return "****" + value[-4:] if len(value) >= 8 else "****"


# --------------------------------------------------------------------------------------------------
# gRPC with the generated stubs


def grpc_metadata(key: str, tenant: str | None = None) -> tuple[tuple[str, str], ...]:
    pairs: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {key}"),)
    if tenant is not None:
        pairs += (("x-modelyard-tenant", tenant),)
    return pairs


def struct(values: Mapping[str, Any]) -> struct_pb2.Struct:
    data = struct_pb2.Struct()
    data.update(dict(values))
    return data


def as_dict(message: Message) -> dict[str, Any]:
    return dict(
        json_format.MessageToDict(
            message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
    )


class Grpc:
    """The Admin, AdminRest and Inference stubs on the gateway's public gRPC port."""

    def __init__(self, gateway: GatewayProcess, recorder: Recorder | None = None) -> None:
        self.channel = grpc.insecure_channel(gateway.grpc_target)
        self.admin = admin_pb2_grpc.AdminStub(self.channel)
        self.admin_rest = admin_pb2_grpc.AdminRestStub(self.channel)
        self.inference = inference_pb2_grpc.InferenceStub(self.channel)
        self.recorder = recorder

    def _record(self, label: str, text: str) -> None:
        if self.recorder is not None:
            self.recorder.add(f"gRPC {label}", text)

    def _record_error(self, label: str, error: grpc.RpcError) -> None:
        trailing = "\n".join(f"{k}: {v!r}" for k, v in (error.trailing_metadata() or ()))  # type: ignore[attr-defined]
        self._record(f"{label} -> {error.code().name}", f"{error.details()}\n{trailing}")  # type: ignore[attr-defined]

    def call(self, method: Callable[..., Any], request: Message, key: str, tenant: str | None = None) -> Any:
        label = getattr(method, "_method", b"?")
        label = label.decode() if isinstance(label, bytes) else str(label)
        try:
            response, call = method.with_call(
                request, metadata=grpc_metadata(key, tenant), timeout=CALL_TIMEOUT
            )
        except grpc.RpcError as error:
            self._record_error(label, error)
            raise
        self._record(label, f"{response}\n{call.initial_metadata()!r}\n{call.trailing_metadata()!r}")
        return response

    def stream(
        self, method: Callable[..., Any], request: Message, key: str, tenant: str | None = None
    ) -> list[Any]:
        label = str(getattr(method, "_method", "stream"))
        try:
            items = list(method(request, metadata=grpc_metadata(key, tenant), timeout=CALL_TIMEOUT))
        except grpc.RpcError as error:
            self._record_error(label, error)
            raise
        self._record(label, "\n".join(str(item) for item in items))
        return items

    def code(
        self, method: Callable[..., Any], request: Message, key: str, tenant: str | None = None
    ) -> grpc.StatusCode:
        """The call's status code (OK when it succeeds); streams are drained."""
        try:
            response = method(request, metadata=grpc_metadata(key, tenant), timeout=CALL_TIMEOUT)
            if not isinstance(response, Message):
                list(response)
        except grpc.RpcError as error:
            self._record_error(str(getattr(method, "_method", "?")), error)
            return error.code()  # type: ignore[no-any-return]
        return grpc.StatusCode.OK

    def close(self) -> None:
        self.channel.close()


def grpc_chat_request(model: str, text: str = "hello there") -> chat_pb2.ChatCompletionRequest:
    message = chat_pb2.ChatMessage(role=chat_pb2.ROLE_USER, content=text)
    return chat_pb2.ChatCompletionRequest(model=model, messages=[message])


# --------------------------------------------------------------------------------------------------
# Every Admin and Inference method, for the isolation and scope matrices


@dataclass(frozen=True)
class Ids:
    """The objects a matrix call acts on."""

    provider_uuid: str
    model_id: str
    key_id: str
    alias: str


RestCall = tuple[str, str, Any]  # method, path, JSON body


@dataclass(frozen=True)
class AdminMethod:
    service: str
    """"admin" or "admin_rest" (the Grpc attribute)."""
    method: str
    request: Callable[[Ids], Message]
    rest: Callable[[Ids], RestCall] | None = None

    @property
    def name(self) -> str:
        return f"{'Admin' if self.service == 'admin' else 'AdminRest'}.{self.method}"

    def stub(self, client: Grpc) -> Callable[..., Any]:
        return getattr(getattr(client, self.service), self.method)  # type: ignore[no-any-return]


ADMIN_METHODS: tuple[AdminMethod, ...] = (
    AdminMethod(
        "admin",
        "CreateTenant",
        lambda i: admin_pb2.CreateTenantRequest(name="matrix-" + secrets.token_hex(4)),
        lambda i: ("POST", "/v1/tenant", {"name": "matrix-" + secrets.token_hex(4)}),
    ),
    AdminMethod(
        "admin", "GetTenant", lambda i: admin_pb2.GetTenantRequest(), lambda i: ("GET", "/v1/tenant", None)
    ),
    AdminMethod("admin", "ListTenants", lambda i: admin_pb2.ListTenantsRequest()),
    AdminMethod(
        "admin",
        "UpdateTenant",
        lambda i: admin_pb2.UpdateTenantRequest(secrets_manager="https://changed.example"),
        lambda i: ("PATCH", "/v1/tenant", {"secrets_manager": "https://changed.example"}),
    ),
    AdminMethod(
        "admin",
        "DeleteTenant",
        lambda i: admin_pb2.DeleteTenantRequest(),
        lambda i: ("DELETE", "/v1/tenant", None),
    ),
    AdminMethod(
        "admin",
        "CreateProvider",
        lambda i: admin_pb2.CreateProviderRequest(type="demo", name="matrix-" + secrets.token_hex(4)),
        lambda i: ("POST", "/v1/providers/demo", {"name": "matrix-" + secrets.token_hex(4), "data": {}}),
    ),
    AdminMethod("admin", "ListProviders", lambda i: admin_pb2.ListProvidersRequest()),
    AdminMethod(
        "admin",
        "GetProvider",
        lambda i: admin_pb2.GetProviderRequest(uuid=i.provider_uuid),
        lambda i: ("GET", f"/v1/providers/{i.provider_uuid}", None),
    ),
    AdminMethod(
        "admin",
        "UpdateProvider",
        lambda i: admin_pb2.UpdateProviderRequest(uuid=i.provider_uuid, name="hijacked"),
        lambda i: ("PATCH", f"/v1/providers/{i.provider_uuid}", {"name": "hijacked"}),
    ),
    AdminMethod(
        "admin",
        "DeleteProvider",
        lambda i: admin_pb2.DeleteProviderRequest(uuid=i.provider_uuid),
        lambda i: ("DELETE", f"/v1/providers/{i.provider_uuid}", None),
    ),
    AdminMethod(
        "admin",
        "EnableModel",
        lambda i: admin_pb2.EnableModelRequest(
            provider_uuid=i.provider_uuid, id="hijack", alias="hijack/alias"
        ),
        lambda i: (
            "POST",
            f"/v1/providers/{i.provider_uuid}/models",
            {"id": "hijack", "alias": "hijack/alias"},
        ),
    ),
    AdminMethod(
        "admin",
        "ListProviderModels",
        lambda i: admin_pb2.ListProviderModelsRequest(provider_uuid=i.provider_uuid),
    ),
    AdminMethod(
        "admin",
        "DisableModel",
        lambda i: admin_pb2.DisableModelRequest(provider_uuid=i.provider_uuid, id=i.model_id),
        lambda i: ("DELETE", f"/v1/providers/{i.provider_uuid}/models/{i.model_id}", None),
    ),
    AdminMethod(
        "admin",
        "CreateKey",
        lambda i: admin_pb2.CreateKeyRequest(name="matrix-key", scopes=["inference"]),
        lambda i: ("POST", "/v1/keys", {"name": "matrix-key", "scopes": ["inference"]}),
    ),
    AdminMethod("admin", "ListKeys", lambda i: admin_pb2.ListKeysRequest()),
    AdminMethod(
        "admin",
        "DeleteKey",
        lambda i: admin_pb2.DeleteKeyRequest(id=i.key_id),
        lambda i: ("DELETE", f"/v1/keys/{i.key_id}", None),
    ),
    AdminMethod("admin", "ListAudit", lambda i: admin_pb2.ListAuditRequest(limit=5)),
    # The REST list shapes (bare JSON arrays) are their own gRPC service.
    AdminMethod(
        "admin_rest",
        "ListTenants",
        lambda i: admin_pb2.ListTenantsRequest(),
        lambda i: ("GET", "/v1/tenants", None),
    ),
    AdminMethod(
        "admin_rest",
        "ListProviders",
        lambda i: admin_pb2.ListProvidersRequest(),
        lambda i: ("GET", "/v1/providers", None),
    ),
    AdminMethod(
        "admin_rest",
        "ListProviderModels",
        lambda i: admin_pb2.ListProviderModelsRequest(provider_uuid=i.provider_uuid),
        lambda i: ("GET", f"/v1/providers/{i.provider_uuid}/models", None),
    ),
    AdminMethod(
        "admin_rest", "ListKeys", lambda i: admin_pb2.ListKeysRequest(), lambda i: ("GET", "/v1/keys", None)
    ),
    AdminMethod(
        "admin_rest",
        "ListAudit",
        lambda i: admin_pb2.ListAuditRequest(limit=5),
        lambda i: ("GET", "/v1/audit", None),
    ),
)
ADMIN_BY_NAME = {m.name: m for m in ADMIN_METHODS}
ADMIN_REST_NAMES = [m.name for m in ADMIN_METHODS if m.rest is not None]
ID_TAKING_METHODS = (
    "Admin.GetProvider",
    "Admin.UpdateProvider",
    "Admin.DeleteProvider",
    "Admin.EnableModel",
    "Admin.ListProviderModels",
    "Admin.DisableModel",
    "Admin.DeleteKey",
    "AdminRest.ListProviderModels",
)


@dataclass(frozen=True)
class InferenceMethod:
    method: str
    request: Callable[[str], Message]


INFERENCE_METHODS: tuple[InferenceMethod, ...] = (
    InferenceMethod("CreateChatCompletion", grpc_chat_request),
    InferenceMethod("StreamChatCompletion", grpc_chat_request),
    InferenceMethod(
        "CreateCompletion", lambda alias: completions_pb2.CompletionRequest(model=alias, prompt=["hi"])
    ),
    InferenceMethod(
        "StreamCompletion", lambda alias: completions_pb2.CompletionRequest(model=alias, prompt=["hi"])
    ),
    InferenceMethod(
        "CreateEmbedding", lambda alias: embeddings_pb2.EmbeddingRequest(model=alias, input=["hi"])
    ),
    InferenceMethod("ListModels", lambda alias: inference_pb2.ListModelsRequest()),
)
INFERENCE_REST: dict[str, Callable[[str], RestCall]] = {
    "POST /v1/chat/completions": lambda alias: ("POST", "/v1/chat/completions", chat_body(alias)),
    "POST /v1/chat/completions (stream)": lambda alias: (
        "POST",
        "/v1/chat/completions",
        {**chat_body(alias), "stream": True},
    ),
    "POST /v1/completions": lambda alias: ("POST", "/v1/completions", {"model": alias, "prompt": "hi"}),
    "POST /v1/embeddings": lambda alias: ("POST", "/v1/embeddings", {"model": alias, "input": "hi"}),
    "GET /v1/models": lambda alias: ("GET", "/v1/models", None),
    "GET /v1/models/{alias}": lambda alias: ("GET", f"/v1/models/{alias}", None),
}


# --------------------------------------------------------------------------------------------------
# The CLI and the store


def run_cli(
    args: Sequence[str], key: str, target: str, recorder: Recorder | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """`python -m modelyard ARGS --target TARGET` with the key in $MODELYARD_KEY."""
    env = {k: v for k, v in os.environ.items() if k not in ("MODELYARD_KEY", "MODELYARD_GRPC")}
    env["MODELYARD_KEY"] = key
    result = subprocess.run(
        [sys.executable, "-m", "modelyard", *args, "--target", target],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )
    if recorder is not None:
        recorder.add(f"CLI {' '.join(args[:2])} -> {result.returncode}", result.stdout + "\n" + result.stderr)
    return result


def cli_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    return json.loads(result.stdout)


@contextmanager
def read_only_store(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        yield conn
    finally:
        conn.close()


def sealed_kek_versions(path: Path) -> tuple[int, list[int]]:
    """(the store's current KEK version, the kek_version of every sealed secret)."""
    with read_only_store(path) as conn:
        current = conn.execute("SELECT version FROM kek_state WHERE id = 1").fetchone()[0]
        versions = [row[0] for row in conn.execute("SELECT kek_version FROM secrets WHERE kind = 'sealed'")]
    return int(current), [int(v) for v in versions]
