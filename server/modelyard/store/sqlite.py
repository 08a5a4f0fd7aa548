"""The store on one SQLite file, shared by the gateway's worker processes and the CLI.

Durability: WAL mode with synchronous=NORMAL. A transaction is in the WAL when COMMIT returns, so
a crash of the process (even `kill -9`) loses no committed write; a power loss or OS crash may
lose the last transactions before the next checkpoint (never corrupts the file). Concurrency: one
connection per store, used under a lock (callers may come from several threads); every write is
one `BEGIN IMMEDIATE` transaction, so writers of several processes queue on the busy timeout
instead of failing. Open one store per process (never share one across fork). The file is created
mode 0600: it holds sealed secrets and key hashes.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from modelyard.store import sqlite_rows as rows
from modelyard.store.base import Store, StoreError
from modelyard.store.migrations import MIGRATIONS, Migration, migrate
from modelyard.store.records import (
    AuditRecord,
    KeyRecord,
    ModelRecord,
    ProviderChange,
    ProviderRecord,
    Sealed,
    SecretRecord,
    TenantRecord,
)
from modelyard.store.sqlite_serving import ServingTables

BUSY_TIMEOUT = 5.0
STORE_FILENAME = "modelyard.db"
"""The store's file inside the data directory."""
_BUSY = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)

_INSERT_TENANT = f"INSERT INTO tenants ({rows.TENANT_COLUMNS}) VALUES (?, ?, ?, ?)"
_INSERT_MODEL = f"INSERT INTO models ({rows.MODEL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
_INSERT_KEY = f"INSERT INTO api_keys ({rows.KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_SELECT_PROVIDERS = f"SELECT {rows.PROVIDER_COLUMNS} FROM providers"
_SELECT_SECRETS = f"SELECT {rows.SECRET_COLUMNS} FROM secrets"
_SELECT_MODELS = f"SELECT {rows.MODEL_COLUMNS} FROM models"
_SELECT_KEYS = f"SELECT {rows.KEY_COLUMNS} FROM api_keys"
_LIST_MODELS = {
    (False, False): f"{_SELECT_MODELS} ORDER BY created_at, rowid",
    (True, False): f"{_SELECT_MODELS} WHERE tenant_id = ? ORDER BY created_at, rowid",
    (False, True): f"{_SELECT_MODELS} WHERE provider_id = ? ORDER BY created_at, rowid",
    (True, True): f"{_SELECT_MODELS} WHERE tenant_id = ? AND provider_id = ? ORDER BY created_at, rowid",
}
_REMOVE_MODEL = (
    "DELETE FROM models WHERE tenant_id = ? AND provider_id = ? AND id = ?",
    "DELETE FROM models WHERE tenant_id = ? AND provider_id = ? AND model_id = ?",
    "DELETE FROM models WHERE tenant_id = ? AND provider_id = ? AND alias = ?",
)
"""Tried in turn: the record id, else the provider's model id, else the alias (all its rows)."""


def _create_private(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)


def _connect(path: Path, busy_timeout: float) -> sqlite3.Connection:
    _create_private(path)
    conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
    try:
        _enable_wal(conn, path, busy_timeout)
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
    except BaseException:
        conn.close()
        raise
    return conn


def _enable_wal(conn: sqlite3.Connection, path: Path, busy_timeout: float) -> None:
    """Switch to WAL, retrying: SQLite does not apply the busy timeout to this switch, which
    fails at once while another process is switching (or migrating) a fresh file."""
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
            if mode != "wal":
                mode = str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower()
            break
        except sqlite3.OperationalError as error:
            busy = getattr(error, "sqlite_errorcode", 0) & 0xFF in _BUSY
            if not busy or time.monotonic() > deadline:
                raise
            time.sleep(0.005)
    if mode != "wal":
        raise StoreError("unavailable", f"SQLite cannot use WAL mode for {path} (got {mode})")


