"""Secret references: env:, file: and vault: (through hvac against a fake Vault KV v2 API)."""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from modelyard.secrets.errors import SecretError
from modelyard.secrets.references import (
    MAX_FILE_BYTES,
    Reference,
    is_reference,
    parse_reference,
    resolve_reference,
    resolve_reference_sync,
)

from tests.fakes.vault import FakeVault

TOKEN = "hvs.fake-token-0123"
VALUE = "sk-planted-vault-value-9876"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("env:OPENAI_API_KEY", True),
        ("file:/run/secrets/key", True),
        ("vault:secret/openai#apikey", True),
        ("env:bad name", True),  # meant as a reference: parse_reference refuses it
        ("sk-abc123", False),
        ("ENV:NAME", False),
        ("environment:NAME", False),
        (" env:NAME", False),
        ("", False),
    ],
)
def test_is_reference(value: str, expected: bool) -> None:
    assert is_reference(value) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("env:OPENAI_API_KEY", Reference("env:OPENAI_API_KEY", "env", "OPENAI_API_KEY")),
        ("env:_x1", Reference("env:_x1", "env", "_x1")),
        ("file:/run/secrets/key", Reference("file:/run/secrets/key", "file", "/run/secrets/key")),
        (
            "vault:secret/openai/prod#apikey",
            Reference("vault:secret/openai/prod#apikey", "vault", "secret", "openai/prod", "apikey"),
        ),
        ("vault:kv/a#b#c", Reference("vault:kv/a#b#c", "vault", "kv", "a", "b#c")),
    ],
)
def test_parse_reference(text: str, expected: Reference) -> None:
    assert parse_reference(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "env:",
        "env:1ABC",
        "env:A-B",
        "env:A B",
        "file:",
        "file:relative/path",
        "file:/a\x00b",
        "vault:",
        "vault:secret#field",
        "vault:secret/path",
        "vault:secret/path#",
        "vault:/path#field",
        "vault:secret//path#field",
        "vault:secret/../other#field",
        "vault:secret/path/#field",
        "sk-not-a-reference-at-all",
    ],
)
def test_malformed_references_are_client_errors_that_do_not_echo_the_value(text: str) -> None:
    with pytest.raises(SecretError) as caught:
        parse_reference(text)
    assert caught.value.status == 400
    assert caught.value.code == "invalid_secret_reference"
    if len(text) > 6:
        assert text not in caught.value.message


