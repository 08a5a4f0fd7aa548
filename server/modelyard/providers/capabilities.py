"""The capability table: which operations each provider type serves, from the adapters themselves.

`python -m modelyard.providers.capabilities` prints it as markdown; README.md holds that output
between markers, and a test keeps the two identical.
"""

from __future__ import annotations

from modelyard.providers.base import Capability
from modelyard.providers.registry import PROVIDER_TYPES

START = "<!-- capabilities:start -->"
END = "<!-- capabilities:end -->"


def render_table() -> str:
    columns = list(Capability)
    lines = [
        "| provider type | " + " | ".join(c.value.replace("_", " ") for c in columns) + " |",
        "| --- |" + " :-: |" * len(columns),
    ]
    for name, spec in sorted(PROVIDER_TYPES.items()):
        cells = ["yes" if c in spec.adapter.capabilities else "—" for c in columns]
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(f"{START}\n{render_table()}\n{END}")
