"""Versioned schema migrations of the SQLite store, applied in order when a store is opened.

Each migration runs in its own `BEGIN IMMEDIATE` transaction (which takes the write lock) and
re-checks `schema_migrations` under that lock, so several processes opening the same fresh file
at once apply each version exactly once. Statements are executed one by one (never with
`executescript`, which would commit midway). Append new migrations with the next version; never
edit a released one. A migration that rebuilds a table must keep `foreign_keys=ON` in mind (the
pragma cannot change inside a transaction): use the add-column form, or rebuild without DROP of a
referenced parent.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


class SchemaTooNew(Exception):
    """The file was migrated by a newer Modelyard than this one."""


V1 = Migration(
    1,
    "tenants, providers, secrets, models, API keys, audit, KEK state",
    (
        """CREATE TABLE tenants (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            secrets_manager TEXT NOT NULL DEFAULT '',
            created_at INTEGER NOT NULL
        )""",
        """CREATE TABLE providers (
            id TEXT PRIMARY KEY,
            tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            type TEXT NOT NULL,
            data TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            UNIQUE (tenant_id, name),
            UNIQUE (tenant_id, id)
        )""",
        # (tenant_id, provider_id) references the provider *of the same tenant*: a secret or model
        # can never hang off another tenant's provider.
        """CREATE TABLE secrets (
            id TEXT PRIMARY KEY,
            tenant_id TEXT NOT NULL,
            provider_id TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('sealed', 'reference')),
            ciphertext BLOB,
            nonce BLOB,
            wrapped_key BLOB,
            key_nonce BLOB,
            kek_version INTEGER,
            reference TEXT,
            hint TEXT NOT NULL DEFAULT '',
            FOREIGN KEY (tenant_id, provider_id) REFERENCES providers (tenant_id, id) ON DELETE CASCADE,
            CHECK (
                (kind = 'sealed' AND ciphertext IS NOT NULL AND nonce IS NOT NULL
                    AND wrapped_key IS NOT NULL AND key_nonce IS NOT NULL AND kek_version IS NOT NULL)
                OR (kind = 'reference' AND reference IS NOT NULL)
            )
        )""",
        "CREATE INDEX secrets_provider ON secrets (tenant_id, provider_id)",
        "CREATE INDEX secrets_kek ON secrets (kek_version) WHERE kind = 'sealed'",
        """CREATE TABLE models (
            id TEXT PRIMARY KEY,
            tenant_id TEXT NOT NULL,
            provider_id TEXT NOT NULL,
            model_id TEXT NOT NULL,
            alias TEXT NOT NULL,
            weight INTEGER NOT NULL DEFAULT 1,
            created_at INTEGER NOT NULL,
            UNIQUE (tenant_id, alias, provider_id, model_id),
            FOREIGN KEY (tenant_id, provider_id) REFERENCES providers (tenant_id, id) ON DELETE CASCADE
        )""",
        "CREATE INDEX models_provider ON models (tenant_id, provider_id)",
        """CREATE TABLE api_keys (
            id TEXT PRIMARY KEY,
            tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            key_hash TEXT NOT NULL UNIQUE,
            prefix TEXT NOT NULL,
            scopes TEXT NOT NULL,
            models TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            expires_at INTEGER NOT NULL DEFAULT 0,
            revoked_at INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX api_keys_tenant ON api_keys (tenant_id)",
        # No foreign key: audit rows outlive the tenant they name (the trail of a deleted tenant,
        # including its deletion, stays), and refused writes may name tenants that do not exist.
        """CREATE TABLE audit (
            sequence INTEGER PRIMARY KEY AUTOINCREMENT,
            tenant_id TEXT NOT NULL,
            key_id TEXT NOT NULL,
            action TEXT NOT NULL,
            target TEXT NOT NULL,
            result TEXT NOT NULL,
            at INTEGER NOT NULL
        )""",
        "CREATE INDEX audit_tenant ON audit (tenant_id, sequence)",
        """CREATE TABLE kek_state (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            version INTEGER NOT NULL DEFAULT 1
        )""",
        "INSERT INTO kek_state (id) VALUES (1)",
        # The operator key acts on the `default` tenant (modelyard.tenancy.DEFAULT_TENANT_ID).
        """INSERT INTO tenants (id, name, secrets_manager, created_at)
            VALUES ('default', 'default', '', CAST(strftime('%s', 'now') AS INTEGER))""",
    ),
)

V2 = Migration(
    2,
    "secret scopes and serving endpoints",
    (
        """CREATE TABLE scoped_secrets (
            id TEXT PRIMARY KEY,
            tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
            scope TEXT NOT NULL,
            key TEXT NOT NULL,
            ciphertext BLOB NOT NULL,
            nonce BLOB NOT NULL,
            wrapped_key BLOB NOT NULL,
            key_nonce BLOB NOT NULL,
            kek_version INTEGER NOT NULL,
            hint TEXT NOT NULL DEFAULT '',
            updated_at INTEGER NOT NULL,
            UNIQUE (tenant_id, scope, key)
        )""",
        # An endpoint's served entities (with the ids of the providers it owns) and its traffic
        # split, as JSON: they are only ever read and replaced whole.
        """CREATE TABLE endpoints (
            tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            data TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            PRIMARY KEY (tenant_id, name)
        )""",
    ),
)

MIGRATIONS: tuple[Migration, ...] = (V1, V2)

_CREATE_TABLE = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    applied_at INTEGER NOT NULL
)"""


def applied_versions(conn: sqlite3.Connection) -> set[int]:
    sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
    if conn.execute(sql).fetchone() is None:
        return set()
    return {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}


def migrate(conn: sqlite3.Connection, migrations: Sequence[Migration] = MIGRATIONS) -> list[int]:
    """Apply the migrations this file lacks; returns the versions this call applied.

    `conn` must be in autocommit mode (isolation_level=None) with a busy timeout set. An up-to-date
    file is only read; the write lock is taken only when a migration may be missing.
    """
    _check_order(migrations)
    applied = applied_versions(conn)
    newest = max((m.version for m in migrations), default=0)
    if applied and max(applied) > newest:
        raise SchemaTooNew(f"the database has schema version {max(applied)}; this Modelyard knows {newest}")
    missing = [m for m in migrations if m.version not in applied]
    if missing:
        _in_transaction(conn, lambda: conn.execute(_CREATE_TABLE))
    return [m.version for m in missing if _apply(conn, m)]


def _check_order(migrations: Sequence[Migration]) -> None:
    versions = [m.version for m in migrations]
    if versions != sorted(set(versions)) or any(v < 1 for v in versions):
        raise ValueError("migrations must have distinct, increasing, positive versions")


def _apply(conn: sqlite3.Connection, migration: Migration) -> bool:
    """Apply one migration unless present; the check runs under the write lock."""

    def run() -> bool:
        if conn.execute("SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,)).fetchone():
            return False
        for statement in migration.statements:
            conn.execute(statement)
        conn.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
            (migration.version, int(time.time())),
        )
        return True

    return _in_transaction(conn, run)


def _in_transaction(conn: sqlite3.Connection, work: Callable[[], T]) -> T:
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = work()
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result
