"""Rows of the SQLite store: size checks before a write, and records to and from column tuples."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, cast

from modelyard.store.base import StoreError
from modelyard.store.records import (
    SECRET_MARKER,
    AuditRecord,
    EndpointRecord,
    KeyRecord,
    ModelRecord,
    ProviderRecord,
    Scope,
    ScopedSecretRecord,
    Sealed,
    SecretKind,
    SecretRecord,
    ServedEntityRecord,
    TenantRecord,
)

MAX_NAME = 256
"""Characters in ids, names, types, aliases, model ids, key prefixes and hashes, hints."""
MAX_TEXT = 2048
"""Characters in a secrets-manager URL, a secret reference, an audit target."""
MAX_BYTES = 1 << 20
"""Bytes of JSON provider data, of a key's model list, and of each part of a sealed envelope."""
_INT64 = (-(1 << 63), (1 << 63) - 1)

Row = tuple[Any, ...]
ErrorMap = Callable[[sqlite3.IntegrityError], StoreError]

TENANT_COLUMNS = "id, name, secrets_manager, created_at"
PROVIDER_COLUMNS = "id, tenant_id, name, type, data, created_at, updated_at"
SECRET_COLUMNS = "id, tenant_id, provider_id, kind, ciphertext, nonce, wrapped_key, key_nonce, kek_version, reference, hint"
MODEL_COLUMNS = "id, tenant_id, provider_id, model_id, alias, weight, created_at"
KEY_COLUMNS = "id, tenant_id, name, key_hash, prefix, scopes, models, created_at, expires_at, revoked_at"
AUDIT_COLUMNS = "sequence, tenant_id, key_id, action, target, result, at"
SCOPED_SECRET_COLUMNS = (
    "id, tenant_id, scope, key, ciphertext, nonce, wrapped_key, key_nonce, kek_version, hint, updated_at"
)
ENDPOINT_COLUMNS = "tenant_id, name, data, created_at, updated_at"

INSERT_AUDIT = "INSERT INTO audit (tenant_id, key_id, action, target, result, at) VALUES (?, ?, ?, ?, ?, ?)"
INSERT_PROVIDER = f"INSERT INTO providers ({PROVIDER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
INSERT_SECRET = f"INSERT INTO secrets ({SECRET_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"


# checks


def text(label: str, value: str, limit: int = MAX_NAME) -> str:
    if len(value) > limit:
        raise StoreError("too_large", f"{label} is longer than {limit} characters")
    _utf8_size(label, value)
    return value


def _utf8_size(label: str, value: str) -> int:
    try:
        return len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise StoreError("invalid", f"{label} is not valid Unicode text") from None


def integer(label: str, value: int) -> int:
    if not _INT64[0] <= value <= _INT64[1]:
        raise StoreError("too_large", f"{label} is out of range")
    return value


def blob(label: str, value: bytes) -> bytes:
    if len(value) > MAX_BYTES:
        raise StoreError("too_large", f"{label} is larger than {MAX_BYTES} bytes")
    return value


def to_json(label: str, value: Any) -> str:
    try:
        encoded = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError):
        raise StoreError("invalid", f"{label} is not JSON") from None
    if len(encoded) > MAX_BYTES or _utf8_size(label, encoded) > MAX_BYTES:
        raise StoreError("too_large", f"{label} is larger than {MAX_BYTES} bytes")
    return encoded


def secret_refs(data: dict[str, Any]) -> list[object]:
    """The secret ids a provider's data refers to (as modelyard.state reveals them)."""
    return [v[SECRET_MARKER] for v in data.values() if isinstance(v, dict) and SECRET_MARKER in v]


# records to parameters (checked)


def tenant_params(t: TenantRecord) -> Row:
    return (
        text("tenant id", t.id),
        text("tenant name", t.name),
        text("secrets manager", t.secrets_manager, MAX_TEXT),
        integer("created_at", t.created_at),
    )


