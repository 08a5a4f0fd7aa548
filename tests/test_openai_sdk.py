"""The official OpenAI Python SDK (strict response validation) → real Envoy → worker → fake
OpenAI upstream (or the demo provider). Raw bodies are validated against OpenAI's OpenAPI document."""

from __future__ import annotations

import base64
import json
import math
import struct
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import UPSTREAM_KEY
from tests.fakes.openai_upstream import FakeOpenAI
from tests.gateway_process import GatewayProcess
from tests.openapi_check import parse_sse, validate_error, validate_response

CHAT = "gpt-4o-mini"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture(scope="module")
def client(gateway: GatewayProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=gateway.base_url,
        api_key=gateway.admin_key,
        max_retries=0,
        timeout=30,
        _strict_response_validation=True,
    ) as sdk:
        yield sdk


@pytest.fixture(scope="module")
def http(gateway: GatewayProcess) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {gateway.admin_key}"}
    with httpx.Client(base_url=gateway.base_url, headers=headers, timeout=30) as raw:
        yield raw


def post_valid(http: httpx.Client, path: str, body: dict[str, Any]) -> httpx.Response:
    """POST through the gateway and validate the raw response against OpenAI's OpenAPI document."""
    response = http.post(path, json=body)
    validate_response(
        "post", path, response.status_code, response.content, response.headers.get("content-type", "")
    )
    assert UPSTREAM_KEY not in response.text
    return response


@pytest.mark.parametrize("model", ["demo/chat", CHAT])
def test_chat(client: openai.OpenAI, http: httpx.Client, model: str) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello there gateway"},
    ]
    result = client.chat.completions.create(model=model, messages=messages)  # type: ignore[arg-type]
    assert result.object == "chat.completion"
    assert "hello there gateway" in (result.choices[0].message.content or "")
    assert result.choices[0].finish_reason == "stop"
    assert result.usage is not None
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens > 0
    post_valid(http, "/chat/completions", {"model": model, "messages": messages})


@pytest.mark.parametrize("model", ["demo/chat", CHAT])
@pytest.mark.parametrize("include_usage", [False, True])
def test_streaming_chat(client: openai.OpenAI, http: httpx.Client, model: str, include_usage: bool) -> None:
    messages = [{"role": "user", "content": "stream these words please"}]
    options = {"include_usage": True} if include_usage else None
    stream = client.chat.completions.create(
        model=model,
        messages=messages,
        stream=True,  # type: ignore[arg-type]
        **({"stream_options": options} if options else {}),
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    unary = client.chat.completions.create(model=model, messages=messages)  # type: ignore[arg-type]
    assert text == unary.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    usages = [c.usage for c in chunks if c.usage is not None]
    if include_usage:
        assert len(usages) == 1 and chunks[-1].usage is not None and chunks[-1].choices == []
        assert chunks[-1].usage.completion_tokens == unary.usage.completion_tokens  # type: ignore[union-attr]
    else:
        assert usages == []
    body = {
        "model": model,
        "messages": messages,
        "stream": True,
        **({"stream_options": options} if options else {}),
    }
    response = post_valid(http, "/chat/completions", body)
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text.endswith("data: [DONE]\n\n")


def test_tool_call_round_trip(client: openai.OpenAI) -> None:
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.chat.completions.create(model=CHAT, messages=messages, tools=[WEATHER_TOOL])  # type: ignore[list-item]
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert first.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments)["city"] == "Paris"  # type: ignore[union-attr]
    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "18 degrees and sunny"},
    ]
    second = client.chat.completions.create(model=CHAT, messages=messages, tools=[WEATHER_TOOL])  # type: ignore[list-item]
    assert "18 degrees and sunny" in (second.choices[0].message.content or "")


def test_streamed_parallel_tool_calls_reassemble_exactly(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "What is the weather in Paris and Tokyo?"}]
    unary = client.chat.completions.create(model=CHAT, messages=messages, tools=[WEATHER_TOOL])  # type: ignore[arg-type,list-item]
    stream = client.chat.completions.create(model=CHAT, messages=messages, tools=[WEATHER_TOOL], stream=True)  # type: ignore[arg-type,list-item]
    calls: dict[int, dict[str, str]] = {}
    for chunk in stream:
        for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            entry = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
            entry["id"] += delta.id or ""
            entry["name"] += (delta.function.name or "") if delta.function else ""
            entry["arguments"] += (delta.function.arguments or "") if delta.function else ""
    expected = unary.choices[0].message.tool_calls or []
    assert len(calls) == len(expected) == 2
    for index, call in enumerate(expected):
        assert calls[index]["name"] == call.function.name  # type: ignore[union-attr]
        assert json.loads(calls[index]["arguments"]) == json.loads(call.function.arguments)  # type: ignore[union-attr]


