"""The admin subcommands' handlers: build the request, call the Admin service, print the answer.

Loaded only when one of them runs (see modelyard.admin_cli), so other commands do not import grpc.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import grpc
from google.protobuf import struct_pb2

from modelyard.admin_cli_output import Output, listing, struct_fields, timestamp
from modelyard.admin_cli_session import Command, Session, UsageError
from modelyard.admin_cli_session import run as run_command
from modelyard.metering.usage_query import GROUPS
from modelyard.v1 import admin_pb2, usage_pb2, usage_pb2_grpc

UINT32_MAX = 2**32 - 1

TENANT_COLUMNS = ("ID", "NAME", "SECRETS_MANAGER", "CREATED")
PROVIDER_COLUMNS = ("UUID", "NAME", "TYPE", "SOURCE", "CREATED")
MODEL_COLUMNS = ("ALIAS", "ID", "PROVIDER_UUID", "SOURCE", "CREATED")
KEY_COLUMNS = ("ID", "NAME", "SCOPES", "MODELS", "PREFIX", "EXPIRES", "CREATED")
AUDIT_COLUMNS = ("SEQ", "AT", "KEY_ID", "ACTION", "TARGET", "RESULT")


# Rows of each message, for tables (one row) and single records (name, value).


def tenant_row(tenant: admin_pb2.Tenant) -> list[str]:
    return [tenant.id, tenant.name, tenant.secrets_manager, timestamp(tenant.created_at)]


def provider_row(provider: admin_pb2.Provider) -> list[str]:
    return [provider.uuid, provider.name, provider.type, provider.source, timestamp(provider.created_at)]


def model_row(model: admin_pb2.EnabledModel) -> list[str]:
    return [model.alias, model.id, model.provider_uuid, model.source, timestamp(model.created_at)]


def key_row(key: admin_pb2.ApiKey) -> list[str]:
    return [
        key.id,
        key.name,
        listing(key.scopes),
        listing(key.models, "*"),
        key.prefix,
        timestamp(key.expires_at, "never"),
        timestamp(key.created_at),
    ]


def audit_row(entry: admin_pb2.AuditEntry) -> list[str]:
    return [str(entry.sequence), timestamp(entry.at), entry.key_id, entry.action, entry.target, entry.result]


def fields(columns: tuple[str, ...], row: list[str], prefix: str = "") -> list[tuple[str, str]]:
    return [
        (prefix + column.lower().replace("_", " "), value) for column, value in zip(columns, row, strict=True)
    ]


def provider_fields(provider: admin_pb2.Provider) -> list[tuple[str, str]]:
    return fields(PROVIDER_COLUMNS, provider_row(provider)) + struct_fields("data.", provider.data)


# tenant


def tenant_create(session: Session, args: argparse.Namespace) -> None:
    request = admin_pb2.CreateTenantRequest(name=args.name, secrets_manager=args.secrets_manager or "")
    response: admin_pb2.CreateTenantResponse = session.call(session.admin.CreateTenant, request)
    tenant_fields = fields(TENANT_COLUMNS, tenant_row(response.tenant), "tenant ")
    key_fields = fields(KEY_COLUMNS, key_row(response.admin_key), "admin key ")
    session.out.record(response, [*tenant_fields, *key_fields, ("admin key secret", response.secret)])
    Output.warn_shown_once()


def tenant_show(session: Session, args: argparse.Namespace) -> None:
    tenant: admin_pb2.Tenant = session.call(session.admin.GetTenant, admin_pb2.GetTenantRequest())
    session.out.record(tenant, fields(TENANT_COLUMNS, tenant_row(tenant)))


def tenant_list(session: Session, args: argparse.Namespace) -> None:
    response: admin_pb2.ListTenantsResponse = session.call(
        session.admin.ListTenants, admin_pb2.ListTenantsRequest()
    )
    session.out.records(response.tenants, TENANT_COLUMNS, tenant_row)


def tenant_update(session: Session, args: argparse.Namespace) -> None:
    if args.name is None and args.secrets_manager is None:
        raise UsageError("nothing to update: pass --name and/or --secrets-manager")
    request = admin_pb2.UpdateTenantRequest(name=args.name, secrets_manager=args.secrets_manager)
    tenant: admin_pb2.Tenant = session.call(session.admin.UpdateTenant, request)
    session.out.record(tenant, fields(TENANT_COLUMNS, tenant_row(tenant)))


def tenant_delete(session: Session, args: argparse.Namespace) -> None:
    if not args.yes:
        raise UsageError("deleting a tenant deletes its providers, models and keys: confirm with --yes")
    response: admin_pb2.DeleteResponse = session.call(
        session.admin.DeleteTenant, admin_pb2.DeleteTenantRequest()
    )
    session.out.deleted(response, response.deleted, f"tenant {session.connection.tenant or ''}".strip())


# providers


def provider_data(args: argparse.Namespace) -> dict[str, Any]:
    """--data-json first, then each --data KEY=VALUE (a string) over it."""
    data: dict[str, Any] = dict(args.data_json or {})
    data.update(args.data or [])
    return data


def providers_add(session: Session, args: argparse.Namespace) -> None:
    data = struct_pb2.Struct()
    data.update(provider_data(args))
    request = admin_pb2.CreateProviderRequest(type=args.type, name=args.name, data=data)
    provider: admin_pb2.Provider = session.call(session.admin.CreateProvider, request)
    session.out.record(provider, provider_fields(provider))


def providers_list(session: Session, args: argparse.Namespace) -> None:
    response: admin_pb2.ListProvidersResponse = session.call(
        session.admin.ListProviders, admin_pb2.ListProvidersRequest()
    )
    session.out.records(response.providers, PROVIDER_COLUMNS, provider_row)


def providers_show(session: Session, args: argparse.Namespace) -> None:
    request = admin_pb2.GetProviderRequest(uuid=args.uuid)
    provider: admin_pb2.Provider = session.call(session.admin.GetProvider, request)
    session.out.record(provider, provider_fields(provider))


def providers_update(session: Session, args: argparse.Namespace) -> None:
    data = provider_data(args)
    if args.name is None and not data:
        raise UsageError("nothing to update: pass --name, --data or --data-json")
    request = admin_pb2.UpdateProviderRequest(uuid=args.uuid, name=args.name)
    if data:
        request.data.update(data)
    provider: admin_pb2.Provider = session.call(session.admin.UpdateProvider, request)
    session.out.record(provider, provider_fields(provider))


def providers_delete(session: Session, args: argparse.Namespace) -> None:
    request = admin_pb2.DeleteProviderRequest(uuid=args.uuid)
    response: admin_pb2.DeleteResponse = session.call(session.admin.DeleteProvider, request)
    session.out.deleted(response, response.deleted, f"provider {args.uuid}")


# models


def models_add(session: Session, args: argparse.Namespace) -> None:
    request = admin_pb2.EnableModelRequest(
        provider_uuid=args.provider_uuid, id=args.model_id, alias=args.alias or ""
    )
    model: admin_pb2.EnabledModel = session.call(session.admin.EnableModel, request)
    session.out.record(model, fields(MODEL_COLUMNS, model_row(model)))


def provider_models(session: Session, provider_uuid: str) -> list[admin_pb2.EnabledModel]:
    request = admin_pb2.ListProviderModelsRequest(provider_uuid=provider_uuid)
    response: admin_pb2.ListProviderModelsResponse = session.call(session.admin.ListProviderModels, request)
    return list(response.models)


def all_models(session: Session) -> list[admin_pb2.EnabledModel]:
    """Every provider's models; a provider deleted meanwhile is skipped."""
    providers: admin_pb2.ListProvidersResponse = session.call(
        session.admin.ListProviders, admin_pb2.ListProvidersRequest()
    )
    models: list[admin_pb2.EnabledModel] = []
    for provider in providers.providers:
        try:
            models += provider_models(session, provider.uuid)
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise
    return models


