"""Administration of a tenant: the domain behind the Admin service (and its CLI).

Provider arguments are validated by the type's settings model and stored under their canonical
names; secret arguments are sealed (or kept as references) and only ever shown masked. Objects
declared in the config file belong to the `default` tenant and are read-only here. Every write is
audited: in the same transaction when it succeeds, on its own when it is refused.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar, cast

from pydantic import ValidationError

from modelyard.config import NAME_PATTERN, GatewayConfig
from modelyard.errors import ClientError, GatewayError, invalid_request
from modelyard.providers.base import ProviderSpec, argument_problems
from modelyard.providers.fields import argument_spellings
from modelyard.providers.registry import PROVIDER_TYPES
from modelyard.secrets.fields import secret_fields as secret_arguments
from modelyard.state import config_provider_id
from modelyard.store.base import Store, StoreError
from modelyard.store.records import (
    SECRET_MARKER,
    AuditRecord,
    KeyRecord,
    ModelRecord,
    ProviderChange,
    ProviderRecord,
    Scope,
    SecretRecord,
    TenantRecord,
)
from modelyard.tenancy import ALL_SCOPES, DEFAULT_TENANT_ID, Principal, key_digest

T = TypeVar("T")
_NAME = __import__("re").compile(NAME_PATTERN)
PLACEHOLDER = "********"
MAX_NAME = 128


class SecretSealer(Protocol):
    def seal_new(self, tenant_id: str, provider_id: str, value: str) -> SecretRecord: ...
    def masked(self, record: SecretRecord) -> str: ...


@dataclass(frozen=True)
class ProviderView:
    uuid: str
    name: str
    type: str
    data: dict[str, Any]
    source: str
    created_at: int


@dataclass(frozen=True)
class ModelView:
    id: str
    alias: str
    provider_uuid: str
    source: str
    created_at: int


MAX_ECHO = 80
MAX_AUDIT_TARGET = 256


def _short(text: str, limit: int = MAX_ECHO) -> str:
    """Client-supplied text as echoed in errors and audit entries: bounded."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _not_found(kind: str, ident: str) -> ClientError:
    return ClientError(f"No {kind} '{_short(ident)}' in this tenant.", status=404, code=f"{kind}_not_found")


def _read_only(kind: str, name: str) -> ClientError:
    return ClientError(
        f"The {kind} '{name}' is declared in the config file; change it there.",
        status=409,
        code="read_only_config",
    )


def _check_name(value: str, param: str) -> str:
    if not _NAME.match(value):
        raise invalid_request(
            f"Invalid '{param}': use 1-{MAX_NAME} letters, digits and . _ - / : (starting with a letter or digit).",
            param=param,
        )
    return value


def _store_error(error: StoreError) -> ClientError:
    status = {"conflict": 409, "not_found": 404, "too_large": 400}.get(error.code, 400)
    return ClientError(error.message, status=status, code=error.code)


