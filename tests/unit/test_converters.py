"""Typed proto messages <-> the gateway's schema, and google.protobuf.Struct <-> Python values."""

from __future__ import annotations

import base64
import struct
from typing import Any

import msgspec
import pytest
from google.protobuf import struct_pb2
from modelyard.errors import ClientError
from modelyard.schema import chat as s
from modelyard.schema.common import CompletionTokensDetails, PromptTokensDetails, StreamOptions, Usage
from modelyard.schema.completions import Completion, CompletionChoice, CompletionLogprobs, CompletionRequest
from modelyard.schema.decode import validate
from modelyard.schema.embeddings import Embedding, EmbeddingResponse, EmbeddingUsage
from modelyard.service import convert_chat, convert_other
from modelyard.service.structs import dict_to_struct, struct_to_dict, value_to_python
from modelyard.v1 import chat_pb2 as pb
from modelyard.v1 import common_pb2, completions_pb2, embeddings_pb2
from msgspec import UNSET

PARAMETERS = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
EXTRA = {"reasoning_effort": "low", "nested": {"a": [1, 2.5, True, None, "x"]}}


def _full_request() -> pb.ChatCompletionRequest:
    return pb.ChatCompletionRequest(
        model="demo/chat",
        messages=[
            pb.ChatMessage(role=pb.ROLE_SYSTEM, content="be brief"),
            pb.ChatMessage(role=pb.ROLE_DEVELOPER, content="really"),
            pb.ChatMessage(
                role=pb.ROLE_USER,
                name="ann",
                content_parts=[
                    pb.ContentPart(text="look"),
                    pb.ContentPart(image_url=pb.ImageUrl(url="https://x/y.png", detail="low")),
                    pb.ContentPart(input_audio=pb.InputAudio(data="QUJD", format="wav")),
                    pb.ContentPart(file=pb.FileInput(file_id="file-1", filename="a.pdf")),
                    pb.ContentPart(refusal="nope"),
                ],
            ),
            pb.ChatMessage(
                role=pb.ROLE_ASSISTANT,
                tool_calls=[
                    pb.ToolCall(
                        id="call_1", type="function", function=pb.FunctionCall(name="f", arguments='{"x":1}')
                    )
                ],
                refusal="",
            ),
            pb.ChatMessage(role=pb.ROLE_TOOL, tool_call_id="call_1", content="42"),
        ],
        temperature=0.5,
        top_p=0.25,
        n=2,
        stop=["END", "STOP"],
        max_tokens=64,
        max_completion_tokens=32,
        presence_penalty=0.5,
        frequency_penalty=-1.5,
        logit_bias={"50256": -100.0, "7": 2.5},
        logprobs=True,
        top_logprobs=3,
        seed=2**40 + 1,
        user="u-1",
        metadata={"team": "a", "env": "test"},
        tools=[
            pb.Tool(
                type="function",
                function=pb.FunctionDefinition(
                    name="f", description="find", parameters=dict_to_struct(PARAMETERS), strict=True
                ),
            )
        ],
        tool_choice=pb.ToolChoice(function_name="f"),
        parallel_tool_calls=False,
        response_format=pb.ResponseFormat(
            type=pb.ResponseFormat.TYPE_JSON_SCHEMA,
            json_schema=pb.JsonSchemaFormat(
                name="out", description="result", schema=dict_to_struct(PARAMETERS), strict=False
            ),
        ),
        stream_options=common_pb2.StreamOptions(include_usage=True),
        top_k=40,
        extra_body=dict_to_struct(EXTRA),
    )


