"""API keys: the operator's admin key, stored only as a hash and compared in constant time."""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

ADMIN_KEY_ENV = "MODELYARD_ADMIN_KEY"
HASH_FILE = "admin_key.sha256"
KEY_FILE = "admin.key"
KEY_PREFIX = "my-"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class AdminBootstrap:
    key_hash: str
    new_key: str | None
    """The generated key, set only on the first start that created it (to print once)."""


def bootstrap_admin_key(data_dir: Path, env: dict[str, str] | None = None) -> AdminBootstrap:
    """The admin key from MODELYARD_ADMIN_KEY, else the stored hash, else a new generated key.

    A generated key is written once, mode 0600, to DATA_DIR/admin.key for the operator; the gateway
    itself keeps only DATA_DIR/admin_key.sha256.
    """
    env = dict(os.environ) if env is None else env
    if env.get(ADMIN_KEY_ENV):
        return AdminBootstrap(hash_key(env[ADMIN_KEY_ENV]), None)
    data_dir.mkdir(parents=True, exist_ok=True)
    hash_path = data_dir / HASH_FILE
    if hash_path.exists():
        return AdminBootstrap(hash_path.read_text().strip(), None)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    _write_private(data_dir / KEY_FILE, key + "\n")
    _write_private(hash_path, hash_key(key) + "\n")
    return AdminBootstrap(hash_key(key), key)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # the mode argument applies only when the file is created
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
