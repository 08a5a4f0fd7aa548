"""Serving endpoints (Databricks' config) and secret scopes: the domain behind the Endpoints service.

An endpoint owns one provider per served entity, created with it and deleted with it (or when a
new config replaces it), so its credentials live and die with the endpoint. Credentials given in
plaintext are sealed like any provider secret; `{{secrets/scope/key}}` references are stored as
references and resolved by the vault from the tenant's secret scopes on each (re)build of the
tenant's routes, so putting a new value into the scope applies without touching the endpoint.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from modelyard.admin import AdminOps, SecretSealer, _not_found, _short
from modelyard.dialects.databricks import ENDPOINT_NAME, ServedModel, parse_endpoint_config
from modelyard.dialects.external import TASKS, DialectError
from modelyard.errors import ClientError, invalid_request
from modelyard.providers.registry import PROVIDER_TYPES
from modelyard.secrets.fields import secret_fields
from modelyard.secrets.references import SCOPE_NAME, is_reference
from modelyard.secrets.vault import MASK, hint_for
from modelyard.store.records import (
    AuditRecord,
    EndpointRecord,
    ProviderRecord,
    ScopedSecretRecord,
    SecretRecord,
    ServedEntityRecord,
)
from modelyard.tenancy import DEFAULT_TENANT_ID, Principal

MAX_SECRET_BYTES = 64 * 1024


class ScopedSealer(SecretSealer, Protocol):
    def seal_scoped(
        self, tenant_id: str, scope: str, key: str, value: str, now: int
    ) -> ScopedSecretRecord: ...


@dataclass(frozen=True)
class OwnedProvider:
    record: ProviderRecord
    secrets: list[SecretRecord]
    entity: ServedEntityRecord


def _masked(value: str) -> str:
    return MASK + hint_for(value)


def _echo(served: ServedModel, secret_values: set[str]) -> dict[str, Any]:
    """The entity's external_model as reads show it: every credential masked, references kept."""
    config = {
        key: _masked(value)
        if isinstance(value, str)
        and (value in secret_values or key.endswith("_plaintext"))
        and not is_reference(value)
        else value
        for key, value in served.config.items()
    }
    return {
        "name": served.model_name,
        "provider": served.provider,
        "task": next(name for name, task in TASKS.items() if task == served.task),
        f"{served.provider.replace('-', '_')}_config": config,
    }


def _check_scope_name(value: str, param: str) -> str:
    if not SCOPE_NAME.fullmatch(value):
        raise invalid_request(f"Invalid '{param}': use 1-128 letters, digits, '.', '_' and '-'.", param=param)
    return value


