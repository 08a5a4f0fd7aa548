"""The typed Inference API through generated stubs, plus health checking and server reflection."""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from grpc_status import rpc_status
from modelyard.v1 import (
    chat_pb2,
    common_pb2,
    completions_pb2,
    embeddings_pb2,
    inference_pb2,
    inference_pb2_grpc,
)

from tests.fakes.openai_upstream import FakeOpenAI
from tests.gateway_process import GatewayProcess

USER = chat_pb2.ROLE_USER


@pytest.fixture(scope="module")
def channel(gateway: GatewayProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(gateway.grpc_target) as ch:
        yield ch


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> inference_pb2_grpc.InferenceStub:
    return inference_pb2_grpc.InferenceStub(channel)


@pytest.fixture(scope="module")
def auth(gateway: GatewayProcess) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {gateway.admin_key}"),)


def chat_request(model: str, text: str, **fields: object) -> chat_pb2.ChatCompletionRequest:
    message = chat_pb2.ChatMessage(role=USER, content=text)
    return chat_pb2.ChatCompletionRequest(model=model, messages=[message], **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("model", ["demo/chat", "gpt-4o-mini"])
def test_chat_unary_and_stream_agree(
    stub: inference_pb2_grpc.InferenceStub, auth: tuple[tuple[str, str]], model: str
) -> None:
    request = chat_request(model, "typed hello", stream_options=common_pb2.StreamOptions(include_usage=True))
    unary = stub.CreateChatCompletion(request, metadata=auth, timeout=10)
    assert "typed hello" in unary.choices[0].message.content
    assert unary.choices[0].finish_reason == common_pb2.FINISH_REASON_STOP
    assert unary.usage.total_tokens == unary.usage.prompt_tokens + unary.usage.completion_tokens > 0
    chunks = list(stub.StreamChatCompletion(request, metadata=auth, timeout=10))
    text = "".join(c.choices[0].delta.content for c in chunks if c.choices)
    assert text == unary.choices[0].message.content
    assert chunks[0].choices[0].delta.role == chat_pb2.ROLE_ASSISTANT
    assert chunks[-1].usage.completion_tokens == unary.usage.completion_tokens
    assert not chunks[-1].choices


def test_typed_fields_reach_the_upstream(
    stub: inference_pb2_grpc.InferenceStub, auth: tuple[tuple[str, str]], fake_openai: FakeOpenAI
) -> None:
    parameters = struct_pb2.Struct()
    parameters.update({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
    extra = struct_pb2.Struct()
    extra.update({"reasoning_effort": "low"})
    image = chat_pb2.ContentPart(image_url=chat_pb2.ImageUrl(url="https://example.com/cat.png", detail="low"))
    message = chat_pb2.ChatMessage(
        role=USER, content_parts=[chat_pb2.ContentPart(text="weather in Paris?"), image]
    )
    request = chat_pb2.ChatCompletionRequest(
        model="gpt-4o-mini",
        messages=[message],
        temperature=0.5,
        max_completion_tokens=30,
        stop=["END"],
        seed=3,
        top_k=5,
        extra_body=extra,
        tools=[
            chat_pb2.Tool(
                type="function",
                function=chat_pb2.FunctionDefinition(
                    name="get_weather", description="weather", parameters=parameters
                ),
            )
        ],
        tool_choice=chat_pb2.ToolChoice(function_name="get_weather"),
    )
    fake_openai.clear()
    result = stub.CreateChatCompletion(request, metadata=auth, timeout=10)
    call = result.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and '"city"' in call.function.arguments
    sent = fake_openai.requests[-1].json
    assert sent["messages"][0]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "https://example.com/cat.png", "detail": "low"},
    }
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert sent["tools"][0]["function"]["parameters"]["required"] == ["city"]
    assert sent["temperature"] == 0.5 and sent["max_completion_tokens"] == 30 and sent["stop"] == ["END"]
    assert sent["seed"] == 3 and sent["top_k"] == 5 and sent["reasoning_effort"] == "low"


def test_completions(stub: inference_pb2_grpc.InferenceStub, auth: tuple[tuple[str, str]]) -> None:
    request = completions_pb2.CompletionRequest(model="demo/chat", prompt=["say this"])
    unary = stub.CreateCompletion(request, metadata=auth, timeout=10)
    assert unary.choices[0].text == "You wrote: say this"
    streamed = "".join(
        c.choices[0].text for c in stub.StreamCompletion(request, metadata=auth, timeout=10) if c.choices
    )
    assert streamed == unary.choices[0].text


@pytest.mark.parametrize("model", ["demo/embed", "text-embedding-3-small"])
def test_embeddings(stub: inference_pb2_grpc.InferenceStub, auth: tuple[tuple[str, str]], model: str) -> None:
    request = embeddings_pb2.EmbeddingRequest(model=model, input=["a", "b"], dimensions=8)
    floats = stub.CreateEmbedding(request, metadata=auth, timeout=10)
    assert [d.index for d in floats.data] == [0, 1]
    assert math.isclose(sum(x * x for x in floats.data[0].embedding), 1.0, rel_tol=1e-4)
    request.encoding_format = embeddings_pb2.ENCODING_FORMAT_BASE64
    packed = stub.CreateEmbedding(request, metadata=auth, timeout=10)
    raw = packed.data[0].embedding_bytes
    assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == pytest.approx(list(floats.data[0].embedding))


def test_list_models(stub: inference_pb2_grpc.InferenceStub, auth: tuple[tuple[str, str]]) -> None:
    models = {
        m.id: m for m in stub.ListModels(inference_pb2.ListModelsRequest(), metadata=auth, timeout=10).data
    }
    assert models["demo/chat"].providers == ["demo"] and "gpt-4o-mini" in models


def _details(error: grpc.RpcError) -> dict[str, object]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    found: dict[str, object] = {}
    for detail in status.details:
        for kind in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest, error_details_pb2.RetryInfo):
            if detail.Is(kind.DESCRIPTOR):
                message = kind()
                detail.Unpack(message)
                found[kind.__name__] = message
    return found


GRPC_ERRORS = [
    (chat_request("nope/none", "x"), grpc.StatusCode.NOT_FOUND, "MODEL_NOT_FOUND", "model"),
    (
        chat_pb2.ChatCompletionRequest(model="demo/chat"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "EMPTY_ARRAY",
        "messages",
    ),
    (chat_request("scenario/error-429", "x"), grpc.StatusCode.RESOURCE_EXHAUSTED, None, None),
    (chat_request("scenario/error-503", "x"), grpc.StatusCode.UNAVAILABLE, None, None),
    (chat_request("scenario/error-401", "x"), grpc.StatusCode.UNAUTHENTICATED, None, None),
    (chat_request("scenario/down", "x"), grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNREACHABLE", None),
]


@pytest.mark.parametrize(("request_", "code", "reason", "field"), GRPC_ERRORS)
@pytest.mark.parametrize("streaming", [False, True])
def test_errors_carry_rich_status(
    stub: inference_pb2_grpc.InferenceStub,
    auth: tuple[tuple[str, str]],
    request_: chat_pb2.ChatCompletionRequest,
    code: grpc.StatusCode,
    reason: str | None,
    field: str | None,
    streaming: bool,
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        if streaming:
            list(stub.StreamChatCompletion(request_, metadata=auth, timeout=10))
        else:
            stub.CreateChatCompletion(request_, metadata=auth, timeout=10)
    error = caught.value
    assert error.code() == code  # type: ignore[attr-defined]
    details = _details(error)
    info = details["ErrorInfo"]
    assert info.domain == "modelyard.dev"  # type: ignore[attr-defined]
    if reason:
        assert info.reason == reason  # type: ignore[attr-defined]
    if field:
        assert details["BadRequest"].field_violations[0].field == field  # type: ignore[attr-defined]
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        assert details["RetryInfo"].retry_delay.seconds == 7  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "metadata", [(), (("authorization", "Bearer my-wrong"),), (("authorization", "Basic x"),)]
)
def test_unauthenticated(
    stub: inference_pb2_grpc.InferenceStub, metadata: tuple[tuple[str, str], ...]
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.ListModels(inference_pb2.ListModelsRequest(), metadata=metadata, timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]


def test_deadline_is_honoured(stub: inference_pb2_grpc.InferenceStub, auth: tuple[tuple[str, str]]) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.CreateChatCompletion(chat_request("scenario/stall", "x"), metadata=auth, timeout=0.5)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # type: ignore[attr-defined]


def test_health_needs_no_key(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "modelyard.v1.Inference", "modelyard.v1.OpenAI"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_describes_the_contract(channel: grpc.Channel) -> None:
    database = ProtoReflectionDescriptorDatabase(channel)
    services = set(database.get_services())
    assert {"modelyard.v1.Inference", "modelyard.v1.OpenAI", "grpc.health.v1.Health"} <= services
    file = database.FindFileContainingSymbol("modelyard.v1.Inference")
    methods = {m.name for s in file.service for m in s.method}
    assert {"CreateChatCompletion", "StreamChatCompletion", "CreateEmbedding", "ListModels"} <= methods
