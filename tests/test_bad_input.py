"""Bad input through real Envoy: each answered with the right 4xx in OpenAI's envelope, while the
same worker processes keep serving."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.gateway_process import GatewayProcess
from tests.openapi_check import validate_error

USER = {"role": "user", "content": "hi"}


@pytest.fixture(scope="module")
def http(gateway: GatewayProcess) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {gateway.admin_key}", "Content-Type": "application/json"}
    with httpx.Client(base_url=gateway.base_url, headers=headers, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def processes_before(gateway: GatewayProcess) -> list[int]:
    return sorted(gateway.session_pids())


def _json(payload: object) -> bytes:
    return json.dumps(payload).encode()


BAD_BODIES = [
    ("malformed json", b'{"model": "demo/chat", "messages": [', 400, None, "invalid_json"),
    ("not an object", b"[1, 2, 3]", 400, None, None),
    ("empty body", b"", 400, None, "invalid_json"),
    (
        "wrong type",
        _json({"model": "demo/chat", "messages": [USER], "max_tokens": "abc"}),
        400,
        "max_tokens",
        None,
    ),
    (
        "wrong nested type",
        _json({"model": "demo/chat", "messages": [{"role": "user", "content": 5}]}),
        400,
        "messages[0].content",
        None,
    ),
    (
        "bad role",
        _json({"model": "demo/chat", "messages": [{"role": "robot", "content": "x"}]}),
        400,
        "messages[0].role",
        None,
    ),
    ("missing messages", _json({"model": "demo/chat"}), 400, None, None),
    ("no messages", _json({"model": "demo/chat", "messages": []}), 400, "messages", "empty_array"),
    (
        "10,000 messages",
        _json({"model": "demo/chat", "messages": [USER] * 10_000}),
        400,
        "messages",
        "array_above_max_length",
    ),
    ("missing model", _json({"messages": [USER]}), 400, None, None),
    ("unknown model", _json({"model": "nope/nothing", "messages": [USER]}), 404, "model", "model_not_found"),
    (
        "tool message without id",
        _json({"model": "demo/chat", "messages": [{"role": "tool", "content": "x"}]}),
        400,
        "messages[0].tool_call_id",
        None,
    ),
    (
        "invalid utf-8",
        b'{"model": "demo/chat", "messages": [{"role": "user", "content": "\xff\xfe"}]}',
        400,
        None,
        "invalid_json",
    ),
    ("n out of range", _json({"model": "demo/chat", "messages": [USER], "n": 0}), 400, "n", None),
    ("embeddings on a chat model", None, 400, "model", "unsupported_task"),
]


@pytest.mark.parametrize(
    ("name", "body", "status", "param", "code"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES]
)
def test_bad_request_bodies(
    http: httpx.Client,
    processes_before: list[int],
    name: str,
    body: bytes | None,
    status: int,
    param: str | None,
    code: str | None,
) -> None:
    if body is None:
        response = http.post("/embeddings", content=_json({"model": "demo/chat", "input": "x"}))
    else:
        response = http.post("/chat/completions", content=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    validate_error(response.status_code, response.content)
    error = response.json()["error"]
    assert error["message"]
    if param is not None:
        assert error["param"] == param
    if code is not None:
        assert error["code"] == code


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/v1/nothing"), ("GET", "/v1/chat/completions"), ("DELETE", "/v1/models"), ("GET", "/")],
)
def test_unknown_routes_are_openai_404s(gateway: GatewayProcess, method: str, path: str) -> None:
    response = httpx.request(
        method, gateway.rest_url + path, headers={"Authorization": f"Bearer {gateway.admin_key}"}
    )
    assert response.status_code == 404
    validate_error(404, response.content)
    assert path.split("?")[0] in response.json()["error"]["message"]


def test_a_20_mb_body_is_accepted(http: httpx.Client) -> None:
    image = "data:image/png;base64," + "A" * (20 << 20)
    content = [{"type": "text", "text": "what is this"}, {"type": "image_url", "image_url": {"url": image}}]
    response = http.post(
        "/chat/completions", json={"model": "demo/chat", "messages": [{"role": "user", "content": content}]}
    )
    assert response.status_code == 200, response.text[:300]
    assert response.json()["choices"][0]["message"]["content"] == "You said: what is this"


def test_a_40_mb_body_is_413(http: httpx.Client) -> None:
    response = http.post(
        "/chat/completions", content=b'{"model": "demo/chat", "messages": ["' + b"A" * (40 << 20) + b'"]}'
    )
    assert response.status_code == 413
    validate_error(413, response.content)
    assert response.json()["error"]["code"] == "request_too_large"


def test_the_same_workers_are_still_serving(
    http: httpx.Client, gateway: GatewayProcess, processes_before: list[int]
) -> None:
    response = http.post("/chat/completions", json={"model": "demo/chat", "messages": [USER]})
    assert response.status_code == 200
    assert sorted(gateway.session_pids()) == processes_before
