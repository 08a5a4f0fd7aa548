"""Typed chat messages (proto) <-> the gateway's chat schema."""

from __future__ import annotations

from typing import Any

from msgspec import UNSET

from modelyard.errors import invalid_request
from modelyard.schema import chat as s
from modelyard.schema.common import StreamOptions
from modelyard.service.convert_common import finish_reason_to_proto, optional, usage_to_proto
from modelyard.service.structs import dict_to_struct, struct_to_dict
from modelyard.v1 import chat_pb2 as pb

ROLE_NAMES: dict[int, s.Role] = {
    pb.ROLE_SYSTEM: "system",
    pb.ROLE_DEVELOPER: "developer",
    pb.ROLE_USER: "user",
    pb.ROLE_ASSISTANT: "assistant",
    pb.ROLE_TOOL: "tool",
}
_TOOL_MODES = {
    pb.TOOL_CHOICE_MODE_NONE: "none",
    pb.TOOL_CHOICE_MODE_AUTO: "auto",
    pb.TOOL_CHOICE_MODE_REQUIRED: "required",
}


def _part(part: pb.ContentPart, where: str) -> s.ContentPart:
    kind = part.WhichOneof("part")
    if kind == "text":
        return s.TextPart(text=part.text)
    if kind == "image_url":
        image = part.image_url
        return s.ImageUrlPart(image_url=s.ImageUrl(url=image.url, detail=image.detail or UNSET))
    if kind == "input_audio":
        return s.InputAudioPart(
            input_audio=s.InputAudio(data=part.input_audio.data, format=part.input_audio.format)
        )
    if kind == "file":
        f = part.file
        return s.FilePart(
            file=s.FileRef(
                file_data=f.file_data or UNSET, file_id=f.file_id or UNSET, filename=f.filename or UNSET
            )
        )
    if kind == "refusal":
        return s.RefusalPart(refusal=part.refusal)
    raise invalid_request(f"{where} has no part set.", param=where)


def _tool_call(call: pb.ToolCall) -> s.ToolCall:
    return s.ToolCall(
        id=call.id, function=s.FunctionCall(name=call.function.name, arguments=call.function.arguments)
    )


def message_from_proto(message: pb.ChatMessage, index: int) -> s.Message:
    where = f"messages[{index}]"
    role = ROLE_NAMES.get(message.role)
    if role is None:
        raise invalid_request(f"{where}.role must be set.", param=f"{where}.role")
    content: Any = UNSET
    if message.content_parts:
        content = [_part(p, f"{where}.content_parts[{i}]") for i, p in enumerate(message.content_parts)]
    elif message.HasField("content"):
        content = message.content
    return s.Message(
        role=role,
        content=content,
        name=message.name or UNSET,
        tool_calls=[_tool_call(c) for c in message.tool_calls] or UNSET,
        tool_call_id=message.tool_call_id or UNSET,
        refusal=message.refusal if message.HasField("refusal") else UNSET,
    )


def _tool(tool: pb.Tool) -> s.Tool:
    fn = tool.function
    return s.Tool(
        function=s.FunctionDefinition(
            name=fn.name,
            description=fn.description or UNSET,
            parameters=struct_to_dict(fn.parameters) if fn.HasField("parameters") else UNSET,
            strict=fn.strict if fn.HasField("strict") else UNSET,
        )
    )


def _tool_choice(choice: pb.ToolChoice) -> s.ToolChoice | Any:
    kind = choice.WhichOneof("choice")
    if kind == "function_name":
        return s.NamedToolChoice(function=s.NamedFunction(name=choice.function_name))
    if kind == "mode" and choice.mode in _TOOL_MODES:
        return _TOOL_MODES[choice.mode]
    return UNSET


def _response_format(fmt: pb.ResponseFormat) -> s.ResponseFormat | Any:
    if fmt.type == pb.ResponseFormat.TYPE_TEXT:
        return s.TextFormat()
    if fmt.type == pb.ResponseFormat.TYPE_JSON_OBJECT:
        return s.JsonObjectFormat()
    if fmt.type == pb.ResponseFormat.TYPE_JSON_SCHEMA:
        js = fmt.json_schema
        return s.JsonSchemaFormat(
            json_schema=s.JsonSchema(
                name=js.name,
                description=js.description or UNSET,
                schema=struct_to_dict(js.schema) if js.HasField("schema") else UNSET,
                strict=js.strict if js.HasField("strict") else UNSET,
            )
        )
    return UNSET


