"""The Databricks Model Serving adapter: pure conversions, the adapter against the native fake, and
the fake checked against the official `databricks-sdk` (which also gives the reference request) and
the OpenAI client on `{host}/serving-endpoints` (the OpenAI-compatible usage Databricks documents)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import msgspec
import openai
import pytest
import requests
from databricks.sdk import WorkspaceClient, errors
from databricks.sdk.core import Config
from databricks.sdk.service.serving import ChatMessage, ChatMessageRole
from modelyard.errors import GatewayError, UpstreamError
from modelyard.providers.databricks import DATABRICKS, DatabricksProvider, relay_stream
from modelyard.providers.databricks_convert import (
    build_body,
    decode_chat,
    decode_chat_chunk,
    parse_error,
    stream_error,
)
from modelyard.schema.chat import ChatChunk, ChatRequest, ChunkChoice, Delta
from modelyard.schema.common import Usage
from modelyard.schema.completions import CompletionRequest
from modelyard.schema.decode import decode_request
from modelyard.schema.embeddings import EmbeddingRequest
from modelyard.transport import HttpTransport, UpstreamResponse

from tests.fakes.databricks_upstream import FakeDatabricks

TOKEN = "dapi-test-" + "t" * 24
T = TypeVar("T")
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def chat_request(**fields: Any) -> ChatRequest:
    fields.setdefault("model", "alias")
    fields.setdefault("messages", [{"role": "user", "content": "hi"}])
    return decode_request(json.dumps(fields).encode(), ChatRequest)


def body_of(request: Any, stream: bool | None = False) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(build_body(request, stream=stream))
    return decoded


# --------------------------------------------------------------------------------------------------
# Pure conversions


def test_body_has_no_model_or_stream_options_and_keeps_extras() -> None:
    req = chat_request(
        messages=[{"role": "developer", "content": "terse"}, {"role": "user", "content": "q"}],
        max_completion_tokens=30,
        top_k=5,
        stream_options={"include_usage": True},
        tools=[WEATHER],
        tool_choice="required",
        response_format={"type": "json_object"},
        enable_safety_filter=True,
    )
    out = body_of(req, stream=True)
    assert "model" not in out and "stream_options" not in out and "max_completion_tokens" not in out
    assert out["max_tokens"] == 30 and out["top_k"] == 5 and out["stream"] is True
    assert out["tool_choice"] == "required" and out["tools"][0]["function"]["name"] == "get_weather"
    assert out["response_format"] == {"type": "json_object"} and out["enable_safety_filter"] is True
    assert out["messages"][0] == {"role": "developer", "content": "terse"}
    assert "stream" not in body_of(req, stream=False)


def test_explicit_max_tokens_wins_and_other_operations() -> None:
    assert body_of(chat_request(max_tokens=7, max_completion_tokens=9))["max_tokens"] == 7
    completion = decode_request(b'{"model":"m","prompt":"p","max_tokens":3}', CompletionRequest)
    assert body_of(completion) == {"prompt": "p", "max_tokens": 3}
    embedding = decode_request(b'{"model":"m","input":["a","b"]}', EmbeddingRequest)
    assert body_of(embedding, stream=None) == {"input": ["a", "b"]}


def response(status: int, body: Any, headers: dict[str, str] | None = None) -> UpstreamResponse:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return UpstreamResponse(status, headers or {}, raw)


@pytest.mark.parametrize(
    ("status", "code", "client_status", "client_code"),
    [
        (400, "BAD_REQUEST", 400, "bad_request"),
        (400, "RESOURCE_DOES_NOT_EXIST", 404, "resource_does_not_exist"),
        (404, "RESOURCE_DOES_NOT_EXIST", 404, "resource_does_not_exist"),
        (400, "REQUEST_LIMIT_EXCEEDED", 429, "request_limit_exceeded"),
        (429, "REQUEST_LIMIT_EXCEEDED", 429, "request_limit_exceeded"),
        (403, "PERMISSION_DENIED", 403, "provider_permission_denied"),
        (413, "BAD_REQUEST", 413, "bad_request"),
        (422, "INVALID_PARAMETER_VALUE", 422, "invalid_parameter_value"),
        (500, "INTERNAL_ERROR", 502, "internal_error"),
        (500, "TEMPORARILY_UNAVAILABLE", 503, "temporarily_unavailable"),
        (503, "TEMPORARILY_UNAVAILABLE", 503, "temporarily_unavailable"),
        (529, "TEMPORARILY_UNAVAILABLE", 503, "temporarily_unavailable"),
    ],
)
def test_errors_by_status_refined_by_error_code(
    status: int, code: str, client_status: int, client_code: str
) -> None:
    error = parse_error("db", response(status, {"error_code": code, "message": "m"}), TOKEN)
    assert (error.status, error.code, error.upstream_status) == (client_status, client_code, status)


def test_error_secrets_retry_after_and_other_shapes() -> None:
    denied = parse_error(
        "db", response(401, {"error_code": "UNAUTHENTICATED", "message": f"bad {TOKEN}"}), TOKEN
    )
    assert denied.status == 401 and denied.code == "provider_authentication_failed"
    assert TOKEN not in denied.message and "db" in denied.message
    leaked = parse_error(
        "db", response(400, {"error_code": "BAD_REQUEST", "message": f"echo {TOKEN}"}), TOKEN
    )
    assert TOKEN not in leaked.message and "****" in leaked.message
    limited = parse_error(
        "db",
        response(429, {"error_code": "REQUEST_LIMIT_EXCEEDED", "message": "slow"}, {"retry-after": "7"}),
        TOKEN,
    )
    assert limited.retry_after == 7 and limited.retryable
    openai_shaped = parse_error("db", response(400, {"error": {"message": "oops", "code": "x"}}), TOKEN)
    assert (openai_shaped.message, openai_shaped.code) == ("oops", "x")
    garbage = parse_error("db", response(502, b"<html>bad gateway"), TOKEN)
    assert garbage.status == 502 and "HTTP 502" in garbage.message


def test_errors_sent_inside_a_stream() -> None:
    limited = stream_error("db", b'{"error_code":"REQUEST_LIMIT_EXCEEDED","message":"slow down"}', TOKEN)
    assert (limited.status, limited.code, limited.message) == (429, "request_limit_exceeded", "slow down")
    relayed = stream_error(
        "db", b'{"error":{"message":"upstream model failed","type":"server_error"}}', TOKEN
    )
    assert relayed.status == 502 and relayed.message == "upstream model failed"
    garbage = stream_error("db", b"<html>not json", TOKEN)
    assert garbage.status == 502 and garbage.code == "bad_upstream_response"


def chunk(delta: Delta | None, usage: Usage | None = None, finish: Any = None) -> ChatChunk:
    choices = [] if delta is None else [ChunkChoice(index=0, delta=delta, finish_reason=finish)]
    return ChatChunk(id="c", created=1, model="m", choices=choices, usage=usage if usage else msgspec.UNSET)


async def _aiter(items: list[T]) -> AsyncIterator[T]:
    for item in items:
        yield item


def relay(items: list[ChatChunk], include_usage: bool) -> list[ChatChunk]:
    async def go() -> list[ChatChunk]:
        return [c async for c in relay_stream(_aiter(items), include_usage)]

    return asyncio.run(go())


@pytest.mark.parametrize("include_usage", [False, True])
def test_relay_moves_usage_to_a_final_chunk(include_usage: bool) -> None:
    usage = Usage(prompt_tokens=2, completion_tokens=3, total_tokens=5)
    upstream = [chunk(Delta(content="a")), chunk(Delta(content="b")), chunk(Delta(), usage, "stop")]
    out = relay(upstream, include_usage)
    assert out[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in out if c.choices] == [None, None, "stop"]
    if include_usage:
        assert all(c.usage is None for c in out[:-1]) and out[-1].choices == [] and out[-1].usage == usage
    else:
        assert len(out) == 3 and all(c.usage is msgspec.UNSET for c in out)


def test_relay_drops_usage_only_chunks_and_keeps_the_last_usage() -> None:
    first, last = Usage(prompt_tokens=1), Usage(prompt_tokens=2, completion_tokens=1, total_tokens=3)
    out = relay([chunk(Delta(content="a"), first), chunk(None, last)], include_usage=True)
    assert len(out) == 2 and out[-1].usage == last


# --------------------------------------------------------------------------------------------------
# The adapter against the fake


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeDatabricks]:
    with FakeDatabricks(token=TOKEN) as server:
        yield server


def run(fake: FakeDatabricks, call: Callable[[DatabricksProvider], Awaitable[T]], token: str = TOKEN) -> T:
    async def go() -> T:
        transport = HttpTransport()
        adapter = DATABRICKS.create("db", {"host": fake.base_url + "/", "token": token}, transport)
        assert isinstance(adapter, DatabricksProvider)
        try:
            return await asyncio.wait_for(call(adapter), 20)
        finally:
            await transport.close()

    return asyncio.run(go())


async def collect(stream: AsyncIterator[T]) -> list[T]:
    return [item async for item in stream]


def test_chat_goes_to_the_endpoint_invocations_url(fake: FakeDatabricks) -> None:
    fake.clear()
    result = run(
        fake, lambda p: p.chat(chat_request(messages=[{"role": "user", "content": "hello db"}]), "my chat")
    )
    assert result.choices[0].message.content == "Echo: hello db" and result.model == "my chat"
    assert (
        result.usage
        and result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens
    )
    sent = fake.requests[-1]
    assert (
        sent.path == "/serving-endpoints/my chat/invocations"
        and sent.headers["authorization"] == f"Bearer {TOKEN}"
    )
    assert "model" not in sent.json


def test_streamed_text_with_usage_and_streamed_tool_calls(fake: FakeDatabricks) -> None:
    req = chat_request(
        messages=[{"role": "user", "content": "one two three"}], stream_options={"include_usage": True}
    )
    chunks = run(fake, lambda p: collect(p.stream_chat(req, "ep")))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Echo: one two three"
    assert chunks[-1].choices == [] and chunks[-1].usage and chunks[-1].usage.completion_tokens == 4
    tools = chat_request(
        messages=[{"role": "user", "content": "weather in Paris and Tokyo?"}], tools=[WEATHER]
    )
    calls: dict[int, str] = {}
    for c in run(fake, lambda p: collect(p.stream_chat(tools, "ep"))):
        for delta in c.choices[0].delta.tool_calls or [] if c.choices else []:
            fn = delta.function
            calls[delta.index] = calls.get(delta.index, "") + (fn.arguments or "" if fn else "")
    assert [json.loads(a) for a in calls.values()] == [{"city": "Paris"}, {"city": "Tokyo"}]


def test_completions_and_embeddings(fake: FakeDatabricks) -> None:
    completion = decode_request(b'{"model":"m","prompt":"say hi","max_tokens":20}', CompletionRequest)
    result = run(fake, lambda p: p.complete(completion, "llm"))
    assert result.choices[0].text == "Echo: say hi"
    streamed = decode_request(
        b'{"model":"m","prompt":"say hi","stream":true,"stream_options":{"include_usage":true}}',
        CompletionRequest,
    )
    chunks = run(fake, lambda p: collect(p.stream_complete(streamed, "llm")))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "Echo: say hi"
    assert chunks[-1].choices == [] and chunks[-1].usage
    embedding = decode_request(b'{"model":"m","input":["a","b"]}', EmbeddingRequest)
    vectors = run(fake, lambda p: p.embed(embedding, "embedder"))
    assert (
        [d.index for d in vectors.data] == [0, 1]
        and vectors.model == "embedder"
        and vectors.usage.prompt_tokens == 2
    )


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_failures_raise_gateway_errors(fake: FakeDatabricks, stream: bool) -> None:
    def call(model: str, token: str = TOKEN) -> GatewayError:
        req = chat_request(stream=stream)
        with pytest.raises(GatewayError) as caught:
            run(fake, lambda p: collect(p.stream_chat(req, model)) if stream else p.chat(req, model), token)
        return caught.value

    limited = call("error-429")
    assert isinstance(limited, UpstreamError) and limited.status == 429 and limited.retry_after == 7
    assert call("error-404").code == "resource_does_not_exist"
    assert call("garbage").status == 502
    assert call("midstream-drop").code == "upstream_disconnected"
    denied = call("ep", token="wrong-token")
    assert denied.status == 401 and "wrong-token" not in denied.message


def test_reasoning_models_content_blocks(fake: FakeDatabricks) -> None:
    req = chat_request(messages=[{"role": "user", "content": "think"}])
    unary = run(fake, lambda p: p.chat(req, "reasoning-ep"))
    assert unary.choices[0].message.content == "Echo: think" and unary.choices[0].finish_reason == "stop"
    streamed = chat_request(messages=[{"role": "user", "content": "think hard"}], stream=True)
    chunks = run(fake, lambda p: collect(p.stream_chat(streamed, "reasoning-ep")))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Echo: think hard"


def test_decoders_read_blocks_and_reject_garbage() -> None:
    blocks = {
        "id": "x",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": [{"type": "reasoning"}]}}],
    }
    assert decode_chat("db", json.dumps(blocks).encode()).choices[0].message.content is None
    with pytest.raises(UpstreamError) as caught:
        decode_chat("db", b"<html>")
    assert caught.value.status == 502
    delta = {
        "id": "x",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": [{"type": "text", "text": "hi"}]}}],
    }
    assert decode_chat_chunk("db", json.dumps(delta).encode(), TOKEN).choices[0].delta.content == "hi"
    with pytest.raises(UpstreamError):
        decode_chat_chunk("db", b'{"error_code":"INTERNAL_ERROR","message":"boom"}', TOKEN)


def test_closing_the_stream_early_cancels_the_upstream(fake: FakeDatabricks) -> None:
    before = len(fake.cancelled_streams)

    async def take_two(p: DatabricksProvider) -> None:
        stream = p.stream_chat(chat_request(stream=True), "slow-stream")
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
def workspace(fake: FakeDatabricks) -> WorkspaceClient:
    return WorkspaceClient(
        config=Config(host=fake.base_url, token=TOKEN, auth_type="pat", retry_timeout_seconds=1)
    )


def test_sdk_queries_chat_completions_and_embeddings(workspace: WorkspaceClient) -> None:
    user = ChatMessage(role=ChatMessageRole.USER, content="hello sdk")
    chat = workspace.serving_endpoints.query(name="ep", messages=[user], max_tokens=50)
    assert chat.choices and chat.choices[0].message and chat.choices[0].message.content == "Echo: hello sdk"
    assert chat.usage and chat.usage.total_tokens == 5
    completion = workspace.serving_endpoints.query(name="llm", prompt="say sdk", max_tokens=10)
    assert completion.choices and completion.choices[0].text == "Echo: say sdk"
    vectors = workspace.serving_endpoints.query(name="embedder", input=["a", "b"])
    assert vectors.data and len(vectors.data) == 2


@pytest.mark.parametrize(
    ("model", "error_class"),
    [
        ("error-400", errors.BadRequest),
        ("error-403", errors.PermissionDenied),
        ("error-404", errors.ResourceDoesNotExist),
        ("error-500", errors.InternalError),
    ],
)
def test_sdk_error_classes(workspace: WorkspaceClient, model: str, error_class: type[Exception]) -> None:
    with pytest.raises(error_class):
        workspace.serving_endpoints.query(
            name=model, messages=[ChatMessage(role=ChatMessageRole.USER, content="x")]
        )


def test_sdk_reads_the_rate_limit_and_the_auth_errors(fake: FakeDatabricks) -> None:
    raw = requests.post(
        f"{fake.base_url}/serving-endpoints/error-429/invocations",
        json={"messages": [{"role": "user", "content": "x"}]},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    error = errors._Parser().get_api_error(raw)
    assert isinstance(error, errors.RequestLimitExceeded) and error.retry_after_secs == 7
    intruder = WorkspaceClient(config=Config(host=fake.base_url, token="wrong", auth_type="pat"))
    with pytest.raises(errors.Unauthenticated):
        intruder.serving_endpoints.query(
            name="ep", messages=[ChatMessage(role=ChatMessageRole.USER, content="x")]
        )


def test_adapter_request_matches_the_sdk_request(fake: FakeDatabricks, workspace: WorkspaceClient) -> None:
    fake.clear()
    user = ChatMessage(role=ChatMessageRole.USER, content="compare me")
    workspace.serving_endpoints.query(
        name="ep", messages=[user], max_tokens=12, temperature=0.5, stop=["zz"], n=1
    )
    reference = next(r for r in fake.requests if r.path.endswith("/invocations"))
    req = chat_request(
        messages=[{"role": "user", "content": "compare me"}], max_tokens=12, temperature=0.5, stop=["zz"], n=1
    )
    fake.clear()
    run(fake, lambda p: p.chat(req, "ep"))
    ours = fake.requests[-1]
    assert (ours.method, ours.path, ours.query) == (reference.method, reference.path, reference.query)
    assert ours.headers["authorization"] == reference.headers["authorization"]
    assert ours.headers["content-type"] == reference.headers["content-type"] == "application/json"
    assert ours.json == reference.json


def test_openai_client_on_the_serving_endpoints_base_url(fake: FakeDatabricks) -> None:
    with openai.OpenAI(api_key=TOKEN, base_url=f"{fake.base_url}/serving-endpoints", max_retries=0) as client:
        unary = client.chat.completions.create(model="ep", messages=[{"role": "user", "content": "hi there"}])
        assert unary.choices[0].message.content == "Echo: hi there"
        chunks = list(
            client.chat.completions.create(
                model="ep",
                messages=[{"role": "user", "content": "weather in Paris?"}],
                tools=[WEATHER],
                stream=True,
            )  # type: ignore[list-item]
        )
        assert chunks[0].choices[0].delta.role == "assistant"
        assert chunks[-1].choices[0].finish_reason == "tool_calls" and chunks[-1].usage is not None
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="error-429", messages=[{"role": "user", "content": "x"}])
