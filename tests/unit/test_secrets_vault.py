"""SecretVault: sealing, masking, cached reveals, references with a TTL, and KEK rotation."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from modelyard.secrets import vault as vault_module
from modelyard.secrets.envelope import open_sealed, seal
from modelyard.secrets.errors import SecretError
from modelyard.secrets.keys import MasterKey
from modelyard.secrets.references import Reference
from modelyard.secrets.vault import RotationReport, SecretVault, hint_for
from modelyard.store.records import ScopedSecretRecord, Sealed, SecretRecord

from tests.fakes.vault import FakeVault

MASTER = MasterKey(bytes(range(32)))
PLANTED = "sk-planted-PLAINTEXT-wxyz"


class FakeStore:
    """The secret-related part of the Store protocol, in memory and thread-safe."""

    def __init__(self, kek_version: int = 1) -> None:
        self._version = kek_version
        self._secrets: dict[str, SecretRecord] = {}
        self._lock = threading.Lock()
        self.list_calls: list[tuple[int, int]] = []
        self.rewrap_batches: list[int] = []
        self.after_rewrap = lambda: None
        self.scoped: dict[tuple[str, str, str], ScopedSecretRecord] = {}

    def get_scoped_secret(self, tenant_id: str, scope: str, key: str) -> ScopedSecretRecord | None:
        return self.scoped.get((tenant_id, scope, key))

    def add(self, *records: SecretRecord) -> None:
        with self._lock:
            for record in records:
                self._secrets[record.id] = record

    def get_secrets(self, secret_ids: Sequence[str]) -> dict[str, SecretRecord]:
        with self._lock:
            return {i: self._secrets[i] for i in secret_ids if i in self._secrets}

    def all(self) -> list[SecretRecord]:
        with self._lock:
            return list(self._secrets.values())

    def list_sealed_secrets(self, below_kek_version: int, limit: int) -> list[SecretRecord]:
        with self._lock:
            self.list_calls.append((below_kek_version, limit))
            rows = sorted(
                (
                    r
                    for r in self._secrets.values()
                    if r.kind == "sealed" and (r.sealed is None or r.sealed.kek_version < below_kek_version)
                ),
                key=lambda r: r.id,
            )
            return rows[:limit]

    def rewrap_secrets(self, sealed: dict[str, Sealed]) -> None:
        with self._lock:
            for secret_id, envelope in sealed.items():
                if secret_id in self._secrets:
                    self._secrets[secret_id] = dataclasses.replace(self._secrets[secret_id], sealed=envelope)
            self.rewrap_batches.append(len(sealed))
        self.after_rewrap()

    def kek_version(self) -> int:
        with self._lock:
            return self._version

    def set_kek_version(self, version: int) -> None:
        with self._lock:
            self._version = version


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingResolver:
    def __init__(self, value: str = "resolved-value") -> None:
        self.value = value
        self.calls: list[str] = []
        self.gate: asyncio.Event | None = None
        self.fail = False

    async def __call__(self, ref: Reference, env: Mapping[str, str] | None) -> str:
        self.calls.append(ref.text)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise SecretError(f"Secret reference {ref.text!r} cannot be resolved: test.")
        return f"{self.value}-{len(self.calls)}"


@pytest.fixture
def counting_opens(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    opened: list[str] = []

    def counting_open(secret_id: str, sealed: Sealed, kek: bytes) -> str:
        opened.append(secret_id)
        return open_sealed(secret_id, sealed, kek)

    monkeypatch.setattr(vault_module, "open_sealed", counting_open)
    return opened


# sealing and masking


@pytest.mark.parametrize(
    ("value", "hint", "masked"),
    [
        ("sk-1234567890abcd", "abcd", "****abcd"),
        ("12345678", "5678", "****5678"),
        ("1234567", "", "****"),
        ("", "", "****"),
        ("pässwörd🔑", "örd🔑", "****örd🔑"),
    ],
)
def test_seal_new_sealed(value: str, hint: str, masked: str) -> None:
    store = FakeStore(kek_version=3)
    vault = SecretVault(MASTER, store)
    record = vault.seal_new("tenant-1", "provider-1", value)
    assert (record.tenant_id, record.provider_id, record.kind) == ("tenant-1", "provider-1", "sealed")
    assert record.sealed is not None and record.reference is None
    assert record.sealed.kek_version == 3
    assert record.hint == hint == hint_for(value)
    assert vault.masked(record) == masked
    assert open_sealed(record.id, record.sealed, MASTER.kek(3)) == value
    assert asyncio.run(vault.reveal(record)) == value


def test_seal_new_gives_each_secret_a_new_uuid() -> None:
    vault = SecretVault(MASTER, FakeStore())
    ids = {vault.seal_new("t", "p", PLANTED).id for _ in range(50)}
    assert len(ids) == 50 and all(len(i) == 36 for i in ids)


@pytest.mark.parametrize("reference", ["env:OPENAI_KEY", "file:/run/secrets/key", "vault:secret/a/b#apikey"])
def test_seal_new_reference(reference: str) -> None:
    vault = SecretVault(MASTER, FakeStore())
    record = vault.seal_new("t", "p", reference)
    assert (record.kind, record.reference, record.hint, record.sealed) == (
        "reference",
        reference,
        reference,
        None,
    )
    assert vault.masked(record) == reference


def test_seal_new_refuses_malformed_references() -> None:
    with pytest.raises(SecretError) as caught:
        SecretVault(MASTER, FakeStore()).seal_new("t", "p", "vault:no-field-given")
    assert caught.value.status == 400


def test_masked_never_shows_more_than_four_characters() -> None:
    vault = SecretVault(MASTER, FakeStore())
    record = dataclasses.replace(vault.seal_new("t", "p", PLANTED), hint=PLANTED)
    assert vault.masked(record) == "****" + PLANTED[-4:]


# reveal and its cache


def test_sealed_reveals_are_cached_per_kek_version(counting_opens: list[str]) -> None:
    store = FakeStore()
    vault = SecretVault(MASTER, store)
    record = vault.seal_new("t", "p", PLANTED)
    store.add(record)

    async def main() -> None:
        for _ in range(5):
            assert await vault.reveal(record) == PLANTED
        assert counting_opens == [record.id]
        await asyncio.to_thread(vault.rotate_kek)
        (rotated,) = store.get_secrets([record.id]).values()
        assert rotated.sealed is not None and rotated.sealed.kek_version == 2
        for _ in range(3):
            assert await vault.reveal(rotated) == PLANTED
        assert counting_opens == [record.id, record.id]  # the new envelope is opened, once

    asyncio.run(main())


def test_cache_is_bounded_least_recently_used_first(counting_opens: list[str]) -> None:
    vault = SecretVault(MASTER, FakeStore(), max_entries=2)
    a, b, c = (vault.seal_new("t", "p", f"value-{n}-xxxxxx") for n in "abc")

    async def main() -> None:
        for record in (a, b, a, c, a, b):
            await vault.reveal(record)

    asyncio.run(main())
    # a stays hot; b is evicted by c and opened again
    assert counting_opens == [a.id, b.id, c.id, b.id]


def test_evict_and_clear_forget_plaintexts(counting_opens: list[str]) -> None:
    vault = SecretVault(MASTER, FakeStore())
    record = vault.seal_new("t", "p", PLANTED)

    async def main() -> None:
        await vault.reveal(record)
        vault.evict([record.id])
        await vault.reveal(record)
        vault.clear()
        await vault.reveal(record)

    asyncio.run(main())
    assert counting_opens == [record.id] * 3


def test_reference_is_resolved_once_within_the_ttl_and_again_after() -> None:
    clock, resolver = Clock(), CountingResolver()
    vault = SecretVault(MASTER, FakeStore(), clock=clock, resolver=resolver, reference_ttl=60)
    record = vault.seal_new("t", "p", "env:SOME_KEY")

    async def main() -> list[str]:
        seen = [await vault.reveal(record)]
        clock.now += 59.9
        seen.append(await vault.reveal(record))
        clock.now += 0.1
        seen.append(await vault.reveal(record))
        clock.now += 30
        seen.append(await vault.reveal(record))
        return seen

    assert asyncio.run(main()) == [
        "resolved-value-1",
        "resolved-value-1",
        "resolved-value-2",
        "resolved-value-2",
    ]
    assert resolver.calls == ["env:SOME_KEY", "env:SOME_KEY"]


def test_env_reference_picks_up_a_changed_value_after_the_ttl() -> None:
    clock, env = Clock(), {"ROTATING_KEY": "old-value"}
    vault = SecretVault(MASTER, FakeStore(), clock=clock, env=env)
    record = vault.seal_new("t", "p", "env:ROTATING_KEY")

    async def main() -> list[str]:
        seen = [await vault.reveal(record)]
        env["ROTATING_KEY"] = "new-value"
        seen.append(await vault.reveal(record))
        clock.now += 61
        seen.append(await vault.reveal(record))
        return seen

    assert asyncio.run(main()) == ["old-value", "old-value", "new-value"]


def test_vault_reference_through_secret_vault_is_cached(tmp_path: Path) -> None:
    clock = Clock()
    with FakeVault(token="tok") as fake:
        fake.put("secret", "openai", {"apikey": PLANTED})
        env = {"VAULT_ADDR": fake.url, "VAULT_TOKEN": "tok"}
        vault = SecretVault(MASTER, FakeStore(), clock=clock, env=env)
        record = vault.seal_new("t", "p", "vault:secret/openai#apikey")

        async def main() -> list[str]:
            first = await asyncio.gather(*(vault.reveal(record) for _ in range(10)))
            clock.now += 61
            return [*first, await vault.reveal(record)]

        assert asyncio.run(main()) == [PLANTED] * 11
        assert fake.reads("secret", "openai") == 2
        assert vault.masked(record) == "vault:secret/openai#apikey"


def test_concurrent_reveals_share_one_resolution() -> None:
    resolver = CountingResolver()
    vault = SecretVault(MASTER, FakeStore(), resolver=resolver)
    record = vault.seal_new("t", "p", "env:SHARED")

    async def main() -> list[str]:
        resolver.gate = asyncio.Event()
        waiters = [asyncio.create_task(vault.reveal(record)) for _ in range(20)]
        await asyncio.sleep(0)
        waiters[0].cancel()  # one caller giving up does not cancel the others' resolution
        await asyncio.sleep(0)
        resolver.gate.set()
        results = await asyncio.gather(*waiters[1:])
        assert waiters[0].cancelled()
        return results

    assert asyncio.run(main()) == ["resolved-value-1"] * 19
    assert resolver.calls == ["env:SHARED"]


def test_failed_resolutions_are_shared_but_not_cached() -> None:
    resolver = CountingResolver()
    resolver.fail = True
    vault = SecretVault(MASTER, FakeStore(), resolver=resolver)
    record = vault.seal_new("t", "p", "env:BROKEN")

    async def main() -> list[BaseException | str]:
        results = await asyncio.gather(*(vault.reveal(record) for _ in range(5)), return_exceptions=True)
        resolver.fail = False
        return [*results, await vault.reveal(record)]

    results = asyncio.run(main())
    assert all(isinstance(r, SecretError) and "'env:BROKEN'" in r.message for r in results[:5])
    assert results[5] == "resolved-value-2"
    assert resolver.calls == ["env:BROKEN", "env:BROKEN"]


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param(lambda r: dataclasses.replace(r, sealed=None), id="sealed-without-envelope"),
        pytest.param(lambda r: dataclasses.replace(r, id="another-id"), id="moved-to-another-id"),
        pytest.param(
            lambda r: dataclasses.replace(r, kind="reference", sealed=None, reference=None),
            id="reference-without-text",
        ),
    ],
)
def test_reveal_of_broken_records_fails_cleanly(broken: object) -> None:
    vault = SecretVault(MASTER, FakeStore())
    record = broken(vault.seal_new("t", "p", PLANTED))  # type: ignore[operator]
    with pytest.raises(SecretError) as caught:
        asyncio.run(vault.reveal(record))
    assert PLANTED not in str(caught.value)


def test_reveal_with_another_master_key_fails() -> None:
    record = SecretVault(MASTER, FakeStore()).seal_new("t", "p", PLANTED)
    with pytest.raises(SecretError):
        asyncio.run(SecretVault(MasterKey(bytes(32)), FakeStore()).reveal(record))


# KEK rotation


def _populate(store: FakeStore, count: int, version: int = 1) -> dict[str, str]:
    expected: dict[str, str] = {}
    for n in range(count):
        value = f"secret-value-{n:04d}-{random.random()}"
        record_id = f"id-{version}-{n:04d}"
        sealed = seal(record_id, value, MASTER.kek(version), version)
        store.add(SecretRecord(record_id, "t", f"p{n % 7}", "sealed", sealed=sealed, hint=hint_for(value)))
        expected[record_id] = value
    return expected


@pytest.mark.parametrize(
    ("count", "batch", "batches"), [(250, 40, 7), (250, 100, 3), (250, 250, 1), (0, 10, 0)]
)
def test_rotate_kek_rewraps_everything_in_batches(count: int, batch: int, batches: int) -> None:
    store = FakeStore()
    expected = _populate(store, count)
    store.add(SecretVault(MASTER, store).seal_new("t", "p", "env:NOT_SEALED"))
    before = {r.id: r.sealed for r in store.all()}
    report = SecretVault(MASTER, store).rotate_kek(batch=batch)
    assert report == RotationReport(from_version=1, to_version=2, rewrapped=count, failed=())
    assert store.kek_version() == 2
    assert store.rewrap_batches == [min(batch, count - i * batch) for i in range(batches)]
    assert all(limit == batch for _, limit in store.list_calls)
    reader = SecretVault(MASTER, store)
    for record in store.all():
        if record.kind == "reference":
            continue
        assert record.sealed is not None and record.sealed.kek_version == 2
        old = before[record.id]
        assert old is not None and record.sealed.ciphertext == old.ciphertext
        assert asyncio.run(reader.reveal(record)) == expected[record.id]


def test_rotation_moves_secrets_of_every_older_version() -> None:
    store = FakeStore(kek_version=3)
    expected = {
        **_populate(store, 30, version=1),
        **_populate(store, 30, version=2),
        **_populate(store, 5, 3),
    }
    report = SecretVault(MASTER, store).rotate_kek(batch=7)
    assert (report.from_version, report.to_version, report.rewrapped) == (3, 4, 65)
    for record in store.all():
        assert record.sealed is not None and record.sealed.kek_version == 4
        assert open_sealed(record.id, record.sealed, MASTER.kek(4)) == expected[record.id]


def test_rotation_skips_and_reports_secrets_it_cannot_open() -> None:
    store = FakeStore()
    expected = _populate(store, 50)
    broken_ids = sorted(expected)[:12]  # more than a batch, at the head of every listing
    for secret_id in broken_ids:
        (record,) = store.get_secrets([secret_id]).values()
        assert record.sealed is not None
        store.add(
            dataclasses.replace(record, sealed=dataclasses.replace(record.sealed, wrapped_key=b"x" * 48))
        )
    report = SecretVault(MASTER, store).rotate_kek(batch=5)
    assert report.rewrapped == 38
    assert sorted(report.failed) == broken_ids
    for record in store.all():
        assert record.sealed is not None
        assert record.sealed.kek_version == (1 if record.id in broken_ids else 2)


def test_secrets_sealed_after_rotation_starts_use_the_new_version() -> None:
    store = FakeStore()
    _populate(store, 10)
    vault = SecretVault(MASTER, store)
    sealed_during: list[SecretRecord] = []
    store.after_rewrap = lambda: sealed_during.append(vault.seal_new("t", "p", PLANTED))
    vault.rotate_kek(batch=3)
    assert len(sealed_during) == 4
    assert all(r.sealed is not None and r.sealed.kek_version == 2 for r in sealed_during)


def test_rotate_kek_rejects_a_non_positive_batch() -> None:
    with pytest.raises(ValueError):
        SecretVault(MASTER, FakeStore()).rotate_kek(batch=0)


def test_readers_never_fail_while_the_kek_rotates() -> None:
    """Readers reveal every secret after each rotation batch: old and new envelopes all open."""
    store = FakeStore()
    expected = _populate(store, 250)
    ids = sorted(expected)
    passes_done = threading.Condition()
    state = {"batches": 0, "caught_up": 0}
    caught_up_in_time: list[bool] = []

    def wait_for_a_full_read_pass() -> None:
        with passes_done:
            state["batches"] += 1
            batches = state["batches"]
            caught_up_in_time.append(passes_done.wait_for(lambda: state["caught_up"] >= batches, timeout=10))

    store.after_rewrap = wait_for_a_full_read_pass

    async def main() -> tuple[RotationReport, list[frozenset[int]], int]:
        reader_vault = SecretVault(MASTER, store, max_entries=0)  # no cache: every read opens
        rotating = False
        finished = False
        snapshots: list[frozenset[int]] = []
        reads = 0

        async def reader() -> None:
            nonlocal reads
            while not finished:
                with passes_done:
                    batches = state["batches"]
                records = store.get_secrets(ids)
                versions = frozenset(r.sealed.kek_version for r in records.values() if r.sealed)
                for n, record in enumerate(records.values()):
                    assert await reader_vault.reveal(record) == expected[record.id]
                    reads += 1
                    if n % 25 == 24:
                        # idle the loop now and then: the rotation thread needs the GIL too (a
                        # spinning loop starves it, as a busy gateway would a rotation thread)
                        await asyncio.sleep(0.001)
                if rotating:
                    snapshots.append(versions)
                with passes_done:
                    state["caught_up"] = max(state["caught_up"], batches)
                    passes_done.notify_all()
                await asyncio.sleep(0)

        readers = [asyncio.create_task(reader()) for _ in range(2)]
        await asyncio.sleep(0.01)
        rotating = True
        report = await asyncio.to_thread(SecretVault(MASTER, store).rotate_kek, 25)
        finished = True
        await asyncio.gather(*readers)
        return report, snapshots, reads

    report, snapshots, reads = asyncio.run(main())
    assert caught_up_in_time == [True] * 10
    assert report.rewrapped == 250 and report.failed == ()
    mixed = [s for s in snapshots if s == {1, 2}]
    assert len(mixed) >= 9  # a full pass over a half-rotated store after each of batches 1..9
    assert reads >= 250 * 10
    assert all(r.sealed is not None and r.sealed.kek_version == 2 for r in store.all())


# hygiene


def test_planted_plaintext_never_appears_in_reprs_errors_or_masks() -> None:
    store = FakeStore()
    vault = SecretVault(MASTER, store, env={"SOME_VAR": PLANTED})
    record = vault.seal_new("t", "p", PLANTED)
    reference = vault.seal_new("t", "p", "env:SOME_VAR")
    assert record.sealed is not None

    async def main() -> None:
        assert await vault.reveal(record) == PLANTED
        assert await vault.reveal(reference) == PLANTED

    asyncio.run(main())
    errors: list[SecretError] = []
    for broken in (
        dataclasses.replace(record, id="other"),
        dataclasses.replace(record, sealed=dataclasses.replace(record.sealed, ciphertext=b"\x00" * 40)),
    ):
        with pytest.raises(SecretError) as caught:
            asyncio.run(SecretVault(MASTER, store).reveal(broken))
        errors.append(caught.value)
    rendered = [
        repr(record),
        str(record),
        repr(record.sealed),
        repr(reference),
        vault.masked(record),
        vault.masked(reference),
        repr(vault),
        repr(vault._cache),
        repr(MASTER),
        *(str(e) for e in errors),
        *(repr(e) for e in errors),
    ]
    for text in rendered:
        assert PLANTED not in text
        assert PLANTED[:-4] not in text
        assert PLANTED.encode().hex() not in text


def test_scope_references_resolve_from_the_store_every_time() -> None:
    store = FakeStore()
    vault = SecretVault(MASTER, store)
    reference = vault.seal_new("t1", "p1", "{{secrets/team/openai}}")
    assert (reference.kind, reference.reference) == ("reference", "{{secrets/team/openai}}")
    with pytest.raises(SecretError, match="the scope has no such key"):
        asyncio.run(vault.reveal(reference))
    store.scoped[("t1", "team", "openai")] = vault.seal_scoped("t1", "team", "openai", "sk-first-value", 1)
    assert asyncio.run(vault.reveal(reference)) == "sk-first-value"
    store.scoped[("t1", "team", "openai")] = vault.seal_scoped("t1", "team", "openai", "sk-second-value", 2)
    assert asyncio.run(vault.reveal(reference)) == "sk-second-value"
    other_tenant = vault.seal_new("t2", "p2", "{{secrets/team/openai}}")
    with pytest.raises(SecretError) as refused:
        asyncio.run(vault.reveal(other_tenant))
    assert "sk-" not in str(refused.value)


def test_scoped_secrets_are_sealed_with_a_hint_only() -> None:
    record = SecretVault(MASTER, FakeStore()).seal_scoped("t", "s", "k", "sk-abcdefgh1234", 5)
    assert record.hint == "1234" and b"sk-abcdefgh1234" not in record.sealed.ciphertext