class ServingAdmin(AdminOps):
    """AdminOps with serving endpoints and secret scopes (the same store, vault and audit trail)."""

    _sealer: ScopedSealer

    # secret scopes

    def put_secret(self, principal: Principal, scope: str, key: str, value: str) -> ScopedSecretRecord:
        def write(audit: AuditRecord) -> ScopedSecretRecord:
            _check_scope_name(scope, "scope")
            _check_scope_name(key, "key")
            if not value or len(value.encode()) > MAX_SECRET_BYTES:
                raise invalid_request(
                    f"Invalid 'string_value': give 1 byte to {MAX_SECRET_BYTES // 1024} KiB.",
                    param="string_value",
                )
            record = self._sealer.seal_scoped(principal.tenant_id, scope, key, value, self._now())
            self._store.put_scoped_secret(record, audit)
            return record

        return self._audited(principal, "secrets.put", f"{_short(scope)}/{_short(key)}", write)

    def list_secrets(self, principal: Principal, scope: str) -> list[ScopedSecretRecord]:
        found = self._store.list_scoped_secrets(principal.tenant_id)
        return [secret for secret in found if not scope or secret.scope == scope]

    def delete_secret(self, principal: Principal, scope: str, key: str) -> None:
        def write(audit: AuditRecord) -> None:
            if not self._store.delete_scoped_secret(principal.tenant_id, scope, key, audit):
                raise _not_found("secret", f"{scope}/{key}")

        self._audited(principal, "secrets.delete", f"{_short(scope)}/{_short(key)}", write)

    # endpoints

    def create_endpoint(self, principal: Principal, name: str, config: Any) -> EndpointRecord:
        def write(audit: AuditRecord) -> EndpointRecord:
            self._check_endpoint_name(principal, name)
            now = self._now()
            record, owned = self._build(principal.tenant_id, name, config, now, now)
            self._store.put_endpoint(record, [(o.record, o.secrets) for o in owned], audit, replace=False)
            return record

        return self._audited(principal, "endpoints.create", name, write)

    def update_endpoint_config(self, principal: Principal, name: str, config: Any) -> EndpointRecord:
        def write(audit: AuditRecord) -> EndpointRecord:
            current = self.get_endpoint(principal, name)
            record, owned = self._build(principal.tenant_id, name, config, current.created_at, self._now())
            self._store.put_endpoint(record, [(o.record, o.secrets) for o in owned], audit, replace=True)
            return record

        return self._audited(principal, "endpoints.update", name, write)

    def get_endpoint(self, principal: Principal, name: str) -> EndpointRecord:
        found = self._store.get_endpoint(principal.tenant_id, name)
        if found is None:
            raise _not_found("endpoint", name)
        return found

    def list_endpoints(self, principal: Principal) -> list[EndpointRecord]:
        return self._store.list_endpoints(principal.tenant_id)

    def delete_endpoint(self, principal: Principal, name: str) -> None:
        def write(audit: AuditRecord) -> None:
            if not self._store.delete_endpoint(principal.tenant_id, name, audit):
                raise _not_found("endpoint", name)

        self._audited(principal, "endpoints.delete", name, write)

    def _check_endpoint_name(self, principal: Principal, name: str) -> None:
        if not ENDPOINT_NAME.fullmatch(name):
            raise invalid_request("Invalid 'name': use 1-63 letters, digits, '-' and '_'.", param="name")
        taken = {model.alias for model in self._store.list_models(principal.tenant_id)}
        if principal.tenant_id == DEFAULT_TENANT_ID:
            taken |= {model.name for model in self._config.models}
            taken |= {endpoint.name for endpoint in self._config.endpoints}
            taken |= {route.name for route in self._config.routes}
        if name in taken:
            raise ClientError(
                f"The name '{name}' is already a model alias, endpoint or route of this tenant.",
                status=409,
                code="conflict",
            )

    def _build(
        self, tenant_id: str, name: str, config: Any, created: int, now: int
    ) -> tuple[EndpointRecord, list[OwnedProvider]]:
        try:
            spec = parse_endpoint_config(config)
        except DialectError as exc:
            raise invalid_request(f"Invalid endpoint config: {exc}.", param="config") from None
        owned = [self._owned_provider(tenant_id, name, served, now) for served in spec.entities]
        record = EndpointRecord(tenant_id, name, tuple(o.entity for o in owned), spec.routes, created, now)
        return record, owned

    def _owned_provider(self, tenant_id: str, endpoint: str, served: ServedModel, now: int) -> OwnedProvider:
        provider_id = str(uuid.uuid4())
        spec = PROVIDER_TYPES[served.translated.type_name]
        data = self._validate(spec, served.translated.data)
        secret_values = {str(data[n]) for n in secret_fields(spec.settings) & data.keys()}
        stored, sealed = self._seal(tenant_id, provider_id, spec, data, {})
        record = ProviderRecord(
            provider_id, tenant_id, f"{endpoint}/{served.name}", spec.type_name, stored, now, now
        )
        entity = ServedEntityRecord(
            served.name,
            provider_id,
            served.upstream_model,
            served.task,
            dict(served.translated.defaults),
            _echo(served, secret_values),
        )
        return OwnedProvider(record, sealed, entity)
