"""The OpenAI adapter's pure functions: upstream payloads, error classification, Retry-After."""

from __future__ import annotations

import json
import math
from typing import Any

import msgspec
import pytest
from modelyard.errors import UpstreamError
from modelyard.providers.openai import (
    OpenAIProvider,
    OpenAISettings,
    build_payload,
    decode_body,
    parse_error,
    retry_after,
)
from modelyard.schema.chat import ChatCompletion, ChatRequest
from modelyard.schema.completions import CompletionRequest
from modelyard.schema.decode import decode_request
from modelyard.schema.embeddings import EmbeddingRequest
from modelyard.transport import UpstreamResponse
from multidict import CIMultiDict

SECRET = "sk-upstream-" + "Zx9" * 10


def _chat(**fields: Any) -> ChatRequest:
    body = {"model": "alias/chat", "messages": [{"role": "user", "content": "hi"}], **fields}
    return decode_request(json.dumps(body).encode(), ChatRequest)


def _payload(request: Any, stream: bool | None, model_id: str = "gpt-4o-2024-08-06") -> dict[str, Any]:
    return json.loads(build_payload(request, model_id, stream=stream))


@pytest.mark.parametrize(
    ("fields", "stream", "expect_stream", "expect_options"),
    [
        ({}, True, True, None),
        ({}, False, None, None),
        ({}, None, None, None),
        ({"stream": True, "stream_options": {"include_usage": True}}, True, True, {"include_usage": True}),
        ({"stream": True, "stream_options": {"include_usage": True}}, False, None, None),
        ({"stream": False}, True, True, None),
        ({"stream": False}, False, None, None),
    ],
)
def test_build_payload_stream_flags(
    fields: dict[str, Any], stream: bool | None, expect_stream: bool | None, expect_options: Any
) -> None:
    payload = _payload(_chat(**fields), stream)
    assert payload["model"] == "gpt-4o-2024-08-06"
    assert payload.get("stream") == expect_stream
    assert payload.get("stream_options") == expect_options
    assert payload["messages"] == [{"role": "user", "content": "hi"}]


def test_build_payload_keeps_set_fields_and_omits_unset_ones() -> None:
    request = _chat(temperature=0.7, max_tokens=None, stop=["x"], tool_choice="auto", seed=3)
    payload = _payload(request, False)
    assert payload == {
        "model": "gpt-4o-2024-08-06",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.7,
        "max_tokens": None,
        "stop": ["x"],
        "tool_choice": "auto",
        "seed": 3,
    }


@pytest.mark.parametrize(
    ("kind", "body", "model_id"),
    [
        (CompletionRequest, {"model": "a", "prompt": "p", "max_tokens": 3}, "gpt-3.5-turbo-instruct"),
        (EmbeddingRequest, {"model": "a", "input": ["x"], "dimensions": 8}, "text-embedding-3-small"),
        (ChatRequest, {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "x"}]}, "gpt-4o"),
    ],
)
def test_build_payload_replaces_model_with_deployment_id(
    kind: type[Any], body: dict[str, Any], model_id: str
) -> None:
    request = decode_request(json.dumps(body).encode(), kind)
    payload = _payload(request, None, model_id)
    assert payload == {**body, "model": model_id}


def test_build_payload_merges_plain_extras() -> None:
    """Extras from the typed API are plain values (decoded from google.protobuf.Struct)."""
    request = _chat()
    request.extras = {"reasoning_effort": "high", "nested": {"a": [1, 2.5, None, True]}}
    payload = _payload(request, True)
    assert payload["reasoning_effort"] == "high"
    assert payload["nested"] == {"a": [1, 2.5, None, True]}
    assert "$extras" not in payload


def test_build_payload_merges_raw_extras_byte_for_byte() -> None:
    body = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "x_opt": {"k": [1.50, 2e2]}}'
    request = decode_request(body, ChatRequest)
    assert b'"x_opt":{"k": [1.50, 2e2]}' in build_payload(request, "dep", stream=False)


def test_extras_cannot_override_model_or_stream() -> None:
    request = _chat()
    request.extras = {"model": "some-other-upstream-model", "stream": True, "stream_options": {"x": 1}}
    payload = _payload(request, False, "dep-id")
    assert payload["model"] == "dep-id"
    assert "stream" not in payload
    assert "stream_options" not in payload


def _error_body(message: str = "bad things", **fields: Any) -> bytes:
    error = {
        "message": message,
        "type": "invalid_request_error",
        "param": "messages",
        "code": "bad_x",
        **fields,
    }
    return json.dumps({"error": error}).encode()


def _parse(status: int, body: bytes, headers: Any = None, secret: str = SECRET) -> UpstreamError:
    return parse_error("up", UpstreamResponse(status, headers or {}, body), secret)


@pytest.mark.parametrize(
    ("upstream", "client", "retryable"),
    [
        (400, 400, False),
        (401, 401, False),
        (403, 403, False),
        (404, 404, False),
        (409, 409, False),
        (422, 422, False),
        (429, 429, True),
        (500, 502, True),
        (501, 502, True),
        (502, 502, True),
        (503, 503, True),
        (504, 504, True),
        (529, 503, True),
    ],
)
def test_parse_error_status_mapping(upstream: int, client: int, retryable: bool) -> None:
    error = _parse(upstream, _error_body())
    assert isinstance(error, UpstreamError)
    assert (error.status, error.upstream_status, error.retryable) == (client, upstream, retryable)
    assert error.provider == "up"
    expected_code = {401: "provider_authentication_failed", 403: "provider_permission_denied"}
    assert error.code == expected_code.get(upstream, "bad_x")
    if client < 500:
        assert (error.param, error.type) == ("messages", "invalid_request_error")
    else:
        assert (error.param, error.type) == (None, "server_error")