EXPECTED_FULL = s.ChatRequest(
    model="demo/chat",
    messages=[
        s.Message(role="system", content="be brief"),
        s.Message(role="developer", content="really"),
        s.Message(
            role="user",
            name="ann",
            content=[
                s.TextPart(text="look"),
                s.ImageUrlPart(image_url=s.ImageUrl(url="https://x/y.png", detail="low")),
                s.InputAudioPart(input_audio=s.InputAudio(data="QUJD", format="wav")),
                s.FilePart(file=s.FileRef(file_id="file-1", filename="a.pdf")),
                s.RefusalPart(refusal="nope"),
            ],
        ),
        s.Message(
            role="assistant",
            tool_calls=[s.ToolCall(id="call_1", function=s.FunctionCall(name="f", arguments='{"x":1}'))],
            refusal="",
        ),
        s.Message(role="tool", tool_call_id="call_1", content="42"),
    ],
    stream=True,
    stream_options=StreamOptions(include_usage=True),
    temperature=0.5,
    top_p=0.25,
    top_k=40,
    n=2,
    stop=["END", "STOP"],
    max_tokens=64,
    max_completion_tokens=32,
    presence_penalty=0.5,
    frequency_penalty=-1.5,
    logit_bias={"50256": -100.0, "7": 2.5},
    logprobs=True,
    top_logprobs=3,
    seed=2**40 + 1,
    user="u-1",
    metadata={"team": "a", "env": "test"},
    tools=[
        s.Tool(
            function=s.FunctionDefinition(name="f", description="find", parameters=PARAMETERS, strict=True)
        )
    ],
    tool_choice=s.NamedToolChoice(function=s.NamedFunction(name="f")),
    parallel_tool_calls=False,
    response_format=s.JsonSchemaFormat(
        json_schema=s.JsonSchema(name="out", description="result", schema=PARAMETERS, strict=False)
    ),
    extras=EXTRA,
)


def test_chat_request_with_every_field_set() -> None:
    got = convert_chat.chat_request_from_proto(_full_request(), stream=True)
    for field in msgspec.structs.fields(s.ChatRequest):
        assert getattr(got, field.name) == getattr(EXPECTED_FULL, field.name), field.name
    assert got == EXPECTED_FULL
    assert got.include_usage
    validate(got)


def test_chat_request_survives_proto_serialisation() -> None:
    wire = _full_request().SerializeToString()
    got = convert_chat.chat_request_from_proto(pb.ChatCompletionRequest.FromString(wire), stream=True)
    assert got == EXPECTED_FULL


@pytest.mark.parametrize("stream", [True, False])
def test_unset_optional_fields_stay_unset(stream: bool) -> None:
    request = pb.ChatCompletionRequest(model="m", messages=[pb.ChatMessage(role=pb.ROLE_USER, content="hi")])
    got = convert_chat.chat_request_from_proto(request, stream=stream)
    assert (got.model, got.stream, got.extras) == ("m", stream, {})
    assert got.messages == [s.Message(role="user", content="hi")]
    skipped = {"model", "messages", "stream", "extras"}
    for field in msgspec.structs.fields(s.ChatRequest):
        if field.name not in skipped:
            assert getattr(got, field.name) is UNSET, field.name
    assert not got.include_usage
    message = got.messages[0]
    assert (message.name, message.tool_calls, message.tool_call_id, message.refusal) == (UNSET,) * 4


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("temperature", 0.0),
        ("top_p", 0.0),
        ("n", 0),
        ("max_tokens", 0),
        ("seed", 0),
        ("logprobs", False),
        ("parallel_tool_calls", False),
        ("top_k", 0),
    ],
)
def test_optional_fields_set_to_zero_are_kept(name: str, value: Any) -> None:
    request = pb.ChatCompletionRequest(model="m", messages=[pb.ChatMessage(role=pb.ROLE_USER, content="x")])
    setattr(request, name, value)
    assert getattr(convert_chat.chat_request_from_proto(request, stream=False), name) == value