def models_list(session: Session, args: argparse.Namespace) -> None:
    models = provider_models(session, args.provider_uuid) if args.provider_uuid else all_models(session)
    session.out.records(models, MODEL_COLUMNS, model_row)


def models_remove(session: Session, args: argparse.Namespace) -> None:
    request = admin_pb2.DisableModelRequest(provider_uuid=args.provider_uuid, id=args.model)
    response: admin_pb2.DeleteResponse = session.call(session.admin.DisableModel, request)
    session.out.deleted(response, response.deleted, f"model {args.model} of provider {args.provider_uuid}")


# keys


def expires_at(args: argparse.Namespace) -> int:
    if args.expires_in is None:
        return int(args.expires_at or 0)
    when = int(time.time()) + int(args.expires_in)
    if when > UINT32_MAX:
        raise UsageError("--expires-in is too far in the future")
    return when


def keys_create(session: Session, args: argparse.Namespace) -> None:
    request = admin_pb2.CreateKeyRequest(
        name=args.name, scopes=args.scopes, models=args.models or [], expires_at=expires_at(args)
    )
    response: admin_pb2.CreateKeyResponse = session.call(session.admin.CreateKey, request)
    session.out.record(response, [*fields(KEY_COLUMNS, key_row(response.key)), ("secret", response.secret)])
    Output.warn_shown_once()


