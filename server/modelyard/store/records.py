"""The rows of the store, as immutable records. Secrets never appear in plaintext here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

SecretKind = Literal["sealed", "reference"]
Scope = Literal["admin", "inference"]
SECRET_MARKER = "$secret"
"""Provider data stores a secret argument as {"$secret": "<secret id>"}."""


@dataclass(frozen=True)
class Sealed:
    """AES-256-GCM envelope: the value under a random data key, the data key under a KEK."""

    ciphertext: bytes
    nonce: bytes
    wrapped_key: bytes
    key_nonce: bytes
    kek_version: int


@dataclass(frozen=True)
class TenantRecord:
    id: str
    name: str
    secrets_manager: str
    created_at: int


@dataclass(frozen=True)
class SecretRecord:
    id: str
    tenant_id: str
    provider_id: str
    kind: SecretKind
    sealed: Sealed | None = None
    reference: str | None = None
    hint: str = ""
    """What reads may show: the last four characters of a sealed value, or the reference itself."""


@dataclass(frozen=True)
class ProviderRecord:
    id: str
    tenant_id: str
    name: str
    type: str
    data: dict[str, Any]
    """Arguments; secret ones replaced by {"$secret": id}."""
    created_at: int
    updated_at: int


@dataclass(frozen=True)
class ModelRecord:
    id: str
    tenant_id: str
    provider_id: str
    model_id: str
    alias: str
    created_at: int
    weight: int = 1


@dataclass(frozen=True)
class KeyRecord:
    id: str
    tenant_id: str
    name: str
    key_hash: str
    prefix: str
    scopes: tuple[Scope, ...]
    created_at: int
    models: tuple[str, ...] = ()
    expires_at: int = 0
    revoked_at: int = 0


@dataclass(frozen=True)
class AuditRecord:
    tenant_id: str
    key_id: str
    action: str
    target: str
    result: str
    at: int
    sequence: int = 0
    """Assigned by the store."""


@dataclass(frozen=True)
class ProviderChange:
    """An update of a provider: the new row, secrets to add, secret ids to delete."""

    provider: ProviderRecord
    new_secrets: tuple[SecretRecord, ...] = field(default_factory=tuple)
    removed_secret_ids: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class ScopedSecretRecord:
    """A secret of a named scope, for `{{secrets/scope/key}}` references; always sealed."""

    id: str
    tenant_id: str
    scope: str
    key: str
    sealed: Sealed
    hint: str
    updated_at: int


@dataclass(frozen=True)
class ServedEntityRecord:
    """One served entity of an endpoint: the provider it owns and the model it calls there."""

    name: str
    provider_id: str
    model_id: str
    task: str
    """chat, completions or embeddings."""
    defaults: dict[str, Any] = field(default_factory=dict)
    external_model: dict[str, Any] = field(default_factory=dict)
    """The entity's `external_model` as given, credentials masked: what reads show."""


@dataclass(frozen=True)
class EndpointRecord:
    tenant_id: str
    name: str
    entities: tuple[ServedEntityRecord, ...]
    routes: tuple[tuple[str, int], ...]
    """(served entity name, traffic percentage), summing to 100."""
    created_at: int
    updated_at: int
