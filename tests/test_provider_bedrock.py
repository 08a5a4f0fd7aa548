"""The Bedrock adapter: SigV4 and event-stream units, the adapter against the native fake, and the
fake checked with boto3 (which also gives the reference outbound Converse request)."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from modelyard.errors import ClientError, GatewayError, StreamError, UpstreamError
from modelyard.providers.bedrock import BEDROCK, BedrockProvider
from modelyard.providers.bedrock_convert import build_converse
from modelyard.providers.eventstream import EventStreamDecoder, encode_message
from modelyard.providers.sigv4 import AwsCredentials, encode_path_segment, sign
from modelyard.schema.chat import ChatChunk, ChatCompletion, ChatRequest
from modelyard.schema.completions import Completion, CompletionRequest
from modelyard.schema.decode import decode_request
from modelyard.schema.embeddings import EmbeddingRequest
from modelyard.transport import HttpTransport

from tests.fakes.bedrock_upstream import ACCESS_KEY, SECRET_KEY, FakeBedrock
from tests.gateway_process import GatewayProcess

IMAGE_BYTES = b"\x89PNG\r\n\x1a\n" + b"\0" * 8
IMAGE = "data:image/png;base64," + base64.b64encode(IMAGE_BYTES).decode()
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def request(**fields: Any) -> ChatRequest:
    fields.setdefault("model", "m")
    fields.setdefault("messages", [{"role": "user", "content": "hi"}])
    return decode_request(json.dumps(fields).encode(), ChatRequest)


# --------------------------------------------------------------------------------------------------
# SigV4 and event-stream units


def test_sigv4_matches_botocore_with_session_token_and_colon_model_id() -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    url = (
        "https://bedrock-runtime.eu-west-1.amazonaws.com/model/"
        + encode_path_segment("a.b-v2:0")
        + "/converse"
    )
    assert "/model/a.b-v2%3A0/" in url
    body = b'{"messages":[]}'
    headers = sign(
        "POST",
        url,
        {"Content-Type": "application/json"},
        body,
        AwsCredentials("AKIDX", "sk", "tok"),
        "eu-west-1",
        now=now,
    )
    assert (
        headers["x-amz-security-token"] == "tok"
        and headers["host"] == "bedrock-runtime.eu-west-1.amazonaws.com"
    )
    rebuilt = AWSRequest(
        "POST", url, headers={k: v for k, v in headers.items() if k != "authorization"}, data=body
    )
    rebuilt.context["timestamp"] = headers["x-amz-date"]
    auth = SigV4Auth(Credentials("AKIDX", "sk", "tok"), "bedrock", "eu-west-1")
    canonical = auth.canonical_request(rebuilt)
    assert "/model/a.b-v2%253A0/converse" in canonical
    assert headers["authorization"].endswith(
        "Signature=" + auth.signature(auth.string_to_sign(rebuilt, canonical), rebuilt)
    )


def test_eventstream_decodes_byte_by_byte_and_checks_crcs() -> None:
    frames = encode_message({":event-type": "a"}, b"{}") + encode_message({":event-type": "b"}, b"[1]")
    decoder = EventStreamDecoder("p")
    out = [m for i in range(len(frames)) for m in decoder.feed(frames[i : i + 1])]
    assert [(m.event_type, m.payload) for m in out] == [("a", b"{}"), ("b", b"[1]")]
    bad = bytearray(frames)
    bad[20] ^= 1
    with pytest.raises(StreamError):
        list(EventStreamDecoder("p").feed(bytes(bad)))
    second = bytearray(encode_message({":event-type": "b"}, b"[1]"))
    second[-1] ^= 1
    good_then_bad = encode_message({":event-type": "a"}, b"{}") + bytes(second)
    decoded = EventStreamDecoder("p").feed(good_then_bad)
    assert next(decoded).event_type == "a"  # what came before the corrupt frame is delivered first
    with pytest.raises(StreamError):
        next(decoded)
    prelude = bytearray(frames)
    prelude[9] ^= 1
    with pytest.raises(StreamError):
        list(EventStreamDecoder("p").feed(bytes(prelude)))


def test_settings_need_exactly_one_auth_method() -> None:
    BEDROCK.settings.model_validate({"api_key": "k", "region": "us-east-1"})
    BEDROCK.settings.model_validate(
        {"access_key_id": ACCESS_KEY, "secret_access_key": "s", "region": "us-east-1"}
    )
    for data in (
        {"region": "us-east-1"},
        {"api_key": "k", "access_key_id": ACCESS_KEY, "secret_access_key": "s", "region": "us-east-1"},
    ):
        with pytest.raises(ValueError):
            BEDROCK.settings.model_validate(data)


def test_converse_body_conversion() -> None:
    body = build_converse(
        request(
            messages=[
                {"role": "system", "content": "Be terse."},
                {"role": "developer", "content": "English."},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "look"},
                        {"type": "image_url", "image_url": {"url": IMAGE}},
                    ],
                },
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "t1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "t1", "content": "18 degrees"},
            ],
            tools=[WEATHER],
            tool_choice="required",
            max_tokens=50,
            temperature=0.5,
            top_p=0.9,
            top_k=40,
            stop="END",
            seed=1,
            user="u",
        ),
        "bed",
    )
    assert body["system"] == [{"text": "Be terse."}, {"text": "English."}]
    assert body["messages"][0]["content"][1] == {
        "image": {"format": "png", "source": {"bytes": base64.b64encode(IMAGE_BYTES).decode()}}
    }
    assert body["messages"][1]["content"] == [
        {"toolUse": {"toolUseId": "t1", "name": "get_weather", "input": {"city": "Paris"}}}
    ]
    assert body["messages"][2]["content"][0]["toolResult"] == {
        "toolUseId": "t1",
        "content": [{"text": "18 degrees"}],
    }
    assert body["inferenceConfig"] == {
        "maxTokens": 50,
        "temperature": 0.5,
        "topP": 0.9,
        "stopSequences": ["END"],
    }
    assert body["toolConfig"]["toolChoice"] == {"any": {}}
    assert body["additionalModelRequestFields"] == {"top_k": 40}
    assert "seed" not in json.dumps(body)


def test_image_urls_are_refused_naming_bedrock() -> None:
    with pytest.raises(ClientError) as caught:
        build_converse(
            request(
                messages=[
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}],
                    }
                ]
            ),
            "bed",
        )
    assert caught.value.status == 400 and "bedrock" in caught.value.message


# --------------------------------------------------------------------------------------------------
# The adapter against the fake


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeBedrock]:
    server = FakeBedrock()
    server.start()
    yield server
    server.stop()


def provider(fake: FakeBedrock, **overrides: Any) -> BedrockProvider:
    data = {
        "access_key_id": ACCESS_KEY,
        "secret_access_key": SECRET_KEY,
        "region": "us-east-1",
        "base_url": fake.base_url,
    }
    adapter = BEDROCK.create("bed", {**data, **overrides}, HttpTransport())
    assert isinstance(adapter, BedrockProvider)
    return adapter


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


async def _chat(adapter: BedrockProvider, req: ChatRequest, model: str) -> ChatCompletion:
    try:
        return await adapter.chat(req, model)
    finally:
        await adapter.transport.close()


async def _stream(
    adapter: BedrockProvider, req: ChatRequest, model: str
) -> tuple[list[ChatChunk], GatewayError | None]:
    chunks: list[ChatChunk] = []
    try:
        async for chunk in adapter.stream_chat(req, model):
            chunks.append(chunk)
    except GatewayError as exc:
        return chunks, exc
    finally:
        await adapter.transport.close()
    return chunks, None


def test_chat_tools_json_and_signature(fake: FakeBedrock) -> None:
    result = run(
        _chat(
            provider(fake),
            request(messages=[{"role": "user", "content": "hello there"}]),
            "anthropic.claude-3:0",
        )
    )
    assert "hello there" in (result.choices[0].message.content or "") and result.usage.total_tokens > 0  # type: ignore[union-attr]
    assert fake.requests[-1].path == "/model/anthropic.claude-3%3A0/converse"
    tools = run(
        _chat(
            provider(fake),
            request(messages=[{"role": "user", "content": "weather in Paris and Tokyo?"}], tools=[WEATHER]),
            "m",
        )
    )
    assert tools.choices[0].finish_reason == "tool_calls" and len(tools.choices[0].message.tool_calls) == 2  # type: ignore[arg-type]
    as_json = run(_chat(provider(fake), request(response_format={"type": "json_object"}), "m"))
    assert (
        isinstance(json.loads(as_json.choices[0].message.content), dict)
        and as_json.choices[0].finish_reason == "stop"
    )
    with pytest.raises(UpstreamError) as caught:
        run(_chat(provider(fake, secret_access_key="wrong-secret"), request(), "m"))
    assert caught.value.status == 403 and caught.value.code == "provider_authentication_failed"
    assert "wrong-secret" not in caught.value.message and "credentials" in caught.value.message
    with pytest.raises(UpstreamError) as denied:
        run(_chat(provider(fake), request(), "error-403"))
    assert denied.value.status == 403 and denied.value.code == "provider_permission_denied"


def test_session_token_is_signed_and_checked() -> None:
    server = FakeBedrock()
    server.session_token = "session-token-1"
    server.start()
    try:
        adapter = provider(server, session_token="session-token-1")
        assert run(_chat(adapter, request(), "m")).choices[0].message.content
        assert server.requests[-1].headers["x-amz-security-token"] == "session-token-1"
        assert "x-amz-security-token" in server.requests[-1].headers["authorization"]
        with pytest.raises(UpstreamError):
            run(_chat(provider(server), request(), "m"))
        sdk = boto3.client(
            "bedrock-runtime",
            endpoint_url=server.base_url,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            aws_session_token="session-token-1",
        )
        assert sdk.converse(modelId="m", messages=[{"role": "user", "content": [{"text": "x"}]}])["output"]
    finally:
        server.stop()


def test_api_key_is_a_bearer() -> None:
    server = FakeBedrock(api_key="bedrock-api-key-1")
    server.start()
    try:
        adapter = BEDROCK.create(
            "bed",
            {"api_key": "bedrock-api-key-1", "region": "us-east-1", "base_url": server.base_url},
            HttpTransport(),
        )
        assert isinstance(adapter, BedrockProvider)
        result = run(_chat(adapter, request(), "m"))
        assert (
            result.choices[0].message.content
            and server.requests[-1].headers["authorization"] == "Bearer bedrock-api-key-1"
        )
    finally:
        server.stop()


def test_stream_text_tools_and_usage(fake: FakeBedrock) -> None:
    req = request(
        messages=[{"role": "user", "content": "stream these words"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks, error = run(_stream(provider(fake), req, "m"))
    assert error is None and chunks[0].choices[0].delta.role == "assistant"
    assert "stream these words" in "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0  # type: ignore[union-attr]
    tools, error = run(
        _stream(
            provider(fake),
            request(messages=[{"role": "user", "content": "weather in Paris and Tokyo?"}], tools=[WEATHER]),
            "m",
        )
    )
    assert error is None
    args: dict[int, str] = {}
    for chunk in tools:
        for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            args[call.index] = args.get(call.index, "") + (call.function.arguments or "")  # type: ignore[union-attr]
    assert [json.loads(a)["city"] for a in args.values()] == ["Paris", "Tokyo"]


@pytest.mark.parametrize(
    ("model", "status", "code"),
    [
        ("corrupt-crc", 502, "bad_upstream_response"),
        ("exception-midstream", 429, "throttlingException"),
        ("midstream-drop", 502, "upstream_disconnected"),
        ("garbage", 502, "bad_upstream_response"),
    ],
)
def test_stream_failures_raise(fake: FakeBedrock, model: str, status: int, code: str) -> None:
    _chunks, error = run(
        _stream(provider(fake), request(messages=[{"role": "user", "content": "a b c d e f g"}]), model)
    )
    assert isinstance(error, UpstreamError) and error.status == status and error.code == code


@pytest.mark.parametrize(
    ("model", "status", "code"),
    [
        ("error-429", 429, "ThrottlingException"),
        ("error-400", 400, "ValidationException"),
        ("error-503", 503, "ServiceUnavailableException"),
        ("error-500", 502, "InternalServerException"),
    ],
)
def test_errors_map_by_status_and_type(fake: FakeBedrock, model: str, status: int, code: str) -> None:
    with pytest.raises(UpstreamError) as caught:
        run(_chat(provider(fake), request(), model))
    assert caught.value.status == status and caught.value.code == code
    if status == 429:
        assert caught.value.retry_after == 7


def test_embeddings_titan_and_cohere(fake: FakeBedrock) -> None:
    async def embed(model: str, **fields: Any) -> Any:
        adapter = provider(fake)
        try:
            return await adapter.embed(
                EmbeddingRequest(model=model, input=["first", "second two"], **fields), model
            )
        finally:
            await adapter.transport.close()

    titan = run(embed("amazon.titan-embed-text-v2:0", dimensions=8))
    assert [d.index for d in titan.data] == [0, 1] and titan.usage.prompt_tokens == 3
    assert fake.requests[-1].json in (
        {"inputText": "first", "dimensions": 8},
        {"inputText": "second two", "dimensions": 8},
    )
    cohere = run(embed("cohere.embed-english-v3"))
    assert len(cohere.data) == 2 and cohere.usage.prompt_tokens == 3
    assert fake.requests[-1].json == {"texts": ["first", "second two"], "input_type": "search_document"}


# --------------------------------------------------------------------------------------------------
# boto3 against the fake: the fake is real enough, and the adapter sends what boto3 sends


@pytest.fixture(scope="module")
def client(fake: FakeBedrock) -> Any:
    return boto3.client(
        "bedrock-runtime",
        endpoint_url=fake.base_url,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(retries={"max_attempts": 1}),
    )


def test_boto3_converse_stream_embed_and_errors(client: Any) -> None:
    result = client.converse(
        modelId="amazon.nova:0", messages=[{"role": "user", "content": [{"text": "boto hello"}]}]
    )
    assert (
        "boto hello" in result["output"]["message"]["content"][0]["text"]
        and result["stopReason"] == "end_turn"
    )
    events = list(
        client.converse_stream(
            modelId="m", messages=[{"role": "user", "content": [{"text": "boto stream"}]}]
        )["stream"]
    )
    text = "".join(
        e["contentBlockDelta"]["delta"].get("text", "") for e in events if "contentBlockDelta" in e
    )
    assert "boto stream" in text and "metadata" in events[-1]
    with pytest.raises(botocore.exceptions.EventStreamError) as caught:
        list(
            client.converse_stream(
                modelId="exception-midstream", messages=[{"role": "user", "content": [{"text": "a b c d e"}]}]
            )["stream"]
        )
    assert caught.value.response["Error"]["Code"] == "throttlingException"
    body = client.invoke_model(modelId="amazon.titan-embed-text-v2:0", body=json.dumps({"inputText": "x y"}))[
        "body"
    ].read()
    assert json.loads(body)["inputTextTokenCount"] == 2
    with pytest.raises(client.exceptions.ThrottlingException):
        client.converse(modelId="error-429", messages=[{"role": "user", "content": [{"text": "x"}]}])
    with pytest.raises(client.exceptions.ValidationException):
        client.converse(modelId="error-400", messages=[{"role": "user", "content": [{"text": "x"}]}])


def test_fake_rejects_a_wrong_signature(fake: FakeBedrock) -> None:
    bad = boto3.client(
        "bedrock-runtime",
        endpoint_url=fake.base_url,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key="not-the-secret",
    )
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        bad.converse(modelId="m", messages=[{"role": "user", "content": [{"text": "x"}]}])
    assert caught.value.response["Error"]["Code"] == "InvalidSignatureException"


def test_adapter_converse_body_equals_boto3s(fake: FakeBedrock, client: Any) -> None:
    tool = {
        "toolSpec": {
            "name": "get_weather",
            "description": "Current weather for a city",
            "inputSchema": {"json": WEATHER["function"]["parameters"]},
        }
    }  # type: ignore[index]
    fake.clear()
    client.converse(
        modelId="anthropic.claude-3:0",
        system=[{"text": "Be terse."}],
        messages=[
            {
                "role": "user",
                "content": [{"text": "look"}, {"image": {"format": "png", "source": {"bytes": IMAGE_BYTES}}}],
            }
        ],
        inferenceConfig={"maxTokens": 64, "temperature": 0.2, "stopSequences": ["END"]},
        toolConfig={"tools": [tool], "toolChoice": {"auto": {}}},
    )
    sdk = fake.requests[-1]
    req = request(
        messages=[
            {"role": "system", "content": "Be terse."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image_url", "image_url": {"url": IMAGE}},
                ],
            },
        ],
        max_tokens=64,
        temperature=0.2,
        stop=["END"],
        tools=[WEATHER],
        tool_choice="auto",
    )
    run(_chat(provider(fake), req, "anthropic.claude-3:0"))
    ours = fake.requests[-1]
    assert ours.json == sdk.json and ours.path == sdk.path == "/model/anthropic.claude-3%3A0/converse"
    assert ours.headers["content-type"] == sdk.headers["content-type"]
    assert ours.headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/")


# --------------------------------------------------------------------------------------------------
# Legacy completions


def completion_request(**fields: Any) -> CompletionRequest:
    fields.setdefault("model", "m")
    fields.setdefault("prompt", "say conformance")
    return decode_request(json.dumps(fields).encode(), CompletionRequest)


@pytest.mark.parametrize(
    ("model", "native_prompt_key"),
    [
        ("anthropic.claude-v2:1", "prompt"),
        ("amazon.titan-text-express-v1", "inputText"),
        ("cohere.command-text-v14", "prompt"),
        ("ai21.j2-ultra-v1", "prompt"),
        ("meta.llama3-8b-instruct-v1:0", "prompt"),
        ("mistral.mistral-7b-instruct-v0:2", "prompt"),
    ],
)
def test_completions_by_family(fake: FakeBedrock, model: str, native_prompt_key: str) -> None:
    async def go() -> tuple[Completion, list[Completion]]:
        adapter = provider(fake)
        try:
            unary = await adapter.complete(completion_request(max_tokens=20), model)
            req = completion_request(max_tokens=20, stream=True, stream_options={"include_usage": True})
            chunks = [c async for c in adapter.stream_complete(req, model)]
            return unary, chunks
        finally:
            await adapter.transport.close()

    unary, chunks = run(go())
    assert "say conformance" in unary.choices[0].text and unary.choices[0].finish_reason == "stop"
    assert unary.usage.prompt_tokens > 0 and unary.usage.completion_tokens > 0  # type: ignore[union-attr]
    assert fake.requests[-1].path.endswith("/invoke-with-response-stream")
    assert native_prompt_key in (fake.requests[-1].json or {})
    assert "".join(c.choices[0].text for c in chunks if c.choices) == unary.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "stop"
    ]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == unary.usage.completion_tokens  # type: ignore[union-attr]


def test_anthropic_text_prompt_and_required_max_tokens(fake: FakeBedrock) -> None:
    from modelyard.providers.bedrock_invoke import text_body

    body = text_body("anthropic.claude-v", completion_request(stop="END"), "hello")
    assert body == {
        "prompt": "\n\nHuman: hello\n\nAssistant:",
        "max_tokens_to_sample": 256,
        "stop_sequences": ["END"],
    }


def test_other_models_complete_through_converse(fake: FakeBedrock) -> None:
    async def go() -> tuple[Completion, list[Completion]]:
        adapter = provider(fake)
        try:
            unary = await adapter.complete(completion_request(), "amazon.nova-lite-v1:0")
            chunks = [
                c
                async for c in adapter.stream_complete(
                    completion_request(stream=True), "amazon.nova-lite-v1:0"
                )
            ]
            return unary, chunks
        finally:
            await adapter.transport.close()

    unary, chunks = run(go())
    assert "say conformance" in unary.choices[0].text and fake.requests[-1].path.endswith("/converse-stream")
    assert "".join(c.choices[0].text for c in chunks if c.choices) == unary.choices[0].text


def test_boto3_invoke_text_and_stream(client: Any) -> None:
    prompt = {"prompt": "\n\nHuman: boto text\n\nAssistant:", "max_tokens_to_sample": 50}
    result = client.invoke_model(modelId="anthropic.claude-v2", body=json.dumps(prompt))
    assert "boto text" in json.loads(result["body"].read())["completion"]
    assert int(result["ResponseMetadata"]["HTTPHeaders"]["x-amzn-bedrock-input-token-count"]) > 0
    stream = client.invoke_model_with_response_stream(modelId="anthropic.claude-v2", body=json.dumps(prompt))
    pieces = [json.loads(event["chunk"]["bytes"])["completion"] for event in stream["body"]]
    assert "boto text" in "".join(pieces)


def test_adapter_converse_stream_body_equals_boto3s(fake: FakeBedrock, client: Any) -> None:
    fake.clear()
    list(
        client.converse_stream(
            modelId="m",
            messages=[{"role": "user", "content": [{"text": "hi"}]}],
            inferenceConfig={"maxTokens": 10},
        )["stream"]
    )
    sdk = fake.requests[-1]
    run(_stream(provider(fake), request(max_tokens=10, stream=True), "m"))
    assert (
        fake.requests[-1].json == sdk.json
        and fake.requests[-1].path == sdk.path == "/model/m/converse-stream"
    )


# --------------------------------------------------------------------------------------------------
# Through the gateway: failures inside a committed stream end it with an error event


@pytest.fixture(scope="module")
def gateway(fake: FakeBedrock, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    data = {
        "access_key_id": ACCESS_KEY,
        "secret_access_key": SECRET_KEY,
        "region": "us-east-1",
        "base_url": fake.base_url,
    }
    models = ["chat", "corrupt-crc", "exception-midstream"]
    process = GatewayProcess(
        config={
            "providers": [{"name": "bed", "type": "bedrock", "data": data}],
            "models": [{"provider": "bed", "id": m, "alias": f"bed/{m}"} for m in models],
        },
        workdir=Path(tmp_path_factory.mktemp("bedrock-gateway")),
        admin_key="bed-admin-" + secrets.token_hex(8),
    )
    process.start()
    yield process
    assert process.stop() == 0


@pytest.mark.parametrize("model", ["corrupt-crc", "exception-midstream"])
def test_gateway_stream_ends_with_an_error_event(gateway: GatewayProcess, model: str) -> None:
    body = {
        "model": f"bed/{model}",
        "stream": True,
        "messages": [{"role": "user", "content": "a b c d e f g h"}],
    }
    response = httpx.post(
        f"{gateway.base_url}/chat/completions",
        json=body,
        timeout=30,
        headers={"Authorization": f"Bearer {gateway.admin_key}"},
    )
    events = [e.removeprefix("data: ") for e in response.text.split("\n\n") if e.strip()]
    assert response.status_code == 200 and "[DONE]" not in events
    assert any('"content"' in e for e in events[:-1])
    assert "error" in json.loads(events[-1])


def test_gateway_refuses_image_urls_naming_bedrock(gateway: GatewayProcess) -> None:
    content = [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]
    response = httpx.post(
        f"{gateway.base_url}/chat/completions",
        json={"model": "bed/chat", "messages": [{"role": "user", "content": content}]},
        timeout=30,
        headers={"Authorization": f"Bearer {gateway.admin_key}"},
    )
    assert response.status_code == 400 and "bedrock" in response.json()["error"]["message"]


def test_stream_json_mode_turns_the_forced_tool_into_content(fake: FakeBedrock) -> None:
    chunks, error = run(
        _stream(provider(fake), request(response_format={"type": "json_object"}, stream=True), "m")
    )
    assert error is None
    assert isinstance(
        json.loads("".join(c.choices[0].delta.content or "" for c in chunks if c.choices)), dict
    )
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "stop"
    ]
