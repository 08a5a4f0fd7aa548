"""The fake OpenAI upstream, checked with the official SDK and OpenAI's OpenAPI document."""

from __future__ import annotations

import base64
import http.client
import json
import math
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessage,
    ChatCompletionMessageFunctionToolCall,
    ChatCompletionMessageParam,
)

from tests.fakes.openai_upstream import FakeOpenAI
from tests.openapi_check import parse_sse, validate_error, validate_response, validate_stream_chunks

API_KEY = "sk-test-fake-upstream"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location", "unit"],
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def user(text: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": text}]


def function_calls(message: ChatCompletionMessage) -> list[ChatCompletionMessageFunctionToolCall]:
    calls = message.tool_calls or []
    assert all(isinstance(c, ChatCompletionMessageFunctionToolCall) for c in calls)
    return [c for c in calls if isinstance(c, ChatCompletionMessageFunctionToolCall)]


# --------------------------------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=API_KEY) as server:
        yield server


@pytest.fixture(scope="module")
def client(fake: FakeOpenAI) -> Iterator[OpenAI]:
    with OpenAI(
        base_url=fake.base_url, api_key=API_KEY, _strict_response_validation=True, max_retries=0, timeout=10
    ) as sdk:
        yield sdk


@pytest.fixture(scope="module")
def raw_http(fake: FakeOpenAI) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=fake.base_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10
    ) as http:
        yield http


def chat(client: OpenAI, **params: Any) -> ChatCompletion:
    """Create a chat completion, validating the raw body against the OpenAPI document first."""
    raw = client.chat.completions.with_raw_response.create(**params)
    validate_response("POST", "/chat/completions", raw.status_code, raw.content, raw.headers["content-type"])
    completion: ChatCompletion = raw.parse()
    return completion


def stream_chat(client: OpenAI, **params: Any) -> list[ChatCompletionChunk]:
    """Stream a chat completion, validating every chunk against the streaming chunk schema."""
    with client.chat.completions.create(stream=True, **params) as stream:
        chunks = list(stream)
    validate_stream_chunks("/chat/completions", [chunk.to_dict() for chunk in chunks])
    return chunks


def streamed_text(chunks: list[ChatCompletionChunk], index: int = 0) -> str:
    return "".join(
        c.choices[0].delta.content or "" for c in chunks if c.choices and c.choices[0].index == index
    )


def reassemble_tool_calls(chunks: list[ChatCompletionChunk]) -> list[dict[str, str]]:
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                if delta.id:
                    call["id"] = delta.id
                if delta.function and delta.function.name:
                    call["name"] = delta.function.name
                if delta.function and delta.function.arguments:
                    call["arguments"] += delta.function.arguments
    return [calls[i] for i in sorted(calls)]