def test_json_mode(client: openai.OpenAI) -> None:
    result = client.chat.completions.create(
        model=CHAT,
        messages=[{"role": "user", "content": "give json"}],
        response_format={"type": "json_object"},
    )
    assert isinstance(json.loads(result.choices[0].message.content or ""), dict)


@pytest.mark.parametrize("model", ["demo/chat", "gpt-3.5-turbo-instruct"])
def test_completions(client: openai.OpenAI, http: httpx.Client, model: str) -> None:
    result = client.completions.create(model=model, prompt="Say this is a test", max_tokens=50)
    assert result.object == "text_completion" and result.choices[0].text
    # OpenAI sends `"finish_reason": null` on every legacy-completion chunk but the last, which the
    # SDK's strict mode rejects (its Literal has no None); the raw stream is validated below instead.
    lenient = client.with_options()
    lenient._strict_response_validation = False
    streamed = "".join(
        c.choices[0].text
        for c in lenient.completions.create(
            model=model, prompt="Say this is a test", max_tokens=50, stream=True
        )
        if c.choices
    )
    assert streamed.strip() == result.choices[0].text.strip()
    post_valid(http, "/completions", {"model": model, "prompt": "Say this is a test"})
    post_valid(
        http,
        "/completions",
        {"model": model, "prompt": "Say this", "stream": True, "stream_options": {"include_usage": True}},
    )


@pytest.mark.parametrize("model", ["demo/embed", "text-embedding-3-small"])
def test_embeddings_float_and_base64(client: openai.OpenAI, http: httpx.Client, model: str) -> None:
    floats = client.embeddings.create(model=model, input=["first text", "second"], encoding_format="float")
    # Without encoding_format the SDK asks for base64 and decodes it in a post-parser, which its
    # strict mode runs only after validating the still-encoded strings as float lists.
    lenient = client.with_options()
    lenient._strict_response_validation = False
    packed = lenient.embeddings.create(model=model, input=["first text", "second"])
    assert [d.index for d in floats.data] == [0, 1]
    for a, b in zip(floats.data, packed.data, strict=True):
        assert math.isclose(sum(x * x for x in a.embedding), 1.0, rel_tol=1e-4)
        assert a.embedding == pytest.approx(b.embedding, rel=1e-6)
    as_floats = post_valid(http, "/embeddings", {"model": model, "input": "x"}).json()
    # OpenAI's OpenAPI document types `embedding` as an array only, so the base64 form is
    # checked by decoding it to the same vector instead.
    raw = http.post("/embeddings", json={"model": model, "input": "x", "encoding_format": "base64"}).json()
    packed_bytes = base64.b64decode(raw["data"][0]["embedding"])
    unpacked = struct.unpack(f"<{len(packed_bytes) // 4}f", packed_bytes)
    assert list(unpacked) == pytest.approx(as_floats["data"][0]["embedding"], rel=1e-6)
    post_valid(http, "/embeddings", {"model": model, "input": [[1, 2, 3]], "dimensions": 4})


def test_models(client: openai.OpenAI, http: httpx.Client) -> None:
    ids = [m.id for m in client.models.list()]
    assert {"demo/chat", CHAT, "scenario/error-429"} <= set(ids)
    assert client.models.retrieve("demo/chat").id == "demo/chat"
    response = http.get("/models")
    validate_response("get", "/models", response.status_code, response.content)
    assert response.json()["data"][0]["providers"]
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no/such-model")


def test_gateway_sends_what_the_sdk_sends(fake_openai: FakeOpenAI, gateway: GatewayProcess) -> None:
    """Same call through the gateway and straight to the fake: same path, auth and JSON body."""
    call: dict[str, Any] = {
        "model": CHAT,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": ["END"],
        "seed": 7,
        "logit_bias": {"50256": -100},
        "max_completion_tokens": 20,
        "user": "u-1",
        "metadata": {"team": "a"},
        "tools": [WEATHER_TOOL],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "reasoning_effort": "low",
    }
    recorded = []
    for base_url, key in ((fake_openai.base_url, UPSTREAM_KEY), (gateway.base_url, gateway.admin_key)):
        fake_openai.clear()
        with openai.OpenAI(base_url=base_url, api_key=key, max_retries=0) as sdk:
            sdk.chat.completions.create(**call)
        (request,) = [r for r in fake_openai.requests if r.path.endswith("/chat/completions")]
        recorded.append(request)
    direct, via_gateway = recorded
    assert via_gateway.path == direct.path and via_gateway.query == direct.query
    assert via_gateway.headers["authorization"] == direct.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert via_gateway.headers["content-type"] == "application/json"
    assert via_gateway.json == direct.json


