"""The committed modelyard.v1 package is exactly what tools/genproto.py makes from proto/ today."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "server" / "modelyard" / "v1"


def _files(directory: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "tools/genproto.py", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    generated = _files(tmp_path / "modelyard" / "v1")
    committed = _files(COMMITTED)
    assert generated, "genproto.py produced nothing"
    assert "modelyard.pb" in generated
    missing = sorted(set(generated) - set(committed))
    extra = sorted(set(committed) - set(generated))
    stale = sorted(name for name in set(generated) & set(committed) if generated[name] != committed[name])
    hint = "run `make proto` and commit server/modelyard/v1"
    assert not missing, f"generated but not committed: {missing}; {hint}"
    assert not extra, f"committed but no longer generated: {extra}; {hint}"
    assert not stale, f"stale generated files: {stale}; {hint}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["modelyard"]
