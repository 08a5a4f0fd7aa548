"""The Anthropic adapter: pure conversions, the adapter against the native fake, and the fake
checked against Anthropic's official SDK (which also gives the reference outbound request)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anthropic
import msgspec
import pytest
from modelyard.errors import ClientError, GatewayError, UpstreamError
from modelyard.providers.anthropic import ANTHROPIC, AnthropicProvider
from modelyard.providers.anthropic_convert import (
    AnthropicUsage,
    OutputDetails,
    build_body,
    to_usage,
)
from modelyard.schema.chat import ChatChunk, ChatCompletion, ChatRequest
from modelyard.schema.decode import decode_request
from modelyard.transport import HttpTransport

from tests.fakes.anthropic_upstream import FakeAnthropic

KEY = "sk-ant-test-" + "k" * 24
IMAGE = "data:image/png;base64,iVBORw0KGgo="
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
NATIVE_WEATHER = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": WEATHER["function"]["parameters"],  # type: ignore[index]
}


def request(**fields: Any) -> ChatRequest:
    fields.setdefault("model", "claude-test")
    fields.setdefault("messages", [{"role": "user", "content": "hi"}])
    return decode_request(json.dumps(fields).encode(), ChatRequest)


def body(**fields: Any) -> dict[str, Any]:
    return build_body(request(**fields), "claude-x", stream=False, provider="anth")


# --------------------------------------------------------------------------------------------------
# Pure request conversion


def test_system_and_developer_join_into_the_top_level_system() -> None:
    out = body(
        messages=[
            {"role": "system", "content": "Be terse."},
            {"role": "developer", "content": [{"type": "text", "text": "English only."}]},
            {"role": "user", "content": "q1"},
            {"role": "assistant", "content": "a1"},
            {"role": "user", "content": "q2"},
        ]
    )
    assert out["system"] == "Be terse.\n\nEnglish only."
    assert [m["role"] for m in out["messages"]] == ["user", "assistant", "user"]
    assert out["max_tokens"] == 4096 and out["model"] == "claude-x"


def test_images_tools_and_merged_tool_results() -> None:
    out = body(
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image_url", "image_url": {"url": IMAGE}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}},
                    {"id": "c2", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "one"},
            {"role": "tool", "tool_call_id": "c2", "content": "two"},
            {"role": "user", "content": "thanks"},
        ],
        tools=[WEATHER],
    )
    user, assistant, results = out["messages"]
    assert user["content"][1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
    }
    assert user["content"][2]["source"] == {"type": "url", "url": "https://example.com/cat.png"}
    assert assistant["content"] == [
        {"type": "tool_use", "id": "c1", "name": "f", "input": {"a": 1}},
        {"type": "tool_use", "id": "c2", "name": "f", "input": {}},
    ]
    assert results["role"] == "user"
    assert [b["type"] for b in results["content"]] == ["tool_result", "tool_result", "text"]
    assert results["content"][0]["tool_use_id"] == "c1"
    assert out["tools"] == [NATIVE_WEATHER]
    assert "tool_choice" not in out


def test_tool_schema_and_strict() -> None:
    strict = {"type": "function", "function": {"name": "f", "parameters": {"properties": {}}, "strict": True}}
    bare = {"type": "function", "function": {"name": "g"}}
    assert body(tools=[strict, bare])["tools"] == [
        {"name": "f", "input_schema": {"type": "object", "properties": {}}, "strict": True},
        {"name": "g", "input_schema": {"type": "object"}},
    ]


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("required", None, {"type": "any"}),
        ("none", None, {"type": "none"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            None,
            {"type": "tool", "name": "get_weather"},
        ),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
    ],
)
def test_tool_choice(choice: Any, parallel: bool | None, expected: dict[str, Any]) -> None:
    fields: dict[str, Any] = {"tools": [WEATHER]}
    if choice is not None:
        fields["tool_choice"] = choice
    if parallel is not None:
        fields["parallel_tool_calls"] = parallel
    assert body(**fields)["tool_choice"] == expected


def test_sampling_stop_user_and_token_limits() -> None:
    out = body(
        temperature=0.2,
        top_p=0.9,
        top_k=5,
        stop="END",
        user="u-1",
        max_tokens=10,
        max_completion_tokens=20,
        seed=3,
        presence_penalty=0.5,
    )
    assert out["temperature"] == 0.2 and out["top_p"] == 0.9 and out["top_k"] == 5
    assert out["stop_sequences"] == ["END"] and out["metadata"] == {"user_id": "u-1"}
    assert out["max_tokens"] == 20
    assert "seed" not in out and "presence_penalty" not in out
    assert body(max_tokens=7)["max_tokens"] == 7
    settings = ANTHROPIC.settings.model_validate({"apikey": KEY, "default_max_tokens": 123})
    assert settings.default_max_tokens == 123  # type: ignore[attr-defined]


def test_json_modes() -> None:
    emulated = body(response_format={"type": "json_object"}, messages=[{"role": "user", "content": "x"}])
    assert "JSON object" in emulated["system"]
    assert emulated["messages"][-1] == {"role": "assistant", "content": "{"}
    own_prefill = body(
        response_format={"type": "json_object"},
        messages=[{"role": "user", "content": "x"}, {"role": "assistant", "content": '{"a":'}],
    )
    assert own_prefill["messages"][-1] == {"role": "assistant", "content": '{"a":'}
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    native = body(response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": schema}})
    assert native["output_config"] == {"format": {"type": "json_schema", "schema": schema}}


def test_extras_pass_only_anthropic_fields() -> None:
    req = request(thinking={"type": "enabled", "budget_tokens": 1024}, logit_bias_x=1, service_tier="auto")
    out = msgspec.json.decode(msgspec.json.encode(build_body(req, "m", stream=True, provider="p")))
    assert out["thinking"] == {"type": "enabled", "budget_tokens": 1024} and out["service_tier"] == "auto"
    assert "logit_bias_x" not in out and out["stream"] is True


@pytest.mark.parametrize(
    "fields",
    [
        {"n": 2},
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}}],
                }
            ]
        },
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "data:image/png,xyz"}}],
                }
            ]
        },
        {
            "messages": [
                {
                    "role": "assistant",
                    "tool_calls": [
                        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{bad"}}
                    ],
                }
            ]
        },
    ],
)
def test_what_anthropic_cannot_take_is_a_clear_400(fields: dict[str, Any]) -> None:
    with pytest.raises(ClientError) as caught:
        body(**fields)
    assert caught.value.status == 400


def test_usage_counts_cache_and_thinking_tokens() -> None:
    usage = to_usage(
        AnthropicUsage(
            input_tokens=10,
            output_tokens=7,
            cache_read_input_tokens=30,
            cache_creation_input_tokens=5,
            output_tokens_details=OutputDetails(thinking_tokens=4),
        )
    )
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (45, 7, 52)
    assert usage.prompt_tokens_details.cached_tokens == 30  # type: ignore[union-attr]
    assert usage.completion_tokens_details.reasoning_tokens == 4  # type: ignore[union-attr]


# --------------------------------------------------------------------------------------------------
# The adapter against the native fake


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAnthropic]:
    server = FakeAnthropic(api_key=KEY)
    server.start()
    yield server
    server.stop()


def provider(fake: FakeAnthropic) -> AnthropicProvider:
    adapter = ANTHROPIC.create("anth", {"apikey": KEY, "base_url": fake.base_url}, HttpTransport())
    assert isinstance(adapter, AnthropicProvider)
    return adapter


def run_chat(fake: FakeAnthropic, req: ChatRequest) -> ChatCompletion:
    async def go() -> ChatCompletion:
        adapter = provider(fake)
        try:
            return await adapter.chat(req, req.model)
        finally:
            await adapter.transport.close()

    return asyncio.run(go())


def run_stream(fake: FakeAnthropic, req: ChatRequest) -> tuple[list[ChatChunk], GatewayError | None]:
    async def go() -> tuple[list[ChatChunk], GatewayError | None]:
        adapter = provider(fake)
        chunks: list[ChatChunk] = []
        stream: AsyncIterator[ChatChunk] = adapter.stream_chat(req, req.model)
        try:
            async for chunk in stream:
                chunks.append(chunk)
        except GatewayError as exc:
            return chunks, exc
        finally:
            await adapter.transport.close()
        return chunks, None

    return asyncio.run(asyncio.wait_for(go(), 20))


def test_chat_text_tools_and_json(fake: FakeAnthropic) -> None:
    result = run_chat(
        fake,
        request(messages=[{"role": "system", "content": "s"}, {"role": "user", "content": "hello there"}]),
    )
    assert result.choices[0].message.content == "Echo: hello there"
    assert result.choices[0].finish_reason == "stop" and result.id.startswith("msg_")
    sent = fake.requests[-1]
    assert sent.path == "/v1/messages" and sent.headers["x-api-key"] == KEY
    assert sent.headers["anthropic-version"] == "2023-06-01"
    tools = run_chat(
        fake, request(messages=[{"role": "user", "content": "weather in Paris and Tokyo?"}], tools=[WEATHER])
    )
    calls = tools.choices[0].message.tool_calls
    assert tools.choices[0].finish_reason == "tool_calls"
    assert [json.loads(c.function.arguments) for c in calls] == [{"city": "Paris"}, {"city": "Tokyo"}]  # type: ignore[union-attr]
    single = run_chat(
        fake,
        request(
            messages=[{"role": "user", "content": "weather in Paris and Tokyo?"}],
            tools=[WEATHER],
            parallel_tool_calls=False,
        ),
    )
    assert len(single.choices[0].message.tool_calls) == 1  # type: ignore[arg-type]
    as_json = run_chat(fake, request(response_format={"type": "json_object"}))
    assert json.loads(as_json.choices[0].message.content or "") == {"echo": "Echo: hi"}
    cut = run_chat(
        fake, request(messages=[{"role": "user", "content": "a b c d e"}], stop=["c"], max_tokens=50)
    )
    assert (
        cut.choices[0].finish_reason == "stop" and "c" not in (cut.choices[0].message.content or "").split()
    )
    limited = run_chat(fake, request(messages=[{"role": "user", "content": "a b c d e"}], max_tokens=2))
    assert limited.choices[0].finish_reason == "length" and limited.usage.completion_tokens == 2  # type: ignore[union-attr]


def test_stream_text_with_usage(fake: FakeAnthropic) -> None:
    req = request(
        messages=[{"role": "user", "content": "one two three"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks, error = run_stream(fake, req)
    assert error is None
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Echo: one two three"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "stop"
    ]
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4  # type: ignore[union-attr]
    assert chunks[-1].usage.prompt_tokens == 3  # type: ignore[union-attr]


def test_stream_json_mode_puts_the_prefill_back(fake: FakeAnthropic) -> None:
    chunks, error = run_stream(fake, request(stream=True, response_format={"type": "json_object"}))
    assert error is None
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert json.loads(text) == {"echo": "Echo: hi"}
    assert all(c.usage is msgspec.UNSET for c in chunks)


def test_stream_tool_calls(fake: FakeAnthropic) -> None:
    req = request(
        messages=[{"role": "user", "content": "weather in Paris and Tokyo?"}], tools=[WEATHER], stream=True
    )
    chunks, error = run_stream(fake, req)
    assert error is None
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for delta in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
            entry = calls.setdefault(delta.index, {"id": "", "name": "", "args": ""})
            assert not (delta.id and entry["id"]), "id sent once"
            entry["id"] += delta.id or ""
            if delta.function:
                entry["name"] += delta.function.name or ""
                entry["args"] += delta.function.arguments or ""
    assert [json.loads(c["args"])["city"] for c in calls.values()] == ["Paris", "Tokyo"]
    assert all(c["id"].startswith("call_") and c["name"] == "get_weather" for c in calls.values())
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize(
    ("model", "status", "code"),
    [
        ("overloaded-midstream", 503, "overloaded_error"),
        ("midstream-drop", 502, "upstream_disconnected"),
        ("garbage", 502, "bad_upstream_response"),
    ],
)
def test_stream_failures_raise(fake: FakeAnthropic, model: str, status: int, code: str) -> None:
    chunks, error = run_stream(
        fake, request(model=model, stream=True, messages=[{"role": "user", "content": "a b c d e f g"}])
    )
    assert isinstance(error, UpstreamError)
    assert (error.status, error.code) == (status, code)
    if model != "garbage":
        assert any(c.choices and c.choices[0].delta.content for c in chunks)


def test_an_early_error_event_fails_before_any_chunk(fake: FakeAnthropic) -> None:
    """message_start then overloaded_error: nothing was yielded, so the stream is not committed."""
    chunks, error = run_stream(fake, request(model="overloaded-early", stream=True))
    assert chunks == [] and isinstance(error, UpstreamError)
    assert (error.status, error.code, error.retryable) == (503, "overloaded_error", True)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("status", "client_status", "code"),
    [
        (400, 400, "invalid_request_error"),
        (401, 401, "provider_authentication_failed"),
        (403, 403, "provider_permission_denied"),
        (404, 404, "not_found_error"),
        (413, 413, "request_too_large"),
        (429, 429, "rate_limit_error"),
        (500, 502, "api_error"),
        (529, 503, "overloaded_error"),
    ],
)
def test_errors_map_by_status_and_type(
    fake: FakeAnthropic, status: int, client_status: int, code: str, stream: bool
) -> None:
    req = request(model=f"error-{status}", stream=stream)
    if stream:
        _, error = run_stream(fake, req)
    else:
        with pytest.raises(UpstreamError) as caught:
            run_chat(fake, req)
        error = caught.value
    assert isinstance(error, UpstreamError)
    assert (error.status, error.code, error.upstream_status) == (client_status, code, status)
    assert error.retry_after == (7.0 if status == 429 else None)
    assert KEY not in error.message


def test_wrong_key_message_hides_the_secret(fake: FakeAnthropic) -> None:
    async def go() -> None:
        adapter = ANTHROPIC.create(
            "anth", {"apikey": "sk-ant-wrong-123456", "base_url": fake.base_url}, HttpTransport()
        )
        try:
            await adapter.chat(request(), "m")
        finally:
            await adapter.transport.close()

    with pytest.raises(UpstreamError) as caught:
        asyncio.run(go())
    assert caught.value.status == 401 and "wrong" not in caught.value.message


# --------------------------------------------------------------------------------------------------
# The fake against the official SDK, and the adapter's request against the SDK's


@pytest.fixture
def sdk(fake: FakeAnthropic) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(api_key=KEY, base_url=fake.base_url, max_retries=0, timeout=10) as client:
        yield client


def test_sdk_unary_stream_and_tools(sdk: anthropic.Anthropic) -> None:
    message = sdk.messages.create(
        model="claude-test", max_tokens=100, system="s", messages=[{"role": "user", "content": "hi sdk"}]
    )
    assert message.content[0].type == "text" and message.content[0].text == "Echo: hi sdk"
    assert message.stop_reason == "end_turn" and message.usage.output_tokens == 3
    with sdk.messages.stream(
        model="claude-test", max_tokens=100, messages=[{"role": "user", "content": "hi stream"}]
    ) as stream:
        assert "".join(stream.text_stream) == "Echo: hi stream"
        final = stream.get_final_message()
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 3
    with sdk.messages.stream(
        model="claude-test",
        max_tokens=100,
        tools=[NATIVE_WEATHER],  # type: ignore[list-item]
        messages=[{"role": "user", "content": "weather in Paris and Tokyo?"}],
    ) as stream:
        tools = stream.get_final_message()
    assert tools.stop_reason == "tool_use"
    assert [b.input for b in tools.content if b.type == "tool_use"] == [{"city": "Paris"}, {"city": "Tokyo"}]


@pytest.mark.parametrize(
    ("model", "error_class"),
    [
        ("error-400", anthropic.BadRequestError),
        ("error-401", anthropic.AuthenticationError),
        ("error-403", anthropic.PermissionDeniedError),
        ("error-404", anthropic.NotFoundError),
        ("error-429", anthropic.RateLimitError),
        ("error-500", anthropic.InternalServerError),
        ("error-529", anthropic.OverloadedError),
    ],
)
def test_sdk_error_classes(sdk: anthropic.Anthropic, model: str, error_class: type[Exception]) -> None:
    with pytest.raises(error_class) as caught:
        sdk.messages.create(model=model, max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert isinstance(caught.value, anthropic.APIStatusError)
    if model == "error-429":
        assert caught.value.response.headers["retry-after"] == "7"


def test_sdk_sees_an_error_event_mid_stream(sdk: anthropic.Anthropic) -> None:
    with (
        pytest.raises(anthropic.APIStatusError) as caught,
        sdk.messages.stream(
            model="overloaded-midstream", max_tokens=10, messages=[{"role": "user", "content": "a b c"}]
        ) as stream,
    ):
        list(stream.text_stream)
    assert "overloaded_error" in str(caught.value)


def test_sdk_rejected_by_fake_like_the_real_api(sdk: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError):
        sdk.messages.create(
            model="claude-test",
            max_tokens=10,
            messages=[{"role": "user", "content": "x"}],
            extra_body={"frequency_penalty": 1},
        )


def test_adapter_request_matches_the_sdk_request(fake: FakeAnthropic, sdk: anthropic.Anthropic) -> None:
    """The same tool-using, multimodal call from the SDK and through the adapter: same wire request."""
    fake.clear()
    sdk.messages.create(
        model="claude-test",
        max_tokens=300,
        system="Be terse.",
        # This SDK (API version 2026-10-21) no longer types the sampling fields; the adapter pins
        # anthropic-version 2023-06-01, where they are part of the Messages API.
        extra_body={"temperature": 0.5, "top_p": 0.9, "top_k": 3},
        stop_sequences=["END"],
        metadata={"user_id": "u-7"},
        tools=[NATIVE_WEATHER],  # type: ignore[list-item]
        tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "weather here?"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
                    },
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "c1", "name": "get_weather", "input": {"city": "Paris"}}
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "c1", "content": "18C"}],
            },
        ],
    )
    run_chat(
        fake,
        request(
            model="claude-test",
            max_tokens=300,
            temperature=0.5,
            top_p=0.9,
            top_k=3,
            stop=["END"],
            user="u-7",
            tools=[WEATHER],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            parallel_tool_calls=False,
            messages=[
                {"role": "system", "content": "Be terse."},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "weather here?"},
                        {"type": "image_url", "image_url": {"url": IMAGE}},
                    ],
                },
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "18C"},
            ],
        ),
    )
    ours, theirs = fake.requests[-1], fake.requests[-2]
    assert (
        (ours.method, ours.path, ours.query)
        == (theirs.method, theirs.path, theirs.query)
        == ("POST", "/v1/messages", "")
    )
    assert ours.json == theirs.json
    assert ours.headers["content-type"] == theirs.headers["content-type"] == "application/json"
    # The SDK authenticates with `Authorization: Bearer` and its own pinned API version; the adapter
    # sends Anthropic's documented `x-api-key` with the configured `anthropic-version`.
    assert theirs.headers["authorization"] == f"Bearer {KEY}" and ours.headers["x-api-key"] == KEY
    assert theirs.headers["anthropic-version"] and ours.headers["anthropic-version"] == "2023-06-01"


def test_adapter_stream_request_matches_the_sdk(fake: FakeAnthropic, sdk: anthropic.Anthropic) -> None:
    fake.clear()
    with sdk.messages.stream(
        model="claude-test", max_tokens=4096, messages=[{"role": "user", "content": "hi"}]
    ) as s:
        s.get_final_message()
    run_stream(fake, request(model="claude-test", stream=True))
    ours, theirs = fake.requests[-1], fake.requests[-2]
    assert ours.json == theirs.json and ours.json["stream"] is True
    assert ours.headers["accept"] == theirs.headers["accept"] or "text/event-stream" in ours.headers["accept"]
