"""The master key: environment formats, the generated 0600 key file, HKDF-derived KEK versions."""

from __future__ import annotations

import base64
import os
import stat
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from modelyard.secrets.errors import SecretError
from modelyard.secrets.keys import KEK_SALT, MASTER_KEY_ENV, MASTER_KEY_FILE, MasterKey

ROOT = bytes(range(100, 132))
PASSPHRASE = "correct-horse-battery-staple-0123456789"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


ENV_FORMATS = [
    pytest.param(ROOT.hex(), ROOT, id="hex"),
    pytest.param(ROOT.hex().upper(), ROOT, id="hex-upper"),
    pytest.param(base64.b64encode(ROOT).decode(), ROOT, id="base64"),
    pytest.param(base64.b64encode(ROOT).decode().rstrip("="), ROOT, id="base64-unpadded"),
    pytest.param(
        base64.urlsafe_b64encode(bytes(range(224, 256))).decode(), bytes(range(224, 256)), id="base64url"
    ),
    pytest.param(f"  {ROOT.hex()}\n", ROOT, id="hex-with-whitespace"),
    pytest.param(PASSPHRASE, PASSPHRASE.encode(), id="string-32-plus"),
    pytest.param("x" * 32, b"x" * 32, id="string-exactly-32"),
    pytest.param("ключ" * 8, ("ключ" * 8).encode(), id="string-non-ascii"),
]


@pytest.mark.parametrize(("value", "root"), ENV_FORMATS)
def test_master_key_from_env(tmp_path: Path, value: str, root: bytes) -> None:
    key = MasterKey.load(tmp_path, env={MASTER_KEY_ENV: value})
    assert key.source == "env"
    assert key.kek(1) == MasterKey(root).kek(1)
    assert not (tmp_path / MASTER_KEY_FILE).exists()


def test_hex_and_base64_of_the_same_bytes_are_the_same_key(tmp_path: Path) -> None:
    from_hex = MasterKey.load(tmp_path, env={MASTER_KEY_ENV: ROOT.hex()})
    from_b64 = MasterKey.load(tmp_path, env={MASTER_KEY_ENV: base64.b64encode(ROOT).decode()})
    assert from_hex.kek(3) == from_b64.kek(3)


@pytest.mark.parametrize("value", ["too-short", "x" * 31, ROOT.hex()[:30], "   " + "y" * 30 + "   "])
def test_short_env_values_are_refused(tmp_path: Path, value: str) -> None:
    with pytest.raises(SecretError) as caught:
        MasterKey.load(tmp_path, env={MASTER_KEY_ENV: value})
    assert value.strip() not in caught.value.message


@pytest.mark.parametrize("env", [{}, {MASTER_KEY_ENV: ""}, {MASTER_KEY_ENV: "   "}])
def test_generated_key_file(tmp_path: Path, env: dict[str, str]) -> None:
    data_dir = tmp_path / "state" / "nested"
    first = MasterKey.load(data_dir, env=env)
    key_file = data_dir / MASTER_KEY_FILE
    assert first.source == "file"
    assert _mode(key_file) == 0o600
    text = key_file.read_text()
    assert text.endswith("\n")
    assert len(base64.b64decode(text.strip(), validate=True)) == 32
    second = MasterKey.load(data_dir, env=env)
    assert second.kek(1) == first.kek(1)
    assert key_file.read_text() == text
    assert [p.name for p in data_dir.iterdir()] == [MASTER_KEY_FILE]  # no temporary files left


def test_generated_keys_differ_between_data_dirs(tmp_path: Path) -> None:
    assert MasterKey.load(tmp_path / "a", env={}).kek(1) != MasterKey.load(tmp_path / "b", env={}).kek(1)


@pytest.mark.parametrize("wide_mode", [0o644, 0o640, 0o604, 0o666, 0o700])
def test_preexisting_key_file_is_made_private_and_kept(tmp_path: Path, wide_mode: int) -> None:
    key_file = tmp_path / MASTER_KEY_FILE
    key_file.write_text(base64.b64encode(ROOT).decode() + "\n")
    os.chmod(key_file, wide_mode)
    key = MasterKey.load(tmp_path, env={})
    assert _mode(key_file) == 0o600
    assert key.kek(1) == MasterKey(ROOT).kek(1)
    assert key_file.read_text().strip() == base64.b64encode(ROOT).decode()


def test_narrower_key_file_mode_is_left_alone(tmp_path: Path) -> None:
    key_file = tmp_path / MASTER_KEY_FILE
    key_file.write_text(base64.b64encode(ROOT).decode())
    os.chmod(key_file, 0o400)
    assert MasterKey.load(tmp_path, env={}).kek(1) == MasterKey(ROOT).kek(1)
    assert _mode(key_file) == 0o400


@pytest.mark.parametrize("content", ["", "not base64 at all!", base64.b64encode(bytes(16)).decode()])
def test_malformed_key_file_is_an_error_and_never_replaced(tmp_path: Path, content: str) -> None:
    key_file = tmp_path / MASTER_KEY_FILE
    key_file.write_text(content)
    with pytest.raises(SecretError):
        MasterKey.load(tmp_path, env={})
    assert key_file.read_text() == content


def test_concurrent_first_starts_agree_on_one_key(tmp_path: Path) -> None:
    keks: list[bytes] = []
    barrier = threading.Barrier(8)

    def start() -> None:
        barrier.wait()
        keks.append(MasterKey.load(tmp_path, env={}).kek(1))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(keks) == 8 and len(set(keks)) == 1
    assert [p.name for p in tmp_path.iterdir()] == [MASTER_KEY_FILE]


def test_kek_versions_are_hkdf_sha256_and_distinct() -> None:
    key = MasterKey(ROOT)
    keks = [key.kek(version) for version in range(1, 11)]
    assert len(set(keks)) == 10
    assert all(len(kek) == 32 for kek in keks)
    assert ROOT not in keks
    expected = HKDF(hashes.SHA256(), 32, KEK_SALT, b"modelyard kek v7").derive(ROOT)
    assert key.kek(7) == expected
    assert MasterKey(ROOT).kek(7) == expected  # derivable by any process holding the root


@pytest.mark.parametrize("version", [0, -1, True, 1.0, "1"])
def test_invalid_kek_versions(version: object) -> None:
    with pytest.raises(SecretError):
        MasterKey(ROOT).kek(version)  # type: ignore[arg-type]


def test_master_key_repr_hides_the_root(tmp_path: Path) -> None:
    key = MasterKey.load(tmp_path, env={MASTER_KEY_ENV: PASSPHRASE})
    text = repr(key) + str(key)
    assert PASSPHRASE not in text and ROOT.hex() not in text
    assert "env" in text
