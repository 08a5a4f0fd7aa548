"""The Vertex AI adapter: service-account OAuth, Gemini, Claude on Vertex and embeddings against the
native fake; the fake checked against Google's and Anthropic's official SDKs (google-auth,
google-genai, anthropic.AnthropicVertex), which also give the reference outbound requests."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import anthropic
import pytest
from google.auth.transport.requests import Request as GoogleRequest
from google.oauth2 import service_account
from modelyard.errors import GatewayError, UpstreamError
from modelyard.providers.google_auth import GoogleTokenClient
from modelyard.providers.vertex import VERTEX, VertexProvider, claude_body
from modelyard.schema.chat import ChatChunk, ChatRequest
from modelyard.schema.decode import decode_request
from modelyard.schema.embeddings import EmbeddingRequest
from modelyard.transport import HttpTransport

from tests.fakes.vertex_upstream import FakeVertex, generate_key, service_account_info

T = TypeVar("T")
SCOPE = "https://www.googleapis.com/auth/cloud-platform"
PROJECT = "modelyard-test"
REGION = "us-central1"
CLAUDE = "claude-sonnet-4@20250514"
GEMINI = "gemini-2.0-flash"
EMBED = "text-embedding-005"
IMAGE = "data:image/png;base64,iVBORw0KGgo="
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
KEY = generate_key()


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeVertex]:
    server = FakeVertex(KEY.public_key(), project=PROJECT, region=REGION)
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _reset(fake: FakeVertex) -> None:
    fake.clear()
    fake.token_status = None
    fake.token_lifetime = 3599


def info(fake: FakeVertex) -> dict[str, Any]:
    return service_account_info(fake, KEY)


def request(**fields: Any) -> ChatRequest:
    fields.setdefault("model", "m")
    fields.setdefault("messages", [{"role": "user", "content": "hi"}])
    return decode_request(json.dumps(fields).encode(), ChatRequest)


def adapter(fake: FakeVertex, key: dict[str, Any] | None = None) -> VertexProvider:
    data = {
        "private_key": json.dumps(key or info(fake)),
        "region": REGION,
        "project_id": PROJECT,
        "base_url": fake.base_url,
    }
    provider = VERTEX.create("vtx", data, HttpTransport())
    assert isinstance(provider, VertexProvider)
    return provider


def run(fake: FakeVertex, work: Callable[[VertexProvider], Awaitable[T]], key: Any = None) -> T:
    async def go() -> T:
        provider = adapter(fake, key)
        try:
            return await work(provider)
        finally:
            await provider.transport.close()

    return asyncio.run(asyncio.wait_for(go(), 20))


async def collect(stream: AsyncIterator[ChatChunk]) -> tuple[list[ChatChunk], GatewayError | None]:
    chunks: list[ChatChunk] = []
    try:
        async for chunk in stream:
            chunks.append(chunk)
    except GatewayError as exc:
        return chunks, exc
    return chunks, None


def text_of(chunks: list[ChatChunk]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def jwt_parts(assertion: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header, claims, _ = (base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)) for p in assertion.split("."))
    return json.loads(header), json.loads(claims)


def assertion_of(fake: FakeVertex) -> str:
    token_posts = [r for r in fake.requests if r.path == "/token"]
    form = dict(pair.split("=", 1) for pair in token_posts[-1].body.decode().split("&"))
    assert form["grant_type"] == "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer"
    return form["assertion"]


# --------------------------------------------------------------------------------------------------
# OAuth


def test_google_auth_gets_a_token_from_the_fake_and_our_jwt_matches_its(fake: FakeVertex) -> None:
    credentials = service_account.Credentials.from_service_account_info(info(fake), scopes=[SCOPE])
    credentials.refresh(GoogleRequest())
    assert credentials.token in fake.issued
    sdk_header, sdk_claims = jwt_parts(assertion_of(fake))

    token = run(fake, lambda p: p.auth.token())
    assert token in fake.issued and token != credentials.token
    header, claims = jwt_parts(assertion_of(fake))
    assert header == sdk_header == {"alg": "RS256", "typ": "JWT", "kid": fake.key_id}
    assert {k: claims[k] for k in ("iss", "scope", "aud")} == {
        k: sdk_claims[k] for k in ("iss", "scope", "aud")
    }
    assert claims["aud"] == "https://oauth2.googleapis.com/token" and claims["exp"] - claims["iat"] == 3600


def test_a_wrong_key_is_refused_by_the_fake_and_google_auth_sees_it(fake: FakeVertex) -> None:
    other = service_account_info(fake, generate_key())
    credentials = service_account.Credentials.from_service_account_info(other, scopes=[SCOPE])
    with pytest.raises(Exception, match="invalid_grant"):
        credentials.refresh(GoogleRequest())
    with pytest.raises(UpstreamError) as caught:
        run(fake, lambda p: p.embed(EmbeddingRequest(model="e", input="x"), EMBED), key=other)
    assert caught.value.status == 401 and caught.value.code == "provider_authentication_failed"
    assert "PRIVATE KEY" not in caught.value.message


@pytest.mark.parametrize(
    ("status", "expected"), [(400, 401), (401, 401), (403, 401), (500, 503), (503, 503), (429, 429)]
)
def test_token_endpoint_errors(fake: FakeVertex, status: int, expected: int) -> None:
    fake.token_status = status
    with pytest.raises(UpstreamError) as caught:
        run(fake, lambda p: p.auth.token())
    assert caught.value.status == expected and caught.value.upstream_status == status


def test_unusable_key_json_is_a_401_without_the_secret(fake: FakeVertex) -> None:
    bad = {**info(fake), "private_key": "-----BEGIN PRIVATE KEY-----\nnot-a-key\n-----END PRIVATE KEY-----\n"}
    with pytest.raises(UpstreamError) as caught:
        run(fake, lambda p: p.auth.token(), key=bad)
    assert caught.value.status == 401 and "not-a-key" not in caught.value.message
    assert [r for r in fake.requests if r.path == "/token"] == []


def test_one_fetch_for_concurrent_callers_then_refresh_before_expiry(fake: FakeVertex) -> None:
    async def go() -> None:
        now = [1000.0]
        transport = HttpTransport()
        client = GoogleTokenClient(transport, "vtx", json.dumps(info(fake)), clock=lambda: now[0])
        try:
            tokens = await asyncio.gather(*(client.token() for _ in range(20)))
            assert len(set(tokens)) == 1 and client.fetches == 1
            now[0] += 3000  # well inside the hour: cached
            assert await client.token() == tokens[0] and client.fetches == 1
            now[0] += 300  # within the early-refresh margin of the 3599 s lifetime
            assert await client.token() != tokens[0] and client.fetches == 2
        finally:
            await transport.close()

    asyncio.run(asyncio.wait_for(go(), 20))


def test_a_revoked_token_is_replaced_once(fake: FakeVertex) -> None:
    async def work(provider: VertexProvider) -> None:
        await provider.embed(EmbeddingRequest(model="e", input="warm up"), EMBED)
        fake.revoke_tokens()
        result = await provider.embed(EmbeddingRequest(model="e", input="again"), EMBED)
        assert result.data and provider.auth.fetches == 2

    run(fake, work)


# --------------------------------------------------------------------------------------------------
# Claude on Vertex


def test_claude_body_is_the_messages_body_without_model() -> None:
    out = claude_body(request(max_tokens=7, stop="x"), CLAUDE, stream=True, provider="vtx")
    assert "model" not in out and out["anthropic_version"] == "vertex-2023-10-16"
    assert out["max_tokens"] == 7 and out["stream"] is True and out["stop_sequences"] == ["x"]
    assert claude_body(request(), CLAUDE, stream=False, provider="vtx")["max_tokens"] == 4096


def test_claude_chat_stream_tools_and_json(fake: FakeVertex) -> None:
    async def work(provider: VertexProvider) -> None:
        text = await provider.chat(
            request(
                messages=[{"role": "system", "content": "s"}, {"role": "user", "content": "hello vertex"}]
            ),
            CLAUDE,
        )
        assert text.choices[0].message.content == "Echo: hello vertex" and text.usage.prompt_tokens > 0
        tools = await provider.chat(
            request(messages=[{"role": "user", "content": "weather in Paris and Tokyo?"}], tools=[WEATHER]),
            CLAUDE,
        )
        calls = tools.choices[0].message.tool_calls
        assert tools.choices[0].finish_reason == "tool_calls"
        assert [json.loads(c.function.arguments)["city"] for c in calls] == ["Paris", "Tokyo"]  # type: ignore[union-attr]
        as_json = await provider.chat(request(response_format={"type": "json_object"}), CLAUDE)
        assert json.loads(as_json.choices[0].message.content or "") == {"echo": "Echo: hi"}
        chunks, error = await collect(
            provider.stream_chat(
                request(
                    messages=[{"role": "user", "content": "stream me"}],
                    stream_options={"include_usage": True},
                ),
                CLAUDE,
            )
        )
        assert error is None and chunks[0].choices[0].delta.role == "assistant"
        assert text_of(chunks) == "Echo: stream me" and chunks[-1].usage.completion_tokens == 3  # type: ignore[union-attr]

    run(fake, work)
    paths = {r.path for r in fake.requests if r.path != "/token"}
    base = f"/v1/projects/{PROJECT}/locations/{REGION}/publishers/anthropic/models/{CLAUDE}"
    assert paths == {f"{base}:rawPredict", f"{base}:streamRawPredict"}


def test_claude_url_images_are_refused_before_any_call_and_data_urls_pass(fake: FakeVertex) -> None:
    link = [
        {"type": "text", "text": "see"},
        {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},
    ]
    with pytest.raises(GatewayError) as caught:
        run(fake, lambda p: p.chat(request(messages=[{"role": "user", "content": link}]), CLAUDE))
    assert caught.value.status == 400 and "vtx" in caught.value.message and fake.requests == []
    inline = [{"type": "text", "text": "see"}, {"type": "image_url", "image_url": {"url": IMAGE}}]
    result = run(fake, lambda p: p.chat(request(messages=[{"role": "user", "content": inline}]), CLAUDE))
    assert result.choices[0].message.content == "Echo: see [images: 1]"


def test_a_401_twice_is_the_gateway_credential_without_the_token(fake: FakeVertex) -> None:
    with pytest.raises(UpstreamError) as caught:
        run(fake, lambda p: p.chat(request(), "error-401"))
    assert caught.value.status == 401 and caught.value.code == "provider_authentication_failed"
    data_plane = [r for r in fake.requests if r.path != "/token"]
    assert len(data_plane) == 2 and not any(t in caught.value.message for t in fake.issued)


@pytest.mark.parametrize(("status", "expected"), [(400, 400), (403, 403), (429, 429), (529, 503), (500, 502)])
def test_claude_errors_are_anthropic_shaped(fake: FakeVertex, status: int, expected: int) -> None:
    with pytest.raises(UpstreamError) as caught:
        run(fake, lambda p: p.chat(request(), f"claude-error-{status}"))
    assert caught.value.status == expected
    if status == 429:
        assert caught.value.retry_after == 7
    if status == 403:
        assert caught.value.code == "provider_permission_denied"


def test_claude_midstream_drop_raises(fake: FakeVertex) -> None:
    chunks, error = run(
        fake,
        lambda p: collect(
            p.stream_chat(
                request(messages=[{"role": "user", "content": "a b c d e f"}]), "claude-midstream-drop"
            )
        ),
    )
    assert isinstance(error, UpstreamError) and error.status == 502 and text_of(chunks)


def test_anthropic_vertex_sdk_against_the_fake_and_our_request(fake: FakeVertex) -> None:
    credentials = service_account.Credentials.from_service_account_info(info(fake), scopes=[SCOPE])
    client = anthropic.AnthropicVertex(
        region=REGION,
        project_id=PROJECT,
        credentials=credentials,
        base_url=f"{fake.base_url}/v1",
        max_retries=0,
    )
    kwargs: dict[str, Any] = {
        "model": CLAUDE,
        "max_tokens": 100,
        "system": "be brief",
        "messages": [{"role": "user", "content": "weather in Paris?"}],
        "tools": [
            {
                "name": "get_weather",
                "description": "Current weather for a city",
                "input_schema": WEATHER["function"]["parameters"],
            }
        ],  # type: ignore[index]
        "stop_sequences": ["zzz"],
    }
    message = client.messages.create(**kwargs)
    assert message.stop_reason == "tool_use" and message.content[0].input == {"city": "Paris"}  # type: ignore[union-attr]
    sdk_request = fake.requests[-1]
    with client.messages.stream(
        **{**kwargs, "messages": [{"role": "user", "content": "hi there"}], "tools": []}
    ) as stream:
        assert stream.get_final_text() == "Echo: hi there"
    with pytest.raises(anthropic.RateLimitError):
        client.messages.create(**{**kwargs, "model": "claude-error-429"})
    with pytest.raises(anthropic.APIStatusError) as caught:
        client.messages.create(**{**kwargs, "model": "claude-error-529"})
    assert caught.value.status_code == 529

    fake.clear()
    ours = request(
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "weather in Paris?"},
        ],
        tools=[WEATHER],
        max_tokens=100,
        stop=["zzz"],
    )
    run(fake, lambda p: p.chat(ours, CLAUDE))
    mine = fake.requests[-1]
    assert (mine.path, mine.query) == (sdk_request.path, sdk_request.query)
    assert mine.json.pop("anthropic_version") == "vertex-2023-10-16"
    assert sdk_request.json.pop("anthropic_version")  # anthropic 2.12 sends its API version date here
    assert mine.json == sdk_request.json
    assert mine.headers["authorization"].startswith("Bearer ya29.") and sdk_request.headers[
        "authorization"
    ].startswith("Bearer ya29.")


# --------------------------------------------------------------------------------------------------
# Embeddings


def test_embeddings_and_the_genai_sdk(fake: FakeVertex) -> None:
    from google import genai
    from google.genai import types

    result = run(
        fake,
        lambda p: p.embed(EmbeddingRequest(model="e", input=["first text", "second"], dimensions=4), EMBED),
    )
    assert [d.index for d in result.data] == [0, 1] and len(result.data[0].embedding) == 4
    assert result.usage.prompt_tokens == 3
    mine = fake.requests[-1]
    as_b64 = run(
        fake,
        lambda p: p.embed(
            EmbeddingRequest(model="e", input="first text", dimensions=4, encoding_format="base64"), EMBED
        ),
    )
    assert list(struct.unpack("<4f", base64.b64decode(as_b64.data[0].embedding))) == result.data[0].embedding  # type: ignore[arg-type]

    credentials = service_account.Credentials.from_service_account_info(info(fake), scopes=[SCOPE])
    client = genai.Client(
        vertexai=True,
        project=PROJECT,
        location=REGION,
        credentials=credentials,
        http_options=types.HttpOptions(base_url=fake.base_url, api_version="v1"),
    )
    answer = client.models.embed_content(
        model=EMBED,
        contents=["first text", "second"],
        config=types.EmbedContentConfig(output_dimensionality=4),
    )
    assert answer.embeddings and answer.embeddings[0].values == result.data[0].embedding
    sdk_request = fake.requests[-1]
    assert (mine.path, mine.query) == (sdk_request.path, sdk_request.query)
    assert mine.json == sdk_request.json


def test_token_id_embedding_input_is_a_400(fake: FakeVertex) -> None:
    with pytest.raises(GatewayError) as caught:
        run(fake, lambda p: p.embed(EmbeddingRequest(model="e", input=[1, 2, 3]), EMBED))
    assert caught.value.status == 400 and fake.requests == []


# --------------------------------------------------------------------------------------------------
# Gemini (conversions from gemini_convert)


def genai_client(fake: FakeVertex) -> Any:
    from google import genai
    from google.genai import types

    credentials = service_account.Credentials.from_service_account_info(info(fake), scopes=[SCOPE])
    return genai.Client(
        vertexai=True,
        project=PROJECT,
        location=REGION,
        credentials=credentials,
        http_options=types.HttpOptions(base_url=fake.base_url, api_version="v1"),
    )


def test_genai_sdk_against_the_fake(fake: FakeVertex) -> None:
    from google.genai import errors, types

    client = genai_client(fake)
    answer = client.models.generate_content(model=GEMINI, contents="hello gemini")
    assert answer.text == "Echo: hello gemini" and answer.usage_metadata.prompt_token_count == 2
    streamed = "".join(
        c.text or "" for c in client.models.generate_content_stream(model=GEMINI, contents="stream words")
    )
    assert streamed == "Echo: stream words"
    tool = types.Tool(
        function_declarations=[
            types.FunctionDeclaration(
                name="get_weather", description="w", parameters_json_schema=WEATHER["function"]["parameters"]
            )
        ]
    )  # type: ignore[index]
    called = client.models.generate_content(
        model=GEMINI,
        contents="weather in Paris?",
        config=types.GenerateContentConfig(
            tools=[tool], automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True)
        ),
    )
    assert called.function_calls and called.function_calls[0].args == {"city": "Paris"}
    with pytest.raises(errors.ClientError) as caught:
        client.models.generate_content(model="error-429", contents="hi")
    assert caught.value.code == 429
    with pytest.raises(errors.ServerError):
        client.models.generate_content(model="error-503", contents="hi")


def test_gemini_chat_stream_and_the_sdk_request(fake: FakeVertex) -> None:
    from google.genai import types

    async def work(provider: VertexProvider) -> None:
        plain = await provider.chat(
            request(
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "look"},
                            {"type": "image_url", "image_url": {"url": IMAGE}},
                        ],
                    }
                ]
            ),
            GEMINI,
        )
        assert plain.choices[0].message.content == "Echo: look [images: 1]"
        tools = await provider.chat(
            request(messages=[{"role": "user", "content": "weather in Paris and Tokyo?"}], tools=[WEATHER]),
            GEMINI,
        )
        calls = tools.choices[0].message.tool_calls or []
        assert tools.choices[0].finish_reason == "tool_calls" and len(calls) == 2
        chunks, error = await collect(
            provider.stream_chat(
                request(
                    messages=[{"role": "user", "content": "stream me"}],
                    stream_options={"include_usage": True},
                ),
                GEMINI,
            )
        )
        assert (
            error is None and text_of(chunks) == "Echo: stream me" and chunks[-1].usage.completion_tokens == 3
        )  # type: ignore[union-attr]
        _, dropped = await collect(
            provider.stream_chat(
                request(messages=[{"role": "user", "content": "a b c d e f g h"}]), "midstream-drop"
            )
        )
        assert isinstance(dropped, UpstreamError) and dropped.status == 502
        with pytest.raises(UpstreamError) as caught:
            await provider.chat(request(), "error-429")
        assert caught.value.status == 429 and caught.value.retry_after == 7

    run(fake, work)
    fake.clear()
    run(
        fake,
        lambda p: p.chat(
            request(
                messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}],
                max_tokens=50,
                temperature=0.5,
            ),
            GEMINI,
        ),
    )
    mine = fake.requests[-1]
    config = types.GenerateContentConfig(system_instruction="be brief", max_output_tokens=50, temperature=0.5)
    client = genai_client(fake)  # kept: a dropped Client closes its HTTP client
    client.models.generate_content(model=GEMINI, contents="hello", config=config)
    sdk_request = fake.requests[-1]
    assert (mine.path, mine.query) == (sdk_request.path, sdk_request.query)
    assert mine.json["contents"] == sdk_request.json["contents"]
    assert mine.json["generationConfig"] == sdk_request.json["generationConfig"]
    assert mine.json["systemInstruction"]["parts"] == sdk_request.json["systemInstruction"]["parts"]


def test_gemini_stream_request_matches_the_sdk(fake: FakeVertex) -> None:
    run(
        fake,
        lambda p: collect(p.stream_chat(request(messages=[{"role": "user", "content": "hello"}]), GEMINI)),
    )
    mine = fake.requests[-1]
    client = genai_client(fake)
    list(client.models.generate_content_stream(model=GEMINI, contents="hello"))
    sdk_request = fake.requests[-1]
    assert (mine.path, mine.query) == (sdk_request.path, sdk_request.query) and mine.query == "alt=sse"
    assert mine.json["contents"] == sdk_request.json["contents"]


@pytest.mark.parametrize("model", ["claude-slow-stream", "slow-stream"])
def test_leaving_a_stream_early_cancels_the_upstream(fake: FakeVertex, model: str) -> None:
    async def work(provider: VertexProvider) -> None:
        stream = provider.stream_chat(request(), model)
        assert isinstance(stream, AsyncGenerator)
        seen = [await anext(stream) for _ in range(3)]
        assert text_of(seen)
        await stream.aclose()

    run(fake, work)
    for _ in range(100):
        if fake.cancelled_streams:
            break
        time.sleep(0.05)
    assert fake.cancelled_streams == [model]


def test_embedding_errors_are_google_shaped(fake: FakeVertex) -> None:
    with pytest.raises(UpstreamError) as caught:
        run(fake, lambda p: p.embed(EmbeddingRequest(model="e", input="x"), "error-429"))
    assert caught.value.status == 429 and caught.value.retry_after == 7
    assert caught.value.code == "resource_exhausted"