class AdminOps:
    def __init__(
        self,
        store: Store,
        sealer: SecretSealer,
        config: GatewayConfig,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._sealer = sealer
        self._config = config
        self._clock = clock

    def use_config(self, config: GatewayConfig) -> None:
        """A reloaded config file: its providers are the default tenant's read-only ones from now on."""
        self._config = config

    def _now(self) -> int:
        return int(self._clock())

    def _audit(self, principal: Principal, action: str, target: str, result: str = "ok") -> AuditRecord:
        return AuditRecord(
            principal.tenant_id,
            principal.key_id,
            action,
            _short(target, MAX_AUDIT_TARGET),
            result,
            self._now(),
        )

    def _audited(
        self, principal: Principal, action: str, target: str, write: Callable[[AuditRecord], T]
    ) -> T:
        """Run a write with its audit record; a refused write is audited with its error code."""
        try:
            return write(self._audit(principal, action, target))
        except StoreError as error:
            self._store.record_audit(self._audit(principal, action, target, error.code))
            raise _store_error(error) from None
        except GatewayError as error:
            self._store.record_audit(self._audit(principal, action, target, error.code or error.type))
            raise

    # tenants

    def create_tenant(
        self, principal: Principal, name: str, secrets_manager: str
    ) -> tuple[TenantRecord, KeyRecord, str]:
        tenant_id = str(uuid.uuid4())

        def write(audit: AuditRecord) -> tuple[TenantRecord, KeyRecord, str]:
            principal.require_operator()
            tenant = TenantRecord(tenant_id, _check_name(name, "name"), secrets_manager, self._now())
            key, secret = self._new_key(tenant.id, f"{name}-admin", ("admin", "inference"), (), 0)
            self._store.create_tenant(tenant, key, audit)
            return tenant, key, secret

        return self._audited(principal, "tenant.create", tenant_id, write)

    def get_tenant(self, principal: Principal) -> TenantRecord:
        tenant = self._store.get_tenant(principal.tenant_id)
        if tenant is None:
            raise _not_found("tenant", principal.tenant_id)
        return tenant

    def list_tenants(self, principal: Principal) -> list[TenantRecord]:
        principal.require_operator()
        return self._store.list_tenants()

    def update_tenant(
        self, principal: Principal, name: str | None, secrets_manager: str | None
    ) -> TenantRecord:
        def write(audit: AuditRecord) -> TenantRecord:
            tenant = self.get_tenant(principal)
            if tenant.id == DEFAULT_TENANT_ID and name not in (None, tenant.name):
                raise ClientError("The default tenant cannot be renamed.", status=409, code="default_tenant")
            updated = replace(
                tenant,
                name=_check_name(name, "name") if name is not None else tenant.name,
                secrets_manager=secrets_manager if secrets_manager is not None else tenant.secrets_manager,
            )
            self._store.update_tenant(updated, audit)
            return updated

        return self._audited(principal, "tenant.update", principal.tenant_id, write)

    def delete_tenant(self, principal: Principal) -> None:
        def write(audit: AuditRecord) -> None:
            if principal.tenant_id == DEFAULT_TENANT_ID:
                raise ClientError("The default tenant cannot be deleted.", status=409, code="default_tenant")
            self._store.delete_tenant(principal.tenant_id, audit)

        self._audited(principal, "tenant.delete", principal.tenant_id, write)

    # providers

    def _spec(self, provider_type: str) -> ProviderSpec:
        spec = PROVIDER_TYPES.get(provider_type)
        if spec is None:
            known = ", ".join(sorted(PROVIDER_TYPES))
            raise invalid_request(f"Unknown provider type '{provider_type}' (known: {known}).", param="type")
        return spec

    def _validate(self, spec: ProviderSpec, data: dict[str, Any]) -> dict[str, Any]:
        """The canonical arguments the client gave (defaults left out), validated for the type."""
        try:
            settings = spec.settings.model_validate(data)
        except ValidationError as exc:
            raise invalid_request(
                f"Invalid data for provider type {spec.type_name}: {argument_problems(exc)}.", param="data"
            ) from None
        canonical = settings.model_dump(exclude_unset=True)
        for name in secret_arguments(spec.settings) & canonical.keys():
            value = getattr(settings, name)
            canonical[name] = value.get_secret_value() if value is not None else None
        return {k: v for k, v in canonical.items() if v is not None}

    def _seal(
        self, tenant_id: str, provider_id: str, spec: ProviderSpec, data: dict[str, Any], keep: dict[str, Any]
    ) -> tuple[dict[str, Any], list[SecretRecord]]:
        stored, sealed = dict(data), []
        for name in secret_arguments(spec.settings) & data.keys():
            if name in keep:
                stored[name] = keep[name]
                continue
            record = self._sealer.seal_new(tenant_id, provider_id, data[name])
            sealed.append(record)
            stored[name] = {SECRET_MARKER: record.id}
        return stored, sealed

    def create_provider(
        self, principal: Principal, provider_type: str, name: str, data: dict[str, Any]
    ) -> ProviderView:
        provider_id = str(uuid.uuid4())

        def write(audit: AuditRecord) -> ProviderView:
            spec = self._spec(provider_type)
            _check_name(name, "name")
            if principal.tenant_id == DEFAULT_TENANT_ID and any(
                p.name == name for p in self._config.providers
            ):
                raise ClientError(f"A provider named '{name}' already exists.", status=409, code="conflict")
            now = self._now()
            stored, sealed = self._seal(
                principal.tenant_id, provider_id, spec, self._validate(spec, data), {}
            )
            record = ProviderRecord(provider_id, principal.tenant_id, name, spec.type_name, stored, now, now)
            self._store.create_provider(record, sealed, audit)
            return self._view(record)

        return self._audited(principal, "providers.create", provider_id, write)

    def list_providers(self, principal: Principal) -> list[ProviderView]:
        views = self._config_provider_views() if principal.tenant_id == DEFAULT_TENANT_ID else []
        return views + [self._view(r) for r in self._store.list_providers(principal.tenant_id)]

    def get_provider(self, principal: Principal, provider_id: str) -> ProviderView:
        for view in self._config_provider_views() if principal.tenant_id == DEFAULT_TENANT_ID else []:
            if view.uuid == provider_id:
                return view
        return self._view(self._stored_provider(principal, provider_id))

    def _stored_provider(self, principal: Principal, provider_id: str) -> ProviderRecord:
        if principal.tenant_id == DEFAULT_TENANT_ID and self._config_name(provider_id):
            raise _read_only("provider", self._config_name(provider_id) or provider_id)
        record = self._store.get_provider(principal.tenant_id, provider_id)
        if record is None:
            raise _not_found("provider", provider_id)
        return record

    def update_provider(
        self, principal: Principal, provider_id: str, name: str | None, data: dict[str, Any] | None
    ) -> ProviderView:
        def write(audit: AuditRecord) -> ProviderView:
            record = self._stored_provider(principal, provider_id)
            self._check_not_owned(principal.tenant_id, record.id)
            spec = self._spec(record.type)
            secret_names = secret_arguments(spec.settings)
            current = {k: (PLACEHOLDER if k in secret_names else v) for k, v in record.data.items()}
            spellings = argument_spellings(spec.settings)
            changes = {spellings.get(k, k): v for k, v in (data or {}).items()}
            merged = {k: v for k, v in {**current, **changes}.items() if v is not None}
            validated = self._validate(spec, merged)
            keep = {k: record.data[k] for k in secret_names if k in record.data and k not in changes}
            stored, sealed = self._seal(principal.tenant_id, record.id, spec, validated, keep)
            removed = tuple(
                v[SECRET_MARKER]
                for k, v in record.data.items()
                if k in secret_names and k not in keep and isinstance(v, dict)
            )
            new_name = _check_name(name, "name") if name else record.name
            updated = replace(record, name=new_name, data=stored, updated_at=self._now())
            self._store.update_provider(ProviderChange(updated, tuple(sealed), removed), audit)
            return self._view(updated)

        return self._audited(principal, "providers.update", provider_id, write)

    def _check_not_owned(self, tenant_id: str, provider_id: str) -> None:
        for endpoint in self._store.list_endpoints(tenant_id):
            if any(entity.provider_id == provider_id for entity in endpoint.entities):
                raise ClientError(
                    f"The provider belongs to the endpoint '{endpoint.name}'; change or delete the endpoint.",
                    status=409,
                    code="owned_by_endpoint",
                )

    def delete_provider(self, principal: Principal, provider_id: str) -> None:
        def write(audit: AuditRecord) -> None:
            record = self._stored_provider(principal, provider_id)
            self._check_not_owned(principal.tenant_id, record.id)
            self._store.delete_provider(principal.tenant_id, record.id, audit)

        self._audited(principal, "providers.delete", provider_id, write)

    def _config_name(self, provider_id: str) -> str | None:
        return next(
            (p.name for p in self._config.providers if config_provider_id(p.name) == provider_id), None
        )

    def _config_provider_views(self) -> list[ProviderView]:
        views = []
        for entry in self._config.providers:
            spec = PROVIDER_TYPES[entry.type]
            data = self._validate(spec, entry.data)
            for name in secret_arguments(spec.settings) & data.keys():
                data[name] = _mask(str(data[name]))
            views.append(
                ProviderView(config_provider_id(entry.name), entry.name, entry.type, data, "config", 0)
            )
        return views

    def _view(self, record: ProviderRecord) -> ProviderView:
        refs = {
            k: v[SECRET_MARKER] for k, v in record.data.items() if isinstance(v, dict) and SECRET_MARKER in v
        }
        found = self._store.get_secrets(list(refs.values()))
        data = {
            **record.data,
            **{k: self._sealer.masked(found[i]) if i in found else "****" for k, i in refs.items()},
        }
        return ProviderView(record.id, record.name, record.type, data, "api", record.created_at)

    # models

    def enable_model(self, principal: Principal, provider_id: str, model_id: str, alias: str) -> ModelView:
        def write(audit: AuditRecord) -> ModelView:
            provider = self._stored_provider(principal, provider_id)
            if not model_id or len(model_id) > 256:
                raise invalid_request(
                    "Invalid 'id': give the provider's model id (1-256 characters).", param="id"
                )
            name = _check_name(alias or model_id, "alias")
            record = ModelRecord(
                str(uuid.uuid4()), principal.tenant_id, provider.id, model_id, name, self._now()
            )
            self._store.add_model(record, audit)
            return ModelView(model_id, name, provider.id, "api", record.created_at)

        return self._audited(principal, "models.enable", f"{provider_id}/{model_id}", write)

    def list_provider_models(self, principal: Principal, provider_id: str) -> list[ModelView]:
        config_name = self._config_name(provider_id) if principal.tenant_id == DEFAULT_TENANT_ID else None
        if config_name is not None:
            return [
                ModelView(m.id, m.name, provider_id, "config", 0)
                for m in self._config.models
                if m.provider == config_name
            ]
        provider = self._stored_provider(principal, provider_id)
        return [
            ModelView(m.model_id, m.alias, provider.id, "api", m.created_at)
            for m in self._store.list_models(principal.tenant_id, provider.id)
        ]

    def disable_model(self, principal: Principal, provider_id: str, id_or_alias: str) -> None:
        def write(audit: AuditRecord) -> None:
            provider = self._stored_provider(principal, provider_id)
            if not self._store.remove_model(principal.tenant_id, provider.id, id_or_alias, audit):
                raise _not_found("model", id_or_alias)

        self._audited(principal, "models.disable", f"{provider_id}/{id_or_alias}", write)

    # keys

    def _new_key(
        self, tenant_id: str, name: str, scopes: tuple[str, ...], models: tuple[str, ...], expires_at: int
    ) -> tuple[KeyRecord, str]:
        secret = "my-" + secrets.token_urlsafe(32)
        record = KeyRecord(
            str(uuid.uuid4()),
            tenant_id,
            name,
            key_digest(secret),
            secret[:8],
            cast(tuple[Scope, ...], scopes),
            self._now(),
            models,
            expires_at,
        )
        return record, secret

    def create_key(
        self, principal: Principal, name: str, scopes: list[str], models: list[str], expires_at: int
    ) -> tuple[KeyRecord, str]:
        def write(audit: AuditRecord) -> tuple[KeyRecord, str]:
            _check_name(name, "name")
            if not scopes or not set(scopes) <= ALL_SCOPES:
                raise invalid_request(
                    "Invalid 'scopes': give one or both of 'admin', 'inference'.", param="scopes"
                )
            if expires_at and expires_at <= self._now():
                raise invalid_request("Invalid 'expires_at': it is in the past.", param="expires_at")
            for alias in models:
                _check_name(alias, "models")
            unique_scopes = tuple(dict.fromkeys(scopes))
            key, secret = self._new_key(principal.tenant_id, name, unique_scopes, tuple(models), expires_at)
            self._store.create_key(key, replace(audit, target=key.id))
            return key, secret

        return self._audited(principal, "keys.create", name, write)

    def list_keys(self, principal: Principal) -> list[KeyRecord]:
        """The tenant's usable keys: revoked ones are gone for clients (the audit trail keeps them)."""
        return [key for key in self._store.list_keys(principal.tenant_id) if not key.revoked_at]

    def delete_key(self, principal: Principal, key_id: str) -> None:
        def revoke(audit: AuditRecord) -> None:
            if not self._store.revoke_key(principal.tenant_id, key_id, self._now(), audit):
                raise _not_found("key", key_id)

        self._audited(principal, "keys.delete", key_id, revoke)

    def list_audit(self, principal: Principal, limit: int, before: int) -> list[AuditRecord]:
        return self._store.list_audit(principal.tenant_id, min(max(limit, 1), 1000) if limit else 100, before)


def _mask(value: str) -> str:
    return "****" + value[-4:] if len(value) >= 8 else "****"
