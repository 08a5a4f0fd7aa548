"""The SQLite store: every Store method, tenant isolation, constraints, atomicity, migrations and
concurrent processes. No servers; every test works in its own tmp_path."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import stat
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from modelyard.store.base import Store, StoreError
from modelyard.store.migrations import MIGRATIONS, Migration, SchemaTooNew
from modelyard.store.records import (
    SECRET_MARKER,
    AuditRecord,
    KeyRecord,
    ModelRecord,
    ProviderChange,
    ProviderRecord,
    Sealed,
    SecretRecord,
    TenantRecord,
)
from modelyard.store.sqlite import SqliteStore

A, B = "tenant-a", "tenant-b"
TABLES = {"tenants", "providers", "secrets", "models", "api_keys", "audit", "kek_state", "schema_migrations"}


def audit(tenant_id: str = A, action: str = "test", target: str = "t", result: str = "ok") -> AuditRecord:
    return AuditRecord(tenant_id, "key-1", action, target, result, 1000)


def tenant(id_: str, name: str | None = None) -> TenantRecord:
    return TenantRecord(id_, name or f"name-{id_}", "", 10)


def sealed(seed: int = 1, kek: int = 1) -> Sealed:
    return Sealed(bytes([seed]) * 32, b"n" * 12, b"w" * 48, b"k" * 12, kek)


def secret(id_: str, provider_id: str, tenant_id: str = A, kek: int = 1) -> SecretRecord:
    return SecretRecord(id_, tenant_id, provider_id, "sealed", sealed(len(id_) % 250, kek), hint="abcd")


def reference(id_: str, provider_id: str, tenant_id: str = A) -> SecretRecord:
    return SecretRecord(
        id_, tenant_id, provider_id, "reference", reference="vault:kv/x#k", hint="vault:kv/x#k"
    )


def provider(
    id_: str, tenant_id: str = A, name: str | None = None, secrets: tuple[str, ...] = ()
) -> ProviderRecord:
    data: dict[str, Any] = {"base_url": "https://example.test/v1", "n": 3, "flag": True, "nested": {"a": [1]}}
    data.update({f"key{i}": {SECRET_MARKER: sid} for i, sid in enumerate(secrets)})
    return ProviderRecord(id_, tenant_id, name or f"name-{id_}", "openai", data, 20, 20)


def model(
    id_: str, provider_id: str, tenant_id: str = A, alias: str = "chat", model_id: str = "gpt"
) -> ModelRecord:
    return ModelRecord(id_, tenant_id, provider_id, model_id, alias, 30, weight=2)


def key(id_: str, tenant_id: str = A) -> KeyRecord:
    return KeyRecord(
        id_, tenant_id, f"key {id_}", f"hash-{id_}", "my-abcde", ("admin", "inference"), 40, ("chat",)
    )


def counts(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in sorted(TABLES)}


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "store.db"


@pytest.fixture
def store(path: Path) -> Iterator[SqliteStore]:
    with SqliteStore(path) as s:
        s.create_tenant(tenant(A), None, audit(A, "tenant.create"))
        s.create_tenant(tenant(B), None, audit(B, "tenant.create"))
        yield s


def add_provider(store: Store, id_: str = "p1", tenant_id: str = A, **kw: Any) -> ProviderRecord:
    record = provider(id_, tenant_id, secrets=(f"{id_}-s1", f"{id_}-s2"), **kw)
    secrets = [secret(f"{id_}-s1", id_, tenant_id), reference(f"{id_}-s2", id_, tenant_id)]
    store.create_provider(record, secrets, audit(tenant_id, "providers.create", id_))
    return record


# opening


def test_a_new_store_is_wal_private_and_has_the_default_tenant(path: Path) -> None:
    store: Store = SqliteStore(path)
    default = store.get_tenant("default")
    assert default is not None and (default.name, default.secrets_manager) == ("default", "")
    assert store.kek_version() == 1 and store.list_audit("default", 10) == []
    store.close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        applied = conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
        assert applied == [(m.version,) for m in MIGRATIONS]
    assert tables(path) >= TABLES


# tenants


def test_tenant_crud(store: SqliteStore) -> None:
    first = key("k1", "t3")
    store.create_tenant(tenant("t3", "third"), first, audit("t3", "tenant.create"))
    assert store.get_tenant("t3") == tenant("t3", "third") == store.tenant_by_name("third")
    assert store.key_by_hash("hash-k1") == first
    assert {t.id for t in store.list_tenants()} == {"default", A, B, "t3"}
    store.update_tenant(
        replace(tenant("t3"), name="renamed", secrets_manager="https://vault", created_at=99), audit("t3")
    )
    assert store.get_tenant("t3") == TenantRecord("t3", "renamed", "https://vault", 10)
    assert store.tenant_by_name("third") is None
    with pytest.raises(StoreError) as missing:
        store.update_tenant(tenant("nope"), audit())
    assert missing.value.code == "not_found"
    assert store.delete_tenant("t3", audit("t3", "tenant.delete"))
    assert store.get_tenant("t3") is None and store.key_by_hash("hash-k1") is None
    assert not store.delete_tenant("t3", audit("t3", "tenant.delete"))
    assert [a.action for a in store.list_audit("t3", 10)] == ["tenant.delete", "test", "tenant.create"]


def test_tenant_conflicts_write_nothing(store: SqliteStore, path: Path) -> None:
    before = counts(path)
    with pytest.raises(StoreError) as dup:
        store.create_tenant(tenant("t3", f"name-{A}"), key("k9", "t3"), audit("t3"))
    assert (dup.value.code, dup.value.message) == ("conflict", f"a tenant named 'name-{A}' already exists")
    with pytest.raises(StoreError) as dup_id:
        store.create_tenant(tenant(A, "other"), None, audit(A))
    assert dup_id.value.code == "conflict" and A in dup_id.value.message
    with pytest.raises(StoreError) as rename:
        store.update_tenant(tenant(B, f"name-{A}"), audit(B))
    assert rename.value.code == "conflict"
    assert counts(path) == before


def test_deleting_a_tenant_cascades_to_everything_but_its_audit(store: SqliteStore, path: Path) -> None:
    add_provider(store, "pa", A)
    store.add_model(model("ma", "pa"), audit())
    store.create_key(key("ka"), audit())
    add_provider(store, "pb", B)
    store.add_model(model("mb", "pb", B), audit(B))
    assert store.delete_tenant(A, audit(A, "tenant.delete"))
    assert store.list_providers(A) == [] and store.list_models(A) == [] and store.list_keys(A) == []
    assert store.get_secrets(["pa-s1", "pa-s2"]) == {}
    assert [p.id for p in store.list_providers()] == ["pb"] and len(
        store.get_secrets(["pb-s1", "pb-s2"])
    ) == 2
    assert store.list_audit(A, 1)[0].action == "tenant.delete"
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []


# providers and secrets


def test_provider_crud(store: SqliteStore) -> None:
    record = add_provider(store)
    assert store.get_provider(A, "p1") == record
    assert store.list_providers(A) == [record] and store.list_providers() == [record]
    found = store.get_secrets(["p1-s1", "p1-s2", "p1-s1", "unknown"])
    assert found == {"p1-s1": secret("p1-s1", "p1"), "p1-s2": reference("p1-s2", "p1")}
    assert store.get_secrets([]) == {}
    data = {**record.data, "key0": {SECRET_MARKER: "p1-s3"}, "base_url": "https://other.test"}
    updated = replace(record, name="renamed", data=data, updated_at=25, created_at=99)
    change = ProviderChange(updated, (secret("p1-s3", "p1"),), ("p1-s1",))
    store.update_provider(change, audit(action="providers.update"))
    assert store.get_provider(A, "p1") == replace(updated, created_at=20)
    assert set(store.get_secrets(["p1-s1", "p1-s2", "p1-s3"])) == {"p1-s2", "p1-s3"}
    assert store.delete_provider(A, "p1", audit(action="providers.delete"))
    assert store.get_provider(A, "p1") is None and not store.delete_provider(A, "p1", audit())
    actions = [a.action for a in store.list_audit(A, 10)]
    assert actions == ["providers.delete", "providers.update", "providers.create", "tenant.create"]


def test_deleting_a_provider_cascades_to_its_secrets_and_models(store: SqliteStore) -> None:
    add_provider(store, "p1")
    add_provider(store, "p2")
    store.add_model(model("m1", "p1"), audit())
    store.add_model(model("m2", "p2"), audit())
    assert store.delete_provider(A, "p1", audit())
    assert store.get_secrets(["p1-s1", "p1-s2"]) == {}
    assert [m.id for m in store.list_models(A)] == ["m2"] and len(store.get_secrets(["p2-s1", "p2-s2"])) == 2


def test_provider_conflicts_and_failures_write_nothing(store: SqliteStore, path: Path) -> None:
    add_provider(store, "p1")
    add_provider(store, "p2")
    before = counts(path)
    with pytest.raises(StoreError) as dup:
        add_provider(store, "p3", name="name-p1")
    assert (dup.value.code, dup.value.message) == ("conflict", "a provider named 'name-p1' already exists")
    with pytest.raises(StoreError) as dup_secret:  # the second secret collides: the provider must not stay
        store.create_provider(
            provider("p4", secrets=("p4-s1",)), [secret("p4-s1", "p4"), secret("p4-s1", "p4")], audit()
        )
    assert dup_secret.value.code == "conflict" and "p4-s1" not in dup_secret.value.message
    rename = ProviderChange(replace(provider("p2"), name="name-p1"), (secret("p2-s9", "p2"),), ("p2-s1",))
    with pytest.raises(StoreError) as renamed:
        store.update_provider(rename, audit())
    assert renamed.value.code == "conflict"
    with pytest.raises(StoreError) as no_tenant:
        add_provider(store, "p5", "no-such-tenant")
    assert no_tenant.value.code == "not_found"
    assert counts(path) == before and store.get_provider(A, "p2") == provider(
        "p2", secrets=("p2-s1", "p2-s2")
    )


def test_a_provider_only_refers_to_its_own_secrets(store: SqliteStore, path: Path) -> None:
    add_provider(store, "pb", B)
    add_provider(store, "p1")
    before = counts(path)
    with pytest.raises(StoreError) as foreign:  # data pointing at tenant B's secret
        store.create_provider(provider("p2", secrets=("pb-s1",)), [], audit())
    assert foreign.value.code == "not_found"
    with pytest.raises(StoreError) as other:  # a secret record of another provider
        store.create_provider(provider("p2"), [secret("x", "p1")], audit())
    assert other.value.code == "invalid"
    steal = ProviderChange(provider("p1", secrets=("pb-s1",)), (), ("p1-s1",))
    with pytest.raises(StoreError) as stolen:
        store.update_provider(steal, audit())
    assert stolen.value.code == "not_found"
    dangling = ProviderChange(provider("p1", secrets=("p1-s1",)), (), ("p1-s1",))
    with pytest.raises(StoreError):
        store.update_provider(dangling, audit())
    assert counts(path) == before and len(store.get_secrets(["p1-s1", "p1-s2"])) == 2


def test_kek_rotation_round_trip(store: SqliteStore) -> None:
    add_provider(store, "p1")
    store.create_provider(provider("p2", secrets=("p2-s1",)), [secret("p2-s1", "p2", kek=2)], audit())
    assert [s.id for s in store.list_sealed_secrets(2, 10)] == ["p1-s1"]  # references are not sealed
    assert [s.id for s in store.list_sealed_secrets(3, 1)] == ["p1-s1"]
    assert store.list_sealed_secrets(3, 0) == []
    store.set_kek_version(3)
    assert store.kek_version() == 3
    store.rewrap_secrets({"p1-s1": sealed(7, 3), "p2-s1": sealed(8, 3), "gone": sealed(9, 3)})
    assert store.list_sealed_secrets(3, 10) == []
    found = store.get_secrets(["p1-s1", "p2-s1"])
    assert found["p1-s1"].sealed == sealed(7, 3) and found["p2-s1"].sealed == sealed(8, 3)
    assert found["p1-s1"].hint == "abcd"
    with pytest.raises(StoreError):
        store.set_kek_version(0)


# models


def test_model_crud(store: SqliteStore, path: Path) -> None:
    add_provider(store, "p1")
    add_provider(store, "p2")
    m1, m2, m3 = model("m1", "p1"), model("m2", "p1", alias="chat", model_id="gpt-2"), model("m3", "p2")
    for m in (m1, m2, m3):
        store.add_model(m, audit(action="models.enable"))
    assert store.list_models(A) == [m1, m2, m3] and store.list_models() == [m1, m2, m3]
    assert store.list_models(A, "p2") == [m3] and store.list_models(provider_id="p1") == [m1, m2]
    before = counts(path)
    with pytest.raises(StoreError) as dup:
        store.add_model(model("m4", "p1"), audit())
    assert (dup.value.code, dup.value.message) == (
        "conflict",
        "the model 'gpt' is already enabled as 'chat' on this provider",
    )
    with pytest.raises(StoreError) as missing:
        store.add_model(model("m5", "nope"), audit())
    assert missing.value.code == "not_found"
    assert counts(path) == before
    assert store.remove_model(A, "p1", "m1", audit())  # by record id
    assert store.remove_model(A, "p2", "gpt", audit())  # by provider model id
    assert store.remove_model(A, "p1", "chat", audit())  # by alias
    assert not store.remove_model(A, "p1", "chat", audit())
    assert store.list_models() == []
    assert counts(path)["audit"] == before["audit"] + 3


# keys


def test_key_crud(store: SqliteStore, path: Path) -> None:
    k = key("k1")
    store.create_key(k, audit(action="keys.create"))
    assert store.key_by_hash("hash-k1") == k and store.list_keys(A) == [k]
    assert store.key_by_hash("hash-nope") is None
    before = counts(path)
    with pytest.raises(StoreError) as dup:
        store.create_key(replace(key("k2"), key_hash="hash-k1"), audit())
    assert dup.value.code == "conflict" and "hash-k1" not in dup.value.message
    with pytest.raises(StoreError) as missing:
        store.create_key(key("k3", "no-tenant"), audit())
    assert missing.value.code == "not_found" and counts(path) == before
    assert store.revoke_key(A, "k1", 500, audit(action="keys.delete"))
    assert store.revoke_key(A, "k1", 600, audit(action="keys.delete"))
    assert store.key_by_hash("hash-k1") == replace(k, revoked_at=500)
    assert not store.revoke_key(A, "k9", 600, audit())


# audit


def test_audit_is_newest_first_and_pages_back(store: SqliteStore) -> None:
    for i in range(5):
        store.record_audit(audit(action=f"a{i}", result="conflict"))
    newest = store.list_audit(A, 3)
    assert [a.action for a in newest] == ["a4", "a3", "a2"]
    assert newest[0].sequence > newest[1].sequence > newest[2].sequence > 0
    assert [a.action for a in store.list_audit(A, 10, newest[-1].sequence)] == ["a1", "a0", "tenant.create"]
    assert store.list_audit(A, 0) == [] and store.list_audit(A, -1) == []
    assert newest[0] == replace(audit(action="a4", result="conflict"), sequence=newest[0].sequence)


# isolation


def test_tenant_b_cannot_reach_tenant_a(store: SqliteStore, path: Path) -> None:
    record = add_provider(store, "pa", A)
    store.add_model(model("ma", "pa"), audit())
    store.create_key(key("ka"), audit())
    before = counts(path)
    assert store.get_provider(B, "pa") is None and store.list_providers(B) == []
    assert store.list_models(B) == [] and store.list_models(B, "pa") == []
    assert store.list_keys(B) == [] and store.list_audit(B, 100) == [store.list_audit(B, 1)[0]]
    assert not store.delete_provider(B, "pa", audit(B))
    assert not store.remove_model(B, "pa", "ma", audit(B)) and not store.remove_model(
        B, "pa", "chat", audit(B)
    )
    assert not store.revoke_key(B, "ka", 5, audit(B))
    with pytest.raises(StoreError) as upd:
        store.update_provider(ProviderChange(replace(record, tenant_id=B, name="mine")), audit(B))
    assert upd.value.code == "not_found" and "name-pa" not in upd.value.message
    with pytest.raises(StoreError) as steal_model:
        store.add_model(model("mb", "pa", B), audit(B))
    assert steal_model.value.code == "not_found"
    assert counts(path) == before
    assert store.get_provider(A, "pa") == record and store.key_by_hash("hash-ka") == key("ka")


# hostile and oversized strings

HOSTILE = [
    "'; DROP TABLE providers; --",
    '" OR 1=1 --',
    "Robert'); DELETE FROM secrets WHERE ('1'='1",
    "名前 🚀 Ünïcødé \u202eRTL",
    "nul\x00byte",
    "% _ \\ ? :name @p $1",
]


@pytest.mark.parametrize("s", HOSTILE)
def test_hostile_strings_round_trip_verbatim(store: SqliteStore, path: Path, s: str) -> None:
    t = TenantRecord(f"t{s}", f"n{s}", s, 1)
    first = KeyRecord(f"k{s}", t.id, s, f"h{s}", s, ("admin",), 2, (s, s + s))
    entry = AuditRecord(t.id, s, s, s, s, 3)
    store.create_tenant(t, first, entry)
    p = ProviderRecord(f"p{s}", t.id, s, s, {s: s, "secret": {SECRET_MARKER: f"s{s}"}, "list": [s]}, 4, 5)
    secrets = [
        SecretRecord(f"s{s}", t.id, p.id, "sealed", Sealed(s.encode(), b"\x00'", b"--", b";", 1), hint=s),
        SecretRecord(f"r{s}", t.id, p.id, "reference", reference=s, hint=s),
    ]
    store.create_provider(p, secrets, entry)
    m = ModelRecord(f"m{s}", t.id, p.id, s, s, 6)
    store.add_model(m, entry)
    assert store.get_tenant(t.id) == t == store.tenant_by_name(t.name)
    assert store.key_by_hash(first.key_hash) == first and store.list_keys(t.id) == [first]
    assert store.get_provider(t.id, p.id) == p and store.list_providers(t.id) == [p]
    assert store.get_secrets([x.id for x in secrets]) == {x.id: x for x in secrets}
    assert store.list_models(t.id, p.id) == [m]
    store.update_tenant(replace(t, name=s + "2", secrets_manager=s + s), entry)
    assert store.tenant_by_name(s + "2") == replace(t, name=s + "2", secrets_manager=s + s)
    renamed = replace(p, name=s + "2", data={**p.data, s + "2": [s, {s: None}]}, updated_at=8)
    store.update_provider(ProviderChange(renamed, (), (f"r{s}",)), entry)
    assert store.get_provider(t.id, p.id) == renamed and list(store.get_secrets([f"r{s}", f"s{s}"])) == [
        f"s{s}"
    ]
    assert [replace(a, sequence=0) for a in store.list_audit(t.id, 10)] == [entry] * 5
    assert store.remove_model(t.id, p.id, s, entry) and store.revoke_key(t.id, first.id, 7, entry)
    assert store.delete_provider(t.id, p.id, entry) and store.delete_tenant(t.id, entry)
    assert tables(path) >= TABLES
    assert len(store.list_providers()) == 0 and len(store.list_tenants()) == 3


def test_oversized_and_invalid_values_are_refused(store: SqliteStore, path: Path) -> None:
    add_provider(store, "p1")
    long = "x" * 257
    store.create_tenant(tenant("t3", "x" * 256), None, audit())  # the bound itself is fine
    before = counts(path)
    attempts = [
        lambda: store.create_tenant(tenant("t4", long), None, audit()),
        lambda: add_provider(store, "p2", name=long),
        lambda: store.create_provider(replace(provider("p3"), data={"blob": "x" * (1 << 20)}), [], audit()),
        lambda: store.create_provider(
            provider("p3"), [replace(reference("s", "p3"), reference="r" * 2049)], audit()
        ),
        lambda: store.create_provider(
            provider("p3"), [replace(secret("s", "p3"), sealed=sealed())], audit(target=long * 8)
        ),
        lambda: store.add_model(model("m1", "p1", alias=long), audit()),
        lambda: store.create_key(replace(key("k1"), name=long), audit()),
        lambda: store.rewrap_secrets({"p1-s1": replace(sealed(), ciphertext=b"x" * ((1 << 20) + 1))}),
        lambda: store.add_model(replace(model("m1", "p1"), weight=1 << 64), audit()),
    ]
    for attempt in attempts:
        with pytest.raises(StoreError) as refused:
            attempt()
        assert refused.value.code == "too_large", refused.value.message
    for attempt in [
        lambda: store.create_tenant(tenant("t4", "lone \ud800"), None, audit()),
        lambda: store.create_provider(replace(provider("p3"), data={"x": float("nan")}), [], audit()),
        lambda: store.create_provider(provider("p3"), [SecretRecord("s", A, "p3", "sealed")], audit()),
    ]:
        with pytest.raises(StoreError) as invalid:
            attempt()
        assert invalid.value.code == "invalid"
    assert counts(path) == before


# version


def test_version_changes_when_any_connection_commits(store: SqliteStore, path: Path) -> None:
    v0 = store.version()
    assert store.version() == v0 and store.list_providers() == [] and store.version() == v0
    with SqliteStore(path) as other:
        add_provider(other, "p1")
        v1 = store.version()
        assert v1 != v0 and store.version() == v1
        assert store.get_provider(A, "p1") is not None
        add_provider(store, "p2")
        v2 = store.version()
        assert v2 not in (v0, v1)
        other_v = other.version()
        other.record_audit(audit())
        assert store.version() != v2 and other.version() != other_v


# migrations

NEXT = len(MIGRATIONS) + 1
V2 = Migration(
    NEXT, "test: an extra table", ("CREATE TABLE extra (x INTEGER)", "INSERT INTO extra VALUES (42)")
)


def test_a_new_migration_is_applied_once(path: Path) -> None:
    SqliteStore(path).close()
    with SqliteStore(path, migrations=(*MIGRATIONS, V2)) as store:
        assert store.get_tenant("default") is not None
    SqliteStore(path, migrations=(*MIGRATIONS, V2)).close()
    with sqlite3.connect(path) as conn:
        applied = [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
        assert applied == list(range(1, NEXT + 1))
        assert conn.execute("SELECT x FROM extra").fetchall() == [(42,)]
    with pytest.raises(SchemaTooNew):
        SqliteStore(path)


def test_a_failing_migration_leaves_no_trace(path: Path) -> None:
    SqliteStore(path).close()
    broken = Migration(NEXT, "broken", ("CREATE TABLE half (x INTEGER)", "INSERT INTO nowhere VALUES (1)"))
    with pytest.raises(sqlite3.OperationalError):
        SqliteStore(path, migrations=(*MIGRATIONS, broken))
    assert "half" not in tables(path)
    with SqliteStore(path, migrations=(*MIGRATIONS, V2)):
        pass
    assert "extra" in tables(path)


def _open_fresh(path: str, barrier: Any) -> None:
    barrier.wait()
    SqliteStore(Path(path), migrations=(*MIGRATIONS, V2)).close()


def test_concurrent_openers_apply_each_migration_once(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    for round_ in range(2):
        path = tmp_path / f"fresh{round_}.db"
        barrier = ctx.Barrier(4)
        procs = [ctx.Process(target=_open_fresh, args=(str(path), barrier)) for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(30)
        assert [p.exitcode for p in procs] == [0] * 4
        with sqlite3.connect(path) as conn:
            applied = conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
            assert applied == [(version,) for version in range(1, NEXT + 1)]
            assert conn.execute("SELECT count(*) FROM extra").fetchone() == (1,)
            assert conn.execute("SELECT count(*) FROM tenants").fetchone() == (1,)


# concurrency


def _writer(path: str, prefix: str, count: int, barrier: Any) -> None:
    with SqliteStore(Path(path)) as store:
        barrier.wait()
        for i in range(count):
            add_provider(store, f"{prefix}{i}", "default")
            store.version()


def test_two_processes_write_concurrently(path: Path) -> None:
    SqliteStore(path).close()
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_writer, args=(str(path), prefix, 200, barrier)) for prefix in ("x", "y")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    with SqliteStore(path) as store:
        ids = {p.id for p in store.list_providers("default")}
        assert ids == {f"{prefix}{i}" for prefix in "xy" for i in range(200)}
        assert len(store.get_secrets([f"{i}-s{n}" for i in ids for n in (1, 2)])) == 800
        assert len(store.list_audit("default", 1000)) == 400


def test_threads_share_one_store(store: SqliteStore) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def work(n: int) -> None:
        start.wait()
        try:
            for i in range(50):
                add_provider(store, f"t{n}-{i}")
                store.version()
                store.list_providers(A)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(work, range(4)))
    assert errors == [] and len(store.list_providers(A)) == 200
