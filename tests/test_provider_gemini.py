"""The Gemini API adapter: pure conversions (`gemini_convert`, shared with Vertex), the adapter
against the native fake, and the fake checked against Google's official `google-genai` SDK (which
also gives the reference outbound request)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types
from modelyard.errors import ClientError, GatewayError, UpstreamError
from modelyard.providers.gemini import GEMINI, GeminiProvider, embed_payload
from modelyard.providers.gemini_convert import GeminiStream, chat_payload, chat_result, parse_error
from modelyard.schema.chat import ChatChunk, ChatCompletion, ChatRequest
from modelyard.schema.decode import decode_request
from modelyard.schema.embeddings import EmbeddingRequest
from modelyard.transport import HttpTransport, UpstreamResponse

from tests.fakes.gemini_upstream import FakeGemini, lower_types

KEY = "AIzaTestGeminiKey" + "k" * 22
IMAGE = "data:image/png;base64,iVBORw0KGgo="
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def request(**fields: Any) -> ChatRequest:
    fields.setdefault("model", "gemini-test")
    fields.setdefault("messages", [{"role": "user", "content": "hi"}])
    return decode_request(json.dumps(fields).encode(), ChatRequest)


def payload(**fields: Any) -> dict[str, Any]:
    return chat_payload(request(**fields))


# --------------------------------------------------------------------------------------------------
# Pure request conversion


def test_system_developer_roles_and_merged_turns() -> None:
    out = payload(
        messages=[
            {"role": "system", "content": "Be terse."},
            {"role": "developer", "content": [{"type": "text", "text": "English only."}]},
            {"role": "user", "content": "q1"},
            {"role": "user", "content": "q1b"},
            {"role": "assistant", "content": "a1"},
            {"role": "user", "content": "q2"},
        ]
    )
    assert out["systemInstruction"] == {"parts": [{"text": "Be terse.\n\nEnglish only."}]}
    assert out["contents"] == [
        {"role": "user", "parts": [{"text": "q1"}, {"text": "q1b"}]},
        {"role": "model", "parts": [{"text": "a1"}]},
        {"role": "user", "parts": [{"text": "q2"}]},
    ]
    assert "generationConfig" not in out and "tools" not in out


def test_images_inline_and_by_uri() -> None:
    parts = [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": IMAGE}},
        {"type": "image_url", "image_url": {"url": "gs://bucket/cat.png"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a/dog.webp?x=1"}},
    ]
    out = payload(messages=[{"role": "user", "content": parts}])
    assert out["contents"][0]["parts"] == [
        {"text": "look"},
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
        {"fileData": {"mimeType": "image/png", "fileUri": "gs://bucket/cat.png"}},
        {"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/a/dog.webp?x=1"}},
    ]


def test_tool_calls_and_parallel_results_become_function_parts() -> None:
    calls = [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
        },
        {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
    ]
    out = payload(
        messages=[
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": None, "tool_calls": calls},
            {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
            {"role": "tool", "tool_call_id": "call_2", "content": "noon"},
        ],
        tools=[WEATHER],
    )
    assert out["contents"][1] == {
        "role": "model",
        "parts": [
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
            {"functionCall": {"name": "get_time", "args": {}}},
        ],
    }
    assert out["contents"][2] == {
        "role": "user",
        "parts": [
            {"functionResponse": {"name": "get_weather", "response": {"temp": 21}}},
            {"functionResponse": {"name": "get_time", "response": {"content": "noon"}}},
        ],
    }
    assert out["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "Current weather for a city",
                    "parameters": WEATHER["function"]["parameters"],  # type: ignore[index]
                }
            ]
        }
    ]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"mode": "ANY", "allowedFunctionNames": ["get_weather"]},
        ),
    ],
)
def test_tool_choice(choice: Any, expected: dict[str, Any]) -> None:
    out = payload(tools=[WEATHER], tool_choice=choice)
    assert out["toolConfig"] == {"functionCallingConfig": expected}


def test_generation_config_and_dropped_fields() -> None:
    out = payload(
        temperature=0.2,
        top_p=0.9,
        top_k=40,
        max_tokens=10,
        max_completion_tokens=20,
        stop="END",
        n=2,
        seed=7,
        presence_penalty=0.1,
        frequency_penalty=0.3,
        user="u-1",
        logit_bias={"1": 1},
        parallel_tool_calls=False,
    )
    assert out["generationConfig"] == {
        "temperature": 0.2,
        "topP": 0.9,
        "topK": 40,
        "maxOutputTokens": 20,
        "candidateCount": 2,
        "seed": 7,
        "presencePenalty": 0.1,
        "frequencyPenalty": 0.3,
        "stopSequences": ["END"],
    }
    assert set(out) == {"contents", "generationConfig"}


def test_json_modes_and_schema_reduction() -> None:
    assert payload(response_format={"type": "json_object"})["generationConfig"] == {
        "responseMimeType": "application/json"
    }
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "name": {"type": ["string", "null"]},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["name"],
    }
    out = payload(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
    assert out["generationConfig"] == {
        "responseMimeType": "application/json",
        "responseSchema": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "nullable": True},
                "tags": {"type": "array", "items": {"type": "string"}},
            },
            "required": ["name"],
        },
    }


def test_extras_pass_only_gemini_fields() -> None:
    out = payload(
        safety_settings=[{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
        thinkingConfig={"thinkingBudget": 0},
        cachedContent="cachedContents/abc",
        whatever=1,
    )
    assert out["safetySettings"] == [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}]
    assert out["cachedContent"] == "cachedContents/abc"
    assert out["generationConfig"] == {"thinkingConfig": {"thinkingBudget": 0}}
    assert "whatever" not in out


@pytest.mark.parametrize(
    "messages",
    [
        [
            {
                "role": "user",
                "content": [{"type": "input_audio", "input_audio": {"data": "AA==", "format": "wav"}}],
            }
        ],
        [{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "nope", "content": "r"}],
        [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png,raw"}}]}],
    ],
)
def test_what_gemini_cannot_take_is_a_clear_400(messages: list[Any]) -> None:
    with pytest.raises(ClientError) as caught:
        payload(messages=messages)
    assert caught.value.status == 400


def test_embed_payload_single_and_batch() -> None:
    single = decode_request(
        json.dumps(
            {"model": "m", "input": "hello", "dimensions": 4, "task_type": "RETRIEVAL_QUERY"}
        ).encode(),
        EmbeddingRequest,
    )
    assert embed_payload("g", single, "text-embedding-004") == (
        "embedContent",
        {"content": {"parts": [{"text": "hello"}]}, "outputDimensionality": 4, "taskType": "RETRIEVAL_QUERY"},
    )
    batch = decode_request(json.dumps({"model": "m", "input": ["a", "b"]}).encode(), EmbeddingRequest)
    method, body = embed_payload("g", batch, "text-embedding-004")
    assert method == "batchEmbedContents"
    assert body == {
        "requests": [
            {"model": "models/text-embedding-004", "content": {"parts": [{"text": "a"}]}},
            {"model": "models/text-embedding-004", "content": {"parts": [{"text": "b"}]}},
        ]
    }
    tokens = decode_request(json.dumps({"model": "m", "input": [1, 2]}).encode(), EmbeddingRequest)
    with pytest.raises(ClientError):
        embed_payload("g", tokens, "m")


# --------------------------------------------------------------------------------------------------
# Pure response, stream and error conversion


def encode(value: Any) -> bytes:
    return msgspec.json.encode(value)


def test_result_text_tools_finish_and_usage() -> None:
    data = {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {"text": "thinking…", "thought": True},
                        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                        {"functionCall": {"name": "get_weather", "args": {"city": "Tokyo"}}},
                    ],
                },
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 10,
            "candidatesTokenCount": 5,
            "thoughtsTokenCount": 3,
            "cachedContentTokenCount": 4,
            "totalTokenCount": 18,
        },
        "responseId": "abc",
    }
    result = chat_result(encode(data), "gemini-x", "g")
    choice = result.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    calls = choice.message.tool_calls
    assert isinstance(calls, list) and [json.loads(c.function.arguments) for c in calls] == [
        {"city": "Paris"},
        {"city": "Tokyo"},
    ]
    assert all(c.id.startswith("call_") for c in calls) and calls[0].id != calls[1].id
    assert msgspec.to_builtins(result.usage) == {
        "prompt_tokens": 10,
        "completion_tokens": 8,
        "total_tokens": 18,
        "prompt_tokens_details": {"cached_tokens": 4},
        "completion_tokens_details": {"reasoning_tokens": 3},
    }
    assert result.id == "chatcmpl-abc" and result.model == "gemini-x"


def test_thought_signature_round_trips_through_the_tool_call_id() -> None:
    data = {
        "candidates": [
            {
                "content": {
                    "parts": [{"functionCall": {"name": "f", "args": {}}, "thoughtSignature": "c2ln"}]
                },
                "finishReason": "STOP",
            }
        ]
    }
    calls = chat_result(encode(data), "m", "g").choices[0].message.tool_calls
    assert isinstance(calls, list) and calls[0].id.endswith("__thought__c2ln")
    call = {"id": calls[0].id, "type": "function", "function": {"name": "f", "arguments": "{}"}}
    out = payload(
        messages=[
            {"role": "user", "content": "go"},
            {"role": "assistant", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": calls[0].id, "content": "done"},
        ]
    )
    assert out["contents"][1]["parts"] == [
        {"functionCall": {"name": "f", "args": {}}, "thoughtSignature": "c2ln"}
    ]
    assert out["contents"][2]["parts"][0]["functionResponse"]["name"] == "f"


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("OTHER", "stop"),
    ],
)
def test_finish_reasons(reason: str, expected: str) -> None:
    data = {"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": reason}]}
    assert chat_result(encode(data), "m", "g").choices[0].finish_reason == expected


def test_blocked_prompt_is_content_filter_and_garbage_is_502() -> None:
    blocked = {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 3}}
    choice = chat_result(encode(blocked), "m", "g").choices[0]
    assert choice.finish_reason == "content_filter" and choice.message.content is None
    with pytest.raises(UpstreamError) as caught:
        chat_result(b"<html>", "m", "g")
    assert caught.value.status == 502 and caught.value.code == "bad_upstream_response"


def event(parts: list[Any], finish: str | None = None, usage: dict[str, int] | None = None) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    return {"candidates": [candidate], "usageMetadata": usage or {"promptTokenCount": 2}, "responseId": "r1"}


def test_stream_text_tool_deltas_finish_and_usage() -> None:
    stream = GeminiStream("gemini-x", True, provider="g")
    chunks = stream.feed(event([{"text": "Hel"}]))
    chunks += stream.feed(event([{"text": "lo"}]))
    chunks += stream.feed(
        event(
            [{"functionCall": {"name": "a", "args": {"x": 1}}}, {"functionCall": {"name": "b", "args": {}}}],
            "STOP",
            {"promptTokenCount": 2, "candidatesTokenCount": 4, "totalTokenCount": 6},
        )
    )
    chunks += stream.finish()
    out = [msgspec.to_builtins(c) for c in chunks]
    assert out[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [o["choices"][0]["delta"].get("content") for o in out[1:3]] == ["Hel", "lo"]
    calls = [o["choices"][0]["delta"]["tool_calls"][0] for o in out[3:5]]
    assert [(c["index"], c["function"]["name"], c["function"]["arguments"]) for c in calls] == [
        (0, "a", '{"x":1}'),
        (1, "b", "{}"),
    ]
    assert all(c["id"].startswith("call_") and c["type"] == "function" for c in calls)
    assert out[5]["choices"][0]["finish_reason"] == "tool_calls"
    assert all(o["usage"] is None for o in out[:6]) and len({o["id"] for o in out}) == 1
    assert out[6]["choices"] == [] and out[6]["usage"]["total_tokens"] == 6


def test_stream_without_usage_and_truncated_stream() -> None:
    stream = GeminiStream("m", False)
    chunks = stream.feed(event([{"text": "a"}], "MAX_TOKENS")) + stream.finish()
    assert "usage" not in msgspec.to_builtins(chunks[-1]) and chunks[-1].choices[0].finish_reason == "length"
    cut = GeminiStream("m", True, provider="g")
    cut.feed(event([{"text": "a"}]))
    with pytest.raises(UpstreamError) as caught:
        cut.finish()
    assert caught.value.status == 502 and caught.value.code == "upstream_disconnected"


def test_stream_error_event_raises() -> None:
    stream = GeminiStream("m", False, provider="g")
    with pytest.raises(UpstreamError) as caught:
        stream.feed({"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}})
    assert caught.value.status == 503 and caught.value.code == "unavailable"


def google(status: int, name: str, message: str = "m", details: list[Any] | None = None) -> bytes:
    return encode({"error": {"code": status, "message": message, "status": name, "details": details or []}})


@pytest.mark.parametrize(
    ("status", "name", "client_status", "code"),
    [
        (400, "INVALID_ARGUMENT", 400, "invalid_argument"),
        (401, "UNAUTHENTICATED", 401, "provider_authentication_failed"),
        (403, "PERMISSION_DENIED", 403, "provider_permission_denied"),
        (404, "NOT_FOUND", 404, "not_found"),
        (413, "INVALID_ARGUMENT", 413, "invalid_argument"),
        (429, "RESOURCE_EXHAUSTED", 429, "resource_exhausted"),
        (500, "INTERNAL", 502, "internal"),
        (503, "UNAVAILABLE", 503, "unavailable"),
        (529, "UNAVAILABLE", 503, "unavailable"),
    ],
)
def test_parse_error_by_status(status: int, name: str, client_status: int, code: str) -> None:
    error = parse_error("g", UpstreamResponse(status, {}, google(status, name)), KEY)
    assert (error.status, error.code, error.upstream_status, error.provider) == (
        client_status,
        code,
        status,
        "g",
    )


def test_parse_error_retry_after_bad_key_and_secret() -> None:
    retry = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}]
    assert (
        parse_error(
            "g", UpstreamResponse(429, {}, google(429, "RESOURCE_EXHAUSTED", details=retry)), ""
        ).retry_after
        == 7
    )
    assert (
        parse_error("g", UpstreamResponse(429, {"retry-after": "3"}, google(429, "X")), "").retry_after == 3
    )
    info = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]
    bad_key = parse_error(
        "g", UpstreamResponse(400, {}, google(400, "INVALID_ARGUMENT", f"key {KEY} bad", info)), KEY
    )
    assert (
        bad_key.status == 401
        and bad_key.code == "provider_authentication_failed"
        and KEY not in bad_key.message
    )
    echoed = parse_error("g", UpstreamResponse(400, {}, google(400, "INVALID_ARGUMENT", f"saw {KEY}")), KEY)
    assert KEY not in echoed.message and "****" in echoed.message
    garbage = parse_error("g", UpstreamResponse(502, {}, b"<html>"), KEY)
    assert garbage.status == 502 and "502" in garbage.message


# --------------------------------------------------------------------------------------------------
# The adapter against the fake


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeGemini]:
    server = FakeGemini(api_key=KEY)
    server.start()
    yield server
    server.stop()


def adapter(fake: FakeGemini, key: str = KEY) -> GeminiProvider:
    provider = GEMINI.create("gem", {"apiKey": key, "base_url": fake.base_url}, HttpTransport())
    assert isinstance(provider, GeminiProvider)
    return provider


def run_chat(
    fake: FakeGemini, req: ChatRequest, model: str = "gemini-2.0-flash", key: str = KEY
) -> ChatCompletion:
    async def go() -> ChatCompletion:
        provider = adapter(fake, key)
        try:
            return await provider.chat(req, model)
        finally:
            await provider.transport.close()

    return asyncio.run(go())


def run_stream(
    fake: FakeGemini, req: ChatRequest, model: str = "gemini-2.0-flash"
) -> tuple[list[ChatChunk], GatewayError | None]:
    async def go() -> tuple[list[ChatChunk], GatewayError | None]:
        provider = adapter(fake)
        chunks: list[ChatChunk] = []
        try:
            async for chunk in provider.stream_chat(req, model):
                chunks.append(chunk)
        except GatewayError as exc:
            return chunks, exc
        finally:
            await provider.transport.close()
        return chunks, None

    return asyncio.run(asyncio.wait_for(go(), 20))


def test_settings_spellings_and_secret() -> None:
    for spelling in ("apikey", "apiKey", "api_key"):
        provider = GEMINI.create("g", {spelling: KEY}, HttpTransport())
        assert provider.settings.base_url == "https://generativelanguage.googleapis.com"
        assert KEY not in repr(provider.settings)
    assert isinstance(provider, GeminiProvider)
    assert provider.model_url("gemini-2.0-flash", "generateContent") == (
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:generateContent"
    )
    assert provider.model_url("tunedModels/t-1", "generateContent").endswith(
        "/v1beta/tunedModels/t-1:generateContent"
    )


def test_chat_text_tools_json_and_the_key_stays_in_the_header(fake: FakeGemini) -> None:
    fake.clear()
    result = run_chat(
        fake, request(messages=[{"role": "system", "content": "s"}, {"role": "user", "content": "Hello you"}])
    )
    assert result.choices[0].message.content == "Echo: Hello you"
    assert result.usage and result.usage.prompt_tokens == 3 and result.usage.completion_tokens == 3
    tools = run_chat(
        fake, request(messages=[{"role": "user", "content": "weather in Paris and Tokyo"}], tools=[WEATHER])
    )
    calls = tools.choices[0].message.tool_calls
    assert tools.choices[0].finish_reason == "tool_calls" and isinstance(calls, list) and len(calls) == 2
    assert json.loads(calls[0].function.arguments) == {"city": "Paris"}
    answer = run_chat(fake, request(response_format={"type": "json_object"}))
    assert json.loads(answer.choices[0].message.content or "") == {"echo": "Echo: hi"}
    for recorded in fake.requests:
        assert recorded.headers["x-goog-api-key"] == KEY
        assert (
            KEY not in recorded.path and KEY not in recorded.query and "authorization" not in recorded.headers
        )
    assert fake.requests[0].path == "/v1beta/models/gemini-2.0-flash:generateContent"


def test_vertex_only_labels_are_not_sent(fake: FakeGemini) -> None:
    fake.clear()
    run_chat(fake, request(labels={"team": "a"}))
    assert "labels" not in fake.requests[-1].json


def test_stream_text_with_usage(fake: FakeGemini) -> None:
    fake.clear()
    chunks, error = run_stream(
        fake,
        request(
            messages=[{"role": "user", "content": "one two"}],
            stream=True,
            stream_options={"include_usage": True},
        ),
    )
    assert error is None
    assert fake.requests[-1].path.endswith(":streamGenerateContent") and fake.requests[-1].query == "alt=sse"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: one two"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage and chunks[-1].usage.total_tokens == 5


def test_stream_tool_calls(fake: FakeGemini) -> None:
    chunks, error = run_stream(
        fake,
        request(
            messages=[{"role": "user", "content": "weather in Paris and Tokyo"}], tools=[WEATHER], stream=True
        ),
    )
    assert error is None
    deltas = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert [(d.index, json.loads(d.function.arguments)) for d in deltas] == [
        (0, {"city": "Paris"}),
        (1, {"city": "Tokyo"}),
    ]  # type: ignore[union-attr, arg-type]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize(
    ("model", "status", "code"),
    [
        ("midstream-drop", 502, "upstream_disconnected"),
        ("garbage", 502, "bad_upstream_response"),
        ("error-429", 429, "resource_exhausted"),
    ],
)
def test_stream_failures_raise(fake: FakeGemini, model: str, status: int, code: str) -> None:
    chunks, error = run_stream(
        fake, request(messages=[{"role": "user", "content": "a b c d e f"}], stream=True), model
    )
    assert error is not None and (error.status, error.code) == (status, code)
    if model == "error-429":
        assert error.retry_after == 7 and not chunks


@pytest.mark.parametrize(
    ("model", "status", "code"),
    [
        ("error-400", 400, "invalid_argument"),
        ("error-401", 401, "provider_authentication_failed"),
        ("error-403", 403, "provider_permission_denied"),
        ("error-404", 404, "not_found"),
        ("error-500", 502, "internal"),
        ("error-503", 503, "unavailable"),
        ("error-529", 503, None),
        ("garbage", 502, "bad_upstream_response"),
    ],
)
def test_errors_map_by_status_and_code(fake: FakeGemini, model: str, status: int, code: str | None) -> None:
    with pytest.raises(UpstreamError) as caught:
        run_chat(fake, request(), model)
    assert caught.value.status == status
    if code:
        assert caught.value.code == code


def test_wrong_key_is_an_authentication_failure_without_the_key(fake: FakeGemini) -> None:
    with pytest.raises(UpstreamError) as caught:
        run_chat(fake, request(), key="AIzaWrongKey123456789")
    assert caught.value.status == 401 and caught.value.code == "provider_authentication_failed"
    assert "AIzaWrongKey" not in caught.value.message and "http" not in caught.value.message


def test_embeddings_single_batch_and_base64(fake: FakeGemini) -> None:
    async def go(body: dict[str, Any]) -> Any:
        provider = adapter(fake)
        try:
            return await provider.embed(
                decode_request(json.dumps(body).encode(), EmbeddingRequest), "text-embedding-004"
            )
        finally:
            await provider.transport.close()

    fake.clear()
    one = asyncio.run(go({"model": "x", "input": "hello world", "dimensions": 4}))
    assert fake.requests[-1].path.endswith(":embedContent") and len(one.data[0].embedding) == 4
    assert one.usage.prompt_tokens == 2
    many = asyncio.run(go({"model": "x", "input": ["a", "b c"], "encoding_format": "base64"}))
    assert fake.requests[-1].path.endswith(":batchEmbedContents")
    assert [d.index for d in many.data] == [0, 1] and all(isinstance(d.embedding, str) for d in many.data)


# --------------------------------------------------------------------------------------------------
# The fake against the official SDK, and the adapter's request against the SDK's


@pytest.fixture
def sdk(fake: FakeGemini) -> Iterator[genai.Client]:
    client = genai.Client(
        api_key=KEY,
        http_options=types.HttpOptions(
            base_url=fake.base_url, api_version="v1beta", retry_options=types.HttpRetryOptions(attempts=1)
        ),
    )
    fake.clear()
    yield client
    client.close()


FUNCTION = types.FunctionDeclaration(
    name="get_weather",
    description="Current weather for a city",
    parameters=types.Schema(
        type=types.Type.OBJECT, properties={"city": types.Schema(type=types.Type.STRING)}, required=["city"]
    ),
)


def test_sdk_unary_stream_tools_and_embeddings(fake: FakeGemini, sdk: genai.Client) -> None:
    reply = sdk.models.generate_content(model="gemini-2.0-flash", contents="Hello there")
    assert (
        reply.text == "Echo: Hello there"
        and reply.usage_metadata
        and reply.usage_metadata.prompt_token_count == 2
    )
    pieces = list(sdk.models.generate_content_stream(model="gemini-2.0-flash", contents="one two"))
    assert "".join(p.text or "" for p in pieces) == "Echo: one two"
    assert pieces[-1].candidates and pieces[-1].candidates[0].finish_reason == types.FinishReason.STOP
    config = types.GenerateContentConfig(
        tools=[types.Tool(function_declarations=[FUNCTION])],
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    )
    calls = sdk.models.generate_content(
        model="gemini-2.0-flash", contents="weather in Paris and Tokyo", config=config
    )
    assert [(c.name, c.args) for c in calls.function_calls or []] == [
        ("get_weather", {"city": "Paris"}),
        ("get_weather", {"city": "Tokyo"}),
    ]
    vectors = sdk.models.embed_content(model="text-embedding-004", contents=["a", "b"])
    assert vectors.embeddings and len(vectors.embeddings) == 2
    assert fake.requests and all(
        r.headers["x-goog-api-key"] == KEY and not r.query.startswith("key") for r in fake.requests
    )


@pytest.mark.parametrize(
    ("model", "error_class", "code"),
    [
        ("error-400", genai_errors.ClientError, 400),
        ("error-401", genai_errors.ClientError, 401),
        ("error-404", genai_errors.ClientError, 404),
        ("error-429", genai_errors.ClientError, 429),
        ("error-500", genai_errors.ServerError, 500),
        ("error-503", genai_errors.ServerError, 503),
    ],
)
def test_sdk_error_classes(
    sdk: genai.Client, model: str, error_class: type[genai_errors.APIError], code: int
) -> None:
    with pytest.raises(error_class) as caught:
        sdk.models.generate_content(model=model, contents="hi")
    assert caught.value.code == code and caught.value.status


def test_sdk_sees_a_dropped_stream(sdk: genai.Client) -> None:
    with pytest.raises(Exception) as caught:  # httpx's protocol error (its module differs by version)
        list(sdk.models.generate_content_stream(model="midstream-drop", contents="a b c d e f"))
    assert "closed" in str(caught.value) or "incomplete" in str(caught.value)


def test_fake_rejects_like_the_real_api(fake: FakeGemini) -> None:
    bad = genai.Client(
        api_key="AIzaNope", http_options=types.HttpOptions(base_url=fake.base_url, api_version="v1beta")
    )
    with pytest.raises(genai_errors.ClientError) as caught:
        bad.models.generate_content(model="gemini-2.0-flash", contents="hi")
    assert caught.value.code == 400 and caught.value.status == "INVALID_ARGUMENT"
    bad.close()


def camel_keys(value: Any) -> Any:
    if isinstance(value, list):
        return [camel_keys(item) for item in value]
    if isinstance(value, dict):
        return {re.sub(r"_([a-z])", lambda m: m.group(1).upper(), k): camel_keys(v) for k, v in value.items()}
    return value


def sdk_and_adapter(fake: FakeGemini, sdk_call: Any, chat: ChatRequest, stream: bool) -> tuple[Any, Any]:
    fake.clear()
    sdk_call()
    reference = fake.requests[-1]
    fake.clear()
    if stream:
        run_stream(fake, chat)
    else:
        run_chat(fake, chat)
    return reference, fake.requests[-1]


@pytest.mark.parametrize("stream", [False, True])
def test_adapter_request_matches_the_sdk_request(fake: FakeGemini, sdk: genai.Client, stream: bool) -> None:
    config = types.GenerateContentConfig(
        system_instruction="Be terse.",
        temperature=0.5,
        top_p=0.9,
        top_k=20,
        max_output_tokens=64,
        stop_sequences=["END"],
        seed=3,
        tools=[
            types.Tool(
                function_declarations=[
                    types.FunctionDeclaration(
                        name="get_weather",
                        description="Current weather for a city",
                        parameters=WEATHER["function"]["parameters"],
                    )
                ]
            )
        ],  # type: ignore[index]
        tool_config=types.ToolConfig(
            function_calling_config=types.FunctionCallingConfig(
                mode=types.FunctionCallingConfigMode.ANY, allowed_function_names=["get_weather"]
            )
        ),
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    )
    contents = [
        types.Content(
            role="user",
            parts=[
                types.Part(text="look"),
                types.Part.from_bytes(data=b"\x89PNG\r\n\x1a\n", mime_type="image/png"),
            ],
        ),
        types.Content(role="model", parts=[types.Part(text="ok")]),
        types.Content(role="user", parts=[types.Part(text="weather in Paris")]),
    ]
    image = "data:image/png;base64,iVBORw0KGgo="
    chat = request(
        messages=[
            {"role": "system", "content": "Be terse."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image_url", "image_url": {"url": image}},
                ],
            },
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "weather in Paris"},
        ],
        temperature=0.5,
        top_p=0.9,
        top_k=20,
        max_tokens=64,
        stop=["END"],
        seed=3,
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        stream=stream,
    )

    def call() -> None:
        if stream:
            list(
                sdk.models.generate_content_stream(model="gemini-2.0-flash", contents=contents, config=config)
            )
        else:
            sdk.models.generate_content(model="gemini-2.0-flash", contents=contents, config=config)

    reference, ours = sdk_and_adapter(fake, call, chat, stream)
    assert (ours.method, ours.path, ours.query) == (reference.method, reference.path, reference.query)
    assert ours.headers["x-goog-api-key"] == reference.headers["x-goog-api-key"] == KEY
    assert "key=" not in ours.query
    expected = reference.json
    expected["systemInstruction"].pop("role", None)  # the SDK tags the system content "user"
    # The SDK writes inlineData's mime_type in snake case (Google's JSON accepts both spellings).
    assert ours.json["contents"] == camel_keys(expected["contents"])  # inline image bytes included
    # The SDK upper-cases schema types (the proto enum names); the API takes JSON Schema's lower case too.
    expected["tools"] = lower_types(expected["tools"])
    for key in ("systemInstruction", "tools", "toolConfig", "generationConfig"):
        assert ours.json[key] == expected[key], key


def test_adapter_embed_request_matches_the_sdk_batch_request(fake: FakeGemini, sdk: genai.Client) -> None:
    fake.clear()
    sdk.models.embed_content(
        model="text-embedding-004",
        contents=["a", "b"],
        config=types.EmbedContentConfig(output_dimensionality=4),
    )
    reference = fake.requests[-1]

    async def go() -> None:
        provider = adapter(fake)
        try:
            body = {"model": "x", "input": ["a", "b"], "dimensions": 4}
            await provider.embed(
                decode_request(json.dumps(body).encode(), EmbeddingRequest), "text-embedding-004"
            )
        finally:
            await provider.transport.close()

    fake.clear()
    asyncio.run(go())
    ours = fake.requests[-1]
    assert (ours.path, ours.query) == (reference.path, reference.query)
    assert ours.headers["x-goog-api-key"] == reference.headers["x-goog-api-key"]
    for mine, theirs in zip(ours.json["requests"], reference.json["requests"], strict=True):
        theirs["content"].pop("role", None)  # the SDK tags embedded content "user"
        assert mine == theirs