def wait_until(condition: Callable[[], bool], timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


# --------------------------------------------------------------------------------------------------
# Chat completions


def test_chat_completion_content_and_usage(client: OpenAI) -> None:
    messages = [{"role": "system", "content": "Be brief."}, *user("Hello there, fake")]
    completion = chat(client, model="my-gpt", messages=messages)

    assert completion.id.startswith("chatcmpl-")
    assert completion.object == "chat.completion"
    assert completion.model == "my-gpt"
    assert completion.system_fingerprint and completion.service_tier == "default"
    choice = completion.choices[0]
    assert choice.message.content == "Echo: Hello there, fake"
    assert choice.message.role == "assistant" and choice.message.refusal is None
    assert choice.finish_reason == "stop" and choice.logprobs is None
    usage = completion.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (5, 4, 9)
    assert usage.prompt_tokens_details is not None and usage.prompt_tokens_details.cached_tokens == 0
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 0


@pytest.mark.parametrize(
    ("options", "content", "finish_reason"),
    [
        ({}, "Echo: one two three four", "stop"),
        ({"max_tokens": 2}, "Echo: one", "length"),
        ({"max_completion_tokens": 3}, "Echo: one two", "length"),
        ({"stop": "three"}, "Echo: one two", "stop"),
        ({"stop": ["nope", "two"]}, "Echo: one", "stop"),
    ],
)
def test_chat_limits_and_stop(
    client: OpenAI, options: dict[str, Any], content: str, finish_reason: str
) -> None:
    completion = chat(client, model="gpt-4o", messages=user("one two three four"), **options)

    assert completion.choices[0].message.content == content
    assert completion.choices[0].finish_reason == finish_reason
    assert completion.usage is not None and completion.usage.completion_tokens == len(content.split())


def test_chat_n_choices(client: OpenAI) -> None:
    completion = chat(client, model="gpt-4o", messages=user("two choices please"), n=2)

    assert [c.index for c in completion.choices] == [0, 1]
    assert {c.message.content for c in completion.choices} == {"Echo: two choices please"}
    assert completion.usage is not None and completion.usage.completion_tokens == 2 * 4


def test_chat_counts_image_parts(client: OpenAI) -> None:
    parts = [
        {"type": "text", "text": "What is this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]
    completion = chat(client, model="gpt-4o", messages=[{"role": "user", "content": parts}])

    assert completion.choices[0].message.content == "Echo: What is this [images: 1]"
    assert completion.usage is not None and completion.usage.prompt_tokens == 3 + 85


def test_chat_json_object_response_format(client: OpenAI) -> None:
    completion = chat(
        client, model="gpt-4o", messages=user("Give me JSON"), response_format={"type": "json_object"}
    )

    assert json.loads(completion.choices[0].message.content or "") == {"echo": "Echo: Give me JSON"}


def test_chat_json_schema_response_format(client: OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string"}, "count": {"type": "integer"}},
        "required": ["answer", "count"],
        "additionalProperties": False,
    }
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "reply", "schema": schema, "strict": True},
    }
    completion = chat(client, model="gpt-4o", messages=user("Structured"), response_format=response_format)

    assert json.loads(completion.choices[0].message.content or "") == {
        "answer": "Echo: Structured",
        "count": 1,
    }


# --------------------------------------------------------------------------------------------------
# Tool calls


@pytest.mark.parametrize(
    ("tool_choice", "parallel", "prompt", "expected"),
    [
        ("auto", None, "Hello there", []),
        ("required", None, "Hello there", [("get_weather", "San Francisco")]),
        (
            {"type": "function", "function": {"name": "get_time"}},
            None,
            "weather in Oslo",
            [("get_time", "Oslo")],
        ),
        ("none", None, "What is the weather in Paris?", []),
        ("auto", None, "What is the weather in Paris?", [("get_weather", "Paris")]),
        ("auto", None, "weather in Paris and Tokyo", [("get_weather", "Paris"), ("get_weather", "Tokyo")]),
        ("auto", False, "weather in Paris and Tokyo", [("get_weather", "Paris")]),
    ],
)
def test_tool_choice(
    client: OpenAI, tool_choice: Any, parallel: bool | None, prompt: str, expected: list[tuple[str, str]]
) -> None:
    extra: dict[str, Any] = {} if parallel is None else {"parallel_tool_calls": parallel}
    completion = chat(
        client,
        model="gpt-4o",
        messages=user(prompt),
        tools=[WEATHER_TOOL, TIME_TOOL],
        tool_choice=tool_choice,
        **extra,
    )

    choice = completion.choices[0]
    calls = function_calls(choice.message)
    got = [(c.function.name, next(iter(json.loads(c.function.arguments).values()))) for c in calls]
    assert got == expected
    if expected:
        assert choice.finish_reason == "tool_calls" and choice.message.content is None
        assert all(c.id.startswith("call_") and c.type == "function" for c in calls)
    else:
        assert choice.finish_reason == "stop" and choice.message.content


def test_tool_call_round_trip(client: OpenAI) -> None:
    messages: list[Any] = list(user("What's the weather in Paris?"))
    first = chat(client, model="gpt-4o", messages=messages, tools=[WEATHER_TOOL])
    call = function_calls(first.choices[0].message)[0]
    assert json.loads(call.function.arguments) == {"location": "Paris", "unit": "celsius"}

    messages += [
        {"role": "assistant", "content": None, "tool_calls": [call.to_dict()]},
        {"role": "tool", "tool_call_id": call.id, "content": "18C and sunny"},
    ]
    second = chat(client, model="gpt-4o", messages=messages, tools=[WEATHER_TOOL])

    assert second.choices[0].finish_reason == "stop"
    assert "18C and sunny" in (second.choices[0].message.content or "")


def test_streamed_tool_calls_reassemble_exactly(client: OpenAI) -> None:
    params: dict[str, Any] = {
        "model": "gpt-4o",
        "messages": user("What's the weather in Paris and Tokyo?"),
        "tools": [WEATHER_TOOL],
    }
    expected = function_calls(chat(client, **params).choices[0].message)
    chunks = stream_chat(client, **params)

    calls = reassemble_tool_calls(chunks)
    assert [(c["name"], c["arguments"]) for c in calls] == [
        (e.function.name, e.function.arguments) for e in expected
    ]
    assert [json.loads(c["arguments"])["location"] for c in calls] == ["Paris", "Tokyo"]
    assert all(c["id"].startswith("call_") for c in calls)
    fragments = [d for c in chunks for d in c.choices[0].delta.tool_calls or [] if not d.id]
    assert len(fragments) > 2 * len(calls)
    assert all(d.type is None and d.function and d.function.name is None for d in fragments)
    opening = chunks[0].choices[0].delta
    assert opening.role == "assistant" and opening.content is None
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


# --------------------------------------------------------------------------------------------------
# Streaming


@pytest.mark.parametrize("include_usage", [False, True])
def test_chat_stream(client: OpenAI, include_usage: bool) -> None:
    params: dict[str, Any] = {"model": "gpt-4o", "messages": user("stream these words")}
    expected = chat(client, **params)
    options = {"stream_options": {"include_usage": True}} if include_usage else {}
    chunks = stream_chat(client, **params, **options)

    assert streamed_text(chunks) == expected.choices[0].message.content
    assert chunks[0].choices[0].delta.to_dict() == {"role": "assistant", "content": "", "refusal": None}
    assert len({c.id for c in chunks}) == 1
    content_chunks = chunks[:-1] if include_usage else chunks
    assert content_chunks[-1].choices[0].finish_reason == "stop"
    assert content_chunks[-1].choices[0].delta.to_dict() == {}
    if include_usage:
        assert chunks[-1].choices == []
        assert chunks[-1].usage == expected.usage
        assert all("usage" in c.to_dict() and c.usage is None for c in content_chunks)
    else:
        assert all("usage" not in c.to_dict() for c in chunks)


def test_chat_stream_wire_format(raw_http: httpx.Client) -> None:
    body = {"model": "gpt-4o", "messages": user("wire format"), "stream": True}
    response = raw_http.post("/chat/completions", json=body)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.content.endswith(b"}\n\ndata: [DONE]\n\n")
    events = response.content.split(b"\n\n")[:-1]
    assert all(event.startswith(b"data: ") for event in events)
    validate_response("POST", "/chat/completions", 200, response.content, response.headers["content-type"])
    chunks = parse_sse(response.content)
    assert [c["choices"][0]["delta"].get("content") for c in chunks] == [
        "",
        "Echo:",
        " wire",
        " format",
        None,
    ]
    assert all(c["object"] == "chat.completion.chunk" and "obfuscation" in c for c in chunks)


# --------------------------------------------------------------------------------------------------
# Legacy completions


@pytest.mark.parametrize(
    ("prompt", "texts", "prompt_tokens"),
    [
        ("Say this", ["Echo: Say this"], 2),
        (["a b", "c"], ["Echo: a b", "Echo: c"], 3),
        ([1, 2, 3], ["Echo: 1 2 3"], 3),
        ([[1, 2], [3]], ["Echo: 1 2", "Echo: 3"], 3),
    ],
)
def test_completions(client: OpenAI, prompt: Any, texts: list[str], prompt_tokens: int) -> None:
    raw = client.completions.with_raw_response.create(model="gpt-3.5-turbo-instruct", prompt=prompt)
    validate_response("POST", "/completions", raw.status_code, raw.content)
    completion = raw.parse()

    assert completion.object == "text_completion" and completion.id.startswith("cmpl-")
    assert [c.text for c in completion.choices] == texts
    assert [c.index for c in completion.choices] == list(range(len(texts)))
    assert completion.usage is not None and completion.usage.prompt_tokens == prompt_tokens
    assert completion.usage.completion_tokens == sum(len(t.split()) for t in texts)


def test_completions_default_max_tokens_is_16(client: OpenAI) -> None:
    completion = client.completions.create(model="gpt-3.5-turbo-instruct", prompt=" ".join(["w"] * 30))

    assert len(completion.choices[0].text.split()) == 16
    assert completion.choices[0].finish_reason == "length"


def test_completions_stream(fake: FakeOpenAI, client: OpenAI) -> None:
    # OpenAI sends "finish_reason": null on every legacy stream chunk but the last, which the SDK's
    # strict validation (like the OpenAPI document) rejects; so this stream is read leniently.
    params: dict[str, Any] = {"model": "gpt-3.5-turbo-instruct", "prompt": ["first prompt", "second"]}
    expected = client.completions.create(**params)
    with (
        OpenAI(base_url=fake.base_url, api_key=API_KEY, max_retries=0) as lenient,
        lenient.completions.create(stream=True, stream_options={"include_usage": True}, **params) as stream,
    ):
        chunks = list(stream)
    validate_stream_chunks("/completions", [c.to_dict() for c in chunks])

    for choice in expected.choices:
        mine = [c.choices[0] for c in chunks if c.choices and c.choices[0].index == choice.index]
        assert "".join(c.text for c in mine) == choice.text
        assert [c.finish_reason for c in mine][-1] == choice.finish_reason
        assert all(c.finish_reason is None for c in mine[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage == expected.usage


# --------------------------------------------------------------------------------------------------
# Embeddings


def norm(vector: list[float]) -> float:
    return math.sqrt(sum(x * x for x in vector))


@pytest.mark.parametrize(("dimensions", "length"), [(None, 8), (16, 16)])
def test_embeddings_float(client: OpenAI, dimensions: int | None, length: int) -> None:
    extra: dict[str, Any] = {} if dimensions is None else {"dimensions": dimensions}
    raw = client.embeddings.with_raw_response.create(
        model="text-embedding-3-small", input=["hello world", "bye"], encoding_format="float", **extra
    )
    validate_response("POST", "/embeddings", raw.status_code, raw.content)
    response = raw.parse()

    vectors = [d.embedding for d in response.data]
    assert [d.index for d in response.data] == [0, 1]
    assert all(len(v) == length and abs(norm(v) - 1.0) < 1e-5 for v in vectors)
    assert vectors[0] != vectors[1]
    assert response.usage.prompt_tokens == response.usage.total_tokens == 3
    again = client.embeddings.create(model="other", input="hello world", encoding_format="float", **extra)
    assert again.data[0].embedding == vectors[0]


def test_embeddings_base64_decoded_by_sdk(fake: FakeOpenAI) -> None:
    # The SDK asks for base64 when no format is given and decodes it; its strict validation runs
    # before that decoding (and rejects the string), so this client is not strict.
    with OpenAI(base_url=fake.base_url, api_key=API_KEY, max_retries=0) as lenient:
        fake.clear()
        decoded = lenient.embeddings.create(model="text-embedding-3-small", input=[[1, 2, 3], [4]])
        floats = lenient.embeddings.create(model="e", input=[[1, 2, 3], [4]], encoding_format="float")

    assert fake.requests[0].json["encoding_format"] == "base64"
    assert [d.embedding for d in decoded.data] == [d.embedding for d in floats.data]
    assert all(abs(norm(d.embedding) - 1.0) < 1e-5 for d in decoded.data)
    assert decoded.usage.prompt_tokens == 4


def test_embeddings_base64_is_little_endian_float32(raw_http: httpx.Client) -> None:
    body = {"model": "e", "input": "hello world", "encoding_format": "base64", "dimensions": 4}
    encoded = raw_http.post("/embeddings", json=body).json()["data"][0]["embedding"]
    floats = raw_http.post("/embeddings", json={**body, "encoding_format": "float"}).json()["data"][0][
        "embedding"
    ]

    assert isinstance(encoded, str)
    assert list(struct.unpack("<4f", base64.b64decode(encoded))) == floats


# --------------------------------------------------------------------------------------------------
# Models


def test_models_list_and_retrieve(client: OpenAI) -> None:
    listed = client.models.with_raw_response.list()
    validate_response("GET", "/models", listed.status_code, listed.content)
    retrieved = client.models.with_raw_response.retrieve("my-deployment")
    validate_response("GET", "/models/my-deployment", retrieved.status_code, retrieved.content)

    assert "gpt-4o-mini" in [m.id for m in listed.parse()]
    model = retrieved.parse()
    assert (model.id, model.object, model.owned_by) == ("my-deployment", "model", "system")


# --------------------------------------------------------------------------------------------------
# Errors


CALLS: dict[str, Callable[[OpenAI, str], object]] = {
    "chat": lambda c, model: c.chat.completions.create(model=model, messages=user("hi")),
    "chat-stream": lambda c, model: c.chat.completions.create(model=model, messages=user("hi"), stream=True),
    "completions": lambda c, model: c.completions.create(model=model, prompt="hi"),
    "embeddings": lambda c, model: c.embeddings.create(model=model, input="hi", encoding_format="float"),
    "models": lambda c, model: c.models.retrieve(model),
}
ERRORS: list[tuple[int, type[openai.APIStatusError], str, str | None]] = [
    (400, openai.BadRequestError, "invalid_request_error", None),
    (401, openai.AuthenticationError, "invalid_request_error", "invalid_api_key"),
    (403, openai.PermissionDeniedError, "request_forbidden", "unsupported_country_region_territory"),
    (404, openai.NotFoundError, "invalid_request_error", "model_not_found"),
    (409, openai.ConflictError, "invalid_request_error", "conflict"),
    (422, openai.UnprocessableEntityError, "invalid_request_error", "unprocessable_entity"),
    (429, openai.RateLimitError, "requests", "rate_limit_exceeded"),
    (500, openai.InternalServerError, "server_error", None),
    (503, openai.InternalServerError, "server_error", None),
]


@pytest.mark.parametrize("call", list(CALLS))
@pytest.mark.parametrize(("status", "error_class", "error_type", "code"), ERRORS)
def test_error_scenarios(
    client: OpenAI,
    call: str,
    status: int,
    error_class: type[openai.APIStatusError],
    error_type: str,
    code: str | None,
) -> None:
    with pytest.raises(error_class) as caught:
        CALLS[call](client, f"error-{status}")

    error = caught.value
    assert error.status_code == status
    assert isinstance(error.body, dict)
    assert (error.body["type"], error.body["code"], error.body["param"]) == (error_type, code, None)
    validate_error(status, error.response.content)
    if status == 429:
        assert error.response.headers["retry-after"] == "7"
        assert error.response.headers["x-ratelimit-remaining-requests"] == "0"


def test_wrong_api_key(fake: FakeOpenAI) -> None:
    with (
        OpenAI(base_url=fake.base_url, api_key="sk-wrong", max_retries=0) as wrong,
        pytest.raises(openai.AuthenticationError) as caught,
    ):
        wrong.models.list()

    assert caught.value.code == "invalid_api_key"
    assert "sk-wrong" not in caught.value.message
    validate_error(401, caught.value.response.content)


def test_missing_api_key(fake: FakeOpenAI) -> None:
    response = httpx.post(f"{fake.base_url}/chat/completions", json={"model": "m", "messages": user("hi")})

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    validate_error(401, response.content)


@pytest.mark.parametrize(
    ("method", "path", "content", "status", "message"),
    [
        ("POST", "/chat/completions", b"{not json", 400, "could not parse the JSON body"),
        ("POST", "/chat/completions", b'{"messages": []}', 400, "must provide a model"),
        ("POST", "/chat/completions", b'{"model": "m", "messages": []}', 400, "empty array"),
        ("GET", "/nowhere", b"", 404, "Invalid URL (GET /v1/nowhere)"),
        ("GET", "/chat/completions", b"", 404, "Invalid URL (GET /v1/chat/completions)"),
    ],
)
def test_bad_requests(
    raw_http: httpx.Client, method: str, path: str, content: bytes, status: int, message: str
) -> None:
    headers = {"Content-Type": "application/json"}
    response = raw_http.request(method, path, content=content, headers=headers)

    assert response.status_code == status
    assert message in response.json()["error"]["message"]
    validate_error(status, response.content)


# --------------------------------------------------------------------------------------------------
# Scenarios


def test_garbage_body(client: OpenAI, raw_http: httpx.Client) -> None:
    raw = raw_http.post("/chat/completions", json={"model": "garbage", "messages": user("hi")})
    assert raw.status_code == 200
    with pytest.raises(ValueError):
        json.loads(raw.content)
    with pytest.raises(ValueError):
        client.chat.completions.create(model="garbage", messages=user("hi"))
    with (
        pytest.raises(ValueError),
        client.chat.completions.create(model="garbage", messages=user("hi"), stream=True) as stream,
    ):
        list(stream)


def test_midstream_drop(client: OpenAI) -> None:
    received: list[ChatCompletionChunk] = []
    with (
        pytest.raises(openai.APIConnectionError),
        client.chat.completions.create(
            model="midstream-drop", messages=user("one two three four five"), stream=True
        ) as stream,
    ):
        received.extend(stream)

    assert len(received) == 3
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="midstream-drop", messages=user("hi"))


def test_stall_times_out(client: OpenAI) -> None:
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        client.with_options(timeout=0.3).chat.completions.create(model="stall", messages=user("hi"))

    assert time.monotonic() - started < 2


def test_slow_stream_cancel_is_recorded(fake: FakeOpenAI, client: OpenAI) -> None:
    fake.clear()
    with client.chat.completions.create(model="slow-stream", messages=user("hi"), stream=True) as stream:
        request_id = stream.response.headers["x-request-id"]
        received = [chunk for _, chunk in zip(range(3), stream, strict=False)]

    assert len(received) == 3
    assert wait_until(lambda: fake.cancelled_streams == ["slow-stream"])
    assert fake.cancelled[0].request_id == request_id


# --------------------------------------------------------------------------------------------------
# Recording and HTTP behaviour


def test_records_the_request_the_sdk_sent(fake: FakeOpenAI, client: OpenAI) -> None:
    fake.clear()
    client.chat.completions.create(model="gpt-4o", messages=user("record me"), temperature=0.5)
    client.models.list(extra_query={"limit": "2"})

    chat_request, models_request = fake.requests
    assert (chat_request.method, chat_request.path, chat_request.query) == (
        "POST",
        "/v1/chat/completions",
        "",
    )
    assert chat_request.headers["authorization"] == f"Bearer {API_KEY}"
    assert chat_request.headers["content-type"] == "application/json"
    assert chat_request.json == {"model": "gpt-4o", "messages": user("record me"), "temperature": 0.5}
    assert json.loads(chat_request.body) == chat_request.json
    assert (models_request.method, models_request.path, models_request.query) == (
        "GET",
        "/v1/models",
        "limit=2",
    )
    assert models_request.json is None and models_request.body == b""


def test_keep_alive_connection_is_reused(fake: FakeOpenAI) -> None:
    connection = http.client.HTTPConnection(fake.host, fake.port, timeout=5)
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    body = json.dumps({"model": "m", "messages": user("hi")})
    try:
        statuses = []
        sockets = []
        for _ in range(3):
            connection.request("POST", "/v1/chat/completions", body=body, headers=headers)
            response = connection.getresponse()
            statuses.append(response.status)
            json.loads(response.read())
            sockets.append(connection.sock)
    finally:
        connection.close()

    assert statuses == [200, 200, 200]
    assert sockets[0] is not None and all(s is sockets[0] for s in sockets)


# --------------------------------------------------------------------------------------------------
# openapi_check itself


@pytest.fixture(scope="module")
def valid_chat_body(raw_http: httpx.Client) -> dict[str, Any]:
    body: dict[str, Any] = raw_http.post(
        "/chat/completions", json={"model": "m", "messages": user("hi")}
    ).json()
    return body


def test_openapi_check_accepts_a_valid_body(valid_chat_body: dict[str, Any]) -> None:
    validate_response("POST", "/v1/chat/completions", 200, json.dumps(valid_chat_body).encode())


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda b: b.pop("id"), "'id' is a required property"),
        (lambda b: b["choices"][0]["message"].pop("refusal"), "'refusal' is a required property"),
        (lambda b: b.update(created="yesterday"), "is not of type 'integer'"),
        (lambda b: b["usage"].update(prompt_tokens="3"), "is not of type 'integer'"),
        (lambda b: b["choices"][0].update(finish_reason="done"), "'done' is not one of"),
        (lambda b: b["choices"][0]["message"].update(role="user"), "'user' is not one of"),
    ],
)
def test_openapi_check_rejects_broken_bodies(
    valid_chat_body: dict[str, Any], mutate: Callable[[dict[str, Any]], object], reason: str
) -> None:
    broken = json.loads(json.dumps(valid_chat_body))
    mutate(broken)

    with pytest.raises(AssertionError, match=reason):
        validate_response("POST", "/chat/completions", 200, json.dumps(broken).encode())


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (400, b'{"error": {"message": "m", "type": "t", "code": null}}', "'param' is a required property"),
        (
            400,
            b'{"error": {"message": "m", "type": "t", "param": null, "code": 7}}',
            "is not valid under any",
        ),
        (400, b'{"message": "m"}', "'error' is a required property"),
        (500, b"<html>", "not JSON"),
        (200, b'{"error": {"message": "m", "type": "t", "param": null, "code": null}}', "4xx/5xx"),
    ],
)
def test_openapi_check_rejects_broken_errors(status: int, body: bytes, reason: str) -> None:
    with pytest.raises(AssertionError, match=reason):
        validate_error(status, body)


def test_openapi_check_rejects_broken_stream_chunks(valid_chat_body: dict[str, Any]) -> None:
    chunk: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": "x"}, "logprobs": None, "finish_reason": None}],
    }
    validate_stream_chunks("/chat/completions", [chunk])

    with pytest.raises(AssertionError, match="'object' is a required property"):
        validate_stream_chunks("/chat/completions", [{k: v for k, v in chunk.items() if k != "object"}])
    with pytest.raises(AssertionError, match="'robot' is not one of"):
        validate_stream_chunks(
            "/chat/completions", [{**chunk, "choices": [{**chunk["choices"][0], "delta": {"role": "robot"}}]}]
        )
    with pytest.raises(AssertionError, match="no chunks"):
        validate_stream_chunks("/chat/completions", [])
    with pytest.raises(AssertionError, match="does not match CreateChatCompletionStreamResponse"):
        validate_stream_chunks("/chat/completions", [valid_chat_body])
    with pytest.raises(AssertionError, match=r"\[DONE\]"):
        parse_sse(b'data: {"a": 1}\n\n')
