"""The master key (root secret) and the key-encryption keys (KEKs) derived from it.

The root comes from the environment variable MODELYARD_MASTER_KEY, else from DATA_DIR/master.key,
which is generated on first use (32 random bytes, base64, mode 0600). MODELYARD_MASTER_KEY accepts,
after stripping surrounding whitespace, in this order of precedence:

* 64 hex digits: the 32 key bytes;
* base64 (standard or URL-safe alphabet, padding optional) of exactly 32 bytes: those bytes;
* any other string of at least 32 characters: its UTF-8 bytes. HKDF is not a password hash, so such
  a string must be randomly generated (e.g. ``openssl rand -base64 48``), not a memorable phrase.

Every KEK version is derived on demand with HKDF-SHA256 (fixed project salt, info
``b"modelyard kek v{version}"``), so any process holding the root opens envelopes of every version
without key distribution: KEK rotation (see SecretVault.rotate_kek) only bumps the version stored
in the store and re-wraps data keys. Rotating the root itself (a new MODELYARD_MASTER_KEY) is a
separate procedure, not covered here: every envelope would have to be re-wrapped from the old root
to the new one while both are available.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from modelyard.secrets.errors import SecretError

MASTER_KEY_ENV = "MODELYARD_MASTER_KEY"
MASTER_KEY_FILE = "master.key"
ROOT_BYTES = 32
MIN_PASSPHRASE_CHARS = 32
KEK_SALT = b"modelyard/secrets/kek-salt/2024"
"""Fixed per project: changing it changes every KEK, so it never changes."""

_HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")
_NOT_PRIVATE = ~0o600  # any permission beyond owner read/write

KeySource = Literal["env", "file", "given"]


class MasterKey:
    """The root secret. Its repr never shows key bytes."""

    def __init__(self, root: bytes, source: KeySource = "given") -> None:
        if len(root) < ROOT_BYTES:
            raise SecretError(f"The master key must have at least {ROOT_BYTES} bytes.")
        self._root = root
        self._keks: dict[int, bytes] = {}
        self.source: KeySource = source

    def __repr__(self) -> str:
        return f"MasterKey(source={self.source!r})"

    @classmethod
    def from_env_value(cls, value: str) -> MasterKey:
        """The root from a MODELYARD_MASTER_KEY value (formats in the module docstring)."""
        return cls(parse_master_key(value), "env")

    @classmethod
    def load(cls, data_dir: Path, env: Mapping[str, str] | None = None) -> MasterKey:
        """MODELYARD_MASTER_KEY if set and non-empty, else DATA_DIR/master.key (created if missing)."""
        env = os.environ if env is None else env
        value = env.get(MASTER_KEY_ENV, "")
        if value.strip():
            return cls.from_env_value(value)
        return cls(load_or_create_key_file(data_dir / MASTER_KEY_FILE), "file")

    def kek(self, version: int) -> bytes:
        """The 32-byte KEK of `version` (≥ 1): HKDF-SHA256(root, salt, info="modelyard kek v{version}")."""
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise SecretError(f"Invalid KEK version {version!r}.")
        kek = self._keks.get(version)
        if kek is None:
            hkdf = HKDF(
                algorithm=hashes.SHA256(),
                length=32,
                salt=KEK_SALT,
                info=f"modelyard kek v{version}".encode(),
            )
            kek = self._keks[version] = hkdf.derive(self._root)
        return kek


def parse_master_key(value: str) -> bytes:
    text = value.strip()
    if _HEX_KEY.fullmatch(text):
        return bytes.fromhex(text)
    decoded = _base64_32(text)
    if decoded is not None:
        return decoded
    if len(text) >= MIN_PASSPHRASE_CHARS:
        return text.encode("utf-8")
    raise SecretError(
        f"{MASTER_KEY_ENV} must be 64 hex digits, base64 of 32 bytes, "
        f"or a random string of at least {MIN_PASSPHRASE_CHARS} characters."
    )


def _base64_32(text: str) -> bytes | None:
    if len(text) not in (43, 44):
        return None
    padded = text.rstrip("=") + "="
    for altchars in (None, b"-_"):
        try:
            decoded = base64.b64decode(padded, altchars=altchars, validate=True)
        except (binascii.Error, ValueError):
            continue
        if len(decoded) == ROOT_BYTES:
            return decoded
    return None


def load_or_create_key_file(path: Path) -> bytes:
    """Read the key file (tightening its mode to 0600), or create it once, atomically.

    Concurrent first starts (several workers) agree on one key: the new file is written completely
    under a temporary name and then hard-linked into place, which fails if another process won.
    A present but unreadable or malformed file is an error, never silently replaced: replacing it
    would make every stored secret unreadable.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        _create_private(path, base64.b64encode(secrets.token_bytes(ROOT_BYTES)).decode() + "\n")
    if stat.S_IMODE(path.stat().st_mode) & _NOT_PRIVATE:
        os.chmod(path, 0o600)  # an operator-provided or copied file: owner read/write only
    try:
        root = base64.b64decode(path.read_text().strip(), validate=True)
    except (binascii.Error, ValueError, OSError):
        raise SecretError(f"The master key file {path} is unreadable or malformed.") from None
    if len(root) != ROOT_BYTES:
        raise SecretError(f"The master key file {path} does not hold {ROOT_BYTES} bytes.")
    return root


def _create_private(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    write_private(temp, text)
    try:
        os.link(temp, path)
    except FileExistsError:
        pass  # another process created it first: use theirs
    except OSError:  # a filesystem without hard links
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
    finally:
        temp.unlink(missing_ok=True)


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` with mode 0600, also when the file already existed with another mode."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