def test_empty_content_string_is_content() -> None:
    message = convert_chat.message_from_proto(pb.ChatMessage(role=pb.ROLE_USER, content=""), 0)
    assert message.content == ""


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        (pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_NONE), "none"),
        (pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_AUTO), "auto"),
        (pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_REQUIRED), "required"),
        (pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_UNSPECIFIED), UNSET),
        (pb.ToolChoice(), UNSET),
        (pb.ToolChoice(function_name="g"), s.NamedToolChoice(function=s.NamedFunction(name="g"))),
    ],
)
def test_tool_choice(choice: pb.ToolChoice, expected: Any) -> None:
    request = pb.ChatCompletionRequest(
        model="m", messages=[pb.ChatMessage(role=pb.ROLE_USER, content="x")], tool_choice=choice
    )
    assert convert_chat.chat_request_from_proto(request, stream=False).tool_choice == expected


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        (pb.ResponseFormat(type=pb.ResponseFormat.TYPE_TEXT), s.TextFormat()),
        (pb.ResponseFormat(type=pb.ResponseFormat.TYPE_JSON_OBJECT), s.JsonObjectFormat()),
        (
            pb.ResponseFormat(
                type=pb.ResponseFormat.TYPE_JSON_SCHEMA, json_schema=pb.JsonSchemaFormat(name="n")
            ),
            s.JsonSchemaFormat(json_schema=s.JsonSchema(name="n")),
        ),
        (pb.ResponseFormat(), UNSET),
    ],
)
def test_response_format(fmt: pb.ResponseFormat, expected: Any) -> None:
    request = pb.ChatCompletionRequest(
        model="m", messages=[pb.ChatMessage(role=pb.ROLE_USER, content="x")], response_format=fmt
    )
    assert convert_chat.chat_request_from_proto(request, stream=False).response_format == expected


@pytest.mark.parametrize(
    ("message", "param"),
    [
        (pb.ChatMessage(content="x"), "messages[1].role"),
        (pb.ChatMessage(role=pb.ROLE_USER, content_parts=[pb.ContentPart()]), "messages[1].content_parts[0]"),
    ],
)
def test_bad_proto_messages_are_400_with_param(message: pb.ChatMessage, param: str) -> None:
    request = pb.ChatCompletionRequest(
        model="m", messages=[pb.ChatMessage(role=pb.ROLE_USER, content="x"), message]
    )
    with pytest.raises(ClientError) as caught:
        convert_chat.chat_request_from_proto(request, stream=False)
    assert (caught.value.status, caught.value.param) == (400, param)


@pytest.mark.parametrize("name", ["temperature", "top_p", "presence_penalty", "frequency_penalty"])
def test_decimal_sampling_parameters_survive(name: str) -> None:
    request = pb.ChatCompletionRequest(model="m", messages=[pb.ChatMessage(role=pb.ROLE_USER, content="x")])
    setattr(request, name, 0.7)
    assert getattr(convert_chat.chat_request_from_proto(request, stream=False), name) == 0.7


USAGE = Usage(
    prompt_tokens=11,
    completion_tokens=7,
    total_tokens=18,
    prompt_tokens_details=PromptTokensDetails(cached_tokens=4),
    completion_tokens_details=CompletionTokensDetails(reasoning_tokens=2, rejected_prediction_tokens=1),
)


def _check_usage(out: common_pb2.Usage, usage: Usage) -> None:
    assert (out.prompt_tokens, out.completion_tokens, out.total_tokens) == (
        usage.prompt_tokens,
        usage.completion_tokens,
        usage.total_tokens,
    )


def test_chat_completion_to_proto() -> None:
    logprobs = s.ChoiceLogprobs(
        content=[
            s.TokenLogprob(
                token="hi",
                logprob=-0.5,
                bytes=[104, 105],
                top_logprobs=[s.TopLogprob(token="hey", logprob=-1.25, bytes=[104, 101, 121])],
            )
        ]
    )
    result = s.ChatCompletion(
        id="chatcmpl-1",
        created=1_700_000_000,
        model="gpt-4o",
        choices=[
            s.Choice(
                index=0,
                message=s.ResponseMessage(
                    content="hi",
                    tool_calls=[s.ToolCall(id="call_9", function=s.FunctionCall(name="f", arguments="{}"))],
                ),
                finish_reason="tool_calls",
                logprobs=logprobs,
            ),
            s.Choice(
                index=1, message=s.ResponseMessage(content=None, refusal="no"), finish_reason="content_filter"
            ),
            s.Choice(index=2, message=s.ResponseMessage(content=""), finish_reason=None),
        ],
        usage=USAGE,
        system_fingerprint="fp_1",
    )
    out = pb.ChatCompletion.FromString(convert_chat.completion_to_proto(result).SerializeToString())
    assert (out.id, out.created, out.model, out.system_fingerprint) == (
        "chatcmpl-1",
        1_700_000_000,
        "gpt-4o",
        "fp_1",
    )
    first, second, third = out.choices
    assert first.index == 0
    assert first.message.role == pb.ROLE_ASSISTANT
    assert first.message.HasField("content") and first.message.content == "hi"
    assert not first.message.HasField("refusal")
    assert first.finish_reason == common_pb2.FINISH_REASON_TOOL_CALLS
    (call,) = first.message.tool_calls
    assert (call.index, call.id, call.type, call.function.name, call.function.arguments) == (
        0,
        "call_9",
        "function",
        "f",
        "{}",
    )
    (token,) = first.logprobs.content
    assert (token.token, token.logprob, token.bytes) == ("hi", -0.5, b"hi")
    assert [(t.token, t.logprob, t.bytes) for t in token.top_logprobs] == [("hey", -1.25, b"hey")]
    assert not second.message.HasField("content")
    assert second.message.refusal == "no"
    assert second.finish_reason == common_pb2.FINISH_REASON_CONTENT_FILTER
    assert not second.HasField("logprobs")
    assert third.message.HasField("content") and third.message.content == ""
    assert third.finish_reason == common_pb2.FINISH_REASON_UNSPECIFIED
    _check_usage(out.usage, USAGE)
    assert out.usage.prompt_tokens_details.cached_tokens == 4
    assert out.usage.completion_tokens_details.reasoning_tokens == 2
    assert out.usage.completion_tokens_details.rejected_prediction_tokens == 1


