"""AI21 Jamba chat: pure conversions between the gateway's OpenAI shapes and AI21's wire format.

Jamba's chat API is OpenAI-like but narrower: message content is a string, there is no
``developer`` role, no ``tool_choice``, and ``response_format`` is ``text`` or ``json_object``.

* Mapped: ``developer`` → ``system``; text parts joined with newlines; ``max_completion_tokens`` →
  ``max_tokens``; ``tool_choice: "none"`` → no tools sent; ``"auto"`` is Jamba's behaviour.
* Refused with a 400 naming the provider and the parameter (the answer could not honour them):
  image / audio / file content, ``response_format: json_schema``, ``tool_choice: "required"`` or a
  named function, ``logprobs`` / ``top_logprobs``, ``logit_bias``.
* Dropped (hints Jamba has no field for, that do not change what a correct answer is):
  ``seed``, ``user``, ``metadata``, ``parallel_tool_calls``, ``top_k``, ``presence_penalty``,
  ``frequency_penalty``, a message's ``name``, a tool's ``strict``.
* Extras (e.g. AI21's ``documents``) pass through; they never replace a typed field.
"""

from __future__ import annotations

import time
from typing import Any, Final

import msgspec
from msgspec import UNSET, field

from modelyard.errors import ClientError
from modelyard.schema.chat import (
    ChatChunk,
    ChatCompletion,
    ChatRequest,
    Choice,
    ChunkChoice,
    Delta,
    FilePart,
    FinishReason,
    FunctionCall,
    FunctionCallDelta,
    ImageUrlPart,
    InputAudioPart,
    JsonObjectFormat,
    JsonSchemaFormat,
    Message,
    NamedToolChoice,
    RefusalPart,
    ResponseMessage,
    TextPart,
    ToolCall,
    ToolCallDelta,
)
from modelyard.schema.common import Base, Usage

TYPE_NAME: Final = "ai21labs"
DROPPED: Final = (
    "seed",
    "user",
    "metadata",
    "parallel_tool_calls",
    "top_k",
    "presence_penalty",
    "frequency_penalty",
)

_FINISH: Final[dict[str, FinishReason]] = {
    "stop": "stop",
    "end_turn": "stop",
    "length": "length",
    "max_tokens": "length",
    "tool_calls": "tool_calls",
    "content_filter": "content_filter",
}


_PART_KINDS: Final[dict[type, str]] = {
    ImageUrlPart: "image input (vision)",
    InputAudioPart: "audio input",
    FilePart: "file input",
}


def _refuse(provider: str, what: str, param: str, code: str = "unsupported_parameter") -> ClientError:
    return ClientError(
        f"Provider '{provider}' (type {TYPE_NAME}) does not support {what}.",
        status=400,
        param=param,
        code=code,
    )


def _given(value: Any) -> bool:
    return value is not UNSET and value is not None


# ---- request ---------------------------------------------------------------------------------------


def message_text(provider: str, message: Message, index: int) -> str | None:
    content = message.content
    if content is UNSET or content is None:
        return None
    if isinstance(content, str):
        return content
    texts = []
    for part in content:
        if isinstance(part, TextPart):
            texts.append(part.text)
        elif isinstance(part, RefusalPart):
            texts.append(part.refusal)
        else:
            kind = _PART_KINDS.get(type(part), "non-text input")
            raise _refuse(
                provider,
                f"{kind}: Jamba models take text only",
                f"messages[{index}].content",
                "unsupported_capability",
            )
    return "\n".join(texts)


def convert_message(provider: str, message: Message, index: int) -> dict[str, Any]:
    text = message_text(provider, message, index)
    if message.role in ("system", "developer"):
        return {"role": "system", "content": text or ""}
    if message.role == "user":
        return {"role": "user", "content": text or ""}
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id or "", "content": text or ""}
    out: dict[str, Any] = {"role": "assistant", "content": text}
    if message.tool_calls:
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.function.name, "arguments": call.function.arguments},
            }
            for call in message.tool_calls
        ]
    elif text is None:
        out["content"] = ""
    return out


def _tools(request: ChatRequest) -> list[dict[str, Any]] | None:
    if not request.tools or request.tool_choice == "none":
        return None
    tools = []
    for tool in request.tools:
        function: dict[str, Any] = {"name": tool.function.name}
        if _given(tool.function.description):
            function["description"] = tool.function.description
        if _given(tool.function.parameters):
            function["parameters"] = tool.function.parameters
        tools.append({"type": "function", "function": function})
    return tools


def _check_refused(request: ChatRequest, provider: str) -> None:
    if isinstance(request.tool_choice, NamedToolChoice) or request.tool_choice == "required":
        raise _refuse(
            provider, "forcing a tool call (tool_choice 'required' or a named function)", "tool_choice"
        )
    if isinstance(request.response_format, JsonSchemaFormat):
        raise _refuse(provider, "response_format 'json_schema' (use 'json_object')", "response_format")
    if request.logprobs is True or _given(request.top_logprobs):
        raise _refuse(provider, "logprobs", "logprobs")
    if _given(request.logit_bias):
        raise _refuse(provider, "logit_bias", "logit_bias")


