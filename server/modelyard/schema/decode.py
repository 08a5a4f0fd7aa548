"""Decode and validate request bodies, turning every problem into a ClientError with a `param`."""

from __future__ import annotations

import re
from functools import cache
from typing import Any, TypeVar

import msgspec

from modelyard.errors import ClientError, invalid_request
from modelyard.schema.chat import ChatRequest, Message
from modelyard.schema.completions import CompletionRequest
from modelyard.schema.embeddings import EmbeddingRequest

T = TypeVar("T", ChatRequest, CompletionRequest, EmbeddingRequest)

MAX_MESSAGES = 2048
_PATH = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")
_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]+)`")
MAX_DIMENSIONS = 65_536
_DECODERS: dict[type[Any], msgspec.json.Decoder[Any]] = {}
_FIELDS_DECODER = msgspec.json.Decoder(dict[str, msgspec.Raw])


@cache
def _known_fields(kind: type[msgspec.Struct]) -> frozenset[str]:
    return frozenset(f.encode_name for f in msgspec.structs.fields(kind))


def _decoder(kind: type[T]) -> msgspec.json.Decoder[T]:
    decoder = _DECODERS.get(kind)
    if decoder is None:
        decoder = _DECODERS[kind] = msgspec.json.Decoder(kind)
    return decoder


def _to_client_error(exc: msgspec.MsgspecError) -> ClientError:
    text = str(exc)
    if isinstance(exc, msgspec.ValidationError):
        match = _PATH.search(text)
        param = match.group("path") if match else None
        message = _PATH.sub("", text)
        missing = _MISSING.match(message)
        if missing:
            param = f"{param}.{missing.group('field')}" if param else missing.group("field")
        where = f" at '{param}'" if param else ""
        return invalid_request(f"Invalid request body{where}: {message}.", param=param)
    return invalid_request(f"We could not parse the JSON body of your request. ({text})", code="invalid_json")


def decode_request(body: bytes, kind: type[T]) -> T:
    """Parse a JSON request body into `kind`, keeping unknown top-level fields as raw extras."""
    try:
        fields = _FIELDS_DECODER.decode(body)
        request = _decoder(kind).decode(body)
    except msgspec.MsgspecError as exc:
        raise _to_client_error(exc) from None
    except UnicodeDecodeError:
        raise invalid_request("The request body is not valid UTF-8.", code="invalid_json") from None
    known = _known_fields(kind)
    request.extras = {k: v for k, v in fields.items() if k not in known}
    validate(request)
    return request


def validate(request: ChatRequest | CompletionRequest | EmbeddingRequest) -> None:
    """Checks a type cannot express. Shared by the REST and gRPC surfaces."""
    if not request.model:
        raise invalid_request("You must provide a model parameter.", param="model")
    if isinstance(request, ChatRequest):
        _validate_chat(request)
    elif isinstance(request, CompletionRequest):
        _validate_text_or_tokens(request.prompt, "prompt")
    else:
        _validate_text_or_tokens(request.input, "input")
        dimensions = request.dimensions
        if isinstance(dimensions, int) and not 1 <= dimensions <= MAX_DIMENSIONS:
            raise invalid_request(
                f"Invalid 'dimensions': {dimensions} is not between 1 and {MAX_DIMENSIONS}.",
                param="dimensions",
            )
    n = getattr(request, "n", None)
    if isinstance(n, int) and not 1 <= n <= 128:
        raise invalid_request(f"Invalid 'n': {n} is not between 1 and 128.", param="n")


def _is_token_list(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(t, int) and not isinstance(t, bool) for t in value)
    )


def _validate_text_or_tokens(value: str | list[Any], param: str) -> None:
    """A string, a non-empty list of strings, of token ids, or of token-id lists."""
    if isinstance(value, str):
        return
    ok = bool(value) and (
        all(isinstance(item, str) for item in value)
        or _is_token_list(value)
        or all(_is_token_list(item) for item in value)
    )
    if not ok:
        raise invalid_request(
            f"Invalid '{param}': expected a string, an array of strings, an array of token ids, "
            "or an array of token-id arrays.",
            param=param,
        )


def _validate_chat(request: ChatRequest) -> None:
    count = len(request.messages)
    if count == 0:
        raise invalid_request(
            "Invalid 'messages': empty array. Expected an array with minimum length 1.",
            param="messages",
            code="empty_array",
        )
    if count > MAX_MESSAGES:
        raise invalid_request(
            f"Invalid 'messages': array too long. Expected an array with maximum length "
            f"{MAX_MESSAGES}, but got an array with length {count} instead.",
            param="messages",
            code="array_above_max_length",
        )
    for index, message in enumerate(request.messages):
        _validate_message(index, message)


def _validate_message(index: int, message: Message) -> None:
    param = f"messages[{index}]"
    if message.role == "tool" and not message.tool_call_id:
        raise invalid_request(
            f"Invalid '{param}': a message with role 'tool' needs 'tool_call_id'.",
            param=f"{param}.tool_call_id",
        )
    has_content = message.content not in (msgspec.UNSET, None)
    if message.role != "assistant" and not has_content:
        raise invalid_request(
            f"Invalid '{param}': a message with role '{message.role}' needs 'content'.",
            param=f"{param}.content",
        )
    if message.role == "assistant" and not has_content and not message.tool_calls:
        raise invalid_request(
            f"Invalid '{param}': an assistant message needs 'content' or 'tool_calls'.",
            param=f"{param}.content",
        )
