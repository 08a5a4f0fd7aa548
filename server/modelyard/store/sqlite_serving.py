"""The SQLite store's tables for serving endpoints and secret scopes (a part of SqliteStore)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from modelyard.store import sqlite_rows as rows
from modelyard.store.base import StoreError
from modelyard.store.records import (
    AuditRecord,
    EndpointRecord,
    ProviderRecord,
    ScopedSecretRecord,
    SecretRecord,
)

_UPSERT_SCOPED_SECRET = (
    f"INSERT INTO scoped_secrets ({rows.SCOPED_SECRET_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (tenant_id, scope, key) DO UPDATE SET id = excluded.id, ciphertext = excluded.ciphertext, "
    "nonce = excluded.nonce, wrapped_key = excluded.wrapped_key, key_nonce = excluded.key_nonce, "
    "kek_version = excluded.kek_version, hint = excluded.hint, updated_at = excluded.updated_at"
)
_SELECT_SCOPED_SECRETS = f"SELECT {rows.SCOPED_SECRET_COLUMNS} FROM scoped_secrets"
_INSERT_ENDPOINT = f"INSERT INTO endpoints ({rows.ENDPOINT_COLUMNS}) VALUES (?, ?, ?, ?, ?)"
_SELECT_ENDPOINTS = f"SELECT {rows.ENDPOINT_COLUMNS} FROM endpoints"


class ServingTables:
    """Endpoints with the providers they own, and secret scopes; SqliteStore supplies the plumbing."""

    if TYPE_CHECKING:
        _lock: threading.Lock

        def _write(
            self, errors: rows.ErrorMap | None = None
        ) -> AbstractContextManager[sqlite3.Connection]: ...
        def _one(self, sql: str, params: Sequence[Any] = ()) -> rows.Row | None: ...
        def _all(self, sql: str, params: Sequence[Any] = ()) -> list[rows.Row]: ...

    # secret scopes

    def put_scoped_secret(self, secret: ScopedSecretRecord, audit: AuditRecord) -> None:
        params, entry = rows.scoped_secret_params(secret), rows.audit_params(audit)
        with self._write(rows.errors({}, f"no tenant '{secret.tenant_id}'")) as conn:
            conn.execute(_UPSERT_SCOPED_SECRET, params)
            conn.execute(rows.INSERT_AUDIT, entry)

    def delete_scoped_secret(self, tenant_id: str, scope: str, key: str, audit: AuditRecord) -> bool:
        entry = rows.audit_params(audit)
        with self._write() as conn:
            sql = "DELETE FROM scoped_secrets WHERE tenant_id = ? AND scope = ? AND key = ?"
            deleted = conn.execute(sql, (tenant_id, scope, key)).rowcount > 0
            if deleted:
                conn.execute(rows.INSERT_AUDIT, entry)
        return deleted

    def get_scoped_secret(self, tenant_id: str, scope: str, key: str) -> ScopedSecretRecord | None:
        sql = f"{_SELECT_SCOPED_SECRETS} WHERE tenant_id = ? AND scope = ? AND key = ?"
        row = self._one(sql, (tenant_id, scope, key))
        return rows.scoped_secret(row) if row else None

    def list_scoped_secrets(self, tenant_id: str) -> list[ScopedSecretRecord]:
        sql = f"{_SELECT_SCOPED_SECRETS} WHERE tenant_id = ? ORDER BY scope, key"
        return [rows.scoped_secret(row) for row in self._all(sql, (tenant_id,))]

    # endpoints

    def put_endpoint(
        self,
        endpoint: EndpointRecord,
        providers: Sequence[tuple[ProviderRecord, Sequence[SecretRecord]]],
        audit: AuditRecord,
        replace: bool,
    ) -> None:
        """Creates the endpoint (or, with `replace`, replaces the existing one) with the providers
        it owns; the providers the replaced config owned are deleted with their secrets."""
        params, entry = rows.endpoint_params(endpoint), rows.audit_params(audit)
        owned = [
            (rows.provider_params(p), [rows.secret_params(s) for s in rows.owned(p, ss)])
            for p, ss in providers
        ]
        conflicts = {
            "endpoints.tenant_id, endpoints.name": f"an endpoint named '{endpoint.name}' already exists"
        }
        for provider, _ in providers:
            conflicts.update(rows.provider_conflicts(provider))
        with self._write(rows.errors(conflicts, f"no tenant '{endpoint.tenant_id}'")) as conn:
            old = self._endpoint_in(conn, endpoint.tenant_id, endpoint.name)
            if replace and old is None:
                raise StoreError("not_found", f"no endpoint '{endpoint.name}' in this tenant")
            if not replace and old is not None:
                raise StoreError("conflict", f"an endpoint named '{endpoint.name}' already exists")
            if old is not None:
                self._drop_endpoint(conn, old)
            for provider_row, secret_rows in owned:
                conn.execute(rows.INSERT_PROVIDER, provider_row)
                conn.executemany(rows.INSERT_SECRET, secret_rows)
            conn.execute(_INSERT_ENDPOINT, params)
            conn.execute(rows.INSERT_AUDIT, entry)

    def delete_endpoint(self, tenant_id: str, name: str, audit: AuditRecord) -> bool:
        """Deletes the endpoint with the providers it owns (and their secrets and models)."""
        entry = rows.audit_params(audit)
        with self._write() as conn:
            old = self._endpoint_in(conn, tenant_id, name)
            if old is None:
                return False
            self._drop_endpoint(conn, old)
            conn.execute(rows.INSERT_AUDIT, entry)
        return True

    @staticmethod
    def _endpoint_in(conn: sqlite3.Connection, tenant_id: str, name: str) -> EndpointRecord | None:
        row = conn.execute(
            f"{_SELECT_ENDPOINTS} WHERE tenant_id = ? AND name = ?", (tenant_id, name)
        ).fetchone()
        return rows.endpoint(row) if row else None

    @staticmethod
    def _drop_endpoint(conn: sqlite3.Connection, endpoint: EndpointRecord) -> None:
        conn.execute(
            "DELETE FROM endpoints WHERE tenant_id = ? AND name = ?", (endpoint.tenant_id, endpoint.name)
        )
        conn.executemany(
            "DELETE FROM providers WHERE id = ? AND tenant_id = ?",
            [(entity.provider_id, endpoint.tenant_id) for entity in endpoint.entities],
        )

    def get_endpoint(self, tenant_id: str, name: str) -> EndpointRecord | None:
        row = self._one(f"{_SELECT_ENDPOINTS} WHERE tenant_id = ? AND name = ?", (tenant_id, name))
        return rows.endpoint(row) if row else None

    def list_endpoints(self, tenant_id: str) -> list[EndpointRecord]:
        found = self._all(f"{_SELECT_ENDPOINTS} WHERE tenant_id = ? ORDER BY created_at, rowid", (tenant_id,))
        return [rows.endpoint(row) for row in found]