class SqliteStore(ServingTables):
    def __init__(
        self,
        path: Path,
        *,
        busy_timeout: float = BUSY_TIMEOUT,
        migrations: Sequence[Migration] = MIGRATIONS,
    ) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._commits = 0
        self._conn = _connect(path, busy_timeout)
        try:
            migrate(self._conn, migrations)
        except BaseException:
            self._conn.close()
            raise

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def version(self) -> int:
        """`PRAGMA data_version` (bumped by other connections' commits) with this one's commits."""
        with self._lock:
            other = self._conn.execute("PRAGMA data_version").fetchone()[0]
            return (self._commits << 32) + int(other)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # plumbing

    @contextmanager
    def _write(self, errors: rows.ErrorMap | None = None) -> Iterator[sqlite3.Connection]:
        """One write transaction, holding the file's write lock from its start."""
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except sqlite3.IntegrityError as error:
                self._rollback()
                if errors is None:
                    raise
                raise errors(error) from None
            except BaseException:
                self._rollback()
                raise
            self._commits += 1

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[rows.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def _one(self, sql: str, params: Sequence[Any] = ()) -> rows.Row | None:
        with self._lock:
            found: rows.Row | None = self._conn.execute(sql, params).fetchone()
            return found

    # tenants

    def create_tenant(self, tenant: TenantRecord, first_key: KeyRecord | None, audit: AuditRecord) -> None:
        params, entry = rows.tenant_params(tenant), rows.audit_params(audit)
        key = rows.key_params(first_key) if first_key else None
        if first_key and first_key.tenant_id != tenant.id:
            raise StoreError("invalid", "the first key belongs to another tenant")
        conflicts = {
            "tenants.name": f"a tenant named '{tenant.name}' already exists",
            "tenants.id": f"a tenant with id '{tenant.id}' already exists",
            **rows.key_conflicts(first_key),
        }
        with self._write(rows.errors(conflicts)) as conn:
            conn.execute(_INSERT_TENANT, params)
            if key:
                conn.execute(_INSERT_KEY, key)
            conn.execute(rows.INSERT_AUDIT, entry)

    def update_tenant(self, tenant: TenantRecord, audit: AuditRecord) -> None:
        id_, name, manager, _ = rows.tenant_params(tenant)
        entry = rows.audit_params(audit)
        conflicts = {"tenants.name": f"a tenant named '{name}' already exists"}
        with self._write(rows.errors(conflicts)) as conn:
            sql = "UPDATE tenants SET name = ?, secrets_manager = ? WHERE id = ?"
            if not conn.execute(sql, (name, manager, id_)).rowcount:
                raise StoreError("not_found", f"no tenant '{id_}'")
            conn.execute(rows.INSERT_AUDIT, entry)

    def delete_tenant(self, tenant_id: str, audit: AuditRecord) -> bool:
        """Deletes the tenant with its providers, secrets, models and keys; its audit trail stays."""
        entry = rows.audit_params(audit)
        with self._write() as conn:
            deleted = conn.execute("DELETE FROM tenants WHERE id = ?", (tenant_id,)).rowcount > 0
            if deleted:
                conn.execute(rows.INSERT_AUDIT, entry)
        return deleted

    def get_tenant(self, tenant_id: str) -> TenantRecord | None:
        row = self._one(f"SELECT {rows.TENANT_COLUMNS} FROM tenants WHERE id = ?", (tenant_id,))
        return rows.tenant(row) if row else None

    def tenant_by_name(self, name: str) -> TenantRecord | None:
        row = self._one(f"SELECT {rows.TENANT_COLUMNS} FROM tenants WHERE name = ?", (name,))
        return rows.tenant(row) if row else None

    def list_tenants(self) -> list[TenantRecord]:
        found = self._all(f"SELECT {rows.TENANT_COLUMNS} FROM tenants ORDER BY created_at, rowid")
        return [rows.tenant(row) for row in found]

    # providers and their secrets

    def create_provider(
        self, provider: ProviderRecord, secrets: Sequence[SecretRecord], audit: AuditRecord
    ) -> None:
        params, entry = rows.provider_params(provider), rows.audit_params(audit)
        secret_rows = [rows.secret_params(s) for s in rows.owned(provider, secrets)]
        if set(rows.secret_refs(provider.data)) - {s.id for s in secrets}:
            raise StoreError("not_found", f"provider '{provider.name}' refers to a secret it does not own")
        errors = rows.errors(rows.provider_conflicts(provider), f"no tenant '{provider.tenant_id}'")
        with self._write(errors) as conn:
            conn.execute(rows.INSERT_PROVIDER, params)
            conn.executemany(rows.INSERT_SECRET, secret_rows)
            conn.execute(rows.INSERT_AUDIT, entry)

    def update_provider(self, change: ProviderChange, audit: AuditRecord) -> None:
        """Replaces name, type, data and updated_at (never the tenant or created_at)."""
        p = change.provider
        id_, tenant_id, name, type_, data, _, updated_at = rows.provider_params(p)
        entry = rows.audit_params(audit)
        secret_rows = [rows.secret_params(s) for s in rows.owned(p, change.new_secrets)]
        removed = [(rows.text("secret id", s), tenant_id, id_) for s in change.removed_secret_ids]
        with self._write(rows.errors(rows.provider_conflicts(p))) as conn:
            sql = "UPDATE providers SET name = ?, type = ?, data = ?, updated_at = ? WHERE id = ? AND tenant_id = ?"
            if not conn.execute(sql, (name, type_, data, updated_at, id_, tenant_id)).rowcount:
                raise StoreError("not_found", f"no provider '{id_}' in this tenant")
            conn.executemany(
                "DELETE FROM secrets WHERE id = ? AND tenant_id = ? AND provider_id = ?", removed
            )
            conn.executemany(rows.INSERT_SECRET, secret_rows)
            sql = "SELECT id FROM secrets WHERE tenant_id = ? AND provider_id = ?"
            owned = {row[0] for row in conn.execute(sql, (tenant_id, id_))}
            if set(rows.secret_refs(p.data)) - owned:
                raise StoreError("not_found", f"provider '{name}' refers to a secret it does not own")
            conn.execute(rows.INSERT_AUDIT, entry)

    def delete_provider(self, tenant_id: str, provider_id: str, audit: AuditRecord) -> bool:
        """Deletes the provider with its secrets and models (foreign keys cascade)."""
        entry = rows.audit_params(audit)
        with self._write() as conn:
            sql = "DELETE FROM providers WHERE id = ? AND tenant_id = ?"
            deleted = conn.execute(sql, (provider_id, tenant_id)).rowcount > 0
            if deleted:
                conn.execute(rows.INSERT_AUDIT, entry)
        return deleted

    def get_provider(self, tenant_id: str, provider_id: str) -> ProviderRecord | None:
        row = self._one(f"{_SELECT_PROVIDERS} WHERE id = ? AND tenant_id = ?", (provider_id, tenant_id))
        return rows.provider(row) if row else None

    def list_providers(self, tenant_id: str | None = None) -> list[ProviderRecord]:
        if tenant_id is None:
            found = self._all(f"{_SELECT_PROVIDERS} ORDER BY created_at, rowid")
        else:
            found = self._all(
                f"{_SELECT_PROVIDERS} WHERE tenant_id = ? ORDER BY created_at, rowid", (tenant_id,)
            )
        return [rows.provider(row) for row in found]

    def get_secrets(self, secret_ids: Sequence[str]) -> dict[str, SecretRecord]:
        """The secrets found among these ids (read in one snapshot; unknown ids are left out)."""
        sql = f"{_SELECT_SECRETS} WHERE id = ?"
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                found = [self._conn.execute(sql, (id_,)).fetchone() for id_ in dict.fromkeys(secret_ids)]
            finally:
                self._conn.execute("COMMIT")
        return {row[0]: rows.secret(row) for row in found if row}

    def list_sealed_secrets(self, below_kek_version: int, limit: int) -> list[SecretRecord]:
        if limit <= 0:
            return []
        sql = f"{_SELECT_SECRETS} WHERE kind = 'sealed' AND kek_version < ? ORDER BY rowid LIMIT ?"
        found = self._all(sql, (rows.integer("kek version", below_kek_version), rows.integer("limit", limit)))
        return [rows.secret(row) for row in found]

    def rewrap_secrets(self, sealed: dict[str, Sealed]) -> None:
        """Secrets deleted meanwhile are skipped."""
        params = [(*rows.sealed_params(s), rows.text("secret id", id_)) for id_, s in sealed.items()]
        sql = (
            "UPDATE secrets SET ciphertext = ?, nonce = ?, wrapped_key = ?, key_nonce = ?, kek_version = ?"
            " WHERE id = ? AND kind = 'sealed'"
        )
        with self._write() as conn:
            conn.executemany(sql, params)

    def kek_version(self) -> int:
        row = self._one("SELECT version FROM kek_state WHERE id = 1")
        return int(row[0]) if row else 1

    def set_kek_version(self, version: int) -> None:
        if rows.integer("kek version", version) < 1:
            raise StoreError("invalid", "the KEK version must be at least 1")
        with self._write() as conn:
            conn.execute("UPDATE kek_state SET version = ? WHERE id = 1", (version,))

    # models

    def add_model(self, model: ModelRecord, audit: AuditRecord) -> None:
        params, entry = rows.model_params(model), rows.audit_params(audit)
        conflicts = {
            "models.tenant_id, models.alias, models.provider_id, models.model_id": (
                f"the model '{model.model_id}' is already enabled as '{model.alias}' on this provider"
            ),
            "models.id": f"a model with id '{model.id}' already exists",
        }
        with self._write(rows.errors(conflicts, f"no provider '{model.provider_id}' in this tenant")) as conn:
            conn.execute(_INSERT_MODEL, params)
            conn.execute(rows.INSERT_AUDIT, entry)

    def remove_model(self, tenant_id: str, provider_id: str, id_or_alias: str, audit: AuditRecord) -> bool:
        """Removes the model with this record id, else with this provider model id, else this alias."""
        entry = rows.audit_params(audit)
        with self._write() as conn:
            removed = any(
                conn.execute(sql, (tenant_id, provider_id, id_or_alias)).rowcount for sql in _REMOVE_MODEL
            )
            if removed:
                conn.execute(rows.INSERT_AUDIT, entry)
        return removed

    def list_models(self, tenant_id: str | None = None, provider_id: str | None = None) -> list[ModelRecord]:
        sql = _LIST_MODELS[tenant_id is not None, provider_id is not None]
        params = [p for p in (tenant_id, provider_id) if p is not None]
        return [rows.model(row) for row in self._all(sql, params)]

    # API keys

    def create_key(self, key: KeyRecord, audit: AuditRecord) -> None:
        params, entry = rows.key_params(key), rows.audit_params(audit)
        with self._write(rows.errors(rows.key_conflicts(key), f"no tenant '{key.tenant_id}'")) as conn:
            conn.execute(_INSERT_KEY, params)
            conn.execute(rows.INSERT_AUDIT, entry)

    def revoke_key(self, tenant_id: str, key_id: str, revoked_at: int, audit: AuditRecord) -> bool:
        """True when the tenant has this key (an earlier revocation time is kept)."""
        entry = rows.audit_params(audit)
        with self._write() as conn:
            sql = "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND tenant_id = ? AND revoked_at = 0"
            conn.execute(sql, (rows.integer("revoked_at", revoked_at), key_id, tenant_id))
            sql = "SELECT 1 FROM api_keys WHERE id = ? AND tenant_id = ?"
            found = conn.execute(sql, (key_id, tenant_id)).fetchone() is not None
            if found:
                conn.execute(rows.INSERT_AUDIT, entry)
        return found

    def key_by_hash(self, key_hash: str) -> KeyRecord | None:
        row = self._one(f"{_SELECT_KEYS} WHERE key_hash = ?", (key_hash,))
        return rows.key(row) if row else None

    def list_keys(self, tenant_id: str) -> list[KeyRecord]:
        found = self._all(f"{_SELECT_KEYS} WHERE tenant_id = ? ORDER BY created_at, rowid", (tenant_id,))
        return [rows.key(row) for row in found]

    # audit

    def record_audit(self, audit: AuditRecord) -> None:
        entry = rows.audit_params(audit)
        with self._write() as conn:
            conn.execute(rows.INSERT_AUDIT, entry)

    def list_audit(self, tenant_id: str, limit: int, before: int = 0) -> list[AuditRecord]:
        """Newest first; `before` (a sequence, 0 for none) pages back."""
        if limit <= 0:
            return []
        bound = rows.integer("before", before) if before > 0 else (1 << 63) - 1
        sql = f"SELECT {rows.AUDIT_COLUMNS} FROM audit WHERE tenant_id = ? AND sequence < ? ORDER BY sequence DESC LIMIT ?"
        found = self._all(sql, (tenant_id, bound, rows.integer("limit", limit)))
        return [rows.audit(row) for row in found]


if TYPE_CHECKING:

    def _satisfies_store(path: Path) -> Store:  # mypy checks SqliteStore against the protocol
        return SqliteStore(path)
