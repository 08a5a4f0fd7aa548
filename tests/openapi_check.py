"""Validate response bodies against OpenAI's OpenAPI document (``shared/specs/openai-openapi.yaml``).

Every helper raises ``AssertionError`` with a readable reason when a body does not match.

How the document is prepared (once, cached), following ``shared/specs/README.md``:

* it is loaded without spec validation (it does not pass it: duplicate ``required`` entries);
* ``discriminator`` keys are stripped (some point at schemas that do not exist);
* ``nullable: true`` (an OpenAPI 3.0 keyword the 3.1 document still uses, e.g. on the stream chunk's
  ``finish_reason``, ``logprobs`` and ``usage``) is rewritten to its 3.1 meaning
  ``anyOf: [<schema>, {type: "null"}]``; without it the nulls OpenAI really sends would be rejected;
* requests are matched as host ``https://api.openai.com`` with paths ``/v1/...``.

Whole JSON responses go through openapi-core (operation, status and media type must be documented).
Error bodies and stream chunks are checked directly against the component schemas with
``openapi_schema_validator``: the document has no ``text/event-stream`` schema for the legacy
``/completions`` stream, so its chunks use ``CreateCompletionResponse`` with ``finish_reason`` and
``usage`` made nullable (OpenAI sends ``null`` for both on every chunk but the last).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, Final

import orjson
import yaml
from jsonschema.exceptions import ValidationError, best_match
from openapi_core import Config, OpenAPI
from openapi_core.exceptions import OpenAPIError
from openapi_core.testing import MockRequest, MockResponse
from openapi_schema_validator import OAS31Validator

SPEC_PATH: Final = Path(__file__).resolve().parents[1].parent / "shared" / "specs" / "openai-openapi.yaml"
SERVER_URL: Final = "https://api.openai.com"
API_PREFIX: Final = "/v1"

CHAT_STREAM_SCHEMA: Final = "CreateChatCompletionStreamResponse"
COMPLETION_STREAM_SCHEMA: Final = "_CompletionStreamChunk"  # derived in _prepare_spec
ERROR_SCHEMA: Final = "ErrorResponse"
_STREAM_SCHEMAS: Final = {"/chat/completions": CHAT_STREAM_SCHEMA, "/completions": COMPLETION_STREAM_SCHEMA}


# --------------------------------------------------------------------------------------------------
# Loading and preparing the document


def _without_discriminators(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_discriminators(v) for k, v in node.items() if k != "discriminator"}
    if isinstance(node, list):
        return [_without_discriminators(v) for v in node]
    return node


def _nullable_to_31(node: Any) -> Any:
    """Rewrite OpenAPI 3.0 ``nullable: true`` into the 3.1 ``anyOf [schema, null]`` it means."""
    if isinstance(node, list):
        return [_nullable_to_31(v) for v in node]
    if not isinstance(node, dict):
        return node
    converted = {k: _nullable_to_31(v) for k, v in node.items() if k != "nullable"}
    if node.get("nullable") is True:
        return {"anyOf": [converted, {"type": "null"}]}
    return converted


def _completion_stream_schema(schemas: dict[str, Any]) -> dict[str, Any]:
    """``CreateCompletionResponse`` as a stream chunk: ``finish_reason`` and ``usage`` may be null."""
    chunk: dict[str, Any] = copy.deepcopy(schemas["CreateCompletionResponse"])
    choice = chunk["properties"]["choices"]["items"]
    choice["properties"]["finish_reason"] = {
        "anyOf": [choice["properties"]["finish_reason"], {"type": "null"}]
    }
    chunk["properties"]["usage"] = {"anyOf": [chunk["properties"]["usage"], {"type": "null"}]}
    return chunk


@lru_cache(maxsize=1)
def load_spec() -> dict[str, Any]:
    """The prepared OpenAPI document (see the module docstring)."""
    if not SPEC_PATH.is_file():
        raise FileNotFoundError(f"OpenAI's OpenAPI document is expected at {SPEC_PATH}")
    with SPEC_PATH.open("rb") as handle:
        raw = yaml.load(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    spec: dict[str, Any] = _nullable_to_31(_without_discriminators(raw))
    schemas = spec["components"]["schemas"]
    schemas[COMPLETION_STREAM_SCHEMA] = _completion_stream_schema(schemas)
    return spec


@lru_cache(maxsize=1)
def _openapi() -> OpenAPI:
    return OpenAPI.from_dict(load_spec(), config=Config(spec_validator_cls=None))


@cache
def _schema_validator(schema_name: str) -> OAS31Validator:
    spec = load_spec()
    if schema_name not in spec["components"]["schemas"]:
        raise KeyError(f"no component schema {schema_name!r} in {SPEC_PATH.name}")
    root = {"components": spec["components"], "$ref": f"#/components/schemas/{schema_name}"}
    return OAS31Validator(root)


# --------------------------------------------------------------------------------------------------
# Reporting


def _describe(errors: Iterable[ValidationError]) -> str:
    found = list(errors)
    best = best_match(found)
    if best is None:
        return "no details"
    extra = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    return f"at {best.json_path}: {best.message}{extra}"


def _describe_openapi_error(error: OpenAPIError) -> str:
    cause: BaseException | None = error
    while cause is not None:
        schema_errors = getattr(cause, "schema_errors", None)
        if schema_errors:
            return _describe(schema_errors)
        cause = cause.__cause__
    return f"{type(error).__name__}: {error}"


def _check_schema(schema_name: str, instance: Any, what: str) -> None:
    errors = list(_schema_validator(schema_name).iter_errors(instance))
    if errors:
        raise AssertionError(f"{what} does not match {schema_name}: {_describe(errors)}")


# --------------------------------------------------------------------------------------------------
# Parsing


def _api_path(path: str) -> str:
    """``/chat/completions`` or ``/v1/chat/completions`` (query string dropped) as ``/v1/...``."""
    bare = path.split("?", 1)[0]
    return bare if bare.startswith(API_PREFIX + "/") else API_PREFIX + bare


def _operation_path(path: str) -> str:
    return _api_path(path).removeprefix(API_PREFIX)


def _parse_json(body: bytes | str | Any, what: str) -> Any:
    if not isinstance(body, bytes | bytearray | str):
        return body
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        preview = bytes(body[:80]) if not isinstance(body, str) else body[:80]
        raise AssertionError(f"{what} is not JSON ({exc}): {preview!r}") from None


def parse_sse(body: bytes | str, require_done: bool = True) -> list[dict[str, Any]]:
    """The JSON payloads of an SSE body (``data:`` lines), checking the ``data: [DONE]`` terminator."""
    text = body.decode("utf-8") if isinstance(body, bytes | bytearray) else body
    events = [event for event in text.replace("\r\n", "\n").split("\n\n") if event.strip()]
    chunks: list[dict[str, Any]] = []
    done = False
    for event in events:
        data = "\n".join(
            line.removeprefix("data:").removeprefix(" ")
            for line in event.split("\n")
            if line.startswith("data:")
        )
        if not data:
            continue
        if done:
            raise AssertionError(f"SSE event after [DONE]: {data[:80]!r}")
        if data == "[DONE]":
            done = True
            continue
        chunk = _parse_json(data, "SSE event data")
        if not isinstance(chunk, dict):
            raise AssertionError(f"SSE event data is not a JSON object: {data[:80]!r}")
        chunks.append(chunk)
    if require_done and not done:
        raise AssertionError("SSE stream does not end with 'data: [DONE]'")
    return chunks


# --------------------------------------------------------------------------------------------------
# Public checks


def _documented_statuses(method: str, path: str) -> set[str]:
    operation_path = _operation_path(path)
    paths = load_spec()["paths"]
    operation = paths.get(operation_path, {}).get(method.lower())
    if operation is None:  # templated paths such as /models/{model}
        prefix = operation_path.rsplit("/", 1)[0]
        templated = [p for p in paths if p.rsplit("/", 1)[0] == prefix and p.endswith("}")]
        operation = paths[templated[0]].get(method.lower()) if templated else None
    if operation is None:
        raise AssertionError(f"{method.upper()} {path} is not an operation of {SPEC_PATH.name}")
    return set(operation.get("responses", {}))


def validate_response(
    method: str, path: str, status: int, body: bytes, content_type: str = "application/json"
) -> None:
    """Validate a whole response against the operation's documented response.

    Error statuses the operation does not document (OpenAI documents only 429) are checked as the
    ``ErrorResponse`` envelope; ``text/event-stream`` bodies are parsed and checked chunk by chunk.
    """
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == "text/event-stream":
        if status != 200:
            raise AssertionError(f"a stream must have status 200, got {status}")
        validate_stream_chunks(path, parse_sse(body))
        return
    if status >= 400 and str(status) not in _documented_statuses(method, path):
        validate_error(status, body)
        return
    parsed = _parse_json(body, f"{method.upper()} {path} response body")
    raw = body if isinstance(body, bytes | bytearray) else orjson.dumps(parsed)
    request = MockRequest(SERVER_URL, method.lower(), _api_path(path))
    response = MockResponse(bytes(raw), status_code=status, content_type=media_type)
    try:
        _openapi().validate_response(request, response)
    except OpenAPIError as exc:
        reason = _describe_openapi_error(exc)
        raise AssertionError(f"{method.upper()} {path} {status} response is invalid: {reason}") from None


def validate_stream_chunks(path: str, chunks: list[dict[str, Any]]) -> None:
    """Validate every parsed SSE chunk against the endpoint's streaming chunk schema."""
    operation_path = _operation_path(path)
    schema_name = _STREAM_SCHEMAS.get(operation_path)
    if schema_name is None:
        raise AssertionError(f"{path} does not stream (streaming paths: {sorted(_STREAM_SCHEMAS)})")
    if not chunks:
        raise AssertionError(f"{path} stream has no chunks")
    for position, chunk in enumerate(chunks):
        _check_schema(schema_name, chunk, f"{path} stream chunk #{position}")


def validate_error(status: int, body: bytes) -> None:
    """Validate an error response: a 4xx/5xx status and OpenAI's ``{"error": {...}}`` envelope."""
    if not 400 <= status <= 599:
        raise AssertionError(f"an error response needs a 4xx/5xx status, got {status}")
    _check_schema(ERROR_SCHEMA, _parse_json(body, f"{status} error body"), f"{status} error body")