def test_stream_request_matches_sdk(fake_openai: FakeOpenAI, gateway: GatewayProcess) -> None:
    call = {
        "model": CHAT,
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    bodies = []
    for base_url, key in ((fake_openai.base_url, UPSTREAM_KEY), (gateway.base_url, gateway.admin_key)):
        fake_openai.clear()
        with openai.OpenAI(base_url=base_url, api_key=key, max_retries=0) as sdk:
            list(sdk.chat.completions.create(**call))  # type: ignore[call-overload]
        bodies.append(fake_openai.requests[-1].json)
    assert bodies[0] == bodies[1]


ERROR_TABLE = [
    ("scenario/error-400", 400, openai.BadRequestError),
    ("scenario/error-401", 401, openai.AuthenticationError),
    ("scenario/error-403", 403, openai.PermissionDeniedError),
    ("scenario/error-404", 404, openai.NotFoundError),
    ("scenario/error-409", 409, openai.ConflictError),
    ("scenario/error-422", 422, openai.UnprocessableEntityError),
    ("scenario/error-429", 429, openai.RateLimitError),
    ("scenario/error-500", 502, openai.InternalServerError),
    ("scenario/error-503", 503, openai.InternalServerError),
    ("scenario/down", 502, openai.InternalServerError),
    ("scenario/garbage", 502, openai.InternalServerError),
    ("no/such-model", 404, openai.NotFoundError),
]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("model", "status", "error_class"), ERROR_TABLE)
def test_error_classes(
    client: openai.OpenAI,
    http: httpx.Client,
    model: str,
    status: int,
    error_class: type[openai.APIStatusError],
    stream: bool,
) -> None:
    messages = [{"role": "user", "content": "hi"}]
    with pytest.raises(error_class) as caught:
        result = client.chat.completions.create(model=model, messages=messages, stream=stream)  # type: ignore[call-overload]
        list(result) if stream else None
    assert caught.value.status_code == status
    assert UPSTREAM_KEY not in str(caught.value.body) and UPSTREAM_KEY not in caught.value.message
    response = http.post("/chat/completions", json={"model": model, "messages": messages, "stream": stream})
    assert response.status_code == status
    validate_error(response.status_code, response.content)
    if status == 429:
        assert response.headers["retry-after"] == "7"


def test_wrong_and_missing_gateway_key(gateway: GatewayProcess) -> None:
    with (
        openai.OpenAI(base_url=gateway.base_url, api_key="my-wrong", max_retries=0) as sdk,
        pytest.raises(openai.AuthenticationError) as caught,
    ):
        sdk.models.list()
    assert caught.value.status_code == 401
    response = httpx.post(f"{gateway.base_url}/chat/completions", json={"model": CHAT, "messages": []})
    assert response.status_code == 401
    validate_error(401, response.content)


def test_request_too_large_is_413(client: openai.OpenAI) -> None:
    huge = "data:image/png;base64," + "A" * (40 << 20)
    message = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": huge}}]}
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="demo/chat", messages=[message])  # type: ignore[list-item]
    assert caught.value.status_code == 413


def test_midstream_failure_ends_with_error_event(client: openai.OpenAI, http: httpx.Client) -> None:
    stream = client.chat.completions.create(
        model="scenario/midstream-drop",
        messages=[{"role": "user", "content": "a b c d e f g h"}],
        stream=True,
    )
    seen = []
    with pytest.raises(openai.APIError):
        for chunk in stream:
            seen.append(chunk)
    assert seen, "the client saw the chunks before the failure"
    response = http.post(
        "/chat/completions",
        json={
            "model": "scenario/midstream-drop",
            "stream": True,
            "messages": [{"role": "user", "content": "a b c d"}],
        },
    )
    assert response.status_code == 200 and "data: [DONE]" not in response.text
    last = [line for line in response.text.split("\n\n") if line.strip()][-1]
    assert json.loads(last.removeprefix("data: "))["error"]["code"] == "upstream_disconnected"


def test_client_disconnect_cancels_upstream(fake_openai: FakeOpenAI, gateway: GatewayProcess) -> None:
    before = len(fake_openai.cancelled_streams)
    headers = {"Authorization": f"Bearer {gateway.admin_key}"}
    body = {"model": "scenario/slow-stream", "stream": True, "messages": [{"role": "user", "content": "go"}]}
    with httpx.stream(
        "POST", f"{gateway.base_url}/chat/completions", json=body, headers=headers, timeout=10
    ) as response:
        events = response.iter_lines()
        got = [line for _, line in zip(range(6), events, strict=False)]
    assert any(line.startswith("data: {") for line in got)
    deadline = time.monotonic() + 10
    while len(fake_openai.cancelled_streams) == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(fake_openai.cancelled_streams) > before, "the upstream stream was not cancelled"


def test_stream_events_are_valid_sse(http: httpx.Client) -> None:
    response = http.post(
        "/chat/completions",
        json={"model": CHAT, "stream": True, "messages": [{"role": "user", "content": "one two"}]},
    )
    chunks = parse_sse(response.content)
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