def test_chat_completion_without_usage_or_fingerprint() -> None:
    result = s.ChatCompletion(
        id="c", created=1, model="m", choices=[s.Choice(index=0, message=s.ResponseMessage(content="x"))]
    )
    out = convert_chat.completion_to_proto(result)
    assert not out.HasField("usage")
    assert out.system_fingerprint == ""


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("stop", common_pb2.FINISH_REASON_STOP),
        ("length", common_pb2.FINISH_REASON_LENGTH),
        ("tool_calls", common_pb2.FINISH_REASON_TOOL_CALLS),
        ("content_filter", common_pb2.FINISH_REASON_CONTENT_FILTER),
        ("function_call", common_pb2.FINISH_REASON_FUNCTION_CALL),
        (None, common_pb2.FINISH_REASON_UNSPECIFIED),
    ],
)
def test_chunk_to_proto(reason: Any, expected: int) -> None:
    chunk = s.ChatChunk(
        id="c1",
        created=5,
        model="m",
        choices=[
            s.ChunkChoice(
                index=1,
                delta=s.Delta(
                    role="assistant",
                    content="",
                    tool_calls=[
                        s.ToolCallDelta(
                            index=0, id="call_1", type="function", function=s.FunctionCallDelta(name="f")
                        ),
                        s.ToolCallDelta(index=1, function=s.FunctionCallDelta(arguments='{"a"')),
                        s.ToolCallDelta(index=2),
                    ],
                ),
                finish_reason=reason,
            )
        ],
        usage=None,
    )
    out = convert_chat.chunk_to_proto(chunk)
    assert (out.id, out.created, out.model) == ("c1", 5, "m")
    (choice,) = out.choices
    assert choice.index == 1
    assert choice.finish_reason == expected
    assert choice.delta.role == pb.ROLE_ASSISTANT
    assert choice.delta.HasField("content") and choice.delta.content == ""
    assert not choice.delta.HasField("refusal")
    assert [
        (t.index, t.id, t.type, t.function.name, t.function.arguments) for t in choice.delta.tool_calls
    ] == [
        (0, "call_1", "function", "f", ""),
        (1, "", "", "", '{"a"'),
        (2, "", "", "", ""),
    ]
    assert not out.HasField("usage")


def test_usage_only_chunk_to_proto() -> None:
    chunk = s.ChatChunk(id="c", created=1, model="m", choices=[], usage=USAGE)
    out = convert_chat.chunk_to_proto(chunk)
    assert list(out.choices) == []
    _check_usage(out.usage, USAGE)


def test_delta_without_content_has_no_content() -> None:
    chunk = s.ChatChunk(
        id="c", created=1, model="m", choices=[s.ChunkChoice(index=0, delta=s.Delta(refusal="r"))]
    )
    delta = convert_chat.chunk_to_proto(chunk).choices[0].delta
    assert not delta.HasField("content")
    assert delta.refusal == "r"
    assert delta.role == pb.ROLE_UNSPECIFIED


