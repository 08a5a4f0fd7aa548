"""Azure OpenAI: settings, the fake checked with the official SDK, outbound parity, Entra ID tokens."""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import httpx
import msgspec
import openai
import pytest
from modelyard.errors import GatewayError, UpstreamError
from modelyard.providers.azure_auth import refresh_delay
from modelyard.providers.azure_openai import AZURE_OPENAI, AzureOpenAIProvider, AzureOpenAISettings
from modelyard.providers.base import argument_problems
from modelyard.schema.chat import ChatRequest
from modelyard.schema.completions import CompletionRequest
from modelyard.schema.embeddings import EmbeddingRequest
from modelyard.transport import HttpTransport
from pydantic import ValidationError

from tests.fakes.azure_upstream import SCOPE, FakeAzureOpenAI
from tests.fakes.openai_upstream import RecordedRequest

KEY = "azure-test-key-0123456789"
API_VERSION = "2024-10-21"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
T = TypeVar("T")


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAzureOpenAI]:
    with FakeAzureOpenAI(api_key=KEY) as server:
        yield server


@pytest.fixture(autouse=True)
def _reset(fake: FakeAzureOpenAI) -> None:
    fake.clear()
    fake.tokens.clear()
    fake.token_lifetime, fake.token_delay, fake.token_failure = 3600.0, 0.0, None


def key_data(fake: FakeAzureOpenAI) -> dict[str, Any]:
    return {"apikey": KEY, "resource_name": "res", "base_url": fake.base_url, "api_version": API_VERSION}


def entra_data(fake: FakeAzureOpenAI, **overrides: Any) -> dict[str, Any]:
    data = {
        "resource_name": "res",
        "base_url": fake.base_url,
        "api_version": API_VERSION,
        "entra_tenant_id": fake.tenant_id,
        "entra_client_id": fake.client_id,
        "entra_client_secret": fake.client_secret,
        "entra_authority": fake.base_url,
    }
    return {**data, **overrides}


def run(data: dict[str, Any], work: Callable[[AzureOpenAIProvider], Awaitable[T]]) -> T:
    async def main() -> T:
        transport = HttpTransport()
        try:
            provider = AZURE_OPENAI.create("az", data, transport)
            assert isinstance(provider, AzureOpenAIProvider)
            return await work(provider)
        finally:
            await transport.close()

    return asyncio.run(main())


def chat_request(**fields: Any) -> ChatRequest:
    return msgspec.convert({"model": "alias", **fields}, ChatRequest)


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


async def collect(stream: AsyncIterator[T]) -> list[T]:
    return [item async for item in stream]


def token_for(fake: FakeAzureOpenAI) -> str:
    response = httpx.post(
        f"{fake.base_url}/{fake.tenant_id}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": fake.client_id,
            "client_secret": fake.client_secret,
            "scope": SCOPE,
        },
    )
    response.raise_for_status()
    return str(response.json()["access_token"])


def sdk_with_key(fake: FakeAzureOpenAI) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        azure_endpoint=fake.base_url, api_key=KEY, api_version=API_VERSION, max_retries=0, timeout=10
    )


def sdk_with_entra(fake: FakeAzureOpenAI) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        azure_endpoint=fake.base_url,
        azure_ad_token_provider=lambda: token_for(fake),
        api_version=API_VERSION,
        max_retries=0,
        timeout=10,
    )


# ---- settings ---------------------------------------------------------------------------------------


def test_settings_need_exactly_one_auth_method() -> None:
    entra = {"entra_tenant_id": "t", "entra_client_id": "c", "entra_client_secret": "s3cret"}
    assert AzureOpenAISettings.model_validate({"apikey": "k", "resource_name": "r"}).apikey is not None
    settings = AzureOpenAISettings.model_validate({"resource_name": "r", **entra})
    assert settings.endpoint == "https://r.openai.azure.com" and settings.apikey is None
    for bad in (
        {"resource_name": "r"},
        {"resource_name": "r", "apikey": "k", **entra},
        {"resource_name": "r", "entra_tenant_id": "t", "entra_client_secret": "s3cret"},
    ):
        with pytest.raises(ValidationError) as caught:
            AzureOpenAISettings.model_validate(bad)
        assert "s3cret" not in argument_problems(caught.value)
    spelled = AzureOpenAISettings.model_validate(
        {"apiKey": "k", "resourceName": "r", "apiVersion": "2025-01-01", "baseURL": "http://127.0.0.1:1/"}
    )
    assert spelled.endpoint == "http://127.0.0.1:1" and spelled.api_version == "2025-01-01"