def provider_params(p: ProviderRecord) -> Row:
    return (
        text("provider id", p.id),
        text("tenant id", p.tenant_id),
        text("provider name", p.name),
        text("provider type", p.type),
        to_json("provider data", p.data),
        integer("created_at", p.created_at),
        integer("updated_at", p.updated_at),
    )


def secret_params(s: SecretRecord) -> Row:
    if s.kind == "sealed":
        if s.sealed is None:
            raise StoreError("invalid", f"sealed secret '{s.id}' has no envelope")
        envelope: Row = (*sealed_params(s.sealed), None)
    elif s.kind == "reference":
        if s.reference is None:
            raise StoreError("invalid", f"reference secret '{s.id}' has no reference")
        envelope = (None, None, None, None, None, text("secret reference", s.reference, MAX_TEXT))
    else:
        raise StoreError("invalid", f"secret '{s.id}' has an unknown kind")
    ids = (text("secret id", s.id), text("tenant id", s.tenant_id), text("provider id", s.provider_id))
    return (*ids, s.kind, *envelope, text("secret hint", s.hint))


def sealed_params(s: Sealed) -> Row:
    return (
        blob("ciphertext", s.ciphertext),
        blob("nonce", s.nonce),
        blob("wrapped key", s.wrapped_key),
        blob("key nonce", s.key_nonce),
        integer("kek_version", s.kek_version),
    )


def model_params(m: ModelRecord) -> Row:
    return (
        text("model record id", m.id),
        text("tenant id", m.tenant_id),
        text("provider id", m.provider_id),
        text("model id", m.model_id),
        text("alias", m.alias),
        integer("weight", m.weight),
        integer("created_at", m.created_at),
    )


def key_params(k: KeyRecord) -> Row:
    return (
        text("key id", k.id),
        text("tenant id", k.tenant_id),
        text("key name", k.name),
        text("key hash", k.key_hash),
        text("key prefix", k.prefix),
        to_json("key scopes", [text("scope", s) for s in k.scopes]),
        to_json("key models", [text("model alias", m) for m in k.models]),
        integer("created_at", k.created_at),
        integer("expires_at", k.expires_at),
        integer("revoked_at", k.revoked_at),
    )


def audit_params(a: AuditRecord) -> Row:
    return (
        text("audit tenant id", a.tenant_id),
        text("audit key id", a.key_id),
        text("audit action", a.action),
        text("audit target", a.target, MAX_TEXT),
        text("audit result", a.result),
        integer("audit time", a.at),
    )


# rows to records


def tenant(row: Row) -> TenantRecord:
    return TenantRecord(*row)


def provider(row: Row) -> ProviderRecord:
    id_, tenant_id, name, type_, data, created_at, updated_at = row
    return ProviderRecord(id_, tenant_id, name, type_, json.loads(data), created_at, updated_at)


def secret(row: Row) -> SecretRecord:
    id_, tenant_id, provider_id, kind, ciphertext, nonce, wrapped, key_nonce, kek, reference, hint = row
    sealed = Sealed(ciphertext, nonce, wrapped, key_nonce, kek) if kind == "sealed" else None
    return SecretRecord(id_, tenant_id, provider_id, cast(SecretKind, kind), sealed, reference, hint)


def model(row: Row) -> ModelRecord:
    id_, tenant_id, provider_id, model_id, alias, weight, created_at = row
    return ModelRecord(id_, tenant_id, provider_id, model_id, alias, created_at, weight)


def key(row: Row) -> KeyRecord:
    id_, tenant_id, name, key_hash, prefix, scopes, models, created_at, expires_at, revoked_at = row
    return KeyRecord(
        id_,
        tenant_id,
        name,
        key_hash,
        prefix,
        cast(tuple[Scope, ...], tuple(json.loads(scopes))),
        created_at,
        tuple(json.loads(models)),
        expires_at,
        revoked_at,
    )


def audit(row: Row) -> AuditRecord:
    sequence, tenant_id, key_id, action, target, result, at = row
    return AuditRecord(tenant_id, key_id, action, target, result, at, sequence)


# integrity errors to store errors


