"""The Admin gRPC service (also REST through Envoy): thin proto ↔ AdminOps handlers."""

from __future__ import annotations

import asyncio
from typing import Any, TypeAlias

import grpc
import orjson
from google.api import httpbody_pb2
from google.protobuf import json_format

from modelyard.admin import AdminOps, ModelView, ProviderView
from modelyard.service.structs import dict_to_struct, struct_to_dict
from modelyard.store.records import AuditRecord, KeyRecord, TenantRecord
from modelyard.tenancy import caller
from modelyard.v1 import admin_pb2 as pb
from modelyard.v1 import admin_pb2_grpc

Context: TypeAlias = grpc.aio.ServicerContext
DELETED = pb.DeleteResponse(deleted=True)


def tenant_pb(record: TenantRecord) -> pb.Tenant:
    return pb.Tenant(
        id=record.id, name=record.name, secrets_manager=record.secrets_manager, created_at=record.created_at
    )


def provider_pb(view: ProviderView) -> pb.Provider:
    return pb.Provider(
        uuid=view.uuid,
        name=view.name,
        type=view.type,
        data=dict_to_struct(view.data),
        source=view.source,
        created_at=view.created_at,
    )


def model_pb(view: ModelView) -> pb.EnabledModel:
    return pb.EnabledModel(
        id=view.id,
        alias=view.alias,
        provider_uuid=view.provider_uuid,
        source=view.source,
        created_at=view.created_at,
    )


def key_pb(record: KeyRecord) -> pb.ApiKey:
    return pb.ApiKey(
        id=record.id,
        name=record.name,
        scopes=list(record.scopes),
        models=list(record.models),
        expires_at=record.expires_at,
        created_at=record.created_at,
        prefix=record.prefix,
    )


def audit_pb(record: AuditRecord) -> pb.AuditEntry:
    return pb.AuditEntry(
        sequence=record.sequence,
        at=record.at,
        key_id=record.key_id,
        action=record.action,
        target=record.target,
        result=record.result,
    )


def _data(request: Any) -> dict[str, Any]:
    return struct_to_dict(request.data) if request.HasField("data") else {}


def _optional(request: Any, name: str) -> str | None:
    return getattr(request, name) if request.HasField(name) else None


