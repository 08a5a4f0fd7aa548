"""Output of the admin subcommands: aligned tables for people, JSON for scripts.

JSON follows the REST API's shape (proto field names, fields at their default value included);
lists are JSON arrays. Text coming from the gateway is made printable before it reaches a terminal.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from google.protobuf import json_format, struct_pb2
from google.protobuf.message import Message

M = TypeVar("M", bound=Message)

SHOWN_ONCE = "warning: the secret above is shown only this once; store it now, it cannot be retrieved again."


def to_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def printable(value: object) -> str:
    return "".join(c if c.isprintable() else "?" for c in str(value))


def cell(value: str) -> str:
    """A table or record value: printable, and "-" when empty."""
    return printable(value) or "-"


def timestamp(seconds: int, zero: str = "-") -> str:
    if not seconds:
        return zero
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def listing(values: Iterable[str], empty: str = "-") -> str:
    return ",".join(values) or empty


def _plain(value: Any) -> Any:
    """A Struct value with its whole numbers (doubles on the wire) as integers."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {name: _plain(item) for name, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def struct_fields(prefix: str, data: struct_pb2.Struct) -> list[tuple[str, str]]:
    """One (name, value) row per argument; other than strings as compact JSON."""
    values = _plain(json_format.MessageToDict(data))
    return [
        (f"{prefix}{name}", value if isinstance(value, str) else json.dumps(value, separators=(",", ":")))
        for name, value in sorted(values.items())
    ]


def format_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    cells = [list(headers), *([cell(value) for value in row] for row in rows)]
    widths = [max(len(row[column]) for row in cells) for column in range(len(headers))]
    lines = ("  ".join(text.ljust(width) for text, width in zip(row, widths, strict=True)) for row in cells)
    return "\n".join(line.rstrip() for line in lines)


def format_fields(fields: Sequence[tuple[str, str]]) -> str:
    width = max((len(name) for name, _ in fields), default=0)
    return "\n".join(f"{name.ljust(width)}  {cell(value)}" for name, value in fields)


class Output:
    """Prints one record, a list of records or a deletion, as text or (with --json) as JSON."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def _json(self, value: object) -> None:
        print(json.dumps(value, indent=2, ensure_ascii=False))

    def record(self, message: Message, fields: Sequence[tuple[str, str]]) -> None:
        if self.as_json:
            self._json(to_dict(message))
        else:
            print(format_fields(fields))

    def records(
        self, messages: Sequence[M], headers: Sequence[str], row: Callable[[M], Sequence[str]]
    ) -> None:
        if self.as_json:
            self._json([to_dict(message) for message in messages])
        else:
            print(format_table(headers, (row(message) for message in messages)))

    def deleted(self, message: Message, deleted: bool, what: str) -> None:
        if self.as_json:
            self._json(to_dict(message))
        else:
            print(f"deleted {printable(what)}" if deleted else f"{printable(what)} was not deleted")

    @staticmethod
    def warn_shown_once() -> None:
        print(SHOWN_ONCE, file=sys.stderr)
