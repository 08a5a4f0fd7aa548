"""The AI21 (Jamba) adapter: pure conversions, the adapter against the native fake, and the fake
checked against AI21's official `ai21` SDK (which also gives the reference outbound request)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import msgspec
import pytest
from ai21 import AI21Client, errors
from ai21.models.chat import SystemMessage, ToolMessage, UserMessage
from modelyard.errors import ClientError, GatewayError, UpstreamError
from modelyard.providers.ai21 import AI21, AI21Provider, parse_error
from modelyard.providers.ai21_convert import (
    AI21Chunk,
    AI21Response,
    StreamState,
    build_body,
    to_chat_completion,
)
from modelyard.schema.chat import ChatRequest
from modelyard.schema.completions import CompletionRequest
from modelyard.schema.decode import decode_request
from modelyard.schema.embeddings import EmbeddingRequest
from modelyard.transport import HttpTransport, UpstreamResponse

from tests.fakes.ai21_upstream import FakeAI21

KEY = "ai21-test-" + "k" * 24
IMAGE = "data:image/png;base64,iVBORw0KGgo="
T = TypeVar("T")
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        "strict": True,
    },
}


def request(**fields: Any) -> ChatRequest:
    fields.setdefault("model", "alias")
    fields.setdefault("messages", [{"role": "user", "content": "hi"}])
    return decode_request(json.dumps(fields).encode(), ChatRequest)


def body(stream: bool = False, **fields: Any) -> dict[str, Any]:
    built = build_body(request(**fields), "jamba-mini", stream=stream, provider="j")
    decoded: dict[str, Any] = json.loads(json.dumps(built, default=lambda raw: json.loads(bytes(raw))))
    return decoded


# --------------------------------------------------------------------------------------------------
# Pure request conversion


def test_roles_text_parts_tool_history_and_limits() -> None:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
    }
    out = body(
        messages=[
            {"role": "system", "content": "Be terse."},
            {"role": "developer", "content": [{"type": "text", "text": "English only."}]},
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                "name": "u",
            },
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18 degrees"},
        ],
        tools=[WEATHER],
        max_completion_tokens=40,
        temperature=0.2,
        top_p=0.9,
        stop="END",
        n=2,
        response_format={"type": "json_object"},
    )
    assert out["messages"] == [
        {"role": "system", "content": "Be terse."},
        {"role": "system", "content": "English only."},
        {"role": "user", "content": "a\nb"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18 degrees"},
    ]
    function = out["tools"][0]["function"]
    assert "strict" not in function and function["parameters"] == WEATHER["function"]["parameters"]  # type: ignore[index]
    assert (out["max_tokens"], out["temperature"], out["top_p"], out["stop"], out["n"]) == (
        40,
        0.2,
        0.9,
        "END",
        2,
    )
    assert out["response_format"] == {"type": "json_object"} and out["stream"] is False
    assert out["model"] == "jamba-mini"


def test_dropped_fields_tool_choice_and_extras() -> None:
    out = body(
        stream=True,
        seed=7,
        user="u-1",
        metadata={"k": "v"},
        parallel_tool_calls=False,
        top_k=3,
        presence_penalty=0.5,
        frequency_penalty=0.5,
        stream_options={"include_usage": True},
        tools=[WEATHER],
        tool_choice="auto",
        documents=[{"content": "doc"}],
    )
    assert set(out) == {"model", "messages", "tools", "stream", "documents"}
    assert out["stream"] is True and out["documents"] == [{"content": "doc"}]
    assert "tools" not in body(tools=[WEATHER], tool_choice="none")
    assert body(response_format={"type": "text"})["response_format"] == {"type": "text"}


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": IMAGE}}]}]},
            "messages[0].content",
        ),
        ({"tools": [WEATHER], "tool_choice": "required"}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "x"}}}, "tool_choice"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "s"}}}, "response_format"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 2}, "logprobs"),
        ({"logit_bias": {"1": 1.0}}, "logit_bias"),
    ],
)
def test_refused_parameters_are_a_clear_400(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(ClientError) as caught:
        body(**fields)
    assert caught.value.status == 400 and caught.value.param == param
    assert "'j'" in caught.value.message and "ai21labs" in caught.value.message


# --------------------------------------------------------------------------------------------------
# Pure response and stream conversion


def test_response_tool_calls_finish_reasons_and_object_arguments() -> None:
    raw = {
        "id": "chat-1",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}}
                    ],
                },
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }
    native = msgspec.json.decode(json.dumps(raw).encode(), type=AI21Response)
    result = to_chat_completion(native, "jamba-mini", created=9)
    choice = result.choices[0]
    assert choice.finish_reason == "tool_calls" and result.model == "jamba-mini" and result.created == 9
    assert choice.message.tool_calls and json.loads(choice.message.tool_calls[0].function.arguments) == {
        "a": 1
    }
    assert result.usage and result.usage.total_tokens == 5


def test_stream_state_indexes_tool_calls_without_an_index() -> None:
    def native(delta: dict[str, Any], finish: str | None = None) -> AI21Chunk:
        chunk = {"id": "x", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], "usage": None}
        return msgspec.json.decode(json.dumps(chunk).encode(), type=AI21Chunk)

    state = StreamState("jamba-mini", created=1)
    chunks = [
        state.chunk(native({"role": "assistant"})),
        state.chunk(native({"tool_calls": [{"id": "a", "function": {"name": "f", "arguments": "{}"}}]})),
        state.chunk(native({"tool_calls": [{"id": "b", "function": {"name": "g", "arguments": ""}}]})),
        state.chunk(native({"tool_calls": [{"function": {"arguments": "{}"}}]})),
        state.chunk(native({}, "stop")),
    ]
    indexes = [d.index for c in chunks[1:4] for d in c.choices[0].delta.tool_calls or []]
    assert indexes == [0, 1, 1]
    first = (chunks[1].choices[0].delta.tool_calls or [])[0]
    assert (first.id, first.type) == ("a", "function")
    assert (
        chunks[0].choices[0].delta.role == "assistant" and chunks[-1].choices[0].finish_reason == "tool_calls"
    )
    assert all(c.model == "jamba-mini" and c.created == 1 for c in chunks)


def response(status: int, payload: Any, headers: dict[str, str] | None = None) -> UpstreamResponse:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return UpstreamResponse(status, headers or {}, raw)


def test_errors_are_classified_by_status() -> None:
    denied = parse_error("j", response(401, {"detail": f"Forbidden: bad token {KEY}"}), KEY)
    assert (
        denied.status == 401 and denied.code == "provider_authentication_failed" and KEY not in denied.message
    )
    assert parse_error("j", response(403, {"detail": "no"}), KEY).code == "provider_permission_denied"
    limited = parse_error("j", response(429, {"detail": "Too many requests."}, {"retry-after": "7"}), KEY)
    assert (limited.status, limited.retry_after, limited.message) == (429, 7, "Too many requests.")
    validation = parse_error(
        "j", response(422, {"detail": [{"loc": ["body", "max_tokens"], "msg": "too big", "type": "v"}]}), KEY
    )
    assert validation.status == 422 and validation.message == "max_tokens: too big"
    assert parse_error("j", response(529, {"detail": "overloaded"}), KEY).status == 503
    assert parse_error("j", response(500, b"<html>"), KEY).status == 502
    leaked = parse_error("j", response(400, {"detail": f"key {KEY}"}), KEY)
    assert KEY not in leaked.message and "****" in leaked.message
    assert parse_error("j", response(400, {"error": {"message": "oops", "code": "c"}}), KEY).code == "c"


# --------------------------------------------------------------------------------------------------
# The adapter against the fake


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAI21]:
    with FakeAI21(api_key=KEY) as server:
        yield server


def run(fake: FakeAI21, call: Callable[[AI21Provider], Awaitable[T]], key: str = KEY) -> T:
    async def go() -> T:
        transport = HttpTransport()
        adapter = AI21.create("j", {"apiKey": key, "baseURL": fake.base_url}, transport)
        assert isinstance(adapter, AI21Provider)
        try:
            return await asyncio.wait_for(call(adapter), 20)
        finally:
            await transport.close()

    return asyncio.run(go())


async def collect(stream: AsyncIterator[T]) -> list[T]:
    return [item async for item in stream]


def test_chat_tools_round_trip_and_json_mode(fake: FakeAI21) -> None:
    fake.clear()
    first_request = request(messages=[{"role": "user", "content": "weather in Paris?"}], tools=[WEATHER])
    first = run(fake, lambda p: p.chat(first_request, "jamba-mini"))
    calls = first.choices[0].message.tool_calls or []
    assert first.choices[0].finish_reason == "tool_calls" and json.loads(calls[0].function.arguments) == {
        "city": "Paris"
    }
    sent = fake.requests[-1]
    assert sent.path == "/studio/v1/chat/completions" and sent.headers["authorization"] == f"Bearer {KEY}"
    history = [
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [_call(c) for c in calls]},
        {"role": "tool", "tool_call_id": calls[0].id, "content": "18 degrees"},
    ]
    second = run(fake, lambda p: p.chat(request(messages=history, tools=[WEATHER]), "jamba-mini"))
    assert second.choices[0].message.content == "The tool returned: 18 degrees"
    json_mode = run(fake, lambda p: p.chat(request(response_format={"type": "json_object"}), "jamba-mini"))
    assert json.loads(json_mode.choices[0].message.content or "") == {"echo": "Echo: hi"}


def _call(call: Any) -> dict[str, Any]:
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.function.name, "arguments": call.function.arguments},
    }


@pytest.mark.parametrize("include_usage", [False, True])
def test_streamed_text_and_usage(fake: FakeAI21, include_usage: bool) -> None:
    options = {"stream_options": {"include_usage": True}} if include_usage else {}
    req = request(messages=[{"role": "user", "content": "one two three"}], stream=True, **options)
    chunks = run(fake, lambda p: collect(p.stream_chat(req, "jamba-mini")))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Echo: one two three"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "stop"
    ]
    if include_usage:
        assert chunks[-1].choices == [] and chunks[-1].usage and chunks[-1].usage.completion_tokens == 4
    else:
        assert not any(c.usage for c in chunks)


def test_streamed_parallel_tool_calls(fake: FakeAI21) -> None:
    req = request(
        messages=[{"role": "user", "content": "weather in Paris and Tokyo?"}], tools=[WEATHER], stream=True
    )
    arguments: dict[int, str] = {}
    for chunk in run(fake, lambda p: collect(p.stream_chat(req, "jamba-mini"))):
        for delta in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
            fragment = delta.function.arguments if delta.function else ""
            arguments[delta.index] = arguments.get(delta.index, "") + (fragment or "")
    assert [json.loads(a) for a in arguments.values()] == [{"city": "Paris"}, {"city": "Tokyo"}]


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_failures_raise_gateway_errors(fake: FakeAI21, stream: bool) -> None:
    def call(model: str, key: str = KEY) -> GatewayError:
        req = request(stream=stream)
        with pytest.raises(GatewayError) as caught:
            run(fake, lambda p: collect(p.stream_chat(req, model)) if stream else p.chat(req, model), key)
        return caught.value

    limited = call("error-429")
    assert isinstance(limited, UpstreamError) and limited.status == 429 and limited.retry_after == 7
    assert call("error-529").status == 503
    assert call("garbage").status == 502
    assert call("midstream-drop").code == "upstream_disconnected"
    denied = call("jamba-mini", key="wrong-key")
    assert denied.status == 401 and "wrong-key" not in denied.message


def test_refusals_happen_before_any_upstream_call_and_no_completions_or_embeddings(fake: FakeAI21) -> None:
    fake.clear()
    image = request(
        messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": IMAGE}}]}]
    )
    for streaming in (False, True):
        with pytest.raises(ClientError):
            run(fake, lambda p: collect(p.stream_chat(image, "m")) if streaming else p.chat(image, "m"))  # noqa: B023
    assert fake.requests == []
    completion = decode_request(b'{"model":"m","prompt":"p"}', CompletionRequest)
    embedding = decode_request(b'{"model":"m","input":"x"}', EmbeddingRequest)
    for operation in (lambda p: p.complete(completion, "m"), lambda p: p.embed(embedding, "m")):
        with pytest.raises(ClientError) as caught:
            run(fake, operation)  # type: ignore[arg-type]
        assert caught.value.status == 400 and "ai21labs" in caught.value.message


def test_closing_the_stream_early_cancels_the_upstream(fake: FakeAI21) -> None:
    before = len(fake.cancelled_streams)

    async def take_two(p: AI21Provider) -> None:
        stream = p.stream_chat(request(stream=True), "slow-stream")
        assert isinstance(stream, AsyncGenerator)
        await stream.__anext__()
        await stream.__anext__()
        await stream.aclose()

    run(fake, take_two)
    deadline = time.monotonic() + 5
    while len(fake.cancelled_streams) == before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fake.cancelled_streams[before:] == ["slow-stream"]


# --------------------------------------------------------------------------------------------------
# The fake against the official SDK; the adapter's request against the SDK's


@pytest.fixture
def sdk(fake: FakeAI21) -> AI21Client:
    return AI21Client(api_key=KEY, api_host=fake.base_url)


def test_sdk_unary_stream_and_tool_round_trip(sdk: AI21Client) -> None:
    unary = sdk.chat.completions.create(model="jamba-mini", messages=[UserMessage(content="hello sdk")])
    assert unary.choices[0].message.content == "Echo: hello sdk" and unary.usage.total_tokens == 5
    stream = sdk.chat.completions.create(
        model="jamba-mini", messages=[UserMessage(content="hello sdk")], stream=True
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[-1].usage is not None
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Echo: hello sdk"
    question = UserMessage(content="weather in Paris?")
    first = sdk.chat.completions.create(model="jamba-mini", messages=[question], tools=[WEATHER])  # type: ignore[list-item]
    calls = first.choices[0].message.tool_calls or []
    assert first.choices[0].finish_reason == "tool_calls" and calls[0].function.name == "get_weather"
    result = ToolMessage(tool_call_id=calls[0].id, content="18 degrees")
    second = sdk.chat.completions.create(
        model="jamba-mini",
        messages=[question, first.choices[0].message, result],
        tools=[WEATHER],  # type: ignore[list-item]
    )
    assert second.choices[0].message.content == "The tool returned: 18 degrees"


@pytest.mark.parametrize(
    ("model", "error_class"),
    [
        ("error-400", errors.BadRequest),
        ("error-401", errors.Unauthorized),
        ("error-422", errors.UnprocessableEntity),
        ("error-429", errors.TooManyRequestsError),
        ("error-500", errors.AI21ServerError),
        ("error-503", errors.ServiceUnavailable),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_sdk_error_classes(sdk: AI21Client, model: str, error_class: type[Exception], stream: bool) -> None:
    with pytest.raises(error_class):
        result = sdk.chat.completions.create(model=model, messages=[UserMessage(content="x")], stream=stream)  # type: ignore[call-overload]
        list(result) if stream else None


def test_adapter_request_matches_the_sdk_request(fake: FakeAI21, sdk: AI21Client) -> None:
    fake.clear()
    for stream in (False, True):
        result = sdk.chat.completions.create(
            model="jamba-large",
            messages=[SystemMessage(content="terse"), UserMessage(content="weather in Paris?")],
            tools=[WEATHER],  # type: ignore[list-item]
            max_tokens=64,
            temperature=0.3,
            top_p=0.9,
            stop=["END"],
            n=1,
            response_format={"type": "text"},
            stream=stream,
        )
        list(result) if stream else None  # type: ignore[call-overload]
    references = list(fake.requests)
    fake.clear()
    for stream in (False, True):
        req = request(
            messages=[
                {"role": "system", "content": "terse"},
                {"role": "user", "content": "weather in Paris?"},
            ],
            tools=[WEATHER],
            max_tokens=64,
            temperature=0.3,
            top_p=0.9,
            stop=["END"],
            n=1,
            response_format={"type": "text"},
        )
        run(
            fake,
            lambda p, req=req, stream=stream: (  # type: ignore[misc]
                collect(p.stream_chat(req, "jamba-large")) if stream else p.chat(req, "jamba-large")
            ),
        )
    for ours, reference in zip(fake.requests, references, strict=True):
        assert (ours.method, ours.path, ours.query) == (reference.method, reference.path, reference.query)
        assert ours.headers["authorization"] == reference.headers["authorization"]
        assert ours.headers["content-type"] == reference.headers["content-type"] == "application/json"
        expected = json.loads(json.dumps(reference.json))
        expected["tools"][0]["function"].pop("strict")  # Jamba's tool schema has no `strict`; we drop it
        assert ours.json == expected
