"""The offline demo provider: echo chat, word-count usage, streaming, tools, embeddings, completions."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import struct
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import msgspec
import pytest
from modelyard.providers.demo import DEFAULT_DIMENSIONS, DEMO, unit_vector
from modelyard.schema.chat import ChatChunk, ChatCompletion, ChatRequest
from modelyard.schema.completions import Completion, CompletionRequest
from modelyard.schema.decode import decode_request
from modelyard.schema.embeddings import EmbeddingRequest, EmbeddingResponse

T = TypeVar("T")
PROVIDER = DEMO.create("demo", {}, None)  # type: ignore[arg-type]
HELLO = [{"role": "user", "content": "hello there world"}]
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "get_time"}},
]


def _chat(**fields: Any) -> ChatRequest:
    return decode_request(
        json.dumps({"model": "demo/chat", "messages": HELLO, **fields}).encode(), ChatRequest
    )


def _completion(**fields: Any) -> CompletionRequest:
    return decode_request(json.dumps({"model": "demo/chat", **fields}).encode(), CompletionRequest)


def _embedding(**fields: Any) -> EmbeddingRequest:
    return decode_request(json.dumps({"model": "demo/embed", **fields}).encode(), EmbeddingRequest)


def chat(request: ChatRequest) -> ChatCompletion:
    return asyncio.run(PROVIDER.chat(request, "demo-chat"))


def _collect(stream: AsyncIterator[T]) -> list[T]:
    async def run() -> list[T]:
        return [item async for item in stream]

    return asyncio.run(run())


def stream_chat(request: ChatRequest) -> list[ChatChunk]:
    return _collect(PROVIDER.stream_chat(request, "demo-chat"))


def _text(chunks: list[ChatChunk], index: int = 0) -> str:
    return "".join(
        c.delta.content
        for chunk in chunks
        for c in chunk.choices
        if c.index == index and isinstance(c.delta.content, str)
    )


@pytest.mark.parametrize(
    ("messages", "reply", "prompt_tokens"),
    [
        (HELLO, "You said: hello there world", 3),
        (
            [
                {"role": "system", "content": "be very brief"},
                {"role": "user", "content": "first question"},
                {"role": "assistant", "content": "an answer"},
                {"role": "user", "content": "second  one\n"},
            ],
            "You said: second one",
            9,
        ),
        (
            [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "part one"}, {"type": "text", "text": "two"}],
                }
            ],
            "You said: part one two",
            3,
        ),
        ([{"role": "system", "content": "no user here"}], "You said:", 3),
    ],
)
def test_chat_echoes_the_last_user_message_with_word_usage(
    messages: list[dict[str, Any]], reply: str, prompt_tokens: int
) -> None:
    result = chat(_chat(messages=messages))
    assert result.model == "demo-chat"
    assert result.id.startswith("chatcmpl-")
    (choice,) = result.choices
    assert choice.message.content == reply
    assert choice.finish_reason == "stop"
    assert isinstance(result.usage, msgspec.Struct)
    completion_tokens = len(reply.split())
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.total_tokens) == (
        prompt_tokens,
        completion_tokens,
        prompt_tokens + completion_tokens,
    )


@pytest.mark.parametrize(
    ("fields", "reply", "finish"),
    [
        ({"max_tokens": 3}, "You said: hello", "length"),
        ({"max_tokens": 5}, "You said: hello there world", "stop"),
        ({"max_tokens": 1}, "You", "length"),
        ({"max_completion_tokens": 2, "max_tokens": 100}, "You said:", "length"),
        ({"stop": "there"}, "You said: hello", "stop"),
        ({"stop": ["zzz", "world"]}, "You said: hello there", "stop"),
        ({"stop": "said"}, "You", "stop"),
        ({"stop": "absent"}, "You said: hello there world", "stop"),
        ({"stop": "there", "max_tokens": 2}, "You said: hello", "stop"),
    ],
)
def test_max_tokens_and_stop(fields: dict[str, Any], reply: str, finish: str) -> None:
    result = chat(_chat(**fields))
    assert result.choices[0].message.content == reply
    assert result.choices[0].finish_reason == finish
    assert result.usage.completion_tokens == len(reply.split())  # type: ignore[union-attr]
    chunks = stream_chat(_chat(stream=True, **fields))
    assert _text(chunks) == reply
    assert [c.finish_reason for chunk in chunks for c in chunk.choices if c.finish_reason] == [finish]


@pytest.mark.parametrize("n", [1, 2, 5])
def test_n_choices(n: int) -> None:
    result = chat(_chat(n=n))
    assert [c.index for c in result.choices] == list(range(n))
    assert {c.message.content for c in result.choices} == {"You said: hello there world"}
    assert result.usage.completion_tokens == 5 * n  # type: ignore[union-attr]
    assert result.usage.prompt_tokens == 3  # type: ignore[union-attr]


def test_stream_honours_n() -> None:
    chunks = stream_chat(_chat(stream=True, n=2))
    assert _text(chunks, 0) == _text(chunks, 1) == "You said: hello there world"


@pytest.mark.parametrize(
    ("tool_choice", "expected"),
    [
        ({"type": "function", "function": {"name": "get_time"}}, "get_time"),
        ({"type": "function", "function": {"name": "get_weather"}}, "get_weather"),
        ("required", "get_weather"),
        ("auto", None),
        ("none", None),
    ],
)
def test_forced_tool_choice_calls_the_tool(tool_choice: Any, expected: str | None) -> None:
    result = chat(_chat(tools=TOOLS, tool_choice=tool_choice))
    (choice,) = result.choices
    chunks = stream_chat(_chat(stream=True, tools=TOOLS, tool_choice=tool_choice))
    finishes = [c.finish_reason for chunk in chunks for c in chunk.choices if c.finish_reason]
    if expected is None:
        assert choice.message.content == "You said: hello there world"
        assert choice.message.tool_calls is msgspec.UNSET
        assert choice.finish_reason == "stop"
        assert finishes == ["stop"]
        return
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls  # type: ignore[misc]
    assert (call.type, call.function.name, call.function.arguments) == ("function", expected, "{}")
    assert call.id
    # Streamed: the deltas assemble to the same call.
    deltas = [
        tc
        for chunk in chunks
        for c in chunk.choices
        if isinstance(c.delta.tool_calls, list)
        for tc in c.delta.tool_calls
    ]
    assert {d.index for d in deltas} == {0}
    assert [
        d.function.name for d in deltas if isinstance(d.function, msgspec.Struct) and d.function.name
    ] == [expected]
    arguments = "".join(d.function.arguments for d in deltas if isinstance(d.function.arguments, str))  # type: ignore[union-attr]
    assert arguments == "{}"
    assert finishes == ["tool_calls"]
    assert _text(chunks) == ""


def test_tool_choice_without_tools_answers_in_text() -> None:
    result = chat(_chat(tool_choice="required"))
    assert result.choices[0].message.content == "You said: hello there world"


@pytest.mark.parametrize(
    "messages",
    [
        HELLO,
        [{"role": "user", "content": "one"}],
        [{"role": "user", "content": "a b c d e f g h i j k"}],
    ],
)
def test_stream_concatenation_equals_unary(messages: list[dict[str, Any]]) -> None:
    unary = chat(_chat(messages=messages))
    chunks = stream_chat(_chat(messages=messages, stream=True))
    assert _text(chunks) == unary.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({c.id for c in chunks}) == 1
    assert {c.model for c in chunks} == {"demo-chat"}
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])


def test_stream_include_usage_adds_a_final_usage_chunk() -> None:
    unary = chat(_chat())
    chunks = stream_chat(_chat(stream=True, stream_options={"include_usage": True}))
    final = chunks[-1]
    assert final.choices == []
    assert final.usage == unary.usage
    encoded = [json.loads(msgspec.json.encode(c)) for c in chunks]
    assert all(e["usage"] is None for e in encoded[:-1])
    assert encoded[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
    assert _text(chunks) == unary.choices[0].message.content


@pytest.mark.parametrize("stream_options", [None, {"include_usage": False}, {}])
def test_stream_without_include_usage_has_no_usage_field(stream_options: Any) -> None:
    fields: dict[str, Any] = {"stream": True}
    if stream_options is not None:
        fields["stream_options"] = stream_options
    chunks = stream_chat(_chat(**fields))
    assert all(chunk.choices for chunk in chunks)
    assert all(b'"usage"' not in msgspec.json.encode(chunk) for chunk in chunks)


def embed(request: EmbeddingRequest) -> EmbeddingResponse:
    return asyncio.run(PROVIDER.embed(request, "demo-embed"))


def _vectors(response: EmbeddingResponse) -> list[list[float]]:
    return [item.embedding for item in response.data]  # type: ignore[misc]


@pytest.mark.parametrize("dimensions", [None, 1, 4, 7, 16, 33, 256])
def test_embeddings_unit_norm_and_dimensions(dimensions: int | None) -> None:
    fields: dict[str, Any] = {"input": ["a b", "c", "a b"]}
    if dimensions is not None:
        fields["dimensions"] = dimensions
    response = embed(_embedding(**fields))
    assert response.model == "demo-embed"
    assert [item.index for item in response.data] == [0, 1, 2]
    vectors = _vectors(response)
    size = dimensions or DEFAULT_DIMENSIONS
    for vector in vectors:
        assert len(vector) == size
        assert math.isclose(math.fsum(x * x for x in vector), 1.0, rel_tol=1e-12)
    assert vectors[0] == vectors[2]
    assert vectors[0] != vectors[1]
    assert (response.usage.prompt_tokens, response.usage.total_tokens) == (5, 5)  # words of all inputs


def test_embeddings_are_deterministic_across_calls() -> None:
    first = _vectors(embed(_embedding(input="the same text")))
    second = _vectors(embed(_embedding(input=["the same text"])))
    assert first == second == [unit_vector("the same text", DEFAULT_DIMENSIONS)]


def test_token_input_embeds_its_decimal_spelling() -> None:
    assert _vectors(embed(_embedding(input=[1, 2, 3]))) == _vectors(embed(_embedding(input="1 2 3")))
    assert _vectors(embed(_embedding(input=[[1, 2], [3]]))) == _vectors(embed(_embedding(input=["1 2", "3"])))


@pytest.mark.parametrize("dimensions", [4, 16, 64])
def test_base64_embeddings_decode_to_the_same_float32s(dimensions: int) -> None:
    floats = _vectors(embed(_embedding(input=["x y", "z"], dimensions=dimensions)))
    packed = embed(_embedding(input=["x y", "z"], dimensions=dimensions, encoding_format="base64"))
    for vector, item in zip(floats, packed.data, strict=True):
        assert isinstance(item.embedding, str)
        raw = base64.b64decode(item.embedding, validate=True)
        assert len(raw) == 4 * dimensions
        decoded = struct.unpack(f"<{dimensions}f", raw)
        expected = struct.unpack(f"<{dimensions}f", struct.pack(f"<{dimensions}f", *vector))
        assert decoded == expected
        assert all(
            math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-7) for a, b in zip(decoded, vector, strict=True)
        )


def complete(request: CompletionRequest) -> Completion:
    return asyncio.run(PROVIDER.complete(request, "demo-chat"))


@pytest.mark.parametrize(
    ("fields", "text", "finish", "prompt_tokens"),
    [
        ({"prompt": "a b c"}, "You wrote: a b c", "stop", 3),
        ({"prompt": "a b c", "max_tokens": 2}, "You wrote:", "length", 3),
        ({"prompt": "a b c", "stop": ["b"]}, "You wrote: a", "stop", 3),
        ({"prompt": ["one two", "three"]}, "You wrote: one two three", "stop", 3),
        ({"prompt": [7, 8]}, "You wrote: 7 8", "stop", 2),
    ],
)
def test_completions(fields: dict[str, Any], text: str, finish: str, prompt_tokens: int) -> None:
    result = complete(_completion(**fields))
    assert result.id.startswith("cmpl-")
    assert result.model == "demo-chat"
    (choice,) = result.choices
    assert (choice.text, choice.finish_reason) == (text, finish)
    assert result.usage.prompt_tokens == prompt_tokens  # type: ignore[union-attr]
    assert result.usage.completion_tokens == len(text.split())  # type: ignore[union-attr]
    chunks = _collect(PROVIDER.stream_complete(_completion(stream=True, **fields), "demo-chat"))
    assert "".join(c.choices[0].text for c in chunks) == text
    assert chunks[-1].choices[0].finish_reason == finish
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    assert all(b'"usage"' not in msgspec.json.encode(c) for c in chunks)


def test_completion_stream_include_usage() -> None:
    unary = complete(_completion(prompt="a b c"))
    chunks = _collect(
        PROVIDER.stream_complete(
            _completion(prompt="a b c", stream=True, stream_options={"include_usage": True}), "demo-chat"
        )
    )
    assert chunks[-1].choices == []
    assert chunks[-1].usage == unary.usage
    assert all(c.usage is None for c in chunks[:-1])
    assert "".join(c.choices[0].text for c in chunks[:-1]) == unary.choices[0].text
