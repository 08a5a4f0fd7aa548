"""The watsonx.ai adapter against its fake: IAM token exchange (checked with IBM's own SDK core),
token caching and refresh, the outbound wire format, streams, errors and the pure conversions."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import parse_qs

import pytest
from modelyard.errors import ClientError, UpstreamError
from modelyard.providers import watsonx_convert as convert
from modelyard.providers.watsonx import WATSONX, WatsonxProvider, parse_error
from modelyard.schema.chat import ChatChunk, ChatRequest
from modelyard.schema.completions import CompletionRequest
from modelyard.schema.decode import decode_request
from modelyard.schema.embeddings import EmbeddingRequest
from modelyard.transport import HttpTransport

from tests.fakes.watsonx_upstream import FakeWatsonx

KEY = "ibm-test-apikey-" + "Q7" * 12
PROJECT = "test-project-0001"
T = TypeVar("T")


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeWatsonx]:
    server = FakeWatsonx(apikey=KEY, project_id=PROJECT)
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _reset(fake: FakeWatsonx) -> None:
    fake.clear()
    fake.token_ttl, fake.iam_delay, fake.project_id, fake.space_id = 3600.0, 0.0, PROJECT, None


def _provider(fake: FakeWatsonx, transport: HttpTransport, **data: Any) -> WatsonxProvider:
    settings = {"apikey": KEY, "project_id": PROJECT, "base_url": fake.base_url, "auth_url": fake.iam_url}
    provider = WATSONX.create("wx", {**settings, **data}, transport)
    assert isinstance(provider, WatsonxProvider)
    return provider


def run(fake: FakeWatsonx, body: Callable[[WatsonxProvider], Awaitable[T]], **data: Any) -> T:
    async def main() -> T:
        transport = HttpTransport()
        try:
            return await body(_provider(fake, transport, **data))
        finally:
            await transport.close()

    return asyncio.run(main())


def chat_request(text: str = "hello watsonx", **fields: Any) -> ChatRequest:
    body = {"model": "wx/chat", "messages": [{"role": "user", "content": text}], **fields}
    return decode_request(json.dumps(body).encode(), ChatRequest)


async def collect(stream: Any) -> list[Any]:
    return [item async for item in stream]


# ---- IAM ----------------------------------------------------------------------------------------


def test_ibm_sdk_core_authenticator_gets_a_token_from_the_fake(fake: FakeWatsonx) -> None:
    from ibm_cloud_sdk_core.authenticators import IAMAuthenticator  # type: ignore[import-untyped]

    authenticator = IAMAuthenticator(KEY, url=fake.base_url)
    token = authenticator.token_manager.get_token()
    assert token.count(".") == 2 and len(fake.token_requests) == 1
    sdk_request = fake.token_requests[0]
    fake.clear()
    run(fake, lambda p: p.chat(chat_request(), "ibm/granite-3-8b-instruct"))
    ours = fake.token_requests[0]
    assert ours.path == sdk_request.path == "/identity/token"
    for header in ("content-type", "accept"):
        assert ours.headers[header] == sdk_request.headers[header]
    assert parse_qs(ours.body.decode()) == parse_qs(sdk_request.body.decode())
    assert fake.requests[0].headers["authorization"].startswith("Bearer ey")


def test_a_rejected_api_key_is_a_provider_authentication_error(fake: FakeWatsonx) -> None:
    with pytest.raises(UpstreamError) as caught:
        run(fake, lambda p: p.chat(chat_request(), "m"), apikey="wrong-key-" + "x" * 20)
    assert caught.value.status == 401 and caught.value.code == "provider_authentication_failed"
    assert "wrong-key" not in caught.value.message and fake.requests == []


def test_the_token_is_cached_across_requests(fake: FakeWatsonx) -> None:
    async def body(provider: WatsonxProvider) -> None:
        for _ in range(3):
            await provider.chat(chat_request(), "m")
        await provider.embed(EmbeddingRequest(model="e", input="x"), "e")

    run(fake, body)
    assert len(fake.token_requests) == 1 and len(fake.requests) == 4
    assert len({r.headers["authorization"] for r in fake.requests}) == 1


def test_the_token_is_refreshed_before_it_expires_without_a_failed_request(fake: FakeWatsonx) -> None:
    fake.token_ttl = 1.0

    async def body(provider: WatsonxProvider) -> list[str]:
        first = await provider.chat(chat_request("one"), "m")
        await asyncio.sleep(0.95)  # past 90 % of the lifetime: refreshed early, never used expired
        second = await provider.chat(chat_request("two"), "m")
        return [first.choices[0].message.content or "", second.choices[0].message.content or ""]

    assert run(fake, body) == ["Echo: one", "Echo: two"]
    assert len(fake.token_requests) == 2 and len(fake.requests) == 2


def test_a_revoked_token_is_replaced_once(fake: FakeWatsonx) -> None:
    async def body(provider: WatsonxProvider) -> str | None:
        await provider.chat(chat_request(), "m")
        fake.revoke_tokens()
        return (await provider.chat(chat_request("again"), "m")).choices[0].message.content

    assert run(fake, body) == "Echo: again"
    assert len(fake.token_requests) == 2 and [r.path for r in fake.requests].count("/ml/v1/text/chat") == 3


def test_concurrent_first_requests_fetch_one_token(fake: FakeWatsonx) -> None:
    fake.iam_delay = 0.3

    async def body(provider: WatsonxProvider) -> int:
        results = await asyncio.gather(*(provider.chat(chat_request(f"n{i}"), "m") for i in range(20)))
        return len(results)

    assert run(fake, body) == 20
    assert len(fake.token_requests) == 1


# ---- outbound wire format -----------------------------------------------------------------------


def test_chat_request_on_the_wire(fake: FakeWatsonx) -> None:
    request = chat_request(
        messages=[
            {"role": "system", "content": "be terse"},
            {"role": "developer", "content": "answer in English"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ],
            },
        ],
        max_tokens=50,
        temperature=0.2,
        top_p=0.9,
        seed=7,
        stop="END",
        tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        tool_choice={"type": "function", "function": {"name": "f"}},
        response_format={"type": "json_object"},
        time_limit=5000,
        unknown_extra=1,
    )
    run(fake, lambda p: p.chat(request, "ibm/granite-vision"))
    sent = fake.requests[0]
    assert sent.path == "/ml/v1/text/chat" and sent.query == "version=2024-10-17"
    assert sent.headers["content-type"] == "application/json"
    body = sent.json
    assert (
        body["project_id"] == PROJECT and "space_id" not in body and body["model_id"] == "ibm/granite-vision"
    )
    assert [m["role"] for m in body["messages"]] == ["system", "system", "user"]
    assert body["messages"][2]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,AAAA"},
    }
    assert (
        body["tool_choice"] == {"type": "function", "function": {"name": "f"}}
        and "tool_choice_option" not in body
    )
    assert body["stop"] == ["END"] and body["seed"] == 7 and body["max_tokens"] == 50
    assert body["response_format"] == {"type": "json_object"} and body["time_limit"] == 5000
    assert "unknown_extra" not in body and "model" not in body and "stream" not in body


def test_space_scope_and_api_version(fake: FakeWatsonx) -> None:
    fake.project_id, fake.space_id = None, "space-9"
    run(
        fake,
        lambda p: p.chat(chat_request(), "m"),
        project_id=None,
        space_id="space-9",
        api_version="2025-02-11",
    )
    assert fake.requests[0].json["space_id"] == "space-9" and "project_id" not in fake.requests[0].json
    assert fake.requests[0].query == "version=2025-02-11"


def test_tool_choice_strings_are_tool_choice_option() -> None:
    tools = [{"type": "function", "function": {"name": "f"}}]
    for choice in ("auto", "none", "required"):
        body = convert.chat_payload(
            chat_request(tools=tools, tool_choice=choice), "m", {"project_id": "p"}, "wx"
        )
        assert body["tool_choice_option"] == choice and "tool_choice" not in body


def test_assistant_tool_calls_and_tool_results_keep_their_shape() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "18"}]},
    ]
    body = convert.chat_payload(chat_request(messages=messages), "m", {"project_id": "p"}, "wx")
    assert body["messages"][1] == {"role": "assistant", "tool_calls": [call]}
    assert body["messages"][2] == {"role": "tool", "content": "18", "tool_call_id": "call_1"}


def test_generation_and_embedding_payloads() -> None:
    request = decode_request(
        json.dumps(
            {"model": "x", "prompt": "say hi", "max_tokens": 5, "stop": ["."], "seed": 3, "top_k": 4}
        ).encode(),
        CompletionRequest,
    )
    body = convert.generation_payload(request, "ibm/granite", {"space_id": "s"}, "wx")
    assert body == {
        "model_id": "ibm/granite",
        "input": "say hi",
        "space_id": "s",
        "parameters": {
            "decoding_method": "sample",
            "max_new_tokens": 5,
            "top_k": 4,
            "random_seed": 3,
            "stop_sequences": ["."],
        },
    }
    embed = convert.embedding_payload(
        EmbeddingRequest(model="e", input=["a", "b"]), "ibm/slate", {"project_id": "p"}, "wx"
    )
    assert embed == {"model_id": "ibm/slate", "inputs": ["a", "b"], "project_id": "p"}
    with pytest.raises(ClientError):
        convert.embedding_payload(EmbeddingRequest(model="e", input=[1, 2]), "m", {"project_id": "p"}, "wx")
    with pytest.raises(ClientError):
        convert.embedding_payload(
            EmbeddingRequest(model="e", input="a", dimensions=4), "m", {"project_id": "p"}, "wx"
        )


def test_chat_tools_and_usage(fake: FakeWatsonx) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    result = run(fake, lambda p: p.chat(chat_request("weather in Paris and Tokyo?", tools=tools), "m"))
    calls = result.choices[0].message.tool_calls
    assert result.choices[0].finish_reason == "tool_calls" and isinstance(calls, list)
    assert [json.loads(c.function.arguments)["city"] for c in calls] == ["Paris", "Tokyo"]
    assert (
        result.usage
        and result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens
    )


def test_stream_chunks_and_usage(fake: FakeWatsonx) -> None:
    request = chat_request("stream these words", stream=True, stream_options={"include_usage": True})
    chunks: list[ChatChunk] = run(fake, lambda p: collect(p.stream_chat(request, "m")))
    assert fake.requests[0].path == "/ml/v1/text/chat_stream"
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: stream these words"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "stop"
    ]
    assert chunks[-1].choices == [] and chunks[-1].usage and chunks[-1].usage.completion_tokens == 4
    assert all(c.usage is None for c in chunks[:-1])


@pytest.mark.parametrize(
    ("model", "code"), [("midstream-error", "internal_error"), ("midstream-drop", "upstream_disconnected")]
)
def test_a_failing_stream_raises(fake: FakeWatsonx, model: str, code: str) -> None:
    seen: list[Any] = []

    async def body(provider: WatsonxProvider) -> None:
        async for chunk in provider.stream_chat(chat_request("a b c d e f g", stream=True), model):
            seen.append(chunk)

    with pytest.raises(UpstreamError) as caught:
        run(fake, body)
    assert caught.value.code == code and caught.value.status >= 500 and seen


def test_completions_and_streamed_completions(fake: FakeWatsonx) -> None:
    request = decode_request(
        json.dumps({"model": "x", "prompt": "one two three four", "max_tokens": 3}).encode(),
        CompletionRequest,
    )
    whole = run(fake, lambda p: p.complete(request, "m"))
    assert whole.choices[0].text == "Echo: one two" and whole.choices[0].finish_reason == "length"
    assert fake.requests[0].json["parameters"]["max_new_tokens"] == 3
    pieces = run(fake, lambda p: collect(p.stream_complete(request, "m")))
    assert "".join(p.choices[0].text for p in pieces) == whole.choices[0].text
    assert pieces[-1].choices[0].finish_reason == "length"


def test_embeddings(fake: FakeWatsonx) -> None:
    result = run(fake, lambda p: p.embed(EmbeddingRequest(model="e", input=["a b", "c"]), "ibm/slate"))
    assert [d.index for d in result.data] == [0, 1] and result.usage.prompt_tokens == 3
    b64 = run(
        fake, lambda p: p.embed(EmbeddingRequest(model="e", input="a b", encoding_format="base64"), "m")
    )
    assert isinstance(b64.data[0].embedding, str)


# ---- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "client_status", "code"),
    [
        (400, 400, "json_validation_error"),
        (401, 401, "provider_authentication_failed"),
        (403, 403, "provider_permission_denied"),
        (404, 404, "model_not_supported"),
        (429, 429, "token_quota_reached"),
        (500, 502, "internal_error"),
        (503, 503, "service_unavailable"),
        (529, 503, "simulated_error"),
    ],
)
def test_error_scenarios(fake: FakeWatsonx, status: int, client_status: int, code: str) -> None:
    with pytest.raises(UpstreamError) as caught:
        run(fake, lambda p: p.chat(chat_request(), f"error-{status}"))
    assert (caught.value.status, caught.value.code, caught.value.upstream_status) == (
        client_status,
        code,
        status,
    )
    assert caught.value.retry_after == (7.0 if status == 429 else None)


def test_401_message_never_carries_upstream_text_and_secrets_are_masked() -> None:
    body = json.dumps({"errors": [{"code": "x", "message": f"bad key {KEY}"}], "status_code": 400}).encode()
    assert KEY not in parse_error("wx", 400, body, {}, KEY).message
    assert "bad key" not in parse_error("wx", 401, body, {}, KEY).message


def test_garbage_is_a_502(fake: FakeWatsonx) -> None:
    for call in (
        lambda p: p.chat(chat_request(), "garbage"),
        lambda p: collect(p.stream_chat(chat_request(), "garbage")),
    ):
        with pytest.raises(UpstreamError) as caught:
            run(fake, call)
        assert caught.value.status == 502 and caught.value.code == "bad_upstream_response"


def test_token_refresh_timing_is_early() -> None:
    from modelyard.providers.iam import IamToken, refresh_at

    assert refresh_at(IamToken("t", expires_in=3600), 0.0) == 3540.0
    assert refresh_at(IamToken("t", expires_in=10), 0.0) == 9.0
    assert refresh_at(IamToken("t", expiration=time.time() + 100), 0.0) < 100


def test_ibm_sdk_core_service_reads_the_fakes_answers_and_errors(fake: FakeWatsonx) -> None:
    """IBM's generic service client (IAM auth, `errors[0].message` parsing) against the fake."""
    from ibm_cloud_sdk_core import ApiException, BaseService  # type: ignore[import-untyped]
    from ibm_cloud_sdk_core.authenticators import IAMAuthenticator

    service = BaseService(service_url=fake.base_url, authenticator=IAMAuthenticator(KEY, url=fake.base_url))

    def post(path: str, body: dict[str, Any]) -> Any:
        request = service.prepare_request(
            "POST", path, params={"version": "2024-10-17"}, data=json.dumps({**body, "project_id": PROJECT})
        )
        return service.send(request)

    messages = [{"role": "user", "content": "hello sdk"}]
    answer = post("/ml/v1/text/chat", {"model_id": "ibm/granite", "messages": messages}).get_result()
    assert answer["choices"][0]["message"]["content"] == "Echo: hello sdk"
    for status in (404, 429, 500):
        with pytest.raises(ApiException) as caught:
            post("/ml/v1/text/chat", {"model_id": f"error-{status}", "messages": messages})
        assert caught.value.status_code == status
        assert caught.value.message == fake_message(status)
    bad = BaseService(service_url=fake.base_url, authenticator=IAMAuthenticator("nope", url=fake.base_url))
    with pytest.raises(ApiException) as refused:
        bad.send(bad.prepare_request("POST", "/ml/v1/text/chat", params={"version": "v"}, data="{}"))
    assert refused.value.status_code == 400 and "API key could not be found" in refused.value.message


def fake_message(status: int) -> str:
    from tests.fakes.watsonx_upstream import _ERROR_CODES

    return _ERROR_CODES[status][1].format(model=f"error-{status}")


def test_a_revoked_token_is_replaced_before_a_stream_starts(fake: FakeWatsonx) -> None:
    async def body(provider: WatsonxProvider) -> str:
        await provider.chat(chat_request(), "m")
        fake.revoke_tokens()
        chunks = await collect(provider.stream_chat(chat_request("streamed", stream=True), "m"))
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    assert run(fake, body) == "Echo: streamed"
    assert len(fake.token_requests) == 2