def test_text_completion_to_proto() -> None:
    result = Completion(
        id="cmpl-1",
        created=9,
        model="instruct",
        choices=[
            CompletionChoice(
                index=0,
                text="hello",
                finish_reason="length",
                logprobs=CompletionLogprobs(
                    tokens=["hel", "lo"],
                    token_logprobs=[-0.25, -0.5],
                    top_logprobs=[{"hel": -0.25, "he": -2.0}, {"lo": -0.5}],
                    text_offset=[0, 3],
                ),
            ),
            CompletionChoice(index=1, text="", finish_reason="stop"),
        ],
        usage=Usage(prompt_tokens=1, completion_tokens=2, total_tokens=3),
        system_fingerprint="fp",
    )
    out = completions_pb2.Completion.FromString(convert_other.completion_to_proto(result).SerializeToString())
    assert (out.id, out.created, out.model, out.system_fingerprint) == ("cmpl-1", 9, "instruct", "fp")
    first, second = out.choices
    assert (first.index, first.text, first.finish_reason) == (0, "hello", common_pb2.FINISH_REASON_LENGTH)
    assert list(first.logprobs.tokens) == ["hel", "lo"]
    assert list(first.logprobs.token_logprobs) == [-0.25, -0.5]
    assert [struct_to_dict(t) for t in first.logprobs.top_logprobs] == [
        {"hel": -0.25, "he": -2},
        {"lo": -0.5},
    ]
    assert list(first.logprobs.text_offset) == [0, 3]
    assert (second.index, second.text, second.finish_reason) == (1, "", common_pb2.FINISH_REASON_STOP)
    assert not second.HasField("logprobs")
    assert (out.usage.prompt_tokens, out.usage.completion_tokens, out.usage.total_tokens) == (1, 2, 3)


def test_text_completion_chunk_without_usage() -> None:
    chunk = Completion(
        id="c", created=1, model="m", choices=[CompletionChoice(index=0, text=" a")], usage=None
    )
    out = convert_other.completion_to_proto(chunk)
    assert not out.HasField("usage")
    assert out.choices[0].finish_reason == common_pb2.FINISH_REASON_UNSPECIFIED


VECTORS = [[0.5, -0.25, 1.0, 0.0], [0.125, 0.75, -1.5, 2.0]]
"""Exactly representable as float32, so every comparison below can be exact."""


def _pack(vector: list[float]) -> bytes:
    return struct.pack(f"<{len(vector)}f", *vector)


@pytest.mark.parametrize("as_base64", [False, True])
@pytest.mark.parametrize(
    "encoding",
    [
        embeddings_pb2.ENCODING_FORMAT_UNSPECIFIED,
        embeddings_pb2.ENCODING_FORMAT_FLOAT,
        embeddings_pb2.ENCODING_FORMAT_BASE64,
    ],
)
def test_embedding_response_to_proto(as_base64: bool, encoding: int) -> None:
    data = [
        Embedding(index=i, embedding=base64.b64encode(_pack(v)).decode() if as_base64 else v)
        for i, v in enumerate(VECTORS)
    ]
    result = EmbeddingResponse(model="emb", data=data, usage=EmbeddingUsage(prompt_tokens=4, total_tokens=4))
    out = embeddings_pb2.EmbeddingResponse.FromString(
        convert_other.embedding_response_to_proto(result, encoding).SerializeToString()
    )
    assert out.model == "emb"
    assert (out.usage.prompt_tokens, out.usage.total_tokens) == (4, 4)
    assert [item.index for item in out.data] == [0, 1]
    for item, vector in zip(out.data, VECTORS, strict=True):
        if encoding == embeddings_pb2.ENCODING_FORMAT_BASE64:
            assert item.embedding_bytes == _pack(vector)
            assert list(item.embedding) == []
        else:
            assert list(item.embedding) == vector
            assert item.embedding_bytes == b""


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"prompt": ["once"]}, "once"),
        ({"prompt": ["a", "b"]}, ["a", "b"]),
        ({"prompt_tokens": [common_pb2.TokenIds(ids=[1, 2])]}, [1, 2]),
        ({"prompt_tokens": [common_pb2.TokenIds(ids=[1]), common_pb2.TokenIds(ids=[2, 3])]}, [[1], [2, 3]]),
    ],
)
def test_completion_request_prompt_forms(fields: dict[str, Any], expected: Any) -> None:
    request = completions_pb2.CompletionRequest(model="m", max_tokens=5, echo=True, **fields)
    got = convert_other.completion_request_from_proto(request, stream=False)
    assert isinstance(got, CompletionRequest)
    assert got.prompt == expected
    assert (got.max_tokens, got.echo, got.stream, got.temperature, got.suffix) == (
        5,
        True,
        False,
        UNSET,
        UNSET,
    )
    validate(got)


