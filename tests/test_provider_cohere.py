"""The Cohere adapter: pure conversions, the adapter against the fake, the fake against Cohere's SDK,
and the adapter's outbound requests against what the SDK sends for the same call."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import cohere
import cohere.errors
import httpx
import msgspec
import orjson
import pytest
import yaml
from modelyard.errors import ClientError, GatewayError, UpstreamError
from modelyard.providers.base import Capability
from modelyard.providers.cohere import COHERE, CohereProvider, build_embed, build_generate
from modelyard.providers.cohere_convert import (
    ChatStreamTranslator,
    CohereStreamEvent,
    build_chat,
    parse_error,
)
from modelyard.schema.chat import ChatChunk, ChatRequest
from modelyard.schema.completions import CompletionRequest
from modelyard.schema.decode import decode_request
from modelyard.schema.embeddings import EmbeddingRequest
from modelyard.transport import HttpTransport, UpstreamResponse
from multidict import CIMultiDict
from openapi_schema_validator import OAS31Validator

from tests.fakes.cohere_upstream import PREAMBLE_TOKENS, FakeCohere

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:cohere")
SPEC = Path(__file__).resolve().parents[1].parent / "shared" / "specs" / "cohere-openapi.yaml"
NO_RETRIES: Any = {"max_retries": 0}
KEY = "co-test-" + "Qw7" * 10
T = TypeVar("T")
WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
IMAGE = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 8).decode()


def chat_request(**fields: Any) -> ChatRequest:
    body = {"model": "alias/chat", "messages": [{"role": "user", "content": "hi"}], **fields}
    return decode_request(json.dumps(body).encode(), ChatRequest)


def user(text: str) -> Any:
    return {"role": "user", "content": text}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeCohere]:
    server = FakeCohere(api_key=KEY)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def run(fake: FakeCohere, call: Callable[[CohereProvider], Awaitable[T]]) -> T:
    async def main() -> T:
        transport = HttpTransport()
        provider = COHERE.create("co", {"apikey": KEY, "base_url": fake.base_url}, transport)
        assert isinstance(provider, CohereProvider)
        try:
            return await call(provider)
        finally:
            await transport.close()

    return asyncio.run(main())


async def collect(stream: AsyncIterator[T]) -> list[T]:
    return [item async for item in stream]


# --------------------------------------------------------------------------------------------------
# Pure conversions


def test_messages_roles_parts_and_tools_convert() -> None:
    request = chat_request(
        messages=[
            {"role": "system", "content": "Be terse."},
            {"role": "developer", "content": [{"type": "text", "text": "English only."}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this"},
                    {"type": "image_url", "image_url": {"url": IMAGE, "detail": "low"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                ],
            },
            {
                "role": "assistant",
                "content": "Let me look.",
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "18 degrees"},
            {"role": "assistant", "content": "It is 18."},
        ],
        tools=[WEATHER],
        tool_choice="required",
    )
    payload = build_chat("co", request, "command-a", stream=False)
    assert payload["messages"] == [
        {"role": "system", "content": "Be terse."},
        {"role": "system", "content": [{"type": "text", "text": "English only."}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this"},
                {"type": "image_url", "image_url": {"url": IMAGE, "detail": "low"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
            ],
        },
        {
            "role": "assistant",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
            ],
            "tool_plan": "Let me look.",
        },
        {"role": "tool", "tool_call_id": "c1", "content": "18 degrees"},
        {"role": "assistant", "content": "It is 18."},
    ]
    assert payload["tools"] == [WEATHER]
    assert payload["tool_choice"] == "REQUIRED"
    assert payload["model"] == "command-a" and payload["stream"] is False


def test_sampling_options_and_extras() -> None:
    request = chat_request(
        temperature=0.3,
        top_p=0.9,
        top_k=40,
        max_tokens=50,
        max_completion_tokens=60,
        seed=7,
        stop="END",
        frequency_penalty=0.1,
        presence_penalty=0.2,
        user="u-1",
        parallel_tool_calls=False,
        logit_bias={"1": 1.0},
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "x", "schema": {"type": "object", "properties": {}}},
        },
        safety_mode="STRICT",
        priority=3,
        not_a_cohere_field=True,
        model_override="nope",
    )
    payload = build_chat("co", request, "command-a", stream=True)
    assert {k: v for k, v in payload.items() if k != "messages"} == {
        "model": "command-a",
        "stream": True,
        "temperature": 0.3,
        "p": 0.9,
        "k": 40,
        "max_tokens": 60,
        "seed": 7,
        "stop_sequences": ["END"],
        "frequency_penalty": 0.1,
        "presence_penalty": 0.2,
        "response_format": {"type": "json_object", "json_schema": {"type": "object", "properties": {}}},
        "safety_mode": "STRICT",
        "priority": 3,
    }


def test_tool_choice_variants() -> None:
    other = {**WEATHER, "function": {**WEATHER["function"], "name": "other", "strict": True}}
    named = build_chat(
        "co",
        chat_request(tools=[WEATHER, other], tool_choice={"type": "function", "function": {"name": "other"}}),
        "m",
        stream=False,
    )
    assert [t["function"]["name"] for t in named["tools"]] == ["other"]
    assert named["tool_choice"] == "REQUIRED" and named["strict_tools"] is True
    assert build_chat("co", chat_request(tools=[WEATHER], tool_choice="none"), "m", stream=False)[
        "tool_choice"
    ] == ("NONE")
    auto = build_chat("co", chat_request(tools=[WEATHER], tool_choice="auto"), "m", stream=False)
    assert "tool_choice" not in auto and "strict_tools" not in auto
    bare = {"type": "function", "function": {"name": "ping"}}
    assert build_chat("co", chat_request(tools=[bare]), "m", stream=False)["tools"][0]["function"] == {
        "name": "ping",
        "parameters": {"type": "object", "properties": {}},
    }


@pytest.mark.parametrize(
    "fields",
    [
        {"n": 2},
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}],
                }
            ]
        },
        {"messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": IMAGE}}]}]},
    ],
)
def test_unsupported_inputs_are_clear_400s(fields: dict[str, Any]) -> None:
    with pytest.raises(ClientError) as caught:
        build_chat("co", chat_request(**fields), "m", stream=False)
    assert caught.value.status == 400 and "'co'" in caught.value.message and "cohere" in caught.value.message


def test_embed_and_generate_payloads() -> None:
    embed = decode_request(
        json.dumps(
            {"model": "a", "input": ["x", "y"], "dimensions": 256, "input_type": "search_query"}
        ).encode(),
        EmbeddingRequest,
    )
    assert build_embed("co", embed, "embed-v4.0") == {
        "model": "embed-v4.0",
        "texts": ["x", "y"],
        "embedding_types": ["float"],
        "output_dimension": 256,
        "input_type": "search_query",
    }
    assert build_embed("co", EmbeddingRequest(model="a", input="x"), "e")["input_type"] == "search_document"
    with pytest.raises(ClientError):
        build_embed("co", EmbeddingRequest(model="a", input=[1, 2, 3]), "e")
    generate = CompletionRequest(
        model="a", prompt=["say"], max_tokens=5, top_p=0.5, stop=["."], n=2, echo=True
    )
    assert build_generate("co", generate, "command", stream=False) == {
        "model": "command",
        "prompt": "say",
        "stream": False,
        "max_tokens": 5,
        "p": 0.5,
        "stop_sequences": ["."],
        "num_generations": 2,
    }
    with pytest.raises(ClientError):
        build_generate("co", CompletionRequest(model="a", prompt=["a", "b"]), "m", stream=False)


def _response(status: int, body: Any, headers: dict[str, str] | None = None) -> UpstreamResponse:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return UpstreamResponse(status, CIMultiDict(headers or {}), raw)


@pytest.mark.parametrize(
    ("upstream", "status", "code"),
    [
        (400, 400, None),
        (401, 401, "provider_authentication_failed"),
        (403, 403, "provider_permission_denied"),
        (404, 404, None),
        (413, 413, None),
        (422, 422, None),
        (429, 429, "rate_limit_exceeded"),
        (498, 400, "content_filter"),
        (500, 502, None),
        (503, 503, None),
        (529, 503, None),
    ],
)
def test_error_mapping(upstream: int, status: int, code: str | None) -> None:
    body = {"id": "x", "message": f"bad thing with key {KEY}"}
    error = parse_error("co", _response(upstream, body, {"retry-after": "7"}), KEY)
    assert (error.status, error.code, error.upstream_status) == (status, code, upstream)
    assert KEY not in error.message and error.retry_after == 7.0
    assert error.retryable == (status in (429,) or status >= 500)


def test_error_without_json_body() -> None:
    error = parse_error("co", _response(502, b"<html>bad gateway"), KEY)
    assert error.status == 502 and "HTTP 502" in error.message


def _events(*events: dict[str, Any]) -> list[ChatChunk]:
    translator = ChatStreamTranslator("co", "m", include_usage=True)
    chunks: list[ChatChunk] = []
    for event in events:
        chunks += translator.translate(msgspec.convert(event, CohereStreamEvent))
    return chunks


def test_stream_translation_of_tool_calls_and_usage() -> None:
    start = {"id": "t1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
    chunks = _events(
        {"type": "message-start", "id": "abc", "delta": {"message": {"role": "assistant", "content": []}}},
        {"type": "tool-plan-delta", "delta": {"message": {"tool_plan": "Plan."}}},
        {"type": "tool-call-start", "index": 3, "delta": {"message": {"tool_calls": start}}},
        {
            "type": "tool-call-delta",
            "index": 3,
            "delta": {"message": {"tool_calls": {"function": {"arguments": "{}"}}}},
        },
        {"type": "tool-call-end", "index": 3},
        {
            "type": "message-end",
            "delta": {
                "finish_reason": "TOOL_CALL",
                "usage": {
                    "billed_units": {"input_tokens": 1, "output_tokens": 2},
                    "tokens": {"input_tokens": 9, "output_tokens": 2},
                    "cached_tokens": 4,
                },
            },
        },
    )
    wire = [msgspec.to_builtins(c) for c in chunks]
    assert wire[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""} and wire[0]["id"] == "abc"
    assert wire[1]["choices"][0]["delta"] == {"content": "Plan."}
    assert wire[2]["choices"][0]["delta"]["tool_calls"] == [
        {"index": 0, "id": "t1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
    ]
    assert wire[3]["choices"][0]["delta"]["tool_calls"] == [{"index": 0, "function": {"arguments": "{}"}}]
    assert wire[4]["choices"][0]["finish_reason"] == "tool_calls"
    assert all(w["usage"] is None for w in wire[:-1])
    assert wire[5]["choices"] == [] and wire[5]["usage"] == {
        "prompt_tokens": 9,
        "completion_tokens": 2,
        "total_tokens": 11,
        "prompt_tokens_details": {"cached_tokens": 4},
    }


def test_stream_error_finish_raises() -> None:
    with pytest.raises(UpstreamError) as caught:
        _events({"type": "message-end", "delta": {"finish_reason": "ERROR", "error": "boom"}})
    assert caught.value.status == 502 and caught.value.code == "upstream_generation_error"


# --------------------------------------------------------------------------------------------------
# The adapter against the fake


def test_capabilities_are_all() -> None:
    assert CohereProvider.capabilities == frozenset(Capability)


def test_chat_unary_uses_cohere_token_counts(fake: FakeCohere) -> None:
    result = run(fake, lambda p: p.chat(chat_request(messages=[user("hello cohere world")]), "command-a"))
    assert result.choices[0].message.content == "Echo: hello cohere world"
    assert result.choices[0].finish_reason == "stop"
    assert result.usage and result.usage.prompt_tokens == 3 + PREAMBLE_TOKENS
    assert result.usage.completion_tokens == 4


def test_chat_stop_sequence_and_length(fake: FakeCohere) -> None:
    stopped = run(
        fake, lambda p: p.chat(chat_request(messages=[user("alpha beta gamma delta")], stop=["gamma"]), "m")
    )
    assert (
        stopped.choices[0].message.content == "Echo: alpha beta"
        and stopped.choices[0].finish_reason == "stop"
    )
    cut = run(fake, lambda p: p.chat(chat_request(messages=[user("a b c d")], max_tokens=2), "m"))
    assert cut.choices[0].finish_reason == "length"


def test_chat_tool_calls_and_round_trip(fake: FakeCohere) -> None:
    first = run(
        fake,
        lambda p: p.chat(chat_request(messages=[user("weather in Paris and Tokyo?")], tools=[WEATHER]), "m"),
    )
    message = first.choices[0].message
    calls = message.tool_calls if isinstance(message.tool_calls, list) else []
    assert first.choices[0].finish_reason == "tool_calls"
    assert [json.loads(c.function.arguments) for c in calls] == [{"city": "Paris"}, {"city": "Tokyo"}]
    history = [
        user("weather in Paris and Tokyo?"),
        msgspec.to_builtins(message),
        *({"role": "tool", "tool_call_id": c.id, "content": "18 degrees"} for c in calls),
    ]
    second = run(fake, lambda p: p.chat(chat_request(messages=history, tools=[WEATHER]), "m"))
    assert "18 degrees" in (second.choices[0].message.content or "")
    sent = fake.requests[-1].json["messages"]
    assert sent[1]["role"] == "assistant" and sent[1]["tool_plan"] and len(sent[1]["tool_calls"]) == 2


def test_chat_stream_text(fake: FakeCohere) -> None:
    request = chat_request(
        messages=[user("one two three")], stream=True, stream_options={"include_usage": True}
    )
    chunks = run(fake, lambda p: collect(p.stream_chat(request, "m")))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: one two three"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "stop"
    ]
    assert chunks[-1].usage and chunks[-1].usage.completion_tokens == 4


@pytest.mark.parametrize(
    ("model", "status", "code"),
    [
        ("error-401", 401, "provider_authentication_failed"),
        ("error-429", 429, "rate_limit_exceeded"),
        ("error-529", 503, None),
        ("garbage", 502, "bad_upstream_response"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_failures(fake: FakeCohere, model: str, status: int, code: str | None, stream: bool) -> None:
    request = chat_request(messages=[user("hi")])
    with pytest.raises(UpstreamError) as caught:
        if stream:
            run(fake, lambda p: collect(p.stream_chat(request, model)))
        else:
            run(fake, lambda p: p.chat(request, model))
    assert (caught.value.status, caught.value.code) == (status, code)
    assert KEY not in caught.value.message
    if model == "error-429":
        assert caught.value.retry_after == 7.0


def test_midstream_drop_raises_after_some_text(fake: FakeCohere) -> None:
    seen: list[ChatChunk] = []

    async def consume(p: CohereProvider) -> None:
        async for chunk in p.stream_chat(chat_request(messages=[user("a b c d e f g h")]), "midstream-drop"):
            seen.append(chunk)

    with pytest.raises(GatewayError):
        run(fake, consume)
    assert any(c.choices and c.choices[0].delta.content for c in seen)


def test_embeddings_float_and_base64(fake: FakeCohere) -> None:
    floats = run(
        fake, lambda p: p.embed(EmbeddingRequest(model="a", input=["first", "second"]), "embed-v4.0")
    )
    assert [d.index for d in floats.data] == [0, 1] and floats.usage.prompt_tokens == 2
    encoded = run(
        fake,
        lambda p: p.embed(EmbeddingRequest(model="a", input="first", encoding_format="base64"), "embed-v4.0"),
    )
    raw = base64.b64decode(encoded.data[0].embedding)  # type: ignore[arg-type]
    assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == floats.data[0].embedding
    assert fake.requests[-1].json["input_type"] == "search_document"


def test_completions_unary_and_stream(fake: FakeCohere) -> None:
    unary = run(
        fake,
        lambda p: p.complete(
            CompletionRequest(model="a", prompt="say conformance", max_tokens=20), "command"
        ),
    )
    assert unary.choices[0].text == "Echo: say conformance" and unary.choices[0].finish_reason == "stop"
    assert unary.usage and unary.usage.completion_tokens == 3
    body = {
        "model": "a",
        "prompt": "one two three",
        "max_tokens": 3,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    request = decode_request(json.dumps(body).encode(), CompletionRequest)
    chunks = run(fake, lambda p: collect(p.stream_complete(request, "command")))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "Echo: one two"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "length"
    ]
    assert chunks[-1].choices == [] and chunks[-1].usage and chunks[-1].usage.completion_tokens == 3


# --------------------------------------------------------------------------------------------------
# The fake against Cohere's SDK, and the adapter's requests against the SDK's


@pytest.fixture
def sdk(fake: FakeCohere) -> cohere.ClientV2:
    return cohere.ClientV2(api_key=KEY, base_url=fake.base_url)


def test_sdk_reads_the_fake(fake: FakeCohere, sdk: cohere.ClientV2) -> None:
    reply = sdk.chat(model="command-a", messages=[user("hello sdk")])
    assert reply.finish_reason == "COMPLETE" and reply.message.content[0].text == "Echo: hello sdk"  # type: ignore[index,union-attr]
    events = list(sdk.chat_stream(model="command-a", messages=[user("weather in Paris?")], tools=[WEATHER]))  # type: ignore[list-item]
    kinds = [e.type for e in events]
    assert kinds[0] == "message-start" and kinds[-1] == "message-end" and "tool-call-start" in kinds
    embedded = sdk.embed(
        model="embed-v4.0", texts=["a"], input_type="search_document", embedding_types=["float"]
    )
    assert embedded.embeddings.float_ and len(embedded.embeddings.float_[0]) == 8
    generated = cohere.Client(api_key=KEY, base_url=fake.base_url).generate(
        model="command", prompt="hi there"
    )
    assert generated.generations[0].text == "Echo: hi there"
    stream = cohere.Client(api_key=KEY, base_url=fake.base_url).generate_stream(model="command", prompt="hi")
    assert [e.event_type for e in stream][-1] == "stream-end"


@pytest.mark.parametrize(
    ("model", "error_class"),
    [
        ("error-400", cohere.errors.BadRequestError),
        ("error-401", cohere.errors.UnauthorizedError),
        ("error-403", cohere.errors.ForbiddenError),
        ("error-404", cohere.errors.NotFoundError),
        ("error-429", cohere.errors.TooManyRequestsError),
        ("error-498", cohere.errors.InvalidTokenError),
        ("error-500", cohere.errors.InternalServerError),
        ("error-503", cohere.errors.ServiceUnavailableError),
    ],
)
def test_sdk_error_classes(sdk: cohere.ClientV2, model: str, error_class: type[Exception]) -> None:
    with pytest.raises(error_class) as caught:
        sdk.chat(model=model, messages=[user("hi")], request_options=NO_RETRIES)
    assert isinstance(caught.value.body, dict) and caught.value.body["message"]  # type: ignore[attr-defined]


def _last(fake: FakeCohere) -> tuple[str, str, Any]:
    request = fake.requests[-1]
    return request.path, request.headers["authorization"], request.json


def test_chat_request_matches_the_sdk(fake: FakeCohere, sdk: cohere.ClientV2) -> None:
    call = {
        "id": "c1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
    }
    messages = [
        {"role": "system", "content": "Be terse."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "and this?"},
                {"type": "image_url", "image_url": {"url": IMAGE}},
            ],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "It is a cat."}]},
        user("weather in Rome?"),
        {"role": "assistant", "tool_calls": [call], "tool_plan": "Checking."},
        {"role": "tool", "tool_call_id": "c1", "content": "20 degrees"},
        user("weather in Paris?"),
    ]
    sdk.chat(
        model="command-a",
        messages=messages,
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="REQUIRED",
        temperature=0.2,
        p=0.5,
        k=10,
        max_tokens=30,
        seed=3,
        stop_sequences=["END"],
    )
    expected = _last(fake)
    openai_messages = [
        *messages[:4],
        {"role": "assistant", "tool_calls": [call], "content": "Checking."},
        *messages[5:],
    ]
    request = chat_request(
        messages=openai_messages,
        tools=[WEATHER],
        tool_choice="required",
        temperature=0.2,
        top_p=0.5,
        top_k=10,
        max_tokens=30,
        seed=3,
        stop=["END"],
    )
    run(fake, lambda p: p.chat(request, "command-a"))
    assert _last(fake) == expected
    sdk_stream = list(sdk.chat_stream(model="command-a", messages=messages))
    assert sdk_stream
    expected = _last(fake)
    run(
        fake,
        lambda p: collect(p.stream_chat(chat_request(messages=openai_messages, stream=True), "command-a")),
    )
    assert _last(fake) == expected


def test_embed_and_generate_requests_match_the_sdk(fake: FakeCohere, sdk: cohere.ClientV2) -> None:
    sdk.embed(model="embed-v4.0", texts=["a", "b"], input_type="search_document", embedding_types=["float"])
    expected = _last(fake)
    run(fake, lambda p: p.embed(EmbeddingRequest(model="x", input=["a", "b"]), "embed-v4.0"))
    assert _last(fake) == expected
    cohere.Client(api_key=KEY, base_url=fake.base_url).generate(
        model="command", prompt="hi", max_tokens=5, p=0.5
    )
    path, auth, body = _last(fake)
    run(
        fake,
        lambda p: p.complete(CompletionRequest(model="x", prompt="hi", max_tokens=5, top_p=0.5), "command"),
    )
    assert _last(fake) == (path, auth, {**body, "stream": False})


# --------------------------------------------------------------------------------------------------
# The fake's bodies against Cohere's OpenAPI document


def _strip(node: Any) -> Any:
    """Without discriminators, and without `required` names the same schema does not declare: the
    document has two such typos its own examples contradict (EmbedByTypeResponse.api_version, which
    is `meta.api_version`, and GenerateStreamEnd.finish_response)."""
    if isinstance(node, dict):
        out = {k: _strip(v) for k, v in node.items() if k != "discriminator"}
        if isinstance(out.get("required"), list) and isinstance(out.get("properties"), dict):
            out["required"] = [name for name in out["required"] if name in out["properties"]]
        return out
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


@cache
def _spec() -> dict[str, Any]:
    with SPEC.open("rb") as handle:
        spec: dict[str, Any] = yaml.load(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return spec


@cache
def _validator(schema: str) -> OAS31Validator:
    components = _strip(_spec()["components"])
    return OAS31Validator({"components": components, "$ref": f"#/components/schemas/{schema}"})


def _check(schema: str, instance: Any) -> None:
    errors = [f"{e.json_path}: {e.message}" for e in _validator(schema).iter_errors(instance)]
    assert not errors, f"{schema}: {errors}"


def _post(fake: FakeCohere, path: str, body: dict[str, Any]) -> bytes:
    headers = {"Authorization": f"Bearer {KEY}"}
    response = httpx.post(fake.base_url + path, json=body, headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    return response.content


@pytest.mark.parametrize("text", ["hello spec", "weather in Paris and Tokyo?"])
def test_fake_chat_bodies_match_the_spec(fake: FakeCohere, text: str) -> None:
    body = {"model": "command-a", "messages": [user(text)], "tools": [WEATHER]}
    _check("ChatResponseV2", orjson.loads(_post(fake, "/v2/chat", body)))
    mapping = _spec()["components"]["schemas"]["StreamedChatResponseV2"]["discriminator"]["mapping"]
    raw = _post(fake, "/v2/chat", {**body, "stream": True}).decode()
    frames = [f for f in raw.split("\n\n") if f.strip()]
    assert frames[-1] == "data: [DONE]"
    for frame in frames[:-1]:
        event_line, data_line = frame.split("\n")
        event = orjson.loads(data_line.removeprefix("data: "))
        assert event_line == f"event: {event['type']}"
        _check(mapping[event["type"]].rsplit("/", 1)[1], event)


def test_fake_embed_and_generate_bodies_match_the_spec(fake: FakeCohere) -> None:
    body = {"model": "embed-v4.0", "texts": ["a"], "input_type": "search_query", "embedding_types": ["float"]}
    _check("EmbedByTypeResponse", orjson.loads(_post(fake, "/v2/embed", body)))
    generated = orjson.loads(_post(fake, "/v1/generate", {"model": "command", "prompt": "hi"}))
    _check("Generation", generated)
    lines = _post(fake, "/v1/generate", {"model": "command", "prompt": "hi", "stream": True}).splitlines()
    kinds = {"text-generation": "GenerateStreamText", "stream-end": "GenerateStreamEnd"}
    for line in lines:
        event = orjson.loads(line)
        _check(kinds[event["event_type"]], event)


@pytest.mark.parametrize(
    ("model", "code"), [("midstream-drop", "upstream_disconnected"), ("garbage", "bad_upstream_response")]
)
def test_completion_stream_failures(fake: FakeCohere, model: str, code: str) -> None:
    request = CompletionRequest(model="a", prompt="a b c d e f g h i j", stream=True)
    with pytest.raises(UpstreamError) as caught:
        run(fake, lambda p: collect(p.stream_complete(request, model)))
    assert (caught.value.status, caught.value.code) == (502, code)
