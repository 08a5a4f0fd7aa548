"""The admin key: generated once, stored as a hash only, checked as a bearer token."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest
from modelyard.auth import (
    ADMIN_KEY_ENV,
    HASH_FILE,
    KEY_FILE,
    KEY_PREFIX,
    bootstrap_admin_key,
    hash_key,
)
from modelyard.errors import ClientError
from modelyard.store.records import AuditRecord, KeyRecord, TenantRecord
from modelyard.store.sqlite import SqliteStore
from modelyard.tenancy import DEFAULT_TENANT_ID, Authenticator, key_digest


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_bootstrap_writes_private_key_and_hash_only(tmp_path: Path) -> None:
    data_dir = tmp_path / "state" / "nested"
    boot = bootstrap_admin_key(data_dir, env={})
    assert boot.new_key is not None
    assert boot.new_key.startswith(KEY_PREFIX)
    assert len(boot.new_key) >= len(KEY_PREFIX) + 32
    key_file, hash_file = data_dir / KEY_FILE, data_dir / HASH_FILE
    assert key_file.name == "admin.key"
    assert key_file.read_text() == boot.new_key + "\n"
    assert _mode(key_file) == 0o600
    assert _mode(hash_file) == 0o600
    stored = hash_file.read_text()
    assert stored.strip() == boot.key_hash == hashlib.sha256(boot.new_key.encode()).hexdigest()
    assert boot.new_key not in stored
    assert boot.new_key[len(KEY_PREFIX) :] not in stored
    assert sorted(p.name for p in data_dir.iterdir()) == sorted([KEY_FILE, HASH_FILE])


def test_second_bootstrap_reuses_the_hash(tmp_path: Path) -> None:
    first = bootstrap_admin_key(tmp_path, env={})
    key_text = (tmp_path / KEY_FILE).read_text()
    second = bootstrap_admin_key(tmp_path, env={})
    assert second.new_key is None
    assert second.key_hash == first.key_hash
    assert (tmp_path / KEY_FILE).read_text() == key_text


def test_bootstrap_with_only_a_hash_file_keeps_it(tmp_path: Path) -> None:
    (tmp_path / HASH_FILE).write_text(hash_key("my-operator-key") + "\n")
    boot = bootstrap_admin_key(tmp_path, env={})
    assert (boot.key_hash, boot.new_key) == (hash_key("my-operator-key"), None)
    assert not (tmp_path / KEY_FILE).exists()


def test_env_key_wins_and_writes_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "never-created"
    boot = bootstrap_admin_key(data_dir, env={ADMIN_KEY_ENV: "my-from-env"})
    assert (boot.key_hash, boot.new_key) == (hash_key("my-from-env"), None)
    assert not data_dir.exists()


def test_env_key_wins_over_a_stored_hash(tmp_path: Path) -> None:
    stored = bootstrap_admin_key(tmp_path, env={})
    boot = bootstrap_admin_key(tmp_path, env={ADMIN_KEY_ENV: "my-from-env"})
    assert boot.key_hash == hash_key("my-from-env") != stored.key_hash
    assert (tmp_path / HASH_FILE).read_text().strip() == stored.key_hash


def test_empty_env_key_is_ignored(tmp_path: Path) -> None:
    boot = bootstrap_admin_key(tmp_path, env={ADMIN_KEY_ENV: ""})
    assert boot.new_key is not None
    assert boot.key_hash == hash_key(boot.new_key)


def test_generated_keys_differ(tmp_path: Path) -> None:
    a = bootstrap_admin_key(tmp_path / "a", env={})
    b = bootstrap_admin_key(tmp_path / "b", env={})
    assert a.new_key != b.new_key


KEY = "my-correct-horse-battery-staple"


@pytest.mark.parametrize(
    "header",
    [
        f"Bearer {KEY}",
        f"bearer {KEY}",
        f"BEARER {KEY}",
        f"bEaReR {KEY}",
        f"Bearer {KEY}  ",
        f"Bearer   {KEY}",
    ],
)
def test_operator_key_is_accepted(header: str, tmp_path: Path) -> None:
    principal = Authenticator(hash_key(KEY), SqliteStore(tmp_path / "s.db")).authenticate(header, None)
    assert principal.operator
    assert principal.key_id == "operator"
    assert principal.tenant_id == DEFAULT_TENANT_ID
    assert principal.scopes == {"admin", "inference"}


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        KEY,
        f"Basic {KEY}",
        f"Token {KEY}",
        f"Bearer{KEY}",
        f"Bearer {KEY}x",
        f"Bearer {KEY[:-1]}",
        f"Bearer {KEY.upper()}",
        f"Bearer {hash_key(KEY)}",
    ],
)
def test_bad_keys_are_rejected_with_401(header: str | None, tmp_path: Path) -> None:
    with pytest.raises(ClientError) as caught:
        Authenticator(hash_key(KEY), SqliteStore(tmp_path / "s.db")).authenticate(header, None)
    error = caught.value
    assert error.status == 401
    assert error.code == "invalid_api_key"
    assert error.type == "invalid_request_error"
    assert KEY not in error.message


def test_regenerated_key_file_is_private_even_if_it_existed(tmp_path: Path) -> None:
    stale = tmp_path / KEY_FILE
    stale.write_text("old\n")
    stale.chmod(0o644)
    boot = bootstrap_admin_key(tmp_path, env={})
    assert stale.read_text() == f"{boot.new_key}\n"
    assert _mode(stale) == 0o600


def _tenant_key(store: SqliteStore, secret: str, **fields: object) -> KeyRecord:
    store.create_tenant(
        TenantRecord("t1", "acme", "", 1), None, AuditRecord("t1", "operator", "t", "t1", "ok", 1)
    )
    key = KeyRecord(
        id="k1",
        tenant_id="t1",
        name="svc",
        key_hash=key_digest(secret),
        prefix=secret[:8],
        scopes=("inference",),
        created_at=1,
        **fields,  # type: ignore[arg-type]
    )
    store.create_key(key, AuditRecord("t1", "operator", "keys.create", "k1", "ok", 1))
    return key


def test_tenant_key_carries_its_tenant_scopes_and_models(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    _tenant_key(store, "my-tenant-key", models=("a/b",))
    principal = Authenticator(hash_key(KEY), store).authenticate("Bearer my-tenant-key", None)
    assert (principal.tenant_id, principal.key_id, principal.operator) == ("t1", "k1", False)
    assert principal.scopes == {"inference"} and principal.may_use("a/b") and not principal.may_use("c")
    with pytest.raises(ClientError) as caught:
        principal.require("admin")
    assert caught.value.status == 403


def test_revocation_applies_to_the_next_request_even_from_another_connection(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    _tenant_key(store, "my-tenant-key")
    authenticator = Authenticator(hash_key(KEY), store)
    assert authenticator.authenticate("Bearer my-tenant-key", None).key_id == "k1"
    other = SqliteStore(tmp_path / "s.db")
    assert other.revoke_key("t1", "k1", 5, AuditRecord("t1", "operator", "keys.delete", "k1", "ok", 5))
    with pytest.raises(ClientError) as caught:
        authenticator.authenticate("Bearer my-tenant-key", None)
    assert caught.value.status == 401


def test_expired_key_is_401(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    _tenant_key(store, "my-tenant-key", expires_at=100)
    with pytest.raises(ClientError) as caught:
        Authenticator(hash_key(KEY), store, clock=lambda: 100.0).authenticate("Bearer my-tenant-key", None)
    assert caught.value.status == 401


@pytest.mark.parametrize(("tenant", "status"), [("acme", None), ("t1", None), ("other", 404)])
def test_tenant_header(tmp_path: Path, tenant: str, status: int | None) -> None:
    store = SqliteStore(tmp_path / "s.db")
    _tenant_key(store, "my-tenant-key")
    authenticator = Authenticator(hash_key(KEY), store)
    for header in (f"Bearer {KEY}", "Bearer my-tenant-key"):
        if status is None:
            assert authenticator.authenticate(header, tenant).tenant_id == "t1"
        else:
            with pytest.raises(ClientError) as caught:
                authenticator.authenticate(header, tenant)
            assert caught.value.status == status
