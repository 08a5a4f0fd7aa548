"""AES-256-GCM envelope encryption, as pure functions.

A secret's value is encrypted under a fresh random 256-bit data key; the data key is encrypted
("wrapped") under a KEK. Both encryptions bind associated data, so an envelope only opens as what
it was sealed as:

* the value: ``modelyard:value:{secret_id}`` — moving a ciphertext to another record fails;
* the data key: ``modelyard:dek:v{kek_version}:{secret_id}`` — moving a wrapped key to another
  record, or relabelling it with another KEK version, fails.

Nonces are 12 random bytes; a data key encrypts exactly one value, a KEK wraps at most a few
million data keys per version, far from GCM's random-nonce limit.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from modelyard.secrets.errors import SecretError
from modelyard.store.records import Sealed

KEY_BYTES = 32
NONCE_BYTES = 12


def value_aad(secret_id: str) -> bytes:
    return f"modelyard:value:{secret_id}".encode()


def key_aad(secret_id: str, kek_version: int) -> bytes:
    return f"modelyard:dek:v{kek_version}:{secret_id}".encode()


def seal(secret_id: str, plaintext: str, kek: bytes, kek_version: int) -> Sealed:
    """Encrypt `plaintext` under a new data key wrapped by `kek` (the KEK of `kek_version`)."""
    _check_kek(kek)
    data_key = AESGCM.generate_key(bit_length=256)
    nonce = os.urandom(NONCE_BYTES)
    ciphertext = AESGCM(data_key).encrypt(nonce, plaintext.encode("utf-8"), value_aad(secret_id))
    key_nonce, wrapped_key = _wrap(secret_id, data_key, kek, kek_version)
    return Sealed(ciphertext, nonce, wrapped_key, key_nonce, kek_version)


def open_sealed(secret_id: str, sealed: Sealed, kek: bytes) -> str:
    """The plaintext; `kek` must be the KEK of `sealed.kek_version`. Raises SecretError otherwise."""
    data_key = _unwrap(secret_id, sealed, kek)
    if len(sealed.nonce) != NONCE_BYTES:
        raise _cannot_open(secret_id)
    try:
        plaintext = AESGCM(data_key).decrypt(sealed.nonce, sealed.ciphertext, value_aad(secret_id))
        return plaintext.decode("utf-8")
    except (InvalidTag, ValueError):  # UnicodeDecodeError is a ValueError
        raise _cannot_open(secret_id) from None


def rewrap(secret_id: str, sealed: Sealed, old_kek: bytes, new_kek: bytes, new_version: int) -> Sealed:
    """The same envelope with its data key re-wrapped under `new_kek`; the value is not decrypted."""
    _check_kek(new_kek)
    data_key = _unwrap(secret_id, sealed, old_kek)
    key_nonce, wrapped_key = _wrap(secret_id, data_key, new_kek, new_version)
    return Sealed(sealed.ciphertext, sealed.nonce, wrapped_key, key_nonce, new_version)


def _wrap(secret_id: str, data_key: bytes, kek: bytes, kek_version: int) -> tuple[bytes, bytes]:
    key_nonce = os.urandom(NONCE_BYTES)
    return key_nonce, AESGCM(kek).encrypt(key_nonce, data_key, key_aad(secret_id, kek_version))


def _unwrap(secret_id: str, sealed: Sealed, kek: bytes) -> bytes:
    if len(kek) != KEY_BYTES or len(sealed.key_nonce) != NONCE_BYTES:
        raise _cannot_open(secret_id)
    try:
        data_key = AESGCM(kek).decrypt(
            sealed.key_nonce, sealed.wrapped_key, key_aad(secret_id, sealed.kek_version)
        )
    except (InvalidTag, ValueError):
        raise _cannot_open(secret_id) from None
    if len(data_key) != KEY_BYTES:
        raise _cannot_open(secret_id)
    return data_key


def _check_kek(kek: bytes) -> None:
    if len(kek) != KEY_BYTES:
        raise SecretError(f"A KEK must have {KEY_BYTES} bytes.")


def _cannot_open(secret_id: str) -> SecretError:
    return SecretError(
        f"Secret {secret_id} cannot be opened: wrong master key or KEK version, or the envelope was "
        "altered or belongs to another secret."
    )