def constraint(error: sqlite3.IntegrityError) -> str:
    """Which constraint failed: 'unique', 'primary', 'foreign', 'check' or 'other'."""
    name = getattr(error, "sqlite_errorname", "")
    return {
        "SQLITE_CONSTRAINT_UNIQUE": "unique",
        "SQLITE_CONSTRAINT_PRIMARYKEY": "primary",
        "SQLITE_CONSTRAINT_FOREIGNKEY": "foreign",
        "SQLITE_CONSTRAINT_CHECK": "check",
    }.get(name, "other")


def failed_columns(error: sqlite3.IntegrityError) -> str:
    """The `table.column, ...` list SQLite names in a UNIQUE/PRIMARY KEY failure."""
    message = str(error)
    return message.split(":", 1)[1].strip() if ":" in message else ""


def errors(conflicts: dict[str, str], missing: str = "") -> ErrorMap:
    """Turn a constraint failure into a StoreError naming the object (never echoing secret data)."""

    def convert(error: sqlite3.IntegrityError) -> StoreError:
        kind = constraint(error)
        if kind in ("unique", "primary"):
            message = conflicts.get(failed_columns(error), "it conflicts with an existing object")
            return StoreError("conflict", message)
        if kind == "foreign" and missing:
            return StoreError("not_found", missing)
        return StoreError("invalid", "the record breaks a constraint of the store")

    return convert


def owned(provider: ProviderRecord, secrets: Sequence[SecretRecord]) -> Sequence[SecretRecord]:
    for s in secrets:
        if (s.tenant_id, s.provider_id) != (provider.tenant_id, provider.id):
            raise StoreError("invalid", f"secret '{s.id}' does not belong to provider '{provider.name}'")
    return secrets


def provider_conflicts(p: ProviderRecord) -> dict[str, str]:
    return {
        "providers.tenant_id, providers.name": f"a provider named '{p.name}' already exists",
        "providers.id": f"a provider with id '{p.id}' already exists",
        "secrets.id": "a secret with the same id already exists",
    }


def key_conflicts(key: KeyRecord | None) -> dict[str, str]:
    if key is None:
        return {}
    return {
        "api_keys.key_hash": "an API key with the same hash already exists",
        "api_keys.id": f"an API key with id '{key.id}' already exists",
    }


def scoped_secret_params(s: ScopedSecretRecord) -> Row:
    return (
        text("secret id", s.id),
        text("tenant id", s.tenant_id),
        text("secret scope", s.scope),
        text("secret key", s.key),
        *sealed_params(s.sealed),
        text("secret hint", s.hint),
        integer("updated_at", s.updated_at),
    )


def scoped_secret(row: Row) -> ScopedSecretRecord:
    id_, tenant_id, scope, key, ciphertext, nonce, wrapped, key_nonce, kek, hint, updated_at = row
    sealed = Sealed(ciphertext, nonce, wrapped, key_nonce, kek)
    return ScopedSecretRecord(id_, tenant_id, scope, key, sealed, hint, updated_at)


def endpoint_params(e: EndpointRecord) -> Row:
    data = {
        "entities": [
            {
                "name": entity.name,
                "provider_id": entity.provider_id,
                "model_id": entity.model_id,
                "task": entity.task,
                "defaults": entity.defaults,
                "external_model": entity.external_model,
            }
            for entity in e.entities
        ],
        "routes": [list(route) for route in e.routes],
    }
    return (
        text("tenant id", e.tenant_id),
        text("endpoint name", e.name),
        to_json("endpoint config", data),
        integer("created_at", e.created_at),
        integer("updated_at", e.updated_at),
    )


def endpoint(row: Row) -> EndpointRecord:
    tenant_id, name, data, created_at, updated_at = row
    parsed = json.loads(data)
    entities = tuple(ServedEntityRecord(**entity) for entity in parsed["entities"])
    routes = tuple((str(name_), int(pct)) for name_, pct in parsed["routes"])
    return EndpointRecord(tenant_id, name, entities, routes, created_at, updated_at)