def test_env_reference() -> None:
    assert resolve_reference_sync("env:MY_KEY", {"MY_KEY": VALUE}) == VALUE
    assert asyncio.run(resolve_reference("env:MY_KEY", {"MY_KEY": VALUE})) == VALUE


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"abc", "abc"),
        (b"abc\n", "abc"),
        (b"abc\r\n", "abc"),
        (b"abc\n\n", "abc\n"),
        (b"line1\nline2\n", "line1\nline2"),
        (b" spaced \n", " spaced "),
        ("ключ\n".encode(), "ключ"),
    ],
)
def test_file_reference_strips_one_trailing_newline(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "secret.txt"
    path.write_bytes(content)
    assert resolve_reference_sync(f"file:{path}") == expected
    assert asyncio.run(resolve_reference(f"file:{path}")) == expected


@pytest.fixture
def vault() -> Iterator[FakeVault]:
    with FakeVault(token=TOKEN) as fake:
        fake.put("secret", "openai/prod", {"apikey": VALUE, "org": "org-1", "number": 7})
        fake.put("kv", "team/db", {"password": "first"})
        fake.put("kv", "team/db", {"password": "second"})
        fake.put("secret", "gone", {"apikey": "deleted-value"})
        fake.delete_latest("secret", "gone")
        yield fake


def _vault_env(vault: FakeVault, **overrides: str) -> dict[str, str]:
    return {"VAULT_ADDR": vault.url, "VAULT_TOKEN": TOKEN, **overrides}


def test_vault_reference_reads_kv_v2_through_hvac(vault: FakeVault) -> None:
    env = _vault_env(vault)
    assert resolve_reference_sync("vault:secret/openai/prod#apikey", env) == VALUE
    assert resolve_reference_sync("vault:secret/openai/prod#org", env) == "org-1"
    assert resolve_reference_sync("vault:kv/team/db#password", env) == "second"  # latest version
    request = vault.requests[0]
    assert (request.method, request.path, request.query) == ("GET", "/v1/secret/data/openai/prod", {})
    assert request.headers["X-Vault-Token"] == TOKEN
    assert request.headers["X-Vault-Request"] == "true"


def test_async_vault_resolution_runs_off_the_event_loop(
    vault: FakeVault, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelyard.secrets import references

    loop_threads: list[int] = []
    read_threads: list[int] = []
    read_vault = references._read_vault

    def recording_read_vault(ref: Reference, env: dict[str, str]) -> str:
        read_threads.append(threading.get_ident())
        return read_vault(ref, env)

    monkeypatch.setattr(references, "_read_vault", recording_read_vault)
    env = _vault_env(vault)

    async def main() -> list[str]:
        loop_threads.append(threading.get_ident())
        return await asyncio.gather(
            *(resolve_reference("vault:secret/openai/prod#apikey", env) for _ in range(5))
        )

    assert asyncio.run(main()) == [VALUE] * 5
    assert vault.reads("secret", "openai/prod") == 5
    assert len(read_threads) == 5 and loop_threads[0] not in read_threads


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


FAILURES = [
    pytest.param("env:MISSING_VAR", {}, "MISSING_VAR is not set", id="env-missing"),
    pytest.param("env:EMPTY_VAR", {"EMPTY_VAR": ""}, "empty", id="env-empty"),
    pytest.param("file:/nonexistent/modelyard/key", {}, "does not exist", id="file-missing"),
    pytest.param("vault:secret/openai/prod#apikey", {"VAULT_TOKEN": "wrong"}, "denied", id="vault-bad-token"),
    pytest.param("vault:secret/nope#apikey", {}, "no such secret", id="vault-missing-path"),
    pytest.param("vault:nomount/openai/prod#apikey", {}, "no such secret", id="vault-missing-mount"),
    pytest.param("vault:secret/gone#apikey", {}, "deleted", id="vault-deleted-version"),
    pytest.param("vault:secret/openai/prod#missing", {}, "no field 'missing'", id="vault-missing-field"),
    pytest.param("vault:secret/openai/prod#number", {}, "not a string", id="vault-non-string"),
    pytest.param("vault:secret/openai/prod#apikey", {"VAULT_ADDR": ""}, "VAULT_ADDR", id="vault-no-addr"),
    pytest.param("vault:secret/openai/prod#apikey", {"VAULT_TOKEN": ""}, "VAULT_TOKEN", id="vault-no-token"),
    pytest.param(
        "vault:secret/openai/prod#apikey", {"VAULT_ADDR": "unreachable"}, "unreachable", id="vault-down"
    ),
]


@pytest.mark.parametrize(("reference", "overrides", "reason"), FAILURES)
def test_resolution_errors_name_the_reference_only(
    vault: FakeVault, reference: str, overrides: dict[str, str], reason: str
) -> None:
    env = _vault_env(vault, **overrides)
    if env["VAULT_ADDR"] == "unreachable":
        env["VAULT_ADDR"] = f"http://127.0.0.1:{_free_port()}"
    env["UNRELATED"] = VALUE
    with pytest.raises(SecretError) as caught:
        asyncio.run(resolve_reference(reference, env))
    message = caught.value.message
    assert repr(reference) in message
    assert reason in message
    assert caught.value.status == 500
    for secret in (VALUE, TOKEN, "deleted-value", "org-1"):
        assert secret not in message and secret not in repr(caught.value)
    assert caught.value.__cause__ is None


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty"),
        (b"\n", "empty"),
        (b"\xff\xfe bad utf-8", "not UTF-8"),
        (b"x" * (MAX_FILE_BYTES + 1), "larger than"),
    ],
)
def test_bad_files_are_errors(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "secret"
    path.write_bytes(content)
    with pytest.raises(SecretError) as caught:
        resolve_reference_sync(f"file:{path}")
    assert reason in caught.value.message
    assert f"file:{path}" in caught.value.message


def test_unreadable_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SecretError) as caught:
        resolve_reference_sync(f"file:{tmp_path}")  # a directory
    assert "cannot be read" in caught.value.message


def test_vault_reference_without_hvac_is_a_clear_error(
    vault: FakeVault, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "hvac", None)  # import hvac -> ImportError
    with pytest.raises(SecretError) as caught:
        resolve_reference_sync("vault:secret/openai/prod#apikey", _vault_env(vault))
    assert "modelyard[vault]" in caught.value.message
    assert vault.requests == []