def chat_request_from_proto(request: pb.ChatCompletionRequest, stream: bool) -> s.ChatRequest:
    return s.ChatRequest(
        model=request.model,
        messages=[message_from_proto(m, i) for i, m in enumerate(request.messages)],
        stream=stream,
        stream_options=StreamOptions(include_usage=request.stream_options.include_usage)
        if request.HasField("stream_options")
        else UNSET,
        temperature=optional(request, "temperature"),
        top_p=optional(request, "top_p"),
        top_k=optional(request, "top_k"),
        n=optional(request, "n"),
        stop=list(request.stop) or UNSET,
        max_tokens=optional(request, "max_tokens"),
        max_completion_tokens=optional(request, "max_completion_tokens"),
        presence_penalty=optional(request, "presence_penalty"),
        frequency_penalty=optional(request, "frequency_penalty"),
        logit_bias=dict(request.logit_bias) or UNSET,
        logprobs=optional(request, "logprobs"),
        top_logprobs=optional(request, "top_logprobs"),
        seed=optional(request, "seed"),
        user=request.user or UNSET,
        metadata=dict(request.metadata) or UNSET,
        tools=[_tool(t) for t in request.tools] or UNSET,
        tool_choice=_tool_choice(request.tool_choice) if request.HasField("tool_choice") else UNSET,
        parallel_tool_calls=optional(request, "parallel_tool_calls"),
        response_format=_response_format(request.response_format)
        if request.HasField("response_format")
        else UNSET,
        extras=struct_to_dict(request.extra_body) if request.HasField("extra_body") else {},
    )


def _token_logprobs(items: list[s.TokenLogprob] | None) -> list[pb.TokenLogprob]:
    return [
        pb.TokenLogprob(
            token=item.token,
            logprob=item.logprob,
            bytes=bytes(item.bytes or ()),
            top_logprobs=[
                pb.TopLogprob(token=t.token, logprob=t.logprob, bytes=bytes(t.bytes or ()))
                for t in item.top_logprobs
            ],
        )
        for item in items or ()
    ]


def logprobs_to_proto(logprobs: s.ChoiceLogprobs | Any | None) -> pb.ChoiceLogprobs | None:
    if not isinstance(logprobs, s.ChoiceLogprobs):
        return None
    return pb.ChoiceLogprobs(
        content=_token_logprobs(logprobs.content), refusal=_token_logprobs(logprobs.refusal)
    )


def _tool_calls_to_proto(calls: list[s.ToolCall] | Any) -> list[pb.ToolCall]:
    if not isinstance(calls, list):
        return []
    return [
        pb.ToolCall(
            index=i,
            id=c.id,
            type=c.type,
            function=pb.FunctionCall(name=c.function.name, arguments=c.function.arguments),
        )
        for i, c in enumerate(calls)
    ]


def completion_to_proto(result: s.ChatCompletion) -> pb.ChatCompletion:
    choices = []
    for choice in result.choices:
        message = choice.message
        out = pb.ChatMessage(role=pb.ROLE_ASSISTANT, tool_calls=_tool_calls_to_proto(message.tool_calls))
        if message.content is not None:
            out.content = message.content
        if message.refusal is not None:
            out.refusal = message.refusal
        choices.append(
            pb.ChatChoice(
                index=choice.index,
                message=out,
                finish_reason=finish_reason_to_proto(choice.finish_reason),
                logprobs=logprobs_to_proto(choice.logprobs),
            )
        )
    return pb.ChatCompletion(
        id=result.id,
        created=result.created,
        model=result.model,
        choices=choices,
        usage=usage_to_proto(result.usage),
        system_fingerprint=result.system_fingerprint if isinstance(result.system_fingerprint, str) else "",
    )


def _delta_to_proto(delta: s.Delta) -> pb.ChatDelta:
    out = pb.ChatDelta(role=pb.ROLE_ASSISTANT if delta.role == "assistant" else pb.ROLE_UNSPECIFIED)
    if isinstance(delta.content, str):
        out.content = delta.content
    if isinstance(delta.refusal, str):
        out.refusal = delta.refusal
    for call in delta.tool_calls if isinstance(delta.tool_calls, list) else ():
        function = call.function if isinstance(call.function, s.FunctionCallDelta) else s.FunctionCallDelta()
        out.tool_calls.append(
            pb.ToolCall(
                index=call.index,
                id=call.id if isinstance(call.id, str) else "",
                type=call.type if isinstance(call.type, str) else "",
                function=pb.FunctionCall(
                    name=function.name if isinstance(function.name, str) else "",
                    arguments=function.arguments if isinstance(function.arguments, str) else "",
                ),
            )
        )
    return out


def chunk_to_proto(chunk: s.ChatChunk) -> pb.ChatCompletionChunk:
    return pb.ChatCompletionChunk(
        id=chunk.id,
        created=chunk.created,
        model=chunk.model,
        choices=[
            pb.ChatChunkChoice(
                index=c.index,
                delta=_delta_to_proto(c.delta),
                finish_reason=finish_reason_to_proto(c.finish_reason),
                logprobs=logprobs_to_proto(c.logprobs),
            )
            for c in chunk.choices
        ],
        usage=usage_to_proto(chunk.usage),
        system_fingerprint=chunk.system_fingerprint if isinstance(chunk.system_fingerprint, str) else "",
    )


__all__ = ["chat_request_from_proto", "chunk_to_proto", "completion_to_proto", "dict_to_struct"]
