"""AES-256-GCM envelopes: round trips, tampering, swapping, KEK versions, re-wrapping."""

from __future__ import annotations

import base64
import dataclasses

import pytest
from modelyard.secrets.envelope import NONCE_BYTES, open_sealed, rewrap, seal
from modelyard.secrets.errors import SecretError
from modelyard.secrets.keys import MasterKey
from modelyard.store.records import Sealed

MASTER = MasterKey(bytes(range(32)))
KEK1, KEK2 = MASTER.kek(1), MASTER.kek(2)
SECRET_ID = "5f0c8a52-3d0e-4a43-9a43-0c6a8f3b9d11"
OTHER_ID = "0b7a2c1e-9f44-4d6b-8f2a-7d1e5c3b2a90"
PLANTED = "sk-planted-PLAINTEXT-4242"

PLAINTEXTS = [
    pytest.param("sk-abc123", id="api-key"),
    pytest.param("", id="empty"),
    pytest.param("pässwörd 🔑 日本", id="unicode"),
    pytest.param("-----BEGIN PRIVATE KEY-----\n" + "A" * 4000 + "\n-----END PRIVATE KEY-----\n", id="pem"),
]


@pytest.mark.parametrize("plaintext", PLAINTEXTS)
def test_seal_open_round_trip(plaintext: str) -> None:
    sealed = seal(SECRET_ID, plaintext, KEK1, 1)
    assert sealed.kek_version == 1
    assert len(sealed.nonce) == len(sealed.key_nonce) == NONCE_BYTES
    assert len(sealed.wrapped_key) == 32 + 16  # data key + GCM tag
    assert len(sealed.ciphertext) == len(plaintext.encode()) + 16
    if plaintext:
        assert plaintext.encode() not in sealed.ciphertext
    assert open_sealed(SECRET_ID, sealed, KEK1) == plaintext


def test_sealing_twice_uses_fresh_data_keys_and_nonces() -> None:
    first, second = seal(SECRET_ID, PLANTED, KEK1, 1), seal(SECRET_ID, PLANTED, KEK1, 1)
    assert first.ciphertext != second.ciphertext
    assert first.nonce != second.nonce
    assert first.wrapped_key != second.wrapped_key
    assert first.key_nonce != second.key_nonce


def _flip(data: bytes, index: int) -> bytes:
    flipped = bytearray(data)
    flipped[index] ^= 0x01
    return bytes(flipped)


