"""Request bodies → typed requests; every bad body → a 400 ClientError naming the `param`."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from modelyard.errors import ClientError
from modelyard.providers.openai import build_payload
from modelyard.schema.chat import (
    ChatRequest,
    FilePart,
    ImageUrlPart,
    InputAudioPart,
    JsonObjectFormat,
    JsonSchemaFormat,
    NamedToolChoice,
    TextFormat,
    TextPart,
)
from modelyard.schema.common import StreamOptions
from modelyard.schema.completions import CompletionRequest
from modelyard.schema.decode import MAX_MESSAGES, decode_request
from modelyard.schema.embeddings import EmbeddingRequest

USER = {"role": "user", "content": "hi"}


def _chat(**fields: Any) -> bytes:
    return json.dumps({"model": "demo/chat", "messages": [USER], **fields}).encode()


def _body(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


Check = Callable[[Any], bool]

VALID: list[Any] = [
    pytest.param(ChatRequest, _chat(), lambda r: r.messages[0].content == "hi", id="chat-minimal"),
    pytest.param(
        ChatRequest,
        _chat(
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is this"},
                        {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}},
                        {"type": "input_audio", "input_audio": {"data": "QUJD", "format": "wav"}},
                        {"type": "file", "file": {"file_id": "file-1"}},
                    ],
                }
            ]
        ),
        lambda r: (
            [type(p) for p in r.messages[0].content] == [TextPart, ImageUrlPart, InputAudioPart, FilePart]
            and r.messages[0].content[1].image_url.detail == "low"
        ),
        id="content-parts",
    ),
    pytest.param(
        ChatRequest,
        _chat(
            messages=[
                {"role": "system", "content": "be brief"},
                {"role": "developer", "content": "really"},
                USER,
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "42"},
            ]
        ),
        lambda r: (
            [m.role for m in r.messages] == ["system", "developer", "user", "assistant", "tool"]
            and r.messages[3].tool_calls[0].function.name == "f"
            and r.messages[4].tool_call_id == "call_1"
        ),
        id="every-role",
    ),
    pytest.param(
        ChatRequest, _chat(tool_choice="auto"), lambda r: r.tool_choice == "auto", id="tool-choice-auto"
    ),
    pytest.param(
        ChatRequest, _chat(tool_choice="none"), lambda r: r.tool_choice == "none", id="tool-choice-none"
    ),
    pytest.param(
        ChatRequest,
        _chat(tool_choice="required"),
        lambda r: r.tool_choice == "required",
        id="tool-choice-required",
    ),
    pytest.param(
        ChatRequest,
        _chat(
            tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            tool_choice={"type": "function", "function": {"name": "f"}},
        ),
        lambda r: (
            isinstance(r.tool_choice, NamedToolChoice)
            and r.tool_choice.function.name == "f"
            and r.tools[0].function.parameters == {"type": "object"}
        ),
        id="tool-choice-object",
    ),
    pytest.param(
        ChatRequest,
        _chat(response_format={"type": "text"}),
        lambda r: isinstance(r.response_format, TextFormat),
        id="response-format-text",
    ),
    pytest.param(
        ChatRequest,
        _chat(response_format={"type": "json_object"}),
        lambda r: isinstance(r.response_format, JsonObjectFormat),
        id="response-format-json-object",
    ),
    pytest.param(
        ChatRequest,
        _chat(
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "s", "schema": {"type": "object"}, "strict": True},
            }
        ),
        lambda r: (
            isinstance(r.response_format, JsonSchemaFormat)
            and r.response_format.json_schema.schema == {"type": "object"}
            and r.response_format.json_schema.strict is True
        ),
        id="response-format-json-schema",
    ),
    pytest.param(ChatRequest, _chat(stop="END"), lambda r: r.stop == "END", id="stop-string"),
    pytest.param(ChatRequest, _chat(stop=["a", "b"]), lambda r: r.stop == ["a", "b"], id="stop-list"),
    pytest.param(ChatRequest, _chat(stop=None), lambda r: r.stop is None, id="stop-null"),
    pytest.param(
        ChatRequest,
        _chat(stream=True, stream_options={"include_usage": True}),
        lambda r: (
            r.stream is True and r.stream_options == StreamOptions(include_usage=True) and r.include_usage
        ),
        id="stream-options",
    ),
    pytest.param(
        ChatRequest,
        _chat(max_tokens=None, temperature=None, n=1),
        lambda r: r.max_tokens is None and r.temperature is None and r.n == 1,
        id="explicit-nulls",
    ),
    pytest.param(
        ChatRequest,
        _chat(messages=[USER] * MAX_MESSAGES),
        lambda r: len(r.messages) == MAX_MESSAGES,
        id="max-messages",
    ),
    pytest.param(
        CompletionRequest, _body(model="m", prompt="once"), lambda r: r.prompt == "once", id="prompt-str"
    ),
    pytest.param(
        CompletionRequest,
        _body(model="m", prompt=["a", "b"]),
        lambda r: r.prompt == ["a", "b"],
        id="prompt-list",
    ),
    pytest.param(
        CompletionRequest,
        _body(model="m", prompt=[1, 2, 3]),
        lambda r: r.prompt == [1, 2, 3],
        id="prompt-tokens",
    ),
    pytest.param(
        CompletionRequest,
        _body(model="m", prompt=[[1, 2], [3]], max_tokens=5, echo=True),
        lambda r: r.prompt == [[1, 2], [3]] and r.max_tokens == 5 and r.echo is True,
        id="prompt-token-lists",
    ),
    pytest.param(EmbeddingRequest, _body(model="e", input="x"), lambda r: r.input == "x", id="input-str"),
    pytest.param(
        EmbeddingRequest,
        _body(model="e", input=["x", "y"], encoding_format="base64", dimensions=8),
        lambda r: r.input == ["x", "y"] and r.encoding_format == "base64" and r.dimensions == 8,
        id="input-list-base64",
    ),
    pytest.param(
        EmbeddingRequest,
        _body(model="e", input=[[1], [2, 3]]),
        lambda r: r.input == [[1], [2, 3]],
        id="input-tokens",
    ),
]


@pytest.mark.parametrize(("kind", "body", "check"), VALID)
def test_valid_bodies_decode(kind: type[Any], body: bytes, check: Check) -> None:
    request = decode_request(body, kind)
    assert isinstance(request, kind)
    assert check(request)
    assert request.extras == {}


EXTRAS_BODY = (
    b'{"model": "demo/chat", "messages": [{"role": "user", "content": "hi"}],'
    b' "reasoning_effort": "low", "extra": {"b": [1, 2.50, true, null], "a": "\\u00e9"},'
    b' "seed": 7, "num": 1e3}'
)


def test_unknown_fields_become_raw_extras() -> None:
    request = decode_request(EXTRAS_BODY, ChatRequest)
    assert set(request.extras) == {"reasoning_effort", "extra", "num"}
    assert all(isinstance(value, msgspec.Raw) for value in request.extras.values())
    assert bytes(request.extras["extra"]) == b'{"b": [1, 2.50, true, null], "a": "\\u00e9"}'
    assert bytes(request.extras["num"]) == b"1e3"
    assert request.seed == 7


@pytest.mark.parametrize("stream", [True, False, None])
def test_extras_survive_build_payload_byte_for_byte(stream: bool | None) -> None:
    request = decode_request(EXTRAS_BODY, ChatRequest)
    payload = build_payload(request, "gpt-4o-2024-08-06", stream=stream)
    assert b'"extra":{"b": [1, 2.50, true, null], "a": "\\u00e9"}' in payload
    assert b'"reasoning_effort":"low"' in payload
    assert b'"num":1e3' in payload
    decoded = json.loads(payload)
    assert decoded["model"] == "gpt-4o-2024-08-06"
    assert decoded["seed"] == 7
    assert "$extras" not in decoded


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        (CompletionRequest, b'{"model": "m", "prompt": "p", "best_of_n_x": [1,  2]}'),
        (EmbeddingRequest, b'{"model": "m", "input": "p", "input_type": "query"}'),
    ],
)
def test_extras_of_other_kinds_survive_build_payload(kind: type[Any], body: bytes) -> None:
    request = decode_request(body, kind)
    (name,) = request.extras
    payload = build_payload(request, "dep", stream=None)
    assert json.loads(payload)[name] == json.loads(body)[name]
    assert bytes(request.extras[name]) in payload


BAD: list[Any] = [
    pytest.param(ChatRequest, _chat(max_tokens="10"), "max_tokens", None, id="max-tokens-string"),
    pytest.param(ChatRequest, _chat(max_tokens=1.5), "max_tokens", None, id="max-tokens-float"),
    pytest.param(ChatRequest, _chat(max_tokens=True), "max_tokens", None, id="max-tokens-bool"),
    pytest.param(
        ChatRequest,
        _chat(messages=[{"role": "bot", "content": "x"}]),
        "messages[0].role",
        None,
        id="bad-role",
    ),
    pytest.param(
        ChatRequest,
        _chat(messages=[USER, {"role": "narrator", "content": "x"}]),
        "messages[1].role",
        None,
        id="bad-role-second",
    ),
    pytest.param(ChatRequest, _chat(messages=[]), "messages", "empty_array", id="empty-messages"),
    pytest.param(
        ChatRequest,
        _chat(messages=[USER] * (MAX_MESSAGES + 1)),
        "messages",
        "array_above_max_length",
        id="2049-messages",
    ),
    pytest.param(
        ChatRequest,
        _chat(messages=[USER, {"role": "tool", "content": "42"}]),
        "messages[1].tool_call_id",
        None,
        id="tool-without-tool-call-id",
    ),
    pytest.param(
        ChatRequest,
        _chat(messages=[{"role": "user"}]),
        "messages[0].content",
        None,
        id="user-without-content",
    ),
    pytest.param(
        ChatRequest,
        _chat(messages=[{"role": "assistant", "content": None}]),
        "messages[0].content",
        None,
        id="assistant-empty",
    ),
    pytest.param(
        ChatRequest,
        _chat(messages=[{"role": "user", "content": [{"type": "video", "video": {}}]}]),
        "messages[0].content[0].type",
        None,
        id="unknown-part-type",
    ),
    pytest.param(ChatRequest, _chat(tool_choice="sometimes"), "tool_choice", None, id="bad-tool-choice"),
    pytest.param(
        ChatRequest,
        _chat(response_format={"type": "xml"}),
        "response_format.type",
        None,
        id="bad-response-format",
    ),
    pytest.param(ChatRequest, _chat(stop=5), "stop", None, id="stop-int"),
    pytest.param(
        ChatRequest,
        _chat(stream_options={"include_usage": "yes"}),
        "stream_options.include_usage",
        None,
        id="include-usage-string",
    ),
    pytest.param(ChatRequest, _chat(n=0), "n", None, id="n-zero"),
    pytest.param(ChatRequest, _chat(n=129), "n", None, id="n-too-big"),
    pytest.param(ChatRequest, _chat(model=""), "model", None, id="empty-model"),
    pytest.param(ChatRequest, b'{"model": "m", "messages": [', None, "invalid_json", id="malformed-json"),
    pytest.param(ChatRequest, b"", None, "invalid_json", id="empty-body"),
    pytest.param(ChatRequest, b'{"model": "m"} trailing', None, "invalid_json", id="trailing-garbage"),
    pytest.param(
        ChatRequest,
        b'{"model": "m", "messages": [{"role": "user", "content": "h\xffi"}]}',
        None,
        "invalid_json",
        id="invalid-utf8-in-string",
    ),
    pytest.param(ChatRequest, b"[1, 2]", None, None, id="not-an-object"),
    pytest.param(EmbeddingRequest, _body(model="e", input=[1, "a"]), "input", None, id="input-mixed"),
    pytest.param(EmbeddingRequest, _body(model="e", input=[]), "input", None, id="input-empty"),
    pytest.param(
        EmbeddingRequest, _body(model="e", input=[[1], []]), "input", None, id="input-empty-token-list"
    ),
    pytest.param(EmbeddingRequest, _body(model="e", input=[True]), "input", None, id="input-bools"),
    pytest.param(
        EmbeddingRequest,
        _body(model="e", input="x", encoding_format="hex"),
        "encoding_format",
        None,
        id="bad-encoding",
    ),
    pytest.param(
        EmbeddingRequest,
        _body(model="e", input="x", dimensions=0),
        "dimensions",
        None,
        id="dimensions-zero",
    ),
    pytest.param(
        EmbeddingRequest,
        _body(model="e", input="x", dimensions=-4),
        "dimensions",
        None,
        id="dimensions-negative",
    ),
    pytest.param(CompletionRequest, _body(model="m", prompt=[]), "prompt", None, id="prompt-empty"),
    pytest.param(CompletionRequest, _body(model="m", prompt=[1, "a"]), "prompt", None, id="prompt-mixed"),
    pytest.param(CompletionRequest, _body(model="m", prompt="p", n=0), "n", None, id="completion-n-zero"),
    pytest.param(
        ChatRequest,
        _body(messages=[USER]),
        "model",
        None,
        id="missing-model",
    ),
    pytest.param(
        CompletionRequest,
        _body(model="m"),
        "prompt",
        None,
        id="missing-prompt",
    ),
]


@pytest.mark.parametrize(("kind", "body", "param", "code"), BAD)
def test_bad_bodies_are_400_with_param(
    kind: type[Any], body: bytes, param: str | None, code: str | None
) -> None:
    with pytest.raises(ClientError) as caught:
        decode_request(body, kind)
    error = caught.value
    assert error.status == 400
    assert error.param == param
    assert error.code == code
    assert error.type == "invalid_request_error"
    assert error.message
    if param is not None:  # the message points at the field, or at least at its message
        assert param.split(".")[0] in error.message


def test_type_errors_name_the_path_and_the_types() -> None:
    with pytest.raises(ClientError) as caught:
        decode_request(_chat(max_tokens="10"), ChatRequest)
    assert caught.value.message == "Invalid request body at 'max_tokens': Expected `int | null`, got `str`."
