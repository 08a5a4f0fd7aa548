"""The Endpoints gRPC service (also REST through Envoy): thin proto ↔ ServingAdmin handlers."""

from __future__ import annotations

import asyncio
from typing import Any, TypeAlias

import grpc

from modelyard.admin_endpoints import ServingAdmin
from modelyard.secrets.vault import MASK
from modelyard.service.admin import DELETED
from modelyard.service.structs import dict_to_struct, struct_to_dict
from modelyard.store.records import EndpointRecord, ScopedSecretRecord
from modelyard.tenancy import caller
from modelyard.v1 import admin_pb2, endpoints_pb2_grpc
from modelyard.v1 import endpoints_pb2 as pb

Context: TypeAlias = grpc.aio.ServicerContext
READY = pb.EndpointState(ready="READY", config_update="NOT_UPDATING")
CONFIG_FIELDS = frozenset(
    name for name in pb.ExternalModel.DESCRIPTOR.fields_by_name if name.endswith("_config")
)


def config_to_dict(config: pb.EndpointConfig) -> dict[str, Any]:
    """The request's config in Databricks' JSON shape, for the dialect parser."""
    entities = []
    for entity in config.served_entities:
        model: dict[str, Any] = {}
        if entity.HasField("external_model"):
            external = entity.external_model
            model = {"name": external.name, "provider": external.provider, "task": external.task}
            for field, value in external.ListFields():
                if field.name in CONFIG_FIELDS:
                    model[field.name] = struct_to_dict(value)
        entities.append({"name": entity.name, "external_model": model})
    result: dict[str, Any] = {"served_entities": entities}
    if config.traffic_config.routes:
        result["traffic_config"] = {
            "routes": [
                {"served_model_name": r.served_model_name, "traffic_percentage": r.traffic_percentage}
                for r in config.traffic_config.routes
            ]
        }
    return result


def _external_model(echo: dict[str, Any]) -> pb.ExternalModel:
    model = pb.ExternalModel(name=echo["name"], provider=echo["provider"], task=echo["task"])
    for key, value in echo.items():
        if key in CONFIG_FIELDS:
            getattr(model, key).CopyFrom(dict_to_struct(value))
    return model


def endpoint_pb(record: EndpointRecord) -> pb.Endpoint:
    entities = [
        pb.ServedEntity(name=entity.name, external_model=_external_model(entity.external_model))
        for entity in record.entities
    ]
    routes = [
        pb.TrafficRoute(served_model_name=name, traffic_percentage=share) for name, share in record.routes
    ]
    config = pb.EndpointConfig(served_entities=entities, traffic_config=pb.TrafficConfig(routes=routes))
    return pb.Endpoint(
        name=record.name,
        config=config,
        state=READY,
        created_at=record.created_at,
        updated_at=record.updated_at,
    )


def secret_pb(record: ScopedSecretRecord) -> pb.SecretMetadata:
    masked = MASK + record.hint
    return pb.SecretMetadata(
        scope=record.scope, key=record.key, masked_value=masked, updated_at=record.updated_at
    )


class EndpointsService(endpoints_pb2_grpc.EndpointsServicer):
    """Store writes fsync: they run off the event loop."""

    def __init__(self, ops: ServingAdmin) -> None:
        self._ops = ops

    async def CreateEndpoint(self, request: pb.CreateEndpointRequest, context: Context) -> pb.Endpoint:
        record = await asyncio.to_thread(
            self._ops.create_endpoint, caller(), request.name, config_to_dict(request.config)
        )
        return endpoint_pb(record)

    async def ListEndpoints(
        self, request: pb.ListEndpointsRequest, context: Context
    ) -> pb.ListEndpointsResponse:
        records = await asyncio.to_thread(self._ops.list_endpoints, caller())
        return pb.ListEndpointsResponse(endpoints=[endpoint_pb(r) for r in records])

    async def GetEndpoint(self, request: pb.GetEndpointRequest, context: Context) -> pb.Endpoint:
        return endpoint_pb(await asyncio.to_thread(self._ops.get_endpoint, caller(), request.name))

    async def UpdateEndpointConfig(
        self, request: pb.UpdateEndpointConfigRequest, context: Context
    ) -> pb.Endpoint:
        record = await asyncio.to_thread(
            self._ops.update_endpoint_config, caller(), request.name, config_to_dict(request.config)
        )
        return endpoint_pb(record)

    async def DeleteEndpoint(
        self, request: pb.DeleteEndpointRequest, context: Context
    ) -> admin_pb2.DeleteResponse:
        await asyncio.to_thread(self._ops.delete_endpoint, caller(), request.name)
        return DELETED

    async def PutSecret(self, request: pb.PutSecretRequest, context: Context) -> pb.SecretMetadata:
        record = await asyncio.to_thread(
            self._ops.put_secret, caller(), request.scope, request.key, request.string_value
        )
        return secret_pb(record)

    async def ListSecrets(self, request: pb.ListSecretsRequest, context: Context) -> pb.ListSecretsResponse:
        records = await asyncio.to_thread(self._ops.list_secrets, caller(), request.scope)
        return pb.ListSecretsResponse(secrets=[secret_pb(r) for r in records])

    async def DeleteSecret(
        self, request: pb.DeleteSecretRequest, context: Context
    ) -> admin_pb2.DeleteResponse:
        await asyncio.to_thread(self._ops.delete_secret, caller(), request.scope, request.key)
        return DELETED
