"""`modelyard tenant|providers|models|keys|audit` against an in-process fake Admin service.

Each command is checked for the request (and metadata) the service receives, its table, its JSON
(equal to the fake's data) and that the key never shows; then error mapping and usage errors.
"""

from __future__ import annotations

import argparse
import json
import socket
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.protobuf import json_format, struct_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from modelyard import admin_cli, admin_cli_commands
from modelyard.v1 import admin_pb2, admin_pb2_grpc

KEY = "myk_operator_" + "Zq9" * 10
"""The caller's key: it must appear in no output, error messages included."""
TENANT = "acme"
T0 = 1_700_000_000


def to_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def not_found(context: grpc.ServicerContext, what: str, field_name: str) -> None:
    violation = error_details_pb2.BadRequest.FieldViolation(field=field_name, description=f"no such {what}")
    detail = status_pb2.Status().details.add()
    detail.Pack(error_details_pb2.BadRequest(field_violations=[violation]))
    status = status_pb2.Status(
        code=code_pb2.NOT_FOUND, message=f"No {what} '{field_name}'.", details=[detail]
    )
    context.abort_with_status(rpc_status.to_status(status))


class FakeAdmin(admin_pb2_grpc.AdminServicer):
    """In-memory Admin service recording each call's request, metadata and response."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Message, dict[str, str]]] = []
        self.responses: list[Message] = []
        self.tenant = admin_pb2.Tenant(id="t-1", name=TENANT, secrets_manager="https://sm", created_at=T0)
        self.tenants = [self.tenant, admin_pb2.Tenant(id="t-2", name="beta", created_at=T0 + 1)]
        data = struct_pb2.Struct()
        data.update({"apikey": "****abcd", "base_url": "https://api.example", "retry": {"max": 3}})
        self.providers = {
            "p-1": admin_pb2.Provider(
                uuid="p-1", name="oa", type="openai", data=data, source="api", created_at=T0
            ),
            "p-2": admin_pb2.Provider(uuid="p-2", name="demo", type="demo", source="config", created_at=T0),
        }
        self.models = {
            "p-1": [
                admin_pb2.EnabledModel(
                    id="gpt-4o", alias="gpt", provider_uuid="p-1", source="api", created_at=T0
                )
            ],
            "p-2": [
                admin_pb2.EnabledModel(
                    id="demo-chat", alias="demo/chat", provider_uuid="p-2", source="config"
                )
            ],
        }
        self.keys = {
            "k-1": admin_pb2.ApiKey(
                id="k-1", name="ci", scopes=["inference"], models=["gpt"], prefix="myk_ab12", created_at=T0
            ),
            "k-2": admin_pb2.ApiKey(
                id="k-2", name="ops", scopes=["admin", "inference"], expires_at=T0 + 86400
            ),
        }
        self.audit = [
            admin_pb2.AuditEntry(
                sequence=2, at=T0 + 5, key_id="k-2", action="keys.create", target="k-1", result="ok"
            ),
            admin_pb2.AuditEntry(
                sequence=1, at=T0, key_id="k-2", action="providers.create", target="p-1", result="ok"
            ),
        ]

    def _answer(self, name: str, request: Message, context: grpc.ServicerContext, response: Message) -> Any:
        self.calls.append((name, request, dict(context.invocation_metadata())))
        if dict(context.invocation_metadata()).get("authorization") != f"Bearer {KEY}":
            got = dict(context.invocation_metadata()).get("authorization", "")
            context.abort(grpc.StatusCode.UNAUTHENTICATED, f"Invalid key {got!r}.")
        self.responses.append(response)
        return response

    def _provider(self, uuid: str, context: grpc.ServicerContext) -> admin_pb2.Provider:
        if uuid not in self.providers:
            not_found(context, "provider", "uuid")
        return self.providers[uuid]

    def CreateTenant(self, request: Any, context: Any) -> Any:
        tenant = admin_pb2.Tenant(
            id="t-3", name=request.name, secrets_manager=request.secrets_manager, created_at=T0
        )
        key = admin_pb2.ApiKey(id="k-9", name="admin", scopes=["admin"], prefix="myk_new1", created_at=T0)
        response = admin_pb2.CreateTenantResponse(tenant=tenant, admin_key=key, secret="myk_new1-SECRET")
        return self._answer("CreateTenant", request, context, response)

    def GetTenant(self, request: Any, context: Any) -> Any:
        return self._answer("GetTenant", request, context, self.tenant)

    def ListTenants(self, request: Any, context: Any) -> Any:
        return self._answer(
            "ListTenants", request, context, admin_pb2.ListTenantsResponse(tenants=self.tenants)
        )

    def UpdateTenant(self, request: Any, context: Any) -> Any:
        if request.HasField("name"):
            self.tenant.name = request.name
        if request.HasField("secrets_manager"):
            self.tenant.secrets_manager = request.secrets_manager
        return self._answer("UpdateTenant", request, context, self.tenant)

    def DeleteTenant(self, request: Any, context: Any) -> Any:
        return self._answer("DeleteTenant", request, context, admin_pb2.DeleteResponse(deleted=True))

    def CreateProvider(self, request: Any, context: Any) -> Any:
        provider = admin_pb2.Provider(
            uuid="p-3", name=request.name, type=request.type, data=request.data, source="api"
        )
        self.providers[provider.uuid] = provider
        return self._answer("CreateProvider", request, context, provider)

    def ListProviders(self, request: Any, context: Any) -> Any:
        response = admin_pb2.ListProvidersResponse(providers=self.providers.values())
        return self._answer("ListProviders", request, context, response)

    def GetProvider(self, request: Any, context: Any) -> Any:
        return self._answer("GetProvider", request, context, self._provider(request.uuid, context))

    def UpdateProvider(self, request: Any, context: Any) -> Any:
        provider = self._provider(request.uuid, context)
        if request.HasField("name"):
            provider.name = request.name
        provider.data.update(json_format.MessageToDict(request.data))
        return self._answer("UpdateProvider", request, context, provider)

    def DeleteProvider(self, request: Any, context: Any) -> Any:
        deleted = self.providers.pop(request.uuid, None) is not None
        return self._answer("DeleteProvider", request, context, admin_pb2.DeleteResponse(deleted=deleted))

    def EnableModel(self, request: Any, context: Any) -> Any:
        self._provider(request.provider_uuid, context)
        model = admin_pb2.EnabledModel(
            id=request.id,
            alias=request.alias or request.id,
            provider_uuid=request.provider_uuid,
            source="api",
        )
        return self._answer("EnableModel", request, context, model)

    def ListProviderModels(self, request: Any, context: Any) -> Any:
        self._provider(request.provider_uuid, context)
        response = admin_pb2.ListProviderModelsResponse(models=self.models.get(request.provider_uuid, []))
        return self._answer("ListProviderModels", request, context, response)

    def DisableModel(self, request: Any, context: Any) -> Any:
        return self._answer("DisableModel", request, context, admin_pb2.DeleteResponse(deleted=True))

    def CreateKey(self, request: Any, context: Any) -> Any:
        key = admin_pb2.ApiKey(
            id="k-3", name=request.name, scopes=request.scopes, models=request.models,
            expires_at=request.expires_at, prefix="myk_cd34", created_at=T0,
        )  # fmt: skip
        response = admin_pb2.CreateKeyResponse(key=key, secret="myk_cd34-NEWSECRET")
        return self._answer("CreateKey", request, context, response)

    def ListKeys(self, request: Any, context: Any) -> Any:
        return self._answer("ListKeys", request, context, admin_pb2.ListKeysResponse(keys=self.keys.values()))

    def DeleteKey(self, request: Any, context: Any) -> Any:
        return self._answer("DeleteKey", request, context, admin_pb2.DeleteResponse(deleted=True))

    def ListAudit(self, request: Any, context: Any) -> Any:
        entries = self.audit[: request.limit or None]
        return self._answer("ListAudit", request, context, admin_pb2.ListAuditResponse(entries=entries))


@dataclass
class Gateway:
    fake: FakeAdmin
    target: str


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    fake = FakeAdmin()
    admin_pb2_grpc.add_AdminServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield Gateway(fake, f"127.0.0.1:{port}")
    finally:
        server.stop(grace=None)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MODELYARD_KEY", "MODELYARD_GRPC"):
        monkeypatch.delenv(name, raising=False)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="modelyard")
    commands = root.add_subparsers(dest="command", required=True)
    admin_cli.register(commands)
    return root


def cli(capsys: pytest.CaptureFixture[str], argv: list[str]) -> Result:
    args = parser().parse_args(argv)
    code = args.handler(args)
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


def connect(gateway: Gateway, tenant: str | None = "ops") -> list[str]:
    return ["--target", gateway.target, "--key", KEY, *(["--tenant", tenant] if tenant else [])]


def responses(field_name: str | None) -> Callable[[FakeAdmin], Any]:
    """The JSON a command should print: the fake's last response, or its repeated field as a list."""

    def expected(fake: FakeAdmin) -> Any:
        last = fake.responses[-1]
        return to_dict(last) if field_name is None else [to_dict(m) for m in getattr(last, field_name)]

    return expected