@pytest.mark.parametrize("status", [400, 404, 429, 500, 503])
def test_parse_error_passes_the_upstream_message(status: int) -> None:
    assert _parse(status, _error_body("The model is overloaded.")).message == "The model is overloaded."


@pytest.mark.parametrize("status", [400, 403, 422, 429, 500, 503])
def test_parse_error_masks_the_secret(status: int) -> None:
    error = _parse(status, _error_body(f"Incorrect API key provided: {SECRET}; and again {SECRET}."))
    assert SECRET not in error.message
    assert error.message == "Incorrect API key provided: ****; and again ****."


@pytest.mark.parametrize(
    "body",
    [
        _error_body(f"Incorrect API key provided: {SECRET[:8]}****{SECRET[-4:]}"),
        _error_body(f"key {SECRET} rejected"),
        b"Unauthorized",
        b"",
    ],
)
def test_401_message_never_contains_upstream_text(body: bytes) -> None:
    error = _parse(401, body)
    assert error.status == 401
    assert error.message == "Provider 'up' rejected the gateway's credentials."
    assert SECRET[:8] not in error.message
    assert "Incorrect" not in error.message


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html><body>502 Bad Gateway</body></html>",
        b"null",
        b"[]",
        b'{"error": "a string"}',
        b'{"error": {"message": 5}}',
        b'{"error": null}',
        b'{"error": {}}',
        b"\xff\xfe\x00garbage",
        b'{"error": {"message": "trunc',
    ],
)
@pytest.mark.parametrize("status", [400, 500, 503])
def test_garbage_body_gives_a_sane_error(body: bytes, status: int) -> None:
    error = _parse(status, body)
    assert error.message == f"Provider 'up' answered HTTP {status}."
    assert error.status == {400: 400, 500: 502, 503: 503}[status]
    assert error.code is None
    assert error.param is None


def test_parse_error_stringifies_integer_codes() -> None:
    assert _parse(400, _error_body(code=42)).code == "42"


def test_parse_error_empty_secret_leaves_message_alone() -> None:
    assert _parse(400, _error_body("plain"), secret="").message == "plain"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": "0"}, 0.0),
        ({"retry-after": "2.5"}, 2.5),
        ({"retry-after": "-3"}, 0.0),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "20", "retry-after": "9"}, 0.02),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, None),
        ({"retry-after": "soon"}, None),
        (CIMultiDict({"Retry-After": "3"}), 3.0),
        (CIMultiDict({"Retry-After-Ms": "250"}), 0.25),
    ],
)
def test_retry_after(headers: Any, expected: float | None) -> None:
    assert retry_after(headers) == expected


def test_retry_after_falls_back_when_ms_header_is_malformed() -> None:
    assert retry_after({"retry-after-ms": "abc", "retry-after": "2"}) == 2.0


@pytest.mark.parametrize("value", ["inf", "1e999", "Infinity"])
def test_retry_after_is_finite(value: str) -> None:
    result = retry_after({"retry-after": value})
    assert result is None or math.isfinite(result)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [({"retry-after": "12"}, 12.0), ({"retry-after-ms": "100"}, 0.1), ({}, None)],
)
def test_parse_error_carries_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert _parse(429, _error_body(), headers).retry_after == expected


@pytest.mark.parametrize("body", [b"not json", b'{"id": 1}', b'{"choices": "x"}'])
def test_decode_body_rejects_bad_upstream_json(body: bytes) -> None:
    with pytest.raises(UpstreamError) as caught:
        decode_body("up", body, ChatCompletion)
    error = caught.value
    assert (error.status, error.code, error.provider, error.retryable) == (
        502,
        "bad_upstream_response",
        "up",
        True,
    )
    assert "ChatCompletion" in error.message


def test_decode_body_accepts_a_completion() -> None:
    body = msgspec.json.encode(
        {
            "id": "c1",
            "created": 1,
            "model": "m",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
            ],
        }
    )
    assert decode_body("up", body, ChatCompletion).choices[0].message.content == "hi"


@pytest.mark.parametrize(
    ("data", "url", "organization"),
    [
        ({"apikey": SECRET}, "https://api.openai.com/v1/chat/completions", None),
        (
            {"apiKey": SECRET, "baseURL": "http://h:1/v1/", "org": "org-7"},
            "http://h:1/v1/chat/completions",
            "org-7",
        ),
    ],
)
def test_headers_and_url(data: dict[str, str], url: str, organization: str | None) -> None:
    provider = OpenAIProvider("up", "openai", OpenAISettings.model_validate(data), None)  # type: ignore[arg-type]
    headers = provider._headers()
    assert headers["Authorization"] == f"Bearer {SECRET}"
    assert headers.get("OpenAI-Organization") == organization
    assert provider._url("/chat/completions") == url
    assert SECRET not in repr(provider.settings)
