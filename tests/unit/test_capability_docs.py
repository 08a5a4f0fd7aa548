"""README.md's capability table is the one the adapters declare (`make docs` regenerates it)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from modelyard.providers.base import Capability
from modelyard.providers.capabilities import END, START, render_table
from modelyard.providers.registry import PROVIDER_TYPES

ROOT = Path(__file__).resolve().parents[2]


def test_readme_table_matches_the_adapters() -> None:
    text = (ROOT / "README.md").read_text()
    assert START in text and END in text
    assert text.split(START, 1)[1].split(END, 1)[0].strip() == render_table()


def test_render_docs_rewrites_only_the_table() -> None:
    spec = importlib.util.spec_from_file_location("render_docs", ROOT / "tools" / "render_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    stale = f"before\n{START}\n| old |\n{END}\nafter"
    assert module.rendered(stale) == f"before\n{START}\n{render_table()}\n{END}\nafter"


def test_every_type_has_a_row() -> None:
    table = render_table()
    assert all(f"`{name}`" in table for name in PROVIDER_TYPES)
    assert table.splitlines()[0].count("|") == len(Capability) + 2