@pytest.mark.parametrize("field", ["ciphertext", "nonce", "wrapped_key", "key_nonce"])
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_tampering_any_byte_fails(field: str, where: str) -> None:
    sealed = seal(SECRET_ID, PLANTED, KEK1, 1)
    data: bytes = getattr(sealed, field)
    index = {"first": 0, "middle": len(data) // 2, "last": len(data) - 1}[where]
    tampered = dataclasses.replace(sealed, **{field: _flip(data, index)})
    with pytest.raises(SecretError) as caught:
        open_sealed(SECRET_ID, tampered, KEK1)
    assert SECRET_ID in caught.value.message
    assert PLANTED not in str(caught.value)


@pytest.mark.parametrize("field", ["ciphertext", "nonce", "wrapped_key", "key_nonce"])
@pytest.mark.parametrize("change", ["truncated", "extended", "emptied"])
def test_resized_fields_fail(field: str, change: str) -> None:
    sealed = seal(SECRET_ID, PLANTED, KEK1, 1)
    data: bytes = getattr(sealed, field)
    changed = {"truncated": data[:-1], "extended": data + b"\x00", "emptied": b""}[change]
    with pytest.raises(SecretError):
        open_sealed(SECRET_ID, dataclasses.replace(sealed, **{field: changed}), KEK1)


SWAPS = [
    pytest.param(lambda mine, theirs: theirs, id="whole-envelope"),
    pytest.param(
        lambda mine, theirs: dataclasses.replace(mine, ciphertext=theirs.ciphertext, nonce=theirs.nonce),
        id="value-only",
    ),
    pytest.param(
        lambda mine, theirs: dataclasses.replace(
            mine, wrapped_key=theirs.wrapped_key, key_nonce=theirs.key_nonce
        ),
        id="wrapped-key-only",
    ),
]


@pytest.mark.parametrize("swap", SWAPS)
def test_envelopes_cannot_move_between_records(swap: object) -> None:
    mine = seal(SECRET_ID, "mine-secret-value", KEK1, 1)
    theirs = seal(OTHER_ID, PLANTED, KEK1, 1)
    moved: Sealed = swap(mine, theirs)  # type: ignore[operator]
    with pytest.raises(SecretError) as caught:
        open_sealed(SECRET_ID, moved, KEK1)
    assert PLANTED not in str(caught.value)


def test_envelope_opens_only_under_its_own_id() -> None:
    theirs = seal(OTHER_ID, PLANTED, KEK1, 1)
    assert open_sealed(OTHER_ID, theirs, KEK1) == PLANTED
    with pytest.raises(SecretError):
        open_sealed(SECRET_ID, theirs, KEK1)


WRONG_VERSIONS = [
    pytest.param(lambda s: (s, KEK2), id="kek-of-another-version"),
    pytest.param(lambda s: (dataclasses.replace(s, kek_version=2), KEK2), id="relabelled-version-and-kek"),
    pytest.param(lambda s: (dataclasses.replace(s, kek_version=2), KEK1), id="relabelled-version-only"),
    pytest.param(lambda s: (s, MasterKey(bytes(32)).kek(1)), id="other-master-key"),
]


@pytest.mark.parametrize("wrong", WRONG_VERSIONS)
def test_wrong_kek_version_fails(wrong: object) -> None:
    sealed = seal(SECRET_ID, PLANTED, KEK1, 1)
    envelope, kek = wrong(sealed)  # type: ignore[operator]
    with pytest.raises(SecretError):
        open_sealed(SECRET_ID, envelope, kek)


def test_rewrap_changes_only_the_key_wrapping() -> None:
    sealed = seal(SECRET_ID, PLANTED, KEK1, 1)
    moved = rewrap(SECRET_ID, sealed, KEK1, KEK2, 2)
    assert moved.kek_version == 2
    assert moved.ciphertext == sealed.ciphertext
    assert moved.nonce == sealed.nonce
    assert moved.wrapped_key != sealed.wrapped_key
    assert moved.key_nonce != sealed.key_nonce
    assert open_sealed(SECRET_ID, moved, KEK2) == PLANTED
    with pytest.raises(SecretError):
        open_sealed(SECRET_ID, moved, KEK1)


REWRAP_FAILURES = [
    pytest.param(lambda s: (SECRET_ID, s, KEK2), id="wrong-old-kek"),
    pytest.param(lambda s: (OTHER_ID, s, KEK1), id="other-secret-id"),
    pytest.param(lambda s: (SECRET_ID, dataclasses.replace(s, kek_version=3), KEK1), id="relabelled"),
]


@pytest.mark.parametrize("failure", REWRAP_FAILURES)
def test_rewrap_refuses_envelopes_it_cannot_unwrap(failure: object) -> None:
    sealed = seal(SECRET_ID, PLANTED, KEK1, 1)
    secret_id, envelope, old_kek = failure(sealed)  # type: ignore[operator]
    with pytest.raises(SecretError):
        rewrap(secret_id, envelope, old_kek, KEK2, 2)


@pytest.mark.parametrize("kek", [b"", b"short", bytes(31), bytes(33)])
def test_keks_must_have_32_bytes(kek: bytes) -> None:
    with pytest.raises(SecretError):
        seal(SECRET_ID, PLANTED, kek, 1)
    with pytest.raises(SecretError):
        open_sealed(SECRET_ID, seal(SECRET_ID, PLANTED, KEK1, 1), kek)


def test_errors_and_reprs_hold_no_plaintext_or_key() -> None:
    sealed = seal(SECRET_ID, PLANTED, KEK1, 1)
    with pytest.raises(SecretError) as caught:
        open_sealed(SECRET_ID, sealed, KEK2)
    rendered = [str(caught.value), repr(caught.value), repr(sealed)]
    for key in (KEK1, KEK2):
        forms = [key.hex(), base64.b64encode(key).decode(), repr(key)]
        assert not any(form in text for form in forms for text in rendered)
    assert not any(PLANTED in text or PLANTED.encode().hex() in text for text in rendered)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_value_is_bound_to_its_id_even_under_a_correctly_wrapped_key() -> None:
    """A data key moved to another record (e.g. by a buggy re-wrap) still cannot open the value."""
    import os

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from modelyard.secrets.envelope import key_aad

    theirs = seal(OTHER_ID, PLANTED, KEK1, 1)
    data_key = AESGCM(KEK1).decrypt(theirs.key_nonce, theirs.wrapped_key, key_aad(OTHER_ID, 1))
    key_nonce = os.urandom(NONCE_BYTES)
    rewrapped_for_me = dataclasses.replace(
        theirs,
        key_nonce=key_nonce,
        wrapped_key=AESGCM(KEK1).encrypt(key_nonce, data_key, key_aad(SECRET_ID, 1)),
    )
    with pytest.raises(SecretError):
        open_sealed(SECRET_ID, rewrapped_for_me, KEK1)
