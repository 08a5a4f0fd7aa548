"""The conformance suite every provider adapter passes, through the OpenAI SDK over real Envoy.

Parametrized over the discovered provider cases; a case that the provider's capability table
excludes is skipped with that reason, so the table and the behaviour cannot drift apart.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import grpc
import httpx
import openai
import pytest
from google.protobuf import struct_pb2
from modelyard.providers.base import Capability
from modelyard.v1 import chat_pb2, common_pb2, inference_pb2_grpc

from tests.conformance.framework import Fake, ProviderCase, discover, models_for
from tests.gateway_process import SINGLE_ATTEMPT, GatewayProcess

CASES = discover()
IMAGE = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 32).decode()
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, Fake]]:
    with ExitStack() as stack:
        started = {}
        for case in CASES:
            fake = case.make_fake()
            fake.start()
            stack.callback(fake.stop)
            started[case.name] = fake
        yield started


@pytest.fixture(scope="module")
def gateway(fakes: dict[str, Fake], tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    config = {
        "providers": [
            {"name": c.name, "type": c.type, "data": c.provider_data(fakes[c.name])} for c in CASES
        ],
        "models": [entry for c in CASES for entry in models_for(c)],
        "routing": SINGLE_ATTEMPT,
    }
    env = {k: v for c in CASES for k, v in c.env.items()}
    process = GatewayProcess(
        config=config,
        workdir=Path(tmp_path_factory.mktemp("conformance")),
        admin_key="my-conf-" + secrets.token_hex(8),
        env=env,
    )
    process.start()
    yield process
    assert process.stop() == 0


@pytest.fixture(scope="module")
def sdk(gateway: GatewayProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=gateway.base_url, api_key=gateway.admin_key, max_retries=0, timeout=30
    ) as client:
        yield client


def needs(case: ProviderCase, name: str, *capabilities: Capability) -> None:
    missing = [c.value for c in capabilities if c not in case.capabilities]
    if missing:
        pytest.skip(f"{case.type} does not support {', '.join(missing)} (capability table)")
    if name in case.skip:
        pytest.skip(f"{case.type}: {case.skip[name]}")


provider = pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


@provider
def test_plain_chat(case: ProviderCase, sdk: openai.OpenAI) -> None:
    needs(case, "plain_chat", Capability.CHAT)
    result = sdk.chat.completions.create(model=case.alias("chat"), messages=[user("hello conformance")])
    assert "hello conformance" in (result.choices[0].message.content or "")
    assert result.choices[0].finish_reason == "stop"
    assert result.usage is not None and result.usage.prompt_tokens > 0 and result.usage.completion_tokens > 0
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens


@provider
def test_multi_turn_with_system_and_developer(case: ProviderCase, sdk: openai.OpenAI) -> None:
    needs(case, "multi_turn", Capability.CHAT)
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "developer", "content": "Answer in English."},
        user("first question"),
        {"role": "assistant", "content": "first answer"},
        user("second question"),
    ]
    result = sdk.chat.completions.create(model=case.alias("chat"), messages=messages)  # type: ignore[arg-type]
    assert "second question" in (result.choices[0].message.content or "")


@provider
def test_image_input(case: ProviderCase, sdk: openai.OpenAI) -> None:
    needs(case, "image_input", Capability.CHAT, Capability.VISION)
    content = [{"type": "text", "text": "what is this"}, {"type": "image_url", "image_url": {"url": IMAGE}}]
    result = sdk.chat.completions.create(
        model=case.alias("chat"), messages=[{"role": "user", "content": content}]
    )  # type: ignore[list-item]
    assert "[images: 1]" in (result.choices[0].message.content or "")


@provider
def test_tool_call_round_trip(case: ProviderCase, sdk: openai.OpenAI) -> None:
    needs(case, "tool_round_trip", Capability.CHAT, Capability.TOOLS)
    messages: list[Any] = [user("What is the weather in Paris?")]
    first = sdk.chat.completions.create(model=case.alias("chat"), messages=messages, tools=[WEATHER])  # type: ignore[list-item]
    calls = first.choices[0].message.tool_calls or []
    assert first.choices[0].finish_reason == "tool_calls" and len(calls) == 1
    assert calls[0].function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(calls[0].function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": calls[0].id, "content": "18 degrees"},
    ]
    second = sdk.chat.completions.create(model=case.alias("chat"), messages=messages, tools=[WEATHER])  # type: ignore[list-item]
    assert "18 degrees" in (second.choices[0].message.content or "")


@provider
def test_parallel_tool_calls(case: ProviderCase, sdk: openai.OpenAI) -> None:
    needs(case, "parallel_tools", Capability.CHAT, Capability.TOOLS)
    result = sdk.chat.completions.create(
        model=case.alias("chat"), messages=[user("weather in Paris and Tokyo?")], tools=[WEATHER]
    )  # type: ignore[list-item]
    cities = [json.loads(c.function.arguments)["city"] for c in result.choices[0].message.tool_calls or []]  # type: ignore[union-attr]
    assert cities == ["Paris", "Tokyo"]


@provider
@pytest.mark.parametrize("include_usage", [False, True])
def test_streaming_text(case: ProviderCase, sdk: openai.OpenAI, include_usage: bool) -> None:
    needs(case, "streaming_text", Capability.CHAT, Capability.STREAM)
    messages = [user("stream some words for conformance")]
    unary = sdk.chat.completions.create(model=case.alias("chat"), messages=messages)  # type: ignore[arg-type]
    options = {"stream_options": {"include_usage": True}} if include_usage else {}
    chunks = list(
        sdk.chat.completions.create(model=case.alias("chat"), messages=messages, stream=True, **options)
    )  # type: ignore[arg-type,call-overload]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        == unary.choices[0].message.content
    )
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "stop"
    ]
    usages = [c.usage for c in chunks if c.usage]
    if include_usage:
        assert len(usages) == 1 and chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens == unary.usage.completion_tokens  # type: ignore[union-attr]
    else:
        assert usages == []


@provider
def test_streaming_tool_calls_reassemble_exactly(case: ProviderCase, sdk: openai.OpenAI) -> None:
    needs(case, "streaming_tools", Capability.CHAT, Capability.STREAM, Capability.TOOLS)
    messages = [user("weather in Paris and Tokyo?")]
    unary = sdk.chat.completions.create(model=case.alias("chat"), messages=messages, tools=[WEATHER])  # type: ignore[arg-type,list-item]
    calls: dict[int, dict[str, str]] = {}
    finish = []
    for chunk in sdk.chat.completions.create(
        model=case.alias("chat"), messages=messages, tools=[WEATHER], stream=True
    ):  # type: ignore[arg-type,list-item]
        for choice in chunk.choices:
            finish += [choice.finish_reason] if choice.finish_reason else []
            for delta in choice.delta.tool_calls or []:
                entry = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                entry["id"] += delta.id or ""
                entry["name"] += (delta.function.name or "") if delta.function else ""
                entry["arguments"] += (delta.function.arguments or "") if delta.function else ""
    expected = unary.choices[0].message.tool_calls or []
    assert finish == ["tool_calls"] and len(calls) == len(expected) == 2
    for index, call in enumerate(expected):
        assert calls[index]["id"] and calls[index]["name"] == call.function.name  # type: ignore[union-attr]
        assert json.loads(calls[index]["arguments"]) == json.loads(call.function.arguments)  # type: ignore[union-attr]


@provider
def test_json_mode(case: ProviderCase, sdk: openai.OpenAI) -> None:
    needs(case, "json_mode", Capability.CHAT, Capability.JSON_MODE)
    result = sdk.chat.completions.create(
        model=case.alias("chat"), messages=[user("json please")], response_format={"type": "json_object"}
    )
    assert isinstance(json.loads(result.choices[0].message.content or ""), dict)


@provider
def test_stop_sequence(case: ProviderCase, sdk: openai.OpenAI) -> None:
    needs(case, "stop", Capability.CHAT)
    result = sdk.chat.completions.create(
        model=case.alias("chat"), messages=[user("alpha beta gamma delta")], stop=["gamma"]
    )
    text = result.choices[0].message.content or ""
    assert "beta" in text and "gamma" not in text and "delta" not in text
    assert result.choices[0].finish_reason == "stop"


@provider
def test_max_tokens_reached_is_length(case: ProviderCase, sdk: openai.OpenAI) -> None:
    needs(case, "max_tokens", Capability.CHAT)
    result = sdk.chat.completions.create(
        model=case.alias("chat"), max_tokens=2, messages=[user("one two three four five six seven")]
    )
    assert result.choices[0].finish_reason == "length"
    assert result.usage is not None and result.usage.completion_tokens <= 2


ERRORS = [
    ("error-400", 400, openai.BadRequestError),
    ("error-401", 401, openai.AuthenticationError),
    ("error-403", 403, openai.PermissionDeniedError),
    ("error-404", 404, openai.NotFoundError),
    ("error-429", 429, openai.RateLimitError),
    ("error-500", 502, openai.InternalServerError),
    ("error-503", 503, openai.InternalServerError),
    ("error-529", 503, openai.InternalServerError),
    ("garbage", 502, openai.InternalServerError),
]


@provider
@pytest.mark.parametrize(("scenario", "status", "error_class"), ERRORS)
@pytest.mark.parametrize("stream", [False, True])
def test_error_classes(
    case: ProviderCase,
    sdk: openai.OpenAI,
    scenario: str,
    status: int,
    error_class: type[openai.APIStatusError],
    stream: bool,
) -> None:
    needs(case, f"error_{scenario}", Capability.CHAT, *((Capability.STREAM,) if stream else ()))
    with pytest.raises(error_class) as caught:
        result = sdk.chat.completions.create(model=case.alias(scenario), messages=[user("hi")], stream=stream)  # type: ignore[call-overload]
        list(result) if stream else None
    assert caught.value.status_code == status
    if status == 429:
        assert caught.value.response.headers.get("retry-after") == "7"


@provider
def test_midstream_failure_ends_with_error_event(case: ProviderCase, gateway: GatewayProcess) -> None:
    needs(case, "midstream_failure", Capability.CHAT, Capability.STREAM)
    body = {"model": case.alias("midstream-drop"), "stream": True, "messages": [user("a b c d e f g h i j")]}
    response = httpx.post(
        f"{gateway.base_url}/chat/completions",
        json=body,
        timeout=30,
        headers={"Authorization": f"Bearer {gateway.admin_key}"},
    )
    events = [e.removeprefix("data: ") for e in response.text.split("\n\n") if e.strip()]
    assert response.status_code == 200 and "[DONE]" not in events
    assert any('"content"' in e for e in events[:-1]), "some text arrived before the failure"
    assert "error" in json.loads(events[-1])


@provider
def test_client_disconnect_cancels_the_upstream(
    case: ProviderCase, gateway: GatewayProcess, fakes: dict[str, Fake]
) -> None:
    needs(case, "client_disconnect", Capability.CHAT, Capability.STREAM)
    fake = fakes[case.name]
    before = len(fake.cancelled_streams)
    body = {"model": case.alias("slow-stream"), "stream": True, "messages": [user("go")]}
    with httpx.stream(
        "POST",
        f"{gateway.base_url}/chat/completions",
        json=body,
        timeout=10,
        headers={"Authorization": f"Bearer {gateway.admin_key}"},
    ) as response:
        lines = response.iter_lines()
        assert any(line.startswith("data: {") for _, line in zip(range(8), lines, strict=False))
    deadline = time.monotonic() + 10
    while len(fake.cancelled_streams) == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(fake.cancelled_streams) > before


@provider
def test_embeddings(case: ProviderCase, sdk: openai.OpenAI) -> None:
    needs(case, "embeddings", Capability.EMBEDDINGS)
    result = sdk.embeddings.create(
        model=case.alias("embed"), input=["first", "second"], encoding_format="float"
    )
    assert [d.index for d in result.data] == [0, 1] and all(d.embedding for d in result.data)
    assert result.usage.prompt_tokens > 0


@provider
def test_completions(case: ProviderCase, sdk: openai.OpenAI) -> None:
    needs(case, "completions", Capability.COMPLETIONS)
    result = sdk.completions.create(model=case.alias("chat"), prompt="say conformance", max_tokens=20)
    assert "conformance" in result.choices[0].text


@provider
@pytest.mark.parametrize("capability", [Capability.EMBEDDINGS, Capability.COMPLETIONS])
def test_unsupported_capability_is_a_clear_400(
    case: ProviderCase, sdk: openai.OpenAI, capability: Capability
) -> None:
    if capability in case.capabilities:
        pytest.skip(f"{case.type} supports {capability.value}")
    with pytest.raises(openai.BadRequestError) as caught:
        if capability is Capability.EMBEDDINGS:
            sdk.embeddings.create(model=case.alias("chat"), input="x")
        else:
            sdk.completions.create(model=case.alias("chat"), prompt="x")
    assert case.name in caught.value.message and capability.value in caught.value.message


# The typed gRPC API, for a subset of the cases: the same adapters behind generated stubs.


@pytest.fixture(scope="module")
def stub(gateway: GatewayProcess) -> Iterator[inference_pb2_grpc.InferenceStub]:
    with grpc.insecure_channel(gateway.grpc_target) as channel:
        yield inference_pb2_grpc.InferenceStub(channel)


def typed_request(case: ProviderCase, model: str, text: str, **fields: Any) -> chat_pb2.ChatCompletionRequest:
    message = chat_pb2.ChatMessage(role=chat_pb2.ROLE_USER, content=text)
    return chat_pb2.ChatCompletionRequest(model=case.alias(model), messages=[message], **fields)


@provider
def test_grpc_chat_and_stream_agree(
    case: ProviderCase, stub: inference_pb2_grpc.InferenceStub, gateway: GatewayProcess
) -> None:
    needs(case, "grpc_chat", Capability.CHAT, Capability.STREAM)
    auth = (("authorization", f"Bearer {gateway.admin_key}"),)
    request = typed_request(
        case, "chat", "typed conformance", stream_options=common_pb2.StreamOptions(include_usage=True)
    )
    unary = stub.CreateChatCompletion(request, metadata=auth, timeout=20)
    assert "typed conformance" in unary.choices[0].message.content
    assert unary.choices[0].finish_reason == common_pb2.FINISH_REASON_STOP
    chunks = list(stub.StreamChatCompletion(request, metadata=auth, timeout=20))
    assert (
        "".join(c.choices[0].delta.content for c in chunks if c.choices) == unary.choices[0].message.content
    )
    assert chunks[-1].usage.completion_tokens == unary.usage.completion_tokens > 0


@provider
def test_grpc_tool_call(
    case: ProviderCase, stub: inference_pb2_grpc.InferenceStub, gateway: GatewayProcess
) -> None:
    needs(case, "grpc_tools", Capability.CHAT, Capability.TOOLS)
    parameters = struct_pb2.Struct()
    parameters.update(WEATHER["function"]["parameters"])  # type: ignore[index]
    tool = chat_pb2.Tool(
        type="function", function=chat_pb2.FunctionDefinition(name="get_weather", parameters=parameters)
    )
    request = typed_request(case, "chat", "What is the weather in Paris?", tools=[tool])
    result = stub.CreateChatCompletion(
        request, metadata=(("authorization", f"Bearer {gateway.admin_key}"),), timeout=20
    )
    call = result.choices[0].message.tool_calls[0]
    assert result.choices[0].finish_reason == common_pb2.FINISH_REASON_TOOL_CALLS
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}


@provider
@pytest.mark.parametrize(
    ("scenario", "code"),
    [
        ("error-429", grpc.StatusCode.RESOURCE_EXHAUSTED),
        ("error-503", grpc.StatusCode.UNAVAILABLE),
        ("error-400", grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
def test_grpc_errors(
    case: ProviderCase,
    stub: inference_pb2_grpc.InferenceStub,
    gateway: GatewayProcess,
    scenario: str,
    code: grpc.StatusCode,
) -> None:
    needs(case, f"grpc_{scenario}", Capability.CHAT)
    with pytest.raises(grpc.RpcError) as caught:
        stub.CreateChatCompletion(
            typed_request(case, scenario, "hi"),
            metadata=(("authorization", f"Bearer {gateway.admin_key}"),),
            timeout=20,
        )
    assert caught.value.code() == code  # type: ignore[attr-defined]