def struct(values: dict[str, Any]) -> struct_pb2.Struct:
    data = struct_pb2.Struct()
    data.update(values)
    return data


@dataclass
class Case:
    argv: list[str]
    method: str
    request: Message
    shows: list[str]
    json: Callable[[FakeAdmin], Any] = field(default_factory=lambda: responses(None))


CASES = {
    "tenant create": Case(
        ["tenant", "create", "gamma", "--secrets-manager", "https://vault"],
        "CreateTenant",
        admin_pb2.CreateTenantRequest(name="gamma", secrets_manager="https://vault"),
        ["tenant id", "t-3", "gamma", "https://vault", "admin key id", "k-9", "myk_new1-SECRET"],
    ),
    "tenant show": Case(
        ["tenant", "show"],
        "GetTenant",
        admin_pb2.GetTenantRequest(),
        ["name", TENANT, "https://sm", "2023-11-14T22:13:20Z"],
    ),
    "tenant list": Case(
        ["tenant", "list"],
        "ListTenants",
        admin_pb2.ListTenantsRequest(),
        ["ID", "NAME", "SECRETS_MANAGER", "CREATED", "t-1", TENANT, "t-2", "beta"],
        responses("tenants"),
    ),
    "tenant update": Case(
        ["tenant", "update", "--name", "acme2"],
        "UpdateTenant",
        admin_pb2.UpdateTenantRequest(name="acme2"),
        ["acme2", "https://sm"],
    ),
    "tenant update clears secrets manager": Case(
        ["tenant", "update", "--secrets-manager", ""],
        "UpdateTenant",
        admin_pb2.UpdateTenantRequest(secrets_manager=""),
        ["secrets manager  -"],
    ),
    "tenant delete": Case(
        ["tenant", "delete", "--yes"], "DeleteTenant", admin_pb2.DeleteTenantRequest(), ["deleted tenant ops"]
    ),
    "providers add": Case(
        [
            "providers",
            "add",
            "openai",
            "--name",
            "oa2",
            "--data",
            "apikey=sk-1",
            "base_url=http://x:1/v1",
            "--data-json",
            '{"retry": {"max": 2}, "apikey": "overridden"}',
        ],
        "CreateProvider",
        admin_pb2.CreateProviderRequest(
            type="openai",
            name="oa2",
            data=struct({"apikey": "sk-1", "base_url": "http://x:1/v1", "retry": {"max": 2}}),
        ),
        ["uuid", "p-3", "oa2", "openai", "data.base_url", "http://x:1/v1", 'data.retry     {"max":2}'],
    ),
    "providers list": Case(
        ["providers", "list"],
        "ListProviders",
        admin_pb2.ListProvidersRequest(),
        ["UUID", "NAME", "TYPE", "SOURCE", "p-1", "oa", "openai", "api", "p-2", "demo", "config"],
        responses("providers"),
    ),
    "providers show": Case(
        ["providers", "show", "p-1"],
        "GetProvider",
        admin_pb2.GetProviderRequest(uuid="p-1"),
        ["p-1", "oa", "data.apikey    ****abcd", "https://api.example"],
    ),
    "providers update": Case(
        [
            "providers",
            "update",
            "p-1",
            "--name",
            "oa-renamed",
            "--data",
            "apikey=sk-2",
            "--data-json",
            '{"retry": null}',
        ],
        "UpdateProvider",
        admin_pb2.UpdateProviderRequest(
            uuid="p-1", name="oa-renamed", data=struct({"apikey": "sk-2", "retry": None})
        ),
        ["oa-renamed"],
    ),
    "providers update data only": Case(
        ["providers", "update", "p-2", "--data", "word_delay_ms=5"],
        "UpdateProvider",
        admin_pb2.UpdateProviderRequest(uuid="p-2", data=struct({"word_delay_ms": "5"})),
        ["data.word_delay_ms", "5"],
    ),
    "providers delete": Case(
        ["providers", "delete", "p-2"],
        "DeleteProvider",
        admin_pb2.DeleteProviderRequest(uuid="p-2"),
        ["deleted provider p-2"],
    ),
    "models add": Case(
        ["models", "add", "p-1", "gpt-4o-mini", "--alias", "mini"],
        "EnableModel",
        admin_pb2.EnableModelRequest(provider_uuid="p-1", id="gpt-4o-mini", alias="mini"),
        ["alias", "mini", "gpt-4o-mini", "p-1"],
    ),
    "models add without alias": Case(
        ["models", "add", "p-1", "org/model"],
        "EnableModel",
        admin_pb2.EnableModelRequest(provider_uuid="p-1", id="org/model"),
        ["org/model"],
    ),
    "models list of a provider": Case(
        ["models", "list", "p-1"],
        "ListProviderModels",
        admin_pb2.ListProviderModelsRequest(provider_uuid="p-1"),
        ["ALIAS", "ID", "PROVIDER_UUID", "gpt", "gpt-4o"],
        responses("models"),
    ),
    "models remove": Case(
        ["models", "remove", "p-1", "demo/chat"],
        "DisableModel",
        admin_pb2.DisableModelRequest(provider_uuid="p-1", id="demo/chat"),
        ["deleted model demo/chat of provider p-1"],
    ),
    "keys create": Case(
        [
            "keys",
            "create",
            "bot",
            "--scope",
            "inference",
            "--scope",
            "admin",
            "--model",
            "gpt",
            "demo/chat",
            "--expires-at",
            str(T0 + 60),
        ],
        "CreateKey",
        admin_pb2.CreateKeyRequest(
            name="bot", scopes=["inference", "admin"], models=["gpt", "demo/chat"], expires_at=T0 + 60
        ),
        ["k-3", "bot", "inference,admin", "gpt,demo/chat", "2023-11-14T22:14:20Z", "myk_cd34-NEWSECRET"],
    ),
    "keys list": Case(
        ["keys", "list"],
        "ListKeys",
        admin_pb2.ListKeysRequest(),
        [
            "ID",
            "SCOPES",
            "MODELS",
            "PREFIX",
            "EXPIRES",
            "k-1",
            "ci",
            "myk_ab12",
            "admin,inference",
            "never",
            "*",
        ],
        responses("keys"),
    ),
    "keys delete": Case(
        ["keys", "delete", "k-1"], "DeleteKey", admin_pb2.DeleteKeyRequest(id="k-1"), ["deleted key k-1"]
    ),
    "audit": Case(
        ["audit", "--limit", "1"],
        "ListAudit",
        admin_pb2.ListAuditRequest(limit=1),
        ["SEQ", "AT", "KEY_ID", "ACTION", "TARGET", "RESULT", "keys.create", "k-2"],
        responses("entries"),
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_command_sends_the_request_and_prints_a_table(
    name: str, gateway: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    case = CASES[name]
    result = cli(capsys, [*case.argv, *connect(gateway)])
    assert result.code == 0, result.err
    method, request, metadata = gateway.fake.calls[-1]
    assert (method, request) == (case.method, case.request)
    assert metadata["authorization"] == f"Bearer {KEY}"
    assert metadata["x-modelyard-tenant"] == "ops"
    for text in case.shows:
        assert text in result.out
    assert KEY not in result.out + result.err


@pytest.mark.parametrize("name", CASES)
def test_command_prints_json_equal_to_the_service_data(
    name: str, gateway: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    case = CASES[name]
    result = cli(capsys, [*case.argv, *connect(gateway, tenant=None), "--json"])
    assert result.code == 0, result.err
    assert json.loads(result.out) == case.json(gateway.fake)
    assert "x-modelyard-tenant" not in gateway.fake.calls[-1][2]
    assert KEY not in result.out + result.err


def test_every_registered_command_has_a_handler_and_a_case() -> None:
    # `usage` calls the Metering service, not Admin: tests/test_usage_ledger.py runs it against a gateway
    assert set(admin_cli_commands.COMMANDS) - {"usage"} == {" ".join(name.split()[:2]) for name in CASES}
    assert parser().parse_args(["keys", "list"]).handler.__name__ == "admin_keys_list"


def test_secrets_shown_once_come_with_a_warning(gateway: Gateway, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["tenant", "create", "x"], ["keys", "create", "k", "--scope", "inference"]):
        result = cli(capsys, [*argv, *connect(gateway)])
        assert "shown only this once" in result.err
        assert "SECRET" in result.out


def test_table_columns_are_aligned(gateway: Gateway, capsys: pytest.CaptureFixture[str]) -> None:
    lines = cli(capsys, ["providers", "list", *connect(gateway)]).out.splitlines()
    assert lines[0].split() == ["UUID", "NAME", "TYPE", "SOURCE", "CREATED"]
    assert lines[1].index("oa") == lines[2].index("demo") == lines[0].index("NAME")
    assert lines[2].split()[-1] == "2023-11-14T22:13:20Z"


def test_models_list_without_provider_lists_every_provider(
    gateway: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    result = cli(capsys, ["models", "list", "--json", *connect(gateway)])
    assert result.code == 0
    assert [call[0] for call in gateway.fake.calls] == [
        "ListProviders",
        "ListProviderModels",
        "ListProviderModels",
    ]
    assert [call[1] for call in gateway.fake.calls[1:]] == [
        admin_pb2.ListProviderModelsRequest(provider_uuid="p-1"),
        admin_pb2.ListProviderModelsRequest(provider_uuid="p-2"),
    ]
    assert json.loads(result.out) == [
        to_dict(m) for uuid in ("p-1", "p-2") for m in gateway.fake.models[uuid]
    ]
    table = cli(capsys, ["models", "list", *connect(gateway)]).out
    assert "gpt-4o" in table and "demo/chat" in table


def test_options_are_accepted_at_group_level_and_from_the_environment(
    gateway: Gateway, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELYARD_GRPC", gateway.target)
    monkeypatch.setenv("MODELYARD_KEY", KEY)
    result = cli(capsys, ["keys", "--json", "--tenant", "t9", "list", "--timeout", "3"])
    assert result.code == 0, result.err
    assert isinstance(json.loads(result.out), list)
    metadata = gateway.fake.calls[-1][2]
    assert (metadata["authorization"], metadata["x-modelyard-tenant"]) == (f"Bearer {KEY}", "t9")


def test_expires_in_is_a_duration_from_now(gateway: Gateway, capsys: pytest.CaptureFixture[str]) -> None:
    before = int(time.time())
    result = cli(
        capsys, ["keys", "create", "k", "--scope", "inference", "--expires-in", "30d", *connect(gateway)]
    )
    after = int(time.time())
    assert result.code == 0
    request = gateway.fake.calls[-1][1]
    assert isinstance(request, admin_pb2.CreateKeyRequest)
    assert before + 30 * 86400 <= request.expires_at <= after + 30 * 86400


def test_not_found_prints_code_message_and_field(
    gateway: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    result = cli(capsys, ["providers", "show", "nope", *connect(gateway)])
    assert (result.code, result.out) == (1, "")
    assert result.err == "error: NOT_FOUND: No provider 'uuid'. (field: uuid)\n"


def test_rejected_key_is_not_echoed(gateway: Gateway, capsys: pytest.CaptureFixture[str]) -> None:
    wrong = "myk_wrong_" + "x7" * 12
    result = cli(capsys, ["tenant", "show", "--target", gateway.target, "--key", wrong])
    assert result.code == 1
    assert result.err.startswith("error: UNAUTHENTICATED: Invalid key 'Bearer [redacted]'.")
    assert wrong not in result.out + result.err


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_unreachable_gateway(capsys: pytest.CaptureFixture[str]) -> None:
    target = f"127.0.0.1:{closed_port()}"
    result = cli(capsys, ["keys", "list", "--target", target, "--key", KEY])
    assert result.code == 1
    assert result.err.startswith(f"error: cannot reach the gateway at {target}")
    assert KEY not in result.err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["keys", "list"], "error: no API key: set MODELYARD_KEY (or pass --key)"),
        (["tenant", "delete", "--key", KEY], "confirm with --yes"),
        (["tenant", "update", "--key", KEY], "nothing to update"),
        (["providers", "update", "p-1", "--key", KEY], "nothing to update"),
        (["keys", "list", "--key", "two words"], "cannot be sent in a header"),
    ],
)
def test_usage_errors_exit_2(
    argv: list[str], message: str, gateway: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    result = cli(capsys, [*argv, "--target", gateway.target])
    assert result.code == 2
    assert message in result.err
    assert gateway.fake.calls == []


@pytest.mark.parametrize(
    "argv",
    [
        ["providers", "add", "openai", "--name", "x", "--data", KEY],
        ["providers", "add", "openai", "--name", "x", "--data-json", "[1]"],
        ["keys", "create", "k", "--scope", "root"],
        ["keys", "create", "k"],
        ["keys", "create", "k", "--scope", "admin", "--expires-in", "soon"],
        ["keys", "create", "k", "--scope", "admin", "--expires-in", "1d", "--expires-at", "5"],
        ["audit", "--limit", "-1"],
        ["keys", "list", "--timeout", "0"],
        ["tenant"],
    ],
)
def test_bad_arguments_exit_2_without_echoing_values(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parser().parse_args([*argv, "--key", KEY])
    assert exit_info.value.code == 2
    assert KEY not in capsys.readouterr().err


def test_gateway_text_is_made_printable(gateway: Gateway, capsys: pytest.CaptureFixture[str]) -> None:
    gateway.fake.tenant.name = "evil\x1b[2Jname"
    result = cli(capsys, ["tenant", "show", *connect(gateway)])
    assert "\x1b" not in result.out and "evil?[2Jname" in result.out
