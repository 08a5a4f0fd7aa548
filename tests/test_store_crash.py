"""The SQLite store survives `kill -9` in the middle of writes: every write the writer saw commit is
there after a restart, no object is half written, and the file is intact."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from modelyard.store.sqlite import SqliteStore

WRITER = r"""
import os, sys, uuid
from pathlib import Path
from modelyard.store.records import SECRET_MARKER, AuditRecord, ModelRecord, ProviderRecord, Sealed, SecretRecord
from modelyard.store.sqlite import SqliteStore

store = SqliteStore(Path(sys.argv[1]))
while True:
    pid = uuid.uuid4().hex
    secrets = [
        SecretRecord(f"{pid}-s{n}", "default", pid, "sealed", Sealed(os.urandom(64), b"n" * 12, b"w" * 48, b"k" * 12, 1))
        for n in range(2)
    ]
    data = {f"key{n}": {SECRET_MARKER: s.id} for n, s in enumerate(secrets)} | {"pad": "x" * (len(pid) * 40)}
    provider = ProviderRecord(pid, "default", f"p-{pid}", "openai", data, 1, 1)
    store.create_provider(provider, secrets, AuditRecord("default", "op", "providers.create", pid, "ok", 1))
    model = ModelRecord(f"{pid}-m", "default", pid, "gpt", f"alias-{pid}", 1)
    store.add_model(model, AuditRecord("default", "op", "models.enable", pid, "ok", 1))
    sys.stdout.write(pid + "\n")
    sys.stdout.flush()
"""


def _run_and_kill(path: Path, rng: random.Random) -> list[str]:
    """Start a writer, let it commit about 200 providers, SIGKILL it mid-loop; the ids it printed."""
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert child.stdout is not None and child.stderr is not None
    printed: list[str] = []
    wanted = rng.randint(150, 250)
    while len(printed) < wanted:
        line = child.stdout.readline().decode()
        assert line.endswith("\n"), f"the writer died: {child.stderr.read().decode()[-2000:]}"
        printed.append(line.strip())
    time.sleep(rng.uniform(0, 0.004))
    os.kill(child.pid, signal.SIGKILL)
    rest = child.stdout.read().decode()
    child.wait(10)
    child.stdout.close()
    child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    return printed + [line.strip() for line in rest.splitlines(keepends=True) if line.endswith("\n")]


def _check(path: Path, printed: set[str], kills: int) -> None:
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        audits = dict(conn.execute("SELECT action, count(*) FROM audit GROUP BY action").fetchall())
    with SqliteStore(path) as store:
        providers = {p.id: p for p in store.list_providers("default")}
        models: dict[str, int] = {}
        for m in store.list_models("default"):
            models[m.provider_id] = models.get(m.provider_id, 0) + 1
        assert printed <= providers.keys(), "a committed provider was lost"
        for pid, record in providers.items():
            secrets = store.get_secrets([f"{pid}-s0", f"{pid}-s1"])
            assert len(secrets) == 2 and all(s.provider_id == pid for s in secrets.values())
            assert record.data["key0"] == {"$secret": f"{pid}-s0"}
            assert models.get(pid, 0) == 1 or pid not in printed, "a committed model was lost"
        unprinted = providers.keys() - printed
        assert len(unprinted) <= kills, "only the provider in flight at each kill may be unconfirmed"
        assert audits.get("providers.create", 0) == len(providers)
        assert audits.get("models.enable", 0) == sum(models.values())


def test_kill_9_mid_write_loses_no_committed_write(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    SqliteStore(path).close()
    rng = random.Random()
    printed: set[str] = set()
    started = time.monotonic()
    for kills in range(1, 7):
        printed |= set(_run_and_kill(path, rng))
        _check(path, printed, kills)
        if time.monotonic() - started > 7:
            break
    assert len(printed) >= 150