def keys_list(session: Session, args: argparse.Namespace) -> None:
    response: admin_pb2.ListKeysResponse = session.call(session.admin.ListKeys, admin_pb2.ListKeysRequest())
    session.out.records(response.keys, KEY_COLUMNS, key_row)


def keys_delete(session: Session, args: argparse.Namespace) -> None:
    response: admin_pb2.DeleteResponse = session.call(
        session.admin.DeleteKey, admin_pb2.DeleteKeyRequest(id=args.id)
    )
    session.out.deleted(response, response.deleted, f"key {args.id}")


# audit


def audit(session: Session, args: argparse.Namespace) -> None:
    request = admin_pb2.ListAuditRequest(limit=args.limit or 0, before=args.before or 0)
    response: admin_pb2.ListAuditResponse = session.call(session.admin.ListAudit, request)
    session.out.records(response.entries, AUDIT_COLUMNS, audit_row)


# usage

USAGE_COLUMNS = ("REQUESTS", "ERRORS", "PROMPT", "COMPLETION", "CACHED", "COST_USD", "MEAN_MS")


def usage(session: Session, args: argparse.Namespace) -> None:
    group_by = [part.strip() for part in args.group_by.split(",") if part.strip()]
    start = int(time.time()) - args.since if args.since else 0
    request = usage_pb2.GetUsageRequest(
        group_by=group_by, bucket=args.bucket, start=max(start, 0), all_tenants=args.all_tenants
    )
    report: usage_pb2.UsageReport = session.call(
        usage_pb2_grpc.MeteringStub(session.channel).GetUsage, request
    )
    columns = ("START", *(name.upper() for name in group_by), *USAGE_COLUMNS)

    def row(bucket: usage_pb2.UsageBucket) -> list[str]:
        groups = [getattr(bucket, GROUPS[name]) or "-" for name in group_by if name in GROUPS]
        counts = [
            bucket.requests,
            bucket.errors,
            bucket.prompt_tokens,
            bucket.completion_tokens,
            bucket.cached_tokens,
        ]
        return [
            timestamp(bucket.start, "all"),
            *groups,
            *(str(n) for n in counts),
            f"{bucket.cost_usd:.6f}",
            f"{bucket.mean_latency_ms:.1f}",
        ]

    session.out.records(report.buckets, columns, row)
    if report.dropped_records and not session.out.as_json:
        print(f"note: {report.dropped_records} usage records were dropped in this period; totals are short")


COMMANDS: dict[str, Command] = {
    "tenant create": tenant_create,
    "tenant show": tenant_show,
    "tenant list": tenant_list,
    "tenant update": tenant_update,
    "tenant delete": tenant_delete,
    "providers add": providers_add,
    "providers list": providers_list,
    "providers show": providers_show,
    "providers update": providers_update,
    "providers delete": providers_delete,
    "models add": models_add,
    "models list": models_list,
    "models remove": models_remove,
    "keys create": keys_create,
    "keys list": keys_list,
    "keys delete": keys_delete,
    "audit": audit,
    "usage": usage,
}


def run(name: str, args: argparse.Namespace) -> int:
    return run_command(COMMANDS[name], args)