class AdminService(admin_pb2_grpc.AdminServicer):
    """Store writes are short, but they fsync: they run off the event loop."""

    def __init__(self, ops: AdminOps) -> None:
        self._ops = ops

    async def CreateTenant(
        self, request: pb.CreateTenantRequest, context: Context
    ) -> pb.CreateTenantResponse:
        tenant, key, secret = await asyncio.to_thread(
            self._ops.create_tenant, caller(), request.name, request.secrets_manager
        )
        return pb.CreateTenantResponse(tenant=tenant_pb(tenant), admin_key=key_pb(key), secret=secret)

    async def GetTenant(self, request: pb.GetTenantRequest, context: Context) -> pb.Tenant:
        return tenant_pb(await asyncio.to_thread(self._ops.get_tenant, caller()))

    async def ListTenants(self, request: pb.ListTenantsRequest, context: Context) -> pb.ListTenantsResponse:
        tenants = await asyncio.to_thread(self._ops.list_tenants, caller())
        return pb.ListTenantsResponse(tenants=[tenant_pb(t) for t in tenants])

    async def UpdateTenant(self, request: pb.UpdateTenantRequest, context: Context) -> pb.Tenant:
        updated = await asyncio.to_thread(
            self._ops.update_tenant,
            caller(),
            _optional(request, "name"),
            _optional(request, "secrets_manager"),
        )
        return tenant_pb(updated)

    async def DeleteTenant(self, request: pb.DeleteTenantRequest, context: Context) -> pb.DeleteResponse:
        await asyncio.to_thread(self._ops.delete_tenant, caller())
        return DELETED

    async def CreateProvider(self, request: pb.CreateProviderRequest, context: Context) -> pb.Provider:
        view = await asyncio.to_thread(
            self._ops.create_provider, caller(), request.type, request.name, _data(request)
        )
        return provider_pb(view)

    async def ListProviders(
        self, request: pb.ListProvidersRequest, context: Context
    ) -> pb.ListProvidersResponse:
        views = await asyncio.to_thread(self._ops.list_providers, caller())
        return pb.ListProvidersResponse(providers=[provider_pb(v) for v in views])

    async def GetProvider(self, request: pb.GetProviderRequest, context: Context) -> pb.Provider:
        return provider_pb(await asyncio.to_thread(self._ops.get_provider, caller(), request.uuid))

    async def UpdateProvider(self, request: pb.UpdateProviderRequest, context: Context) -> pb.Provider:
        view = await asyncio.to_thread(
            self._ops.update_provider,
            caller(),
            request.uuid,
            _optional(request, "name"),
            _data(request) if request.HasField("data") else None,
        )
        return provider_pb(view)

    async def DeleteProvider(self, request: pb.DeleteProviderRequest, context: Context) -> pb.DeleteResponse:
        await asyncio.to_thread(self._ops.delete_provider, caller(), request.uuid)
        return DELETED

    async def EnableModel(self, request: pb.EnableModelRequest, context: Context) -> pb.EnabledModel:
        view = await asyncio.to_thread(
            self._ops.enable_model, caller(), request.provider_uuid, request.id, request.alias
        )
        return model_pb(view)

    async def ListProviderModels(
        self, request: pb.ListProviderModelsRequest, context: Context
    ) -> pb.ListProviderModelsResponse:
        views = await asyncio.to_thread(self._ops.list_provider_models, caller(), request.provider_uuid)
        return pb.ListProviderModelsResponse(models=[model_pb(v) for v in views])

    async def DisableModel(self, request: pb.DisableModelRequest, context: Context) -> pb.DeleteResponse:
        await asyncio.to_thread(self._ops.disable_model, caller(), request.provider_uuid, request.id)
        return DELETED

    async def CreateKey(self, request: pb.CreateKeyRequest, context: Context) -> pb.CreateKeyResponse:
        key, secret = await asyncio.to_thread(
            self._ops.create_key,
            caller(),
            request.name,
            list(request.scopes),
            list(request.models),
            request.expires_at,
        )
        return pb.CreateKeyResponse(key=key_pb(key), secret=secret)

    async def ListKeys(self, request: pb.ListKeysRequest, context: Context) -> pb.ListKeysResponse:
        keys = await asyncio.to_thread(self._ops.list_keys, caller())
        return pb.ListKeysResponse(keys=[key_pb(k) for k in keys])

    async def DeleteKey(self, request: pb.DeleteKeyRequest, context: Context) -> pb.DeleteResponse:
        await asyncio.to_thread(self._ops.delete_key, caller(), request.id)
        return DELETED

    async def ListAudit(self, request: pb.ListAuditRequest, context: Context) -> pb.ListAuditResponse:
        entries = await asyncio.to_thread(self._ops.list_audit, caller(), request.limit, request.before)
        return pb.ListAuditResponse(entries=[audit_pb(e) for e in entries])


def _json_array(message: Any, field: str) -> httpbody_pb2.HttpBody:
    """The repeated field as a bare JSON array, printed like the transcoder prints messages."""
    items = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    ).get(field, [])
    return httpbody_pb2.HttpBody(content_type="application/json", data=orjson.dumps(items))


class AdminRestService(admin_pb2_grpc.AdminRestServicer):
    """IBM's REST list shapes, from the typed Admin handlers (admin traffic, not the hot path)."""

    def __init__(self, admin: AdminService) -> None:
        self._admin = admin

    async def ListTenants(self, request: pb.ListTenantsRequest, context: Context) -> httpbody_pb2.HttpBody:
        return _json_array(await self._admin.ListTenants(request, context), "tenants")

    async def ListProviders(
        self, request: pb.ListProvidersRequest, context: Context
    ) -> httpbody_pb2.HttpBody:
        return _json_array(await self._admin.ListProviders(request, context), "providers")

    async def ListProviderModels(
        self, request: pb.ListProviderModelsRequest, context: Context
    ) -> httpbody_pb2.HttpBody:
        return _json_array(await self._admin.ListProviderModels(request, context), "models")

    async def ListKeys(self, request: pb.ListKeysRequest, context: Context) -> httpbody_pb2.HttpBody:
        return _json_array(await self._admin.ListKeys(request, context), "keys")

    async def ListAudit(self, request: pb.ListAuditRequest, context: Context) -> httpbody_pb2.HttpBody:
        return _json_array(await self._admin.ListAudit(request, context), "entries")
