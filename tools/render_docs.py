"""Write the provider capability table into README.md between its markers (see `make docs`)."""

from __future__ import annotations

from pathlib import Path

from modelyard.providers.capabilities import END, START, render_table

README = Path(__file__).resolve().parent.parent / "README.md"


def rendered(text: str) -> str:
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{render_table()}\n{END}{tail}"


if __name__ == "__main__":
    README.write_text(rendered(README.read_text()))