def test_refresh_delay_is_five_minutes_early_for_hour_tokens() -> None:
    assert refresh_delay(3600) == 3300 and 0 < refresh_delay(1) < 1


# ---- the fake, checked with the official SDK --------------------------------------------------------


@pytest.mark.parametrize("make_sdk", [sdk_with_key, sdk_with_entra], ids=["api-key", "entra"])
def test_sdk_unary_stream_tools(
    fake: FakeAzureOpenAI, make_sdk: Callable[[FakeAzureOpenAI], openai.AzureOpenAI]
) -> None:
    with make_sdk(fake) as sdk:
        result = sdk.chat.completions.create(model="my-gpt", messages=[user("hello azure")])
        assert result.choices[0].message.content == "Echo: hello azure"
        assert result.usage is not None and result.usage.prompt_tokens == 2
        chunks = list(
            sdk.chat.completions.create(
                model="my-gpt",
                messages=[user("hello azure")],
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        assert chunks[0].choices == [] and chunks[-1].usage is not None
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices and c.choices[0].delta)
        assert text == "Echo: hello azure"
        tools = sdk.chat.completions.create(
            model="my-gpt",
            messages=[user("weather in Paris and Tokyo?")],
            tools=[WEATHER],  # type: ignore[list-item]
        )
        calls = tools.choices[0].message.tool_calls or []
        assert [json.loads(c.function.arguments)["city"] for c in calls] == ["Paris", "Tokyo"]  # type: ignore[union-attr]
        embedding = sdk.embeddings.create(model="my-embed", input=["a", "b"])
        assert [d.index for d in embedding.data] == [0, 1]
    paths = {r.path for r in fake.requests}
    assert paths == {"/openai/deployments/my-gpt/chat/completions", "/openai/deployments/my-embed/embeddings"}


@pytest.mark.parametrize(
    ("model", "error_class"),
    [
        ("error-400", openai.BadRequestError),
        ("content-filter", openai.BadRequestError),
        ("error-401", openai.AuthenticationError),
        ("error-403", openai.PermissionDeniedError),
        ("error-404", openai.NotFoundError),
        ("error-429", openai.RateLimitError),
        ("error-500", openai.InternalServerError),
        ("error-503", openai.InternalServerError),
    ],
)
def test_sdk_error_classes(
    fake: FakeAzureOpenAI, model: str, error_class: type[openai.APIStatusError]
) -> None:
    with sdk_with_key(fake) as sdk, pytest.raises(error_class) as caught:
        sdk.chat.completions.create(model=model, messages=[user("hi")])
    if model == "content-filter":
        assert caught.value.code == "content_filter"
    if model == "error-429":
        assert caught.value.response.headers["retry-after"] == "7"


def test_sdk_with_a_wrong_key_is_refused(fake: FakeAzureOpenAI) -> None:
    with (
        openai.AzureOpenAI(
            azure_endpoint=fake.base_url, api_key="wrong", api_version=API_VERSION, max_retries=0
        ) as sdk,
        pytest.raises(openai.AuthenticationError),
    ):
        sdk.chat.completions.create(model="my-gpt", messages=[user("hi")])


# ---- outbound parity: the adapter sends what the SDK sends ------------------------------------------


def _comparable(record: RecordedRequest) -> tuple[Any, ...]:
    auth = {k: v for k, v in record.headers.items() if k in ("api-key", "authorization")}
    auth = {k: ("Bearer <token>" if v.startswith("Bearer ") else v) for k, v in auth.items()}
    query = urllib.parse.parse_qs(record.query)
    return record.method, record.path, query, auth, record.headers.get("content-type"), record.json


CALL = {
    "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "weather in Paris?"}]},
    ],
    "tools": [WEATHER],
    "tool_choice": "auto",
    "temperature": 0.5,
    "top_p": 0.9,
    "max_tokens": 30,
    "seed": 7,
    "stop": ["zzz"],
    "user": "someone",
    "response_format": {"type": "json_object"},
}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("auth", ["api-key", "entra"])
def test_adapter_request_matches_sdk(fake: FakeAzureOpenAI, auth: str, stream: bool) -> None:
    extra: dict[str, Any] = {"stream": True, "stream_options": {"include_usage": True}} if stream else {}
    with (sdk_with_key if auth == "api-key" else sdk_with_entra)(fake) as sdk:
        result = sdk.chat.completions.create(model="dep-1", **CALL, **extra)  # type: ignore[call-overload]
        list(result) if stream else None
    sdk_request = fake.requests[-1]
    fake.clear()
    data = key_data(fake) if auth == "api-key" else entra_data(fake)

    async def work(provider: AzureOpenAIProvider) -> None:
        request = chat_request(**CALL, **extra)
        if stream:
            await collect(provider.stream_chat(request, "dep-1"))
        else:
            await provider.chat(request, "dep-1")

    run(data, work)
    assert _comparable(fake.requests[-1]) == _comparable(sdk_request)
    assert fake.requests[-1].json["model"] == "dep-1"  # the SDK sends the deployment as model too


