"""Secret references: a secret argument may name where its value lives instead of holding it.

* ``env:NAME`` — the environment variable NAME of the gateway process;
* ``file:/abs/path`` — the file's UTF-8 text, one trailing newline removed (at most 64 KiB);
* ``vault:mount/path#field`` — field `field` of the latest version of the HashiCorp Vault KV v2
  secret `path` on the engine mounted at `mount` (the first path segment, so nested mounts cannot be
  named). VAULT_ADDR and VAULT_TOKEN come from the environment, optionally VAULT_NAMESPACE and
  VAULT_CACERT. Needs hvac (``pip install 'modelyard[vault]'``), imported only when used.
* ``{{secrets/scope/key}}`` — Databricks' spelling: the secret `key` of `scope` in the tenant's
  secret scopes (``POST /v1/secrets``), resolved by the SecretVault from the store.

A reference is not secret: errors name it. They never include a resolved value, and a value that
resolves to the empty string is an error rather than an empty credential.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from modelyard.secrets.errors import SecretError

Scheme = Literal["env", "file", "vault", "scope"]
SCOPE_PREFIX, SCOPE_SUFFIX = "{{secrets/", "}}"
PREFIXES = ("env:", "file:", "vault:", SCOPE_PREFIX)
MAX_FILE_BYTES = 64 * 1024
VAULT_TIMEOUT_S = 10
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SCOPE_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")
"""Scope and key names: letters, digits, `.`, `_` and `-`, like Databricks'."""


@dataclass(frozen=True)
class Reference:
    text: str
    scheme: Scheme
    target: str
    """The variable name, the file path, the Vault mount, or the secret scope."""
    path: str = ""
    """The Vault secret path, or the key in the secret scope."""
    field: str = ""
    """The Vault field."""


def is_reference(value: str) -> bool:
    """Whether `value` is meant as a reference (by its prefix; parse_reference validates it)."""
    return value.startswith(PREFIXES)


def parse_reference(value: str) -> Reference:
    """The reference in `value`, or SecretError (status 400) if it is malformed."""
    if value.startswith(SCOPE_PREFIX):
        scope, _, key = value.removeprefix(SCOPE_PREFIX).removesuffix(SCOPE_SUFFIX).partition("/")
        if value.endswith(SCOPE_SUFFIX) and SCOPE_NAME.fullmatch(scope) and SCOPE_NAME.fullmatch(key):
            return Reference(value, "scope", scope, key)
        raise SecretError(
            "A secret argument starting with '{{secrets/' is not a valid reference: use "
            "{{secrets/scope/key}} (letters, digits, '.', '_' and '-').",
            status=400,
            code="invalid_secret_reference",
        )
    scheme, _, body = value.partition(":")
    if scheme == "env" and _ENV_NAME.fullmatch(body):
        return Reference(value, "env", body)
    if scheme == "file" and body.startswith("/") and "\x00" not in body:
        return Reference(value, "file", body)
    if scheme == "vault":
        location, _, field = body.partition("#")
        mount, _, path = location.partition("/")
        segments = [mount, *path.split("/")]
        if field and path and all(segment not in ("", ".", "..") for segment in segments):
            return Reference(value, "vault", mount, path, field)
    # the value is not echoed: one that only looks like a reference may be a secret
    start = f"starting with '{scheme}:' " if is_reference(value) else ""
    raise SecretError(
        f"A secret argument {start}is not a valid reference: use env:NAME, "
        "file:/absolute/path, vault:mount/path#field or {{secrets/scope/key}}.",
        status=400,
        code="invalid_secret_reference",
    )


async def resolve_reference(reference: Reference | str, env: Mapping[str, str] | None = None) -> str:
    """The value a reference names. File and Vault reads run in a worker thread."""
    ref = reference if isinstance(reference, Reference) else parse_reference(reference)
    if ref.scheme == "env":
        return resolve_reference_sync(ref, env)
    return await asyncio.to_thread(resolve_reference_sync, ref, env)


def resolve_reference_sync(reference: Reference | str, env: Mapping[str, str] | None = None) -> str:
    ref = reference if isinstance(reference, Reference) else parse_reference(reference)
    env = os.environ if env is None else env
    if ref.scheme == "env":
        value = env.get(ref.target)
        if value is None:
            raise _unresolved(ref, f"the environment variable {ref.target} is not set")
    elif ref.scheme == "scope":
        raise _unresolved(ref, "secret scopes are read from the gateway's store, by its SecretVault")
    elif ref.scheme == "file":
        value = _read_file(ref)
    else:
        value = _read_vault(ref, env)
    if value == "":
        raise _unresolved(ref, "it resolves to an empty value")
    return value


def _read_file(ref: Reference) -> str:
    try:
        with Path(ref.target).open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise _unresolved(ref, "the file does not exist") from None
    except OSError as exc:
        raise _unresolved(ref, f"the file cannot be read ({exc.strerror or type(exc).__name__})") from None
    if len(data) > MAX_FILE_BYTES:
        raise _unresolved(ref, f"the file is larger than {MAX_FILE_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _unresolved(ref, "the file is not UTF-8 text") from None
    for newline in ("\r\n", "\n"):
        if text.endswith(newline):
            return text[: -len(newline)]
    return text


def _read_vault(ref: Reference, env: Mapping[str, str]) -> str:
    try:
        import hvac  # type: ignore[import-untyped]
        from hvac import exceptions as hvac_errors
    except ImportError:
        raise _unresolved(ref, "vault: references need hvac (pip install 'modelyard[vault]')") from None
    address, token = env.get("VAULT_ADDR", ""), env.get("VAULT_TOKEN", "")
    if not address or not token:
        raise _unresolved(ref, "VAULT_ADDR and VAULT_TOKEN must both be set")
    verify: bool | str = env.get("VAULT_CACERT") or True
    try:
        client = hvac.Client(
            url=address,
            token=token,
            namespace=env.get("VAULT_NAMESPACE") or None,
            verify=verify,
            timeout=VAULT_TIMEOUT_S,
        )
        response: Any = client.secrets.kv.v2.read_secret_version(
            mount_point=ref.target, path=ref.path, raise_on_deleted_version=True
        )
    except (hvac_errors.Forbidden, hvac_errors.Unauthorized):
        raise _unresolved(ref, "Vault denied access to it") from None
    except hvac_errors.InvalidPath:
        raise _unresolved(ref, "Vault has no such secret (or its latest version is deleted)") from None
    except hvac_errors.VaultError as exc:
        raise _unresolved(ref, f"Vault answered an error ({type(exc).__name__})") from None
    except Exception as exc:  # requests' connection errors and timeouts, bad URLs
        raise _unresolved(ref, f"Vault at {address} is unreachable ({type(exc).__name__})") from None
    try:
        fields = response["data"]["data"]
    except (KeyError, TypeError):
        raise _unresolved(ref, "Vault's answer is not a KV v2 secret") from None
    if not isinstance(fields, dict) or ref.field not in fields:
        raise _unresolved(ref, f"the Vault secret has no field {ref.field!r}")
    value = fields[ref.field]
    if not isinstance(value, str):
        raise _unresolved(ref, f"the Vault field {ref.field!r} is not a string")
    return value


def _unresolved(ref: Reference, why: str) -> SecretError:
    return SecretError(f"Secret reference {ref.text!r} cannot be resolved: {why}.")
