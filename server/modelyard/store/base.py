"""The store interface. SQLite implements it today; a PostgreSQL store can follow the same contract.

Every write method is one atomic transaction that also appends its audit record, so an admin
change and its audit entry are committed together or not at all. Lookups scoped by tenant return
None (never another tenant's row) for ids of other tenants.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from modelyard.store.records import (
    AuditRecord,
    EndpointRecord,
    KeyRecord,
    ModelRecord,
    ProviderChange,
    ProviderRecord,
    ScopedSecretRecord,
    Sealed,
    SecretRecord,
    TenantRecord,
)


class StoreError(Exception):
    """A write the store refused; `code` says why ("conflict", "not_found", "too_large")."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Store(Protocol):
    def version(self) -> int:
        """Changes whenever any process commits a write: callers refresh their caches on change."""
        ...

    def close(self) -> None: ...

    # tenants
    def create_tenant(
        self, tenant: TenantRecord, first_key: KeyRecord | None, audit: AuditRecord
    ) -> None: ...
    def update_tenant(self, tenant: TenantRecord, audit: AuditRecord) -> None: ...
    def delete_tenant(self, tenant_id: str, audit: AuditRecord) -> bool: ...
    def get_tenant(self, tenant_id: str) -> TenantRecord | None: ...
    def tenant_by_name(self, name: str) -> TenantRecord | None: ...
    def list_tenants(self) -> list[TenantRecord]: ...

    # providers and their secrets
    def create_provider(
        self, provider: ProviderRecord, secrets: Sequence[SecretRecord], audit: AuditRecord
    ) -> None: ...
    def update_provider(self, change: ProviderChange, audit: AuditRecord) -> None: ...
    def delete_provider(self, tenant_id: str, provider_id: str, audit: AuditRecord) -> bool:
        """Deletes the provider with its secrets and models."""
        ...

    def get_provider(self, tenant_id: str, provider_id: str) -> ProviderRecord | None: ...
    def list_providers(self, tenant_id: str | None = None) -> list[ProviderRecord]:
        """One tenant's providers, or every tenant's when tenant_id is None."""
        ...

    def get_secrets(self, secret_ids: Sequence[str]) -> dict[str, SecretRecord]: ...
    def list_sealed_secrets(self, below_kek_version: int, limit: int) -> list[SecretRecord]:
        """Sealed secrets whose KEK version is older than `below_kek_version` (for rotation)."""
        ...

    def rewrap_secrets(self, sealed: dict[str, Sealed]) -> None:
        """Replace the envelopes of these secrets (same plaintext, new data-key wrapping)."""
        ...

    def kek_version(self) -> int:
        """The KEK version new secrets are sealed with (1 on a new store)."""
        ...

    def set_kek_version(self, version: int) -> None: ...

    # models
    def add_model(self, model: ModelRecord, audit: AuditRecord) -> None: ...
    def remove_model(
        self, tenant_id: str, provider_id: str, id_or_alias: str, audit: AuditRecord
    ) -> bool: ...
    def list_models(
        self, tenant_id: str | None = None, provider_id: str | None = None
    ) -> list[ModelRecord]: ...

    # API keys
    def create_key(self, key: KeyRecord, audit: AuditRecord) -> None: ...
    def revoke_key(self, tenant_id: str, key_id: str, revoked_at: int, audit: AuditRecord) -> bool: ...
    def key_by_hash(self, key_hash: str) -> KeyRecord | None: ...
    def list_keys(self, tenant_id: str) -> list[KeyRecord]: ...

    # audit
    def record_audit(self, audit: AuditRecord) -> None:
        """For refused or failed writes, which change nothing else."""
        ...

    def list_audit(self, tenant_id: str, limit: int, before: int = 0) -> list[AuditRecord]: ...

    # secret scopes, for `{{secrets/scope/key}}` references
    def put_scoped_secret(self, secret: ScopedSecretRecord, audit: AuditRecord) -> None:
        """Creates the secret or replaces the one with the same scope and key."""
        ...

    def delete_scoped_secret(self, tenant_id: str, scope: str, key: str, audit: AuditRecord) -> bool: ...
    def get_scoped_secret(self, tenant_id: str, scope: str, key: str) -> ScopedSecretRecord | None: ...
    def list_scoped_secrets(self, tenant_id: str) -> list[ScopedSecretRecord]: ...

    # serving endpoints and the providers they own
    def put_endpoint(
        self,
        endpoint: EndpointRecord,
        providers: Sequence[tuple[ProviderRecord, Sequence[SecretRecord]]],
        audit: AuditRecord,
        replace: bool,
    ) -> None: ...
    def delete_endpoint(self, tenant_id: str, name: str, audit: AuditRecord) -> bool: ...
    def get_endpoint(self, tenant_id: str, name: str) -> EndpointRecord | None: ...
    def list_endpoints(self, tenant_id: str) -> list[EndpointRecord]: ...
