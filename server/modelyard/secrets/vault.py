"""SecretVault: the service the gateway uses to seal, reveal, mask and rotate provider secrets."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from modelyard.secrets.envelope import open_sealed, rewrap, seal
from modelyard.secrets.errors import SecretError
from modelyard.secrets.keys import MasterKey
from modelyard.secrets.references import (
    SCOPE_PREFIX,
    Reference,
    is_reference,
    parse_reference,
    resolve_reference,
)
from modelyard.store.records import ScopedSecretRecord, Sealed, SecretRecord

MASK = "****"
HINT_CHARS = 4
HINT_MIN_LENGTH = 8
DEFAULT_REFERENCE_TTL_S = 60.0
DEFAULT_MAX_ENTRIES = 1024

Resolver = Callable[[Reference, Mapping[str, str] | None], Awaitable[str]]
_Fingerprint = tuple[str, int | str]


class SecretStore(Protocol):
    """The part of modelyard.store.base.Store that SecretVault uses."""

    def list_sealed_secrets(self, below_kek_version: int, limit: int) -> list[SecretRecord]: ...
    def rewrap_secrets(self, sealed: dict[str, Sealed]) -> None: ...
    def kek_version(self) -> int: ...
    def set_kek_version(self, version: int) -> None: ...
    def get_scoped_secret(self, tenant_id: str, scope: str, key: str) -> ScopedSecretRecord | None: ...


@dataclass(frozen=True)
class RotationReport:
    from_version: int
    to_version: int
    rewrapped: int
    failed: tuple[str, ...] = ()
    """Ids of secrets whose envelope could not be opened; they keep their old version."""


@dataclass(frozen=True)
class _Entry:
    fingerprint: _Fingerprint
    value: str
    expires_at: float

    def __repr__(self) -> str:
        return f"_Entry({self.fingerprint!r})"


def hint_for(value: str) -> str:
    """What reads may show of a sealed value: its last four characters if it has at least eight."""
    return value[-HINT_CHARS:] if len(value) >= HINT_MIN_LENGTH else ""


class SecretVault:
    """Seals new secrets, reveals them (cached), masks them for reads and rotates the KEK.

    Revealed plaintexts are cached in memory, least recently used first out beyond `max_entries`:
    sealed values until evicted, reference values for `reference_ttl` seconds. An entry is keyed by
    the secret id and its KEK version (or reference), so a re-wrapped or re-pointed secret is
    opened again. Concurrent reveals of one reference share a single resolution.
    """

    def __init__(
        self,
        master: MasterKey,
        store: SecretStore,
        *,
        reference_ttl: float = DEFAULT_REFERENCE_TTL_S,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
        env: Mapping[str, str] | None = None,
        resolver: Resolver = resolve_reference,
    ) -> None:
        self._master = master
        self._store = store
        self._reference_ttl = reference_ttl
        self._max_entries = max_entries
        self._clock = clock
        self._env = env
        self._resolver = resolver
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._inflight: dict[tuple[str, _Fingerprint], asyncio.Future[str]] = {}

    def __repr__(self) -> str:
        return f"SecretVault(cached={len(self._cache)})"

    def seal_new(self, tenant_id: str, provider_id: str, value: str) -> SecretRecord:
        """A new secret record for `value`: a reference if it is one, else sealed under the current KEK."""
        secret_id = str(uuid.uuid4())
        if is_reference(value):
            ref = parse_reference(value)
            return SecretRecord(
                secret_id, tenant_id, provider_id, "reference", reference=ref.text, hint=ref.text
            )
        version = self._store.kek_version()
        sealed = seal(secret_id, value, self._master.kek(version), version)
        return SecretRecord(secret_id, tenant_id, provider_id, "sealed", sealed=sealed, hint=hint_for(value))

    def seal_scoped(self, tenant_id: str, scope: str, key: str, value: str, now: int) -> ScopedSecretRecord:
        """A new version of a scope's secret, sealed under the current KEK (a new id each time)."""
        secret_id = str(uuid.uuid4())
        version = self._store.kek_version()
        sealed = seal(secret_id, value, self._master.kek(version), version)
        return ScopedSecretRecord(secret_id, tenant_id, scope, key, sealed, hint_for(value), now)

    def masked(self, record: SecretRecord) -> str:
        """What reads show: "****abcd" for a sealed secret ("****" without hint), else the reference."""
        if record.kind == "reference":
            return record.reference or record.hint
        return MASK + record.hint[-HINT_CHARS:]

    async def reveal(self, record: SecretRecord) -> str:
        """The plaintext of a secret. Raises SecretError naming the secret or reference, never a value."""
        if record.kind == "reference" and (record.reference or "").startswith(SCOPE_PREFIX):
            return self._reveal_scoped(record.tenant_id, parse_reference(record.reference or ""))
        fingerprint = _fingerprint(record)
        entry = self._cache.get(record.id)
        if entry is not None and entry.fingerprint == fingerprint and self._clock() < entry.expires_at:
            self._cache.move_to_end(record.id)
            return entry.value
        if record.kind == "sealed":
            if record.sealed is None:
                raise SecretError(f"Secret {record.id} has no envelope.")
            value = open_sealed(record.id, record.sealed, self._master.kek(record.sealed.kek_version))
            self._remember(record.id, _Entry(fingerprint, value, math.inf))
            return value
        key = (record.id, fingerprint)
        future = self._inflight.get(key)
        if future is None or future.get_loop() is not asyncio.get_running_loop():
            future = asyncio.ensure_future(self._resolve(record, fingerprint))
            self._inflight[key] = future
            future.add_done_callback(lambda done: self._settled(key, done))
        # shield: a caller cancelled while waiting does not cancel the others' shared resolution
        return await asyncio.shield(future)

    def _reveal_scoped(self, tenant_id: str, ref: Reference) -> str:
        """Read at every reveal (not cached): a put or delete of the scope's secret applies at once."""
        found = self._store.get_scoped_secret(tenant_id, ref.target, ref.path)
        if found is None:
            raise SecretError(f"Secret reference {ref.text!r} cannot be resolved: the scope has no such key.")
        return open_sealed(found.id, found.sealed, self._master.kek(found.sealed.kek_version))

    def evict(self, secret_ids: Iterable[str]) -> None:
        """Forget cached plaintexts, e.g. of deleted secrets."""
        for secret_id in secret_ids:
            self._cache.pop(secret_id, None)

    def clear(self) -> None:
        self._cache.clear()

    def rotate_kek(self, batch: int = 100) -> RotationReport:
        """Re-wrap every sealed secret's data key under the next KEK version, `batch` secrets a time.

        The new version is stored first, so secrets sealed meanwhile use it. Every version's KEK is
        derivable from the master key, so readers open old and new envelopes alike throughout and
        no request fails during rotation. A secret sealed by a process that read the old version
        just before the switch may stay at it; it opens all the same and the next rotation moves it.
        Secrets that cannot be opened are skipped and reported, so rotation always terminates.
        Synchronous, like the store: async callers run it in a thread.
        """
        if batch < 1:
            raise ValueError("batch must be at least 1")
        old_version = self._store.kek_version()
        new_version = old_version + 1
        self._store.set_kek_version(new_version)
        new_kek = self._master.kek(new_version)
        failed: list[str] = []
        rewrapped = 0
        while True:
            # failed secrets stay below the new version: ask for enough rows to get past them
            rows = self._store.list_sealed_secrets(new_version, batch + len(failed))
            todo = [row for row in rows if row.id not in failed]
            if not todo:
                break
            updates: dict[str, Sealed] = {}
            for row in todo:
                try:
                    if row.sealed is None:
                        raise SecretError(f"Secret {row.id} has no envelope.")
                    old_kek = self._master.kek(row.sealed.kek_version)
                    updates[row.id] = rewrap(row.id, row.sealed, old_kek, new_kek, new_version)
                except SecretError:
                    failed.append(row.id)
            if updates:
                self._store.rewrap_secrets(updates)
                rewrapped += len(updates)
        return RotationReport(old_version, new_version, rewrapped, tuple(failed))

    async def _resolve(self, record: SecretRecord, fingerprint: _Fingerprint) -> str:
        if record.reference is None:
            raise SecretError(f"Secret {record.id} has no reference.")
        value = await self._resolver(parse_reference(record.reference), self._env)
        self._remember(record.id, _Entry(fingerprint, value, self._clock() + self._reference_ttl))
        return value

    def _settled(self, key: tuple[str, _Fingerprint], future: asyncio.Future[str]) -> None:
        if self._inflight.get(key) is future:
            del self._inflight[key]
        if not future.cancelled():
            future.exception()  # retrieved here too, in case every waiter was cancelled

    def _remember(self, secret_id: str, entry: _Entry) -> None:
        if self._max_entries <= 0:
            return
        self._cache[secret_id] = entry
        self._cache.move_to_end(secret_id)
        while len(self._cache) > self._max_entries:
            self._cache.popitem(last=False)


def _fingerprint(record: SecretRecord) -> _Fingerprint:
    if record.kind == "sealed":
        return ("sealed", record.sealed.kek_version if record.sealed else 0)
    return ("reference", record.reference or "")
