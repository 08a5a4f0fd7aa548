"""AWS event-stream framing (`application/vnd.amazon.eventstream`), decoded incrementally.

A message is: prelude (total length u32, headers length u32, CRC32 of those 8 bytes), headers
(name length u8, name, value type u8, value), payload, CRC32 of everything before it. Both CRCs are
checked; a bad one or a malformed frame raises the gateway's StreamError.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from modelyard.errors import StreamError

PRELUDE = 12
MAX_MESSAGE = 24 * 1024 * 1024
_FIXED = {2: ">b", 3: ">h", 4: ">i", 5: ">q", 8: ">q"}


@dataclass(frozen=True)
class EventMessage:
    headers: dict[str, Any]
    payload: bytes

    @property
    def message_type(self) -> str:
        return str(self.headers.get(":message-type", "event"))

    @property
    def event_type(self) -> str:
        return str(self.headers.get(":event-type", ""))


def _error(provider: str, detail: str) -> StreamError:
    return StreamError(
        f"Provider '{provider}' sent a malformed event stream ({detail}).",
        status=502,
        code="bad_upstream_response",
        provider=provider,
    )


def parse_headers(data: bytes, provider: str = "") -> dict[str, Any]:
    headers: dict[str, Any] = {}
    pos = 0
    try:
        while pos < len(data):
            size = data[pos]
            name = data[pos + 1 : pos + 1 + size].decode("utf-8")
            pos += 1 + size
            kind = data[pos]
            pos += 1
            value: Any
            if kind in (0, 1):
                value = kind == 0
            elif kind in _FIXED:
                fmt = _FIXED[kind]
                (value,) = struct.unpack_from(fmt, data, pos)
                pos += struct.calcsize(fmt)
            elif kind in (6, 7):
                (length,) = struct.unpack_from(">H", data, pos)
                raw = data[pos + 2 : pos + 2 + length]
                if len(raw) != length:
                    raise ValueError("truncated header value")
                value = raw.decode("utf-8") if kind == 7 else raw
                pos += 2 + length
            elif kind == 9:
                value = uuid.UUID(bytes=data[pos : pos + 16])
                pos += 16
            else:
                raise ValueError(f"unknown header type {kind}")
            headers[name] = value
    except (IndexError, ValueError, struct.error, UnicodeDecodeError):
        raise _error(provider, "bad headers") from None
    return headers


class EventStreamDecoder:
    """Feed arbitrary byte chunks; get whole messages back as soon as they are complete."""

    def __init__(self, provider: str = "") -> None:
        self.provider = provider
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """Bytes of an incomplete message still buffered."""
        return len(self._buffer)

    def feed(self, chunk: bytes) -> Iterator[EventMessage]:
        """The messages completed by `chunk`, lazily: those before a corrupt frame come out first."""
        self._buffer += chunk
        return self._drain()

    def _drain(self) -> Iterator[EventMessage]:
        while len(self._buffer) >= PRELUDE:
            total, header_length, prelude_crc = struct.unpack_from(">III", self._buffer, 0)
            if zlib.crc32(bytes(self._buffer[:8])) != prelude_crc:
                raise _error(self.provider, "prelude CRC mismatch")
            if total < PRELUDE + 4 + header_length or total > MAX_MESSAGE:
                raise _error(self.provider, "bad message length")
            if len(self._buffer) < total:
                break
            frame = bytes(self._buffer[:total])
            del self._buffer[:total]
            (message_crc,) = struct.unpack_from(">I", frame, total - 4)
            if zlib.crc32(frame[:-4]) != message_crc:
                raise _error(self.provider, "message CRC mismatch")
            headers = parse_headers(frame[PRELUDE : PRELUDE + header_length], self.provider)
            yield EventMessage(headers, frame[PRELUDE + header_length : -4])


def encode_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One frame with string headers (used by tests and fakes)."""
    encoded = bytearray()
    for name, value in headers.items():
        raw_name, raw_value = name.encode("utf-8"), value.encode("utf-8")
        encoded += bytes([len(raw_name)]) + raw_name + b"\x07" + struct.pack(">H", len(raw_value)) + raw_value
    total = PRELUDE + len(encoded) + len(payload) + 4
    prelude = struct.pack(">II", total, len(encoded))
    body = prelude + struct.pack(">I", zlib.crc32(prelude)) + bytes(encoded) + payload
    return body + struct.pack(">I", zlib.crc32(body))