def build_body(request: ChatRequest, model_id: str, *, stream: bool, provider: str) -> dict[str, Any]:
    """The AI21 chat body for `request` (raises a 400 ClientError for what Jamba cannot honour)."""
    _check_refused(request, provider)
    body: dict[str, Any] = {
        "model": model_id,
        "messages": [convert_message(provider, m, i) for i, m in enumerate(request.messages)],
    }
    tools = _tools(request)
    if tools:
        body["tools"] = tools
    limit = request.max_completion_tokens if _given(request.max_completion_tokens) else request.max_tokens
    if _given(limit):
        body["max_tokens"] = limit
    for name in ("temperature", "top_p", "stop", "n"):
        value = getattr(request, name)
        if _given(value):
            body[name] = value
    if request.response_format is not UNSET:
        kind = "json_object" if isinstance(request.response_format, JsonObjectFormat) else "text"
        body["response_format"] = {"type": kind}
    body["stream"] = stream  # sent either way, as the official SDK does
    return {**request.extras, **body}


# ---- responses -------------------------------------------------------------------------------------


class AI21Function(Base):
    name: str = ""
    arguments: str | dict[str, Any] = ""


class AI21ToolCall(Base):
    function: AI21Function
    id: str = ""
    type: str = "function"


class AI21Message(Base):
    role: str = "assistant"
    content: str | None = None
    tool_calls: list[AI21ToolCall] | None = None


class AI21Choice(Base):
    message: AI21Message
    index: int = 0
    finish_reason: str | None = None


class AI21Usage(Base):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class AI21Response(Base):
    choices: list[AI21Choice]
    id: str = ""
    model: str | None = None
    usage: AI21Usage | None = None


def _arguments(value: str | dict[str, Any]) -> str:
    return value if isinstance(value, str) else msgspec.json.encode(value).decode()


def to_usage(usage: AI21Usage) -> Usage:
    total = usage.total_tokens or usage.prompt_tokens + usage.completion_tokens
    return Usage(
        prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens, total_tokens=total
    )


def finish_reason(reason: str | None, called_tools: bool = False) -> FinishReason | None:
    if reason is None:
        return None
    mapped = _FINISH.get(reason, "stop")
    return "tool_calls" if called_tools and mapped == "stop" else mapped


def to_chat_completion(native: AI21Response, model_id: str, created: int | None = None) -> ChatCompletion:
    choices = []
    for choice in native.choices:
        calls = [
            ToolCall(
                id=c.id,
                function=FunctionCall(name=c.function.name, arguments=_arguments(c.function.arguments)),
            )
            for c in choice.message.tool_calls or []
        ]
        message = ResponseMessage(content=choice.message.content, tool_calls=calls or UNSET)
        reason = finish_reason(choice.finish_reason, bool(calls)) or "stop"
        choices.append(Choice(index=choice.index, message=message, finish_reason=reason))
    return ChatCompletion(
        id=native.id,
        created=int(time.time()) if created is None else created,
        model=native.model or model_id,
        choices=choices,
        usage=to_usage(native.usage) if native.usage else UNSET,
    )


# ---- stream chunks ---------------------------------------------------------------------------------


class AI21FunctionDelta(Base):
    name: str | None = None
    arguments: str | None = None


class AI21ToolCallDelta(Base):
    index: int | None = None
    id: str | None = None
    type: str | None = None
    function: AI21FunctionDelta | None = None


class AI21Delta(Base):
    role: str | None = None
    content: str | None = None
    tool_calls: list[AI21ToolCallDelta] | None = None


class AI21ChunkChoice(Base):
    index: int = 0
    delta: AI21Delta = field(default_factory=AI21Delta)
    finish_reason: str | None = None


class AI21Chunk(Base):
    id: str = ""
    model: str | None = None
    choices: list[AI21ChunkChoice] = field(default_factory=list)
    usage: AI21Usage | None = None


class StreamState:
    """Per-stream translator state: one `created`, and tool-call indexes for deltas without one."""

    def __init__(self, model_id: str, created: int | None = None) -> None:
        self.model_id = model_id
        self.created = int(time.time()) if created is None else created
        self._calls: dict[int, dict[str, int]] = {}
        self._called: set[int] = set()

    def _index(self, choice: int, call: AI21ToolCallDelta) -> int:
        if call.index is not None:
            return call.index
        known = self._calls.setdefault(choice, {})
        if call.id:
            return known.setdefault(call.id, len(known))
        return max(known.values(), default=0)  # a fragment of the latest call

    def _delta(self, choice: AI21ChunkChoice) -> Delta:
        native = choice.delta
        delta = Delta()
        if native.role is not None:
            delta.role = "assistant"
        if native.content is not None:
            delta.content = native.content
        if native.tool_calls:
            deltas = []
            for call in native.tool_calls:
                function = FunctionCallDelta()
                if call.function is not None and call.function.name is not None:
                    function.name = call.function.name
                if call.function is not None and call.function.arguments is not None:
                    function.arguments = call.function.arguments
                deltas.append(
                    ToolCallDelta(
                        index=self._index(choice.index, call),
                        id=call.id if call.id else UNSET,
                        type="function" if call.id else UNSET,
                        function=function,
                    )
                )
            delta.tool_calls = deltas
            self._called.add(choice.index)
        return delta

    def chunk(self, native: AI21Chunk) -> ChatChunk:
        choices = []
        for native_choice in native.choices:
            delta = self._delta(native_choice)
            reason = finish_reason(native_choice.finish_reason, native_choice.index in self._called)
            choices.append(ChunkChoice(index=native_choice.index, delta=delta, finish_reason=reason))
        return ChatChunk(
            id=native.id,
            created=self.created,
            model=native.model or self.model_id,
            choices=choices,
            usage=to_usage(native.usage) if native.usage else UNSET,
        )