def test_completions_and_embeddings_paths_match_sdk(fake: FakeAzureOpenAI) -> None:
    with sdk_with_key(fake) as sdk:
        sdk.completions.create(model="instruct", prompt="say hi", max_tokens=5)
        sdk.embeddings.create(model="embed", input=["x"], encoding_format="float")
    sdk_requests = list(fake.requests)
    fake.clear()

    async def work(provider: AzureOpenAIProvider) -> None:
        await provider.complete(
            msgspec.convert({"model": "a", "prompt": "say hi", "max_tokens": 5}, CompletionRequest),
            "instruct",
        )
        await provider.embed(
            msgspec.convert({"model": "a", "input": ["x"], "encoding_format": "float"}, EmbeddingRequest),
            "embed",
        )

    run(key_data(fake), work)
    assert [_comparable(r) for r in fake.requests] == [_comparable(r) for r in sdk_requests]


# ---- adapter behaviour --------------------------------------------------------------------------------


def test_stream_drops_filter_annotations_and_maps_usage(fake: FakeAzureOpenAI) -> None:
    async def work(provider: AzureOpenAIProvider) -> list[Any]:
        request = chat_request(messages=[user("a b c")], stream=True, stream_options={"include_usage": True})
        return await collect(provider.stream_chat(request, "dep"))

    chunks = run(key_data(fake), work)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.id for c in chunks), "Azure's prompt-filter and annotation chunks are dropped"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "stop"
    ]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4


def test_content_filter_finish_reason_and_error(fake: FakeAzureOpenAI) -> None:
    async def work(provider: AzureOpenAIProvider) -> tuple[Any, list[Any], UpstreamError]:
        unary = await provider.chat(chat_request(messages=[user("x")]), "filtered-output")
        streamed = await collect(
            provider.stream_chat(chat_request(messages=[user("x")], stream=True), "filtered-output")
        )
        try:
            await provider.chat(chat_request(messages=[user("x")]), "content-filter")
        except UpstreamError as error:
            return unary, streamed, error
        raise AssertionError("no content filter error")

    unary, streamed, error = run(key_data(fake), work)
    assert unary.choices[0].finish_reason == "content_filter" and unary.choices[0].message.content is None
    assert streamed[-1].choices[0].finish_reason == "content_filter"
    assert (error.status, error.code, error.param) == (400, "content_filter", "prompt")


def test_completion_stream_and_errors(fake: FakeAzureOpenAI) -> None:
    async def work(provider: AzureOpenAIProvider) -> tuple[list[Any], list[GatewayError]]:
        request = msgspec.convert({"model": "a", "prompt": "one two", "stream": True}, CompletionRequest)
        chunks = await collect(provider.stream_complete(request, "instruct"))
        errors = []
        for model in ("error-429", "error-401", "error-404", "midstream-drop", "garbage"):
            try:
                await collect(
                    provider.stream_chat(chat_request(messages=[user("a b c d e f")], stream=True), model)
                )
            except GatewayError as error:
                errors.append(error)
        return chunks, errors

    chunks, errors = run(key_data(fake), work)
    assert "".join(c.choices[0].text for c in chunks) == "Echo: one two"
    rate, denied, missing, dropped, garbage = errors
    assert (rate.status, rate.code, rate.retry_after) == (429, None, 7.0)
    assert (
        denied.status == 401 and denied.code == "provider_authentication_failed" and KEY not in denied.message
    )
    assert (missing.status, missing.code) == (404, "DeploymentNotFound")
    assert dropped.status == 502 and garbage.status == 502


