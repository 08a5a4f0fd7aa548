"""OpenAI's server-sent events framing: `data: {json}\\n\\n` per chunk, then `data: [DONE]\\n\\n`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
from modelyard.errors import GatewayError, StreamError

DONE = b"data: [DONE]\n\n"
_ENCODER = msgspec.json.Encoder()


def event(payload: Any) -> bytes:
    buffer = bytearray(b"data: ")
    _ENCODER.encode_into(payload, buffer, 6)
    buffer += b"\n\n"
    return bytes(buffer)


def error_event(error: GatewayError) -> bytes:
    body = {"error": {"message": error.message, "type": error.type, "param": error.param, "code": error.code}}
    return event(body)


async def render(chunks: AsyncIterator[Any]) -> AsyncIterator[bytes]:
    """Frame each chunk as it arrives. A failure after the first chunk ends with an error event
    (and no [DONE]), so the client sees an error rather than a silently truncated answer."""
    try:
        async for chunk in chunks:
            yield event(chunk)
    except GatewayError as error:
        yield error_event(error)
        return
    except Exception:
        yield error_event(
            StreamError("The stream failed inside the gateway.", status=500, code="stream_error")
        )
        raise
    yield DONE
