"""Who is calling, on behalf of which tenant, and what they may do.

The operator (bootstrap) key acts on the `default` tenant, or on the one its `x-modelyard-tenant`
header names. Every other key belongs to one tenant and carries scopes ("admin", "inference") and
optionally the aliases it may use. Keys are looked up by hash; the cache is dropped whenever the
store changes, so a revocation takes effect on the next request in every worker.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass

from modelyard.errors import ClientError, unauthenticated
from modelyard.store.base import Store
from modelyard.store.records import KeyRecord, TenantRecord

DEFAULT_TENANT_ID = "default"
TENANT_HEADER = "x-modelyard-tenant"
ALL_SCOPES = frozenset({"admin", "inference"})


@dataclass(frozen=True)
class Principal:
    key_id: str
    tenant_id: str
    scopes: frozenset[str]
    models: frozenset[str] = frozenset()
    """Aliases this key may use; empty means all of its tenant's."""
    operator: bool = False

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            raise ClientError(
                f"This key does not have the '{scope}' scope.", status=403, code="insufficient_scope"
            )

    def require_operator(self) -> None:
        if not self.operator:
            raise ClientError("Only the operator key may do this.", status=403, code="operator_only")

    def may_use(self, alias: str) -> bool:
        return not self.models or alias in self.models


current_principal: ContextVar[Principal | None] = ContextVar("current_principal", default=None)


def caller() -> Principal:
    """The authenticated principal of the current RPC (set by the interceptor)."""
    principal = current_principal.get()
    if principal is None:
        raise unauthenticated()
    return principal


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _bearer(authorization: str | None) -> str:
    if not authorization or not authorization[:7].lower() == "bearer ":
        raise unauthenticated("You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.")
    return authorization[7:].strip()


class Authenticator:
    def __init__(self, operator_hash: str, store: Store, clock: Callable[[], float] = time.time) -> None:
        self._operator = bytes.fromhex(operator_hash)
        self._store = store
        self._clock = clock
        self._version = -1
        self._keys: dict[str, KeyRecord | None] = {}
        self._tenants: dict[str, TenantRecord | None] = {}

    def _fresh(self) -> None:
        version = self._store.version()
        if version != self._version:
            self._keys.clear()
            self._tenants.clear()
            self._version = version

    def authenticate(self, authorization: str | None, tenant: str | None) -> Principal:
        key = _bearer(authorization)
        digest = key_digest(key)
        self._fresh()
        if hmac.compare_digest(bytes.fromhex(digest), self._operator):
            return Principal("operator", self._operator_tenant(tenant), ALL_SCOPES, operator=True)
        record = self._key(digest)
        if record is None or record.revoked_at or (record.expires_at and record.expires_at <= self._clock()):
            raise unauthenticated("Incorrect API key provided.")
        if tenant and tenant not in (record.tenant_id, self._tenant_name(record.tenant_id)):
            raise ClientError(f"Tenant '{tenant}' not found.", status=404, code="tenant_not_found")
        return Principal(record.id, record.tenant_id, frozenset(record.scopes), frozenset(record.models))

    def _key(self, digest: str) -> KeyRecord | None:
        if digest not in self._keys:
            self._keys[digest] = self._store.key_by_hash(digest)
        return self._keys[digest]

    def _tenant(self, id_or_name: str) -> TenantRecord | None:
        if id_or_name not in self._tenants:
            found = self._store.get_tenant(id_or_name) or self._store.tenant_by_name(id_or_name)
            self._tenants[id_or_name] = found
        return self._tenants[id_or_name]

    def _tenant_name(self, tenant_id: str) -> str | None:
        found = self._tenant(tenant_id)
        return found.name if found else None

    def _operator_tenant(self, tenant: str | None) -> str:
        if not tenant:
            return DEFAULT_TENANT_ID
        found = self._tenant(tenant)
        if found is None:
            raise ClientError(f"Tenant '{tenant}' not found.", status=404, code="tenant_not_found")
        return found.id