# ---- Microsoft Entra ID tokens --------------------------------------------------------------------


def test_concurrent_requests_share_one_token_fetch(fake: FakeAzureOpenAI) -> None:
    fake.token_delay = 0.3

    async def work(provider: AzureOpenAIProvider) -> list[Any]:
        calls = [provider.chat(chat_request(messages=[user(f"n{i}")]), "dep") for i in range(20)]
        return await asyncio.gather(*calls)

    results = run(entra_data(fake), work)
    assert len(results) == 20 and len(fake.token_requests) == 1
    form = urllib.parse.parse_qs(fake.token_requests[0].body.decode())
    assert form == {
        "grant_type": ["client_credentials"],
        "client_id": [fake.client_id],
        "client_secret": [fake.client_secret],
        "scope": [SCOPE],
    }
    assert {r.headers["authorization"] for r in fake.requests} == {f"Bearer {next(iter(fake.tokens))}"}


def test_token_is_refreshed_before_expiry_without_a_failed_request(fake: FakeAzureOpenAI) -> None:
    fake.token_lifetime = 1.0

    async def work(provider: AzureOpenAIProvider) -> int:
        for i in range(4):
            await provider.chat(chat_request(messages=[user(f"n{i}")]), "dep")
            await asyncio.sleep(0.5)
        return provider.entra.fetches if provider.entra else 0

    fetches = run(entra_data(fake), work)
    assert fetches >= 2 and len(fake.token_requests) == fetches
    assert len({r.headers["authorization"] for r in fake.requests}) >= 2


def test_data_plane_401_drops_the_cached_token(fake: FakeAzureOpenAI) -> None:
    async def work(provider: AzureOpenAIProvider) -> str:
        await provider.chat(chat_request(messages=[user("a")]), "dep")
        fake.tokens.clear()  # the tenant revoked it
        with pytest.raises(UpstreamError) as caught:
            await provider.chat(chat_request(messages=[user("b")]), "dep")
        await provider.chat(chat_request(messages=[user("c")]), "dep")
        return caught.value.code or ""

    assert run(entra_data(fake), work) == "provider_authentication_failed"
    assert len(fake.token_requests) == 2


@pytest.mark.parametrize(
    ("overrides", "failure", "status", "code"),
    [
        ({"entra_client_secret": "wrong-secret-value"}, None, 401, "provider_authentication_failed"),
        ({}, 503, 503, "provider_token_unavailable"),
        ({}, 500, 503, "provider_token_unavailable"),
        ({"entra_authority": "http://127.0.0.1:9"}, None, 503, "provider_token_unavailable"),
    ],
)
def test_token_endpoint_failures(
    fake: FakeAzureOpenAI, overrides: dict[str, Any], failure: int | None, status: int, code: str
) -> None:
    fake.token_failure = failure

    async def work(provider: AzureOpenAIProvider) -> UpstreamError:
        with pytest.raises(UpstreamError) as caught:
            await collect(provider.stream_chat(chat_request(messages=[user("a")], stream=True), "dep"))
        return caught.value

    error = run(entra_data(fake, **overrides), work)
    assert (error.status, error.code) == (status, code)
    assert "secret" not in error.message and "127.0.0.1" not in error.message
    assert fake.requests == []


def test_concurrent_requests_share_one_failing_token_fetch(fake: FakeAzureOpenAI) -> None:
    fake.token_delay, fake.token_failure = 0.3, 503

    async def work(provider: AzureOpenAIProvider) -> list[Any]:
        calls = [provider.chat(chat_request(messages=[user(f"n{i}")]), "dep") for i in range(10)]
        return await asyncio.gather(*calls, return_exceptions=True)

    outcomes = run(entra_data(fake), work)
    assert {(e.status, e.code) for e in outcomes} == {(503, "provider_token_unavailable")}
    assert len(fake.token_requests) == 1


def test_top_k_is_dropped_and_extras_pass_through(fake: FakeAzureOpenAI) -> None:
    async def work(provider: AzureOpenAIProvider) -> None:
        request = chat_request(messages=[user("x")], top_k=5, **{"$extras": {"data_sources": []}})
        await provider.chat(request, "dep")

    run(key_data(fake), work)
    body = fake.requests[-1].json
    assert "top_k" not in body and body["data_sources"] == []