@pytest.mark.parametrize(
    "fields",
    [{}, {"prompt": ["a"], "prompt_tokens": [common_pb2.TokenIds(ids=[1])]}],
)
def test_completion_request_needs_exactly_one_prompt_form(fields: dict[str, Any]) -> None:
    with pytest.raises(ClientError) as caught:
        convert_other.completion_request_from_proto(
            completions_pb2.CompletionRequest(model="m", **fields), stream=False
        )
    assert (caught.value.status, caught.value.param) == (400, "prompt")


@pytest.mark.parametrize(
    ("fields", "expected_input", "dimensions"),
    [
        ({"input": ["x"]}, "x", UNSET),
        ({"input": ["x", "y"], "dimensions": 8}, ["x", "y"], 8),
        ({"input_tokens": [common_pb2.TokenIds(ids=[5, 6])]}, [5, 6], UNSET),
        ({"input": ["x"], "dimensions": 0}, "x", 0),
    ],
)
def test_embedding_request_from_proto(fields: dict[str, Any], expected_input: Any, dimensions: Any) -> None:
    got = convert_other.embedding_request_from_proto(
        embeddings_pb2.EmbeddingRequest(
            model="e", encoding_format=embeddings_pb2.ENCODING_FORMAT_BASE64, **fields
        )
    )
    assert (got.model, got.input, got.dimensions) == ("e", expected_input, dimensions)
    assert got.encoding_format is UNSET  # the typed API always gets floats and packs them on the way out


@pytest.mark.parametrize("fields", [{}, {"input": ["x"], "input_tokens": [common_pb2.TokenIds(ids=[1])]}])
def test_embedding_request_needs_exactly_one_input_form(fields: dict[str, Any]) -> None:
    with pytest.raises(ClientError) as caught:
        convert_other.embedding_request_from_proto(embeddings_pb2.EmbeddingRequest(model="e", **fields))
    assert (caught.value.status, caught.value.param) == (400, "input")


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"a": 1, "b": -2, "c": 0},
        {"f": 2.5, "g": -0.125, "h": 1e-3},
        {"t": True, "f": False, "n": None},
        {"s": "text", "empty": "", "unicode": "héllo ✓"},
        {"list": [1, 2.5, True, None, "x", [], {}], "nested": {"deep": {"deeper": [[1, [2, [3]]]]}}},
        {"big": 2**53 - 1, "negative_big": -(2**52)},
    ],
)
def test_struct_round_trip(data: dict[str, Any]) -> None:
    wire = dict_to_struct(data).SerializeToString()
    back = struct_to_dict(struct_pb2.Struct.FromString(wire))
    assert back == data
    assert _types(back) == _types(data)


def _types(value: Any) -> Any:
    """The JSON type skeleton of a value: bools stay bools, integral numbers are ints."""
    if isinstance(value, dict):
        return {k: _types(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_types(v) for v in value]
    return type(value).__name__


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (struct_pb2.Value(number_value=3.0), 3),
        (struct_pb2.Value(number_value=3.5), 3.5),
        (struct_pb2.Value(number_value=2.0**60), 2.0**60),
        (struct_pb2.Value(bool_value=False), False),
        (struct_pb2.Value(null_value=struct_pb2.NULL_VALUE), None),
        (struct_pb2.Value(), None),
    ],
)
def test_value_to_python(value: struct_pb2.Value, expected: Any) -> None:
    got = value_to_python(value)
    assert got == expected
    assert type(got) is type(expected)
